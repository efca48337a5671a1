//! The outbox relay against the real RabbitMQ and PostgreSQL: confirmed publishing, a broker
//! outage that requests never notice, a crash between confirm and mark, and two instances
//! sharing one database.
mod common;

use common::{Api, Instance, count, events_of, pool};
use futures::future::join_all;
use lapin::options::{BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use reqwest::StatusCode;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use swappo_matchmaking::Service;
use swappo_matchmaking::relay::{Fault, RelayError, RelayOptions};
use swappo_messaging::{
    Backoff, BrokerConfig, Consumer, ConsumerOptions, EventType, NotificationEvent,
    PublisherOptions, QueueKind, QueueSpec, declare,
};
use swappo_testkit::{OutageProxy, TestDb, TestVhost};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const QUEUE: &str = "notifications_queue";
/// Failure guard for waits; never reached when things work.
const GUARD: Duration = Duration::from_secs(60);

/// A private vhost with the notifications queue declared, and a channel to inspect it.
struct Bus {
    vhost: TestVhost,
    _conn: Connection,
    channel: Channel,
}

impl Bus {
    async fn new() -> Self {
        common::init_logs();
        Self::on(TestVhost::new("mm-").await).await
    }

    /// Declares the queue in an existing vhost.
    async fn on(vhost: TestVhost) -> Self {
        let conn = Connection::connect(vhost.amqp_url(), ConnectionProperties::default())
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        declare(&channel, &QueueSpec::quorum(QUEUE)).await.unwrap();
        Self {
            vhost,
            _conn: conn,
            channel,
        }
    }

    /// Ready messages in the queue (a passive declare answers at once, unlike the
    /// management API's sampled statistics).
    async fn depth(&self) -> u32 {
        let opts = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        self.channel
            .queue_declare(QUEUE.into(), opts, FieldTable::default())
            .await
            .unwrap()
            .message_count()
    }

    async fn wait_depth(&self, n: u32) {
        let deadline = tokio::time::Instant::now() + GUARD;
        loop {
            let d = self.depth().await;
            assert!(d <= n, "more messages than expected: {d} > {n}");
            if d == n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "queue stuck at {d} of {n}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Takes every message out of the queue: (AMQP properties, event).
    async fn drain(&self) -> Vec<(BasicProperties, NotificationEvent)> {
        let mut out = Vec::new();
        let opts = BasicGetOptions { no_ack: true };
        while let Some(m) = self.channel.basic_get(QUEUE.into(), opts).await.unwrap() {
            let event = NotificationEvent::from_json(&m.delivery.data).expect("a contract event");
            out.push((m.delivery.properties.clone(), event));
        }
        out
    }
}

fn fast_options() -> RelayOptions {
    RelayOptions {
        // Small batches and short waits so the tests exercise many rounds quickly.
        batch_size: 20,
        poll_interval: Duration::from_millis(500),
        wake_on_commit: true,
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
        },
        publish_timeout: Duration::from_secs(10),
        retention: Duration::from_secs(3600),
        fault: None,
    }
}

struct Running {
    task: JoinHandle<Result<(), RelayError>>,
    stop: CancellationToken,
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        let result = tokio::time::timeout(GUARD, self.task)
            .await
            .expect("relay stops")
            .unwrap();
        result.expect("relay ends cleanly");
    }
}

fn start_relay(service: &mut Service, amqp_url: &str, options: RelayOptions) -> Running {
    let broker = BrokerConfig::from_url(amqp_url.to_string()).unwrap();
    let relay = service.relay(
        broker,
        PublisherOptions {
            // Short waits: the outage tests see failures, and recoveries, quickly.
            connect_wait: Duration::from_secs(1),
            backoff: Backoff {
                initial: Duration::from_millis(50),
                max: Duration::from_millis(500),
            },
            ..swappo_matchmaking::publisher_options(QUEUE)
        },
        options,
    );
    let stop = CancellationToken::new();
    Running {
        task: tokio::spawn(relay.run(stop.clone())),
        stop,
    }
}

async fn wait_until_sent(pool: &PgPool) {
    let deadline = tokio::time::Instant::now() + GUARD;
    while count(pool, "pending").await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "outbox never drained"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn outbox_ids(pool: &PgPool) -> HashSet<Uuid> {
    sqlx::query_scalar("SELECT event_id FROM outbox")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

// Multi-threaded: when the test ends (or fails), TestVhost's drop deletes the vhost while
// this runtime's thread waits for it; the broker closes the AMQP connections of the vhost
// first, and another worker must be free to answer that close handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_change_is_published_once_with_its_id_as_message_id_and_marked_sent() {
    let bus = Bus::new().await;
    let db = TestDb::new("mm_").await;
    let pool = pool(&db).await;
    let mut service = Service::new(pool.clone());
    let relay = start_relay(&mut service, bus.vhost.amqp_url(), fast_options());
    let instance = Instance::start(&service).await;
    let api = Api::new(&instance.base);

    let id = api.create("alice", "bob", &[1], &[2]).await;
    api.must_patch(id, "bob", "accepted").await;
    bus.wait_depth(2).await;
    wait_until_sent(&pool).await;
    let got = bus.drain().await;
    let types: Vec<EventType> = got.iter().map(|(_, e)| e.event_type).collect();
    assert_eq!(
        types,
        vec![EventType::TradeOfferReceived, EventType::TradeOfferAccepted]
    );
    for (props, event) in &got {
        assert_eq!(
            props.message_id().as_ref().map(|m| m.as_str().to_string()),
            Some(event.id.to_string())
        );
        assert_eq!(event.related_offer_id, Some(id));
    }
    assert_eq!(got[1].1.user_id, "alice");
    assert_eq!(
        got.iter().map(|(_, e)| e.id).collect::<HashSet<_>>(),
        outbox_ids(&pool).await
    );

    let (code, ready) = api.get("/ready").await;
    assert_eq!(
        (code, ready["broker"].as_str()),
        (StatusCode::OK, Some("connected"))
    );
    let text = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines()
            .any(|l| l == "matchmaking_outbox_published_total 2"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l == "matchmaking_outbox_pending 0"),
        "{text}"
    );
    assert!(
        text.contains("matchmaking_outbox_relay_lag_seconds_count 2"),
        "{text}"
    );
    relay.stop().await;
    instance.stop().await;
}

// Multi-threaded: when the test ends (or fails), TestVhost's drop deletes the vhost while
// this runtime's thread waits for it; the broker closes the AMQP connections of the vhost
// first, and another worker must be free to answer that close handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_unreachable_100_acceptances_succeed_and_arrive_exactly_once_after() {
    let bus = Bus::new().await;
    let (proxy, url) = OutageProxy::for_url(bus.vhost.amqp_url()).await;
    let db = TestDb::new("mm_").await;
    let pool = pool(&db).await;
    let mut service = Service::new(pool.clone());
    let relay = start_relay(&mut service, &url, fast_options());
    let instance = Instance::start(&service).await;
    let api = Api::new(&instance.base);

    let offers: Vec<i64> = join_all((0..100).map(|i| {
        let api = api.clone();
        async move {
            api.create(&format!("p{i}"), &format!("r{i}"), &[i + 1], &[i + 1000])
                .await
        }
    }))
    .await;
    bus.wait_depth(100).await;
    wait_until_sent(&pool).await;
    assert_eq!(
        bus.drain().await.len(),
        100,
        "the creations went out before the outage"
    );

    proxy.cut();
    let answers = join_all(offers.iter().enumerate().map(|(i, id)| {
        let api = api.clone();
        async move { api.patch(*id, &format!("r{i}"), "accepted").await.0 }
    }))
    .await;
    assert!(answers.iter().all(|c| *c == StatusCode::OK), "{answers:?}");
    assert_eq!(
        count(&pool, "pending").await,
        100,
        "every event waits in the outbox"
    );
    // The relay tries, fails, records why, and the service stays ready.
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let failed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND last_error IS NOT NULL",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        let (code, ready) = api.get("/ready").await;
        assert_eq!(
            code,
            StatusCode::OK,
            "the broker never makes the service unready"
        );
        if failed > 0 && ready["broker"] == "disconnected" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed attempt recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        bus.depth().await,
        0,
        "nothing reached the broker during the outage"
    );

    proxy.restore();
    bus.wait_depth(100).await;
    wait_until_sent(&pool).await;
    let got = bus.drain().await;
    assert_eq!(got.len(), 100);
    let ids: HashSet<Uuid> = got.iter().map(|(_, e)| e.id).collect();
    assert_eq!(ids.len(), 100, "each event id exactly once");
    let accepted: HashSet<i64> = got
        .iter()
        .map(|(_, e)| {
            assert_eq!(e.event_type, EventType::TradeOfferAccepted);
            e.related_offer_id.unwrap()
        })
        .collect();
    assert_eq!(
        accepted,
        offers.iter().copied().collect(),
        "one acceptance per offer"
    );
    assert_eq!(bus.depth().await, 0);
    let text = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines()
            .any(|l| l == "matchmaking_outbox_published_total 200"),
        "{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l == "matchmaking_outbox_publish_failures_total 0"),
        "{text}"
    );
    relay.stop().await;
    instance.stop().await;
}

