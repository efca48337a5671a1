//! Where the broker is and how to log in: from `RABBITMQ_URL` or from the separate
//! `RABBITMQ_HOST`/`PORT`/`USER`/`PASSWORD`/`VHOST` variables the operator's Secret feeds.
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use std::fmt;

/// The AMQP port when `RABBITMQ_PORT` is not set.
pub const DEFAULT_PORT: u16 = 5672;

/// Errors reading the broker configuration. Never carries the password.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ConfigError {
    /// The URL does not parse as an AMQP URI (the URL itself is not repeated: it may hold
    /// a password).
    #[error("RABBITMQ_URL is not a valid amqp:// or amqps:// URL: {0}")]
    InvalidUrl(String),
    /// Neither `RABBITMQ_URL` nor `RABBITMQ_HOST` is set.
    #[error("set RABBITMQ_URL, or RABBITMQ_HOST with RABBITMQ_USER and RABBITMQ_PASSWORD")]
    Missing,
    /// A variable is set but unusable.
    #[error("{name} is invalid: {reason}")]
    InvalidVar {
        /// The variable's name.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

/// How to reach the broker. `Debug` and [`BrokerConfig::redacted`] hide the password.
#[derive(Clone, PartialEq)]
pub struct BrokerConfig {
    uri: AMQPUri,
    connection_name: Option<String>,
}

impl BrokerConfig {
    /// Parses `amqp://user:password@host:port/vhost` (percent-encoded; `%2f` is the default
    /// vhost `/`; query parameters such as `heartbeat` are kept).
    pub fn from_url(url: impl Into<String>) -> Result<Self, ConfigError> {
        let url = url.into();
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            return Err(ConfigError::InvalidUrl(
                "the scheme must be amqp or amqps".into(),
            ));
        }
        let uri: AMQPUri = url.parse().map_err(|e: String| {
            // The parser's message may quote the input; keep only what cannot hold a secret.
            let reason = if e.contains(&url) {
                "unparsable URL".to_string()
            } else {
                e
            };
            ConfigError::InvalidUrl(reason)
        })?;
        if uri.authority.host.is_empty() {
            return Err(ConfigError::InvalidUrl("the URL has no host".into()));
        }
        Ok(Self {
            uri,
            connection_name: None,
        })
    }

    /// Reads the environment: `RABBITMQ_URL` when set, else `RABBITMQ_HOST` (required),
    /// `RABBITMQ_PORT` (default 5672), `RABBITMQ_USER`, `RABBITMQ_PASSWORD` (both required)
    /// and `RABBITMQ_VHOST` (default `/`).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// [`BrokerConfig::from_env`] over any variable source (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        if let Some(url) = get("RABBITMQ_URL") {
            return Self::from_url(url);
        }
        let host = get("RABBITMQ_HOST").ok_or(ConfigError::Missing)?;
        let port = match get("RABBITMQ_PORT") {
            None => DEFAULT_PORT,
            Some(p) => p
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| ConfigError::InvalidVar {
                    name: "RABBITMQ_PORT",
                    reason: format!("`{p}` is not a port number (1-65535)"),
                })?,
        };
        let user = get("RABBITMQ_USER").ok_or(ConfigError::InvalidVar {
            name: "RABBITMQ_USER",
            reason: "required with RABBITMQ_HOST".into(),
        })?;
        let password = get("RABBITMQ_PASSWORD").ok_or(ConfigError::InvalidVar {
            name: "RABBITMQ_PASSWORD",
            reason: "required with RABBITMQ_HOST".into(),
        })?;
        let vhost = get("RABBITMQ_VHOST").unwrap_or_else(|| "/".into());
        Ok(Self::from_parts(host, port, user, password, vhost))
    }

    /// A plain-AMQP configuration from its parts (unencoded: `vhost` is `/` for the default).
    pub fn from_parts(
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        password: impl Into<String>,
        vhost: impl Into<String>,
    ) -> Self {
        let uri = AMQPUri {
            scheme: AMQPScheme::AMQP,
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: user.into(),
                    password: password.into(),
                },
                host: host.into(),
                port,
            },
            vhost: vhost.into(),
            query: AMQPQueryString::default(),
        };
        Self {
            uri,
            connection_name: None,
        }
    }

    /// Names the connections in the management UI (`rabbitmqctl list_connections`).
    pub fn with_connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = Some(name.into());
        self
    }

    /// The connection name set with [`BrokerConfig::with_connection_name`].
    pub fn connection_name(&self) -> Option<&str> {
        self.connection_name.as_deref()
    }

    /// Broker host.
    pub fn host(&self) -> &str {
        &self.uri.authority.host
    }

    /// Broker AMQP port.
    pub fn port(&self) -> u16 {
        self.uri.authority.port
    }

    /// User name.
    pub fn user(&self) -> &str {
        &self.uri.authority.userinfo.username
    }

    /// Virtual host (`/` for the default one).
    pub fn vhost(&self) -> &str {
        &self.uri.vhost
    }

    /// The parsed URI, password included: hand it to lapin, never to a log.
    pub fn uri(&self) -> &AMQPUri {
        &self.uri
    }

    /// `amqp://user:***@host:port/vhost`: safe for logs and errors.
    pub fn redacted(&self) -> String {
        let scheme = match self.uri.scheme {
            AMQPScheme::AMQP => "amqp",
            AMQPScheme::AMQPS => "amqps",
        };
        let vhost = if self.uri.vhost == "/" {
            "%2f".to_string()
        } else {
            self.uri.vhost.clone()
        };
        format!(
            "{scheme}://{}:***@{}:{}/{vhost}",
            self.user(),
            self.host(),
            self.port()
        )
    }
}

