//! The live view: one snapshot of everything rendered as a small table. Pure: the caller
//! clears the screen (ANSI) on a terminal, or prints a one-line form into a log.
use crate::cluster::PodRow;
use std::fmt::Write as _;
use std::time::Duration;

/// Everything the view shows; `None` is "could not be read just now" and shows as `?`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Since the load started.
    pub elapsed: Duration,
    /// The load phase's name.
    pub phase: &'static str,
    /// Offers created by the driver.
    pub offers: u64,
    /// Accept/reject/cancel/complete requests made.
    pub changes: u64,
    /// Notifications read back through the notifications API.
    pub read_back: u64,
    /// Driver requests that failed.
    pub request_errors: u64,
    /// Queue messages ready.
    pub ready: Option<u64>,
    /// Queue messages delivered, not acked.
    pub unacked: Option<u64>,
    /// Consumers attached to the queue (AMQP channels).
    pub queue_consumers: Option<u64>,
    /// Messages in the dead-letter queue.
    pub dead_lettered: Option<u64>,
    /// Redelivered events the running consumers skipped because their row existed.
    pub duplicates: Option<u64>,
    /// Outbox rows written.
    pub outbox: Option<u64>,
    /// Outbox rows confirmed by the broker.
    pub published: Option<u64>,
    /// Rows in the notifications database.
    pub stored: Option<u64>,
    /// Published per second over the last interval.
    pub published_rate: Option<f64>,
    /// Stored per second over the last interval.
    pub stored_rate: Option<f64>,
    /// The Deployment's `spec.replicas`.
    pub replicas: Option<i32>,
    /// The Deployment's ready replicas (pods Ready by their `/ready` probe).
    pub ready_replicas: Option<i32>,
    /// The operator's last desired replicas (`status.consumers[].desiredReplicas`).
    pub desired: Option<i32>,
    /// Why (`status.consumers[].reason`).
    pub reason: Option<String>,
    /// When the operator last scaled.
    pub last_scale: Option<String>,
    /// The demo namespace's pods.
    pub pods: Vec<PodRow>,
    /// The outage drill's faults so far, one line each.
    pub drill: Vec<String>,
    /// The consumer's scaling policy from the SwappoMessaging spec, in words.
    pub policy: Option<String>,
    /// `type=status(reason)` of each condition.
    pub conditions: Vec<String>,
    /// The operator's most recent Events, newest last, one line each.
    pub events: Vec<String>,
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "?".to_string(), |v| v.to_string())
}

fn rate(v: Option<f64>) -> String {
    v.map_or_else(|| "?".to_string(), |r| format!("{r:.0}/s"))
}

/// A consumer's scaling policy in words.
pub fn policy_text(min: i32, max: i32, per_replica: u32, down_after_secs: u32) -> String {
    format!("{min}..{max} replicas, 1 per {per_replica} msgs, down after {down_after_secs} s")
}

impl Snapshot {
    /// Messages in the queue: ready + unacked.
    pub fn depth(&self) -> Option<u64> {
        Some(self.ready? + self.unacked?)
    }

    /// The full-screen table.
    pub fn render(&self, title: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{title}   t={}s  load: {}   (Ctrl-C stops everything)",
            self.elapsed.as_secs(),
            self.phase
        );
        let _ = writeln!(s, "{}", "-".repeat(78));
        let row = |s: &mut String, k: &str, v: String| {
            let _ = writeln!(s, "  {k:<37} {v}");
        };
        row(
            &mut s,
            "offers created / status changes",
            format!("{} / {}", self.offers, self.changes),
        );
        row(
            &mut s,
            "queue depth (ready + unacked)",
            format!(
                "{}  ({} + {}), {} AMQP consumers",
                opt(&self.depth()),
                opt(&self.ready),
                opt(&self.unacked),
                opt(&self.queue_consumers)
            ),
        );
        row(
            &mut s,
            "events published (broker-confirmed)",
            format!("{}  {}", opt(&self.published), rate(self.published_rate)),
        );
        row(
            &mut s,
            "events stored (notifications DB)",
            format!("{}  {}", opt(&self.stored), rate(self.stored_rate)),
        );
        row(&mut s, "events dead-lettered", opt(&self.dead_lettered));
        row(
            &mut s,
            "redeliveries skipped (already stored)",
            opt(&self.duplicates),
        );
        row(
            &mut s,
            "outbox pending",
            match (self.outbox, self.published) {
                (Some(o), Some(p)) => o.saturating_sub(p).to_string(),
                _ => "?".into(),
            },
        );
        row(
            &mut s,
            "read back via notifications API",
            format!(
                "{}  (request errors {})",
                self.read_back, self.request_errors
            ),
        );
        let _ = writeln!(s, "{}", "-".repeat(78));
        row(
            &mut s,
            "scaling policy (SwappoMessaging spec)",
            self.policy.clone().unwrap_or_else(|| "?".into()),
        );
        row(
            &mut s,
            "consumer replicas desired (operator)",
            opt(&self.desired),
        );
        row(
            &mut s,
            "Deployment replicas spec / ready",
            format!("{} / {}", opt(&self.replicas), opt(&self.ready_replicas)),
        );
        row(
            &mut s,
            "operator's last decision",
            format!(
                "{}{}",
                self.reason.as_deref().unwrap_or("(none yet)"),
                self.last_scale
                    .as_deref()
                    .map(|t| format!("  (last scaled {t})"))
                    .unwrap_or_default()
            ),
        );
        row(&mut s, "conditions", self.conditions.join(" "));
        let _ = writeln!(s, "  recent operator Events:");
        if self.events.is_empty() {
            let _ = writeln!(s, "    (none)");
        }
        for e in &self.events {
            let _ = writeln!(s, "    {e}");
        }
        let _ = writeln!(s, "{}", "-".repeat(78));
        let _ = writeln!(s, "{}", pod_table(&self.pods));
        if !self.drill.is_empty() {
            let _ = writeln!(s, "  outage drill:");
            for d in &self.drill {
                let _ = writeln!(s, "    {d}");
            }
        }
        s
    }

    /// One line for a log (stdout not a terminal).
    pub fn line(&self) -> String {
        format!(
            "t={}s {} offers={} depth={} published={} stored={} dlq={} desired={} replicas={} ready={} reason={}",
            self.elapsed.as_secs(),
            self.phase,
            self.offers,
            opt(&self.depth()),
            opt(&self.published),
            opt(&self.stored),
            opt(&self.dead_lettered),
            opt(&self.desired),
            opt(&self.replicas),
            opt(&self.ready_replicas),
            self.reason.as_deref().unwrap_or("-"),
        )
    }
}

