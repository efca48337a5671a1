//! The consumer scaling decision (DESIGN.md §7): a pure function from queue metrics, the
//! consumer's policy, its current replicas and the recent recommendations to a decision.
//!
//! - Backlog sizing: `ceil(depth / messagesPerReplica)`, depth = ready + unacked.
//! - Latency sizing, with `drainWithinSeconds`: `ceil((publishRate + depth / drainWithinSeconds)
//!   / perReplicaRate)`, the per-replica rate measured from the deliver/ack rates; the larger of
//!   the two wins.
//! - Clamped to `[minReplicas, maxReplicas]`.
//! - Up at once; down only to the highest recommendation seen over `scaleDownDelaySeconds`.
//! - A change within 10 % of the current replicas is ignored (unless the bounds demand it).
//! - Missing metrics: hold the current replicas and say why.

use std::collections::VecDeque;
use std::time::Duration;

/// Changes smaller than this fraction of the current replicas are ignored, as the HPA does
/// with its default tolerance: they are noise, and acting on them makes replicas flap.
pub const TOLERANCE: f64 = 0.10;

/// A consumer's scaling policy, from `spec.consumers[]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Lower bound (>= 0).
    pub min_replicas: i32,
    /// Upper bound (>= min).
    pub max_replicas: i32,
    /// Backlog one replica is expected to carry.
    pub messages_per_replica: u32,
    /// Optional latency target: size so the backlog drains within this time.
    pub drain_within: Option<Duration>,
    /// How long a lower recommendation must persist before scaling down.
    pub scale_down_delay: Duration,
}

/// Where the depth came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepthSource {
    /// Management API: ready + unacked, with rates.
    Management,
    /// AMQP passive declare: ready messages only, no rates.
    AmqpPassive,
}

/// What the broker says about the consumer's queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueMetrics {
    /// Ready + unacked (ready only from [`DepthSource::AmqpPassive`]).
    pub depth: u64,
    /// Messages published per second, when known.
    pub publish_rate: Option<f64>,
    /// Messages one consumer replica handles per second, when measured.
    pub per_replica_rate: Option<f64>,
    /// Where the numbers came from.
    pub source: DepthSource,
}

/// Recommendations seen recently (time since an arbitrary origin, replicas), oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    seen: VecDeque<(Duration, i32)>,
}

impl History {
    /// A history that starts by recommending `current` at `now`, so a restarted operator does
    /// not scale down before a full delay has passed.
    pub fn starting_at(now: Duration, current: i32) -> Self {
        Self {
            seen: VecDeque::from([(now, current)]),
        }
    }

    fn record(&mut self, now: Duration, desired: i32, window: Duration) {
        self.seen.push_back((now, desired));
        while self
            .seen
            .front()
            .is_some_and(|(t, _)| now.saturating_sub(*t) > window)
        {
            self.seen.pop_front();
        }
    }

    fn highest(&self) -> Option<i32> {
        self.seen.iter().map(|(_, r)| *r).max()
    }
}

/// Why the decision is what it is.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// The backlog (or latency target) calls for more replicas.
    ScaleUp,
    /// The lower recommendation held for the whole delay.
    ScaleDown,
    /// The replicas were outside `[min, max]`.
    OutOfBounds,
    /// Replicas already match the recommendation.
    Steady,
    /// The recommendation differs by no more than the tolerance.
    WithinTolerance,
    /// A lower recommendation has not held for the whole delay yet.
    Stabilizing {
        /// The highest recommendation in the window, which is kept.
        highest: i32,
    },
    /// No metrics: replicas are held.
    MetricsUnavailable(String),
}

impl Reason {
    /// A short CamelCase code for status and Event reasons.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ScaleUp => "ScaledUp",
            Self::ScaleDown => "ScaledDown",
            Self::OutOfBounds => "OutOfBounds",
            Self::Steady => "Steady",
            Self::WithinTolerance => "WithinTolerance",
            Self::Stabilizing { .. } => "Stabilizing",
            Self::MetricsUnavailable(_) => "MetricsUnavailable",
        }
    }
}

