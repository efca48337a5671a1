//! Configuration: command-line flags with environment-variable fallbacks, named like the
//! variables the Helm chart and the operator's Secret set.
use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::time::Duration;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The matchmaking service's configuration.
#[derive(Parser, Clone)]
#[command(
    name = "swappo-matchmaking",
    about = "Swappo trade offers with a transactional outbox"
)]
pub struct Config {
    /// PostgreSQL URL (`postgres://user:pass@host:5432/db`).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// Most PostgreSQL connections of this instance (HTTP handlers, relay and LISTEN share them).
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,

    /// Milliseconds a request waits for a database connection before failing with 500
    /// (default 5 s: longer than a healthy pool ever needs, shorter than client timeouts).
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_MS", default_value_t = 5000)]
    pub database_acquire_timeout_ms: u64,

    /// Address the HTTP API listens on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen_addr: SocketAddr,

    /// RabbitMQ URL (`amqp://user:pass@host:5672/%2f`). When unset, `RABBITMQ_HOST`,
    /// `RABBITMQ_PORT`, `RABBITMQ_USER`, `RABBITMQ_PASSWORD` and `RABBITMQ_VHOST` are used.
    #[arg(long, env = "RABBITMQ_URL", hide_env_values = true)]
    pub rabbitmq_url: Option<String>,

    /// Queue the notification events are published to (through the default exchange).
    #[arg(
        long,
        env = "NOTIFICATIONS_QUEUE",
        default_value = "notifications_queue"
    )]
    pub notifications_queue: String,

    /// Run the outbox relay in this instance. Every replica may run one: rows are claimed
    /// with `FOR UPDATE SKIP LOCKED`, so no two relays publish the same row.
    #[arg(long, env = "OUTBOX_RELAY", default_value_t = true, action = clap::ArgAction::Set)]
    pub outbox_relay: bool,

    /// Outbox rows published per relay round (1..=1000).
    #[arg(long, env = "OUTBOX_BATCH_SIZE", default_value_t = 100,
          value_parser = clap::value_parser!(i64).range(1..=1000))]
    pub outbox_batch_size: i64,

    /// Milliseconds between relay polls when no commit wakes it (a safety net only).
    #[arg(long, env = "OUTBOX_POLL_INTERVAL_MS", default_value_t = 5000)]
    pub outbox_poll_interval_ms: u64,

    /// Wake the relay at once on each commit (in-process, and PostgreSQL LISTEN/NOTIFY across
    /// replicas). `false`: the relay only polls every `OUTBOX_POLL_INTERVAL_MS` (for a
    /// database path without LISTEN, such as PgBouncer in transaction mode; set the poll
    /// interval to the delay you accept then).
    #[arg(long, env = "OUTBOX_WAKE_ON_COMMIT", default_value_t = true, action = clap::ArgAction::Set)]
    pub outbox_wake_on_commit: bool,

    /// Cap of the relay's retry delay while the broker is unreachable, in milliseconds.
    #[arg(long, env = "OUTBOX_MAX_BACKOFF_MS", default_value_t = 30_000)]
    pub outbox_max_backoff_ms: u64,

    /// Hours a confirmed outbox row is kept before the relay deletes it.
    #[arg(long, env = "OUTBOX_RETENTION_HOURS", default_value_t = 168)]
    pub outbox_retention_hours: u64,

    /// Origins a browser may call the API from, comma-separated; `*` allows every origin,
    /// as the original service did.
    #[arg(
        long,
        env = "CORS_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub cors_allowed_origins: Vec<String>,

    /// The catalog service's base URL (`http://catalog-service:8000`). When set, a new
    /// offer's items must exist, be active and belong to their side (404/400/403), and the
    /// create fails with 503 while the catalog does not answer. Unset: no check.
    #[arg(long, env = "CATALOG_URL")]
    pub catalog_url: Option<String>,

    /// Milliseconds one catalog lookup may take before the create fails with 503.
    #[arg(long, env = "CATALOG_TIMEOUT_MS", default_value_t = 5000)]
    pub catalog_timeout_ms: u64,

    /// The chat service's base URL (`http://chat-service:8000`). When set, accepting an
    /// offer requests a chat room for it, delivered in the background until the chat
    /// service answers. Unset: no chat rooms.
    #[arg(long, env = "CHAT_SERVICE_URL")]
    pub chat_service_url: Option<String>,

    /// Longest wait between two tries of a chat-room request, in milliseconds.
    #[arg(long, env = "CHAT_MAX_BACKOFF_MS", default_value_t = 30_000)]
    pub chat_max_backoff_ms: u64,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl Config {
    /// The relay's options from this configuration.
    pub fn relay_options(&self) -> crate::relay::RelayOptions {
        crate::relay::RelayOptions {
            batch_size: self.outbox_batch_size,
            poll_interval: Duration::from_millis(self.outbox_poll_interval_ms),
            wake_on_commit: self.outbox_wake_on_commit,
            retention: Duration::from_secs(self.outbox_retention_hours * 3600),
            ..Default::default()
        }
        .with_max_backoff(Duration::from_millis(self.outbox_max_backoff_ms))
    }
}

