//! Prometheus metrics of the service (`GET /metrics`, OpenMetrics text).
use crate::events::OfferChange;
use crate::outbox::Backlog;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Label of an offer change.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabels {
    /// `created`, `accepted`, `rejected`, `cancelled`, `completed` or `withdrawn`.
    pub change: String,
}

/// Label of an HTTP error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The error's code, as in the JSON body.
    pub code: String,
}

/// Every metric of the service and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    /// Committed offer changes by kind.
    pub offer_changes: Family<ChangeLabels, Counter>,
    /// Error responses by code.
    pub http_errors: Family<ErrorLabels, Counter>,
    /// Outbox rows not yet confirmed (refreshed at each scrape).
    pub outbox_pending: Gauge,
    /// Age of the oldest pending outbox row in seconds (refreshed at each scrape).
    pub outbox_oldest_pending_seconds: Gauge<f64, AtomicU64>,
    /// Outbox rows parked because they can never be published (refreshed at each scrape):
    /// alert on any.
    pub outbox_parked: Gauge,
    /// Rows the relay parked (a counter: rises once per row).
    pub parked: Counter,
    /// Events the broker confirmed and the relay marked sent.
    pub published: Counter,
    /// Failed publish attempts (per event).
    pub publish_failures: Counter,
    /// Seconds from the offer change's commit to the broker's confirm, per event.
    pub relay_lag_seconds: Histogram,
    /// 1 while the relay's publisher is connected to the broker.
    pub broker_connected: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `matchmaking` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("matchmaking");
        let offer_changes = Family::<ChangeLabels, Counter>::default();
        registry.register(
            "offer_changes",
            "Committed trade offer changes",
            offer_changes.clone(),
        );
        let http_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "http_errors",
            "HTTP error responses by error code",
            http_errors.clone(),
        );
        let outbox_pending = Gauge::default();
        registry.register(
            "outbox_pending",
            "Outbox events not yet confirmed by the broker",
            outbox_pending.clone(),
        );
        let outbox_oldest_pending_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "outbox_oldest_pending_seconds",
            "Age of the oldest unconfirmed outbox event",
            outbox_oldest_pending_seconds.clone(),
        );
        let outbox_parked = Gauge::default();
        registry.register(
            "outbox_parked",
            "Outbox events that can never be published (broken payload), parked out of the relay's claim: alert on any",
            outbox_parked.clone(),
        );
        let parked = Counter::default();
        registry.register(
            "outbox_parked_rows",
            "Outbox rows the relay parked",
            parked.clone(),
        );
        let published = Counter::default();
        registry.register(
            "outbox_published",
            "Events confirmed by the broker and marked sent",
            published.clone(),
        );
        let publish_failures = Counter::default();
        registry.register(
            "outbox_publish_failures",
            "Failed publish attempts, per event",
            publish_failures.clone(),
        );
        // 5 ms .. ~82 s in 15 doublings: from a relay that is awake to one that waited out an outage.
        let relay_lag_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 15));
        registry.register(
            "outbox_relay_lag_seconds",
            "Seconds from the offer change's commit to the broker's confirm",
            relay_lag_seconds.clone(),
        );
        let broker_connected = Gauge::default();
        registry.register(
            "broker_connected",
            "1 while the outbox relay is connected to RabbitMQ",
            broker_connected.clone(),
        );
        Self {
            registry,
            offer_changes,
            http_errors,
            outbox_pending,
            outbox_oldest_pending_seconds,
            outbox_parked,
            parked,
            published,
            publish_failures,
            relay_lag_seconds,
            broker_connected,
        }
    }

    /// Counts a committed offer change.
    pub fn offer_changed(&self, change: OfferChange) {
        self.offer_changes
            .get_or_create(&ChangeLabels {
                change: change.label().into(),
            })
            .inc();
    }

    /// Counts an error response.
    pub fn http_error(&self, code: &str) {
        self.http_errors
            .get_or_create(&ErrorLabels { code: code.into() })
            .inc();
    }

    /// Sets the outbox gauges from a fresh count.
    pub fn set_backlog(&self, b: Backlog) {
        self.outbox_pending.set(b.pending);
        self.outbox_parked.set(b.parked);
        self.outbox_oldest_pending_seconds.set(b.oldest_age_seconds);
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offer::OfferStatus;

    #[test]
    fn offer_changes_are_counted_by_kind() {
        let m = Metrics::new();
        m.offer_changed(OfferChange::Created);
        m.offer_changed(OfferChange::StatusChanged(OfferStatus::Accepted));
        m.offer_changed(OfferChange::StatusChanged(OfferStatus::Accepted));
        let text = m.encode();
        assert!(
            text.contains(r#"matchmaking_offer_changes_total{change="created"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"matchmaking_offer_changes_total{change="accepted"} 2"#),
            "{text}"
        );
        assert!(text.contains("matchmaking_outbox_pending 0"), "{text}");
        assert!(
            text.contains("matchmaking_outbox_relay_lag_seconds_bucket"),
            "{text}"
        );
    }
}
