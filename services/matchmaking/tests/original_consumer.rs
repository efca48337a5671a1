//! Our matchmaking publishing to the original Python notifications consumer, as during a
//! migration that replaced the publisher first (issue 16). The consumer here reads messages
//! as `Swapppo/Swappo-Notifications` `rabbitmq_consumer.py` and `handle_notification_message`
//! do, and nothing more: a plain `queue_declare(durable=True)`, `basic_qos(prefetch_count=1)`,
//! manual acks, `json.loads(body.decode())`, then `data["user_id"]`, `data["type"]`,
//! `data["title"]`, `data["body"]` (a missing key is a `KeyError`: nack and requeue) and
//! `data.get("related_user_id")`, stored in columns `String(100)`, `String(50)`,
//! `String(255)`, `Text`, `String(100)`.
mod common;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use swappo_matchmaking::Service;
use swappo_matchmaking::relay::RelayOptions;
use swappo_messaging::{Backoff, BrokerConfig, PublisherOptions};
use swappo_testkit::{TestDb, TestVhost};
use tokio_util::sync::CancellationToken;

const QUEUE: &str = "notifications_queue";
const GUARD: Duration = Duration::from_secs(120);

/// The original's `NotificationType` values (`models.py`).
const ORIGINAL_TYPES: &[&str] = &[
    "trade_offer_received",
    "trade_offer_accepted",
    "trade_offer_rejected",
    "trade_offer_cancelled",
    "trade_completed",
    "new_message",
    "item_liked",
    "system",
];

/// What `handle_notification_message` stores from one message, or why it would fail (its
/// `except Exception` path: the message is nacked and requeued).
#[derive(Debug, PartialEq)]
struct OriginalRow {
    user_id: String,
    kind: String,
    title: String,
    body: String,
    related_user_id: Option<String>,
}

