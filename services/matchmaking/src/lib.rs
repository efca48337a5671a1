//! The matchmaking service: trade offers over HTTP, stored in PostgreSQL, with every change's
//! notification event written to a transactional outbox and published to RabbitMQ by a relay.
//!
//! - [`offer`]: statuses, the transition rules and creation validation (pure).
//! - [`events`]: which event each change produces, for whom (pure).
//! - [`store`]: offers in PostgreSQL; every write commits the change and its outbox row together.
//! - [`outbox`], [`relay`]: the outbox table and the relay that publishes it with confirms.
//! - [`http`]: the axum API, one module per route group; [`error`]: its one error type.
//! - [`catalog`]: the optional check of a new offer's items against the catalog service.
//! - [`chat`]: the optional chat room per accepted offer, delivered like an event.
//! - [`import`]: the one-off copy of the original service's offers (binary
//!   `swappo-matchmaking-import`).
//! - [`config`], [`metrics`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod catalog;
pub mod chat;
pub mod config;
pub mod error;
pub mod events;
pub mod http;
pub mod import;
pub mod metrics;
pub mod offer;
pub mod outbox;
pub mod relay;
pub mod store;

use crate::http::AppState;
use crate::metrics::Metrics;
use crate::relay::{Relay, RelayOptions};
use crate::store::Store;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::sync::Arc;
use std::time::Duration;
use swappo_messaging::{BrokerConfig, PublisherOptions};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Connects to PostgreSQL. The pool connects lazily, so the service starts (and `/ready`
/// says why it is not ready) while the database is still coming up. A request waits at most
/// `acquire_timeout` for a connection, then fails with 500 instead of hanging.
pub fn connect_lazy(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .connect_lazy(url)
}

/// Applies the migrations in `migrations/` (idempotent; concurrent replicas serialize on
/// sqlx's advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!().run(pool).await
}

/// Publisher settings for the relay: persistent events with confirms, to `queue` through
/// the default exchange.
pub fn publisher_options(queue: &str) -> PublisherOptions {
    PublisherOptions::for_queue(queue)
}

/// One service instance: its state and, when enabled, its relay.
pub struct Service {
    state: AppState,
    wake: Arc<Notify>,
    cors: tower_http::cors::CorsLayer,
}

impl Service {
    /// An instance over `pool`, without a relay.
    pub fn new(pool: PgPool) -> Self {
        let metrics = Arc::new(Metrics::new());
        let wake = Arc::new(Notify::new());
        let store = Store::new(pool, wake.clone(), metrics.clone());
        Self {
            state: AppState {
                store,
                metrics,
                broker: None,
                catalog: None,
            },
            wake,
            cors: http::cors::layer(&[]).expect("every origin is a valid CORS setting"),
        }
    }

    /// Answers browsers from `cors` instead of the default (every origin, as the original).
    /// Call it before [`Service::router`].
    pub fn set_cors(&mut self, cors: tower_http::cors::CorsLayer) {
        self.cors = cors;
    }

    /// Checks new offers' items against `catalog` (the original's create rules). Call it
    /// before [`Service::router`].
    pub fn set_catalog(&mut self, catalog: catalog::Catalog) {
        self.state.catalog = Some(catalog);
    }

    /// From now on accepting an offer requests its chat room; returns the relay that
    /// delivers the requests (run it with [`chat::ChatRoomRelay::run`]). Call it before
    /// [`Service::router`].
    pub fn chat_rooms(
        &mut self,
        options: chat::ChatOptions,
    ) -> Result<chat::ChatRoomRelay, reqwest::Error> {
        let wake = Arc::new(Notify::new());
        self.state.store = self.state.store.clone().with_chat_rooms(wake.clone());
        chat::ChatRoomRelay::new(self.state.store.pool().clone(), wake, options)
    }

    /// Creates this instance's outbox relay (woken by this instance's commits) and reports
    /// its broker connection in `/ready`. Run it with [`Relay::run`]. Call it before
    /// [`Service::router`]: a router already built keeps the state it was built with.
    pub fn relay(
        &mut self,
        broker: BrokerConfig,
        publisher: PublisherOptions,
        options: RelayOptions,
    ) -> Relay {
        let relay = Relay::new(
            self.state.store.pool().clone(),
            broker,
            publisher,
            self.wake.clone(),
            self.state.metrics.clone(),
            options,
        );
        self.state.broker = Some(relay.status());
        relay
    }

    /// The instance's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.state.metrics.clone()
    }

    /// The HTTP API.
    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone()).layer(self.cors.clone())
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then finishes the requests
/// in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
