//! The service end to end: events published to a real RabbitMQ (a vhost of its own) are
//! stored in a real PostgreSQL; redeliveries, a database outage (a private PostgreSQL server
//! stopped for 20 s) and a SIGKILLed process lose nothing and duplicate nothing.
mod common;

use serde_json::Value;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};
use swappo_messaging::{BrokerConfig, EventType, NotificationEvent, Publisher, PublisherOptions};
use swappo_notifications::app::{self, Service};
use swappo_notifications::config::Config;
use swappo_notifications::storage::Storage;
use swappo_testkit::{PrivatePostgres, TestDb, TestVhost};
use tokio_util::sync::CancellationToken;

const QUEUE: &str = "notifications_queue";
/// Failure guard for every wait (never a timing assertion).
const GUARD: Duration = Duration::from_secs(120);

fn config(database_url: &str, amqp_url: &str) -> Config {
    Config {
        prefetch: 200,
        ..common::service_config(database_url, amqp_url, QUEUE)
    }
}

fn events(n: usize) -> Vec<NotificationEvent> {
    (0..n)
        .map(|i| {
            NotificationEvent::new(
                format!("user{}", i % 13),
                EventType::TradeOfferAccepted,
                "Accepted!",
                "Yes.",
            )
            .with_related_user("user123")
            .with_related_offer(i as i64 + 1)
        })
        .collect()
}

async fn publisher(vhost: &TestVhost) -> Publisher {
    let options = PublisherOptions {
        routing_key: QUEUE.into(),
        ..PublisherOptions::default()
    };
    Publisher::connect(BrokerConfig::from_url(vhost.amqp_url()).unwrap(), options)
        .await
        .expect("publisher connects")
}

async fn publish(publisher: &Publisher, events: &[NotificationEvent]) {
    for r in publisher.publish_all(events).await {
        r.expect("the broker confirmed the event");
    }
}

/// Polls `check` every 100 ms until it returns `Some`, failing after [`GUARD`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < GUARD, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn rows(storage: &Storage) -> Option<(i64, i64)> {
    storage.count().await.ok()
}

async fn wait_for_rows(storage: &Storage, n: i64) {
    let got = eventually(&format!("{n} rows"), || async {
        rows(storage).await.filter(|(total, _)| *total >= n)
    })
    .await;
    assert_eq!(got, (n, n), "exactly {n} rows, one per event id");
}

