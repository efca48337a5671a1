//! The broker client: what the operator says to a RabbitMQ broker. One AMQP connect path
//! ([`amqp`]), one kept connection per broker ([`connections`]), the management HTTP API ([`management`]) and the queue topology
//! ([`topology`]). Decisions on what they return live in [`crate::decisions`].
pub mod amqp;
pub mod connections;
pub mod management;
pub mod topology;

use crate::builders::secret::Credentials;
use amqp::Target;
use lapin::Connection;
use std::time::Duration;

/// The broker's AMQP target, management address and the operator's login.
#[derive(Clone)]
pub struct Broker {
    /// AMQP `host:port` (the development override when set).
    pub amqp: Target,
    /// Management API `host:port`.
    pub management: String,
    /// Login (never formatted).
    pub credentials: Credentials,
    /// Timeout of one connection or request.
    pub timeout: Duration,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("amqp", &self.amqp.address())
            .field("management", &self.management)
            .field("username", &self.credentials.username)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Opens an AMQP connection named `name` to vhost `/` as the operator's user
    /// ([`amqp::connect`]); the failure as one line.
    pub async fn connect(&self, name: &str) -> Result<Connection, String> {
        amqp::connect(&self.amqp, &self.credentials, self.timeout, name)
            .await
            .map_err(|failure| amqp::describe(&failure, &self.amqp))
    }
}
