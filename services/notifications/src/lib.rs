//! The notifications service: consumes notification events from RabbitMQ in batches,
//! stores them idempotently in PostgreSQL, and serves them over HTTP.
//!
//! - [`config`]: settings from flags and the environment.
//! - [`storage`]: the batch insert and the API's queries (migrations in `migrations/`).
//! - [`http`]: the axum API, `/health`, `/ready`, `/metrics`.
//! - [`metrics`]: Prometheus counters and the batch latency histogram.
//! - [`store`]: the consumer's batch handler.
//! - [`app`]: start-up (HTTP first, then schema, queue, consumer) and graceful shutdown.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod config;
pub mod error;
pub mod http;
pub mod metrics;
pub mod params;
pub mod storage;
pub mod store;

pub use config::Config;
pub use error::ApiError;
pub use storage::{Storage, StorageError};
