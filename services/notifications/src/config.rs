//! Configuration: command-line flags with environment fallbacks, named like the environment
//! variables the Kubernetes manifests set. `Debug` redacts every password.
use std::net::SocketAddr;
use std::time::Duration;

/// Which queue type the service declares (when `DECLARE_QUEUE` is on) and consumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueType {
    /// Replicated, with the broker counting deliveries (`x-delivery-limit`).
    Quorum,
    /// A single-node queue; the consumer counts deliveries.
    Classic,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The notifications service's settings.
#[derive(Clone, clap::Parser)]
#[command(
    name = "swappo-notifications",
    version,
    about = "Stores notification events and serves them over HTTP"
)]
pub struct Config {
    /// PostgreSQL URL of the notifications database.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,

    /// Most database connections: one per in-flight batch plus the API's queries.
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 8)]
    pub db_max_connections: u32,

    /// Seconds a batch or request waits for a database connection before failing; a batch
    /// that fails is redelivered, so this only bounds how fast an outage is noticed.
    #[arg(long, env = "DB_ACQUIRE_TIMEOUT_SECS", default_value_t = 3)]
    pub db_acquire_timeout_secs: u64,

    /// Full AMQP URL; when set, the RABBITMQ_HOST/PORT/USER/PASSWORD/VHOST parts are ignored.
    #[arg(long, env = "RABBITMQ_URL")]
    pub rabbitmq_url: Option<String>,

    /// Broker host.
    #[arg(long, env = "RABBITMQ_HOST", default_value = "localhost")]
    pub rabbitmq_host: String,

    /// Broker AMQP port.
    #[arg(long, env = "RABBITMQ_PORT", default_value_t = 5672)]
    pub rabbitmq_port: u16,

    /// Broker user.
    #[arg(long, env = "RABBITMQ_USER", default_value = "guest")]
    pub rabbitmq_user: String,

    /// Broker password (from the operator's Secret in Kubernetes).
    #[arg(
        long,
        env = "RABBITMQ_PASSWORD",
        default_value = "guest",
        hide_env_values = true
    )]
    pub rabbitmq_password: String,

    /// Broker virtual host.
    #[arg(long, env = "RABBITMQ_VHOST", default_value = "/")]
    pub rabbitmq_vhost: String,

    /// Queue to consume.
    #[arg(long, env = "QUEUE_NAME", default_value = "notifications_queue")]
    pub queue: String,

    /// Type of the queue.
    #[arg(long, env = "QUEUE_TYPE", value_enum, default_value_t = QueueType::Quorum)]
    pub queue_type: QueueType,

    /// Declare the queue and its dead-letter exchange/queue at start-up (idempotent). The
    /// operator declares them in Kubernetes; this keeps a local run self-contained.
    #[arg(long, env = "DECLARE_QUEUE", default_value_t = true, action = clap::ArgAction::Set)]
    pub declare_queue: bool,

    /// Times storing one message may be refused (a value the database rejects) before it
    /// goes to the dead-letter queue. A quorum queue's broker-side limit adds headroom for
    /// reconnects on top (see swappo-messaging's `SESSION_END_HEADROOM`).
    #[arg(long, env = "MAX_DELIVERIES", default_value_t = 5)]
    pub max_deliveries: u32,

    /// Unacknowledged messages the broker may push ahead: one batch. Every unacked message is
    /// handed back, and counted against the queue's delivery limit, when the consumer's
    /// session ends (lost connection, restart, the broker's consumer timeout): a second,
    /// prefetched batch would spend a delivery at every reconnect without being looked at.
    #[arg(long, env = "PREFETCH", default_value_t = 100)]
    pub prefetch: u16,

    /// Events per insert and per multiple-ack. 100 rows of a few hundred bytes make one
    /// insert of some tens of kilobytes: past that, bigger batches gain little.
    #[arg(long, env = "BATCH_SIZE", default_value_t = 100)]
    pub batch_size: usize,

    /// Milliseconds a partial batch waits for more events before it is stored anyway: the
    /// most latency batching adds when the queue is nearly idle.
    #[arg(long, env = "BATCH_LINGER_MS", default_value_t = 20)]
    pub batch_linger_ms: u64,

    /// Days a notification is kept after it was stored; older ones are purged hourly.
    /// 0 keeps them forever.
    #[arg(long, env = "NOTIFICATION_RETENTION_DAYS", default_value_t = 365)]
    pub notification_retention_days: u32,

    /// Days the tombstone of a deleted notification is kept: as long as a late copy of its
    /// event may still arrive (a dead letter redriven, a relay's duplicate), it is not
    /// stored again. 0 keeps them forever.
    #[arg(long, env = "TOMBSTONE_RETENTION_DAYS", default_value_t = 90)]
    pub tombstone_retention_days: u32,

    /// Address of the HTTP server (API, /health, /ready, /metrics).
    #[arg(long, env = "BIND_ADDR", default_value = "0.0.0.0:8080")]
    pub bind_addr: SocketAddr,

    /// Origins a browser may call the API from, comma-separated
    /// (`https://app.example.com,https://admin.example.com`); `*` allows every origin, as
    /// the original service did.
    #[arg(
        long,
        env = "CORS_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub cors_allowed_origins: Vec<String>,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid setting {setting}: {reason}")]
