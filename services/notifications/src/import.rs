//! One-off import of the original Python service's notifications (issue 16): rows of its
//! `notifications` table (`Swapppo/Swappo-Notifications` `models.py`) are copied into ours
//! with their ids, which the front end holds (mark read, delete), kept.
//!
//! - Each row gets an event id derived from its original id (UUID v5), so running the import
//!   again finds the rows it already copied and changes nothing.
//! - `occurred_at` is the original `created_at` (the original had no separate event time).
//! - Types are copied as stored: the original consumer did not check them.
//! - All or nothing: one transaction. A target row with an imported id but other content (the
//!   service stored something before the import) stops the import naming the ids, and
//!   nothing is written.
//! - Afterwards the id sequence continues above every id the original handed out (deleted
//!   rows' too), so rows stored later never take an id the front end may hold.
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// Namespace of the event ids of imported rows (fixed: a rerun must derive the same ids).
pub const IMPORT_NAMESPACE: Uuid = Uuid::from_u128(0x1c7e_2f55_9a0b_4c3d_8e61_f2a4_b7d9_0c16);
/// Rows read from the original database per round trip.
const PAGE: i64 = 1000;

/// The event id of the row imported from original id `id`.
pub fn imported_event_id(id: i64) -> Uuid {
    Uuid::new_v5(&IMPORT_NAMESPACE, format!("notifications/{id}").as_bytes())
}

/// What the import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportReport {
    /// Rows read from the original database.
    pub read: u64,
    /// Rows written to ours.
    pub imported: u64,
    /// Rows already imported by an earlier run (left as they are).
    pub already_there: u64,
}

/// Why the import stopped; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Reading the original database or writing ours failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Rows of ours hold ids of original rows with other content.
    #[error(
        "notifications with ids {0:?} (and maybe more) already exist in the target with other \
         content; import into a database the service has not written to yet"
    )]
    Conflict(Vec<i64>),
}

/// One row of the original table.
#[derive(Debug, Clone, sqlx::FromRow)]
struct OriginalRow {
    id: i32,
    user_id: String,
    #[sqlx(rename = "type")]
    kind: String,
    title: String,
    body: String,
    related_user_id: Option<String>,
    related_item_id: Option<i32>,
    related_offer_id: Option<i32>,
    is_read: bool,
    read_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

/// Copies every row of the original `notifications` table in `source` into `target` (whose
/// schema must be migrated).
pub async fn import(source: &PgPool, target: &PgPool) -> Result<ImportReport, ImportError> {
    let mut report = ImportReport::default();
    let mut tx = target.begin().await?;
    let mut after: i32 = 0;
    loop {
        let rows: Vec<OriginalRow> = sqlx::query_as(
            "SELECT id, user_id, type, title, body, related_user_id, related_item_id, \
                    related_offer_id, is_read, read_at, created_at \
             FROM notifications WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(PAGE)
        .fetch_all(source)
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        report.read += rows.len() as u64;

        let ids: Vec<i64> = rows.iter().map(|r| i64::from(r.id)).collect();
        let events: Vec<Uuid> = ids.iter().map(|id| imported_event_id(*id)).collect();
        // Rows already holding these ids: ours from an earlier run, or a conflict.
        let present: Vec<(i64, Uuid)> =
            sqlx::query_as("SELECT id, event_id FROM notifications WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?;
        let conflicts: Vec<i64> = present
            .iter()
            .filter(|(id, event)| *event != imported_event_id(*id))
            .map(|(id, _)| *id)
            .take(20)
            .collect();
        if !conflicts.is_empty() {
            return Err(ImportError::Conflict(conflicts));
        }
        let done = sqlx::query(
            "INSERT INTO notifications (id, event_id, user_id, type, title, body, \
               related_user_id, related_item_id, related_offer_id, is_read, read_at, \
               occurred_at, created_at) OVERRIDING SYSTEM VALUE \
             SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::varchar[], $4::varchar[], \
               $5::varchar[], $6::text[], $7::varchar[], $8::bigint[], $9::bigint[], \
               $10::bool[], $11::timestamptz[], $12::timestamptz[], $12::timestamptz[]) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&ids)
        .bind(&events)
        .bind(rows.iter().map(|r| r.user_id.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.kind.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.title.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.body.clone()).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.related_user_id.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.related_item_id.map(i64::from))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.related_offer_id.map(i64::from))
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.is_read).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.read_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        report.imported += done.rows_affected();
        report.already_there += present.len() as u64;
    }
    // New rows continue above every id the front end may hold.
    // Above every id the original ever handed out, deleted rows' included: a client may
    // still hold one.
    let handed_out: i64 = sqlx::query_scalar(
        "SELECT COALESCE(pg_sequence_last_value( \
           pg_get_serial_sequence('notifications', 'id')::regclass), 0)",
    )
    .fetch_one(source)
    .await?;
    sqlx::query(
        "SELECT setval(pg_get_serial_sequence('notifications', 'id'), \
                GREATEST((SELECT max(id) FROM notifications), $1, 1))",
    )
    .bind(handed_out)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_imported_rows_event_id_depends_on_its_original_id_only() {
        assert_eq!(imported_event_id(42), imported_event_id(42));
        assert_ne!(imported_event_id(42), imported_event_id(43));
        assert_eq!(imported_event_id(42).get_version_num(), 5);
    }
}
