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
//! - When the Lease is lost, [`crate::run`] stops every write at once
//!   ([`crate::context::Context::stop_writing`]) and drops the controller without waiting
//!   for the reconciles in flight; the process exits with an error and restarts as a
//!   candidate.
//!
//! Why not a lease crate: kube-lease-manager (0.13, on kube 5) judges expiry from the
//! holder's `renewTime` against the local clock (skew tolerated up to a setting), where this
//! elector measures how long the record stayed unchanged on its own clock (client-go's rule,
//! immune to skew); and when renewals fail its watch keeps reporting leadership while it backs
//! off, where this one steps down after the renew deadline, before a standby may take over.
//! kubert's `LeaseManager` needs the Lease created beforehand and brings kubert's runtime.
//! Neither signals a loss sooner than its next renewal, so the check before every write is
//! needed with either.
use crate::decisions::lease::{Record, Timing, Verdict, next_spec, record, verdict};
use crate::error::{Error, Result};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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
