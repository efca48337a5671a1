//! The queue declared as the original Python services declare it (issue 16): their plain
//! `queue_declare(queue, durable=True)` is accepted on it, while it is refused on a queue
//! declared the usual way; the dead-letter queue beside it still takes what our consumer
//! dead-letters.
mod common;

use common::*;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use swappo_messaging::legacy_queue::declare_legacy;
use swappo_messaging::{QueueSpec, TopologyError, declare_with};

/// What pika's `channel.queue_declare(queue=name, durable=True)` sends.
async fn plain_durable_declare(conn: &lapin::Connection, name: &str) -> Result<(), lapin::Error> {
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map(|_| ())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_originals_plain_durable_declare_is_accepted_on_a_legacy_queue() {
    let v = vhost().await;
    let conn = connect(&v).await;
    declare_legacy(&conn, "notifications_queue").await.unwrap();
    declare_legacy(&conn, "notifications_queue")
        .await
        .expect("declaring again changes nothing");
    plain_durable_declare(&conn, "notifications_queue")
        .await
        .expect("the original services start");
    let q = queue(&v, "notifications_queue").await;
    assert!(
        q.arguments.is_empty(),
        "no arguments at all: {:?}",
        q.arguments
    );
    let dlq = queue(&v, "notifications_queue.dlq").await;
    assert_eq!(dlq.arguments["x-queue-type"], "classic");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_plain_declare_is_refused_on_a_queue_declared_the_usual_way() {
    let v = vhost().await;
    let conn = connect(&v).await;
    declare_with(&conn, &QueueSpec::quorum("notifications_queue"))
        .await
        .unwrap();
    let err = plain_durable_declare(&conn, "notifications_queue")
        .await
        .expect_err("a quorum queue with a DLX is not what the originals declare");
    assert!(err.to_string().contains("PRECONDITION_FAILED"), "{err}");
    // And a legacy declaration over it says which queue conflicts instead of changing it.
    match declare_legacy(&conn, "notifications_queue").await {
        Err(TopologyError::Conflict { queue, .. }) => assert_eq!(queue, "notifications_queue"),
        other => panic!("expected a conflict, got {other:?}"),
    }
}
