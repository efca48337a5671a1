//! One AMQP connection per broker, kept in the [`crate::context::Context`] and shared by the
//! reconciler (the login behind `BrokerReady`, the queue declarations) and the autoscaler (its
//! passive declares), so a recheck or a poll opens nothing. A broker is its address and the
//! login used on it: a changed password is another key, so it is proven by a new login. A
//! connection that closed (broker restarted, network cut, heartbeat missed) is opened again by
//! the next caller; one nobody used for [`IDLE_CLOSE`] is closed by [`Connections::prune`].
use super::amqp::{self, Target};
use crate::builders::secret::Credentials;
use crate::decisions::status::AmqpCheck;
use lapin::Connection;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A kept connection nobody used for this long is closed: longer than the reconciler's
/// default recheck (60 s) several times over, so a broker whose resources are only rechecked
/// keeps its connection, and a broker no resource names any more does not keep one forever.
pub const IDLE_CLOSE: Duration = Duration::from_secs(600);

/// Which broker, as whom: `host:port`, TLS, user, and a hash of the password (the password
/// itself is not kept twice).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    address: String,
    tls: bool,
    username: String,
    password_hash: u64,
}

impl Key {
    fn of(target: &Target, creds: &Credentials) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        creds.password.hash(&mut h);
        Self {
            address: target.address(),
            tls: target.tls,
            username: creds.username.clone(),
            password_hash: h.finish(),
        }
    }
}

/// An open shared connection and the id it was given when opened: a new id means a new
/// connection (the broker may have restarted, empty), so what depends on the broker's state
/// (the queues declared) is done again.
#[derive(Clone)]
pub struct Shared {
    /// The connection (open channels on it; never close it: it is shared).
    pub conn: Arc<Connection>,
    /// Random, drawn when the connection was opened.
    pub id: u64,
}

#[derive(Default)]
struct Slot {
    open: Option<Shared>,
    last_used: Option<Instant>,
}

/// The kept connections, one per broker and login.
#[derive(Default)]
pub struct Connections {
    slots: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<Slot>>>>,
}

impl Connections {
    /// The open connection to `target` as `creds`, opened (within `timeout`, counted by
    /// `opened`) when there is none or it closed. Callers for one broker wait for one
    /// connect; other brokers are not held up by it. A failed connect is not kept: the next
    /// caller tries again.
    pub async fn get(
        &self,
        target: &Target,
        creds: &Credentials,
        timeout: Duration,
        opened: impl FnOnce(),
    ) -> Result<Shared, AmqpCheck> {
        let slot = self
            .slots
            .lock()
            .expect("never poisoned")
            .entry(Key::of(target, creds))
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        slot.last_used = Some(Instant::now());
        if let Some(shared) = slot.open.as_ref().filter(|s| s.conn.status().connected()) {
            return Ok(shared.clone());
        }
        slot.open = None;
        let conn = amqp::connect(target, creds, timeout, "swappo-operator").await?;
        opened();
        let shared = Shared {
            conn: Arc::new(conn),
            id: rand::random(),
        };
        slot.open = Some(shared.clone());
        Ok(shared)
    }

    /// Closes the connections nobody used for `idle` and forgets them (see [`IDLE_CLOSE`]).
    pub async fn prune(&self, idle: Duration) {
        let mut stale = Vec::new();
        self.slots
            .lock()
            .expect("never poisoned")
            .retain(|_, slot| {
                // A slot in use right now is not idle.
                let Ok(mut s) = slot.try_lock() else {
                    return true;
                };
                let idle_now = s.last_used.is_none_or(|t| t.elapsed() >= idle);
                if idle_now && let Some(open) = s.open.take() {
                    stale.push(open);
                }
                !idle_now
            });
        for open in stale {
            close(open).await;
        }
    }

    /// Closes every connection (the operator is stopping).
    pub async fn close_all(&self) {
        self.prune(Duration::ZERO).await;
    }
}

/// Closes a connection that is no longer shared, bounded: a broker that stopped answering
/// must not hold anything up.
async fn close(open: Shared) {
    if let Ok(conn) = Arc::try_unwrap(open.conn)
        && conn.status().connected()
    {
        let close = conn.close(200, "swappo-operator: idle".into());
        let _ = tokio::time::timeout(Duration::from_secs(2), close).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_password_is_another_broker_key_and_the_password_is_not_kept() {
        let target = Target::parse("h:5672", false).unwrap();
        let creds = |p: &str| Credentials {
            username: "u".into(),
            password: p.into(),
            erlang_cookie: None,
        };
        assert_eq!(Key::of(&target, &creds("a")), Key::of(&target, &creds("a")));
        assert_ne!(Key::of(&target, &creds("a")), Key::of(&target, &creds("b")));
        assert!(!format!("{:?}", Key::of(&target, &creds("s3cret"))).contains("s3cret"));
    }
}
