//! One-off import of the original Python service's trade offers (issue 16): rows of its
//! `trade_offers` table (`Swapppo/Swappo-Matchmaking` `models.py`) are copied into ours with
//! their ids, which the front end holds (and the chat service, as `trade_offer_id`), kept.
//!
//! - Imported offers are history: no outbox events and no chat rooms are made for them.
//! - All or nothing: every row is checked against our table's rules first ([`check_row`]);
//!   if any breaks one, the import stops naming the rows and why, and nothing is written.
//! - A target row with an imported id is left alone when it holds the same offer (an earlier
//!   run); with another offer it stops the import (the service wrote before the import).
//! - Afterwards the id sequence continues above every id the original handed out (deleted
//!   rows' too), so a new row never takes an id a client may still hold.
use crate::offer::{MAX_USER_ID_LEN, OfferStatus};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Rows read from the original database per round trip.
const PAGE: i64 = 1000;
/// Most problems listed in one error.
const MAX_LISTED: usize = 20;

/// What the import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportReport {
    /// Rows read from the original database.
    pub read: u64,
    /// Rows written to ours.
    pub imported: u64,
    /// Rows already imported by an earlier run.
    pub already_there: u64,
}

/// Why the import stopped; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Reading the original database or writing ours failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Original rows our table cannot hold: `(id, reason)`.
    #[error("{} original rows cannot be imported (nothing was written): {}", .0.len(), list(.0))]
    Invalid(Vec<(i64, String)>),
    /// Rows of ours hold ids of original rows with another offer.
    #[error(
        "trade offers with ids {0:?} already exist in the target with other content; import \
         into a database the service has not written to yet (nothing was written)"
    )]
    Conflict(Vec<i64>),
}

