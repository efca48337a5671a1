//! The demo's settings: flags with environment fallbacks (`scripts/demo.sh` sets them).
use std::path::PathBuf;
use std::time::Duration;

/// Settings of one demo run.
#[derive(Clone, clap::Parser)]
#[command(
    name = "swappo-demo",
    about = "Drives trade offers through the operator, broker and services running as pods on the real node, shows what happens, drills outages and accounts for every event"
)]
pub struct Config {
    /// Seconds of load before the unattended summary (at least until the outage drill has
    /// recovered); without it the demo runs until Ctrl-C.
    #[arg(long, env = "DEMO_DURATION")]
    pub duration: Option<u64>,

    /// Seconds to wait, after the load stops, for the outbox and the queue to drain.
    #[arg(long, env = "DEMO_DRAIN_SECONDS", default_value_t = 90)]
    pub drain_seconds: u64,

    /// Outage drill, each fault once its predecessor recovered: the broker pod deleted, a
    /// consumer pod's process killed mid-batch, the database restarted. On by default
    /// (`DEMO_OUTAGE=false` turns it off).
    #[arg(long, env = "DEMO_OUTAGE", default_value_t = true, action = clap::ArgAction::Set)]
    pub outage: bool,

    /// Namespace of the demo: the operator, the SwappoMessaging, the services.
    #[arg(long, env = "DEMO_NAMESPACE", default_value = "swappo-demo", value_parser = dns_label)]
    pub namespace: String,

    /// Name of the SwappoMessaging.
    #[arg(long, env = "DEMO_NAME", default_value = "swappo")]
    pub name: String,

    /// The broker credentials Secret (the resource's `status.broker.secretName`).
    #[arg(long, env = "DEMO_SECRET")]
    pub secret: String,

    /// The consumer Deployment the operator scales (the services chart's notifications name).
    #[arg(long, env = "DEMO_DEPLOYMENT", default_value = "notifications-service")]
    pub deployment: String,

    /// The matchmaking Deployment (the services chart's matchmaking name).
    #[arg(long, env = "DEMO_MATCHMAKING", default_value = "matchmaking-service")]
    pub matchmaking: String,

    /// The queue (vhost `/`, where the operator declares and measures it).
    #[arg(long, env = "DEMO_QUEUE", default_value = "notifications_queue")]
    pub queue: String,

    /// Concurrent load workers (each makes one offer and its status changes at a time).
    #[arg(long, env = "DEMO_WORKERS", default_value_t = 16)]
    pub workers: usize,

    /// Users of the demo marketplace.
    #[arg(long, env = "DEMO_USERS", default_value_t = 50)]
    pub users: u32,

    /// Where the demo keeps its state (the database server's directory, logs).
    #[arg(long, env = "DEMO_STATE_DIR")]
    pub state_dir: PathBuf,

    /// Admin URL of the demo's PostgreSQL on loopback; the services' databases
    /// (`<namespace>_matchmaking`, `<namespace>_notifications`) live on the same server.
    #[arg(long, env = "DEMO_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// The data directory of the demo's PostgreSQL (the drill restarts that server).
    #[arg(long, env = "DEMO_PG_DATA")]
    pub pg_data: PathBuf,

    /// Directory of PostgreSQL's server binaries (`pg_ctl`).
    #[arg(
        long,
        env = "DEMO_PG_BIN_DIR",
        default_value = "/usr/lib/postgresql/15/bin"
    )]
    pub pg_bin_dir: PathBuf,

    /// `crictl` of the real node (the drill kills a consumer's container through it).
    #[arg(long, env = "DEMO_CRICTL")]
    pub crictl: PathBuf,

    /// The real node's containerd socket.
    #[arg(long, env = "DEMO_CONTAINERD_SOCK")]
    pub containerd_sock: PathBuf,

    /// When `make demo` started (Unix seconds): the view shows how long start-up took.
    #[arg(long, env = "DEMO_STARTED_AT")]
    pub started_at: Option<u64>,

    /// Kubeconfig of the local control plane.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
}

impl Config {
    /// The unattended duration, if any.
    pub fn duration(&self) -> Option<Duration> {
        self.duration.map(Duration::from_secs)
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("duration", &self.duration)
            .field("outage", &self.outage)
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("secret", &self.secret)
            .field("deployment", &self.deployment)
            .field("matchmaking", &self.matchmaking)
            .field("queue", &self.queue)
            .field("workers", &self.workers)
            .field("state_dir", &self.state_dir)
            .field("pg_data", &self.pg_data)
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

    /// The flags without a default (the database URL is added by each test).
    const REQUIRED: [&str; 7] = [
        "swappo-demo",
        "--secret=swappo-rabbitmq",
        "--state-dir=/s",
        "--pg-data=/s/postgres/data",
        "--crictl=/b/crictl",
        "--containerd-sock=/run/c.sock",
        "--kubeconfig=/k",
    ];

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
        let parse = |ns: &str| {
            let mut args = REQUIRED.to_vec();
            args.push("--database-url=postgres://h/d");
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
    fn debug_output_never_shows_the_database_password() {
        use clap::Parser;
        let mut args = REQUIRED.to_vec();
        args.push("--database-url=postgres://u:dbsecret@h/d");
        let c = Config::try_parse_from(args).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("dbsecret"), "{shown}");
    }
}
