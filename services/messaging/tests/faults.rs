//! The consumer under the faults production brings, made deterministic: a TCP proxy cut
//! while a batch is in hand (session churn), a dead-letter queue that is gone, and a handler
//! failing one event again and again on a quorum queue.
mod common;

use common::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use swappo_messaging::consumer::DEAD_LETTER_QUEUE_HEADER;
use swappo_messaging::{
    Backoff, BatchHandler, BatchOutcome, Consumer, ConsumerOptions, DEAD_LETTER_REASON_HEADER,
    EventType, NotificationEvent, Publisher, PublisherOptions, QueueSpec, declare_with,
};
use swappo_testkit::{OutageProxy, TestVhost};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A handler that reports each call and waits for the test to release it, then stores.
#[derive(Clone)]
struct Gate {
    started: mpsc::UnboundedSender<Vec<Uuid>>,
    release: Arc<Semaphore>,
    stored: Arc<Mutex<HashMap<Uuid, usize>>>,
}

impl Gate {
    fn new() -> (Self, mpsc::UnboundedReceiver<Vec<Uuid>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let gate = Self {
            started: tx,
            release: Arc::new(Semaphore::new(0)),
            stored: Arc::default(),
        };
        (gate, rx)
    }
    fn distinct(&self) -> usize {
        self.stored.lock().unwrap().len()
    }
}

impl BatchHandler for Gate {
    async fn handle(&self, batch: Vec<NotificationEvent>) -> BatchOutcome {
        let _ = self.started.send(batch.iter().map(|e| e.id).collect());
        self.release.acquire().await.expect("never closed").forget();
        let mut stored = self.stored.lock().unwrap();
        for e in batch {
            *stored.entry(e.id).or_default() += 1;
        }
        BatchOutcome::Done
    }
}

fn event(i: usize) -> NotificationEvent {
    NotificationEvent::new(
        format!("user{i}"),
        EventType::TradeOfferAccepted,
        "Accepted!",
        format!("offer {i}"),
    )
    .with_related_offer(i as i64 + 1)
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
        retry_backoff_max: Duration::from_millis(200),
        reconnect_backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(100),
        },
        max_deliveries: spec.max_deliveries.unwrap_or(5),
        ..ConsumerOptions::new(&spec.name, spec.kind)
    }
}

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

