//! AMQP connections to a broker: the one connect path (the reconciler's login behind
//! `BrokerReady`, the queue declarations, the autoscaler's passive declares), within a
//! timeout. Errors are reduced to messages that never hold the password (the URI is built as
//! a struct and never formatted).
use crate::builders::secret::Credentials;
use crate::decisions::status::AmqpCheck;
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{Connection, ConnectionProperties};
use std::time::Duration;

/// Where to log in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Host name or address.
    pub host: String,
    /// AMQP port.
    pub port: u16,
    /// AMQP over TLS.
    pub tls: bool,
}

impl Target {
    /// `host:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Parses `host:port` (the development override).
    pub fn parse(address: &str, tls: bool) -> Option<Self> {
        let (host, port) = address.rsplit_once(':')?;
        Some(Self {
            host: host.to_owned(),
            port: port.parse().ok()?,
            tls,
        })
    }
}

/// Opens an AMQP connection to `target` as `creds`, vhost `/`, named `name` (shown in the
/// broker's connection list), within `timeout`: the open connection (for the caller to use,
/// then close), or why the broker is not usable. The one connect path of the operator: the
/// reconciler's login, the queue declarations and the autoscaler's passive declares.
pub async fn connect(
    target: &Target,
    creds: &Credentials,
    timeout: Duration,
    name: &str,
) -> Result<Connection, AmqpCheck> {
    let uri = AMQPUri {
        scheme: if target.tls {
            AMQPScheme::AMQPS
        } else {
            AMQPScheme::AMQP
        },
        authority: AMQPAuthority {
            userinfo: AMQPUserInfo {
                username: creds.username.clone(),
                password: creds.password.clone(),
            },
            host: target.host.clone(),
            port: target.port,
        },
        vhost: "/".into(),
        query: AMQPQueryString {
            connection_timeout: Some(timeout.as_millis().try_into().unwrap_or(u64::MAX)),
            ..AMQPQueryString::default()
        },
    };
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(timeout, Connection::connect_uri(uri, properties)).await {
        Err(_) => Err(AmqpCheck::Timeout(timeout)),
        Ok(Err(e)) => Err(classify(&e.to_string(), &creds.password)),
        Ok(Ok(conn)) => Ok(conn),
    }
}

/// The reconciler's login check behind `BrokerReady` ([`connect`], named for the reconcile).
pub async fn login(
    target: &Target,
    creds: &Credentials,
    timeout: Duration,
) -> Result<Connection, AmqpCheck> {
    connect(target, creds, timeout, "swappo-operator reconcile").await
}

/// A connection failure as one line for logs and conditions (never the password: the text
/// went through [`classify`]).
pub fn describe(failure: &AmqpCheck, target: &Target) -> String {
    match failure {
        AmqpCheck::Timeout(after) => format!(
            "no AMQP connection to {} within {}s",
            target.address(),
            after.as_secs()
        ),
        AmqpCheck::AuthenticationFailed(text) | AmqpCheck::Unreachable(text) => text.clone(),
        AmqpCheck::Ok => "connected".into(),
    }
}

/// Sorts a connection error into refused credentials or no connection; the password is
/// scrubbed from the text in case a library ever echoes it.
pub fn classify(error: &str, password: &str) -> AmqpCheck {
    let text = if password.is_empty() {
        error.to_owned()
    } else {
        error.replace(password, "<redacted>")
    };
    let auth = ["ACCESS_REFUSED", "authentication", "Login was refused"];
    if auth.iter().any(|m| text.contains(m)) {
        AmqpCheck::AuthenticationFailed(text)
    } else {
        AmqpCheck::Unreachable(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_access_refused_error_is_an_authentication_failure() {
        let e = "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN";
        assert!(matches!(
            classify(e, "pw"),
            AmqpCheck::AuthenticationFailed(_)
        ));
        assert!(matches!(
            classify("IO error: Connection refused", "pw"),
            AmqpCheck::Unreachable(_)
        ));
    }

    #[test]
    fn a_password_echoed_in_an_error_is_scrubbed() {
        let AmqpCheck::Unreachable(text) = classify("bad uri amqp://u:s3cret@h", "s3cret") else {
            panic!("not unreachable")
        };
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[test]
    fn the_override_address_parses_as_host_and_port() {
        let t = Target::parse("127.0.0.1:5672", false).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 5672));
        assert!(Target::parse("no-port", false).is_none());
        assert!(Target::parse("h:notaport", false).is_none());
    }
}
