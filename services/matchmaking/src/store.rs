//! PostgreSQL access for trade offers. Every write stores the offer change and its
//! notification event (an outbox row) in ONE transaction: either both exist or neither.
use crate::error::{Error, Result};
use crate::events::{OfferChange, Parties, event_for};
use crate::metrics::Metrics;
use crate::offer::{NewOffer, OfferStatus, Party, decide_transition, decide_withdrawal};
use crate::outbox;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use std::sync::Arc;
use tokio::sync::Notify;

/// A stored trade offer, as the API returns it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TradeOffer {
    /// The offer's id.
    pub id: i64,
    /// Who made the offer.
    pub proposer_id: String,
    /// Who received it.
    pub receiver_id: String,
    /// The proposer's items on offer.
    pub offered_item_ids: Vec<i64>,
    /// The receiver's items asked for.
    pub requested_item_ids: Vec<i64>,
    /// Where the offer is in its life.
    pub status: OfferStatus,
    /// The proposer's note, if any.
    pub message: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When the receiver accepted or rejected it.
    pub responded_at: Option<DateTime<Utc>>,
}

const OFFER_COLUMNS: &str = "id, proposer_id, receiver_id, offered_item_ids, requested_item_ids, \
                             status, message, created_at, updated_at, responded_at";

impl TradeOffer {
    fn from_row(row: &PgRow) -> Result<Self> {
        let status: String = row.try_get("status")?;
        Ok(Self {
            id: row.try_get("id")?,
            proposer_id: row.try_get("proposer_id")?,
            receiver_id: row.try_get("receiver_id")?,
            offered_item_ids: row.try_get("offered_item_ids")?,
            requested_item_ids: row.try_get("requested_item_ids")?,
            status: OfferStatus::parse(&status).ok_or_else(|| {
                Error::Internal(format!("unknown offer status {status:?} in database"))
            })?,
            message: row.try_get("message")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            responded_at: row.try_get("responded_at")?,
        })
    }
}

/// Which offers of a user to list.
#[derive(Debug, Clone, PartialEq)]
pub struct OfferFilter {
    /// The user whose offers to list.
    pub user_id: String,
    /// Include offers the user made.
    pub as_proposer: bool,
    /// Include offers the user received.
    pub as_receiver: bool,
    /// Only offers in this status.
    pub status: Option<OfferStatus>,
    /// Page size.
    pub limit: i64,
    /// Offers to skip.
    pub offset: i64,
}

/// A user's offer counts.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Statistics {
    /// The user.
    pub user_id: String,
    /// Offers the user made (withdrawn ones are gone and not counted).
    pub total_sent: i64,
    /// Offers the user received.
    pub total_received: i64,
    /// Made and still pending.
    pub pending_sent: i64,
    /// Received and still pending.
    pub pending_received: i64,
    /// Offers of the user, either side, by status.
    pub accepted: i64,
    /// See `accepted`.
    pub rejected: i64,
    /// See `accepted`.
    pub cancelled: i64,
    /// See `accepted`.
    pub completed: i64,
}

/// The offer repository: the pool, the relay's wake-up and the offer counters.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    /// Set when accepted offers get a chat room ([`crate::chat`]): woken after each one.
    chat_wake: Option<Arc<Notify>>,
}

impl Store {
    /// A repository over `pool`; `wake` is notified after each commit that wrote an event.
    pub fn new(pool: PgPool, wake: Arc<Notify>, metrics: Arc<Metrics>) -> Self {
        Self {
            pool,
            wake,
            metrics,
            chat_wake: None,
        }
    }

