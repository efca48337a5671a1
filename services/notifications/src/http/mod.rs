//! The HTTP server: one module per route group, each exposing `router()`.
use crate::metrics::Metrics;
use crate::storage::Storage;
use crate::store::DatabaseWait;
use axum::Router;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

pub mod compat;
pub mod cors;
mod extract;
mod notifications;
mod probes;

/// Answers whether the broker connection is up.
pub type BrokerProbe = Arc<dyn Fn() -> bool + Send + Sync>;

/// What `/ready` reports besides the API's database: whether the schema is migrated, and
/// the consumer's state (connected, waiting out a database failure). Filled in by start-up
/// as each part comes up.
#[derive(Default)]
pub struct Readiness {
    schema_ready: AtomicBool,
    broker: OnceLock<BrokerProbe>,
    database_wait: OnceLock<DatabaseWait>,
}

impl Readiness {
    /// Records that the migrations ran.
    pub fn set_schema_ready(&self) {
        self.schema_ready.store(true, Ordering::Release);
    }

    /// Whether the migrations ran.
    pub fn schema_ready(&self) -> bool {
        self.schema_ready.load(Ordering::Acquire)
    }

    /// Installs the broker probe (once; later calls are ignored).
    pub fn set_broker_probe(&self, probe: BrokerProbe) {
        let _ = self.broker.set(probe);
    }

    /// Whether the consumer is connected; `false` before it started.
    pub fn broker_connected(&self) -> bool {
        self.broker.get().is_some_and(|probe| probe())
    }

    /// Installs the consumer's database wait state (once).
    pub fn set_database_wait(&self, wait: DatabaseWait) {
        let _ = self.database_wait.set(wait);
    }

    /// How long the consumer has been waiting out a database failure, and why.
    pub fn consumer_waiting(&self) -> Option<(std::time::Duration, String)> {
        self.database_wait.get().and_then(DatabaseWait::current)
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub storage: Storage,
    /// The service's metrics.
    pub metrics: Arc<Metrics>,
    /// Inputs of `/ready`.
    pub readiness: Arc<Readiness>,
}

/// Every route of the service, with CORS allowing every origin (the original's default).
pub fn router(state: AppState) -> Router {
    router_with_cors(
        state,
        cors::layer(&[]).expect("every origin is a valid CORS setting"),
    )
}

/// Every route of the service: the original's API under `/api/v1` ([`compat`]), ours under
/// `/api/v2`, the probes; `cors` applies to all of them.
pub fn router_with_cors(state: AppState, cors: tower_http::cors::CorsLayer) -> Router {
    Router::new()
        .merge(compat::router())
        .merge(notifications::router())
        .merge(probes::router())
        .layer(cors)
        .with_state(state)
}