fn original_handler(body: &[u8]) -> Result<OriginalRow, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("body.decode(): {e}"))?;
    let data: Value = serde_json::from_str(text).map_err(|e| format!("json.loads: {e}"))?;
    let key = |k: &str, max: Option<usize>| -> Result<String, String> {
        let v = data
            .get(k)
            .ok_or_else(|| format!("KeyError: {k}"))?
            .as_str()
            .ok_or_else(|| format!("{k} is not a string"))?;
        if max.is_some_and(|m| v.chars().count() > m) {
            return Err(format!("{k} longer than its column"));
        }
        Ok(v.to_string())
    };
    let related_user_id = match data.get("related_user_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= 100 => Some(s.clone()),
        Some(other) => return Err(format!("related_user_id {other} does not fit String(100)")),
    };
    Ok(OriginalRow {
        user_id: key("user_id", Some(100))?,
        kind: key("type", Some(50))?,
        title: key("title", Some(255))?,
        body: key("body", None)?,
        related_user_id,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_consumer_stores_every_event_our_matchmaking_publishes() {
    let vhost = TestVhost::new("mm-orig-").await;
    let db = TestDb::new("mm_orig_").await;
    let pool = common::pool(&db).await;
    // The queue as the operator declares a `legacy: true` queue, so the original's plain
    // declaration below is accepted.
    let conn = Connection::connect(vhost.amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    swappo_messaging::legacy_queue::declare_legacy(&conn, QUEUE)
        .await
        .unwrap();

    let mut service = Service::new(pool.clone());
    let relay = service.relay(
        BrokerConfig::from_url(vhost.amqp_url().to_string()).unwrap(),
        PublisherOptions {
            connect_wait: Duration::from_secs(1),
            backoff: Backoff {
                initial: Duration::from_millis(50),
                max: Duration::from_millis(500),
            },
            ..swappo_matchmaking::publisher_options(QUEUE)
        },
        RelayOptions {
            poll_interval: Duration::from_millis(200),
            ..RelayOptions::default()
        },
    );
    let stop = CancellationToken::new();
    let relay = tokio::spawn(relay.run(stop.clone()));
    let instance = common::Instance::start(&service).await;
    let api = common::Api::new(&instance.base);

    // Every kind of change, through the original's API: create, accept, complete, reject,
    // cancel, and a deletion.
    let mut expected = Vec::new();
    let create = |p: &'static str, r: &'static str| {
        let api = api.clone();
        async move {
            let (_, o) = api
                .call(
                    Method::POST,
                    "/api/v1/offers",
                    Some(json!({"proposer_id": p, "receiver_id": r,
                                "offered_item_ids": [1], "requested_item_ids": [2]})),
                )
                .await;
            o["id"].as_i64().unwrap()
        }
    };
    let patch = |id: i64, user: &'static str, status: &'static str| {
        let api = api.clone();
        async move {
            let (code, body) = api
                .call(
                    Method::PATCH,
                    &format!("/api/v1/offers/{id}?user_id={user}"),
                    Some(json!({ "status": status })),
                )
                .await;
            assert_eq!(code, 200, "{body}");
        }
    };
    let a = create("alice", "bob").await;
    expected.push(("bob", "trade_offer_received", "alice"));
    patch(a, "bob", "accepted").await;
    expected.push(("alice", "trade_offer_accepted", "bob"));
    patch(a, "alice", "completed").await;
    expected.push(("bob", "trade_completed", "alice"));
    let b = create("carol", "dave").await;
    expected.push(("dave", "trade_offer_received", "carol"));
    patch(b, "dave", "rejected").await;
    expected.push(("carol", "trade_offer_rejected", "dave"));
    let c = create("erin", "frank").await;
    expected.push(("frank", "trade_offer_received", "erin"));
    patch(c, "erin", "cancelled").await;
    expected.push(("frank", "trade_offer_cancelled", "erin"));
    let d = create("gina", "hank").await;
    expected.push(("hank", "trade_offer_received", "gina"));
    let (code, _) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/offers/{d}?user_id=gina"),
            None,
        )
        .await;
    assert_eq!(code, 204);
    expected.push(("hank", "trade_offer_cancelled", "gina"));

    // The original consumer.
    let channel = conn.create_channel().await.unwrap();
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
    channel
        .basic_qos(1, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            QUEUE.into(),
            "original-consumer".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut stored = Vec::new();
    while stored.len() < expected.len() {
        let delivery = tokio::time::timeout(GUARD, consumer.next())
            .await
            .expect("the next event arrives")
            .expect("the consumer is open")
            .expect("a delivery");
        assert_eq!(
            delivery
                .properties
                .content_type()
                .as_ref()
                .map(|c| c.as_str()),
            Some("application/json")
        );
        match original_handler(&delivery.data) {
            Ok(row) => {
                delivery.ack(BasicAckOptions::default()).await.unwrap();
                stored.push(row);
            }
            Err(why) => {
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                panic!(
                    "the original consumer could not store {:?}: {why}",
                    String::from_utf8_lossy(&delivery.data)
                );
            }
        }
    }
    for row in &stored {
        assert!(ORIGINAL_TYPES.contains(&row.kind.as_str()), "{row:?}");
        assert!(!row.title.is_empty() && !row.body.is_empty(), "{row:?}");
    }
    let mut got: Vec<(String, String, Option<String>)> = stored
        .into_iter()
        .map(|r| (r.user_id, r.kind, r.related_user_id))
        .collect();
    let mut want: Vec<(String, String, Option<String>)> = expected
        .iter()
        .map(|(u, t, r)| (u.to_string(), t.to_string(), Some(r.to_string())))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(
        got, want,
        "one stored notification per change, for the other party"
    );

    stop.cancel();
    tokio::time::timeout(GUARD, relay)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    instance.stop().await;
    conn.close(200, "done".into()).await.ok();
}

#[test]
fn the_stand_in_reads_only_what_the_original_handler_reads() {
    let row = original_handler(
        br#"{"user_id": "u", "type": "system", "title": "t", "body": "b", "unknown": 1}"#,
    )
    .unwrap();
    assert_eq!(row.related_user_id, None);
    assert!(
        original_handler(br#"{"type": "system", "title": "t", "body": "b"}"#)
            .unwrap_err()
            .contains("KeyError: user_id")
    );
}
