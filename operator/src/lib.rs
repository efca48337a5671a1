//! The SwappoMessaging operator (DESIGN §3 to §5). The tree shows the architecture:
//!
//! - [`crd`]: the API types; [`builders`]: pure builders of every owned object;
//! - [`decisions`]: pure decisions (status, autoscale, stale ReplicaSets, diff, lease);
//! - [`broker`]: the broker client (one AMQP connect path, management API, queue topology);
//! - [`controller`]: watches, the reconcile as a list of steps, error policy, apply;
//! - [`scaler`]: the consumer autoscaler loop;
//! - [`context`]: what the controller and the scaler share (client, caches, settings);
//! - [`leader`]: leader election on a Lease; [`metrics`], [`http`], [`config`], [`telemetry`].
//!
//! `main.rs` only parses flags, sets up logging and calls [`run`].
#![forbid(unsafe_code)]

pub mod broker;
pub mod builders;
pub mod config;
pub mod context;
pub mod controller;
pub mod crd;
pub mod decisions;
pub mod error;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod scaler;
pub mod telemetry;

pub use config::Config;
pub use error::{Error, Result};

use context::{Context, Settings};
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A client from `--kubeconfig`, or the in-cluster / default configuration.
pub async fn client(config: &Config) -> Result<kube::Client> {
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| Error::Config(format!("kubeconfig {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Config(format!("kubeconfig {}: {e}", path.display())))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| Error::Config(format!("no kubeconfig and not in a cluster: {e}")))?,
    };
    kube::Client::try_from(kube_config).map_err(|e| Error::Config(format!("kube client: {e}")))
}

/// Reconciler settings from the flags.
pub fn settings(config: &Config, identity: &str) -> Result<Settings> {
    let broker_override = match &config.broker_address_override {
        None => None,
        Some(addr) => Some(broker::amqp::Target::parse(addr, false).ok_or_else(|| {
            Error::Config(format!(
                "--broker-address-override {addr:?} is not host:port"
            ))
        })?),
    };
    Ok(Settings {
        broker_override,
        amqp_timeout: config.amqp_timeout(),
        recheck: Duration::from_secs(config.recheck_seconds.max(1)),
        retry: Duration::from_secs(config.retry_seconds.max(1)),
        instance: identity.to_owned(),
        concurrency: config.max_concurrent_reconciles,
        management_override: config.management_address_override.clone(),
        autoscale_interval: Duration::from_secs(config.autoscale_interval_seconds.max(1)),
        operator_namespace: Some(config.lease_namespace.clone()),
    })
}

/// Runs the operator until `shutdown`: HTTP endpoints, leader election (unless disabled),
/// and the controller while leading. Returns [`Error::LostLeadership`] when another replica
/// took the Lease, so the process exits and restarts as a candidate.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    let identity = config.identity();
    let settings = settings(&config, &identity)?;
    let client = client(&config).await?;
    let metrics = Arc::new(metrics::Metrics::default());
    let state = http::State::new(metrics.clone());
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(Error::Http)?;
    info!(addr = %listener.local_addr().map_err(Error::Http)?, "serving /metrics, /healthz, /readyz");
    let server = tokio::spawn(http::serve(listener, state.clone(), shutdown.clone()));

    let version = client
        .apiserver_version()
        .await
        .map_err(Error::kube("ask the API server for its version"))?;
    info!(version = %version.git_version, %identity, "connected to the API server");
    state.set_ready(true);

    let mut elector = config.leader_election.then(|| {
        let timing =
            decisions::lease::Timing::for_lease(Duration::from_secs(config.lease_duration_seconds));
        leader::Elector::new(
            client.clone(),
            &config.lease_namespace,
            &config.lease_name,
            &identity,
            timing,
        )
    });
    if let Some(elector) = elector.as_mut() {
        info!(lease = %config.lease_name, namespace = %config.lease_namespace, "waiting to lead");
        if !elector.acquire(&shutdown).await {
            info!("shut down before leading");
            return server.await.map_err(|e| Error::Config(e.to_string()))?;
        }
        info!(lease = %config.lease_name, "leading: starting the controller");
    }
    metrics.leader.set(1);

    let ctx = Arc::new(Context::new(client, metrics.clone(), settings));
    let controller_stop = shutdown.child_token();
    let mut controller = std::pin::pin!(controller::run_controller(
        ctx.clone(),
        config.namespace.as_deref(),
        controller_stop.clone(),
    ));
    let held = {
        let hold = async {
            match elector.as_mut() {
                Some(elector) => elector.hold(&shutdown).await,
                None => {
                    shutdown.cancelled().await;
                    Ok(())
                }
            }
        };
        tokio::select! {
            held = hold => (held, false),
            // Stopped by itself: `shutdown` cancelled its child token.
            () = &mut controller => (Ok(()), true),
        }
    };
    let (held, controller_done) = held;
    match &held {
        // Another replica may lead now: nothing more is written (every write checks), and
        // the controller is dropped at once, reconciles and the autoscaler's pass in flight
        // with it, without waiting for them (client-go operators exit the same way).
        Err(e) => {
            ctx.stop_writing();
            warn!(error = %e, "lost the leader lease: no more writes, stopping at once");
        }
        Ok(()) => {
            controller_stop.cancel();
            if !controller_done {
                controller.await;
            }
        }
    }
    metrics.leader.set(0);
    if let Some(elector) = elector.as_mut()
        && held.is_ok()
        && let Err(e) = elector.release().await
    {
        warn!(error = %e, "could not release the leader lease");
    }
    shutdown.cancel();
    let served = server.await.map_err(|e| Error::Config(e.to_string()))?;
    held.and(served)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn a_development_override_that_is_not_host_port_is_refused_at_start() {
        let config =
            Config::try_parse_from(["swappo-operator", "--broker-address-override=localhost"])
                .unwrap();
        let e = settings(&config, "me").unwrap_err();
        assert!(e.to_string().contains("--broker-address-override"), "{e}");
        let config = Config::try_parse_from([
            "swappo-operator",
            "--broker-address-override=127.0.0.1:5672",
        ])
        .unwrap();
        let s = settings(&config, "me").unwrap();
        assert_eq!(s.broker_override.unwrap().address(), "127.0.0.1:5672");
        assert_eq!(s.instance, "me");
    }
}
