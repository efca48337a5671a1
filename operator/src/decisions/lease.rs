//! The leader election's pure decisions on a `coordination.k8s.io/v1` Lease: the timing, who
//! may take or renew the Lease ([`verdict`]) and the spec to write ([`next_spec`]). The I/O
//! around them is [`crate::leader`].
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use std::time::Duration;
/// Timing of the election. client-go's defaults: 15 s lease, 10 s deadline, 2 s retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a record stays valid without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leading.
    pub renew_deadline: Duration,
    /// How often candidates retry and the leader renews.
    pub retry_period: Duration,
}

impl Timing {
    /// Timing for a lease of `lease_duration`: deadline 2/3 of it, retry 2/15 of it (the
    /// ratios of client-go's 15/10/2 s defaults), at least 1 s each.
    pub fn for_lease(lease_duration: Duration) -> Self {
        let lease_duration = lease_duration.max(Duration::from_secs(3));
        Self {
            lease_duration,
            renew_deadline: (lease_duration * 2 / 3).max(Duration::from_secs(2)),
            retry_period: (lease_duration * 2 / 15).max(Duration::from_secs(1)),
        }
    }
}

/// What a candidate may do with the Lease as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it.
    Acquire,
    /// Someone else holds it and may still be alive.
    Held {
        /// The holder.
        holder: String,
    },
}

/// The pure decision. `unchanged_for` is how long the Lease's record has been seen
/// unchanged by this candidate.
pub fn verdict(
    spec: Option<&LeaseSpec>,
    identity: &str,
    unchanged_for: Duration,
    lease_duration: Duration,
) -> Verdict {
    let holder = spec
        .and_then(|s| s.holder_identity.as_deref())
        .unwrap_or("");
    if holder == identity {
        Verdict::Renew
    } else if holder.is_empty() || unchanged_for >= lease_duration {
        Verdict::Acquire
    } else {
        Verdict::Held {
            holder: holder.to_owned(),
        }
    }
}

/// The spec to write when `identity` acquires or renews `old` at `now`.
pub fn next_spec(
    old: Option<&LeaseSpec>,
    identity: &str,
    now: Timestamp,
    lease_duration: Duration,
) -> LeaseSpec {
    let holder = old.and_then(|s| s.holder_identity.as_deref()).unwrap_or("");
    let renewing = holder == identity;
    let transitions = old.and_then(|s| s.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        lease_duration_seconds: Some(lease_duration.as_secs().try_into().unwrap_or(i32::MAX)),
        acquire_time: if renewing {
            old.and_then(|s| s.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if renewing || holder.is_empty() {
            transitions
        } else {
            transitions + 1
        }),
        ..LeaseSpec::default()
    }
}

/// The record a candidate watches for change: holder and renew time.
pub type Record = (Option<String>, Option<Timestamp>);

/// The record of `spec` (holder, renew time).
pub fn record(spec: Option<&LeaseSpec>) -> Record {
    (
        spec.and_then(|s| s.holder_identity.clone()),
        spec.and_then(|s| s.renew_time.as_ref().map(|t| t.0)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    fn held_by(holder: &str) -> LeaseSpec {
        next_spec(
            None,
            holder,
            Timestamp::from_second(1_800_000_000).unwrap(),
            LEASE,
        )
    }

    #[test]
    fn a_free_lease_is_taken() {
        assert_eq!(verdict(None, "me", Duration::ZERO, LEASE), Verdict::Acquire);
        let released = LeaseSpec {
            holder_identity: None,
            ..held_by("other")
        };
        assert_eq!(
            verdict(Some(&released), "me", Duration::ZERO, LEASE),
            Verdict::Acquire
        );
    }

    #[test]
    fn a_live_holder_keeps_the_lease_until_its_record_is_stale_for_the_lease_duration() {
        let spec = held_by("other");
        let held = Verdict::Held {
            holder: "other".into(),
        };
        assert_eq!(
            verdict(Some(&spec), "me", Duration::from_secs(14), LEASE),
            held
        );
        assert_eq!(
            verdict(Some(&spec), "me", Duration::from_secs(15), LEASE),
            Verdict::Acquire
        );
    }

    #[test]
    fn the_holder_renews_its_own_lease() {
        let spec = held_by("me");
        assert_eq!(
            verdict(Some(&spec), "me", Duration::from_secs(60), LEASE),
            Verdict::Renew
        );
    }

    #[test]
    fn renewing_keeps_the_acquire_time_and_taking_over_counts_a_transition() {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let t1 = Timestamp::from_second(1_800_000_010).unwrap();
        let mine = next_spec(None, "me", t0, LEASE);
        assert_eq!(mine.lease_transitions, Some(0));
        let renewed = next_spec(Some(&mine), "me", t1, LEASE);
        assert_eq!(renewed.acquire_time, Some(MicroTime(t0)));
        assert_eq!(renewed.renew_time, Some(MicroTime(t1)));
        assert_eq!(renewed.lease_transitions, Some(0));
        let taken = next_spec(Some(&renewed), "other", t1, LEASE);
        assert_eq!(taken.holder_identity.as_deref(), Some("other"));
        assert_eq!(taken.acquire_time, Some(MicroTime(t1)));
        assert_eq!(taken.lease_transitions, Some(1));
        assert_eq!(taken.lease_duration_seconds, Some(15));
    }

    #[test]
    fn timing_follows_client_go_ratios() {
        let t = Timing::for_lease(Duration::from_secs(15));
        assert_eq!(t.renew_deadline, Duration::from_secs(10));
        assert_eq!(t.retry_period, Duration::from_secs(2));
        let short = Timing::for_lease(Duration::from_secs(1));
        assert!(short.lease_duration >= Duration::from_secs(3));
        assert!(short.renew_deadline < short.lease_duration);
    }
}
