//! The consumer's batch handler: one batch of events becomes one insert, and the outcome
//! tells the consumer whether to ack the batch or to look for the event that broke it.
//!
//! A failure is either about the database or about an event ([`classify`], by SQLSTATE):
//! - The database cannot take writes right now: unreachable (connection refused or lost,
//!   shutting down, starting up, too many connections), read-only (a replica promoted late,
//!   `default_transaction_read_only`), out of disk or memory, a statement or lock timeout,
//!   a serialization failure or deadlock, or anything else not caused by the values (a
//!   missing table after a bad deploy). These are waited out with the batch in hand,
//!   unacknowledged, retrying with capped backoff: handing the batch back would spend a
//!   delivery of each event, and a long enough outage would dead-letter good events.
//! - A value the database refuses (SQLSTATE class 22, data exception: an invalid byte
//!   sequence, a value out of range; class 23, integrity constraint violation): that is the
//!   event's own content, handed back with [`BatchOutcome::Retry`] so the consumer stores the
//!   rest one by one and dead-letters the culprit after `MAX_DELIVERIES`.
//!
//! Either way nothing is acked before it is committed, and the unique event id makes
//! redelivered events land once.
use crate::metrics::Metrics;
use crate::storage::{Storage, StorageError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use swappo_messaging::{BatchHandler, BatchOutcome, NotificationEvent};
use tokio_util::sync::CancellationToken;

/// First wait after a failed attempt against an unreachable database; doubled up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between attempts: a recovered database is used within 5 s.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Stores each batch in one statement (see the module docs for failures).
#[derive(Clone, Debug)]
pub struct StoreBatch {
    storage: Storage,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    waiting: DatabaseWait,
}

/// Whether the consumer is waiting out a database failure with a batch in hand, since when
/// and why: a health signal (the wait itself has no end but the database's recovery).
#[derive(Clone, Debug, Default)]
pub struct DatabaseWait(Arc<Mutex<Option<(Instant, String)>>>);

impl DatabaseWait {
    fn start(&self, e: &StorageError) {
        let mut w = self.0.lock().expect("not poisoned");
        match &mut *w {
            Some((_, reason)) => *reason = e.to_string(),
            None => *w = Some((Instant::now(), e.to_string())),
        }
    }

    fn clear(&self) {
        *self.0.lock().expect("not poisoned") = None;
    }

    /// How long the current wait has lasted and the last error, if the consumer is waiting.
    pub fn current(&self) -> Option<(Duration, String)> {
        self.0
            .lock()
            .expect("not poisoned")
            .as_ref()
            .map(|(since, reason)| (since.elapsed(), reason.clone()))
    }
}

impl StoreBatch {
    /// A handler writing to `storage` and counting in `metrics`; it stops waiting for the
    /// database when `shutdown` fires (the batch is then handed back uncounted).
    pub fn new(storage: Storage, metrics: Arc<Metrics>, shutdown: CancellationToken) -> Self {
        Self {
            storage,
            metrics,
            shutdown,
            waiting: DatabaseWait::default(),
        }
    }

    /// The handler's wait state, for health and readiness.
    pub fn waiting(&self) -> DatabaseWait {
        self.waiting.clone()
    }

    /// Stores `batch`; returns how many rows were new.
    #[tracing::instrument(skip_all, fields(events = batch.len()))]
    pub async fn store(&self, batch: &[NotificationEvent]) -> Result<u64, StorageError> {
        let started = Instant::now();
        let received = batch.len() as u64;
        match self.storage.insert_events(batch).await {
            Ok(new) => {
                self.metrics
                    .record_stored(received, new, started.elapsed().as_secs_f64());
                if new < received {
                    tracing::debug!(duplicates = received - new, "skipped events already stored");
                }
                Ok(new)
            }
            Err(e) => {
                let failure = classify(&e);
                self.metrics
                    .record_failure(failure.label(), started.elapsed().as_secs_f64());
                tracing::warn!(error = %e, ?failure, "storing a batch failed");
                Err(e)
            }
        }
    }
}

impl BatchHandler for StoreBatch {
    async fn handle(&self, batch: Vec<NotificationEvent>) -> BatchOutcome {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.store(&batch).await {
                Ok(_) => {
                    self.waiting.clear();
                    return BatchOutcome::Done;
                }
                Err(e) if classify(&e) == Failure::Database => {
                    self.waiting.start(&e);
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.shutdown.cancelled() => {
                            self.waiting.clear();
                            return BatchOutcome::Retry(e.to_string());
                        }
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => {
                    self.waiting.clear();
                    return BatchOutcome::Retry(e.to_string());
                }
            }
        }
    }
}

/// Whose fault a failed insert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The database cannot take the batch now (down, read-only, full, timing out, in a
    /// conflict, misconfigured): wait it out with the batch in hand.
    Database,
    /// A value of some event is refused: hand the batch back to find and dead-letter it.
    Event,
}

impl Failure {
    /// The metric label of a batch that failed this way.
    pub fn label(self) -> &'static str {
        match self {
            Failure::Database => "waiting",
            Failure::Event => "refused",
        }
    }
}

/// Classifies a failed insert (pure). Only what the values themselves cause is the event's
/// fault: SQLSTATE class 22 (data exception) and 23 (integrity constraint violation), and a
/// value the driver cannot encode. Everything else, known or not, is waited out: an unknown
/// error dead-lettering good events is worse than a consumer that waits and says so.
pub fn classify(e: &StorageError) -> Failure {
    let StorageError::Database(e) = e else {
        return Failure::Database;
    };
    match e {
        sqlx::Error::Encode(_) => Failure::Event,
        sqlx::Error::Database(db) => match db.code() {
            Some(code) if code.starts_with("22") || code.starts_with("23") => Failure::Event,
            _ => Failure::Database,
        },
        _ => Failure::Database,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_or_refused_connection_or_a_full_pool_is_waited_out() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let io = StorageError::Database(sqlx::Error::Io(refused));
        assert_eq!(classify(&io), Failure::Database);
        let pool = StorageError::Database(sqlx::Error::PoolTimedOut);
        assert_eq!(classify(&pool), Failure::Database);
    }

    #[test]
    fn errors_that_are_not_about_the_values_are_waited_out_too() {
        let decode = sqlx::Error::ColumnNotFound("type".into());
        assert_eq!(classify(&StorageError::Database(decode)), Failure::Database);
        let protocol = sqlx::Error::Protocol("unexpected message".into());
        assert_eq!(
            classify(&StorageError::Database(protocol)),
            Failure::Database
        );
    }

    #[test]
    fn a_value_the_driver_cannot_encode_is_the_events_fault() {
        let encode = sqlx::Error::Encode("bad value".into());
        assert_eq!(classify(&StorageError::Database(encode)), Failure::Event);
    }

    #[test]
    fn the_metric_labels_say_waiting_or_refused() {
        assert_eq!(Failure::Database.label(), "waiting");
        assert_eq!(Failure::Event.label(), "refused");
    }
}