/// The outcome of one decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What the metrics call for now, clamped (the current replicas when metrics are missing).
    pub desired: i32,
    /// The replicas to set, when they should change.
    pub scale_to: Option<i32>,
    /// Why.
    pub reason: Reason,
    /// A sentence for status and Events.
    pub message: String,
}

/// Replicas the metrics call for, before clamping.
pub fn recommended(policy: &Policy, metrics: &QueueMetrics) -> i64 {
    let per_replica = u64::from(policy.messages_per_replica.max(1));
    let by_backlog = metrics.depth.div_ceil(per_replica);
    let by_latency = match (policy.drain_within, metrics.per_replica_rate) {
        (Some(within), Some(rate)) if rate > 0.0 && !within.is_zero() => {
            let needed = metrics.publish_rate.unwrap_or(0.0).max(0.0)
                + metrics.depth as f64 / within.as_secs_f64();
            (needed / rate).ceil() as u64
        }
        _ => 0,
    };
    i64::try_from(by_backlog.max(by_latency)).unwrap_or(i64::MAX)
}

/// Decides the consumer's replicas. `history` is updated with this recommendation.
pub fn decide(
    policy: &Policy,
    current: i32,
    metrics: Option<&QueueMetrics>,
    history: &mut History,
    now: Duration,
) -> Decision {
    let (min, max) = (
        policy.min_replicas,
        policy.max_replicas.max(policy.min_replicas),
    );
    let Some(metrics) = metrics else {
        let clamped = current.clamp(min, max);
        return if clamped != current {
            Decision {
                desired: clamped,
                scale_to: Some(clamped),
                reason: Reason::OutOfBounds,
                message: format!(
                    "{current} replicas is outside [{min}, {max}]; metrics unavailable"
                ),
            }
        } else {
            Decision {
                desired: current,
                scale_to: None,
                reason: Reason::MetricsUnavailable("no queue metrics".into()),
                message: format!("holding {current} replicas: no queue metrics"),
            }
        };
    };
    let raw = recommended(policy, metrics);
    let desired = raw.clamp(i64::from(min), i64::from(max)) as i32;
    history.record(now, desired, policy.scale_down_delay);
    let basis = match metrics.source {
        DepthSource::Management => format!("depth {} (ready + unacked)", metrics.depth),
        DepthSource::AmqpPassive => format!(
            "depth {} (ready only: management API unavailable)",
            metrics.depth
        ),
    };

    if current < min || current > max {
        let to = if current < min {
            desired.max(min)
        } else {
            desired.min(max)
        };
        return Decision {
            desired,
            scale_to: Some(to),
            reason: Reason::OutOfBounds,
            message: format!(
                "{current} replicas is outside [{min}, {max}]; {basis} calls for {desired}"
            ),
        };
    }
    if desired == current {
        return Decision {
            desired,
            scale_to: None,
            reason: Reason::Steady,
            message: format!("{basis} calls for {desired}"),
        };
    }
    let within_tolerance =
        current > 0 && f64::from((desired - current).abs()) / f64::from(current) <= TOLERANCE;
    if desired > current {
        if within_tolerance {
            return Decision {
                desired,
                scale_to: None,
                reason: Reason::WithinTolerance,
                message: format!("{basis} calls for {desired}, within 10% of {current}"),
            };
        }
        return Decision {
            desired,
            scale_to: Some(desired),
            reason: Reason::ScaleUp,
            message: format!("{basis} calls for {desired} (was {current})"),
        };
    }
    let highest = history.highest().unwrap_or(desired).clamp(min, max);
    let target = highest.max(desired);
    if target >= current {
        return Decision {
            desired,
            scale_to: None,
            reason: Reason::Stabilizing { highest },
            message: format!(
                "{basis} calls for {desired}; keeping {current} until the lower value holds for {}s",
                policy.scale_down_delay.as_secs()
            ),
        };
    }
    let within_tolerance = f64::from(current - target) / f64::from(current) <= TOLERANCE;
    if within_tolerance {
        return Decision {
            desired,
            scale_to: None,
            reason: Reason::WithinTolerance,
            message: format!("{basis} calls for {target}, within 10% of {current}"),
        };
    }
    Decision {
        desired,
        scale_to: Some(target),
        reason: Reason::ScaleDown,
        message: format!(
            "{basis} has called for at most {target} over the last {}s (was {current})",
            policy.scale_down_delay.as_secs()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            min_replicas: 1,
            max_replicas: 10,
            messages_per_replica: 100,
            drain_within: None,
            scale_down_delay: Duration::from_secs(300),
        }
    }

    fn depth(n: u64) -> QueueMetrics {
        QueueMetrics {
            depth: n,
            publish_rate: None,
            per_replica_rate: None,
            source: DepthSource::Management,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn backlog_sizing_is_the_ceiling_clamped_to_the_bounds() {
        // (depth, current, expected scale_to)
        let table: &[(u64, i32, Option<i32>)] = &[
            (0, 1, None),         // min holds
            (1, 1, None),         // ceil(1/100) = 1
            (100, 1, None),       // exactly one replica's worth
            (101, 1, Some(2)),    // ceil rounds up
            (5_000, 1, Some(10)), // 50 clamped to max
            (950, 1, Some(10)),
            (450, 2, Some(5)),
        ];
        for &(d, current, expected) in table {
            let mut h = History::default();
            let got = decide(&policy(), current, Some(&depth(d)), &mut h, secs(0));
            assert_eq!(
                got.scale_to, expected,
                "depth {d}, current {current}: {got:?}"
            );
        }
    }

    #[test]
    fn scale_up_happens_at_once() {
        let mut h = History::starting_at(secs(0), 1);
        let d = decide(&policy(), 1, Some(&depth(5_000)), &mut h, secs(1));
        assert_eq!((d.scale_to, d.reason.code()), (Some(10), "ScaledUp"));
    }

    #[test]
    fn scale_down_waits_for_the_stabilization_window() {
        let p = policy();
        let mut h = History::starting_at(secs(0), 1);
        assert_eq!(
            decide(&p, 1, Some(&depth(1_000)), &mut h, secs(0)).scale_to,
            Some(10)
        );
        // The queue drains at t=10 s: nothing happens for 300 s after the last high value.
        for t in [10, 60, 200, 300] {
            let d = decide(&p, 10, Some(&depth(0)), &mut h, secs(t));
            assert_eq!(d.scale_to, None, "t={t}: {d:?}");
            assert_eq!(d.reason, Reason::Stabilizing { highest: 10 });
        }
        let d = decide(&p, 10, Some(&depth(0)), &mut h, secs(301));
        assert_eq!((d.scale_to, d.reason.code()), (Some(1), "ScaledDown"));
    }

    #[test]
    fn scale_down_goes_only_to_the_highest_value_seen_in_the_window() {
        let p = policy();
        let mut h = History::starting_at(secs(0), 10);
        decide(&p, 10, Some(&depth(600)), &mut h, secs(100)); // 6
        decide(&p, 10, Some(&depth(300)), &mut h, secs(200)); // 3
        let d = decide(&p, 10, Some(&depth(0)), &mut h, secs(350));
        // 10 (t=0) left the window; 6 (t=100) is still in it.
        assert_eq!((d.scale_to, d.reason.code()), (Some(6), "ScaledDown"));
    }

    #[test]
    fn a_restarted_operator_does_not_scale_down_before_a_full_delay() {
        let mut h = History::starting_at(secs(1_000), 8);
        let d = decide(&policy(), 8, Some(&depth(0)), &mut h, secs(1_010));
        assert_eq!(d.scale_to, None);
        let d = decide(&policy(), 8, Some(&depth(0)), &mut h, secs(1_301));
        assert_eq!(d.scale_to, Some(1));
    }

    #[test]
    fn changes_within_ten_percent_are_ignored() {
        let p = Policy {
            max_replicas: 50,
            ..policy()
        };
        let mut h = History::default();
        let d = decide(&p, 20, Some(&depth(2_150)), &mut h, secs(0)); // 22 vs 20: 10 %
        assert_eq!((d.scale_to, d.reason.code()), (None, "WithinTolerance"));
        let d = decide(&p, 20, Some(&depth(2_250)), &mut h, secs(0)); // 23 vs 20: 15 %
        assert_eq!(d.scale_to, Some(23));
        let mut h = History::default();
        let d = decide(&p, 20, Some(&depth(1_850)), &mut h, secs(0)); // 19 vs 20: 5 %
        assert_eq!((d.scale_to, d.reason.code()), (None, "WithinTolerance"));
    }

    #[test]
    fn never_below_min_nor_above_max_even_within_tolerance() {
        let p = Policy {
            min_replicas: 3,
            max_replicas: 5,
            ..policy()
        };
        let mut h = History::default();
        assert_eq!(
            decide(&p, 1, Some(&depth(0)), &mut h, secs(0)).scale_to,
            Some(3)
        );
        assert_eq!(
            decide(&p, 9, Some(&depth(10_000)), &mut h, secs(0)).scale_to,
            Some(5)
        );
        assert_eq!(decide(&p, 9, None, &mut h, secs(0)).scale_to, Some(5));
    }

    #[test]
    fn missing_metrics_hold_the_current_replicas_and_say_why() {
        let mut h = History::default();
        let d = decide(&policy(), 4, None, &mut h, secs(0));
        assert_eq!(
            (d.desired, d.scale_to, d.reason.code()),
            (4, None, "MetricsUnavailable")
        );
        assert!(d.message.contains("no queue metrics"), "{}", d.message);
    }

    #[test]
    fn the_drain_target_sizes_for_publish_rate_plus_backlog_over_time() {
        let p = Policy {
            drain_within: Some(secs(10)),
            max_replicas: 100,
            ..policy()
        };
        // (50/s + 1000/10 s) / 20 per replica = 7.5 -> 8; backlog alone says 10.
        let m = QueueMetrics {
            depth: 1_000,
            publish_rate: Some(50.0),
            per_replica_rate: Some(20.0),
            source: DepthSource::Management,
        };
        assert_eq!(recommended(&p, &m), 10);
        // A faster stream: (400/s + 1000/10 s) / 20 = 25 replicas.
        let m = QueueMetrics {
            publish_rate: Some(400.0),
            ..m
        };
        assert_eq!(recommended(&p, &m), 25);
        // Unknown per-replica rate: backlog sizing only.
        let m = QueueMetrics {
            per_replica_rate: None,
            ..m
        };
        assert_eq!(recommended(&p, &m), 10);
    }

    #[test]
    fn amqp_fallback_depth_is_labelled_ready_only() {
        let m = QueueMetrics {
            depth: 500,
            publish_rate: None,
            per_replica_rate: None,
            source: DepthSource::AmqpPassive,
        };
        let d = decide(&policy(), 1, Some(&m), &mut History::default(), secs(0));
        assert_eq!(d.scale_to, Some(5));
        assert!(d.message.contains("ready only"), "{}", d.message);
    }

    #[test]
    fn a_sawtooth_load_does_not_flap() {
        // Backlog alternates between 900 and 100 every 10 s for 10 minutes.
        let p = policy();
        let mut h = History::starting_at(secs(0), 1);
        let mut current = 1;
        let mut changes = 0;
        for step in 0..60u64 {
            let d = if step % 2 == 0 {
                depth(900)
            } else {
                depth(100)
            };
            let decision = decide(&p, current, Some(&d), &mut h, secs(step * 10));
            if let Some(to) = decision.scale_to {
                current = to;
                changes += 1;
            }
        }
        assert_eq!((changes, current), (1, 9), "one scale-up to 9, then steady");
    }
}