/// Characters of a pod name in the table: the services' generated names (`notifications-
/// service-<hash>-<id>`) are 37 long.
const POD_NAME_WIDTH: usize = 40;

/// The pods as `kubectl get pods -o wide` would list them: name, phase, ready, restarts, node.
pub fn pod_table(pods: &[PodRow]) -> String {
    let mut s = format!(
        "  {:<POD_NAME_WIDTH$} {:<12} {:<6} {:>8}  {}",
        "POD", "PHASE", "READY", "RESTARTS", "NODE"
    );
    if pods.is_empty() {
        s.push_str("\n  (none)");
    }
    for p in pods {
        let name: String = p.name.chars().take(POD_NAME_WIDTH).collect();
        let _ = write!(
            s,
            "\n  {name:<POD_NAME_WIDTH$} {:<12} {:<6} {:>8}  {}",
            p.phase,
            if p.ready { "yes" } else { "no" },
            p.restarts,
            if p.node.is_empty() { "-" } else { &p.node }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_values_show_as_question_marks_not_zeros() {
        let s = Snapshot::default();
        assert_eq!(s.depth(), None);
        let text = s.render("demo");
        assert!(
            text.contains(&format!("{:<37} ?", "queue depth (ready + unacked)")),
            "{text}"
        );
        assert!(text.contains("(none yet)"), "{text}");
    }

    #[test]
    fn the_table_shows_depth_replicas_counts_and_the_last_decision() {
        let s = Snapshot {
            elapsed: Duration::from_secs(42),
            phase: "burst",
            ready: Some(700),
            unacked: Some(200),
            published: Some(1500),
            stored: Some(600),
            dead_lettered: Some(0),
            outbox: Some(1510),
            desired: Some(9),
            replicas: Some(9),
            ready_replicas: Some(9),
            pods: vec![PodRow {
                name: "notifications-service-5d9f8-abcde".into(),
                phase: "Running".into(),
                ready: true,
                restarts: 1,
                node: "swappo-node-0".into(),
                ..PodRow::default()
            }],
            drill: vec!["t=25s broker pod killed (swappo-rabbitmq-0): recovered in 31s".into()],
            reason: Some("ScaledUp: depth 900".into()),
            policy: Some(policy_text(1, 10, 100, 300)),
            events: vec!["ScaledUp notifications-service 1 -> 9".into()],
            ..Snapshot::default()
        };
        let text = s.render("demo");
        for want in [
            "t=42s",
            "burst",
            "900  (700 + 200)",
            "1500",
            "600",
            "9 / 9",
            "ScaledUp: depth 900",
            "1 -> 9",
            "1..10 replicas, 1 per 100 msgs, down after 300 s",
            "notifications-service-5d9f8-abcde",
            "Running      yes           1  swappo-node-0",
            "broker pod killed (swappo-rabbitmq-0): recovered in 31s",
        ] {
            assert!(text.contains(want), "{want} missing in:\n{text}");
        }
        assert!(
            text.contains(&format!("{:<37} 10\n", "outbox pending")),
            "{text}"
        );
        assert!(s.line().contains("depth=900 published=1500 stored=600"));
    }
}
