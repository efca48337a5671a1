//! The outbox table: event rows written with each offer change, claimed and marked by the relay.
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Row};
use swappo_messaging::NotificationEvent;
use uuid::Uuid;

/// The PostgreSQL channel a commit that wrote an outbox row notifies, so relays in every
/// replica wake up at once instead of at their next poll.
pub const CHANNEL: &str = "swappo_matchmaking_outbox";

/// Writes `event` as a pending outbox row on `conn` (inside the caller's transaction) and
/// queues a notification on [`CHANNEL`], which PostgreSQL delivers only if it commits.
pub async fn insert(conn: &mut PgConnection, event: &NotificationEvent) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO outbox (event_id, payload) VALUES ($1, $2)")
        .bind(event.id)
        .bind(Json(event))
        .execute(&mut *conn)
        .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The `occurred_at` of the next event of offer `offer_id`, from the database's clock and
/// strictly after every earlier event of the offer (at least 1 µs later, even if the clock
/// stepped back). Call it inside the transaction that changes the offer: the clock row stays
/// locked until commit, so the stamps of one offer follow its commit order.
pub async fn stamp(conn: &mut PgConnection, offer_id: i64) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO offer_event_clock (offer_id, last_at) VALUES ($1, clock_timestamp()) \
         ON CONFLICT (offer_id) DO UPDATE SET last_at = \
           GREATEST(clock_timestamp(), offer_event_clock.last_at + interval '1 microsecond') \
         RETURNING last_at",
    )
    .bind(offer_id)
    .fetch_one(conn)
    .await
}

/// A pending outbox row claimed by a relay.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Row id.
    pub id: i64,
    /// The event's id (also inside the payload).
    pub event_id: Uuid,
    /// The stored event JSON.
    pub payload: serde_json::Value,
    /// When the offer change committed.
    pub created_at: DateTime<Utc>,
}

/// Locks up to `limit` pending rows, oldest first, skipping rows another relay has locked
/// (two relays never hold the same row, and neither waits for the other) and parked rows
/// (which could never be published, see [`park`]).
pub async fn claim(conn: &mut PgConnection, limit: i64) -> Result<Vec<Claimed>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, event_id, payload, created_at FROM outbox \
         WHERE sent_at IS NULL AND parked_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Claimed {
                id: r.try_get("id")?,
                event_id: r.try_get("event_id")?,
                payload: r.try_get::<Json<serde_json::Value>, _>("payload")?.0,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}

/// Marks rows as sent (confirmed by the broker).
pub async fn mark_sent(conn: &mut PgConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE outbox SET sent_at = now(), attempts = attempts + 1 WHERE id = ANY($1)")
        .bind(ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records a failed attempt per row: `attempts` grows, `last_error` keeps the latest reason.
pub async fn mark_failed(
    conn: &mut PgConnection,
    failed: &[(i64, String)],
) -> Result<(), sqlx::Error> {
    if failed.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = failed.iter().map(|(id, _)| *id).collect();
    let errors: Vec<&str> = failed.iter().map(|(_, e)| e.as_str()).collect();
    sqlx::query(
        "UPDATE outbox o SET attempts = o.attempts + 1, last_error = f.error \
         FROM unnest($1::bigint[], $2::text[]) AS f(id, error) WHERE o.id = f.id",
    )
    .bind(&ids)
    .bind(&errors)
    .execute(conn)
    .await?;
    Ok(())
}

/// Parks rows that can never be published (the payload is not an event, or breaks the
/// contract): out of the claim from now on, with the reason in `last_error`, until an
/// operator fixes the payload and sets `parked_at` back to NULL.
pub async fn park(conn: &mut PgConnection, parked: &[(i64, String)]) -> Result<(), sqlx::Error> {
    if parked.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = parked.iter().map(|(id, _)| *id).collect();
    let errors: Vec<&str> = parked.iter().map(|(_, e)| e.as_str()).collect();
    sqlx::query(
        "UPDATE outbox o SET parked_at = now(), attempts = o.attempts + 1, last_error = f.error \
         FROM unnest($1::bigint[], $2::text[]) AS f(id, error) WHERE o.id = f.id",
    )
    .bind(&ids)
    .bind(&errors)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes rows confirmed more than `retention` ago; pending rows are never deleted.
/// Returns how many were removed.
pub async fn purge_sent(pool: &PgPool, retention: std::time::Duration) -> Result<u64, sqlx::Error> {
    let seconds = retention.as_secs_f64();
    let done = sqlx::query(
        "DELETE FROM outbox WHERE sent_at IS NOT NULL \
         AND sent_at < now() - make_interval(secs => $1)",
    )
    .bind(seconds)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// How far behind the relay is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    /// Rows not yet confirmed (parked ones excluded).
    pub pending: i64,
    /// Rows parked because they can never be published: any is a reason to alert.
    pub parked: i64,
    /// Age of the oldest of them, 0 when none.
    pub oldest_age_seconds: f64,
}

/// Counts pending and parked rows.
pub async fn backlog(pool: &PgPool) -> Result<Backlog, sqlx::Error> {
    let row = sqlx::query(
        "SELECT count(*) FILTER (WHERE parked_at IS NULL) AS pending, \
         count(*) FILTER (WHERE parked_at IS NOT NULL) AS parked, \
         COALESCE(EXTRACT(EPOCH FROM now() - min(created_at) FILTER (WHERE parked_at IS NULL))::float8, 0) AS oldest \
         FROM outbox WHERE sent_at IS NULL",
    )
    .fetch_one(pool)
    .await?;
    Ok(Backlog {
        pending: row.try_get("pending")?,
        parked: row.try_get("parked")?,
        oldest_age_seconds: row.try_get("oldest")?,
    })
}
