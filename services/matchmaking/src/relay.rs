//! The outbox relay: publishes pending outbox rows with publisher confirms and marks them
//! sent, in the transaction that claimed them.
//!
//! One round: begin; `SELECT ... FOR UPDATE SKIP LOCKED LIMIT n` (rows locked by another
//! relay are skipped, so replicas never publish the same row in normal operation);
//! `publish_all` (each result is the broker's confirm); `sent_at = now()` for the confirmed
//! rows, `attempts + 1, last_error` for the others; commit. A crash between the confirm and
//! the commit rolls the marks back, so those events go out again with the same id: delivery is
//! at least once and consumers dedupe on the id.
//!
//! The relay wakes on an in-process [`Notify`] (a commit in this replica), on PostgreSQL
//! `NOTIFY` (a commit in any replica), and every `poll_interval` as a safety net. When the
//! broker is unreachable it backs off exponentially; HTTP requests never wait for it.
use crate::metrics::Metrics;
use crate::outbox::{self, CHANNEL, Claimed};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use swappo_messaging::{
    Backoff, BrokerConfig, NotificationEvent, PublishError, Publisher, PublisherOptions,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};

/// Errors that end or interrupt a relay round.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The database failed; the round is retried after a backoff.
    #[error("outbox database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The fault injection point [`Fault::CrashAfterConfirm`] fired: the relay stopped as if
    /// the process died after the broker confirmed and before the rows were marked sent.
    #[error("injected crash after confirm, before mark")]
    InjectedCrash,
}

/// Test hooks that make the relay fail at a chosen point, as a crash would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Stop (rolling back the claim) right after the broker confirmed a batch, before the
    /// rows are marked sent.
    CrashAfterConfirm,
}

/// How the relay batches, waits and retries.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Rows claimed and published per round.
    pub batch_size: i64,
    /// Longest sleep between rounds when nothing wakes the relay.
    pub poll_interval: Duration,
    /// Wake up at once on a commit (this replica's [`Notify`] and PostgreSQL `NOTIFY` from
    /// any replica). Off: the relay finds new rows only by polling every `poll_interval`
    /// (for databases or proxies without LISTEN, such as PgBouncer in transaction mode, and
    /// to measure what the wake-up is worth: `make bench-latency`).
    pub wake_on_commit: bool,
    /// Retry delays after consecutive failed rounds (jittered, capped).
    pub backoff: Backoff,
    /// Longest wait for a batch's confirms; the claimed rows stay locked meanwhile. A guard
    /// above the publisher's own limits (`connect_wait`, `confirm_timeout`).
    pub publish_timeout: Duration,
    /// How long confirmed rows are kept (for audits and debugging) before the relay
    /// deletes them.
    pub retention: Duration,
    /// Test hook; `None` in production.
    pub fault: Option<Fault>,
}

/// How often a relay deletes confirmed rows older than the retention: hourly is plenty for
/// a retention of days, and each replica doing it is harmless (the DELETE is idempotent).
const PURGE_EVERY: Duration = Duration::from_secs(3600);

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            // 100 events per round: one pipelined burst of confirms, small enough that a
            // round's row locks are short; at ~1 ms per confirm a round takes ~0.1 s.
            batch_size: 100,
            // Commits wake the relay at once (Notify / LISTEN); the poll only catches a missed
            // notification, so 5 s bounds the worst-case delay without busy polling.
            poll_interval: Duration::from_secs(5),
            wake_on_commit: true,
            // 200 ms doubling to 30 s: a broker restart is ridden out within a second or
            // two; a long outage costs one publish attempt per 15-30 s per replica.
            backoff: Backoff {
                initial: Duration::from_millis(200),
                max: Duration::from_secs(30),
            },
            // The publisher gives up by itself after connect_wait (5 s) or confirm_timeout
            // (30 s); 45 s only catches a publisher that never answers.
            publish_timeout: Duration::from_secs(45),
            // A week of sent events: enough to trace a complaint, bounded table growth.
            retention: Duration::from_secs(7 * 24 * 3600),
            fault: None,
        }
    }
}

