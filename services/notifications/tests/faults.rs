//! The service under database faults that are not about the events (a database forced
//! read-only, real SQLSTATEs for disk full, timeouts, serialization failures, deadlocks)
//! and an event the database could not hold (a NUL character): good events are waited for,
//! never dead-lettered; the bad one is refused by the contract with its reason.
mod common;

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use swappo_messaging::{BrokerConfig, EventType, NotificationEvent, Publisher, PublisherOptions};
use swappo_notifications::app::{self, Service};
use swappo_notifications::config::Config;
use swappo_notifications::storage::{Storage, StorageError};
use swappo_notifications::store::{Failure, classify};
use swappo_testkit::{TestDb, TestVhost};
use tokio_util::sync::CancellationToken;

const QUEUE: &str = "notifications_queue";
/// Failure guard for every wait (never a timing assertion).
const GUARD: Duration = Duration::from_secs(120);

fn config(database_url: &str, amqp_url: &str) -> Config {
    Config {
        max_deliveries: 2,
        ..common::service_config(database_url, amqp_url, QUEUE)
    }
}

fn events(n: usize) -> Vec<NotificationEvent> {
    (0..n)
        .map(|i| {
            NotificationEvent::new(
                format!("user{}", i % 7),
                EventType::TradeOfferAccepted,
                "Accepted!",
                "Yes.",
            )
            .with_related_offer(i as i64 + 1)
        })
        .collect()
}

async fn publish(vhost: &TestVhost, events: &[NotificationEvent]) {
    let options = PublisherOptions {
        routing_key: QUEUE.into(),
        ..PublisherOptions::default()
    };
    let publisher = Publisher::connect(BrokerConfig::from_url(vhost.amqp_url()).unwrap(), options)
        .await
        .expect("publisher connects");
    for r in publisher.publish_all(events).await {
        r.expect("the broker confirmed the event");
    }
    publisher.close().await;
}

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
    let addr = service.addr();
    // Ready for the API is not yet subscribed: the queue is declared after the migrations, so
    // a publish before "consuming" could find no queue (NO_ROUTE).
    eventually("/ready with the consumer subscribed", || async {
        let r = reqwest::get(format!("http://{addr}/ready")).await.ok()?;
        if r.status().as_u16() != 200 {
            return None;
        }
        let body: serde_json::Value = r.json().await.ok()?;
        (body["consumer"] == "consuming").then_some(())
    })
    .await;
    (service, shutdown)
}

async fn stop(service: Service, shutdown: CancellationToken) {
    shutdown.cancel();
    tokio::time::timeout(GUARD, service.wait())
        .await
        .expect("stops in time")
        .expect("stops cleanly");
}

async fn queue_messages(vhost: &TestVhost, name: &str) -> u64 {
    vhost
        .management()
        .queue(vhost.name(), name)
        .await
        .unwrap()
        .map(|q| q.messages)
        .unwrap_or_default()
}