/// `url` with its password replaced by `***`, for logs and `Debug`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("database_max_connections", &self.database_max_connections)
            .field(
                "database_acquire_timeout_ms",
                &self.database_acquire_timeout_ms,
            )
            .field("listen_addr", &self.listen_addr)
            .field(
                "rabbitmq_url",
                &self.rabbitmq_url.as_deref().map(redact_url),
            )
            .field("notifications_queue", &self.notifications_queue)
            .field("outbox_relay", &self.outbox_relay)
            .field("outbox_batch_size", &self.outbox_batch_size)
            .field("outbox_poll_interval_ms", &self.outbox_poll_interval_ms)
            .field("outbox_wake_on_commit", &self.outbox_wake_on_commit)
            .field("outbox_max_backoff_ms", &self.outbox_max_backoff_ms)
            .field("outbox_retention_hours", &self.outbox_retention_hours)
            .field("cors_allowed_origins", &self.cors_allowed_origins)
            .field("catalog_url", &self.catalog_url.as_deref().map(redact_url))
            .field("catalog_timeout_ms", &self.catalog_timeout_ms)
            .field(
                "chat_service_url",
                &self.chat_service_url.as_deref().map(redact_url),
            )
            .field("chat_max_backoff_ms", &self.chat_max_backoff_ms)
            .field("log_format", &self.log_format)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("amqp://u:p@ss@h/%2f"), "amqp://u:***@h/%2f");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn debug_output_never_shows_a_password() {
        let c = Config::try_parse_from([
            "m",
            "--database-url",
            "postgres://u:dbsecret@h/db",
            "--rabbitmq-url",
            "amqp://u:mqsecret@h/%2f",
        ])
        .unwrap();
        let text = format!("{c:?}");
        assert!(
            !text.contains("dbsecret") && !text.contains("mqsecret"),
            "{text}"
        );
    }

    #[test]
    fn the_relay_wakes_on_commit_unless_told_to_poll_only() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["m", "--database-url", "x"];
            args.extend_from_slice(extra);
            Config::try_parse_from(args).unwrap().relay_options()
        };
        assert!(parse(&[]).wake_on_commit);
        let polling = parse(&[
            "--outbox-wake-on-commit",
            "false",
            "--outbox-poll-interval-ms",
            "50",
        ]);
        assert!(!polling.wake_on_commit);
        assert_eq!(polling.poll_interval, Duration::from_millis(50));
    }

    #[test]
    fn a_batch_size_out_of_range_is_refused() {
        let r = Config::try_parse_from(["m", "--database-url", "x", "--outbox-batch-size", "0"]);
        assert!(r.is_err());
    }
}
