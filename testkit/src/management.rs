//! A small client for the RabbitMQ management HTTP API, as tests need it.
use reqwest::{Client, StatusCode, Url};
use serde::Deserialize;

/// Errors talking to the management API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request did not complete.
    #[error("management API request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The API answered with an unexpected status.
    #[error("management API answered {status} for {what}")]
    Status {
        /// HTTP status.
        status: StatusCode,
        /// What was asked.
        what: String,
    },
}

/// Counts the management API reports for one queue.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct QueueInfo {
    /// Queue name.
    pub name: String,
    /// Ready + unacknowledged.
    #[serde(default)]
    pub messages: u64,
    /// Ready for delivery.
    #[serde(default)]
    pub messages_ready: u64,
    /// Delivered, not yet acknowledged.
    #[serde(default)]
    pub messages_unacknowledged: u64,
    /// Consumers attached.
    #[serde(default)]
    pub consumers: u64,
    /// Queue arguments as declared.
    #[serde(default)]
    pub arguments: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct Connection {
    name: String,
}

/// Management API client; credentials come from the URL's userinfo.
#[derive(Clone, Debug)]
pub struct Management {
    base: Url,
    user: String,
    password: String,
    client: Client,
}

fn enc(segment: &str) -> String {
    // Path segments: '/' (the default vhost) and other reserved characters must be escaped.
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Management {
    /// A client for `url` (`http://user:pass@host:port`).
    pub fn new(url: &str) -> Self {
        let mut base = Url::parse(url).expect("RABBITMQ_MANAGEMENT_URL is a URL");
        let user = base.username().to_string();
        let password = base.password().unwrap_or_default().to_string();
        base.set_username("").ok();
        base.set_password(None).ok();
        Self {
            base,
            user,
            password,
            client: Client::new(),
        }
    }

    /// A client for [`crate::management_url`].
    pub fn from_env() -> Self {
        Self::new(&crate::management_url())
    }

    /// The user the client authenticates as.
    pub fn user(&self) -> &str {
        &self.user
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("API paths join")
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, Error> {
        let resp = req
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(Error::Status {
                status: resp.status(),
                what: what.to_string(),
            })
        }
    }

    /// Creates `vhost` and gives the client's user full permissions on it.
    pub async fn create_vhost(&self, vhost: &str) -> Result<(), Error> {
        let v = enc(vhost);
        self.send(
            self.client.put(self.url(&format!("/api/vhosts/{v}"))),
            "create vhost",
        )
        .await?;
        let perms = serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"});
        let u = enc(&self.user);
        self.send(
            self.client
                .put(self.url(&format!("/api/permissions/{v}/{u}")))
                .json(&perms),
            "set permissions",
        )
        .await?;
        Ok(())
    }

    /// Whether `vhost` exists.
    pub async fn vhost_exists(&self, vhost: &str) -> Result<bool, Error> {
        let req = self
            .client
            .get(self.url(&format!("/api/vhosts/{}", enc(vhost))));
        match self.send(req, "get vhost").await {
            Ok(_) => Ok(true),
            Err(Error::Status {
                status: StatusCode::NOT_FOUND,
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes `vhost` and everything in it; a missing vhost is not an error.
    pub async fn delete_vhost(&self, vhost: &str) -> Result<(), Error> {
        let req = self
            .client
            .delete(self.url(&format!("/api/vhosts/{}", enc(vhost))));
        match self.send(req, "delete vhost").await {
            Err(Error::Status {
                status: StatusCode::NOT_FOUND,
                ..
            }) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Creates (or updates) user `name` with `password`, no tags, and full permissions on
    /// `vhost`: a broker user matching credentials a test was handed (an operator's Secret).
    pub async fn create_user(&self, name: &str, password: &str, vhost: &str) -> Result<(), Error> {
        let u = enc(name);
        let user = serde_json::json!({"password": password, "tags": ""});
        self.send(
            self.client
                .put(self.url(&format!("/api/users/{u}")))
                .json(&user),
            "create user",
        )
        .await?;
        let perms = serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"});
        let v = enc(vhost);
        self.send(
            self.client
                .put(self.url(&format!("/api/permissions/{v}/{u}")))
                .json(&perms),
            "set user permissions",
        )
        .await?;
        Ok(())
    }

    /// Deletes user `name`; a missing user is not an error.
    pub async fn delete_user(&self, name: &str) -> Result<(), Error> {
        let req = self
            .client
            .delete(self.url(&format!("/api/users/{}", enc(name))));
        match self.send(req, "delete user").await {
            Err(Error::Status {
                status: StatusCode::NOT_FOUND,
                ..
            }) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Deletes `kind` (`queues` or `exchanges`) `name` in `vhost`; a missing one is not an error.
    async fn delete_entity(&self, kind: &str, vhost: &str, name: &str) -> Result<(), Error> {
        let req =
            self.client
                .delete(self.url(&format!("/api/{kind}/{}/{}", enc(vhost), enc(name))));
        match self.send(req, &format!("delete {kind}")).await {
            Err(Error::Status {
                status: StatusCode::NOT_FOUND,
                ..
            }) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Deletes queue `name` in `vhost` (for tests that must use a shared vhost such as `/`);
    /// a missing queue is not an error.
    pub async fn delete_queue(&self, vhost: &str, name: &str) -> Result<(), Error> {
        self.delete_entity("queues", vhost, name).await
    }

    /// Deletes exchange `name` in `vhost`; a missing exchange is not an error.
    pub async fn delete_exchange(&self, vhost: &str, name: &str) -> Result<(), Error> {
        self.delete_entity("exchanges", vhost, name).await
    }

    /// The queue's counts, or `None` when it does not exist.
    pub async fn queue(&self, vhost: &str, name: &str) -> Result<Option<QueueInfo>, Error> {
        let req = self
            .client
            .get(self.url(&format!("/api/queues/{}/{}", enc(vhost), enc(name))));
        match self.send(req, "get queue").await {
            Ok(resp) => Ok(Some(resp.json().await?)),
            Err(Error::Status {
                status: StatusCode::NOT_FOUND,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Closes every client connection to `vhost`: a broker outage as the clients of that
    /// vhost see it, without disturbing tests in other vhosts. Returns how many were closed.
    pub async fn close_connections(&self, vhost: &str) -> Result<usize, Error> {
        let req = self
            .client
            .get(self.url(&format!("/api/vhosts/{}/connections", enc(vhost))));
        let conns: Vec<Connection> = self.send(req, "list connections").await?.json().await?;
        for c in &conns {
            let req = self
                .client
                .delete(self.url(&format!("/api/connections/{}", enc(&c.name))))
                .header("X-Reason", "swappo test: simulated broker outage");
            match self.send(req, "close connection").await {
                Ok(_)
                | Err(Error::Status {
                    status: StatusCode::NOT_FOUND,
                    ..
                }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(conns.len())
    }
}

#[cfg(test)]
mod tests {
    use super::enc;

    #[test]
    fn the_default_vhost_is_escaped_in_paths() {
        assert_eq!(enc("/"), "%2F");
        assert_eq!(enc("t-abc_1"), "t-abc_1");
    }
}