// Multi-threaded: when the test ends (or fails), TestVhost's drop deletes the vhost while
// this runtime's thread waits for it; the broker closes the AMQP connections of the vhost
// first, and another worker must be free to answer that close handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_starts_and_serves_while_the_broker_has_never_been_reachable() {
    let bus = Bus::new().await;
    let (proxy, url) = OutageProxy::for_url(bus.vhost.amqp_url()).await;
    proxy.cut();
    let db = TestDb::new("mm_").await;
    let pool = pool(&db).await;
    let mut service = Service::new(pool.clone());
    let relay = start_relay(&mut service, &url, fast_options());
    let instance = Instance::start(&service).await;
    let api = Api::new(&instance.base);

    let id = api.create("alice", "bob", &[1], &[2]).await;
    api.must_patch(id, "bob", "rejected").await;
    let (code, ready) = api.get("/ready").await;
    assert_eq!(
        (code, ready["broker"].as_str()),
        (StatusCode::OK, Some("disconnected"))
    );
    assert_eq!(count(&pool, "pending").await, 2);

    proxy.restore();
    bus.wait_depth(2).await;
    wait_until_sent(&pool).await;
    assert_eq!(bus.drain().await.len(), 2);
    relay.stop().await;
    instance.stop().await;
}

// Multi-threaded: when the test ends (or fails), TestVhost's drop deletes the vhost while
// this runtime's thread waits for it; the broker closes the AMQP connections of the vhost
// first, and another worker must be free to answer that close handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_between_confirm_and_mark_republishes_with_the_same_id_and_it_is_stored_once()
 {
    let bus = Bus::new().await;
    let db = TestDb::new("mm_").await;
    let pool = pool(&db).await;
    let mut service = Service::new(pool.clone());
    let instance = Instance::start(&service).await;
    let api = Api::new(&instance.base);
    let id = api.create("alice", "bob", &[1], &[2]).await;

    let crashing = RelayOptions {
        fault: Some(Fault::CrashAfterConfirm),
        ..fast_options()
    };
    let relay = start_relay(&mut service, bus.vhost.amqp_url(), crashing);
    let ended = tokio::time::timeout(GUARD, relay.task)
        .await
        .expect("the relay crashes")
        .unwrap();
    assert!(matches!(ended, Err(RelayError::InjectedCrash)), "{ended:?}");
    bus.wait_depth(1).await;
    assert_eq!(
        count(&pool, "pending").await,
        1,
        "the mark was lost with the crash"
    );

    let restarted = start_relay(&mut service, bus.vhost.amqp_url(), fast_options());
    bus.wait_depth(2).await;
    wait_until_sent(&pool).await;
    // Look at both copies without taking them: the same event, with the same id.
    let mut copies = Vec::new();
    for _ in 0..2 {
        let opts = BasicGetOptions { no_ack: false };
        let m = bus
            .channel
            .basic_get(QUEUE.into(), opts)
            .await
            .unwrap()
            .expect("a message");
        copies.push(m);
    }
    let events: Vec<NotificationEvent> = copies
        .iter()
        .map(|m| NotificationEvent::from_json(&m.delivery.data).unwrap())
        .collect();
    assert_eq!(
        events[0], events[1],
        "the same event, same id, went out twice"
    );
    assert_eq!(events_of(&pool, id).await.len(), 1, "one outbox row");
    let requeue = BasicNackOptions {
        multiple: true,
        requeue: true,
    };
    copies[1].delivery.nack(requeue).await.unwrap();
    bus.wait_depth(2).await;

    // The notifications service's consumer (its batch handler over its storage) keeps one.
    let ndb = TestDb::new("mm_notif_").await;
    let storage = swappo_notifications::Storage::from_pool(
        sqlx::postgres::PgPoolOptions::new()
            .connect(ndb.url())
            .await
            .unwrap(),
    );
    storage.migrate().await.unwrap();
    let stop = CancellationToken::new();
    let handler = swappo_notifications::store::StoreBatch::new(
        storage.clone(),
        std::sync::Arc::new(swappo_notifications::metrics::Metrics::new()),
        stop.clone(),
    );
    let consumer = Consumer::new(
        BrokerConfig::from_url(bus.vhost.amqp_url().to_string()).unwrap(),
        ConsumerOptions::new(QUEUE, QueueKind::Quorum),
        handler,
    );
    let consumed = consumer.metrics();
    let consuming = tokio::spawn(consumer.run(stop.clone()));
    let deadline = tokio::time::Instant::now() + GUARD;
    while consumed.snapshot().acked < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not consumed: {:?}",
            consumed.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    tokio::time::timeout(GUARD, consuming)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let stored: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM notifications")
        .fetch_all(storage.pool())
        .await
        .unwrap();
    assert_eq!(stored, vec![events[0].id], "stored once");
    assert_eq!(bus.depth().await, 0);
    restarted.stop().await;
    instance.stop().await;
}

