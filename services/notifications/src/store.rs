//! The consumer's batch handler: one batch of events becomes one insert, and the outcome
//! tells the consumer whether to ack the batch or have it redelivered.
//!
//! A database that is unreachable (connection refused or lost, shutting down, starting up)
//! is waited out with the batch in hand, unacknowledged, retrying with backoff: handing the
//! batch back to the broker instead would count a delivery against each message on every
//! attempt, and a quorum queue's `x-delivery-limit` would dead-letter perfectly good events
//! during an outage of a few seconds. Any other database error (a bug, a constraint the
//! contract should have caught) is handed back with [`BatchOutcome::Retry`], so a batch that
//! keeps failing ends in the dead-letter queue after `MAX_DELIVERIES`. Either way nothing is
//! acked before it is committed, and the unique event id makes redelivered events land once.
use crate::metrics::Metrics;
use crate::storage::{Storage, StorageError};
use std::sync::Arc;
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
}

impl StoreBatch {
    /// A handler writing to `storage` and counting in `metrics`; it stops waiting for an
    /// unreachable database when `shutdown` fires (the batch is then handed back).
    pub fn new(storage: Storage, metrics: Arc<Metrics>, shutdown: CancellationToken) -> Self {
        Self {
            storage,
            metrics,
            shutdown,
        }
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
                self.metrics
                    .record_retry(received, started.elapsed().as_secs_f64());
                tracing::warn!(error = %e, "storing a batch failed; it will be redelivered");
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
                Ok(_) => return BatchOutcome::Done,
                Err(e) if is_unreachable(&e) => {
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.shutdown.cancelled() => return BatchOutcome::Retry(e.to_string()),
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => return BatchOutcome::Retry(e.to_string()),
            }
        }
    }
}

/// Whether the database is unreachable (worth waiting for) rather than refusing the batch.
pub fn is_unreachable(e: &StorageError) -> bool {
    let StorageError::Database(e) = e else {
        return false;
    };
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // Class 08: connection exceptions. 57P01-57P03: administrator or crash shutdown,
            // "the database system is starting up". 53300: too many connections.
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_or_refused_connection_is_waited_out() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(is_unreachable(&StorageError::Database(sqlx::Error::Io(
            refused
        ))));
        assert!(is_unreachable(&StorageError::Database(
            sqlx::Error::PoolTimedOut
        )));
    }

    #[test]
    fn other_database_errors_are_handed_back_to_the_broker() {
        let decode = sqlx::Error::ColumnNotFound("type".into());
        assert!(!is_unreachable(&StorageError::Database(decode)));
        let protocol = sqlx::Error::Protocol("unexpected message".into());
        assert!(!is_unreachable(&StorageError::Database(protocol)));
    }
}
