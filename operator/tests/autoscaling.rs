//! Queue topology and consumer autoscaling on the local control plane (kwok nodes: consumer
//! pods never run, so replicas only move by the operator's scale patches) and the local
//! RabbitMQ. Queues are declared in vhost `/` under unique names and deleted at the end.
mod common;

use common::*;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, PostParams};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ExchangeDeleteOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::time::{Duration, Instant};
use swappo_operator::crd::{QueueType, SwappoMessaging};
use swappo_operator::fixtures::TestExt;
use swappo_testkit::{TestNamespace, eventually, unique_name};

async fn consumer_deployment(ns: &TestNamespace, name: &str, replicas: i32) {
    let d: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}
            }
        }
    }))
    .unwrap();
    ns.api::<Deployment>()
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
}

async fn replicas(ns: &TestNamespace, name: &str) -> i32 {
    ns.api::<Deployment>()
        .get(name)
        .await
        .unwrap()
        .spec
        .replicas
        .unwrap_or(1)
}

async fn amqp() -> Connection {
    Connection::connect(
        &swappo_testkit::rabbitmq_url(),
        ConnectionProperties::default(),
    )
    .await
    .expect("the local broker accepts a connection")
}

/// Publishes `n` messages `"<label> <i>"` to `queue` (no confirms: the tests wait for what the
/// operator does with them).
async fn publish(ch: &Channel, queue: &str, n: u32, label: &str) {
    for i in 0..n {
        drop(
            ch.basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                format!("{label} {i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap(),
        );
    }
}

/// Deletes `<q>`, `<q>.dlq` and `<q>.dlx` (the test's clean-up in the shared vhost).
async fn delete_topology(queues: &[&str]) {
    let conn = amqp().await;
    for q in queues {
        let ch = conn.create_channel().await.unwrap();
        for name in [q.to_string(), format!("{q}.dlq")] {
            let _ = ch
                .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = ch
            .exchange_delete(
                format!("{q}.dlx").as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await;
    }
    let _ = conn.close(200, "done".into()).await;
}

async fn condition(
    ns: &TestNamespace,
    type_: &str,
    status: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    let what = format!("{type_}={status}");
    eventually(&what, WAIT, || async {
        let sm = ns.api::<SwappoMessaging>().get("dev").await.ok()?;
        sm.condition(type_).filter(|c| c.status == status).cloned()
    })
    .await
    .unwrap_or_else(|e| {
        panic!("{e}");
    })
}

#[tokio::test]
async fn a_legacy_queue_accepts_the_original_services_plain_durable_declare() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-legacy-").await;
    login_secret(&ns).await;
    let queue = unique_name("legacy-");
    let mut sm = SwappoMessaging::new_in("dev", ns.name())
        .with_credentials_secret("broker-login")
        .with_external("127.0.0.1", false)
        .with_queue(&queue);
    let q = &mut sm.spec.queues[0];
    (q.queue_type, q.legacy) = (QueueType::Classic, true);
    let operator = InProcess::start(&client, ns.name(), local_broker_settings());
    ns.api::<SwappoMessaging>()
        .create(&PostParams::default(), &sm)
        .await
        .unwrap();
    let ready = condition(&ns, "QueuesReady", "True").await;
    assert_eq!(ready.reason, "LegacyQueue");
    assert!(
        ready
            .message
            .contains("classic, no arguments: no broker-side dead-lettering"),
        "{}",
        ready.message
    );

    // What the original publisher and consumer do: queue_declare(queue, durable=True).
    let conn = amqp().await;
    let ch = conn.create_channel().await.unwrap();
    let declared = ch
        .queue_declare(
            queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    assert!(
        declared.is_ok(),
        "the plain declare is refused: {declared:?}"
    );
    let _ = conn.close(200, "done".into()).await;
    operator.stop().await;
    delete_topology(&[&queue]).await;
}

#[tokio::test]
async fn a_backlog_scales_the_consumer_up_at_once_and_down_only_after_the_delay() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-scale-").await;
    login_secret(&ns).await;
    consumer_deployment(&ns, "notifications", 1).await;
    let queue = unique_name("scale-");
    let mut sm = SwappoMessaging::new_in("dev", ns.name())
        .with_credentials_secret("broker-login")
        .with_external("127.0.0.1", false)
        .with_queue(&queue)
        .with_consumer("notifications", &queue);
    sm.spec.queues[0].queue_type = QueueType::Classic;
    let c = &mut sm.spec.consumers[0];
    (c.min_replicas, c.max_replicas, c.messages_per_replica) = (1, 10, 1000);
    c.scale_down_delay_seconds = 10;
    let operator = InProcess::start(&client, ns.name(), local_broker_settings());
    ns.api::<SwappoMessaging>()
        .create(&PostParams::default(), &sm)
        .await
        .unwrap();
    condition(&ns, "QueuesReady", "True").await;
    condition(&ns, "ConsumersScaled", "True").await;
    assert_eq!(replicas(&ns, "notifications").await, 1);

    // 5,000 events and no consumer: clamp(ceil(5000 / 1000), 1, 10) = 5 replicas.
    let conn = amqp().await;
    let ch = conn.create_channel().await.unwrap();
    publish(&ch, &queue, 5000, "event").await;
    eventually("5 replicas for 5,000 messages", WAIT, || async {
        (replicas(&ns, "notifications").await == 5).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let status = ns
        .api::<SwappoMessaging>()
        .get("dev")
        .await
        .unwrap()
        .status
        .unwrap();
    eprintln!("status at scale-up: {:?}", status.consumers);

    // Drain with a local consumer; replicas must hold at 5 for the whole 10 s delay. Manual
    // acks: a message counts in the depth (as unacked) until this test has acked it, so the
    // operator cannot see the queue empty before `drained_at` (with no-ack the broker empties
    // it at once and a loaded test process reads its socket seconds later).
    let drain = conn.create_channel().await.unwrap();
    let mut deliveries = drain
        .basic_consume(
            queue.as_str().into(),
            "drainer".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // The depth falls as the acks go; the last recommendation above minReplicas (1) is made
    // while more than 1000 messages are left (messagesPerReplica), so `low_at` (the 4000th
    // ack) is the earliest the operator can have stopped wanting 2 replicas or more.
    let mut drained = 0;
    let mut low_at = None;
    while drained < 5000 {
        let delivery = tokio::time::timeout(WAIT, deliveries.next())
            .await
            .expect("messages keep coming")
            .expect("the consumer stays open")
            .expect("a delivery");
        delivery
            .ack(BasicAckOptions::default())
            .await
            .expect("the ack is sent");
        drained += 1;
        if drained == 4000 {
            low_at = Some(Instant::now());
        }
    }
    let low_at = low_at.expect("4000 acks");
    let drained_at = Instant::now();
    let mut seen = Vec::new();
    let deadline = drained_at + WAIT;
    loop {
        let r = replicas(&ns, "notifications").await;
        seen.push(r);
        if r == 1 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let waited = low_at.elapsed();
    assert_eq!(seen.last(), Some(&1), "back to minReplicas: {seen:?}");
    assert!(
        seen.iter().all(|r| *r >= 1),
        "never below minReplicas: {seen:?}"
    );
    // The operator's last poll that still saw more than 1000 messages precedes `low_at` by up
    // to one poll interval (2 s; more when a loaded machine stretches a pass), so the delay it
    // keeps shows here as 10 s less that. Without the delay the scale-down would follow the
    // next poll, within about 3 s (2 s poll + 1 s statistics refresh): 6 s tells them apart
    // with room for two stretched polls.
    assert!(
        waited >= Duration::from_secs(6),
        "scaled down {waited:?} after the depth fell below 1000: the 10 s scaleDownDelaySeconds \
         was not kept"
    );
    eprintln!(
        "scaled down {waited:?} after the depth fell below 1000, {:?} after the drain (delay 10 s)",
        drained_at.elapsed()
    );

    // The operator records the Event after its scale patch, so the 1 replica above can be
    // read before the Event exists: wait for it rather than list once.
    let reasons = eventually("ScaledUp and ScaledDown Events", WAIT, || async {
        let events = ns.api::<Event>().list(&ListParams::default()).await.ok()?;
        let reasons: Vec<String> = events
            .items
            .iter()
            .filter_map(|e| e.reason.clone())
            .collect();
        (reasons.iter().any(|r| r == "ScaledUp") && reasons.iter().any(|r| r == "ScaledDown"))
            .then_some(reasons)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("events: {reasons:?}");
    let status = ns
        .api::<SwappoMessaging>()
        .get("dev")
        .await
        .unwrap()
        .status
        .unwrap();
    let consumer = &status.consumers[0];
    assert_eq!(consumer.deployment, "notifications");
    assert!(consumer.last_scale_time.is_some());

    let _ = conn.close(200, "done".into()).await;
    operator.stop().await;
    delete_topology(&[&queue]).await;
}

#[tokio::test]
async fn a_queue_argument_conflict_and_a_missing_deployment_are_conditions_while_the_rest_works() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-conflict-").await;
    login_secret(&ns).await;
    let conflicting = unique_name("conflict-");
    let fine = unique_name("fine-");
    // The conflicting queue exists with 3 deliveries; the spec asks for 5 (x-delivery-limit).
    let conn = amqp().await;
    swappo_messaging::topology::declare_with(
        &conn,
        &swappo_messaging::topology::QueueSpec::quorum(&conflicting).with_max_deliveries(3),
    )
    .await
    .unwrap();
    let sm = SwappoMessaging::new_in("dev", ns.name())
        .with_credentials_secret("broker-login")
        .with_external("127.0.0.1", false)
        .with_queue(&conflicting)
        .with_queue(&fine)
        .with_consumer("ghost", &fine);
    let operator = InProcess::start(&client, ns.name(), local_broker_settings());
    ns.api::<SwappoMessaging>()
        .create(&PostParams::default(), &sm)
        .await
        .unwrap();

    let queues = condition(&ns, "QueuesReady", "False").await;
    assert_eq!(queues.reason, "QueueArgumentConflict");
    assert!(queues.message.contains(&conflicting), "{}", queues.message);
    assert!(
        queues.message.contains("x-delivery-limit"),
        "{}",
        queues.message
    );
    assert!(!queues.message.contains(&fine), "{}", queues.message);
    let scaled = condition(&ns, "ConsumersScaled", "False").await;
    assert_eq!(scaled.reason, "DeploymentNotFound");
    assert!(scaled.message.contains("ghost"), "{}", scaled.message);
    assert_eq!(
        condition(&ns, "BrokerReady", "True").await.reason,
        "BrokerAvailable"
    );
    assert_eq!(condition(&ns, "Ready", "False").await.status, "False");

    // The other queue was declared after the conflict: quorum, with its dead-letter queue.
    let info = eventually("the fine queue in the management API", WAIT, || async {
        swappo_testkit::Management::from_env()
            .queue("/", &fine)
            .await
            .ok()
            .flatten()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(info.arguments["x-queue-type"], "quorum");
    assert!(
        swappo_testkit::Management::from_env()
            .queue("/", &format!("{fine}.dlq"))
            .await
            .unwrap()
            .is_some()
    );
    // Its numbers reach the status.
    eventually("status.queues lists the fine queue", WAIT, || async {
        let sm = ns.api::<SwappoMessaging>().get("dev").await.ok()?;
        sm.status?
            .queues
            .iter()
            .any(|q| q.name == fine)
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // Creating the Deployment clears the condition.
    consumer_deployment(&ns, "ghost", 1).await;
    condition(&ns, "ConsumersScaled", "True").await;

    let _ = conn.close(200, "done".into()).await;
    operator.stop().await;
    delete_topology(&[&conflicting, &fine]).await;
}

#[tokio::test]
async fn with_the_management_api_down_the_depth_comes_from_amqp_and_status_says_ready_only() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-fallback-").await;
    login_secret(&ns).await;
    consumer_deployment(&ns, "notifications", 1).await;
    let queue = unique_name("fallback-");
    let mut sm = SwappoMessaging::new_in("dev", ns.name())
        .with_credentials_secret("broker-login")
        .with_external("127.0.0.1", false)
        .with_queue(&queue)
        .with_consumer("notifications", &queue);
    sm.spec.queues[0].queue_type = QueueType::Classic;
    sm.spec.consumers[0].messages_per_replica = 100;
    // Port 9 (discard) on loopback: nothing listens, so every management request fails.
    let settings = swappo_operator::context::Settings {
        management_override: Some("127.0.0.1:9".into()),
        ..local_broker_settings()
    };
    let operator = InProcess::start(&client, ns.name(), settings);
    ns.api::<SwappoMessaging>()
        .create(&PostParams::default(), &sm)
        .await
        .unwrap();
    condition(&ns, "QueuesReady", "True").await;

    let conn = amqp().await;
    let ch = conn.create_channel().await.unwrap();
    publish(&ch, &queue, 300, "event").await;
    // 300 ready messages / 100 per replica = 3 replicas, from the passive declare's count.
    eventually("3 replicas from the AMQP depth", WAIT, || async {
        (replicas(&ns, "notifications").await == 3).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let status = eventually("the consumer status", WAIT, || async {
        let s = ns.api::<SwappoMessaging>().get("dev").await.ok()?.status?;
        (s.consumers.first()?.replicas == 3).then_some(s)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let reason = &status.consumers[0].reason;
    assert!(reason.contains("ready only"), "{reason}");
    assert!(reason.contains("management API unavailable"), "{reason}");
    assert_eq!(status.queues[0].ready, 300);
    assert_eq!(status.depth, Some(300));

    let _ = conn.close(200, "done".into()).await;
    operator.stop().await;
    delete_topology(&[&queue]).await;
}

#[tokio::test]
async fn a_queue_without_consumers_gets_its_numbers_in_status_even_with_the_management_api_down() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-queue-only-").await;
    login_secret(&ns).await;
    let queue = unique_name("queue-only-");
    let mut sm = SwappoMessaging::new_in("dev", ns.name())
        .with_credentials_secret("broker-login")
        .with_external("127.0.0.1", false)
        .with_queue(&queue);
    sm.spec.queues[0].queue_type = QueueType::Classic;
    // Nothing listens on port 9: every management request fails, so the numbers can only come
    // from the one-shot AMQP read a queue-only resource gets while the API is down. A 1 s poll:
    // a resource without consumers is refreshed every 15 polls.
    let settings = swappo_operator::context::Settings {
        management_override: Some("127.0.0.1:9".into()),
        autoscale_interval: Duration::from_secs(1),
        ..local_broker_settings()
    };
    let operator = InProcess::start(&client, ns.name(), settings);
    ns.api::<SwappoMessaging>()
        .create(&PostParams::default(), &sm)
        .await
        .unwrap();
    condition(&ns, "QueuesReady", "True").await;

    let conn = amqp().await;
    let ch = conn.create_channel().await.unwrap();
    publish(&ch, &queue, 40, "event").await;
    let status = eventually("40 ready in status.queues", WAIT, || async {
        let s = ns.api::<SwappoMessaging>().get("dev").await.ok()?.status?;
        (s.queues.first()?.ready == 40).then_some(s)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status.queues[0].name, queue);
    assert_eq!(status.depth, Some(40));
    assert!(status.consumers.is_empty(), "{:?}", status.consumers);
    assert_eq!(status.consumer_replicas, None);
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.type_ != "ConsumersScaled"),
        "no consumers, no ConsumersScaled: {:?}",
        status.conditions
    );

    let _ = conn.close(200, "done".into()).await;
    operator.stop().await;
    delete_topology(&[&queue]).await;
}

#[tokio::test]
async fn a_sawtooth_load_scales_up_once_and_does_not_flap() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-sawtooth-").await;
    login_secret(&ns).await;
    consumer_deployment(&ns, "notifications", 1).await;
    let queue = unique_name("sawtooth-");
    let mut sm = SwappoMessaging::new_in("dev", ns.name())
        .with_credentials_secret("broker-login")
        .with_external("127.0.0.1", false)
        .with_queue(&queue)
        .with_consumer("notifications", &queue);
    sm.spec.queues[0].queue_type = QueueType::Classic;
    sm.spec.consumers[0].messages_per_replica = 100;
    sm.spec.consumers[0].scale_down_delay_seconds = 120;
    let operator = InProcess::start(&client, ns.name(), local_broker_settings());
    ns.api::<SwappoMessaging>()
        .create(&PostParams::default(), &sm)
        .await
        .unwrap();
    condition(&ns, "ConsumersScaled", "True").await;
    let generation = |d: Deployment| d.metadata.generation.unwrap_or(0);
    let mut start = 0;

    let conn = amqp().await;
    let ch = conn.create_channel().await.unwrap();
    // Four teeth: 500 messages with no consumer, then all read by a local consumer.
    for tooth in 0..4 {
        publish(&ch, &queue, 500, &format!("tooth {tooth} event")).await;
        if tooth == 0 {
            eventually("5 replicas for 500 messages", WAIT, || async {
                (replicas(&ns, "notifications").await == 5).then_some(())
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            // Counted from here: while the first 500 are being published a poll can see part
            // of them and scale up in two steps (1 -> 3 -> 5), which is scaling up, not
            // flapping. What must not happen is any patch after that.
            start = generation(ns.api::<Deployment>().get("notifications").await.unwrap());
        } else {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let drain = conn.create_channel().await.unwrap();
        let mut deliveries = drain
            .basic_consume(
                queue.as_str().into(),
                format!("sawtooth-{tooth}").as_str().into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        for _ in 0..500 {
            tokio::time::timeout(WAIT, deliveries.next())
                .await
                .expect("messages keep coming")
                .expect("the consumer stays open")
                .expect("a delivery");
        }
        drain.close(200, "tooth read".into()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let end = generation(ns.api::<Deployment>().get("notifications").await.unwrap());
    assert_eq!(replicas(&ns, "notifications").await, 5);
    assert_eq!(
        end - start,
        0,
        "no scale patch after reaching 5 replicas over four teeth, no flapping"
    );

    let _ = conn.close(200, "done".into()).await;
    operator.stop().await;
    delete_topology(&[&queue]).await;
}
