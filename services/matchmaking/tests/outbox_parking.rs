//! Outbox rows that can never be published are parked out of the claim: a batch full of
//! them cannot stop the relay, they are written once, counted, and good rows go out.
mod common;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use std::sync::Arc;
use std::time::Duration;
use swappo_matchmaking::metrics::Metrics;
use swappo_matchmaking::outbox;
use swappo_matchmaking::relay::{Relay, RelayOptions};
use swappo_messaging::{BrokerConfig, EventType, NotificationEvent, Publisher, QueueSpec, declare};
use swappo_testkit::{TestDb, TestVhost};
use tokio::sync::Notify;
use uuid::Uuid;

const QUEUE: &str = "notifications_queue";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_that_cannot_be_published_are_parked_once_and_never_block_the_good_ones() {
    common::init_logs();
    let vhost = TestVhost::new("mm-park-").await;
    let conn = Connection::connect(vhost.amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    declare(&channel, &QueueSpec::quorum(QUEUE)).await.unwrap();
    let db = TestDb::new("mm_park_").await;
    let pool = common::pool(&db).await;

    // 20 broken rows first (a batch's worth), then 5 good events.
    const BATCH: i64 = 20;
    for i in 0..BATCH {
        let mut broken = NotificationEvent::new("u", EventType::System, "t", "b");
        if i % 2 == 0 {
            broken.title = String::new(); // breaks the contract
        }
        let payload = if i % 2 == 0 {
            serde_json::to_value(&broken).unwrap()
        } else {
            serde_json::json!({"not": "an event"})
        };
        let event_id = if i % 2 == 0 {
            broken.id
        } else {
            Uuid::new_v4()
        };
        sqlx::query("INSERT INTO outbox (event_id, payload) VALUES ($1, $2)")
            .bind(event_id)
            .bind(payload)
            .execute(&pool)
            .await
            .unwrap();
    }
    let good: Vec<_> = (1..=5)
        .map(|i| {
            NotificationEvent::new("alice", EventType::TradeOfferReceived, "New offer", "b")
                .with_related_offer(i)
        })
        .collect();
    let mut tx = pool.begin().await.unwrap();
    for e in &good {
        outbox::insert(&mut tx, e).await.unwrap();
    }
    tx.commit().await.unwrap();

    let broker = BrokerConfig::from_url(vhost.amqp_url()).unwrap();
    let options = swappo_matchmaking::publisher_options(QUEUE);
    let publisher = Publisher::connect(broker.clone(), options.clone())
        .await
        .unwrap();
    let metrics = Arc::new(Metrics::new());
    let relay = Relay::new(
        pool.clone(),
        broker,
        options,
        Arc::new(Notify::new()),
        metrics.clone(),
        RelayOptions {
            batch_size: BATCH,
            ..RelayOptions::default()
        },
    );
    // Round by round, no timing involved.
    let first = relay.round(&publisher).await.unwrap();
    assert_eq!((first.claimed, first.undecodable, first.sent), (20, 20, 0));
    let second = relay.round(&publisher).await.unwrap();
    assert_eq!(
        (second.claimed, second.sent),
        (5, 5),
        "the parked rows are out of the claim"
    );
    let third = relay.round(&publisher).await.unwrap();
    assert_eq!(third.claimed, 0, "nothing left to claim");

    let depth = channel
        .queue_declare(
            QUEUE.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count();
    assert_eq!(depth, 5, "every good event published");
    let parked: Vec<(i32, Option<String>)> = sqlx::query_as(
        "SELECT attempts, last_error FROM outbox WHERE parked_at IS NOT NULL ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(parked.len(), 20);
    assert!(
        parked.iter().all(|(attempts, _)| *attempts == 1),
        "each broken row written once: {parked:?}"
    );
    assert!(parked[0].1.as_deref().unwrap().contains("title"));
    assert!(
        parked[1]
            .1
            .as_deref()
            .unwrap()
            .contains("not a notification event")
    );
    let backlog = outbox::backlog(&pool).await.unwrap();
    assert_eq!((backlog.pending, backlog.parked), (0, 20));
    metrics.set_backlog(backlog);
    let text = metrics.encode();
    assert!(
        text.lines().any(|l| l == "matchmaking_outbox_parked 20"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "matchmaking_outbox_parked_rows_total 20"),
        "{text}"
    );

    // An operator fixes a row and releases it: it goes out at the next round.
    let fixed = NotificationEvent::new("bob", EventType::System, "Fixed", "b");
    sqlx::query(
        "UPDATE outbox SET payload = $1, event_id = $2, parked_at = NULL \
         WHERE id = (SELECT min(id) FROM outbox WHERE parked_at IS NOT NULL)",
    )
    .bind(serde_json::to_value(&fixed).unwrap())
    .bind(fixed.id)
    .execute(&pool)
    .await
    .unwrap();
    let fourth = relay.round(&publisher).await.unwrap();
    assert_eq!((fourth.claimed, fourth.sent), (1, 1));
    publisher.close().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.close(200, "done".into())).await;
}
