//! The few RabbitMQ management API calls the demo makes: the user matching the operator's
//! Secret, queue counts, and a clean queue at the start.
use crate::config::encode;
use reqwest::{Client, StatusCode, Url};
use std::time::Duration;

/// A management API call failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The URL is unusable (not repeated: it holds a password).
    #[error("RABBITMQ_MANAGEMENT_URL is not a URL")]
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

/// A management API client authenticated as the administrator of the local broker.
#[derive(Clone)]
pub struct Management {
    base: Url,
    user: String,
    password: String,
    client: Client,
}

impl Management {
    /// A client for `http://user:pass@host:port`.
    pub fn new(url: &str) -> Result<Self, BrokerError> {
        let mut base = Url::parse(url).map_err(|_| BrokerError::Url)?;
        let user = base.username().to_string();
        let password = base.password().unwrap_or_default().to_string();
        base.set_username("").map_err(|_| BrokerError::Url)?;
        base.set_password(None).map_err(|_| BrokerError::Url)?;
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
            user,
            password,
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

    /// Creates (or updates) `user` with `password` and full permissions on vhost `/`. Tagged
    /// `administrator`, like the default user of the broker the operator runs.
    pub async fn put_user(&self, user: &str, password: &str) -> Result<(), BrokerError> {
        let u = encode(user);
        let body = serde_json::json!({"password": password, "tags": "administrator"});
        self.send(
            self.client
                .put(self.url(&format!("/api/users/{u}")))
                .json(&body),
            "create user",
            false,
        )
        .await?;
        let perms = serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"});
        self.send(
            self.client
                .put(self.url(&format!("/api/permissions/%2F/{u}")))
                .json(&perms),
            "set permissions",
            false,
        )
        .await?;
        Ok(())
    }

    /// Deletes `user`; a missing user is fine.
    pub async fn delete_user(&self, user: &str) -> Result<(), BrokerError> {
        let u = encode(user);
        self.send(
            self.client.delete(self.url(&format!("/api/users/{u}"))),
            "delete user",
            true,
        )
        .await
        .map(|_| ())
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

    /// Closes every AMQP connection of `user` (a broker outage as its clients see it, without
    /// touching anybody else's connections); returns how many were closed.
    pub async fn close_connections_of(&self, user: &str) -> Result<usize, BrokerError> {
        #[derive(serde::Deserialize)]
        struct Conn {
            name: String,
            #[serde(default)]
            user: String,
        }
        let Some(resp) = self
            .send(
                self.client.get(self.url("/api/connections")),
                "connections",
                false,
            )
            .await?
        else {
            return Ok(0);
        };
        let conns: Vec<Conn> = resp.json().await.map_err(|source| BrokerError::Http {
            what: "connections",
            source,
        })?;
        let mut closed = 0;
        for c in conns.iter().filter(|c| c.user == user) {
            let name = encode(&c.name);
            self.send(
                self.client
                    .delete(self.url(&format!("/api/connections/{name}")))
                    .header("X-Reason", "swappo demo: broker outage drill"),
                "close connection",
                true,
            )
            .await?;
            closed += 1;
        }
        Ok(closed)
    }

    /// Deletes `queue` in vhost `/`; a missing queue is fine.
    pub async fn delete_queue(&self, queue: &str) -> Result<(), BrokerError> {
        let q = encode(queue);
        self.send(
            self.client
                .delete(self.url(&format!("/api/queues/%2F/{q}"))),
            "delete queue",
            true,
        )
        .await
        .map(|_| ())
    }
}