impl RelayOptions {
    /// These options with the backoff capped at `max`.
    pub fn with_max_backoff(mut self, max: Duration) -> Self {
        self.backoff.max = max.max(self.backoff.initial);
        self
    }
}

/// The relay's broker connection as others see it (for `/ready`).
#[derive(Default)]
pub struct BrokerStatus {
    publisher: Mutex<Option<Publisher>>,
}

impl BrokerStatus {
    /// True while the relay has a publisher that reports a live connection.
    pub fn is_connected(&self) -> bool {
        self.current().is_some_and(|p| p.is_connected())
    }

    fn current(&self) -> Option<Publisher> {
        self.publisher.lock().expect("broker status lock").clone()
    }

    fn set(&self, p: Option<Publisher>) {
        *self.publisher.lock().expect("broker status lock") = p;
    }
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Rows claimed.
    pub claimed: usize,
    /// Rows confirmed and marked sent.
    pub sent: usize,
    /// Rows whose publish failed (the relay backs off).
    pub failed: usize,
    /// Rows whose payload is not a valid event (does not parse, or breaks the contract):
    /// parked with the reason in `last_error` (out of every later claim), never published,
    /// no reason to back off.
    pub undecodable: usize,
}

/// The outbox relay of one service instance.
pub struct Relay {
    pool: PgPool,
    broker: BrokerConfig,
    publisher_options: PublisherOptions,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    status: Arc<BrokerStatus>,
    options: RelayOptions,
}

impl Relay {
    /// A relay publishing `pool`'s outbox to the broker of `broker`.
    pub fn new(
        pool: PgPool,
        broker: BrokerConfig,
        publisher_options: PublisherOptions,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
        options: RelayOptions,
    ) -> Self {
        Self {
            pool,
            broker,
            publisher_options,
            wake,
            metrics,
            status: Arc::default(),
            options,
        }
    }

    /// The broker connection state, for readiness reports.
    pub fn status(&self) -> Arc<BrokerStatus> {
        self.status.clone()
    }

