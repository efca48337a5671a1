//! Swappo's messaging library: the notification event contract, a publisher that never
//! reports an unconfirmed message as sent, and a batching consumer with dead-lettering.
//!
//! - [`event`]: [`NotificationEvent`] and its validation (DESIGN.md §6).
//! - [`config`]: [`BrokerConfig`] from `RABBITMQ_URL` or its parts; the password is redacted.
//! - [`topology`]: [`declare`] a queue with its `<q>.dlx` / `<q>.dlq`.
//! - [`publisher`]: [`Publisher`], confirmed publishing with a window of messages in flight.
//! - [`consumer`]: [`Consumer`], batches with one multiple-ack each, retries, dead-lettering.
//! - [`side`]: the consumer's dead letters and counted requeues, on a connection of their own.
//! - [`metrics`]: counters shared by publisher and consumer.
//!
//! ```no_run
//! use swappo_messaging::*;
//! use tokio_util::sync::CancellationToken;
//!
//! struct Store;
//! impl BatchHandler for Store {
//!     async fn handle(&self, batch: Vec<NotificationEvent>) -> BatchOutcome {
//!         // INSERT ... ON CONFLICT (id) DO NOTHING, one transaction for the batch.
//!         BatchOutcome::Done
//!     }
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = BrokerConfig::from_env()?; // RABBITMQ_URL or RABBITMQ_HOST/PORT/USER/PASSWORD
//! let spec = QueueSpec::quorum("notifications_queue").with_max_deliveries(5);
//! let conn = lapin::Connection::connect_uri(config.uri().clone(), Default::default()).await?;
//! declare_with(&conn, &spec).await?;
//!
//! let publisher = Publisher::connect(config.clone(), PublisherOptions::for_queue(&spec.name)).await?;
//! let event = NotificationEvent::new("user456", EventType::TradeOfferAccepted,
//!     "Trade Offer Accepted!", "Your trade offer has been accepted.").with_related_offer(42);
//! publisher.publish(&event).await?; // Ok only once the broker confirmed it
//!
//! let consumer = Consumer::new(config, ConsumerOptions::new(&spec.name, spec.kind), Store);
//! let ready = consumer.health(); // for /ready
//! let shutdown = CancellationToken::new();
//! consumer.run(shutdown.clone()).await?; // until shutdown.cancel()
//! # let _ = ready; Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backoff;
pub mod config;
mod connection;
pub mod consumer;
pub mod event;
pub mod legacy_queue;
pub mod metrics;
pub mod publisher;
pub mod side;
pub mod topology;

pub use backoff::Backoff;
pub use config::{BrokerConfig, ConfigError};
pub use connection::ConnectError;
pub use consumer::{
    BatchHandler, BatchOutcome, ConsumeError, Consumer, ConsumerHealth, ConsumerOptions,
    DEAD_LETTER_REASON_HEADER,
};
pub use event::{ContractError, EventType, NotificationEvent, SCHEMA_VERSION};
pub use metrics::{MessagingMetrics, MetricsSnapshot};
pub use publisher::{PublishError, Publisher, PublisherOptions};
pub use topology::{QueueKind, QueueSpec, TopologyError, declare, declare_with};
