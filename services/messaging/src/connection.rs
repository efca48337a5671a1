//! Opening an AMQP connection for the publisher and the consumer (I/O edge).
use crate::BrokerConfig;
use lapin::{Connection, ConnectionProperties};
use std::time::Duration;

/// How long one connection attempt may take before it counts as failed: generous for a
/// TLS handshake to a loaded broker, short enough that a dead host is noticed quickly.
pub(crate) const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why one connection attempt failed (the URL is never part of it).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// The broker refused or the network failed.
    #[error("cannot connect to {broker}: {source}")]
    Amqp {
        /// The redacted broker URL.
        broker: String,
        /// The AMQP error.
        #[source]
        source: lapin::Error,
    },
    /// No answer within the attempt timeout.
    #[error("cannot connect to {broker}: no answer within {timeout:?}")]
    Timeout {
        /// The redacted broker URL.
        broker: String,
        /// The attempt timeout.
        timeout: Duration,
    },
}

/// One connection attempt. lapin's own auto-recovery stays off: the publisher and consumer
/// rebuild connection, channel and consumer themselves, so what was in flight on the lost
/// connection is failed (publisher) or left unacked for redelivery (consumer), never guessed.
pub(crate) async fn open(config: &BrokerConfig, role: &str) -> Result<Connection, ConnectError> {
    let name = config
        .connection_name()
        .map(str::to_string)
        .unwrap_or_else(|| format!("swappo-{role}"));
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let broker = config.redacted();
    match tokio::time::timeout(
        CONNECT_ATTEMPT_TIMEOUT,
        Connection::connect_uri(config.uri().clone(), props),
    )
    .await
    {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(source)) => Err(ConnectError::Amqp { broker, source }),
        Err(_) => Err(ConnectError::Timeout {
            broker,
            timeout: CONNECT_ATTEMPT_TIMEOUT,
        }),
    }
}

/// How long a connection blocked by a broker alarm waits in the background to be closed
/// politely: lapin writes no frame on a blocked connection, close included. Alarms clear in
/// seconds to minutes once memory or disk is freed; past this the socket is dropped anyway.
const BLOCKED_CLOSE_WAIT: Duration = Duration::from_secs(600);
/// How often a blocked connection is looked at.
pub(crate) const BLOCKED_POLL: Duration = Duration::from_millis(100);

/// Closes a connection; one blocked by a broker alarm is closed in the background once the
/// alarm clears (bounded by [`BLOCKED_CLOSE_WAIT`]), instead of leaking its socket.
pub(crate) async fn close_when_unblocked(conn: Connection) {
    if !conn.status().blocked() {
        close_quietly(&conn).await;
        return;
    }
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + BLOCKED_CLOSE_WAIT;
        while conn.status().blocked() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(BLOCKED_POLL).await;
        }
        close_quietly(&conn).await;
    });
}

/// Closes a connection politely, bounded: a dead broker must not hold up a reconnect.
pub(crate) async fn close_quietly(conn: &Connection) {
    if conn.status().connected() {
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(200, "bye".into())).await;
    }
}
