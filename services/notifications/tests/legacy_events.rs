//! The original Python matchmaking publishing into our notifications service, as during a
//! migration that replaced the consumer first (issue 16): messages built exactly as
//! `rabbitmq_publisher.py` builds them, on a queue declared exactly as the original services
//! declare it (classic, durable, no arguments), consumed by the real service.
mod common;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use swappo_notifications::app::{self, Service};
use swappo_notifications::config::{Config, QueueType};
use swappo_notifications::storage::Storage;
use swappo_testkit::{TestDb, TestVhost};
use tokio_util::sync::CancellationToken;

/// The original publisher's queue name (hard-coded in `rabbitmq_publisher.py`).
const QUEUE: &str = "notifications_queue";
/// Failure guard for every wait (never a timing assertion).
const GUARD: Duration = Duration::from_secs(120);

/// A stand-in for the original `NotificationPublisher`, publishing as it does: a plain
/// `queue_declare(durable=True)`, then `basic_publish(exchange="", routing_key=queue,
/// body=json.dumps(data), properties=BasicProperties(delivery_mode=2,
/// content_type="application/json"))`: no message id, no timestamp, no headers.
struct OriginalPublisher {
    connection: Connection,
    channel: lapin::Channel,
}

/// A value of the dict `send_trade_notification` builds.
enum Py<'a> {
    Str(&'a str),
    Int(i64),
}

/// Python's `json.dumps(dict)` with its defaults: keys in insertion order, `", "` and
/// `": "` separators, `ensure_ascii=True` (non-ASCII as `\uXXXX`, surrogate pairs beyond
/// the BMP).
fn json_dumps(pairs: &[(&str, Py<'_>)]) -> String {
    fn string(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{u:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }
    let fields: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Py::Str(s) => string(s),
                Py::Int(n) => n.to_string(),
            };
            format!("{}: {v}", string(k))
        })
        .collect();
    format!("{{{}}}", fields.join(", "))
}

/// The body of the original's notification for `status` of `offer` (its wording and key
/// order: `user_id`, `related_offer_id`, `related_user_id`, then `type`, `title`, `body`).
fn original_body(status: &str, offer: i64, recipient: &str, actor: &str) -> String {
    let (kind, title, body) = match status {
        "accepted" => (
            "trade_offer_accepted",
            "Trade Offer Accepted! 🎉",
            "Great news! Your trade offer has been accepted.",
        ),
        "rejected" => (
            "trade_offer_rejected",
            "Trade Offer Declined",
            "Your trade offer was declined. Keep exploring!",
        ),
        "cancelled" => (
            "trade_offer_cancelled",
            "Trade Offer Cancelled",
            "A trade offer you received has been cancelled.",
        ),
        _ => (
            "trade_completed",
            "Trade Completed! ✅",
            "Congratulations! Your trade has been completed.",
        ),
    };
    json_dumps(&[
        ("user_id", Py::Str(recipient)),
        ("related_offer_id", Py::Int(offer)),
        ("related_user_id", Py::Str(actor)),
        ("type", Py::Str(kind)),
        ("title", Py::Str(title)),
        ("body", Py::Str(body)),
    ])
}