    /// Runs until `shutdown` is cancelled (the batch in hand is finished and marked first),
    /// or until an injected fault fires. Database and broker failures are retried, never fatal.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RelayError> {
        let listener_stop = shutdown.child_token();
        let listener = self.options.wake_on_commit.then(|| {
            tokio::spawn(listen(
                self.pool.clone(),
                self.wake.clone(),
                listener_stop.clone(),
            ))
        });
        // Connects in the background and reconnects by itself; publishes wait for it up to
        // its connect_wait, then fail and the relay backs off.
        let publisher = Publisher::start(self.broker.clone(), self.publisher_options.clone());
        info!(
            broker = %self.broker.redacted(),
            queue = %self.publisher_options.routing_key,
            "outbox relay started"
        );
        self.status.set(Some(publisher.clone()));
        let result = self.run_rounds(&publisher, &shutdown).await;
        listener_stop.cancel();
        if let Some(listener) = listener {
            let _ = listener.await;
        }
        if let Some(p) = self.status.current() {
            p.close().await;
        }
        self.status.set(None);
        self.metrics.broker_connected.set(0);
        result
    }

    async fn run_rounds(
        &self,
        publisher: &Publisher,
        shutdown: &CancellationToken,
    ) -> Result<(), RelayError> {
        let mut failures: u32 = 0;
        let mut last_purge: Option<tokio::time::Instant> = None;
        while !shutdown.is_cancelled() {
            if last_purge.is_none_or(|t| t.elapsed() >= PURGE_EVERY) {
                last_purge = Some(tokio::time::Instant::now());
                match outbox::purge_sent(&self.pool, self.options.retention).await {
                    Ok(0) => {}
                    Ok(n) => info!(deleted = n, "deleted confirmed outbox rows past retention"),
                    Err(e) => warn!(error = %e, "could not delete old outbox rows"),
                }
            }
            let outcome = self.round(publisher).await;
            self.metrics
                .broker_connected
                .set(self.status.is_connected() as i64);
            let pause = match outcome {
                Ok(round) if round.failed > 0 => {
                    failures = failures.saturating_add(1);
                    Some(self.options.backoff.delay(failures - 1))
                }
                Ok(round) => {
                    failures = 0;
                    if round.sent > 0 && round.claimed as i64 >= self.options.batch_size {
                        continue; // more rows are probably waiting
                    }
                    None
                }
                Err(RelayError::InjectedCrash) => return Err(RelayError::InjectedCrash),
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let delay = self.options.backoff.delay(failures - 1);
                    warn!(error = %e, retry_in = ?delay, "outbox relay round failed");
                    Some(delay)
                }
            };
            let sleep = pause.unwrap_or(self.options.poll_interval);
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(sleep) => {}
                // After a failure only the backoff ends the pause: a burst of commits must
                // not turn an outage into a retry storm.
                _ = self.wake.notified(), if pause.is_none() && self.options.wake_on_commit => {}
            }
        }
        Ok(())
    }

    /// One claim-publish-mark round.
    #[instrument(skip_all, fields(claimed, sent, failed))]
    pub async fn round(&self, publisher: &Publisher) -> Result<Round, RelayError> {
        let mut tx = self.pool.begin().await?;
        let claimed = outbox::claim(&mut tx, self.options.batch_size).await?;
        if claimed.is_empty() {
            tx.commit().await?;
            return Ok(Round::default());
        }
        let (events, mut undecodable) = decode(&claimed);
        let mut failed = Vec::new();
        let batch: Vec<NotificationEvent> = events.iter().map(|(_, e)| e.clone()).collect();
        let results = match publish_guarded(publisher, &batch, self.options.publish_timeout).await {
            Some(results) => results,
            None => {
                vec![Err(PublishError::ConfirmTimeout(self.options.publish_timeout)); events.len()]
            }
        };
        let mut sent = Vec::new();
        let mut lags = Vec::new();
        for ((row, _), result) in events.iter().zip(results) {
            match result {
                Ok(()) => {
                    sent.push(row.id);
                    lags.push(row.created_at);
                }
                // The publisher refused the event itself: retrying will not help, and it
                // must not slow the others down with backoff. It stays pending, with why.
                Err(e @ PublishError::Contract(_)) => undecodable.push((row.id, e.to_string())),
                Err(e) => failed.push((row.id, e.to_string())),
            }
        }
        if self.options.fault == Some(Fault::CrashAfterConfirm) && !sent.is_empty() {
            warn!(
                confirmed = sent.len(),
                "fault injection: crashing after confirm, before mark"
            );
            drop(tx); // rolls back: the rows stay pending, as after a real crash
            return Err(RelayError::InjectedCrash);
        }
        outbox::mark_sent(&mut tx, &sent).await?;
        outbox::mark_failed(&mut tx, &failed).await?;
        outbox::park(&mut tx, &undecodable).await?;
        tx.commit().await?;

        let now = chrono::Utc::now();
        for created in lags {
            let lag = (now - created).to_std().unwrap_or_default();
            self.metrics.relay_lag_seconds.observe(lag.as_secs_f64());
        }
        self.metrics.published.inc_by(sent.len() as u64);
        self.metrics.publish_failures.inc_by(failed.len() as u64);
        if let Some((_, e)) = failed.first() {
            warn!(failed = failed.len(), sent = sent.len(), error = %e, "some outbox events were not confirmed");
        } else {
            debug!(sent = sent.len(), "outbox events confirmed");
        }
        self.metrics.parked.inc_by(undecodable.len() as u64);
        if let Some((id, e)) = undecodable.first() {
            warn!(count = undecodable.len(), row = id, error = %e, "outbox rows with a broken payload parked");
        }
        let round = Round {
            claimed: claimed.len(),
            sent: sent.len(),
            failed: failed.len(),
            undecodable: undecodable.len(),
        };
        let span = tracing::Span::current();
        span.record("claimed", round.claimed);
        span.record("sent", round.sent);
        span.record("failed", round.failed);
        Ok(round)
    }
}

