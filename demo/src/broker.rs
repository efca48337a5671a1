//! The few RabbitMQ management API calls the demo makes on the operator's broker pod, with the
//! login from the operator's Secret: queue counts, the channels holding unacknowledged
//! messages (which consumer is mid-batch), and the ids of dead-lettered messages.
use crate::config::encode;
use reqwest::{Client, StatusCode, Url};
use std::time::Duration;

/// A management API call failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The URL is unusable (not repeated: it holds a password).
    #[error("the management API address is not a URL")]
    Url,
    /// Transport failure.
    #[error("management API {what}: {source}")]
    Http {
        /// The call.
        what: &'static str,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The API answered with an error status.
    #[error("management API {what}: HTTP {status}")]
    Status {
        /// The call.
        what: &'static str,
        /// The status.
        status: StatusCode,
    },
}

/// Counts of one queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct QueueCounts {
    /// Messages ready.
    #[serde(default)]
    pub messages_ready: u64,
    /// Delivered, not acked.
    #[serde(default)]
    pub messages_unacknowledged: u64,
    /// All messages (ready + unacked).
    #[serde(default)]
    pub messages: u64,
    /// Consumers attached.
    #[serde(default)]
    pub consumers: u64,
}

/// A management API client of one broker, logged in with the operator's Secret.
#[derive(Clone)]
pub struct Management {
    base: Url,
    user: String,
    password: String,
    client: Client,
}

/// One AMQP channel as the management API lists it.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
pub struct Channel {
    /// Messages delivered on it, not yet acknowledged.
    #[serde(default)]
    pub messages_unacknowledged: u64,
    /// Where the connection comes from: `{"peer_host": ..., ...}`, or `[]` when RabbitMQ has
    /// no details (kept as JSON and read leniently).
    #[serde(default)]
    pub connection_details: serde_json::Value,
}

impl Channel {
    /// The client's address (a pod IP), when known.
    pub fn peer_host(&self) -> Option<&str> {
        self.connection_details.get("peer_host")?.as_str()
    }
}

/// Pod IPs whose channels hold unacknowledged messages, most first: consumers mid-batch.
pub fn mid_batch_peers(channels: &[Channel]) -> Vec<String> {
    let mut by_peer: std::collections::BTreeMap<&str, u64> = Default::default();
    for c in channels.iter().filter(|c| c.messages_unacknowledged > 0) {
        if let Some(peer) = c.peer_host() {
            *by_peer.entry(peer).or_default() += c.messages_unacknowledged;
        }
    }
    let mut peers: Vec<(&str, u64)> = by_peer.into_iter().collect();
    peers.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    peers.into_iter().map(|(p, _)| p.to_string()).collect()
}

impl Management {
    /// A client for the management API at `base` (`http://host:port`) as `user`.
    pub fn new(base: &str, user: &str, password: &str) -> Result<Self, BrokerError> {
        let base = Url::parse(base).map_err(|_| BrokerError::Url)?;
        let client = Client::builder()
            // A live view must not hang on one slow answer.
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|source| BrokerError::Http {
                what: "client",
                source,
            })?;
        Ok(Self {
            base,
            user: user.to_string(),
            password: password.to_string(),
            client,
        })
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        what: &'static str,
        missing_ok: bool,
    ) -> Result<Option<reqwest::Response>, BrokerError> {
        let resp = req
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .map_err(|source| BrokerError::Http { what, source })?;
        match resp.status() {
            s if s.is_success() => Ok(Some(resp)),
            StatusCode::NOT_FOUND if missing_ok => Ok(None),
            status => Err(BrokerError::Status { what, status }),
        }
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(path);
        url
    }

    /// Counts of `queue` in vhost `/`; `None` when it does not exist.
    pub async fn queue(&self, queue: &str) -> Result<Option<QueueCounts>, BrokerError> {
        let q = encode(queue);
        let Some(resp) = self
            .send(
                self.client.get(self.url(&format!("/api/queues/%2F/{q}"))),
                "queue",
                true,
            )
            .await?
        else {
            return Ok(None);
        };
        resp.json()
            .await
            .map(Some)
            .map_err(|source| BrokerError::Http {
                what: "queue",
                source,
            })
    }

    /// Every AMQP channel of the broker.
    pub async fn channels(&self) -> Result<Vec<Channel>, BrokerError> {
        let Some(resp) = self
            .send(
                self.client.get(self.url("/api/channels")),
                "channels",
                false,
            )
            .await?
        else {
            return Ok(vec![]);
        };
        resp.json().await.map_err(|source| BrokerError::Http {
            what: "channels",
            source,
        })
    }

    /// The `message_id`s of up to `count` messages of `queue`, read and requeued (the
    /// messages stay where they are).
    pub async fn peek_ids(&self, queue: &str, count: u64) -> Result<Vec<String>, BrokerError> {
        #[derive(serde::Deserialize)]
        struct Message {
            #[serde(default)]
            properties: Properties,
        }
        #[derive(Default, serde::Deserialize)]
        struct Properties {
            #[serde(default)]
            message_id: Option<String>,
        }
        if count == 0 {
            return Ok(vec![]);
        }
        let q = encode(queue);
        let body = serde_json::json!({
            "count": count, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 1024,
        });
        let Some(resp) = self
            .send(
                self.client
                    .post(self.url(&format!("/api/queues/%2F/{q}/get")))
                    .json(&body),
                "get messages",
                true,
            )
            .await?
        else {
            return Ok(vec![]);
        };
        let messages: Vec<Message> = resp.json().await.map_err(|source| BrokerError::Http {
            what: "get messages",
            source,
        })?;
        Ok(messages
            .into_iter()
            .filter_map(|m| m.properties.message_id)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(peer: &str, unacked: u64) -> Channel {
        Channel {
            messages_unacknowledged: unacked,
            connection_details: serde_json::json!({"peer_host": peer, "peer_port": 40000}),
        }
    }

    #[test]
    fn the_consumer_holding_most_unacknowledged_messages_comes_first() {
        let peers = mid_batch_peers(&[
            channel("10.246.0.7", 0),
            channel("10.246.0.8", 3),
            channel("10.246.0.9", 40),
            channel("10.246.0.8", 2),
        ]);
        assert_eq!(peers, ["10.246.0.9", "10.246.0.8"]);
        assert!(mid_batch_peers(&[channel("10.246.0.7", 0)]).is_empty());
    }

    #[test]
    fn a_channel_without_connection_details_has_no_peer() {
        let json = r#"[{"messages_unacknowledged": 12, "connection_details": {"peer_host": "10.246.0.5"}},
                      {"messages_unacknowledged": 4, "connection_details": []}]"#;
        let channels: Vec<Channel> = serde_json::from_str(json).unwrap();
        assert_eq!(channels[0].peer_host(), Some("10.246.0.5"));
        assert_eq!(channels[1].peer_host(), None);
        assert_eq!(mid_batch_peers(&channels), ["10.246.0.5"]);
    }
}
