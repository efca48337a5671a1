//! A broker under a real memory alarm (`connection.blocked`), on a RabbitMQ node of the
//! test's own (testkit's `PrivateRabbitMq`: an alarm on the shared broker would stall every
//! other test). The publisher pauses instead of timing out and reconnecting; the consumer
//! keeps acking stored batches while its dead letters wait for the alarm to clear.
use futures::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use swappo_messaging::{
    BatchHandler, BatchOutcome, BrokerConfig, Consumer, ConsumerOptions, EventType,
    NotificationEvent, Publisher, PublisherOptions, QueueSpec, declare_with,
};
use swappo_testkit::PrivateRabbitMq;
use tokio_util::sync::CancellationToken;

/// Failure guard for every wait.
const GUARD: Duration = Duration::from_secs(90);

async fn node() -> PrivateRabbitMq {
    tokio::task::spawn_blocking(PrivateRabbitMq::start)
        .await
        .expect("the node starts")
}

async fn alarm(node: &PrivateRabbitMq, on: bool) {
    tokio::task::block_in_place(|| node.set_memory_alarm(on));
}

fn event(i: usize) -> NotificationEvent {
    NotificationEvent::new(
        format!("user{i}"),
        EventType::TradeOfferAccepted,
        "Accepted!",
        format!("offer {i}"),
    )
}

/// Ready messages (a passive declare answers at once).
async fn ready(conn: &Connection, queue: &str) -> u32 {
    let ch = conn.create_channel().await.unwrap();
    let n = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count();
    let _ = ch.close(200, "done".into()).await;
    n
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + GUARD;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_memory_alarm_the_publisher_pauses_and_every_event_is_confirmed_once_it_clears() {
    let node = node().await;
    let spec = QueueSpec::quorum("blocked");
    let admin = Connection::connect(&node.amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    declare_with(&admin, &spec).await.unwrap();
    let options = PublisherOptions {
        // Far shorter than the alarm lasts: were the timeout running while blocked, every
        // event would be failed (and stored anyway) long before the alarm clears.
        confirm_timeout: Duration::from_secs(1),
        ..PublisherOptions::for_queue("blocked")
    };
    let publisher = Publisher::connect(BrokerConfig::from_url(node.amqp_url()).unwrap(), options)
        .await
        .unwrap();
    publisher
        .publish(&event(0))
        .await
        .expect("confirmed before the alarm");

    alarm(&node, true).await;
    let events: Vec<_> = (1..=120).map(event).collect();
    let p = publisher.clone();
    let sent = events.clone();
    let task = tokio::spawn(async move { p.publish_all(&sent).await });
    until("the publisher sees the block", || publisher.is_blocked()).await;
    // Three confirm timeouts pass while blocked: nothing may fail meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !task.is_finished(),
        "publishes were answered during the alarm"
    );
    assert!(publisher.is_connected(), "no reconnect during the alarm");
    assert_eq!(publisher.metrics().snapshot().publish_failed, 0);

    alarm(&node, false).await;
    let results = tokio::time::timeout(GUARD, task).await.unwrap().unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(
        ready(&admin, "blocked").await,
        121,
        "each event exactly once"
    );
    let m = publisher.metrics().snapshot();
    assert_eq!((m.confirmed, m.publish_failed), (121, 0));
    publisher.close().await;
    let _ = admin.close(200, "done".into()).await;
}

#[derive(Clone, Default)]
struct Store(Arc<Mutex<Vec<NotificationEvent>>>);

impl BatchHandler for Store {
    async fn handle(&self, batch: Vec<NotificationEvent>) -> BatchOutcome {
        self.0.lock().unwrap().extend(batch);
        BatchOutcome::Done
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_memory_alarm_the_consumer_acks_stored_batches_and_dead_letters_once_it_clears() {
    let node = node().await;
    let spec = QueueSpec::quorum("alarmed");
    let admin = Connection::connect(&node.amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    declare_with(&admin, &spec).await.unwrap();
    let ch = admin.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let publish = |body: Vec<u8>| {
        let ch = ch.clone();
        async move {
            ch.basic_publish(
                "".into(),
                "alarmed".into(),
                BasicPublishOptions::default(),
                &body,
                Default::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap()
        }
    };
    publish(b"{not json".to_vec()).await;
    for i in 0..50 {
        publish(event(i).to_json()).await;
    }

    // The alarm is on before the consumer starts: its dead letter meets a blocked broker.
    alarm(&node, true).await;
    let store = Store::default();
    let consumer = Consumer::new(
        BrokerConfig::from_url(node.amqp_url()).unwrap(),
        ConsumerOptions {
            retry_backoff: Duration::from_millis(50),
            retry_backoff_max: Duration::from_millis(200),
            ..ConsumerOptions::new("alarmed", spec.kind)
        },
        store.clone(),
    );
    let metrics = consumer.metrics();
    let token = CancellationToken::new();
    let t = token.clone();
    let task = tokio::spawn(async move { consumer.run(t).await });
    until("the 50 events stored and acked during the alarm", || {
        metrics.snapshot().acked == 50
    })
    .await;
    until("the dead letter held back", || {
        metrics.snapshot().side_publish_failed >= 1
    })
    .await;
    assert_eq!(metrics.snapshot().dead_lettered, 0);
    assert!(node.memory_alarm(), "the alarm is still on");

    alarm(&node, false).await;
    until("the dead letter went out", || {
        metrics.snapshot().dead_lettered == 1
    })
    .await;
    assert_eq!(ready(&admin, "alarmed.dlq").await, 1, "one copy, not two");
    assert_eq!(ready(&admin, "alarmed").await, 0);
    token.cancel();
    tokio::time::timeout(GUARD, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(store.0.lock().unwrap().len(), 50);
    assert_eq!(
        metrics.snapshot().consumed,
        51,
        "no redelivery: no session lost"
    );
    let mut dead = ch
        .basic_consume(
            "alarmed.dlq".into(),
            "t".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let d = tokio::time::timeout(GUARD, dead.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(d.data, b"{not json");
    let _ = admin.close(200, "done".into()).await;
}
