//! PostgreSQL storage: the batch insert the consumer uses and the queries the HTTP API serves.
//!
//! Every statement is a runtime query with bind parameters (no SQL is ever built from input).
//! Consumption is idempotent through the unique `event_id`: a batch is one `INSERT ... SELECT
//! FROM UNNEST(...) ON CONFLICT (event_id) DO NOTHING`, a single statement and therefore one
//! transaction, and its row count says how many events were new.
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::collections::BTreeMap;
use std::time::Duration;
use swappo_messaging::{EventType, NotificationEvent};
use uuid::Uuid;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database failed or did not answer.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// One stored notification, as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Notification {
    /// The row id: what the mark-read and delete routes take.
    pub id: i64,
    /// The event's id (unique; a redelivered event never makes a second row).
    pub event_id: Uuid,
    /// The user the notification is for.
    pub user_id: String,
    /// The event type's wire name (`trade_offer_accepted`, ...).
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub notification_type: String,
    /// Short headline.
    pub title: String,
    /// Text shown to the user.
    pub body: String,
    /// The other party, when there is one.
    pub related_user_id: Option<String>,
    /// The trade offer concerned, when there is one.
    pub related_offer_id: Option<i64>,
    /// The item concerned, when there is one (direct creation only; events do not carry it).
    pub related_item_id: Option<i64>,
    /// Whether the user has read it.
    pub is_read: bool,
    /// When it was first marked read.
    pub read_at: Option<DateTime<Utc>>,
    /// When the change happened (the event's `occurred_at`).
    pub occurred_at: DateTime<Utc>,
    /// When this service stored it.
    pub created_at: DateTime<Utc>,
}

/// A notification created through the API rather than consumed from the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    /// The validated event it stands for (its id deduplicates like a consumed event's).
    pub event: NotificationEvent,
    /// The item concerned, when there is one.
    pub related_item_id: Option<i64>,
}

/// Which notifications of a user to list, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Only unread ones.
    pub unread_only: bool,
    /// Only this type.
    pub event_type: Option<EventType>,
    /// Page size.
    pub limit: i64,
    /// Rows to skip.
    pub offset: i64,
}

/// Counts for one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// All notifications.
    pub total: i64,
    /// Not yet read.
    pub unread: i64,
    /// Read.
    pub read: i64,
    /// All notifications per type; types the user has none of are absent.
    pub by_type: BTreeMap<String, i64>,
}

/// What marking several notifications read did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkRead {
    /// Every id was the user's; this many were unread before.
    Marked {
        /// Newly marked (already-read ones keep their first `read_at`).
        newly_read: u64,
    },
    /// These ids are not the user's notifications (or do not exist): nothing was changed.
    NotFound(Vec<i64>),
}

/// The columns of [`Notification`], as a literal so statements stay `&'static str`.
macro_rules! columns {
    () => {
        "id, event_id, user_id, type, title, body, related_user_id, related_offer_id, \
         related_item_id, is_read, read_at, occurred_at, created_at"
    };
}

/// Handle on the notifications database; cheap to clone (a connection pool).
#[derive(Clone, Debug)]
pub struct Storage {
    pool: PgPool,
}

impl Storage {
    /// A pool that connects on first use, so the service starts (and answers `/health`)
    /// while the database is still down. `acquire_timeout` bounds how long a request or a
    /// batch waits for a connection when the database is unreachable.
    pub fn connect_lazy(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, StorageError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            .connect_lazy(url)?;
        Ok(Self { pool })
    }

