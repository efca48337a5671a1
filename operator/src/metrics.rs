//! Prometheus metrics of the operator, served on `/metrics`.
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Instant;

/// Labels of an error count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// [`crate::Error::kind`].
    pub kind: String,
}

/// Labels of an API write count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// The kind written (`Deployment`, `SwappoMessaging/status`, ...).
    pub kind: String,
}

/// Labels of a stale-ReplicaSet deletion count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CleanupLabels {
    /// [`crate::decisions::replicasets::StaleReason::code`].
    pub reason: String,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    /// Reconciles run.
    pub reconciles: Counter,
    /// Reconciles that failed, by error kind.
    pub errors: Family<ErrorLabels, Counter>,
    /// Reconcile durations in seconds.
    pub duration: Histogram,
    /// Writes to the API server, by kind (0 per minute in a steady state).
    pub writes: Family<WriteLabels, Counter>,
    /// Reads from the API server (GET or LIST), by kind: watch caches make most reads free,
    /// this counts the ones that went to the server.
    pub reads: Family<WriteLabels, Counter>,
    /// 1 while this replica holds the leader Lease (or runs without election).
    pub leader: Gauge,
    /// Stale ReplicaSets deleted, by reason.
    pub replica_sets_cleaned: Family<CleanupLabels, Counter>,
    /// AMQP connections opened (one per broker is kept: this grows only when one closed).
    pub amqp_connections_opened: Counter,
    /// Queue declarations sent to a broker (each `spec.queues` entry declared counts one).
    pub queue_declarations: Counter,
    /// Autoscaler passes over one resource (a poll of its queues and consumers).
    pub autoscaler_passes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("swappo_operator");
        let reconciles = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        // 1 ms to about 16 s: a reconcile is a handful of API calls plus, at most, one AMQP
        // login bounded by its timeout.
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let writes = Family::<WriteLabels, Counter>::default();
        let reads = Family::<WriteLabels, Counter>::default();
        let leader = Gauge::default();
        let replica_sets_cleaned = Family::<CleanupLabels, Counter>::default();
        let amqp_connections_opened = Counter::default();
        let queue_declarations = Counter::default();
        let autoscaler_passes = Counter::default();
        registry.register(
            "autoscaler_passes",
            "Autoscaler passes over one resource",
            autoscaler_passes.clone(),
        );
        registry.register(
            "amqp_connections_opened",
            "AMQP connections opened to brokers",
            amqp_connections_opened.clone(),
        );
        registry.register(
            "queue_declarations",
            "Queues declared on brokers (one per spec.queues entry declared)",
            queue_declarations.clone(),
        );
        registry.register(
            "stale_replica_sets_deleted",
            "Stale ReplicaSets deleted, by reason",
            replica_sets_cleaned.clone(),
        );
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles failed, by error kind",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            duration.clone(),
        );
        registry.register(
            "api_writes",
            "Writes to the Kubernetes API, by kind",
            writes.clone(),
        );
        registry.register(
            "api_reads",
            "Reads (GET or LIST) sent to the Kubernetes API, by kind",
            reads.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica is the leader",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            writes,
            reads,
            leader,
            replica_sets_cleaned,
            amqp_connections_opened,
            queue_declarations,
            autoscaler_passes,
        }
    }
}

impl Metrics {
    /// Counts a reconcile and returns a guard that records its duration when dropped.
    pub fn reconcile_started(&self) -> DurationGuard<'_> {
        self.reconciles.inc();
        DurationGuard {
            histogram: &self.duration,
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile.
    pub fn reconcile_failed(&self, error: &crate::Error) {
        self.errors
            .get_or_create(&ErrorLabels {
                kind: error.kind().to_owned(),
            })
            .inc();
    }

    /// Counts one API write of `kind`.
    pub fn wrote(&self, kind: &str) {
        self.writes
            .get_or_create(&WriteLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Counts one API read (GET or LIST) of `kind`.
    pub fn read(&self, kind: &str) {
        self.reads
            .get_or_create(&WriteLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Counts one stale ReplicaSet deleted for `reason` (a `StaleReason::code`).
    pub fn replica_set_cleaned(&self, reason: &str) {
        self.replica_sets_cleaned
            .get_or_create(&CleanupLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Records a reconcile's duration on drop.
pub struct DurationGuard<'a> {
    histogram: &'a Histogram,
    start: Instant,
}

impl Drop for DurationGuard<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_lists_reconciles_errors_durations_writes_and_leadership() {
        let m = Metrics::default();
        drop(m.reconcile_started());
        m.reconcile_failed(&crate::Error::MissingNamespace("x".into()));
        m.wrote("Deployment");
        m.read("Secret");
        m.leader.set(1);
        m.replica_set_cleaned("BeyondHistoryLimit");
        let text = m.encode();
        for needle in [
            "swappo_operator_reconciles_total 1",
            "swappo_operator_reconcile_errors_total{kind=\"missing_namespace\"} 1",
            "swappo_operator_reconcile_duration_seconds_count 1",
            "swappo_operator_api_writes_total{kind=\"Deployment\"} 1",
            "swappo_operator_api_reads_total{kind=\"Secret\"} 1",
            "swappo_operator_leader 1",
            "swappo_operator_stale_replica_sets_deleted_total{reason=\"BeyondHistoryLimit\"} 1",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }
}
