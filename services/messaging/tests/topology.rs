//! `declare` against the real broker: arguments, idempotence, conflicts, and the
//! quorum delivery limit meaning `max_deliveries` plus the session-churn headroom.
mod common;

use common::*;
use futures::StreamExt;
use lapin::BasicProperties;
use lapin::options::{BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use swappo_messaging::{QueueSpec, TopologyError, declare, declare_with};

#[tokio::test(flavor = "multi_thread")]
async fn declare_creates_the_queue_its_dlx_and_a_bound_dlq_with_the_spec_arguments() {
    let v = vhost().await;
    let conn = connect(&v).await;
    let spec = QueueSpec::quorum("orders")
        .with_max_deliveries(3)
        .with_message_ttl_ms(600_000);
    declare_with(&conn, &spec).await.unwrap();

    let q = queue(&v, "orders").await;
    assert_eq!(q.arguments["x-queue-type"], "quorum");
    assert_eq!(q.arguments["x-dead-letter-exchange"], "orders.dlx");
    assert_eq!(
        q.arguments["x-delivery-limit"],
        2 + swappo_messaging::topology::SESSION_END_HEADROOM
    );
    assert_eq!(q.arguments["x-message-ttl"], 600_000);
    assert_eq!(
        queue(&v, "orders.dlq").await.arguments["x-queue-type"],
        "quorum"
    );

    // The DLX routes to the DLQ whatever the routing key.
    let ch = confirm_channel(&conn).await;
    let confirm = ch
        .basic_publish(
            "orders.dlx".into(),
            "anything".into(),
            lapin::options::BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"x",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        confirm.take_message().is_none(),
        "the dlx has no binding to the dlq"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_classic_queue_gets_priority_and_dead_lettering_but_no_delivery_limit() {
    let v = vhost().await;
    let conn = connect(&v).await;
    declare_with(&conn, &QueueSpec::classic("jobs").with_max_priority(10))
        .await
        .unwrap();
    let q = queue(&v, "jobs").await;
    assert_eq!(q.arguments["x-queue-type"], "classic");
    assert_eq!(q.arguments["x-max-priority"], 10);
    assert_eq!(q.arguments["x-dead-letter-exchange"], "jobs.dlx");
    assert!(!q.arguments.contains_key("x-delivery-limit"));
}

#[tokio::test(flavor = "multi_thread")]
async fn declaring_the_same_spec_twice_is_idempotent() {
    let v = vhost().await;
    let conn = connect(&v).await;
    let ch = conn.create_channel().await.unwrap();
    let spec = QueueSpec::quorum("twice");
    declare(&ch, &spec).await.unwrap();
    declare(&ch, &spec).await.unwrap();
    assert!(ch.status().connected());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_that_exists_with_another_type_is_a_conflict_naming_queue_and_argument() {
    let v = vhost().await;
    let conn = connect(&v).await;
    declare_with(&conn, &QueueSpec::quorum("events"))
        .await
        .unwrap();
    let err = declare_with(&conn, &QueueSpec::classic("events"))
        .await
        .unwrap_err();
    match &err {
        TopologyError::Conflict { queue, detail } => {
            // The DLQ is declared first, so it is the first to disagree.
            assert_eq!(queue, "events.dlq", "{detail}");
            assert_eq!(err.conflicting_argument(), Some("x-queue-type"), "{detail}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(!err.is_retryable());
    // The throwaway channel took the hit: the connection still works.
    declare_with(&conn, &QueueSpec::quorum("events"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_delivery_limit_is_a_conflict_on_the_main_queue() {
    let v = vhost().await;
    let conn = connect(&v).await;
    declare_with(&conn, &QueueSpec::quorum("limits").with_max_deliveries(5))
        .await
        .unwrap();
    let err = declare_with(&conn, &QueueSpec::quorum("limits").with_max_deliveries(9))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TopologyError::Conflict { queue, .. } if queue == "limits"),
        "{err:?}"
    );
    assert_eq!(err.conflicting_argument(), Some("x-delivery-limit"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_spec_is_refused_before_reaching_the_broker() {
    let v = vhost().await;
    let conn = connect(&v).await;
    let err = declare_with(&conn, &QueueSpec::quorum("p").with_max_priority(3))
        .await
        .unwrap_err();
    assert!(matches!(err, TopologyError::InvalidSpec { .. }), "{err:?}");
    assert!(
        v.management()
            .queue(v.name(), "p.dlq")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quorum_message_is_returned_max_deliveries_plus_the_headroom_times_then_dead_lettered() {
    let v = vhost().await;
    let conn = connect(&v).await;
    let max = 3;
    let broker_max = max + swappo_messaging::topology::SESSION_END_HEADROOM;
    declare_with(&conn, &QueueSpec::quorum("poison").with_max_deliveries(max))
        .await
        .unwrap();
    let ch = confirm_channel(&conn).await;
    publish_raw(&ch, "poison", b"bad", BasicProperties::default()).await;

    let consume_ch = conn.create_channel().await.unwrap();
    consume_ch
        .basic_qos(1, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = consume_ch
        .basic_consume(
            "poison".into(),
            "t".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut deliveries = 0;
    loop {
        // After the last allowed delivery the message leaves the queue: no more deliveries.
        let next = tokio::time::timeout(std::time::Duration::from_secs(3), consumer.next()).await;
        let Ok(Some(Ok(d))) = next else { break };
        deliveries += 1;
        assert!(
            deliveries <= broker_max + 1,
            "delivered more than {broker_max} times"
        );
        d.nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    assert_eq!(deliveries, broker_max);
    let dlq = wait_queue(&v, "poison.dlq", "one dead letter", |q| q.messages == 1).await;
    assert_eq!(dlq.messages, 1);
}
