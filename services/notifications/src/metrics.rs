//! Prometheus metrics of the service, served at `/metrics`.
//!
//! The storing side is counted here (events handed over, rows stored, duplicates skipped,
//! batches by outcome, batch latency); the broker side (messages consumed, acked, requeued,
//! dead-lettered) is read from the messaging consumer's own counters at scrape time.
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::{Arc, OnceLock};

/// Label of [`Metrics::batches`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BatchLabels {
    /// `stored` (committed, acked), `waiting` (a database failure waited out with the batch
    /// in hand: one per attempt) or `refused` (a value refused: handed back).
    pub outcome: &'static str,
}

/// Reads broker-side counters at scrape time: `(name, help, value)` triples.
pub type CounterSource = Arc<dyn Fn() -> Vec<(&'static str, &'static str, u64)> + Send + Sync>;

/// The service's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    /// Events in stored batches, redeliveries included (failed attempts are not counted).
    pub events_received: Counter,
    /// Events that became a new row.
    pub stored: Counter,
    /// Events whose id was already stored (redeliveries), skipped.
    pub duplicates: Counter,
    /// Batches by outcome.
    pub batches: Family<BatchLabels, Counter>,
    /// Seconds to store one batch (the insert's round trip to commit).
    pub batch_seconds: Histogram,
    broker: Arc<OnceLock<CounterSource>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `notifications_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("notifications");
        let events_received = Counter::default();
        let stored = Counter::default();
        let duplicates = Counter::default();
        let batches = Family::<BatchLabels, Counter>::default();
        // 1 ms to ~16 s in 15 doubling steps: a healthy batch commits in milliseconds, and
        // the top buckets still resolve the waits of a struggling database.
        let batch_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "events_received",
            "Events in stored batches, redeliveries included",
            events_received.clone(),
        );
        registry.register("stored", "Events stored as a new row", stored.clone());
        registry.register(
            "duplicates",
            "Events skipped because their id was already stored",
            duplicates.clone(),
        );
        registry.register("batches", "Batches handled, by outcome", batches.clone());
        registry.register(
            "batch_duration_seconds",
            "Time to store one batch, insert to commit",
            batch_seconds.clone(),
        );
        let broker = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(BrokerCounters(broker.clone())));
        Self {
            registry,
            events_received,
            stored,
            duplicates,
            batches,
            batch_seconds,
            broker,
        }
    }

    /// Adds the broker-side counters (once; later calls are ignored).
    pub fn attach_broker_counters(&self, source: CounterSource) {
        let _ = self.broker.set(source);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Counts one stored batch of `received` events of which `new` were new rows.
    pub fn record_stored(&self, received: u64, new: u64, seconds: f64) {
        self.events_received.inc_by(received);
        self.stored.inc_by(new);
        self.duplicates.inc_by(received.saturating_sub(new));
        self.batches
            .get_or_create(&BatchLabels { outcome: "stored" })
            .inc();
        self.batch_seconds.observe(seconds);
    }

    /// Counts one failed attempt to store a batch, by `outcome` (`waiting`: the database
    /// is waited out; `refused`: a value was refused). Events are counted as received only
    /// once stored, so the attempts of a long wait do not inflate `events_received`.
    pub fn record_failure(&self, outcome: &'static str, seconds: f64) {
        self.batches.get_or_create(&BatchLabels { outcome }).inc();
        self.batch_seconds.observe(seconds);
    }
}

struct BrokerCounters(Arc<OnceLock<CounterSource>>);

impl std::fmt::Debug for BrokerCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrokerCounters")
    }
}

impl Collector for BrokerCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(source) = self.0.get() else {
            return Ok(());
        };
        for (name, help, value) in source() {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_batch_counts_new_rows_and_duplicates() {
        let m = Metrics::new();
        m.record_stored(10, 7, 0.004);
        let text = m.encode();
        assert!(
            text.contains("notifications_events_received_total 10"),
            "{text}"
        );
        assert!(text.contains("notifications_stored_total 7"), "{text}");
        assert!(text.contains("notifications_duplicates_total 3"), "{text}");
        assert!(
            text.contains(r#"notifications_batches_total{outcome="stored"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("notifications_batch_duration_seconds_count 1"),
            "{text}"
        );
    }

    #[test]
    fn failed_attempts_count_batches_by_outcome_but_no_received_events() {
        let m = Metrics::new();
        m.record_failure("waiting", 0.01);
        m.record_failure("waiting", 0.01);
        let text = m.encode();
        assert!(
            text.contains(r#"notifications_batches_total{outcome="waiting"} 2"#),
            "{text}"
        );
        assert!(
            text.contains("notifications_events_received_total 0"),
            "{text}"
        );
    }

    #[test]
    fn broker_counters_appear_once_attached() {
        let m = Metrics::new();
        assert!(!m.encode().contains("dead_lettered"));
        m.attach_broker_counters(Arc::new(|| {
            vec![("dead_lettered", "Messages sent to the dead-letter queue", 2)]
        }));
        let text = m.encode();
        assert!(
            text.contains("notifications_dead_lettered_total 2"),
            "{text}"
        );
    }
}