    /// From now on, accepting an offer also requests its chat room, in the same
    /// transaction; `wake` is notified after each such commit.
    pub fn with_chat_rooms(mut self, wake: Arc<Notify>) -> Self {
        self.chat_wake = Some(wake);
        self
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn write_event(
        conn: &mut PgConnection,
        change: OfferChange,
        offer: &TradeOffer,
        actor_id: &str,
    ) -> Result<()> {
        let parties = Parties {
            offer_id: offer.id,
            proposer_id: &offer.proposer_id,
            receiver_id: &offer.receiver_id,
            actor_id,
        };
        if let Some(mut event) = event_for(change, parties) {
            // The user's order per offer: the database's clock, monotonic per offer.
            event.occurred_at = outbox::stamp(conn, offer.id).await?;
            outbox::insert(conn, &event).await?;
        }
        Ok(())
    }

    fn committed(&self, change: OfferChange) {
        self.wake.notify_one();
        self.metrics.offer_changed(change);
    }

    /// Stores a validated new offer and its `trade_offer_received` event.
    pub async fn create(&self, offer: &NewOffer) -> Result<TradeOffer> {
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "INSERT INTO trade_offers (proposer_id, receiver_id, offered_item_ids, requested_item_ids, message) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {OFFER_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&offer.proposer_id)
            .bind(&offer.receiver_id)
            .bind(&offer.offered_item_ids)
            .bind(&offer.requested_item_ids)
            .bind(&offer.message)
            .fetch_one(&mut *tx)
            .await?;
        let stored = TradeOffer::from_row(&row)?;
        Self::write_event(&mut tx, OfferChange::Created, &stored, &stored.proposer_id).await?;
        tx.commit().await?;
        self.committed(OfferChange::Created);
        Ok(stored)
    }

    async fn lock(conn: &mut PgConnection, id: i64) -> Result<TradeOffer> {
        let sql = format!("SELECT {OFFER_COLUMNS} FROM trade_offers WHERE id = $1 FOR UPDATE");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(conn)
            .await?
            .ok_or(Error::OfferNotFound(id))?;
        TradeOffer::from_row(&row)
    }

    /// Moves offer `id` to `to` on behalf of `user_id` if the rules allow it
    /// ([`decide_transition`]), with the event for the other party.
    pub async fn change_status(
        &self,
        id: i64,
        user_id: &str,
        to: OfferStatus,
    ) -> Result<TradeOffer> {
        let mut tx = self.pool.begin().await?;
        // FOR UPDATE: two concurrent changes of one offer are decided one after the other.
        let current = Self::lock(&mut tx, id).await?;
        let party = Party::of(user_id, &current.proposer_id, &current.receiver_id);
        decide_transition(party, current.status, to)?;
        let sql = format!(
            "UPDATE trade_offers SET status = $2, updated_at = now(), \
             responded_at = CASE WHEN $2 IN ('accepted', 'rejected') THEN now() ELSE responded_at END \
             WHERE id = $1 RETURNING {OFFER_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(to.as_str())
            .fetch_one(&mut *tx)
            .await?;
        let updated = TradeOffer::from_row(&row)?;
        let change = OfferChange::StatusChanged(to);
        Self::write_event(&mut tx, change, &updated, user_id).await?;
        let chat = self
            .chat_wake
            .as_ref()
            .filter(|_| to == OfferStatus::Accepted);
        if chat.is_some() {
            crate::chat::enqueue(&mut tx, &updated).await?;
        }
        tx.commit().await?;
        self.committed(change);
        if let Some(wake) = chat {
            wake.notify_one();
        }
        Ok(updated)
    }

    /// Deletes pending offer `id` on behalf of its proposer ([`decide_withdrawal`]), telling
    /// the receiver it was cancelled.
    pub async fn withdraw(&self, id: i64, user_id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let current = Self::lock(&mut tx, id).await?;
        let party = Party::of(user_id, &current.proposer_id, &current.receiver_id);
        decide_withdrawal(party, current.status)?;
        sqlx::query("DELETE FROM trade_offers WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        Self::write_event(&mut tx, OfferChange::Withdrawn, &current, user_id).await?;
        tx.commit().await?;
        self.committed(OfferChange::Withdrawn);
        Ok(())
    }

    /// One offer.
    pub async fn get(&self, id: i64) -> Result<TradeOffer> {
        let sql = format!("SELECT {OFFER_COLUMNS} FROM trade_offers WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(Error::OfferNotFound(id))?;
        TradeOffer::from_row(&row)
    }

    /// A user's offers, newest first.
    pub async fn list(&self, f: &OfferFilter) -> Result<Vec<TradeOffer>> {
        let sql = format!(
            "SELECT {OFFER_COLUMNS} FROM trade_offers \
             WHERE (($2 AND proposer_id = $1) OR ($3 AND receiver_id = $1)) \
               AND ($4::text IS NULL OR status = $4) \
             ORDER BY created_at DESC, id DESC LIMIT $5 OFFSET $6"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&f.user_id)
            .bind(f.as_proposer)
            .bind(f.as_receiver)
            .bind(f.status.map(OfferStatus::as_str))
            .bind(f.limit)
            .bind(f.offset)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(TradeOffer::from_row).collect()
    }

    /// Offers that include `item_id` on either side, newest first.
    pub async fn by_item(
        &self,
        item_id: i64,
        status: Option<OfferStatus>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<TradeOffer>> {
        // `@>` (not `= ANY`) so the GIN indexes on both arrays are used.
        let sql = format!(
            "SELECT {OFFER_COLUMNS} FROM trade_offers \
             WHERE (offered_item_ids @> ARRAY[$1]::bigint[] OR requested_item_ids @> ARRAY[$1]::bigint[]) \
               AND ($2::text IS NULL OR status = $2) \
             ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(item_id)
            .bind(status.map(OfferStatus::as_str))
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(TradeOffer::from_row).collect()
    }

    /// A user's offer counts.
    pub async fn statistics(&self, user_id: &str) -> Result<Statistics> {
        let row = sqlx::query(
            "SELECT \
               count(*) FILTER (WHERE proposer_id = $1) AS total_sent, \
               count(*) FILTER (WHERE receiver_id = $1) AS total_received, \
               count(*) FILTER (WHERE proposer_id = $1 AND status = 'pending') AS pending_sent, \
               count(*) FILTER (WHERE receiver_id = $1 AND status = 'pending') AS pending_received, \
               count(*) FILTER (WHERE status = 'accepted') AS accepted, \
               count(*) FILTER (WHERE status = 'rejected') AS rejected, \
               count(*) FILTER (WHERE status = 'cancelled') AS cancelled, \
               count(*) FILTER (WHERE status = 'completed') AS completed \
             FROM trade_offers WHERE proposer_id = $1 OR receiver_id = $1",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(Statistics {
            user_id: user_id.to_string(),
            total_sent: row.try_get("total_sent")?,
            total_received: row.try_get("total_received")?,
            pending_sent: row.try_get("pending_sent")?,
            pending_received: row.try_get("pending_received")?,
            accepted: row.try_get("accepted")?,
            rejected: row.try_get("rejected")?,
            cancelled: row.try_get("cancelled")?,
            completed: row.try_get("completed")?,
        })
    }
}