/// Sets `default_transaction_read_only` for the database and ends its other sessions, so
/// every new session (the pool reconnects) gets the setting: a primary demoted to a
/// read-only replica, as the service sees it.
async fn force_read_only(db: &TestDb, on: bool) {
    let mut admin = PgConnection::connect(db.url()).await.unwrap();
    let value = if on { "on" } else { "off" };
    // This session itself may have been opened read-only by the setting.
    admin
        .execute("SET default_transaction_read_only = off")
        .await
        .unwrap();
    // The name is the testkit's own (prefix + hex), never input.
    admin
        .execute(AssertSqlSafe(format!(
            r#"ALTER DATABASE "{}" SET default_transaction_read_only = {value}"#,
            db.name()
        )))
        .await
        .unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(db.name())
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_forced_read_only_is_waited_out_and_no_event_is_dead_lettered() {
    let (vhost, db) = (
        TestVhost::new("notif-ro-").await,
        TestDb::new("notif_ro_").await,
    );
    // Two deliveries only: were the refused writes handed back, the events would be
    // dead-lettered within seconds.
    let (service, shutdown) = start(config(db.url(), vhost.amqp_url())).await;
    let addr = service.addr();
    force_read_only(&db, true).await;

    let all = events(150);
    publish(&vhost, &all).await;
    // Deterministic: the consumer has tried and been refused several times.
    eventually("refused writes waited out", || async {
        metric(addr, r#"notifications_batches_total{outcome="waiting"}"#)
            .await
            .filter(|n| *n >= 5.0)
    })
    .await;
    // The read API still serves, and says the consumer is waiting for the database and why.
    let r = reqwest::get(format!("http://{addr}/ready")).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["consumer"], "waiting_for_database", "{body}");
    assert!(
        body["consumer_waiting_reason"]
            .as_str()
            .unwrap()
            .contains("read-only"),
        "{body}"
    );
    let storage = Storage::connect_lazy(db.url(), 1, Duration::from_secs(5)).unwrap();
    assert_eq!(storage.count().await.unwrap(), (0, 0), "nothing stored yet");
    assert_eq!(queue_messages(&vhost, &format!("{QUEUE}.dlq")).await, 0);
    assert_eq!(
        metric(addr, "notifications_dead_lettered_total").await,
        Some(0.0)
    );
    assert_eq!(
        metric(addr, "notifications_events_received_total").await,
        Some(0.0),
        "waiting does not count events as received"
    );

    force_read_only(&db, false).await;
    eventually("all 150 stored", || async {
        storage.count().await.ok().filter(|(n, _)| *n >= 150)
    })
    .await;
    assert_eq!(storage.count().await.unwrap(), (150, 150));
    eventually("the queue drained", || async {
        (queue_messages(&vhost, QUEUE).await == 0).then_some(())
    })
    .await;
    assert_eq!(queue_messages(&vhost, &format!("{QUEUE}.dlq")).await, 0);
    assert_eq!(
        metric(addr, "notifications_dead_lettered_total").await,
        Some(0.0)
    );
    assert_eq!(
        metric(addr, "notifications_requeued_total").await,
        Some(0.0)
    );
    stop(service, shutdown).await;
}

/// The error PostgreSQL itself returns with `sqlstate`.
async fn raised(conn: &mut PgConnection, sqlstate: &str) -> StorageError {
    // The code is one of the literals of the test below.
    let sql = format!("DO $$ BEGIN RAISE EXCEPTION 'forced' USING ERRCODE = '{sqlstate}'; END $$");
    let err = conn.execute(AssertSqlSafe(sql)).await.unwrap_err();
    StorageError::Database(err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_errors_caused_by_an_events_values_are_the_events_fault() {
    let db = TestDb::new("notif_sqlstate_").await;
    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    let database = [
        ("25006", "read-only transaction"),
        ("53100", "disk full"),
        ("53200", "out of memory"),
        ("53300", "too many connections"),
        ("57014", "statement timeout"),
        ("55P03", "lock timeout"),
        ("40001", "serialization failure"),
        ("40P01", "deadlock"),
        ("08006", "connection failure"),
        ("57P01", "admin shutdown"),
        ("42P01", "undefined table (a bad deploy)"),
        ("XX000", "internal error"),
    ];
    for (code, what) in database {
        let e = raised(&mut conn, code).await;
        assert_eq!(classify(&e), Failure::Database, "{code} ({what}): {e}");
    }
    let event = [
        ("22P05", "untranslatable character"),
        ("22001", "string too long"),
        ("22003", "numeric out of range"),
        ("22021", "invalid byte sequence"),
        ("23502", "not-null violation"),
        ("23514", "check violation"),
    ];
    for (code, what) in event {
        let e = raised(&mut conn, code).await;
        assert_eq!(classify(&e), Failure::Event, "{code} ({what}): {e}");
    }
    // And the real thing, not raised by hand: a statement timeout.
    conn.execute("SET statement_timeout = '10ms'")
        .await
        .unwrap();
    let timeout = conn.execute("SELECT pg_sleep(1)").await.unwrap_err();
    assert_eq!(
        classify(&StorageError::Database(timeout)),
        Failure::Database
    );
    conn.close().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_with_a_nul_character_is_dead_lettered_with_the_reason_and_the_rest_stored() {
    let (vhost, db) = (
        TestVhost::new("notif-nul-").await,
        TestDb::new("notif_nul_").await,
    );
    let (service, shutdown) = start(config(db.url(), vhost.amqp_url())).await;
    let addr = service.addr();
    let mut bad = serde_json::to_value(&events(1)[0]).unwrap();
    bad["body"] = serde_json::Value::from("before\u{0}after");
    let conn = lapin::Connection::connect(vhost.amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    channel
        .basic_publish(
            "".into(),
            QUEUE.into(),
            Default::default(),
            &serde_json::to_vec(&bad).unwrap(),
            Default::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    publish(&vhost, &events(10)).await;

    let storage = Storage::connect_lazy(db.url(), 1, Duration::from_secs(5)).unwrap();
    eventually("10 rows", || async {
        storage.count().await.ok().filter(|(n, _)| *n >= 10)
    })
    .await;
    eventually("the NUL event dead-lettered", || async {
        (queue_messages(&vhost, &format!("{QUEUE}.dlq")).await == 1).then_some(())
    })
    .await;
    let dead = channel
        .basic_get(
            format!("{QUEUE}.dlq").as_str().into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
        .expect("the dead letter");
    let reason = match dead
        .delivery
        .properties
        .headers()
        .as_ref()
        .unwrap()
        .inner()
        .get(swappo_messaging::DEAD_LETTER_REASON_HEADER)
    {
        Some(lapin::types::AMQPValue::LongString(s)) => {
            String::from_utf8_lossy(s.as_bytes()).into_owned()
        }
        other => panic!("no reason header: {other:?}"),
    };
    assert!(reason.contains("`body`"), "{reason}");
    assert!(reason.contains("NUL character"), "{reason}");
    assert_eq!(storage.count().await.unwrap(), (10, 10));
    assert_eq!(
        metric(addr, "notifications_dead_lettered_total").await,
        Some(1.0)
    );
    conn.close(200, "done".into()).await.ok();
    stop(service, shutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_notification_stays_deleted_when_a_late_copy_of_its_event_arrives() {
    let (vhost, db) = (
        TestVhost::new("notif-tomb-").await,
        TestDb::new("notif_tomb_").await,
    );
    let (service, shutdown) = start(config(db.url(), vhost.amqp_url())).await;
    let addr = service.addr();
    let storage = Storage::connect_lazy(db.url(), 2, Duration::from_secs(5)).unwrap();
    let all = events(3);
    publish(&vhost, &all).await;
    eventually("3 rows", || async {
        storage.count().await.ok().filter(|(n, _)| *n >= 3)
    })
    .await;
    let row: (i64,) = sqlx::query_as("SELECT id FROM notifications WHERE event_id = $1")
        .bind(all[0].id)
        .fetch_one(storage.pool())
        .await
        .unwrap();
    assert!(storage.delete(&all[0].user_id, row.0).await.unwrap());
    assert_eq!(storage.delete_all(&all[1].user_id).await.unwrap(), 1);

    // Late copies: a redriven dead letter, a relay's duplicate.
    publish(&vhost, &all).await;
    eventually("the copies seen as duplicates", || async {
        metric(addr, "notifications_duplicates_total")
            .await
            .filter(|d| *d >= 3.0)
    })
    .await;
    assert_eq!(storage.count().await.unwrap(), (1, 1), "only the kept one");
    let left: uuid::Uuid = sqlx::query_scalar("SELECT event_id FROM notifications")
        .fetch_one(storage.pool())
        .await
        .unwrap();
    assert_eq!(left, all[2].id);
    // Nor through the API's create.
    let again = swappo_notifications::storage::NewNotification {
        event: all[0].clone(),
        related_item_id: None,
    };
    assert_eq!(storage.create(&again).await.unwrap(), None);
    stop(service, shutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_purge_removes_old_notifications_and_old_tombstones_only() {
    let db = TestDb::new("notif_purge_").await;
    let storage = Storage::connect_lazy(db.url(), 2, Duration::from_secs(5)).unwrap();
    storage.migrate().await.unwrap();
    let all = events(4);
    assert_eq!(storage.insert_events(&all).await.unwrap(), 4);
    // Two rows stored 10 days ago; one tombstone 10 days old, one fresh.
    sqlx::query(
        "UPDATE notifications SET created_at = now() - interval '10 days' WHERE event_id = ANY($1)",
    )
    .bind(vec![all[0].id, all[1].id])
    .execute(storage.pool())
    .await
    .unwrap();
    sqlx::query("INSERT INTO notification_tombstones (event_id, deleted_at) VALUES ($1, now() - interval '10 days'), ($2, now())")
        .bind(uuid::Uuid::new_v4())
        .bind(uuid::Uuid::new_v4())
        .execute(storage.pool())
        .await
        .unwrap();
    let week = Duration::from_secs(7 * 24 * 3600);
    assert_eq!(storage.purge(week, week).await.unwrap(), (2, 1));
    assert_eq!(storage.count().await.unwrap(), (2, 2));
    assert_eq!(storage.purge(week, week).await.unwrap(), (0, 0));
    // Both purges can use an index on the age column.
    for (table, column) in [
        ("notifications", "created_at"),
        ("notification_tombstones", "deleted_at"),
    ] {
        let indexed: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE tablename = $1 AND indexdef LIKE '%(' || $2 || ')%')",
        )
        .bind(table)
        .bind(column)
        .fetch_one(storage.pool())
        .await
        .unwrap();
        assert!(indexed, "no index on {table}.{column}");
    }
}