impl fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("url", &self.redacted())
            .field("connection_name", &self.connection_name)
            .finish()
    }
}

impl fmt::Display for BrokerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn a_url_gives_host_port_user_and_vhost() {
        let c = BrokerConfig::from_url("amqp://app:s3cret@rabbit.svc:5673/%2f").unwrap();
        assert_eq!(
            (c.host(), c.port(), c.user(), c.vhost()),
            ("rabbit.svc", 5673, "app", "/")
        );
        assert_eq!(c.uri().authority.userinfo.password, "s3cret");
    }

    #[test]
    fn a_url_without_port_uses_the_scheme_default() {
        assert_eq!(
            BrokerConfig::from_url("amqp://a:b@h/v").unwrap().port(),
            5672
        );
        assert_eq!(
            BrokerConfig::from_url("amqps://a:b@h/v").unwrap().port(),
            5671
        );
    }

    #[test]
    fn percent_encoded_credentials_and_vhost_are_decoded() {
        let c = BrokerConfig::from_url("amqp://us%40er:p%3Ass@h:5672/my%2Fvhost").unwrap();
        assert_eq!((c.user(), c.vhost()), ("us@er", "my/vhost"));
        assert_eq!(c.uri().authority.userinfo.password, "p:ss");
    }

    #[test]
    fn debug_display_and_redacted_never_show_the_password() {
        let c = BrokerConfig::from_url("amqp://app:hunter2-very-secret@h:5672/%2f").unwrap();
        for shown in [format!("{c:?}"), c.to_string(), c.redacted()] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("app:***@h:5672"), "{shown}");
        }
    }

    #[test]
    fn a_bad_url_is_refused_without_echoing_it() {
        for url in [
            "http://app:topsecret@h/",
            "topsecret",
            "amqp://app:topsecret@:99999/",
        ] {
            let err = BrokerConfig::from_url(url).unwrap_err();
            assert!(matches!(err, ConfigError::InvalidUrl(_)), "{url}: {err:?}");
            assert!(!err.to_string().contains("topsecret"), "{err}");
        }
    }

    #[test]
    fn the_url_variable_wins_over_the_parts() {
        let c = BrokerConfig::from_lookup(lookup(&[
            ("RABBITMQ_URL", "amqp://u:p@from-url:5672/%2f"),
            ("RABBITMQ_HOST", "from-parts"),
        ]))
        .unwrap();
        assert_eq!(c.host(), "from-url");
    }

    #[test]
    fn the_parts_default_to_port_5672_and_the_root_vhost() {
        let c = BrokerConfig::from_lookup(lookup(&[
            ("RABBITMQ_HOST", "rabbit"),
            ("RABBITMQ_USER", "app"),
            ("RABBITMQ_PASSWORD", "p@ss/word"),
        ]))
        .unwrap();
        assert_eq!(
            (c.host(), c.port(), c.user(), c.vhost()),
            ("rabbit", 5672, "app", "/")
        );
        // Special characters in the password survive the trip through the URI.
        let again = BrokerConfig::from_url(c.uri().to_string()).unwrap();
        assert_eq!(again.uri().authority.userinfo.password, "p@ss/word");
    }

    #[test]
    fn the_parts_honour_port_and_vhost() {
        let c = BrokerConfig::from_lookup(lookup(&[
            ("RABBITMQ_HOST", "rabbit"),
            ("RABBITMQ_PORT", "5999"),
            ("RABBITMQ_USER", "app"),
            ("RABBITMQ_PASSWORD", "pw"),
            ("RABBITMQ_VHOST", "swappo"),
        ]))
        .unwrap();
        assert_eq!((c.port(), c.vhost()), (5999, "swappo"));
    }

    #[test]
    fn missing_or_bad_variables_are_named() {
        assert_eq!(
            BrokerConfig::from_lookup(lookup(&[])),
            Err(ConfigError::Missing)
        );
        let no_pw =
            BrokerConfig::from_lookup(lookup(&[("RABBITMQ_HOST", "h"), ("RABBITMQ_USER", "u")]));
        assert!(matches!(
            no_pw,
            Err(ConfigError::InvalidVar {
                name: "RABBITMQ_PASSWORD",
                ..
            })
        ));
        let no_user = BrokerConfig::from_lookup(lookup(&[
            ("RABBITMQ_HOST", "h"),
            ("RABBITMQ_PASSWORD", "p"),
        ]));
        assert!(matches!(
            no_user,
            Err(ConfigError::InvalidVar {
                name: "RABBITMQ_USER",
                ..
            })
        ));
        for port in ["abc", "0", "70000"] {
            let bad = BrokerConfig::from_lookup(lookup(&[
                ("RABBITMQ_HOST", "h"),
                ("RABBITMQ_PORT", port),
                ("RABBITMQ_USER", "u"),
                ("RABBITMQ_PASSWORD", "p"),
            ]));
            assert!(
                matches!(
                    bad,
                    Err(ConfigError::InvalidVar {
                        name: "RABBITMQ_PORT",
                        ..
                    })
                ),
                "{port}"
            );
        }
    }
}
