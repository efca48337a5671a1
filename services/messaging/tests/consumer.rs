//! The consumer against the real broker: batching, crashes, dead letters, retries,
//! shutdown and outages.
mod common;

use common::*;
use lapin::BasicProperties;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use swappo_messaging::consumer::DEAD_LETTER_QUEUE_HEADER;
use swappo_messaging::{
    BatchHandler, BatchOutcome, Consumer, ConsumerOptions, DEAD_LETTER_REASON_HEADER, EventType,
    NotificationEvent, Publisher, PublisherOptions, QueueKind, QueueSpec, declare_with,
};
use swappo_testkit::TestVhost;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A handler that stores events in memory; events titled "poison" always fail their batch;
/// with `hold`, the first batch waits until released.
#[derive(Clone, Default)]
struct Store {
    seen: Arc<Mutex<Vec<NotificationEvent>>>,
    batch_sizes: Arc<Mutex<Vec<usize>>>,
    poison_attempts: Arc<Mutex<usize>>,
    hold: Option<Arc<Hold>>,
}

#[derive(Default)]
struct Hold {
    started: Notify,
    release: Notify,
    used: Mutex<bool>,
}

impl Store {
    fn holding() -> (Self, Arc<Hold>) {
        let hold = Arc::new(Hold::default());
        (
            Self {
                hold: Some(hold.clone()),
                ..Self::default()
            },
            hold,
        )
    }
    fn ids(&self) -> HashSet<uuid::Uuid> {
        self.seen.lock().unwrap().iter().map(|e| e.id).collect()
    }
    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl BatchHandler for Store {
    async fn handle(&self, batch: Vec<NotificationEvent>) -> BatchOutcome {
        if let Some(hold) = &self.hold {
            let first = !std::mem::replace(&mut *hold.used.lock().unwrap(), true);
            if first {
                self.batch_sizes.lock().unwrap().push(batch.len());
                hold.started.notify_one();
                hold.release.notified().await;
            }
        }
        if batch.iter().any(|e| e.title == "poison") {
            *self.poison_attempts.lock().unwrap() += 1;
            return BatchOutcome::Retry("poison is never stored".into());
        }
        self.batch_sizes.lock().unwrap().push(batch.len());
        self.seen.lock().unwrap().extend(batch);
        BatchOutcome::Done
    }
}

fn event(i: usize) -> NotificationEvent {
    NotificationEvent::new(
        format!("user{i}"),
        EventType::NewMessage,
        "Hello",
        format!("message {i}"),
    )
}

fn poison() -> NotificationEvent {
    NotificationEvent::new("victim", EventType::System, "poison", "always fails")
}

async fn setup(spec: &QueueSpec) -> (TestVhost, Publisher) {
    let v = vhost().await;
    declare_with(&connect(&v).await, spec).await.unwrap();
    let p = Publisher::connect(config(&v), PublisherOptions::for_queue(&spec.name))
        .await
        .unwrap();
    (v, p)
}

fn options(spec: &QueueSpec) -> ConsumerOptions {
    ConsumerOptions {
        retry_backoff: Duration::from_millis(20),
        retry_backoff_max: Duration::from_millis(100),
        max_deliveries: spec.max_deliveries.unwrap_or(5),
        ..ConsumerOptions::new(&spec.name, spec.kind)
    }
}

/// Waits (bounded) until `cond` holds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + GUARD;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached within {GUARD:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn spawn<H: BatchHandler>(
    consumer: Consumer<H>,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let token = CancellationToken::new();
    let t = token.clone();
    let task =
        tokio::spawn(async move { consumer.run(t).await.expect("consumer options are valid") });
    (token, task)
}

