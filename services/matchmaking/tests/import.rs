//! The one-off import (issue 16) from a database created with the original service's schema
//! (`Swapppo/Swappo-Matchmaking` `models.py`, as SQLAlchemy's `create_all` lays it out on
//! PostgreSQL), into ours: ids kept and served by the original API, no events or rooms made,
//! reruns harmless, bad rows and conflicts refused with nothing written.
mod common;

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use swappo_matchmaking::import::{ImportError, import};
use swappo_testkit::TestDb;

/// `TradeOfferDB` of the original `models.py`.
const ORIGINAL_SCHEMA: &str = "
CREATE TABLE trade_offers (
    id SERIAL NOT NULL,
    proposer_id VARCHAR(100) NOT NULL,
    receiver_id VARCHAR(100) NOT NULL,
    offered_item_ids INTEGER[] NOT NULL,
    requested_item_ids INTEGER[] NOT NULL,
    status VARCHAR(20) NOT NULL,
    message TEXT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    responded_at TIMESTAMP WITH TIME ZONE,
    PRIMARY KEY (id)
);
CREATE INDEX ix_trade_offers_id ON trade_offers (id);
CREATE INDEX ix_trade_offers_proposer_id ON trade_offers (proposer_id);
CREATE INDEX ix_trade_offers_receiver_id ON trade_offers (receiver_id);
CREATE INDEX ix_trade_offers_status ON trade_offers (status);
";

async fn original_db() -> (TestDb, PgPool) {
    let db = TestDb::new("mm_orig_").await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(db.url())
        .await
        .unwrap();
    sqlx::raw_sql(ORIGINAL_SCHEMA).execute(&pool).await.unwrap();
    let statuses = ["pending", "accepted", "rejected", "cancelled", "completed"];
    for i in 1..=10i32 {
        let status = statuses[(i as usize) % statuses.len()];
        sqlx::query(
            "INSERT INTO trade_offers (proposer_id, receiver_id, offered_item_ids, \
               requested_item_ids, status, message, created_at, updated_at, responded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, now() - make_interval(mins => $7), now(), \
               CASE WHEN $5 IN ('accepted', 'rejected') THEN now() END)",
        )
        .bind(format!("user{}", i % 3))
        .bind(format!("user{}", i % 3 + 10))
        .bind(vec![i, i + 100])
        .bind(vec![i + 200])
        .bind(status)
        .bind((i % 2 == 0).then(|| format!("note {i}")))
        .bind(100 - i)
        .execute(&pool)
        .await
        .unwrap();
    }
    // Deleted pending offers leave gaps.
    sqlx::query("DELETE FROM trade_offers WHERE id IN (5, 10)")
        .execute(&pool)
        .await
        .unwrap();
    (db, pool)
}

type Row = (
    i64,
    String,
    String,
    Vec<i64>,
    Vec<i64>,
    String,
    Option<String>,
);

async fn rows(pool: &PgPool) -> Vec<Row> {
    sqlx::query_as(
        "SELECT id::bigint, proposer_id::text, receiver_id::text, offered_item_ids::bigint[], \
                requested_item_ids::bigint[], status::text, message FROM trade_offers ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn every_original_offer_is_copied_with_its_id_and_served_by_the_original_api() {
    let (_odb, original) = original_db().await;
    let db = TestDb::new("mm_ours_").await;
    let ours = common::pool(&db).await;
    let report = import(&original, &ours).await.unwrap();
    assert_eq!(
        (report.read, report.imported, report.already_there),
        (8, 8, 0)
    );
    assert_eq!(rows(&ours).await, rows(&original).await);
    assert_eq!(
        common::count(&ours, "outbox").await,
        0,
        "history makes no events"
    );

    let service = swappo_matchmaking::Service::new(ours.clone());
    let instance = common::Instance::start(&service).await;
    let api = common::Api::new(&instance.base);
    let (status, offer) = api.get("/api/v1/offers/6").await;
    assert_eq!(status, StatusCode::OK, "{offer}");
    assert_eq!(offer["offered_item_ids"], json!([6, 106]));
    // A new offer continues above the original ids.
    let (status, created) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/offers",
            Some(json!({"proposer_id": "a", "receiver_id": "b",
                        "offered_item_ids": [1], "requested_item_ids": [2]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        created["id"], 11,
        "above the original sequence (10 was deleted)"
    );
    instance.stop().await;

    let again = import(&original, &ours).await.unwrap();
    assert_eq!(
        (again.imported, again.already_there),
        (0, 8),
        "a rerun changes nothing"
    );
}

#[tokio::test]
async fn a_row_our_table_cannot_hold_stops_the_import_before_anything_is_written() {
    let (_odb, original) = original_db().await;
    sqlx::query("UPDATE trade_offers SET status = 'countered' WHERE id = 3")
        .execute(&original)
        .await
        .unwrap();
    sqlx::query("UPDATE trade_offers SET requested_item_ids = '{}' WHERE id = 7")
        .execute(&original)
        .await
        .unwrap();
    let db = TestDb::new("mm_ours_").await;
    let ours = common::pool(&db).await;
    match import(&original, &ours).await {
        Err(ImportError::Invalid(bad)) => {
            let ids: Vec<i64> = bad.iter().map(|(id, _)| *id).collect();
            assert_eq!(ids, vec![3, 7]);
            assert!(bad[0].1.contains("countered"), "{bad:?}");
        }
        other => panic!("expected invalid rows, got {other:?}"),
    }
    assert_eq!(common::count(&ours, "trade_offers").await, 0);
}

#[tokio::test]
async fn a_target_holding_other_offers_at_those_ids_is_refused_untouched() {
    let (_odb, original) = original_db().await;
    let db = TestDb::new("mm_ours_").await;
    let ours = common::pool(&db).await;
    let service = swappo_matchmaking::Service::new(ours.clone());
    let instance = common::Instance::start(&service).await;
    let api = common::Api::new(&instance.base);
    api.create("zed", "yan", &[1], &[2]).await;
    instance.stop().await;
    match import(&original, &ours).await {
        Err(ImportError::Conflict(ids)) => assert_eq!(ids, vec![1]),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(common::count(&ours, "trade_offers").await, 1);
}