// Multi-threaded: when the test ends (or fails), TestVhost's drop deletes the vhost while
// this runtime's thread waits for it; the broker closes the AMQP connections of the vhost
// first, and another worker must be free to answer that close handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_database_publish_every_row_and_none_twice() {
    let bus = Bus::new().await;
    let db = TestDb::new("mm_").await;
    let pool = pool(&db).await;
    let mut a = Service::new(pool.clone());
    let mut b = Service::new(pool.clone());
    // Batches of 5: many small rounds, so the two relays contend for rows all the time.
    let options = RelayOptions {
        batch_size: 5,
        ..fast_options()
    };
    let relay_a = start_relay(&mut a, bus.vhost.amqp_url(), options.clone());
    let relay_b = start_relay(&mut b, bus.vhost.amqp_url(), options);
    let (ia, ib) = (Instance::start(&a).await, Instance::start(&b).await);
    let apis = [Api::new(&ia.base), Api::new(&ib.base)];

    let offers: Vec<i64> = join_all((0..150i64).map(|i| {
        let api = apis[(i % 2) as usize].clone();
        async move {
            api.create(&format!("p{i}"), &format!("r{i}"), &[1], &[2])
                .await
        }
    }))
    .await;
    let decided = join_all(offers.iter().enumerate().map(|(i, id)| {
        let api = apis[(i + 1) % 2].clone();
        async move { api.patch(*id, &format!("r{i}"), "accepted").await.0 }
    }))
    .await;
    assert!(decided.iter().all(|c| *c == StatusCode::OK));

    bus.wait_depth(300).await;
    wait_until_sent(&pool).await;
    let got = bus.drain().await;
    let mut seen: HashMap<Uuid, usize> = HashMap::new();
    for (_, e) in &got {
        *seen.entry(e.id).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "published twice: {twice:?}");
    assert_eq!(
        seen.keys().copied().collect::<HashSet<_>>(),
        outbox_ids(&pool).await,
        "every row"
    );
    assert_eq!(got.len(), 300);
    let (pa, pb) = (
        ia.service_metrics.published.get(),
        ib.service_metrics.published.get(),
    );
    assert_eq!(pa + pb, 300);
    eprintln!("relay A published {pa}, relay B published {pb}");
    relay_a.stop().await;
    relay_b.stop().await;
    ia.stop().await;
    ib.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_in_the_outbox_while_the_queue_is_missing_and_go_out_once_it_exists() {
    common::init_logs();
    let vhost = TestVhost::new("mm-").await;
    let db = TestDb::new("mm_").await;
    let pool = pool(&db).await;
    let mut service = Service::new(pool.clone());
    let relay = start_relay(&mut service, vhost.amqp_url(), fast_options());
    let instance = Instance::start(&service).await;
    let api = Api::new(&instance.base);
    api.create("alice", "bob", &[1], &[2]).await;

    // Published as mandatory, the event comes back unroutable: not confirmed, not marked.
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let error: Option<String> =
            sqlx::query_scalar("SELECT last_error FROM outbox WHERE sent_at IS NULL")
                .fetch_one(&pool)
                .await
                .unwrap();
        if let Some(e) = error {
            assert!(e.contains("unroutable"), "{e}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed attempt recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let bus = Bus::on(vhost).await; // the operator declares the queue
    bus.wait_depth(1).await;
    wait_until_sent(&pool).await;
    assert_eq!(bus.drain().await.len(), 1);
    relay.stop().await;
    instance.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_breaks_the_contract_stays_pending_with_the_reason_and_blocks_nothing() {
    let bus = Bus::new().await;
    let db = TestDb::new("mm_").await;
    let pool = pool(&db).await;
    // Hand-written rows, as a bad migration or a manual fix might leave them.
    let mut broken = NotificationEvent::new("u", EventType::System, "t", "b");
    broken.title = String::new();
    let garbage = Uuid::new_v4();
    sqlx::query("INSERT INTO outbox (event_id, payload) VALUES ($1, $2), ($3, '{\"nope\": 1}')")
        .bind(broken.id)
        .bind(serde_json::to_value(&broken).unwrap())
        .bind(garbage)
        .execute(&pool)
        .await
        .unwrap();
    let mut service = Service::new(pool.clone());
    let relay = start_relay(&mut service, bus.vhost.amqp_url(), fast_options());
    let instance = Instance::start(&service).await;
    let api = Api::new(&instance.base);
    let id = api.create("alice", "bob", &[1], &[2]).await;
    bus.wait_depth(1).await;
    let got = bus.drain().await;
    assert_eq!(
        got[0].1.related_offer_id,
        Some(id),
        "the good event went out"
    );

    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let rows: Vec<(Uuid, Option<String>)> = sqlx::query_as(
            "SELECT event_id, last_error FROM outbox WHERE sent_at IS NULL ORDER BY id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(rows.len(), 2, "{rows:?}");
        if rows.iter().all(|(_, e)| e.is_some()) {
            assert_eq!(rows[0].0, broken.id);
            assert!(rows[0].1.as_deref().unwrap().contains("title"), "{rows:?}");
            assert!(
                rows[1]
                    .1
                    .as_deref()
                    .unwrap()
                    .contains("not a notification event"),
                "{rows:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reasons never recorded: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(bus.depth().await, 0, "neither broken row was published");
    relay.stop().await;
    instance.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_fails_requests_with_503_and_the_relay_resumes_by_itself() {
    common::init_logs();
    let bus = Bus::new().await;
    let pg = swappo_testkit::PrivatePostgres::start().await;
    let pool =
        swappo_matchmaking::connect_lazy(&pg.url("postgres"), 5, Duration::from_secs(1)).unwrap();
    swappo_matchmaking::migrate(&pool).await.unwrap();
    let mut service = Service::new(pool.clone());
    let relay = start_relay(&mut service, bus.vhost.amqp_url(), fast_options());
    let instance = Instance::start(&service).await;
    let api = Api::new(&instance.base);
    let first = api.create("alice", "bob", &[1], &[2]).await;
    bus.wait_depth(1).await;

    pg.stop().await;
    let (code, body) = api.patch(first, "bob", "accepted").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    let (code, ready) = api.get("/ready").await;
    assert_eq!(
        (code, ready["database"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("down"))
    );
    // Give the relay a few failed rounds against the dead database.
    tokio::time::sleep(Duration::from_millis(500)).await;

    pg.restart().await;
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let (code, body) = api.patch(first, "bob", "accepted").await;
        if code == StatusCode::OK {
            break;
        }
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the database never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bus.wait_depth(2).await;
    wait_until_sent(&pool).await;
    let got = bus.drain().await;
    let types: Vec<EventType> = got.iter().map(|(_, e)| e.event_type).collect();
    assert_eq!(
        types,
        vec![EventType::TradeOfferReceived, EventType::TradeOfferAccepted]
    );
    relay.stop().await;
    instance.stop().await;
}

/// With the commit wake-ups off (`OUTBOX_WAKE_ON_COMMIT=false`) the poll alone finds every
/// change: the relay neither LISTENs nor waits for this replica's commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_only_polls_still_publishes_every_change_once() {
    let bus = Bus::new().await;
    let db = TestDb::new("mm_").await;
    let pool = pool(&db).await;
    let mut service = Service::new(pool.clone());
    let options = RelayOptions {
        wake_on_commit: false,
        poll_interval: Duration::from_millis(100),
        ..fast_options()
    };
    let relay = start_relay(&mut service, bus.vhost.amqp_url(), options);
    let instance = Instance::start(&service).await;
    let api = Api::new(&instance.base);

    let mut offers = Vec::new();
    for i in 0..30 {
        let id = api
            .create(&format!("p{i}"), &format!("r{i}"), &[1], &[2])
            .await;
        api.must_patch(id, &format!("r{i}"), "accepted").await;
        offers.push(id);
    }
    bus.wait_depth(60).await;
    wait_until_sent(&pool).await;
    let got = bus.drain().await;
    let ids: HashSet<Uuid> = got.iter().map(|(_, e)| e.id).collect();
    assert_eq!(ids.len(), 60, "each change once");
    assert_eq!(ids, outbox_ids(&pool).await);
    relay.stop().await;
    instance.stop().await;
}

/// A measurement, not a check: `cargo test -p swappo-matchmaking --test relay -- --ignored
/// --nocapture` prints how fast one relay drains a backlog of outbox rows (release builds
/// give the meaningful figure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn report_how_fast_one_relay_drains_a_backlog() {
    const N: usize = 10_000;
    let bus = Bus::new().await;
    for batch_size in [20, 100, 500] {
        let db = TestDb::new("mm_").await;
        let pool = pool(&db).await;
        let events: Vec<NotificationEvent> = (0..N)
            .map(|i| {
                NotificationEvent::new(
                    format!("u{i}"),
                    EventType::TradeOfferReceived,
                    "New Trade Offer",
                    "You received a new trade offer.",
                )
                .with_related_offer(i as i64 + 1)
            })
            .collect();
        let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
        let payloads: Vec<serde_json::Value> = events
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect();
        sqlx::query(
            "INSERT INTO outbox (event_id, payload) SELECT * FROM unnest($1::uuid[], $2::jsonb[])",
        )
        .bind(&ids)
        .bind(&payloads)
        .execute(&pool)
        .await
        .unwrap();
        let mut service = Service::new(pool.clone());
        let options = RelayOptions {
            batch_size,
            ..fast_options()
        };
        let started = std::time::Instant::now();
        let relay = start_relay(&mut service, bus.vhost.amqp_url(), options);
        wait_until_sent(&pool).await;
        let secs = started.elapsed().as_secs_f64();
        relay.stop().await;
        bus.wait_depth(N as u32).await;
        assert_eq!(bus.drain().await.len(), N);
        eprintln!(
            "relay drained {N} events in {secs:.2} s: {:.0} events/s (batch {batch_size}, quorum queue)",
            N as f64 / secs
        );
    }
}
