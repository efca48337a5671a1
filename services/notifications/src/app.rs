//! Start-up and shutdown: the HTTP server first (so `/health` answers at once), then the
//! schema, the queue, and the consumer; everything stops when the shutdown token fires.
use crate::config::{Config, ConfigError, QueueType};
use crate::http::{AppState, Readiness, cors, router_with_cors};
use crate::metrics::Metrics;
use crate::storage::{Storage, StorageError};
use crate::store::StoreBatch;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use swappo_messaging::{BrokerConfig, Consumer, ConsumerOptions, QueueKind, QueueSpec};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Connections of the consumer's pool: one for the batch in hand, one for the retention
/// purge beside it (the migrations run before either).
const CONSUMER_DB_CONNECTIONS: u32 = 2;
/// Longest an API statement may run: the user's list and counts take milliseconds; 5 s
/// means a lock or an overloaded server, better answered with an error than held.
const API_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a batch insert may run: 100 rows commit in milliseconds; past 30 s the insert
/// fails with SQLSTATE 57014 and the batch is waited out and retried, never dead-lettered.
const CONSUMER_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the retention purge runs: retention is counted in days.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A setting is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The broker settings are unusable.
    #[error("broker settings: {0}")]
    Broker(#[from] swappo_messaging::ConfigError),
    /// The database URL is unusable.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The HTTP address cannot be bound or served.
    #[error("HTTP server on {addr}: {source}")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The consumer stopped with an error it cannot recover from.
    #[error("consumer failed: {0}")]
    Consumer(#[from] swappo_messaging::ConsumeError),
    /// A task panicked.
    #[error("task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A running service.
pub struct Service {
    addr: SocketAddr,
    consumer: JoinHandle<Result<(), AppError>>,
    server: JoinHandle<Result<(), AppError>>,
}

impl Service {
    /// Where the HTTP server listens (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until both the consumer and the HTTP server have stopped.
    pub async fn wait(self) -> Result<(), AppError> {
        let consumer = self.consumer.await?;
        let server = self.server.await?;
        consumer.and(server)
    }
}

/// The broker settings: `RABBITMQ_URL` when given, else its parts.
pub fn broker_config(config: &Config) -> Result<BrokerConfig, AppError> {
    let broker = match &config.rabbitmq_url {
        Some(url) => BrokerConfig::from_url(url.clone())?,
        None => BrokerConfig::from_parts(
            config.rabbitmq_host.clone(),
            config.rabbitmq_port,
            config.rabbitmq_user.clone(),
            config.rabbitmq_password.clone(),
            config.rabbitmq_vhost.clone(),
        ),
    };
    Ok(broker.with_connection_name("swappo-notifications"))
}

/// The queue as the service expects it.
pub fn queue_spec(config: &Config) -> QueueSpec {
    let spec = match config.queue_type {
        QueueType::Quorum => QueueSpec::quorum(config.queue.clone()),
        QueueType::Classic => QueueSpec::classic(config.queue.clone()),
    };
    spec.with_max_deliveries(config.max_deliveries)
}

/// The consumer's settings.
pub fn consumer_options(config: &Config) -> ConsumerOptions {
    let kind = match config.queue_type {
        QueueType::Quorum => QueueKind::Quorum,
        QueueType::Classic => QueueKind::Classic,
    };
    let mut options = ConsumerOptions::new(config.queue.clone(), kind);
    options.prefetch = config.prefetch;
    options.batch_size = config.batch_size;
    options.batch_linger = config.batch_linger();
    options.max_deliveries = config.max_deliveries;
    options.consumer_tag = format!("swappo-notifications-{}", std::process::id());
    options
}

/// Starts the service; it runs until `shutdown` is cancelled, then finishes the batch in
/// hand, acks it, and stops.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Service, AppError> {
    config.check()?;
    let cors = cors::layer(&config.cors_allowed_origins).map_err(|e| ConfigError {
        setting: "CORS_ALLOWED_ORIGINS",
        reason: e.to_string(),
    })?;
    let broker = broker_config(&config)?;
    // Two pools: API load must not stall consumption, and a consumer waiting out a
    // database failure must not take the API's connections (or its readiness) with it.
    let storage = Storage::connect_lazy_bounded(
        &config.database_url,
        config.db_max_connections,
        config.db_acquire_timeout(),
        API_STATEMENT_TIMEOUT,
    )?;
    let consumer_storage = Storage::connect_lazy_bounded(
        &config.database_url,
        CONSUMER_DB_CONNECTIONS,
        config.db_acquire_timeout(),
        CONSUMER_STATEMENT_TIMEOUT,
    )?;
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());

    let listener = tokio::net::TcpListener::bind(config.bind_addr)
        .await
        .map_err(|source| AppError::Http {
            addr: config.bind_addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| AppError::Http {
        addr: config.bind_addr,
        source,
    })?;
    let state = AppState {
        storage: storage.clone(),
        metrics: metrics.clone(),
        readiness: readiness.clone(),
    };
    let server_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, router_with_cors(state, cors))
            .with_graceful_shutdown(server_shutdown.cancelled_owned())
            .await
            .map_err(|source| AppError::Http { addr, source })
    });
    tracing::info!(%addr, "HTTP server listening");

    let consumer = tokio::spawn(consume(
        config,
        broker,
        consumer_storage,
        metrics,
        readiness,
        shutdown,
    ));
    Ok(Service {
        addr,
        consumer,
        server,
    })
}

