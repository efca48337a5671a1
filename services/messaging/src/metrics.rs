//! Counters both the publisher and the consumer keep; the services export them to Prometheus.
use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters (relaxed atomics: each is independent, read for metrics only).
#[derive(Debug, Default)]
pub struct MessagingMetrics {
    /// Messages handed to the broker (`basic.publish` written), confirmed or not.
    pub published: AtomicU64,
    /// Messages the broker confirmed (ack, routed).
    pub confirmed: AtomicU64,
    /// Publishes reported to the caller as failed (nack, unroutable, connection lost, timeout).
    pub publish_failed: AtomicU64,
    /// Deliveries received by the consumer.
    pub consumed: AtomicU64,
    /// Deliveries acknowledged after the handler stored them.
    pub acked: AtomicU64,
    /// Deliveries returned to the queue for another try.
    pub requeued: AtomicU64,
    /// Messages sent to the dead-letter exchange by the consumer (bad contract, or too many
    /// deliveries on a classic queue). The broker's own quorum dead-lettering is not seen here.
    pub dead_lettered: AtomicU64,
    /// Dead letters or counted requeues the broker did not take (no route to the DLQ, a
    /// blocked connection, no confirm): each message concerned stays unacked and is tried
    /// again. Alert when this keeps rising: the DLQ topology is missing or the broker is
    /// in alarm.
    pub side_publish_failed: AtomicU64,
}

/// A point-in-time copy of [`MessagingMetrics`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct MetricsSnapshot {
    pub published: u64,
    pub confirmed: u64,
    pub publish_failed: u64,
    pub consumed: u64,
    pub acked: u64,
    pub requeued: u64,
    pub dead_lettered: u64,
    pub side_publish_failed: u64,
}

impl MessagingMetrics {
    /// Reads every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            published: get(&self.published),
            confirmed: get(&self.confirmed),
            publish_failed: get(&self.publish_failed),
            consumed: get(&self.consumed),
            acked: get(&self.acked),
            requeued: get(&self.requeued),
            dead_lettered: get(&self.dead_lettered),
            side_publish_failed: get(&self.side_publish_failed),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_reads_each_counter() {
        let m = MessagingMetrics::default();
        m.published.fetch_add(3, Ordering::Relaxed);
        m.dead_lettered.fetch_add(1, Ordering::Relaxed);
        let s = m.snapshot();
        assert_eq!((s.published, s.dead_lettered, s.acked), (3, 1, 0));
    }
}