async fn stop(token: CancellationToken, task: tokio::task::JoinHandle<()>) {
    token.cancel();
    tokio::time::timeout(GUARD, task)
        .await
        .expect("consumer stops")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn published_events_are_stored_in_batches_and_acked_with_nothing_left_behind() {
    let spec = QueueSpec::quorum("inbox");
    let (v, p) = setup(&spec).await;
    let events: Vec<_> = (0..1000).map(event).collect();
    assert!(p.publish_all(&events).await.iter().all(|r| r.is_ok()));

    let store = Store::default();
    let consumer = Consumer::new(config(&v), options(&spec), store.clone());
    let (metrics, health) = (consumer.metrics(), consumer.health());
    let (token, task) = spawn(consumer);
    until("all stored", || store.count() >= 1000).await;
    wait_queue(&v, "inbox", "empty", |q| {
        q.messages == 0 && q.messages_unacknowledged == 0
    })
    .await;
    assert!(health.is_connected());
    stop(token, task).await;
    assert!(!health.is_connected());

    assert_eq!(store.ids(), events.iter().map(|e| e.id).collect());
    let sizes = store.batch_sizes.lock().unwrap().clone();
    assert!(sizes.iter().all(|s| *s <= 100), "{sizes:?}");
    assert!(
        sizes.len() < 100,
        "events were not batched: {} batches",
        sizes.len()
    );
    let m = metrics.snapshot();
    assert_eq!(
        (m.consumed, m.acked, m.requeued, m.dead_lettered),
        (1000, 1000, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_killed_mid_batch_loses_nothing_the_batch_is_redelivered() {
    let spec = QueueSpec::quorum("crashy");
    let (v, p) = setup(&spec).await;
    let events: Vec<_> = (0..300).map(event).collect();
    assert!(p.publish_all(&events).await.iter().all(|r| r.is_ok()));

    let (held, hold) = Store::holding();
    let (_token, task) = spawn(Consumer::new(config(&v), options(&spec), held.clone()));
    tokio::time::timeout(GUARD, hold.started.notified())
        .await
        .expect("a batch started");
    task.abort(); // the process dies with the batch in the handler
    let _ = task.await;
    assert_eq!(held.count(), 0);
    wait_queue(&v, "crashy", "all back", |q| {
        q.messages_ready == 300 && q.messages_unacknowledged == 0
    })
    .await;

    let store = Store::default();
    let (token, task) = spawn(Consumer::new(config(&v), options(&spec), store.clone()));
    until("all stored after the crash", || store.count() >= 300).await;
    stop(token, task).await;
    assert_eq!(store.ids(), events.iter().map(|e| e.id).collect());
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_json_and_an_unknown_type_go_to_the_dlq_with_the_reason_while_valid_events_are_stored()
 {
    let spec = QueueSpec::quorum("mixed");
    let (v, p) = setup(&spec).await;
    let conn = connect(&v).await;
    let ch = confirm_channel(&conn).await;
    let props = |id: &str| BasicProperties::default().with_message_id(id.into());
    publish_raw(&ch, "mixed", b"{\"id\": not json", props("bad-json")).await;
    let mut unknown = serde_json::to_value(event(1)).unwrap();
    unknown["type"] = "trade_exploded".into();
    publish_raw(
        &ch,
        "mixed",
        &serde_json::to_vec(&unknown).unwrap(),
        props("unknown-type"),
    )
    .await;
    let good = event(2);
    p.publish(&good).await.unwrap();

    let store = Store::default();
    let consumer = Consumer::new(config(&v), options(&spec), store.clone());
    let metrics = consumer.metrics();
    let (token, task) = spawn(consumer);
    wait_queue(&v, "mixed.dlq", "two dead letters", |q| q.messages == 2).await;
    until("the valid event stored", || store.count() == 1).await;
    wait_queue(&v, "mixed", "empty", |q| q.messages == 0).await;
    stop(token, task).await;

    assert_eq!(store.ids(), HashSet::from([good.id]));
    let dead = drain(&ch, "mixed.dlq", 10).await;
    let reason = |id: &str| {
        let m = dead
            .iter()
            .find(|m| {
                m.delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .unwrap()
                    .as_str()
                    == id
            })
            .unwrap();
        assert_eq!(
            header(&m.delivery.properties, DEAD_LETTER_QUEUE_HEADER).as_deref(),
            Some("mixed")
        );
        (
            header(&m.delivery.properties, DEAD_LETTER_REASON_HEADER).unwrap(),
            m.delivery.data.clone(),
        )
    };
    let (why, body) = reason("bad-json");
    assert!(why.starts_with("invalid JSON"), "{why}");
    assert_eq!(body, b"{\"id\": not json", "the original body is kept");
    let (why, _) = reason("unknown-type");
    assert_eq!(why, "unknown event type `trade_exploded`");
    let m = metrics.snapshot();
    assert_eq!((m.dead_lettered, m.acked), (2, 1));
}

async fn a_poison_message_is_dead_lettered_after_max_deliveries(spec: QueueSpec) {
    let (v, p) = setup(&spec).await;
    let mut events: Vec<_> = (0..40).map(event).collect();
    let bad = poison();
    events.insert(17, bad.clone());
    assert!(p.publish_all(&events).await.iter().all(|r| r.is_ok()));

    let store = Store::default();
    let consumer = Consumer::new(config(&v), options(&spec), store.clone());
    let metrics = consumer.metrics();
    let (token, task) = spawn(consumer);
    wait_queue(&v, &spec.dlq_name(), "the poison dead-lettered", |q| {
        q.messages == 1
    })
    .await;
    until("every good event stored", || store.count() >= 40).await;
    // The consumer keeps going after the poison left.
    let later = event(99);
    p.publish(&later).await.unwrap();
    until("a later event stored", || store.ids().contains(&later.id)).await;
    wait_queue(&v, &spec.name, "empty", |q| q.messages == 0).await;
    stop(token, task).await;

    let good: HashSet<_> = events
        .iter()
        .filter(|e| e.id != bad.id)
        .map(|e| e.id)
        .chain([later.id])
        .collect();
    assert_eq!(
        store.ids(),
        good,
        "every good event stored, the poison never"
    );
    let ch = connect(&v).await.create_channel().await.unwrap();
    let dead = drain(&ch, &spec.dlq_name(), 10).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        NotificationEvent::from_json(&dead[0].delivery.data).unwrap(),
        bad
    );
    let max = spec.max_deliveries.unwrap();
    // The poison was handled once per delivery on its own (isolated from the good events),
    // plus at most once per delivery inside a mixed batch.
    let attempts = *store.poison_attempts.lock().unwrap();
    assert!(
        attempts as u32 >= max && attempts as u32 <= 2 * max,
        "{attempts} attempts for {max} deliveries"
    );
    // Both queue types: the consumer counts failures itself, republishing the message with
    // its count until the last allowed delivery, which goes to the DLQ with the reason.
    assert_eq!(metrics.snapshot().requeued, u64::from(max - 1));
    let props = &dead[0].delivery.properties;
    let why = header(props, DEAD_LETTER_REASON_HEADER).unwrap();
    assert!(why.contains(&format!("failed {max} deliveries")), "{why}");
    assert!(why.contains("poison is never stored"), "{why}");
    assert_eq!(metrics.snapshot().dead_lettered, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_quorum_queue_an_always_failing_message_reaches_the_dlq_after_max_deliveries_and_others_flow()
 {
    a_poison_message_is_dead_lettered_after_max_deliveries(
        QueueSpec::quorum("qq").with_max_deliveries(3),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_classic_queue_an_always_failing_message_reaches_the_dlq_after_max_deliveries_and_others_flow()
 {
    a_poison_message_is_dead_lettered_after_max_deliveries(
        QueueSpec::classic("cq").with_max_deliveries(3),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_acks_the_batch_in_hand_and_leaves_the_rest_in_the_queue() {
    let spec = QueueSpec::quorum("drain");
    let (v, p) = setup(&spec).await;
    let events: Vec<_> = (0..100).map(event).collect();
    assert!(p.publish_all(&events).await.iter().all(|r| r.is_ok()));

    let (store, hold) = Store::holding();
    let opts = ConsumerOptions {
        batch_size: 10,
        prefetch: 50,
        ..options(&spec)
    };
    let consumer = Consumer::new(config(&v), opts, store.clone());
    let metrics = consumer.metrics();
    let (token, task) = spawn(consumer);
    tokio::time::timeout(GUARD, hold.started.notified())
        .await
        .expect("a batch started");
    token.cancel();
    hold.release.notify_one();
    tokio::time::timeout(GUARD, task)
        .await
        .expect("consumer stops")
        .unwrap();

    let in_hand = store.batch_sizes.lock().unwrap()[0];
    assert!((1..=10).contains(&in_hand));
    assert_eq!(store.count(), in_hand, "only the batch in hand was handled");
    assert_eq!(metrics.snapshot().acked, in_hand as u64);
    let q = wait_queue(&v, "drain", "the rest back", |q| {
        q.messages_unacknowledged == 0 && q.messages_ready == (100 - in_hand) as u64
    })
    .await;
    assert_eq!(q.consumers, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_resumes_by_itself_after_its_connections_are_closed() {
    let spec = QueueSpec::classic("resume");
    let (v, p) = setup(&spec).await;
    let store = Store::default();
    let consumer = Consumer::new(config(&v), options(&spec), store.clone());
    let health = consumer.health();
    let (token, task) = spawn(consumer);
    let first: Vec<_> = (0..50).map(event).collect();
    assert!(p.publish_all(&first).await.iter().all(|r| r.is_ok()));
    until("first half stored", || store.count() >= 50).await;

    // The management API lists a connection only after its stats arrive: close until the
    // consumer has noticed.
    let deadline = tokio::time::Instant::now() + GUARD;
    while health.is_connected() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the consumer never saw its connection closed"
        );
        v.management().close_connections(v.name()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    until("reconnected", || health.is_connected()).await;
    let second: Vec<_> = (50..100).map(event).collect();
    let deadline = tokio::time::Instant::now() + GUARD;
    for e in &second {
        // The publisher may still be reconnecting: retry until confirmed.
        while p.publish(e).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "publisher never came back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    until("second half stored", || store.ids().len() >= 100).await;
    stop(token, task).await;
    let all: HashSet<_> = first.iter().chain(&second).map(|e| e.id).collect();
    assert_eq!(store.ids(), all);
}

/// Fails its first `failures` calls (a database outage), then stores everything.
#[derive(Clone)]
struct Flaky {
    store: Store,
    failures_left: Arc<Mutex<usize>>,
}

impl BatchHandler for Flaky {
    async fn handle(&self, batch: Vec<NotificationEvent>) -> BatchOutcome {
        {
            let mut left = self.failures_left.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return BatchOutcome::Retry("database unavailable".into());
            }
        }
        self.store.handle(batch).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transient_failure_requeues_the_batch_with_backoff_and_it_is_stored_later_without_dead_letters()
 {
    let spec = QueueSpec::quorum("outage").with_max_deliveries(5);
    let (v, p) = setup(&spec).await;
    let events: Vec<_> = (0..50).map(event).collect();
    assert!(p.publish_all(&events).await.iter().all(|r| r.is_ok()));

    // The batch call and the one-at-a-time retry's first three calls fail: the consumer
    // gives up isolating (an outage, not a poison message) and returns the batch.
    let flaky = Flaky {
        store: Store::default(),
        failures_left: Arc::new(Mutex::new(4)),
    };
    let consumer = Consumer::new(config(&v), options(&spec), flaky.clone());
    let metrics = consumer.metrics();
    let (token, task) = spawn(consumer);
    until("all stored after the outage", || flaky.store.count() >= 50).await;
    wait_queue(&v, "outage", "empty", |q| q.messages == 0).await;
    stop(token, task).await;

    assert_eq!(flaky.store.ids(), events.iter().map(|e| e.id).collect());
    assert_eq!(*flaky.failures_left.lock().unwrap(), 0);
    let m = metrics.snapshot();
    assert!(m.requeued >= 1, "{m:?}");
    assert_eq!((m.acked, m.dead_lettered), (50, 0));
    assert_eq!(queue(&v, "outage.dlq").await.messages, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_options_stop_the_consumer_with_an_error() {
    let v = vhost().await;
    let opts = ConsumerOptions {
        prefetch: 5,
        batch_size: 10,
        ..ConsumerOptions::new("q", QueueKind::Quorum)
    };
    let err = Consumer::new(config(&v), opts, Store::default())
        .run(CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("prefetch"), "{err}");
}