fn list(problems: &[(i64, String)]) -> String {
    problems
        .iter()
        .map(|(id, why)| format!("id {id}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// One row of the original table.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct OriginalOffer {
    /// `Integer` primary key.
    pub id: i32,
    /// `String(100)`.
    pub proposer_id: String,
    /// `String(100)`.
    pub receiver_id: String,
    /// `ARRAY(Integer)`.
    pub offered_item_ids: Vec<i32>,
    /// `ARRAY(Integer)`.
    pub requested_item_ids: Vec<i32>,
    /// `String(20)`.
    pub status: String,
    /// `Text`.
    pub message: Option<String>,
    /// `DateTime(timezone=True)`.
    pub created_at: DateTime<Utc>,
    /// `DateTime(timezone=True)`.
    pub updated_at: DateTime<Utc>,
    /// `DateTime(timezone=True)`, nullable.
    pub responded_at: Option<DateTime<Utc>>,
}

/// Checks an original row against our table's rules (pure): user ids of 1 to 100
/// characters and different, at least one item a side, a known status. The original's API
/// enforced the same, so a row breaking them was written around it.
pub fn check_row(row: &OriginalOffer) -> Result<(), String> {
    for (field, id) in [
        ("proposer_id", &row.proposer_id),
        ("receiver_id", &row.receiver_id),
    ] {
        let n = id.chars().count();
        if n == 0 || n > MAX_USER_ID_LEN {
            return Err(format!(
                "{field} has {n} characters (1 to {MAX_USER_ID_LEN} allowed)"
            ));
        }
    }
    if row.proposer_id == row.receiver_id {
        return Err("proposer and receiver are the same user".into());
    }
    if row.offered_item_ids.is_empty() || row.requested_item_ids.is_empty() {
        return Err("an offer needs at least one item on each side".into());
    }
    if OfferStatus::parse(&row.status).is_none() {
        return Err(format!("unknown status {:?}", row.status));
    }
    Ok(())
}

/// Copies every row of the original `trade_offers` table in `source` into `target` (whose
/// schema must be migrated).
pub async fn import(source: &PgPool, target: &PgPool) -> Result<ImportReport, ImportError> {
    // Read and check everything before writing anything.
    let mut rows: Vec<OriginalOffer> = Vec::new();
    let mut after = 0i32;
    loop {
        let page: Vec<OriginalOffer> = sqlx::query_as(
            "SELECT id, proposer_id, receiver_id, offered_item_ids, requested_item_ids, status, \
                    message, created_at, updated_at, responded_at \
             FROM trade_offers WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(PAGE)
        .fetch_all(source)
        .await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        rows.extend(page);
    }
    let invalid: Vec<(i64, String)> = rows
        .iter()
        .filter_map(|r| check_row(r).err().map(|why| (i64::from(r.id), why)))
        .take(MAX_LISTED)
        .collect();
    if !invalid.is_empty() {
        return Err(ImportError::Invalid(invalid));
    }

    let mut report = ImportReport {
        read: rows.len() as u64,
        ..Default::default()
    };
    let mut tx = target.begin().await?;
    for chunk in rows.chunks(PAGE as usize) {
        let ids: Vec<i64> = chunk.iter().map(|r| i64::from(r.id)).collect();
        // Same id, same offer: imported before. Same id, another offer: a conflict.
        let present: Vec<(i64, String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT id, proposer_id, receiver_id, created_at FROM trade_offers WHERE id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let conflicts: Vec<i64> = present
            .iter()
            .filter(|(id, p, r, at)| {
                !chunk.iter().any(|o| {
                    i64::from(o.id) == *id
                        && &o.proposer_id == p
                        && &o.receiver_id == r
                        && o.created_at == *at
                })
            })
            .map(|(id, ..)| *id)
            .take(MAX_LISTED)
            .collect();
        if !conflicts.is_empty() {
            return Err(ImportError::Conflict(conflicts));
        }
        for r in chunk {
            let offered: Vec<i64> = r.offered_item_ids.iter().map(|i| i64::from(*i)).collect();
            let requested: Vec<i64> = r.requested_item_ids.iter().map(|i| i64::from(*i)).collect();
            let done = sqlx::query(
                "INSERT INTO trade_offers (id, proposer_id, receiver_id, offered_item_ids, \
                   requested_item_ids, status, message, created_at, updated_at, responded_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING",
            )
            .bind(i64::from(r.id))
            .bind(&r.proposer_id)
            .bind(&r.receiver_id)
            .bind(&offered)
            .bind(&requested)
            .bind(&r.status)
            .bind(&r.message)
            .bind(r.created_at)
            .bind(r.updated_at)
            .bind(r.responded_at)
            .execute(&mut *tx)
            .await?;
            report.imported += done.rows_affected();
        }
        report.already_there += present.len() as u64;
    }
    // Above every id the original ever handed out, deleted rows' included: a client may
    // still hold one.
    let handed_out: i64 = sqlx::query_scalar(
        "SELECT COALESCE(pg_sequence_last_value( \
           pg_get_serial_sequence('trade_offers', 'id')::regclass), 0)",
    )
    .fetch_one(source)
    .await?;
    sqlx::query(
        "SELECT setval(pg_get_serial_sequence('trade_offers', 'id'), \
                GREATEST((SELECT max(id) FROM trade_offers), $1, 1))",
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

    fn row() -> OriginalOffer {
        OriginalOffer {
            id: 7,
            proposer_id: "alice".into(),
            receiver_id: "bob".into(),
            offered_item_ids: vec![1],
            requested_item_ids: vec![2],
            status: "pending".into(),
            message: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            responded_at: None,
        }
    }

    #[test]
    fn a_row_the_original_api_could_have_written_passes() {
        assert_eq!(check_row(&row()), Ok(()));
    }

    #[test]
    fn a_row_our_table_cannot_hold_is_named_with_the_reason() {
        let same = OriginalOffer {
            receiver_id: "alice".into(),
            ..row()
        };
        assert!(check_row(&same).unwrap_err().contains("same user"));
        let empty = OriginalOffer {
            requested_item_ids: vec![],
            ..row()
        };
        assert!(check_row(&empty).unwrap_err().contains("at least one item"));
        let status = OriginalOffer {
            status: "countered".into(),
            ..row()
        };
        assert!(check_row(&status).unwrap_err().contains("countered"));
        let long = OriginalOffer {
            proposer_id: "x".repeat(101),
            ..row()
        };
        assert!(check_row(&long).unwrap_err().contains("proposer_id"));
    }
}
