//! The one-off import (issue 16) from a database created with the original service's schema
//! (`Swapppo/Swappo-Notifications` `models.py`, as SQLAlchemy's `create_all` lays it out on
//! PostgreSQL), into ours: ids kept, reruns harmless, a conflict refused with nothing written.
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::time::Duration;
use swappo_messaging::{EventType, NotificationEvent};
use swappo_notifications::Storage;
use swappo_notifications::import::{ImportError, import};
use swappo_testkit::TestDb;

/// `NotificationDB` of the original `models.py`.
const ORIGINAL_SCHEMA: &str = "
CREATE TABLE notifications (
    id SERIAL NOT NULL,
    user_id VARCHAR(100) NOT NULL,
    type VARCHAR(50) NOT NULL,
    title VARCHAR(255) NOT NULL,
    body TEXT NOT NULL,
    related_user_id VARCHAR(100),
    related_item_id INTEGER,
    related_offer_id INTEGER,
    is_read BOOLEAN NOT NULL,
    read_at TIMESTAMP WITH TIME ZONE,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (id)
);
CREATE INDEX ix_notifications_id ON notifications (id);
CREATE INDEX ix_notifications_user_id ON notifications (user_id);
CREATE INDEX ix_notifications_type ON notifications (type);
CREATE INDEX ix_notifications_is_read ON notifications (is_read);
";

async fn original_db() -> (TestDb, PgPool) {
    let db = TestDb::new("notif_orig_").await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(db.url())
        .await
        .unwrap();
    sqlx::raw_sql(ORIGINAL_SCHEMA).execute(&pool).await.unwrap();
    // As the original wrote them: the consumer's rows (no offer id stored), the API's rows,
    // read ones, and gaps where users deleted notifications.
    for i in 1..=12 {
        sqlx::query(
            "INSERT INTO notifications (user_id, type, title, body, related_user_id, \
               related_item_id, related_offer_id, is_read, read_at, created_at) \
             VALUES ($1, $2, $3, 'body', 'user123', $4, $5, $6, \
               CASE WHEN $6 THEN now() END, now() - make_interval(mins => $7))",
        )
        .bind(if i % 2 == 0 { "alice" } else { "bob" })
        .bind(if i % 3 == 0 {
            "new_trade_offer"
        } else {
            "trade_offer_accepted"
        })
        .bind(format!("title {i}"))
        .bind((i % 4 == 0).then_some(i))
        .bind((i % 5 == 0).then_some(i * 10))
        .bind(i % 2 == 1)
        .bind(100 - i)
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query("DELETE FROM notifications WHERE id IN (2, 5, 11)")
        .execute(&pool)
        .await
        .unwrap();
    (db, pool)
}

async fn our_db() -> (TestDb, Storage) {
    let db = TestDb::new("notif_ours_").await;
    let storage = Storage::connect_lazy(db.url(), 2, Duration::from_secs(10)).unwrap();
    storage.migrate().await.unwrap();
    (db, storage)
}

type Row = (
    i64,
    String,
    String,
    String,
    Option<i64>,
    Option<i64>,
    bool,
    bool,
);

async fn rows(pool: &PgPool, table_id_type: &str) -> Vec<Row> {
    let sql = format!(
        "SELECT id::bigint, user_id, type, title, related_item_id::{t}, related_offer_id::{t}, \
                is_read, read_at IS NOT NULL FROM notifications ORDER BY id",
        t = table_id_type
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_original_row_is_copied_with_its_id_and_new_rows_continue_above_them() {
    let (_odb, original) = original_db().await;
    let (_db, ours) = our_db().await;
    let report = import(&original, ours.pool()).await.unwrap();
    assert_eq!(
        (report.read, report.imported, report.already_there),
        (9, 9, 0)
    );
    assert_eq!(
        rows(ours.pool(), "bigint").await,
        rows(&original, "bigint").await
    );
    let created: Vec<(i64, bool)> = sqlx::query_as(
        "SELECT o.id, o.occurred_at = o.created_at FROM notifications o ORDER BY id",
    )
    .fetch_all(ours.pool())
    .await
    .unwrap();
    assert!(
        created.iter().all(|(_, same)| *same),
        "occurred_at is the original created_at"
    );

    // The ids the front end holds work on the original API.
    let marked = ours
        .mark_read("alice", 4)
        .await
        .unwrap()
        .expect("id 4 is alice's");
    assert_eq!(marked.id, 4);
    // A notification stored after the import takes a new id.
    let event = NotificationEvent::new("alice", EventType::System, "after", "after");
    ours.insert_events(&[event]).await.unwrap();
    let newest: i64 = sqlx::query_scalar("SELECT max(id) FROM notifications")
        .fetch_one(ours.pool())
        .await
        .unwrap();
    assert_eq!(newest, 13, "above the original 12");
}

#[tokio::test]
async fn running_the_import_again_changes_nothing() {
    let (_odb, original) = original_db().await;
    let (_db, ours) = our_db().await;
    import(&original, ours.pool()).await.unwrap();
    let before = rows(ours.pool(), "bigint").await;
    let again = import(&original, ours.pool()).await.unwrap();
    assert_eq!((again.read, again.imported, again.already_there), (9, 0, 9));
    assert_eq!(rows(ours.pool(), "bigint").await, before);
}

#[tokio::test]
async fn a_target_that_already_holds_other_notifications_at_those_ids_is_refused_untouched() {
    let (_odb, original) = original_db().await;
    let (_db, ours) = our_db().await;
    // The service consumed before the import: its first rows took ids 1 and 2.
    let events: Vec<NotificationEvent> = (0..2)
        .map(|i| NotificationEvent::new("carol", EventType::System, format!("t{i}"), "b"))
        .collect();
    ours.insert_events(&events).await.unwrap();
    let before = rows(ours.pool(), "bigint").await;
    match import(&original, ours.pool()).await {
        Err(ImportError::Conflict(ids)) => assert_eq!(ids, vec![1]),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(rows(ours.pool(), "bigint").await, before, "nothing written");
}
