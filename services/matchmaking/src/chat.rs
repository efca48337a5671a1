//! Chat rooms for accepted offers, as the original matchmaking created them: `POST
//! {CHAT_SERVICE_URL}/api/v1/chat-rooms` with `{"trade_offer_id", "user1_id", "user2_id"}`
//! (proposer, receiver). The front end then finds the room by trade offer.
//!
//! Carried like an event: accepting an offer writes a `chat_room_requests` row in the same
//! transaction ([`enqueue`]), and the [`ChatRoomRelay`] delivers it, retrying with backoff
//! until the chat service answers. The offer change never waits for the chat service. A
//! room is asked for once per offer (the row's key), and the chat service's "already exists"
//! answer (a retry after a lost response) counts as done, so each room is created once.
use crate::store::TradeOffer;
use serde::Deserialize;
use sqlx::{PgConnection, PgPool};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long a claimed row is reserved for the relay that claimed it: longer than one
/// request's timeout, so two replicas never post the same row at once.
const LEASE: Duration = Duration::from_secs(60);
/// Rows delivered per round.
const BATCH: i64 = 50;

/// Records that a chat room is wanted for `offer` (just accepted), in the caller's
/// transaction. Asking twice for one offer keeps the first request.
pub async fn enqueue(conn: &mut PgConnection, offer: &TradeOffer) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO chat_room_requests (trade_offer_id, user1_id, user2_id) \
         VALUES ($1, $2, $3) ON CONFLICT (trade_offer_id) DO NOTHING",
    )
    .bind(offer.id)
    .bind(&offer.proposer_id)
    .bind(&offer.receiver_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// What the chat service's answer means for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The room was created.
    Created,
    /// The chat service already has a room for the offer: an earlier try got through.
    Existed,
    /// The chat service refused the request itself (a 4xx other than the above): retrying
    /// the same request cannot succeed.
    Refused(String),
    /// No usable answer (down, timeout, 5xx, 408, 429): try again later.
    Retry(String),
}

impl Outcome {
    /// Whether the request is finished.
    pub fn is_done(&self) -> bool {
        !matches!(self, Outcome::Retry(_))
    }

    fn label(&self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Existed => "existed",
            Outcome::Refused(_) => "refused",
            Outcome::Retry(_) => "retry",
        }
    }
}

#[derive(Deserialize)]
struct Detail {
    detail: serde_json::Value,
}

/// Classifies the chat service's answer (`status`, `body`) to a room request.
pub fn classify(status: u16, body: &str) -> Outcome {
    match status {
        200..=299 => Outcome::Created,
        408 | 429 => Outcome::Retry(format!("HTTP {status}")),
        400..=499 => {
            let detail = serde_json::from_str::<Detail>(body)
                .map(|d| d.detail.to_string())
                .unwrap_or_default();
            // The chat service answers 400 "Chat room already exists for trade offer N".
            if status == 400 && detail.contains("already exists") {
                Outcome::Existed
            } else {
                Outcome::Refused(format!("HTTP {status} {}", clip(&detail)))
            }
        }
        _ => Outcome::Retry(format!("HTTP {status}")),
    }
}

/// The wait before try number `attempts + 1`: `base` doubled per failed try, at most `max`.
pub fn retry_delay(attempts: u32, base: Duration, max: Duration) -> Duration {
    base.saturating_mul(2u32.saturating_pow(attempts.min(16)))
        .min(max)
}

fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

/// How the relay reaches the chat service and retries.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// The chat service's base URL (`http://chat-service:8000`).
    pub base_url: String,
    /// Longest wait for one answer.
    pub request_timeout: Duration,
    /// First retry delay; doubled per failed try.
    pub base_delay: Duration,
    /// Longest retry delay.
    pub max_delay: Duration,
    /// Longest sleep between rounds when nothing wakes the relay.
    pub poll_interval: Duration,
}

impl ChatOptions {
    /// Defaults for `base_url`: 5 s per request (the original's timeout), retries from 1 s
    /// up to 30 s apart, a look every second.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            request_timeout: Duration::from_secs(5),
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// Delivers `chat_room_requests` to the chat service.
pub struct ChatRoomRelay {
    pool: PgPool,
    http: reqwest::Client,
    wake: Arc<Notify>,
    options: ChatOptions,
}

#[derive(sqlx::FromRow)]
struct Request {
    trade_offer_id: i64,
    user1_id: String,
    user2_id: String,
    attempts: i32,
}

impl ChatRoomRelay {
    /// A relay over `pool`, woken by `wake` after each acceptance.
    pub fn new(
        pool: PgPool,
        wake: Arc<Notify>,
        options: ChatOptions,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .build()?;
        Ok(Self {
            pool,
            http,
            wake,
            options,
        })
    }