pub struct ConfigError {
    /// The environment variable's name.
    pub setting: &'static str,
    /// Why.
    pub reason: String,
}

impl Config {
    /// Checks the relations between settings that clap cannot.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |setting, reason: String| Err(ConfigError { setting, reason });
        if self.batch_size == 0 {
            return bad("BATCH_SIZE", "must be at least 1".into());
        }
        if self.prefetch == 0 || usize::from(self.prefetch) < self.batch_size {
            return bad(
                "PREFETCH",
                format!(
                    "must be at least BATCH_SIZE ({}), or batches never fill; got {}",
                    self.batch_size, self.prefetch
                ),
            );
        }
        if self.db_max_connections == 0 {
            return bad("DB_MAX_CONNECTIONS", "must be at least 1".into());
        }
        if self.max_deliveries == 0 {
            return bad("MAX_DELIVERIES", "must be at least 1".into());
        }
        Ok(())
    }

    /// How long a partial batch waits.
    pub fn batch_linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_ms)
    }

    /// How long notifications and tombstones are kept (`None`: forever).
    pub fn retention(&self) -> (Option<Duration>, Option<Duration>) {
        let days = |d: u32| (d > 0).then(|| Duration::from_secs(u64::from(d) * 24 * 3600));
        (
            days(self.notification_retention_days),
            days(self.tombstone_retention_days),
        )
    }

    /// How long a database connection is waited for.
    pub fn db_acquire_timeout(&self) -> Duration {
        Duration::from_secs(self.db_acquire_timeout_secs)
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("db_max_connections", &self.db_max_connections)
            .field("db_acquire_timeout_secs", &self.db_acquire_timeout_secs)
            .field(
                "notification_retention_days",
                &self.notification_retention_days,
            )
            .field("tombstone_retention_days", &self.tombstone_retention_days)
            .field(
                "rabbitmq_url",
                &self.rabbitmq_url.as_deref().map(redact_url),
            )
            .field("rabbitmq_host", &self.rabbitmq_host)
            .field("rabbitmq_port", &self.rabbitmq_port)
            .field("rabbitmq_user", &self.rabbitmq_user)
            .field("rabbitmq_password", &"<redacted>")
            .field("rabbitmq_vhost", &self.rabbitmq_vhost)
            .field("queue", &self.queue)
            .field("queue_type", &self.queue_type)
            .field("declare_queue", &self.declare_queue)
            .field("max_deliveries", &self.max_deliveries)
            .field("prefetch", &self.prefetch)
            .field("batch_size", &self.batch_size)
            .field("batch_linger_ms", &self.batch_linger_ms)
            .field("bind_addr", &self.bind_addr)
            .field("cors_allowed_origins", &self.cors_allowed_origins)
            .field("log_format", &self.log_format)
            .finish()
    }
}

/// `scheme://user:secret@host/...` with the secret replaced; other URLs unchanged.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:<redacted>{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Config {
        let mut argv = vec![
            "swappo-notifications",
            "--database-url",
            "postgres://u:dbpass@db/n",
        ];
        argv.extend_from_slice(args);
        Config::try_parse_from(argv).expect("parses")
    }

    #[test]
    fn defaults_are_a_working_configuration() {
        let c = parse(&[]);
        assert_eq!(
            (c.prefetch, c.batch_size, c.queue.as_str()),
            (100, 100, "notifications_queue")
        );
        assert!(c.declare_queue);
        assert_eq!(c.check(), Ok(()));
        let (rows, stones) = c.retention();
        assert_eq!(rows, Some(Duration::from_secs(365 * 24 * 3600)));
        assert_eq!(stones, Some(Duration::from_secs(90 * 24 * 3600)));
        let forever = parse(&["--notification-retention-days", "0"]);
        assert_eq!(forever.retention().0, None);
    }

    #[test]
    fn debug_output_never_shows_a_password() {
        let c = parse(&[
            "--rabbitmq-url",
            "amqp://swappo:brokerpass@mq:5672/%2f",
            "--rabbitmq-password",
            "partpass",
        ]);
        let shown = format!("{c:?}");
        for secret in ["dbpass", "brokerpass", "partpass"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(shown.contains("postgres://u:<redacted>@db/n"), "{shown}");
    }

    #[test]
    fn a_prefetch_below_the_batch_size_is_refused() {
        let c = parse(&["--prefetch", "50", "--batch-size", "100"]);
        assert_eq!(c.check().unwrap_err().setting, "PREFETCH");
    }

    #[test]
    fn urls_without_a_password_are_left_alone() {
        assert_eq!(redact_url("postgres://db/n"), "postgres://db/n");
        assert_eq!(redact_url("postgres://u@db/n"), "postgres://u@db/n");
        assert_eq!(
            redact_url("amqp://a:b@h/v?x=@"),
            "amqp://a:<redacted>@h/v?x=@"
        );
    }
}
