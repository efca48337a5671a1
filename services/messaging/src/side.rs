//! The consumer's side publisher: dead letters and counted requeues go out on a connection of
//! their own, never on the connection that receives and acks deliveries.
//!
//! Why a separate connection: under a memory or disk alarm RabbitMQ blocks every connection
//! that publishes (`connection.blocked`), and lapin then writes nothing at all on it, acks and
//! close frames included. Publishing dead letters on the consuming connection would stop the
//! acks of good, stored batches with it. On a connection of its own, a blocked side publish
//! only holds back the one message it concerns (the consumer keeps it unacked and tries again
//! later), while stored batches keep being acked.
//!
//! A blocked connection is waited out, never torn down: closing it would need a close frame
//! lapin cannot send while blocked, so the socket would leak. It is only replaced after a
//! failure that is not an alarm (a lost connection, a confirm that never came while unblocked).
use crate::BrokerConfig;
use crate::connection;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// How long a side publish may wait for its confirm while the connection is not blocked:
/// a quorum write on a loaded broker takes milliseconds to a few seconds; 30 s means the broker
/// is in trouble, and the message is kept unacked for a later try.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
use crate::connection::BLOCKED_POLL;

/// Why a side publish did not go through. The message concerned stays unacked either way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SideError {
    /// The broker blocked the connection (`connection.blocked`: a memory or disk alarm).
    #[error("the broker blocked publishing (resource alarm); waiting for it to clear")]
    Blocked,
    /// The exchange routed the message to no queue (mandatory publish returned).
    #[error("`{exchange}` routed the message nowhere (is the `{routing_key}` topology declared?)")]
    Unroutable {
        /// The exchange published to.
        exchange: String,
        /// The routing key.
        routing_key: String,
    },
    /// The broker refused the message (a nack, e.g. a full queue with `reject-publish`).
    #[error("publish to `{0}` refused by the broker")]
    Nacked(String),
    /// The connection failed or no confirm came in time.
    #[error("publish to `{exchange}`: {reason}")]
    Broker {
        /// The exchange published to.
        exchange: String,
        /// What happened.
        reason: String,
    },
}

struct Link {
    conn: Connection,
    channel: Channel,
}

/// One confirm channel on a connection of its own, opened on first use.
pub(crate) struct SidePublisher {
    config: BrokerConfig,
    link: Option<Link>,
    /// A publish an alarm interrupted: the key of its message and its pending confirm.
    inflight: Option<(u64, ConfirmFuture)>,
}

/// Resolves when the broker confirmed (or refused) one message.
type ConfirmFuture = Pin<Box<dyn Future<Output = lapin::Result<Confirmation>> + Send>>;

impl SidePublisher {
    pub(crate) fn new(config: BrokerConfig) -> Self {
        Self {
            config,
            link: None,
            inflight: None,
        }
    }

    async fn link(&mut self) -> Result<&Link, String> {
        let usable = self
            .link
            .as_ref()
            .is_some_and(|l| l.conn.status().connected() && l.channel.status().connected());
        if !usable {
            if let Some(old) = self.link.take() {
                connection::close_when_unblocked(old.conn).await;
            }
            self.inflight = None;
            let conn = connection::open(&self.config, "consumer-side")
                .await
                .map_err(|e| e.to_string())?;
            let channel = async {
                let ch = conn.create_channel().await?;
                ch.confirm_select(ConfirmSelectOptions::default()).await?;
                Ok::<_, lapin::Error>(ch)
            }
            .await;
            match channel {
                Ok(channel) => self.link = Some(Link { conn, channel }),
                Err(e) => {
                    connection::close_quietly(&conn).await;
                    return Err(e.to_string());
                }
            }
        }
        Ok(self.link.as_ref().expect("just opened"))
    }

    /// Whether the side connection is blocked by a broker alarm right now.
    pub(crate) fn is_blocked(&self) -> bool {
        self.link
            .as_ref()
            .is_some_and(|l| l.conn.status().blocked())
    }

    /// One mandatory publish of the message `key` (the delivery it copies), awaited to its
    /// confirm (one at a time, so a return can only be this message's). `Err(Blocked)`
    /// without publishing while an alarm holds the connection. A publish cut short by an
    /// alarm is kept: the next call for the same `key` waits for that confirm instead of
    /// publishing a second copy.
    pub(crate) async fn publish(
        &mut self,
        key: u64,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), SideError> {
        let broker = |reason: String| SideError::Broker {
            exchange: exchange.to_string(),
            reason,
        };
        let mut confirm = match self.inflight.take() {
            Some((k, confirm)) if k == key && self.link.is_some() => confirm,
            _ => {
                if self.is_blocked() {
                    return Err(SideError::Blocked);
                }
                let channel = self.link().await.map_err(broker)?.channel.clone();
                let (exchange, routing_key, body) =
                    (exchange.to_string(), routing_key.to_string(), body.to_vec());
                Box::pin(async move {
                    channel
                        .basic_publish(
                            exchange.as_str().into(),
                            routing_key.as_str().into(),
                            BasicPublishOptions {
                                mandatory: true,
                                immediate: false,
                            },
                            &body,
                            props,
                        )
                        .await?
                        .await
                }) as ConfirmFuture
            }
        };
        let status = self.link.as_ref().expect("a link").conn.status().clone();
        let blocked = async {
            loop {
                tokio::time::sleep(BLOCKED_POLL).await;
                if status.blocked() {
                    return;
                }
            }
        };
        let outcome = tokio::select! {
            r = tokio::time::timeout(CONFIRM_TIMEOUT, &mut confirm) => r,
            () = blocked => {
                self.inflight = Some((key, confirm));
                return Err(SideError::Blocked);
            }
        };
        let result = match outcome {
            Ok(Ok(Confirmation::Ack(None))) => return Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(SideError::Unroutable {
                exchange: exchange.to_string(),
                routing_key: routing_key.to_string(),
            }),
            Ok(Ok(Confirmation::Nack(_))) => Err(SideError::Nacked(exchange.to_string())),
            Ok(Ok(Confirmation::NotRequested)) => Err(broker("confirms are off".into())),
            Ok(Err(e)) => Err(broker(e.to_string())),
            Err(_) => Err(broker(format!("no confirm within {CONFIRM_TIMEOUT:?}"))),
        };
        if matches!(result, Err(SideError::Broker { .. })) && !self.is_blocked() {
            // A lost connection or a confirm that never came: start afresh next time.
            if let Some(old) = self.link.take() {
                connection::close_when_unblocked(old.conn).await;
            }
        }
        result
    }

    /// Closes the side connection; a blocked one once the alarm clears (in the background).
    pub(crate) async fn close(&mut self) {
        self.inflight = None;
        if let Some(link) = self.link.take() {
            connection::close_when_unblocked(link.conn).await;
        }
    }
}