/// How often the guard around a batch's publish looks whether the broker blocked publishing.
const BLOCKED_POLL: Duration = Duration::from_millis(250);

/// `publish_all` bounded by `timeout`, except that the clock stops while the broker blocks
/// the publisher (a memory or disk alarm): the broker holds those messages and confirms them
/// once the alarm clears, so failing them would only make late duplicates. `None` when the
/// guard expired.
async fn publish_guarded(
    publisher: &Publisher,
    events: &[NotificationEvent],
    timeout: Duration,
) -> Option<Vec<Result<(), PublishError>>> {
    let publish = publisher.publish_all(events);
    tokio::pin!(publish);
    let mut deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::select! {
            results = &mut publish => return Some(results),
            () = tokio::time::sleep(BLOCKED_POLL) => {
                let now = tokio::time::Instant::now();
                if publisher.is_blocked() {
                    deadline = now + timeout;
                } else if now >= deadline {
                    return None;
                }
            }
        }
    }
}

/// A row that was not published: its id and why.
type Failure = (i64, String);

/// Splits claimed rows into publishable events and rows whose payload does not parse (a bug
/// or a hand-edited row: recorded as failed with the reason, never published half-read).
fn decode(claimed: &[Claimed]) -> (Vec<(&Claimed, NotificationEvent)>, Vec<Failure>) {
    let mut events = Vec::with_capacity(claimed.len());
    let mut failed = Vec::new();
    for row in claimed {
        match serde_json::from_value::<NotificationEvent>(row.payload.clone()) {
            Ok(e) if e.id == row.event_id => events.push((row, e)),
            Ok(e) => failed.push((row.id, format!("payload id {} differs from event_id", e.id))),
            Err(e) => failed.push((row.id, format!("payload is not a notification event: {e}"))),
        }
    }
    (events, failed)
}

/// Forwards PostgreSQL notifications on [`CHANNEL`] to `wake` until `stop`; reconnects
/// after a lost connection (and wakes the relay then, as a notification may have been missed).
async fn listen(pool: PgPool, wake: Arc<Notify>, stop: CancellationToken) {
    // A lost LISTEN connection is retried every 2 s; the relay's poll covers the gap.
    const RETRY: Duration = Duration::from_secs(2);
    while !stop.is_cancelled() {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                debug!(error = %e, "outbox LISTEN connection failed");
                tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(RETRY) => continue }
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            debug!(error = %e, "outbox LISTEN failed");
            tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(RETRY) => continue }
        }
        wake.notify_one();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                n = listener.recv() => match n {
                    Ok(_) => wake.notify_one(),
                    Err(e) => {
                        debug!(error = %e, "outbox LISTEN connection lost");
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_whose_payload_is_not_an_event_is_failed_not_published() {
        let good = NotificationEvent::new("u", swappo_messaging::EventType::System, "t", "b");
        let rows = vec![
            Claimed {
                id: 1,
                event_id: good.id,
                payload: serde_json::to_value(&good).unwrap(),
                created_at: chrono::Utc::now(),
            },
            Claimed {
                id: 2,
                event_id: uuid::Uuid::new_v4(),
                payload: serde_json::json!({"nope": true}),
                created_at: chrono::Utc::now(),
            },
            Claimed {
                id: 3,
                event_id: uuid::Uuid::new_v4(),
                payload: serde_json::to_value(&good).unwrap(),
                created_at: chrono::Utc::now(),
            },
        ];
        let (events, failed) = decode(&rows);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].1, good);
        assert_eq!(failed.iter().map(|f| f.0).collect::<Vec<_>>(), vec![2, 3]);
    }
}
