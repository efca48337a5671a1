//! Command-line flags, each with an environment variable of the same meaning (the names the
//! chart's manifests set).
use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The operator's configuration.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "swappo-operator",
    version,
    about = "Reconciles SwappoMessaging resources"
)]
pub struct Config {
    /// Kubeconfig file; without it the in-cluster ServiceAccount (or `~/.kube/config`) is used.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Watch only this namespace; all namespaces when unset.
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,

    /// Address of the HTTP server for `/metrics`, `/healthz` and `/readyz`.
    #[arg(
        long,
        env = "SWAPPO_OPERATOR_HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub http_addr: SocketAddr,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info,kube=warn,lapin=warn")]
    pub log_filter: String,

    /// DEVELOPMENT ONLY: dial this `host:port` for the AMQP login behind `BrokerReady`
    /// instead of the broker's in-cluster Service. The tests point it at a local RabbitMQ,
    /// because pods on a control plane without kubelet (kwok) only pretend to run. The
    /// Secret and status still name the real endpoint.
    #[arg(long, env = "SWAPPO_BROKER_ADDRESS_OVERRIDE")]
    pub broker_address_override: Option<String>,

    /// Seconds an AMQP login may take before the broker counts as not answering.
    #[arg(long, env = "SWAPPO_AMQP_TIMEOUT_SECONDS", default_value_t = 5)]
    pub amqp_timeout_seconds: u64,

    /// Dial this management API `host:port` instead of the derived one (development only;
    /// default: the broker override's host with port 15672, else the broker endpoint).
    #[arg(long, env = "SWAPPO_MANAGEMENT_ADDRESS_OVERRIDE")]
    pub management_address_override: Option<String>,

    /// Seconds between autoscaler polls of queue depth. 2 s: the management API refreshes
    /// its queue counts every 5 s (collect_statistics_interval), so a 2 s poll sees a new
    /// backlog within ~2 s of the broker reporting it (scale-up well under the 5 s target)
    /// while costing one HTTP GET per queue per poll.
    #[arg(long, env = "SWAPPO_AUTOSCALE_INTERVAL_SECONDS", default_value_t = 2)]
    pub autoscale_interval_seconds: u64,

    /// Seconds between checks of a ready broker (a broker going down shows within this).
    #[arg(long, env = "SWAPPO_RECHECK_SECONDS", default_value_t = 60)]
    pub recheck_seconds: u64,

    /// Seconds between checks while the broker is not ready.
    #[arg(long, env = "SWAPPO_RETRY_SECONDS", default_value_t = 10)]
    pub retry_seconds: u64,

    /// Reconciles run at once. Bounds the API calls and AMQP logins in flight when many
    /// resources are queued together (start-up, a re-list); 16 keeps a 2-core API server
    /// responsive while 1000 objects are worked through.
    #[arg(long, env = "SWAPPO_MAX_CONCURRENT_RECONCILES", default_value_t = 16)]
    pub max_concurrent_reconciles: u16,

    /// Elect a leader through a Lease, so only one replica reconciles.
    #[arg(long, env = "SWAPPO_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the leader Lease.
    #[arg(long, env = "SWAPPO_LEASE_NAME", default_value = "swappo-operator")]
    pub lease_name: String,

    /// Namespace of the leader Lease (the operator's own namespace in a cluster).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// Seconds a leader's Lease stays valid without renewal: the longest a standby waits
    /// after the leader dies (client-go's default is 15).
    #[arg(long, env = "SWAPPO_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,

    /// This replica's identity in the Lease; the pod name in a cluster.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

impl Config {
    /// The AMQP login timeout.
    pub fn amqp_timeout(&self) -> Duration {
        Duration::from_secs(self.amqp_timeout_seconds.max(1))
    }

    /// The identity in the Lease: `--identity`, else `<hostname>-<pid>`.
    pub fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "swappo-operator".into());
            format!("{host}-{}", std::process::id())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_elect_a_leader_and_watch_every_namespace() {
        let c = Config::try_parse_from(["swappo-operator"]).unwrap();
        assert!(c.leader_election);
        assert_eq!(c.http_addr.port(), 8080);
        assert_eq!(c.lease_duration_seconds, 15);
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn flags_set_the_development_override_namespace_and_json_logs() {
        let c = Config::try_parse_from([
            "swappo-operator",
            "--namespace=ns1",
            "--broker-address-override=127.0.0.1:5672",
            "--log-format=json",
            "--leader-election=false",
        ])
        .unwrap();
        assert_eq!(c.namespace.as_deref(), Some("ns1"));
        assert_eq!(c.broker_address_override.as_deref(), Some("127.0.0.1:5672"));
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(!c.leader_election);
    }

    #[test]
    fn a_bad_address_is_refused_with_the_flag_named() {
        let e = Config::try_parse_from(["swappo-operator", "--http-addr=nope"]).unwrap_err();
        assert!(e.to_string().contains("--http-addr"), "{e}");
    }
}