    /// Runs until `shutdown` is cancelled. Failures of the chat service or the database
    /// are retried, never fatal.
    pub async fn run(self, shutdown: CancellationToken) {
        info!(chat = %self.options.base_url, "chat-room relay started");
        while !shutdown.is_cancelled() {
            let delivered = match self.round().await {
                Ok(n) => n,
                Err(e) => {
                    warn!(error = %e, "chat-room relay: database error");
                    0
                }
            };
            if delivered > 0 {
                continue;
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.options.poll_interval) => {}
                () = shutdown.cancelled() => {}
            }
        }
        info!("chat-room relay stopped");
    }

    /// Claims the due requests, posts each, and records the answers; returns how many were
    /// claimed.
    pub async fn round(&self) -> Result<usize, sqlx::Error> {
        let due: Vec<Request> = sqlx::query_as(
            "UPDATE chat_room_requests SET next_attempt_at = now() + make_interval(secs => $1) \
             WHERE trade_offer_id IN ( \
               SELECT trade_offer_id FROM chat_room_requests \
               WHERE done_at IS NULL AND next_attempt_at <= now() \
               ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
             RETURNING trade_offer_id, user1_id, user2_id, attempts",
        )
        .bind(LEASE.as_secs_f64())
        .bind(BATCH)
        .fetch_all(&self.pool)
        .await?;
        for r in &due {
            let outcome = self.post(r).await;
            self.record(r, &outcome).await?;
        }
        Ok(due.len())
    }

    async fn post(&self, r: &Request) -> Outcome {
        let url = format!("{}/api/v1/chat-rooms", self.options.base_url);
        let body = serde_json::json!({
            "trade_offer_id": r.trade_offer_id,
            "user1_id": r.user1_id,
            "user2_id": r.user2_id,
        });
        match self.http.post(&url).json(&body).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                classify(status, &text)
            }
            Err(e) => Outcome::Retry(e.without_url().to_string()),
        }
    }

    async fn record(&self, r: &Request, outcome: &Outcome) -> Result<(), sqlx::Error> {
        match outcome {
            Outcome::Retry(why) => {
                let attempts = r.attempts.max(0) as u32;
                let delay = retry_delay(attempts, self.options.base_delay, self.options.max_delay);
                warn!(offer = r.trade_offer_id, attempts = attempts + 1, error = %why, retry_in = ?delay,
                      "chat service did not create the room; will retry");
                sqlx::query(
                    "UPDATE chat_room_requests SET attempts = attempts + 1, last_error = $2, \
                       next_attempt_at = now() + make_interval(secs => $3) \
                     WHERE trade_offer_id = $1",
                )
                .bind(r.trade_offer_id)
                .bind(clip(why))
                .bind(delay.as_secs_f64())
                .execute(&self.pool)
                .await?;
            }
            done => {
                if let Outcome::Refused(why) = done {
                    warn!(offer = r.trade_offer_id, error = %why, "chat service refused the room request");
                }
                sqlx::query(
                    "UPDATE chat_room_requests SET attempts = attempts + 1, done_at = now(), \
                       outcome = $2, last_error = $3 WHERE trade_offer_id = $1",
                )
                .bind(r.trade_offer_id)
                .bind(done.label())
                .bind(match done {
                    Outcome::Refused(why) => Some(clip(why)),
                    _ => None,
                })
                .execute(&self.pool)
                .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chat_services_answers_are_read_as_the_original_relied_on() {
        assert_eq!(classify(201, "{}"), Outcome::Created);
        assert_eq!(
            classify(
                400,
                r#"{"detail":"Chat room already exists for trade offer 7"}"#
            ),
            Outcome::Existed
        );
        assert!(matches!(
            classify(422, r#"{"detail":[]}"#),
            Outcome::Refused(_)
        ));
        assert!(matches!(classify(400, "not json"), Outcome::Refused(_)));
        for retry in [500, 502, 503, 408, 429] {
            assert!(!classify(retry, "").is_done(), "{retry}");
        }
    }

    #[test]
    fn retries_double_from_the_base_up_to_the_cap() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(30));
        let delays: Vec<u64> = (0..7)
            .map(|a| retry_delay(a, base, max).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(retry_delay(u32::MAX, base, max), max);
    }
}
