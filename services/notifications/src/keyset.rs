//! Keyset pagination of a user's notifications.
//!
//! An `OFFSET` page over `occurred_at` skips or repeats rows when an event arrives late (its
//! `occurred_at` lands inside pages already read) or when rows leave an `unread_only` list
//! while the client pages. A cursor names the last row of the previous page by its sort key
//! `(occurred_at, id)`, so the next page starts right after it whatever was inserted or
//! marked read meanwhile. The original `limit`/`offset` parameters keep working: the cursor
//! is an addition a client opts into.
use crate::error::ApiError;
use crate::storage::{ListQuery, Notification, Storage, StorageError};
use chrono::{DateTime, Utc};

/// The sort key of the last row of a page: the next page holds rows strictly older.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// `occurred_at` of that row, in microseconds since the epoch (PostgreSQL's precision).
    pub occurred_at_micros: i64,
    /// Its id, which breaks ties between rows of the same instant.
    pub id: i64,
}

/// Why a cursor from a client could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a cursor returned by this API: `{0}`")]
pub struct BadCursor(pub String);

impl Cursor {
    /// The cursor after `row`.
    pub fn after(row: &Notification) -> Self {
        Self {
            occurred_at_micros: row.occurred_at.timestamp_micros(),
            id: row.id,
        }
    }

    /// The cursor of a full page (`rows.len() == limit`), `None` for a last page.
    pub fn next(rows: &[Notification], limit: i64) -> Option<Self> {
        if (rows.len() as i64) < limit {
            return None;
        }
        rows.last().map(Self::after)
    }

    /// The opaque text form: `<micros>_<id>`, URL-safe without escaping.
    pub fn encode(&self) -> String {
        format!("{}_{}", self.occurred_at_micros, self.id)
    }

    /// Reads the text form of [`Cursor::encode`].
    pub fn decode(raw: &str) -> Result<Self, BadCursor> {
        let bad = || BadCursor(raw.chars().take(40).collect());
        let (micros, id) = raw.split_once('_').ok_or_else(bad)?;
        let occurred_at_micros = micros.parse::<i64>().map_err(|_| bad())?;
        let id = id.parse::<i64>().map_err(|_| bad())?;
        if id <= 0 || DateTime::<Utc>::from_timestamp_micros(occurred_at_micros).is_none() {
            return Err(bad());
        }
        Ok(Self {
            occurred_at_micros,
            id,
        })
    }

    fn occurred_at(&self) -> DateTime<Utc> {
        // `decode` and `after` only make cursors whose instant is representable.
        DateTime::<Utc>::from_timestamp_micros(self.occurred_at_micros).unwrap_or_default()
    }
}

/// The cursor named by the `cursor` query parameter, if any. A cursor and a non-zero
/// `offset` together are refused: they would be two different starting points.
pub fn cursor_param(q: &ListQuery, raw: Option<&str>) -> Result<Option<Cursor>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    if q.offset != 0 {
        return Err(ApiError::invalid(
            "cursor",
            "give either a cursor or an offset, not both",
        ));
    }
    Cursor::decode(raw)
        .map(Some)
        .map_err(|e| ApiError::invalid("cursor", e.to_string()))
}

/// One page of the user's notifications: from `cursor` when given, else from `q.offset`;
/// with the cursor of the next page when this one is full.
pub async fn page(
    storage: &Storage,
    user_id: &str,
    q: &ListQuery,
    cursor: Option<Cursor>,
) -> Result<(Vec<Notification>, Option<Cursor>), StorageError> {
    let rows = match cursor {
        Some(c) => storage.list_after(user_id, q, c).await?,
        None => storage.list(user_id, q).await?,
    };
    let next = Cursor::next(&rows, q.limit);
    Ok((rows, next))
}

impl Storage {
    /// The page of the user's notifications that follows `cursor` (newest first), with the
    /// filters of `q` (its `offset` is ignored: the cursor replaces it).
    pub async fn list_after(
        &self,
        user_id: &str,
        q: &ListQuery,
        cursor: Cursor,
    ) -> Result<Vec<Notification>, StorageError> {
        let rows = sqlx::query_as::<_, Notification>(
            "SELECT id, event_id, user_id, type, title, body, related_user_id, related_offer_id, \
               related_item_id, is_read, read_at, occurred_at, created_at \
             FROM notifications \
             WHERE user_id = $1 AND (NOT $2 OR NOT is_read) \
               AND ($3::varchar IS NULL OR type = $3) \
               AND (occurred_at, id) < ($4, $5) \
             ORDER BY occurred_at DESC, id DESC LIMIT $6",
        )
        .bind(user_id)
        .bind(q.unread_only)
        .bind(q.event_type.map(|t| t.as_str()))
        .bind(cursor.occurred_at())
        .bind(cursor.id)
        .bind(q.limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_what_it_wrote() {
        let c = Cursor {
            occurred_at_micros: 1_764_547_200_123_456,
            id: 42,
        };
        assert_eq!(c.encode(), "1764547200123456_42");
        assert_eq!(Cursor::decode(&c.encode()), Ok(c));
    }

    #[test]
    fn a_cursor_with_an_offset_is_refused_and_without_one_is_read() {
        let mut q = ListQuery {
            unread_only: false,
            event_type: None,
            limit: 50,
            offset: 0,
        };
        assert_eq!(cursor_param(&q, None).unwrap(), None);
        assert_eq!(
            cursor_param(&q, Some("10_3")).unwrap(),
            Some(Cursor {
                occurred_at_micros: 10,
                id: 3
            })
        );
        q.offset = 5;
        let e = cursor_param(&q, Some("10_3")).unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST);
        assert!(e.to_string().contains("cursor"), "{e}");
    }

    #[test]
    fn a_cursor_that_this_api_did_not_write_is_refused() {
        for raw in [
            "",
            "42",
            "abc_1",
            "1_abc",
            "1_0",
            "1_-3",
            "99999999999999999999_1",
        ] {
            assert!(Cursor::decode(raw).is_err(), "{raw:?} was accepted");
        }
    }
}