impl OriginalPublisher {
    async fn connect(url: &str) -> Self {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .expect("connects");
        let channel = connection.create_channel().await.unwrap();
        channel
            .queue_declare(
                QUEUE.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("the original's plain queue_declare(durable=True) is accepted");
        // The original publishes without confirms; the test waits for them only to know
        // the messages are in the queue. The messages are the same either way.
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        Self {
            connection,
            channel,
        }
    }

    async fn publish(&self, body: &str, timestamp: Option<u64>) {
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        if let Some(ts) = timestamp {
            props = props.with_timestamp(ts);
        }
        self.channel
            .basic_publish(
                "".into(),
                QUEUE.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                props,
            )
            .await
            .unwrap()
            .await
            .expect("the broker confirmed");
    }
}

fn config(database_url: &str, amqp_url: &str) -> Config {
    Config {
        // The legacy queue is classic: the consumer counts deliveries itself.
        queue_type: QueueType::Classic,
        // Declared beforehand as the operator declares a `legacy: true` queue.
        declare_queue: false,
        ..common::service_config(database_url, amqp_url, QUEUE)
    }
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

struct Running {
    service: Service,
    shutdown: CancellationToken,
    storage: Storage,
    vhost: TestVhost,
    _db: TestDb,
}

/// The legacy queue (as `declare_legacy` lays it out), the service consuming it.
async fn running(prefix: &str) -> Running {
    let vhost = TestVhost::new(&format!("notif-{prefix}-")).await;
    let db = TestDb::new(&format!("notif_{prefix}_")).await;
    let conn = Connection::connect(vhost.amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    swappo_messaging::legacy_queue::declare_legacy(&conn, QUEUE)
        .await
        .expect("the legacy queue is declared");
    conn.close(200, "declared".into()).await.ok();
    let shutdown = CancellationToken::new();
    let service = app::start(config(db.url(), vhost.amqp_url()), shutdown.clone())
        .await
        .expect("the service starts");
    let storage = Storage::connect_lazy(db.url(), 2, Duration::from_secs(5)).unwrap();
    let addr = service.addr();
    eventually("/ready", || async {
        let r = reqwest::get(format!("http://{addr}/ready")).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    Running {
        service,
        shutdown,
        storage,
        vhost,
        _db: db,
    }
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(GUARD, self.service.wait())
            .await
            .expect("stops in time")
            .expect("stops cleanly");
    }

    async fn dlq_depth(&self) -> u64 {
        let q = self
            .vhost
            .management()
            .queue(self.vhost.name(), &format!("{QUEUE}.dlq"))
            .await
            .unwrap()
            .expect("the dead-letter queue exists");
        q.messages_ready + q.messages_unacknowledged
    }
}

#[test]
fn the_stand_in_writes_what_pythons_json_dumps_writes() {
    // `json.dumps({"user_id": "user123", "related_offer_id": 42, ...})` in CPython 3.
    assert_eq!(
        original_body("accepted", 42, "user123", "user456"),
        r#"{"user_id": "user123", "related_offer_id": 42, "related_user_id": "user456", "type": "trade_offer_accepted", "title": "Trade Offer Accepted! \ud83c\udf89", "body": "Great news! Your trade offer has been accepted."}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_messages_of_the_original_publisher_become_n_rows_none_dead_lettered_and_again_still_n() {
    const N: i64 = 200;
    let run = running("v0").await;
    let publisher = OriginalPublisher::connect(run.vhost.amqp_url()).await;
    let statuses = ["accepted", "rejected", "cancelled", "completed"];
    let bodies: Vec<String> = (1..=N)
        .map(|offer| {
            let status = statuses[(offer as usize) % statuses.len()];
            original_body(status, offer, &format!("user{}", offer % 7), "user123")
        })
        .collect();
    for b in &bodies {
        publisher.publish(b, None).await;
    }
    let addr = run.service.addr();
    eventually(&format!("{N} rows"), || async {
        let (rows, _) = run.storage.count().await.ok()?;
        (rows >= N).then_some(())
    })
    .await;
    assert_eq!(run.storage.count().await.unwrap(), (N, N));
    assert_eq!(run.dlq_depth().await, 0, "nothing dead-lettered");

    // The same messages again (a republish, or the original's at-least-once redelivery).
    for b in &bodies {
        publisher.publish(b, None).await;
    }
    eventually("the second round acked", || async {
        let acked = metric(addr, "notifications_acked_total").await?;
        let q = run
            .vhost
            .management()
            .queue(run.vhost.name(), QUEUE)
            .await
            .ok()??;
        (acked >= (2 * N) as f64 && q.messages_ready + q.messages_unacknowledged == 0).then_some(())
    })
    .await;
    assert_eq!(run.storage.count().await.unwrap(), (N, N), "still N rows");
    assert_eq!(run.dlq_depth().await, 0);

    // What the front end shows keeps the original wording.
    let list: Value = reqwest::get(format!(
        "http://{addr}/api/v1/notifications/user1?limit=100"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let accepted = list
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["type"] == "trade_offer_accepted")
        .expect("an accepted notification for user1");
    assert_eq!(accepted["title"], "Trade Offer Accepted! 🎉");
    assert_eq!(accepted["related_user_id"], "user123");
    publisher.connection.close(200, "done".into()).await.ok();
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v0_message_takes_its_time_from_the_amqp_timestamp_and_a_broken_one_is_dead_lettered() {
    let run = running("v0ts").await;
    let publisher = OriginalPublisher::connect(run.vhost.amqp_url()).await;
    publisher
        .publish(
            &original_body("completed", 7, "alice", "bob"),
            Some(1_767_225_600),
        )
        .await;
    // A v0 body without a title: it breaks the contract, so it goes to the DLQ at once.
    publisher
        .publish(
            &json_dumps(&[("user_id", Py::Str("alice")), ("type", Py::Str("system"))]),
            None,
        )
        .await;
    eventually("one row", || async {
        (run.storage.count().await.ok()?.0 == 1).then_some(())
    })
    .await;
    eventually("one dead letter", || async {
        (run.dlq_depth().await == 1).then_some(())
    })
    .await;
    let addr = run.service.addr();
    let list: Value = reqwest::get(format!("http://{addr}/api/v2/notifications/alice"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = &list["notifications"][0];
    assert_eq!(row["occurred_at"], "2026-01-01T00:00:00Z");
    assert_eq!(row["related_offer_id"], 7);
    publisher.connection.close(200, "done".into()).await.ok();
    run.stop().await;
}