async fn ready(addr: SocketAddr) -> (u16, Value) {
    match reqwest::get(format!("http://{addr}/ready")).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

async fn wait_ready(addr: SocketAddr) {
    eventually("/ready", || async {
        (ready(addr).await.0 == 200).then_some(())
    })
    .await;
}

async fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

async fn start(config: Config) -> (Service, CancellationToken) {
    let shutdown = CancellationToken::new();
    let service = app::start(config, shutdown.clone())
        .await
        .expect("the service starts");
    (service, shutdown)
}

async fn stop(service: Service, shutdown: CancellationToken) {
    shutdown.cancel();
    tokio::time::timeout(GUARD, service.wait())
        .await
        .expect("stops in time")
        .expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_events_become_one_row_each_even_when_published_again() {
    let (vhost, db) = (
        TestVhost::new("notif-consume-").await,
        TestDb::new("notif_consume_").await,
    );
    let (service, shutdown) = start(config(db.url(), vhost.amqp_url())).await;
    wait_ready(service.addr()).await;
    let storage = Storage::connect_lazy(db.url(), 2, Duration::from_secs(5)).unwrap();
    let publisher = publisher(&vhost).await;

    let batch = events(1000);
    publish(&publisher, &batch).await;
    wait_for_rows(&storage, 1000).await;

    publish(&publisher, &batch).await;
    eventually("the second round to be seen as duplicates", || async {
        metric(service.addr(), "notifications_duplicates_total")
            .await
            .filter(|d| *d >= 1000.0)
    })
    .await;
    assert_eq!(
        rows(&storage).await,
        Some((1000, 1000)),
        "no second row for any event"
    );
    assert_eq!(
        metric(service.addr(), "notifications_stored_total").await,
        Some(1000.0)
    );
    let consumed = metric(service.addr(), "notifications_consumed_total")
        .await
        .unwrap();
    assert!(consumed >= 2000.0, "consumed {consumed}");
    let q = vhost
        .management()
        .queue(vhost.name(), QUEUE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        q.messages_unacknowledged + q.messages_ready,
        0,
        "everything was acked"
    );

    publisher.close().await;
    stop(service, shutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_breaks_the_contract_goes_to_the_dead_letter_queue_and_nothing_else_is_lost() {
    let (vhost, db) = (
        TestVhost::new("notif-dlq-").await,
        TestDb::new("notif_dlq_").await,
    );
    let (service, shutdown) = start(config(db.url(), vhost.amqp_url())).await;
    wait_ready(service.addr()).await;
    let storage = Storage::connect_lazy(db.url(), 2, Duration::from_secs(5)).unwrap();

    let conn = lapin::Connection::connect(vhost.amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    for body in [
        &b"not json"[..],
        br#"{"schema": 1, "type": "no_such_type"}"#,
    ] {
        channel
            .basic_publish(
                "".into(),
                QUEUE.into(),
                Default::default(),
                body,
                Default::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let publisher = publisher(&vhost).await;
    publish(&publisher, &events(10)).await;

    wait_for_rows(&storage, 10).await;
    eventually("2 messages in the dead-letter queue", || async {
        let dlq = vhost
            .management()
            .queue(vhost.name(), &format!("{QUEUE}.dlq"))
            .await
            .ok()??;
        (dlq.messages == 2).then_some(())
    })
    .await;
    let addr = service.addr();
    assert_eq!(
        metric(addr, "notifications_dead_lettered_total").await,
        Some(2.0)
    );
    assert_eq!(metric(addr, "notifications_stored_total").await, Some(10.0));
    publisher.close().await;
    conn.close(200, "done".into()).await.ok();
    stop(service, shutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_mid_stream_loses_nothing_and_heals_by_itself() {
    let vhost = TestVhost::new("notif-dbdown-").await;
    let pg = PrivatePostgres::start().await;
    let url = pg.url("postgres");
    // Two deliveries only: were the outage to count deliveries (a requeue per failed
    // attempt), the quorum queue would dead-letter the held events within seconds.
    let (service, shutdown) = start(Config {
        max_deliveries: 2,
        ..config(&url, vhost.amqp_url())
    })
    .await;
    let addr = service.addr();
    wait_ready(addr).await;
    let storage = Storage::connect_lazy(&url, 1, Duration::from_secs(1)).unwrap();
    let publisher = publisher(&vhost).await;
    let all = events(900);

    publish(&publisher, &all[..300]).await;
    wait_for_rows(&storage, 300).await;

    pg.stop().await;
    let outage = Instant::now();
    publish(&publisher, &all[300..600]).await;
    let (status, body) = eventually("/ready to report the database down", || async {
        let r = ready(addr).await;
        (r.0 == 503 && r.1["database"] == "down").then_some(r)
    })
    .await;
    assert_eq!(
        (status, &body["broker"]),
        (503, &Value::from("connected")),
        "{body}"
    );
    // Keep the database down for 20 s in all, while the events wait unacknowledged.
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(outage.elapsed())).await;
    assert_eq!(
        ready(addr).await.0,
        503,
        "still not ready while the database is down"
    );
    let q = vhost
        .management()
        .queue(vhost.name(), QUEUE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        q.messages, 300,
        "the events of the outage wait in the queue"
    );
    pg.restart().await;

    publish(&publisher, &all[600..]).await;
    wait_for_rows(&storage, 900).await;
    wait_ready(addr).await;
    let dlq = vhost
        .management()
        .queue(vhost.name(), &format!("{QUEUE}.dlq"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dlq.messages, 0, "nothing was dead-lettered");

    publisher.close().await;
    stop(service, shutdown).await;
}

/// Messages ready in the queue, exact (AMQP passive declare; the management API's counts
/// trail by a statistics tick).
async fn ready_in_queue(vhost: &TestVhost) -> u32 {
    let conn = lapin::Connection::connect(vhost.amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let options = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let q = channel
        .queue_declare(QUEUE.into(), options, Default::default())
        .await
        .unwrap();
    conn.close(200, "counted".into()).await.ok();
    q.message_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_mid_stream_acks_exactly_what_it_stored_and_leaves_the_rest_queued() {
    let (vhost, db) = (
        TestVhost::new("notif-term-").await,
        TestDb::new("notif_term_").await,
    );
    let (service, shutdown) = start(config(db.url(), vhost.amqp_url())).await;
    wait_ready(service.addr()).await;
    let storage = Storage::connect_lazy(db.url(), 2, Duration::from_secs(5)).unwrap();
    let publisher = publisher(&vhost).await;
    // Publish while the service consumes; shut it down as soon as some rows are stored.
    let all = events(5000);
    let (first, rest) = all.split_at(600);
    publish(&publisher, first).await;
    eventually("the first rows", || async {
        rows(&storage).await.filter(|(n, _)| *n > 0)
    })
    .await;
    let stopping = tokio::spawn(stop(service, shutdown));
    publish(&publisher, rest).await;
    stopping.await.unwrap();

    let (stored, _) = rows(&storage).await.unwrap();
    let queued = ready_in_queue(&vhost).await;
    assert!(stored < 5000, "stopped mid-stream ({stored} stored)");
    assert_eq!(
        stored + i64::from(queued),
        5000,
        "every event is either stored and acked, or still queued ({stored} + {queued})"
    );
    publisher.close().await;
}

/// Grants (`true`) or revokes (`false`) the test user's permissions on the vhost: with them
/// revoked, the broker refuses every reconnect, an outage for this vhost alone.
async fn set_vhost_access(vhost: &TestVhost, allowed: bool) {
    let mut url = reqwest::Url::parse(&swappo_testkit::management_url()).unwrap();
    let (user, password) = (
        url.username().to_string(),
        url.password().unwrap_or("").to_string(),
    );
    url.set_username("").unwrap();
    url.set_password(None).unwrap();
    let enc = |s: &str| s.replace('/', "%2F");
    let url = url
        .join(&format!(
            "/api/permissions/{}/{}",
            enc(vhost.name()),
            enc(&user)
        ))
        .unwrap();
    let client = reqwest::Client::new();
    let req = if allowed {
        client
            .put(url)
            .json(&serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}))
    } else {
        client.delete(url)
    };
    let resp = req.basic_auth(user, Some(password)).send().await.unwrap();
    assert!(
        resp.status().is_success(),
        "permissions change: {}",
        resp.status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_is_reported_while_the_api_stays_ready_and_consumption_resumes_by_itself() {
    let (vhost, db) = (
        TestVhost::new("notif-mqdown-").await,
        TestDb::new("notif_mqdown_").await,
    );
    let (service, shutdown) = start(config(db.url(), vhost.amqp_url())).await;
    let addr = service.addr();
    wait_ready(addr).await;
    let storage = Storage::connect_lazy(db.url(), 2, Duration::from_secs(5)).unwrap();
    let publisher = publisher(&vhost).await;
    let all = events(200);
    publish(&publisher, &all[..100]).await;
    wait_for_rows(&storage, 100).await;

    set_vhost_access(&vhost, false).await;
    // The management API lists a connection only after its next statistics tick, so keep
    // closing until the consumer's own connection was among those closed.
    let (status, body) = eventually("/ready to report the broker down", || async {
        vhost
            .management()
            .close_connections(vhost.name())
            .await
            .ok()?;
        let r = ready(addr).await;
        (r.1["broker"] == "disconnected").then_some(r)
    })
    .await;
    assert_eq!(
        (status, &body["database"]),
        (200, &Value::from("up")),
        "the read API stays ready: {body}"
    );

    set_vhost_access(&vhost, true).await;
    eventually("the consumer back", || async {
        (ready(addr).await.1["broker"] == "connected").then_some(())
    })
    .await;
    publish(&publisher, &all[100..]).await;
    wait_for_rows(&storage, 200).await;
    publisher.close().await;
    stop(service, shutdown).await;
}

/// The built binary, configured through the environment as in Kubernetes.
fn spawn_binary(database_url: &str, amqp_url: &str, port: u16) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_swappo-notifications"))
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("RABBITMQ_URL", amqp_url)
        .env("QUEUE_NAME", QUEUE)
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the service binary starts")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_mid_stream_and_restarted_stores_every_event_exactly_once() {
    let (vhost, db) = (
        TestVhost::new("notif-kill-").await,
        TestDb::new("notif_kill_").await,
    );
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut child = spawn_binary(db.url(), vhost.amqp_url(), port);
    wait_ready(addr).await;
    let storage = Storage::connect_lazy(db.url(), 2, Duration::from_secs(5)).unwrap();
    let publisher = publisher(&vhost).await;
    let all = events(6000);

    // Publish in chunks; kill the process once it is busy storing, while events still arrive.
    for (i, chunk) in all.chunks(200).enumerate() {
        publish(&publisher, chunk).await;
        if i == 5 {
            eventually("the first rows", || async {
                rows(&storage).await.filter(|(n, _)| *n > 0)
            })
            .await;
            child.start_kill().unwrap();
            child.wait().await.unwrap();
        }
    }
    let stored_while_dead = rows(&storage).await.unwrap().0;
    assert!(
        stored_while_dead < 6000,
        "the kill happened mid-stream ({stored_while_dead} stored)"
    );
    eprintln!("killed with {stored_while_dead} of 6000 events stored");

    let mut child = spawn_binary(db.url(), vhost.amqp_url(), port);
    wait_for_rows(&storage, 6000).await;
    let q = eventually("the queue to drain", || async {
        let q = vhost.management().queue(vhost.name(), QUEUE).await.ok()??;
        (q.messages == 0).then_some(q)
    })
    .await;
    assert_eq!(q.messages_unacknowledged, 0);

    // SIGTERM: a clean exit after the batch in hand.
    let pid = child.id().unwrap().to_string();
    let term = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(term.success());
    let status = tokio::time::timeout(GUARD, child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert_eq!(rows(&storage).await, Some((6000, 6000)));
    publisher.close().await;
}
