//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator replicas never
//! reconcile at once. kube-runtime ships no elector; this is client-go's algorithm, small:
//!
//! - A candidate takes the Lease when it is free, or when its record (holder, renew time)
//!   has not changed for `lease_duration` as measured on the candidate's own clock (so clock
//!   skew between replicas does not matter).
//! - The leader renews every `renew_interval`; if it cannot renew for `renew_deadline` it
//!   stops (the caller stops reconciling) before anyone else may take over.
//! - Every write carries the `resourceVersion` it read: of two racing candidates one gets a
//!   409 Conflict and stays a candidate.
//! - On graceful shutdown the leader clears the holder, so a standby takes over at once.
use crate::error::{Error, Result};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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
type Record = (Option<String>, Option<Timestamp>);

fn record(spec: Option<&LeaseSpec>) -> Record {
    (
        spec.and_then(|s| s.holder_identity.clone()),
        spec.and_then(|s| s.renew_time.as_ref().map(|t| t.0)),
    )
}

/// A candidate for one Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    seen: Option<(Record, Instant)>,
}

impl Elector {
    /// A candidate `identity` for Lease `namespace/name`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: Timing,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            timing,
            seen: None,
        }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// One attempt: returns whether this candidate leads afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        let what = || format!("Lease {}", self.name);
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(Error::kube(format!("get {}", what())))?;
        let now = Instant::now();
        let Some(lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(next_spec(
                    None,
                    &self.identity,
                    Timestamp::now(),
                    self.timing.lease_duration,
                )),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(Error::kube(format!("create {}", what()))(e)),
            };
        };
        let rec = record(lease.spec.as_ref());
        let since = match &self.seen {
            Some((r, at)) if *r == rec => *at,
            _ => {
                self.seen = Some((rec, now));
                now
            }
        };
        match verdict(
            lease.spec.as_ref(),
            &self.identity,
            now - since,
            self.timing.lease_duration,
        ) {
            Verdict::Held { .. } => Ok(false),
            Verdict::Renew | Verdict::Acquire => {
                let mut next = lease.clone();
                next.spec = Some(next_spec(
                    lease.spec.as_ref(),
                    &self.identity,
                    Timestamp::now(),
                    self.timing.lease_duration,
                ));
                // `replace` sends the resourceVersion read above: a racing writer gets 409.
                match self
                    .api
                    .replace(&self.name, &PostParams::default(), &next)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(Error::kube(format!("update {}", what()))(e)),
                }
            }
        }
    }

    /// Waits until this candidate leads; `false` when `shutdown` came first.
    pub async fn acquire(&mut self, shutdown: &CancellationToken) -> bool {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(self.timing.retry_period) => {}
            }
        }
    }

    /// Renews while leading. Returns `Ok` when `shutdown` is cancelled, and
    /// [`Error::LostLeadership`] when renewals failed for the renew deadline or someone else
    /// holds the Lease.
    pub async fn hold(&mut self, shutdown: &CancellationToken) -> Result<()> {
        let mut last_renewal = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.timing.retry_period) => {}
            }
            let renewed =
                tokio::time::timeout(self.timing.renew_deadline, self.try_acquire_or_renew()).await;
            match renewed {
                Ok(Ok(true)) => last_renewal = Instant::now(),
                Ok(Ok(false)) => return Err(Error::LostLeadership(self.name.clone())),
                Ok(Err(e)) => tracing::warn!(error = %e, "renewing the leader lease failed"),
                Err(_) => tracing::warn!("renewing the leader lease timed out"),
            }
            if last_renewal.elapsed() >= self.timing.renew_deadline {
                return Err(Error::LostLeadership(self.name.clone()));
            }
        }
    }

    /// Gives the Lease up if this candidate still holds it, so a standby takes over without
    /// waiting for it to expire.
    pub async fn release(&mut self) -> Result<()> {
        let what = format!("release Lease {}", self.name);
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(Error::kube(what.clone()))?
        else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = None;
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(Error::kube(what)(e)),
        }
    }
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
