//! The notifications service: consumes notification events from RabbitMQ in batches,
//! stores them idempotently in PostgreSQL, and serves them over HTTP.
//!
//! - [`config`]: settings from flags and the environment.
//! - [`storage`]: the batch insert and the API's queries (migrations in `migrations/`).
//! - [`http`]: the axum API (the original's shapes under `/api/v1`, ours under `/api/v2`),
//!   `/health`, `/ready`, `/metrics`.
//! - [`keyset`]: cursor paging of a user's notifications.
//! - [`import`]: the one-off copy of the original service's rows (binary
//!   `swappo-notifications-import`).
//! - [`metrics`]: Prometheus counters and the batch latency histogram.
//! - [`store`]: the consumer's batch handler.
//! - [`app`]: start-up (HTTP first, then schema, queue, consumer) and graceful shutdown.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
mod compat_storage;
pub mod config;
pub mod error;
pub mod http;
pub mod import;
pub mod keyset;
pub mod metrics;
pub mod params;
pub mod storage;
pub mod store;

pub use config::Config;
pub use error::ApiError;
pub use storage::{Storage, StorageError};
