//! What the consumer's integration tests share: the service's configuration for a test
//! database and broker vhost. Each test file states only the settings it changes.
use swappo_notifications::config::{Config, LogFormat, QueueType};

/// The service configured for `database_url` and `amqp_url`, consuming `queue` (a quorum queue
/// it declares itself), with the production batch settings and the API on a free port.
pub fn service_config(database_url: &str, amqp_url: &str, queue: &str) -> Config {
    Config {
        database_url: database_url.to_string(),
        db_max_connections: 4,
        db_acquire_timeout_secs: 1,
        rabbitmq_url: Some(amqp_url.to_string()),
        rabbitmq_host: "unused".into(),
        rabbitmq_port: 5672,
        rabbitmq_user: "unused".into(),
        rabbitmq_password: "unused".into(),
        rabbitmq_vhost: "/".into(),
        queue: queue.into(),
        queue_type: QueueType::Quorum,
        declare_queue: true,
        max_deliveries: 5,
        prefetch: 100,
        batch_size: 100,
        batch_linger_ms: 20,
        notification_retention_days: 365,
        tombstone_retention_days: 90,
        bind_addr: "127.0.0.1:0".parse().unwrap(),
        cors_allowed_origins: vec!["*".into()],
        log_format: LogFormat::Text,
    }
}