async fn consume(
    config: Config,
    broker: BrokerConfig,
    storage: Storage,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    // The database may come up after the service: retry the migrations until it answers.
    let migrated = retry("migrate the database", &shutdown, || storage.migrate()).await;
    if migrated.is_none() {
        return Ok(());
    }
    readiness.set_schema_ready();
    tracing::info!("database schema up to date");

    if config.declare_queue {
        let spec = queue_spec(&config);
        let declared = retry("declare the queue", &shutdown, || declare(&broker, &spec)).await;
        if declared.is_none() {
            return Ok(());
        }
    }

    let purge = tokio::spawn(purge_old(
        storage.clone(),
        config.retention(),
        shutdown.clone(),
    ));
    let handler = StoreBatch::new(storage, metrics.clone(), shutdown.clone());
    readiness.set_database_wait(handler.waiting());
    let consumer = Consumer::new(broker, consumer_options(&config), handler);
    let probe = consumer.health();
    readiness.set_broker_probe(Arc::new(move || probe.is_connected()));
    let counters = consumer.metrics();
    metrics.attach_broker_counters(Arc::new(move || {
        let s = counters.snapshot();
        vec![
            (
                "consumed",
                "Messages delivered to this consumer by the broker",
                s.consumed,
            ),
            (
                "acked",
                "Messages acknowledged after their batch was stored",
                s.acked,
            ),
            (
                "requeued",
                "Messages returned to the queue for another try",
                s.requeued,
            ),
            (
                "dead_lettered",
                "Messages sent to the dead-letter queue (contract violations, or refused max_deliveries times)",
                s.dead_lettered,
            ),
            (
                "side_publish_failed",
                "Dead letters or requeues the broker did not take (no DLQ, blocked); the message stays unacked and is tried again",
                s.side_publish_failed,
            ),
        ]
    }));
    tracing::info!(queue = %config.queue, "consuming");
    let ran = consumer.run(shutdown).await;
    purge.abort();
    ran?;
    tracing::info!("consumer stopped");
    Ok(())
}

/// Deletes notifications and tombstones past their retention, once at start and then every
/// [`PURGE_EVERY`], until `shutdown`. A failure is logged and tried at the next round.
async fn purge_old(
    storage: Storage,
    (rows, stones): (Option<Duration>, Option<Duration>),
    shutdown: CancellationToken,
) {
    // "Forever" is a retention no row reaches: ~1000 years.
    let forever = Duration::from_secs(1000 * 365 * 24 * 3600);
    loop {
        match storage
            .purge(rows.unwrap_or(forever), stones.unwrap_or(forever))
            .await
        {
            Ok((0, 0)) => {}
            Ok((n, t)) => {
                tracing::info!(notifications = n, tombstones = t, "purged past retention")
            }
            Err(e) => tracing::warn!(error = %e, "retention purge failed; retrying later"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(PURGE_EVERY) => {}
        }
    }
}

/// Declares the queue with its dead-letter exchange and queue. A queue that already exists
/// with other arguments (declared by the operator with other settings) is used as it is.
async fn declare(
    broker: &BrokerConfig,
    spec: &QueueSpec,
) -> Result<(), swappo_messaging::TopologyError> {
    let connection = lapin::Connection::connect_uri(
        broker.uri().clone(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .map_err(|source| swappo_messaging::TopologyError::Broker {
        queue: spec.name.clone(),
        source,
    })?;
    let result = swappo_messaging::declare_with(&connection, spec).await;
    let _ = connection.close(200, "declared".into()).await;
    match result {
        Err(e @ swappo_messaging::TopologyError::Conflict { .. }) => {
            tracing::warn!(error = %e, "queue exists with other arguments; consuming it as it is");
            Ok(())
        }
        other => other,
    }
}

/// Runs `attempt` until it succeeds or `shutdown` fires (then `None`), backing off from
/// 0.5 s to 10 s between attempts: fast for a database that is just starting, gentle for
/// one that is down for long.
async fn retry<T, E, F, Fut>(what: &str, shutdown: &CancellationToken, mut attempt: F) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delay = Duration::from_millis(500);
    loop {
        let result = tokio::select! {
            r = attempt() => r,
            () = shutdown.cancelled() => return None,
        };
        match result {
            Ok(v) => return Some(v),
            Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "could not {what}"),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => return None,
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}
