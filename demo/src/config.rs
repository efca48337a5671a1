//! The demo's settings: flags with environment fallbacks (`scripts/demo.sh` sets them).
use std::path::PathBuf;
use std::time::Duration;

/// Settings of one demo run.
#[derive(Clone, clap::Parser)]
#[command(
    name = "swappo-demo",
    about = "Runs the operator and both services locally, drives offers through them, shows what happens"
)]
pub struct Config {
    /// Seconds of load before the unattended summary; without it the demo runs until Ctrl-C.
    #[arg(long, env = "DEMO_DURATION")]
    pub duration: Option<u64>,

    /// Seconds to wait, after the load stops, for the outbox and the queue to drain.
    #[arg(long, env = "DEMO_DRAIN_SECONDS", default_value_t = 90)]
    pub drain_seconds: u64,

    /// Outage drill: 30 s into the load (mid-burst), close every broker connection of the
    /// services, as a broker restart would; they reconnect and the account must still balance.
    /// On by default (`DEMO_OUTAGE=false` turns it off).
    #[arg(long, env = "DEMO_OUTAGE", default_value_t = true, action = clap::ArgAction::Set)]
    pub outage: bool,

    /// Namespace of the demo's SwappoMessaging and Deployment.
    #[arg(long, env = "DEMO_NAMESPACE", default_value = "swappo-demo", value_parser = dns_label)]
    pub namespace: String,

    /// Name of the SwappoMessaging (its Secret is `<name>-rabbitmq`).
    #[arg(long, env = "DEMO_NAME", default_value = "swappo")]
    pub name: String,

    /// The consumer Deployment the operator scales.
    #[arg(long, env = "DEMO_DEPLOYMENT", default_value = "notifications-service")]
    pub deployment: String,

    /// The queue (vhost `/`, where the operator declares and measures it).
    #[arg(long, env = "DEMO_QUEUE", default_value = "notifications_queue")]
    pub queue: String,

    /// Most local consumer processes, whatever the replicas: each competes for the same cores.
    #[arg(long, env = "DEMO_MAX_CONSUMERS", default_value_t = 4)]
    pub max_consumers: usize,

    /// Concurrent load workers (each makes one offer and its status changes at a time).
    #[arg(long, env = "DEMO_WORKERS", default_value_t = 16)]
    pub workers: usize,

    /// Users of the demo marketplace.
    #[arg(long, env = "DEMO_USERS", default_value_t = 50)]
    pub users: u32,

    /// Directory of `swappo-operator`, `swappo-matchmaking`, `swappo-notifications`.
    #[arg(long, env = "DEMO_BIN_DIR")]
    pub bin_dir: PathBuf,

    /// Logs and pid files of the processes the demo starts.
    #[arg(long, env = "DEMO_STATE_DIR")]
    pub state_dir: PathBuf,

    /// First of the loopback ports: operator +0, matchmaking +1, consumer i +10+i.
    #[arg(long, env = "DEMO_PORT_BASE", default_value_t = 18080)]
    pub port_base: u16,

    /// Admin PostgreSQL URL; the demo (re)creates `swappo_demo_matchmaking` and
    /// `swappo_demo_notifications` on the same server.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// Management API of the local broker, as an administrator (creates the demo's user).
    #[arg(long, env = "RABBITMQ_MANAGEMENT_URL", hide_env_values = true)]
    pub management_url: String,

    /// AMQP `host:port` of the local broker: the operator's development override and the
    /// services' broker.
    #[arg(long, env = "DEMO_AMQP_ADDRESS", default_value = "127.0.0.1:5672")]
    pub amqp_address: String,

    /// Extra flags for `swappo-operator`, space-separated (for example a development override
    /// the operator gains later); never secrets, they show in `ps`.
    #[arg(long, env = "DEMO_OPERATOR_ARGS", default_value = "")]
    pub operator_args: String,

    /// Kubeconfig of the local control plane.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
}

impl Config {
    /// The unattended duration, if any.
    pub fn duration(&self) -> Option<Duration> {
        self.duration.map(Duration::from_secs)
    }

    /// Loopback address of port `base + offset`.
    pub fn addr(&self, offset: u16) -> String {
        format!("127.0.0.1:{}", self.port_base + offset)
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("duration", &self.duration)
            .field("outage", &self.outage)
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("deployment", &self.deployment)
            .field("queue", &self.queue)
            .field("max_consumers", &self.max_consumers)
            .field("workers", &self.workers)
            .field("bin_dir", &self.bin_dir)
            .field("state_dir", &self.state_dir)
            .field("port_base", &self.port_base)
            .field("amqp_address", &self.amqp_address)
            .field("operator_args", &self.operator_args)
            .finish_non_exhaustive()
    }
}

/// A Kubernetes namespace name (RFC 1123 label); it also names the demo's databases.
fn dns_label(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(s.to_string())
    } else {
        Err("must be lowercase letters, digits and '-', at most 63, not starting or ending with '-'".into())
    }
}

/// `url` with its path replaced by `/<database>` (same server and login).
pub fn database_url(admin: &str, database: &str) -> Result<String, NotAUrl> {
    let mut url = reqwest::Url::parse(admin).map_err(|_| NotAUrl("DATABASE_URL"))?;
    url.set_path(&format!("/{database}"));
    Ok(url.to_string())
}

/// `amqp://user:password@address/%2f` with user and password percent-encoded (generated
/// passwords may hold any character).
pub fn amqp_url(address: &str, user: &str, password: &str) -> String {
    format!("amqp://{}:{}@{address}/%2f", encode(user), encode(password))
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The named setting is not a URL (the value is not repeated: it may hold a password).
#[derive(Debug, thiserror::Error)]
#[error("{0} is not a URL")]
pub struct NotAUrl(pub &'static str);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_databases_live_next_to_the_admin_database() {
        assert_eq!(
            database_url("postgres://u:p@127.0.0.1:5432/swappo_test", "swappo_demo_x").unwrap(),
            "postgres://u:p@127.0.0.1:5432/swappo_demo_x"
        );
        assert!(database_url("not a url", "x").is_err());
    }

    #[test]
    fn a_namespace_that_is_not_a_dns_label_is_refused() {
        use clap::Parser;
        let base = [
            "swappo-demo",
            "--bin-dir=/b",
            "--state-dir=/s",
            "--kubeconfig=/k",
        ];
        let parse = |ns: &str| {
            let mut args = base.to_vec();
            args.extend(["--database-url=postgres://h/d", "--management-url=http://h"]);
            let ns = format!("--namespace={ns}");
            args.push(&ns);
            Config::try_parse_from(args).map(|c| c.namespace)
        };
        assert_eq!(parse("demo-1").unwrap(), "demo-1");
        for bad in ["Demo", "a;drop", "-a", ""] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("--namespace"), "{e}");
        }
    }

    #[test]
    fn generated_passwords_are_percent_encoded_in_the_amqp_url() {
        assert_eq!(
            amqp_url("127.0.0.1:5672", "u", "a/b:c@d%"),
            "amqp://u:a%2Fb%3Ac%40d%25@127.0.0.1:5672/%2f"
        );
    }

    #[test]
    fn debug_output_never_shows_the_database_or_broker_passwords() {
        use clap::Parser;
        let c = Config::try_parse_from([
            "swappo-demo",
            "--bin-dir=/b",
            "--state-dir=/s",
            "--kubeconfig=/k",
            "--database-url=postgres://u:dbsecret@h/d",
            "--management-url=http://u:mqsecret@h:15672",
        ])
        .unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("dbsecret") && !shown.contains("mqsecret"),
            "{shown}"
        );
    }
}