async fn next_batch(rx: &mut mpsc::UnboundedReceiver<Vec<Uuid>>) -> Vec<Uuid> {
    tokio::time::timeout(GUARD, rx.recv())
        .await
        .expect("a batch reached the handler in time")
        .expect("the handler lives")
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
async fn connection_cuts_with_a_batch_in_hand_never_dead_letter_a_good_event() {
    // Two handler failures allowed: the old shared budget (x-delivery-limit 1) would have
    // dead-lettered the batch in hand at the second cut.
    let spec = QueueSpec::quorum("churn").with_max_deliveries(2);
    let (v, p) = setup(&spec).await;
    let events: Vec<_> = (0..300).map(event).collect();
    assert!(p.publish_all(&events).await.iter().all(|r| r.is_ok()));

    let (proxy, url) = OutageProxy::for_url(v.amqp_url()).await;
    let (gate, mut started) = Gate::new();
    let opts = ConsumerOptions {
        // Long enough that a (re)delivered batch always fills before it is handed over.
        batch_linger: Duration::from_secs(5),
        ..options(&spec)
    };
    let consumer = Consumer::new(
        swappo_messaging::BrokerConfig::from_url(url).unwrap(),
        opts,
        gate.clone(),
    );
    let health = consumer.health();
    let metrics = consumer.metrics();
    let (token, task) = spawn(consumer);

    // Cut the connection 8 times, each time while the handler holds a batch.
    const CUTS: usize = 8;
    let mut first = next_batch(&mut started).await;
    first.sort();
    assert_eq!(
        first.len(),
        100,
        "a full batch: prefetch equals the batch size"
    );
    for cut in 0..CUTS {
        proxy.cut();
        gate.release.add_permits(1); // the handler finishes; its ack cannot reach the broker
        until("the consumer noticed the cut", || !health.is_connected()).await;
        proxy.restore();
        let mut again = next_batch(&mut started).await;
        again.sort();
        assert_eq!(
            again, first,
            "cut {cut}: the batch in hand is redelivered, first, as one batch"
        );
    }
    gate.release.add_permits(1_000);
    until("every event handled", || gate.distinct() >= 300).await;
    wait_queue(&v, "churn", "empty", |q| q.messages == 0).await;
    stop(token, task).await;

    let stored = gate.stored.lock().unwrap().clone();
    assert_eq!(stored.len(), 300);
    assert!(events.iter().all(|e| stored.contains_key(&e.id)));
    // The first batch was handled once per session: 9 deliveries, past the old limit.
    assert!(first.iter().all(|id| stored[id] == CUTS + 1));
    // Prefetch sized to the batch: the events behind it were never handed back.
    let behind = events.iter().filter(|e| !first.contains(&e.id));
    assert!(behind.into_iter().all(|e| stored[&e.id] == 1));
    assert_eq!(queue(&v, "churn.dlq").await.messages, 0, "no dead letters");
    assert_eq!(metrics.snapshot().dead_lettered, 0);
}

/// A handler that stores everything but events titled "poison".
#[derive(Clone, Default)]
struct Picky {
    stored: Arc<Mutex<Vec<Uuid>>>,
    poison_calls: Arc<Mutex<usize>>,
}

impl BatchHandler for Picky {
    async fn handle(&self, batch: Vec<NotificationEvent>) -> BatchOutcome {
        if batch.iter().any(|e| e.title == "poison") {
            *self.poison_calls.lock().unwrap() += 1;
            return BatchOutcome::Retry("value refused: poison".into());
        }
        self.stored
            .lock()
            .unwrap()
            .extend(batch.iter().map(|e| e.id));
        BatchOutcome::Done
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dlq_that_is_gone_holds_the_invalid_message_while_the_batch_is_stored_and_acked() {
    let spec = QueueSpec::quorum("nodlq");
    let (v, p) = setup(&spec).await;
    v.management()
        .delete_queue(v.name(), &spec.dlq_name())
        .await
        .unwrap();
    let good: Vec<_> = (0..60).map(event).collect();
    assert!(p.publish_all(&good[..30]).await.iter().all(|r| r.is_ok()));
    let conn = connect(&v).await;
    let ch = confirm_channel(&conn).await;
    publish_raw(&ch, "nodlq", b"{not json", Default::default()).await;
    assert!(p.publish_all(&good[30..]).await.iter().all(|r| r.is_ok()));

    let handler = Picky::default();
    let consumer = Consumer::new(config(&v), options(&spec), handler.clone());
    let metrics = consumer.metrics();
    let (token, task) = spawn(consumer);
    until("every valid event stored", || {
        handler.stored.lock().unwrap().len() >= 60
    })
    .await;
    until("the dead letter was refused", || {
        metrics.snapshot().side_publish_failed >= 1
    })
    .await;
    // The invalid message is held unacked; the valid ones are acked around it.
    wait_queue(&v, "nodlq", "only the invalid message left, unacked", |q| {
        q.messages_ready == 0 && q.messages_unacknowledged == 1
    })
    .await;
    let m = metrics.snapshot();
    assert_eq!(
        m.consumed, 61,
        "no session was torn down: nothing redelivered"
    );
    assert_eq!((m.acked, m.dead_lettered), (60, 0));

    // The DLQ comes back: the held message goes there with its reason, and leaves the queue.
    declare_with(&conn, &spec).await.unwrap();
    let dlq = wait_queue(&v, "nodlq.dlq", "the dead letter", |q| q.messages == 1).await;
    assert_eq!(dlq.messages, 1);
    wait_queue(&v, "nodlq", "empty", |q| q.messages == 0).await;
    stop(token, task).await;
    let dead = drain(&ch, "nodlq.dlq", 10).await;
    assert_eq!(dead.len(), 1);
    let props = &dead[0].delivery.properties;
    assert!(
        header(props, DEAD_LETTER_REASON_HEADER)
            .unwrap()
            .starts_with("invalid JSON")
    );
    assert_eq!(
        header(props, DEAD_LETTER_QUEUE_HEADER).as_deref(),
        Some("nodlq")
    );
    assert_eq!(handler.stored.lock().unwrap().len(), 60, "each stored once");
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_quorum_queue_the_consumer_counts_handler_failures_itself_and_dead_letters_with_the_reason()
 {
    // RabbitMQ 4.3+ no longer counts a requeueing basic.nack: the count must not depend on
    // the broker. The copy republished per failure carries it.
    let spec = QueueSpec::quorum("counted").with_max_deliveries(3);
    let (v, p) = setup(&spec).await;
    let mut events: Vec<_> = (0..20).map(event).collect();
    let poison = NotificationEvent::new("victim", EventType::System, "poison", "refused");
    events.insert(7, poison.clone());
    assert!(p.publish_all(&events).await.iter().all(|r| r.is_ok()));

    let handler = Picky::default();
    let consumer = Consumer::new(config(&v), options(&spec), handler.clone());
    let metrics = consumer.metrics();
    let (token, task) = spawn(consumer);
    let dlq = wait_queue(&v, "counted.dlq", "the poison", |q| q.messages == 1).await;
    assert_eq!(dlq.messages, 1);
    until("the good events stored", || {
        handler.stored.lock().unwrap().len() >= 20
    })
    .await;
    wait_queue(&v, "counted", "empty", |q| q.messages == 0).await;
    stop(token, task).await;

    let m = metrics.snapshot();
    assert_eq!((m.requeued, m.dead_lettered), (2, 1), "{m:?}");
    let ch = connect(&v).await.create_channel().await.unwrap();
    let dead = drain(&ch, "counted.dlq", 10).await;
    assert_eq!(
        NotificationEvent::from_json(&dead[0].delivery.data).unwrap(),
        poison
    );
    let why = header(&dead[0].delivery.properties, DEAD_LETTER_REASON_HEADER).unwrap();
    assert!(why.contains("failed 3 deliveries"), "{why}");
    assert!(why.contains("value refused: poison"), "{why}");
}
