//! Swappo's messaging library: the notification event contract, a publisher that never
//! reports an unconfirmed message as sent, and a batching consumer with dead-lettering.
//!
//! - [`event`]: [`NotificationEvent`] and its validation (DESIGN.md §6).
//! - [`config`]: [`BrokerConfig`] from `RABBITMQ_URL` or its parts; the password is redacted.
//! - [`topology`]: [`declare`] a queue with its `<q>.dlx` / `<q>.dlq`.
//! - [`publisher`]: [`Publisher`], confirmed publishing with a window of messages in flight.
//! - [`consumer`]: [`Consumer`], batches with one multiple-ack each, retries, dead-lettering.
//! - [`metrics`]: counters shared by publisher and consumer.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backoff;
pub mod config;
mod connection;
pub mod consumer;
pub mod event;
pub mod metrics;
pub mod publisher;
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