    /// [`Storage::connect_lazy`] with every statement bounded by `statement_timeout`
    /// (PostgreSQL's `statement_timeout`, set per connection): a query stuck behind a lock or
    /// an overloaded server fails with SQLSTATE 57014 instead of waiting without end.
    pub fn connect_lazy_bounded(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
        statement_timeout: Duration,
    ) -> Result<Self, StorageError> {
        let options = url.parse::<PgConnectOptions>()?.options([(
            "statement_timeout",
            format!("{}ms", statement_timeout.as_millis()),
        )]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool, for tests and tooling.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the migrations in `migrations/` (idempotent).
    pub async fn migrate(&self) -> Result<(), StorageError> {
        sqlx::migrate!().run(&self.pool).await?;
        Ok(())
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Stores a batch of events in one statement (one transaction); events whose id is
    /// already stored, repeated within the batch, or deleted before (a tombstone: deleted
    /// stays deleted) are skipped. Returns how many rows were new: `events.len() - new`
    /// were duplicates.
    pub async fn insert_events(&self, events: &[NotificationEvent]) -> Result<u64, StorageError> {
        if events.is_empty() {
            return Ok(0);
        }
        let n = events.len();
        let mut event_ids = Vec::with_capacity(n);
        let mut user_ids = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        let mut titles = Vec::with_capacity(n);
        let mut bodies = Vec::with_capacity(n);
        let mut related_users = Vec::with_capacity(n);
        let mut related_offers = Vec::with_capacity(n);
        let mut occurred = Vec::with_capacity(n);
        for e in events {
            event_ids.push(e.id);
            user_ids.push(e.user_id.as_str());
            types.push(e.event_type.as_str());
            titles.push(e.title.as_str());
            bodies.push(e.body.as_str());
            related_users.push(e.related_user_id.as_deref());
            related_offers.push(e.related_offer_id);
            occurred.push(e.occurred_at);
        }
        // Column arrays instead of N value tuples: one fixed statement text, prepared once
        // per connection, and no limit from PostgreSQL's 65 535 bind parameters per query.
        let result = sqlx::query(
            "INSERT INTO notifications \
               (event_id, user_id, type, title, body, related_user_id, related_offer_id, occurred_at) \
             SELECT * FROM UNNEST($1::uuid[], $2::varchar[], $3::varchar[], $4::varchar[], \
                                  $5::text[], $6::varchar[], $7::int8[], $8::timestamptz[]) \
                 AS e(event_id, user_id, type, title, body, related_user_id, related_offer_id, occurred_at) \
             WHERE NOT EXISTS (SELECT 1 FROM notification_tombstones t WHERE t.event_id = e.event_id) \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(&event_ids)
        .bind(&user_ids)
        .bind(&types)
        .bind(&titles)
        .bind(&bodies)
        .bind(&related_users)
        .bind(&related_offers)
        .bind(&occurred)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    /// Stores one notification created through the API. `None` when a notification with
    /// the same event id already exists or was deleted (nothing is changed then).
    pub async fn create(
        &self,
        new: &NewNotification,
    ) -> Result<Option<Notification>, StorageError> {
        let e = &new.event;
        let row = sqlx::query_as::<_, Notification>(concat!(
            "INSERT INTO notifications \
               (event_id, user_id, type, title, body, related_user_id, related_offer_id, \
                related_item_id, occurred_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 \
             WHERE NOT EXISTS (SELECT 1 FROM notification_tombstones WHERE event_id = $1) \
             ON CONFLICT (event_id) DO NOTHING RETURNING ",
            columns!()
        ))
        .bind(e.id)
        .bind(&e.user_id)
        .bind(e.event_type.as_str())
        .bind(&e.title)
        .bind(&e.body)
        .bind(&e.related_user_id)
        .bind(e.related_offer_id)
        .bind(new.related_item_id)
        .bind(e.occurred_at)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }

    /// A page of the user's notifications, newest first (ties broken by id, newest first).
    pub async fn list(
        &self,
        user_id: &str,
        q: &ListQuery,
    ) -> Result<Vec<Notification>, StorageError> {
        let rows = sqlx::query_as::<_, Notification>(concat!(
            "SELECT ",
            columns!(),
            " FROM notifications \
             WHERE user_id = $1 AND (NOT $2 OR NOT is_read) \
               AND ($3::varchar IS NULL OR type = $3) \
             ORDER BY occurred_at DESC, id DESC LIMIT $4 OFFSET $5"
        ))
        .bind(user_id)
        .bind(q.unread_only)
        .bind(q.event_type.map(|t| t.as_str()))
        .bind(q.limit)
        .bind(q.offset)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// How many of the user's notifications are unread.
    pub async fn unread_count(&self, user_id: &str) -> Result<i64, StorageError> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM notifications WHERE user_id = $1 AND NOT is_read")
                .bind(user_id)
                .fetch_one(&self.pool)
                .await?;
        Ok(n)
    }

    /// Totals, unread/read and per-type counts for the user.
    pub async fn stats(&self, user_id: &str) -> Result<Stats, StorageError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT type, count(*), count(*) FILTER (WHERE NOT is_read) \
             FROM notifications WHERE user_id = $1 GROUP BY type",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        let mut stats = Stats {
            total: 0,
            unread: 0,
            read: 0,
            by_type: BTreeMap::new(),
        };
        for (t, total, unread) in rows {
            stats.total += total;
            stats.unread += unread;
            stats.by_type.insert(t, total);
        }
        stats.read = stats.total - stats.unread;
        Ok(stats)
    }

    /// Marks the user's notification `id` read; `None` when it is not the user's (or
    /// does not exist). Marking twice keeps the first `read_at`.
    pub async fn mark_read(
        &self,
        user_id: &str,
        id: i64,
    ) -> Result<Option<Notification>, StorageError> {
        let row = sqlx::query_as::<_, Notification>(concat!(
            "UPDATE notifications SET is_read = TRUE, read_at = COALESCE(read_at, now()) \
             WHERE id = $1 AND user_id = $2 RETURNING ",
            columns!()
        ))
        .bind(id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }

    /// Marks several of the user's notifications read, all or nothing: when any id is not
    /// the user's, nothing changes and those ids are returned.
    pub async fn mark_many_read(
        &self,
        user_id: &str,
        ids: &[i64],
    ) -> Result<MarkRead, StorageError> {
        let mut tx = self.pool.begin().await?;
        let owned: Vec<(i64, bool)> = sqlx::query_as(
            "SELECT id, is_read FROM notifications WHERE user_id = $1 AND id = ANY($2) FOR UPDATE",
        )
        .bind(user_id)
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
        let missing: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| !owned.iter().any(|(o, _)| o == id))
            .collect();
        if !missing.is_empty() {
            tx.rollback().await?;
            return Ok(MarkRead::NotFound(missing));
        }
        let updated = sqlx::query(
            "UPDATE notifications SET is_read = TRUE, read_at = now() \
             WHERE user_id = $1 AND id = ANY($2) AND NOT is_read",
        )
        .bind(user_id)
        .bind(ids)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(MarkRead::Marked {
            newly_read: updated.rows_affected(),
        })
    }

    /// Deletes the user's notification `id`, leaving a tombstone of its event id so a late
    /// copy of the event is never stored again; `false` when it is not the user's.
    pub async fn delete(&self, user_id: &str, id: i64) -> Result<bool, StorageError> {
        let done = sqlx::query(
            "WITH gone AS (DELETE FROM notifications WHERE id = $1 AND user_id = $2 \
                           RETURNING event_id) \
             INSERT INTO notification_tombstones (event_id) SELECT event_id FROM gone \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(id)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes every notification of the user, with a tombstone each (see
    /// [`Storage::delete`]); returns how many.
    pub async fn delete_all(&self, user_id: &str) -> Result<u64, StorageError> {
        let done = sqlx::query(
            "WITH gone AS (DELETE FROM notifications WHERE user_id = $1 RETURNING event_id) \
             INSERT INTO notification_tombstones (event_id) SELECT event_id FROM gone \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Deletes notifications stored more than `notifications` ago and tombstones older than
    /// `tombstones` (the retention settings); returns how many of each. Both use an index
    /// on the age column (migration `20261130231500`).
    pub async fn purge(
        &self,
        notifications: Duration,
        tombstones: Duration,
    ) -> Result<(u64, u64), StorageError> {
        let rows = sqlx::query(
            "DELETE FROM notifications WHERE created_at < now() - make_interval(secs => $1)",
        )
        .bind(notifications.as_secs_f64())
        .execute(&self.pool)
        .await?;
        let stones = sqlx::query(
            "DELETE FROM notification_tombstones \
             WHERE deleted_at < now() - make_interval(secs => $1)",
        )
        .bind(tombstones.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok((rows.rows_affected(), stones.rows_affected()))
    }

    /// How many rows there are, and how many distinct event ids: equal unless the unique
    /// constraint was broken. For tests and the benchmark.
    pub async fn count(&self) -> Result<(i64, i64), StorageError> {
        let counts: (i64, i64) =
            sqlx::query_as("SELECT count(*), count(DISTINCT event_id) FROM notifications")
                .fetch_one(&self.pool)
                .await?;
        Ok(counts)
    }
}
