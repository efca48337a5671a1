//! Queue topology (DESIGN §6): declaring each `spec.queues` entry over AMQP once the broker
//! answers, the `QueuesReady` condition, and reading a queue's numbers from the management
//! HTTP API (with an AMQP passive declare as the fallback for the depth).
//!
//! Declaration is idempotent; a queue that exists with other arguments (PRECONDITION_FAILED)
//! is reported by name and argument and does not stop the other queues from being declared.
use crate::amqp::Target;
use crate::builders::secret::{Credentials, Endpoint};
use crate::crd::{self, QueueStatus, SwappoMessaging, SwappoMessagingStatus};
use crate::status::Verdict;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{Connection, ConnectionProperties};
use serde::Deserialize;
use std::time::Duration;
use swappo_messaging::topology::{self, QueueKind, TopologyError};

/// Condition types set here and in [`crate::scaler`].
pub mod condition {
    /// Every `spec.queues` entry is declared as specified.
    pub const QUEUES_READY: &str = "QueuesReady";
    /// Every consumer Deployment exists and was scaled as decided.
    pub const CONSUMERS_SCALED: &str = "ConsumersScaled";
}

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

/// The management API address: `management_override` when set; else the AMQP override's host
/// with the management port 15672; else the broker endpoint's host and management port.
pub fn management_address(
    management_override: Option<&str>,
    broker_override: Option<&Target>,
    endpoint: &Endpoint,
) -> String {
    match (management_override, broker_override) {
        (Some(addr), _) => addr.to_owned(),
        (None, Some(target)) => format!("{}:{}", target.host, crd::MANAGEMENT_PORT),
        (None, None) => format!("{}:{}", endpoint.host, endpoint.management_port),
    }
}

/// The messaging crate's spec for a `spec.queues` entry.
pub fn topology_spec(q: &crd::QueueSpec) -> topology::QueueSpec {
    topology::QueueSpec {
        name: q.name.clone(),
        kind: match q.queue_type {
            crd::QueueType::Quorum => QueueKind::Quorum,
            crd::QueueType::Classic => QueueKind::Classic,
        },
        max_deliveries: q.dead_letter.as_ref().map(|d| d.max_deliveries),
        message_ttl_ms: q.message_ttl_seconds.map(|s| u64::from(s) * 1000),
        max_priority: q.max_priority,
    }
}

/// Opens an AMQP connection to vhost `/` as the operator's user.
pub async fn connect(broker: &Broker, name: &str) -> Result<Connection, String> {
    let uri = AMQPUri {
        scheme: if broker.amqp.tls {
            AMQPScheme::AMQPS
        } else {
            AMQPScheme::AMQP
        },
        authority: AMQPAuthority {
            userinfo: AMQPUserInfo {
                username: broker.credentials.username.clone(),
                password: broker.credentials.password.clone(),
            },
            host: broker.amqp.host.clone(),
            port: broker.amqp.port,
        },
        vhost: "/".into(),
        query: AMQPQueryString {
            connection_timeout: Some(broker.timeout.as_millis().try_into().unwrap_or(u64::MAX)),
            ..AMQPQueryString::default()
        },
    };
    let props = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(broker.timeout, Connection::connect_uri(uri, props)).await {
        Err(_) => Err(format!(
            "no AMQP connection to {} within {}s",
            broker.amqp.address(),
            broker.timeout.as_secs()
        )),
        Ok(Err(e)) => Err(e
            .to_string()
            .replace(&broker.credentials.password, "<redacted>")),
        Ok(Ok(c)) => Ok(c),
    }
}

/// Each queue's declaration outcome, in spec order, or why no connection was made.
pub type Declared = Result<Vec<(String, Result<(), TopologyError>)>, String>;

/// Declares every queue of `sm` (each on a channel of its own, so one conflict does not break
/// the others); the outcome per queue, in spec order.
pub async fn declare_all(broker: &Broker, sm: &SwappoMessaging) -> Declared {
    let conn = connect(broker, "swappo-operator topology").await?;
    let results = declare_on(&conn, broker.timeout, sm).await;
    // Bounded: a reconcile must never wait on a broker that stopped answering.
    let _ = tokio::time::timeout(broker.timeout, conn.close(200, "declared".into())).await;
    Ok(results)
}

/// Declares every queue of `sm` on `conn` (each on a channel of its own), each bounded by
/// `timeout`; the outcome per queue, in spec order.
pub async fn declare_on(
    conn: &Connection,
    timeout: std::time::Duration,
    sm: &SwappoMessaging,
) -> Vec<(String, Result<(), TopologyError>)> {
    let mut results = Vec::with_capacity(sm.spec.queues.len());
    for q in &sm.spec.queues {
        let spec = topology_spec(q);
        let outcome = tokio::time::timeout(timeout, topology::declare_with(conn, &spec))
            .await
            .unwrap_or_else(|_| {
                Err(TopologyError::InvalidSpec {
                    queue: q.name.clone(),
                    reason: format!("no answer within {}s", timeout.as_secs()),
                })
            });
        results.push((q.name.clone(), outcome));
    }
    results
}

/// The `QueuesReady` verdict from the declaration outcomes (or the connection failure).
pub fn queues_verdict(outcome: &Declared) -> Verdict {
    let results = match outcome {
        Err(e) => {
            return Verdict {
                ok: false,
                reason: "BrokerUnreachable",
                message: format!("cannot connect to declare queues: {e}"),
            };
        }
        Ok(r) => r,
    };
    let conflicts: Vec<String> = results
        .iter()
        .filter_map(|(name, r)| match r {
            Err(e @ TopologyError::Conflict { queue, .. }) => Some(format!(
                "queue {name}: {queue} exists with a different {} than spec.queues asks; \
                 RabbitMQ cannot change it in place: delete the queue (its messages are lost) \
                 or change the spec back",
                e.conflicting_argument().unwrap_or("argument")
            )),
            _ => None,
        })
        .collect();
    if !conflicts.is_empty() {
        return Verdict {
            ok: false,
            reason: "QueueArgumentConflict",
            message: conflicts.join("; "),
        };
    }
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().err().map(ToString::to_string))
        .collect();
    if !failed.is_empty() {
        return Verdict {
            ok: false,
            reason: "DeclareFailed",
            message: failed.join("; "),
        };
    }
    Verdict {
        ok: true,
        reason: "QueuesDeclared",
        message: format!("{} queues declared as specified", results.len()),
    }
}

/// Sets condition `type_` in `status` from `verdict`, keeping `lastTransitionTime` when the
/// status did not change.
pub fn set_condition(
    status: &mut SwappoMessagingStatus,
    type_: &str,
    verdict: &Verdict,
    generation: Option<i64>,
    now: &Time,
) {
    let value = if verdict.ok { "True" } else { "False" };
    let previous = status.conditions.iter().position(|c| c.type_ == type_);
    let last_transition_time = previous
        .map(|i| &status.conditions[i])
        .filter(|c| c.status == value)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    let cond = Condition {
        type_: type_.to_owned(),
        status: value.to_owned(),
        reason: verdict.reason.to_owned(),
        message: verdict.message.clone(),
        observed_generation: generation,
        last_transition_time,
    };
    match previous {
        Some(i) => status.conditions[i] = cond,
        None => status.conditions.push(cond),
    }
}

/// `sm` with its `QueuesReady` condition decided: declares the queues when `broker` is given
/// (the broker accepted a login) and `spec.queues` is not empty, on `login` (the connection of
/// that login, reused: one connection per reconcile, not two) or a new connection; `sm`
/// unchanged otherwise.
pub async fn with_queues_declared(
    sm: &SwappoMessaging,
    broker: Option<&Broker>,
    login: Option<&Connection>,
    now: &Time,
) -> SwappoMessaging {
    let mut sm = sm.clone();
    let Some(broker) = broker.filter(|_| !sm.spec.queues.is_empty()) else {
        return sm;
    };
    let outcome = match login.filter(|c| c.status().connected()) {
        Some(conn) => Ok(declare_on(conn, broker.timeout, &sm).await),
        None => declare_all(broker, &sm).await,
    };
    let verdict = queues_verdict(&outcome);
    if !verdict.ok {
        tracing::warn!(reason = verdict.reason, "{}", verdict.message);
    }
    let generation = sm.metadata.generation;
    let status = sm.status.get_or_insert_with(Default::default);
    set_condition(status, condition::QUEUES_READY, &verdict, generation, now);
    sm
}

#[derive(Deserialize, Default)]
struct ManagementQueue {
    #[serde(default)]
    messages_ready: u64,
    #[serde(default)]
    messages_unacknowledged: u64,
    #[serde(default)]
    consumers: u32,
    #[serde(default)]
    message_stats: Option<MessageStats>,
}

#[derive(Deserialize, Default)]
struct MessageStats {
    #[serde(default)]
    publish_details: Option<Rate>,
    #[serde(default)]
    deliver_get_details: Option<Rate>,
}

#[derive(Deserialize, Default)]
struct Rate {
    #[serde(default)]
    rate: f64,
}

/// A queue's numbers from `GET /api/queues/%2F/<name>`; `Err` with a message (never the
/// password) when the API does not answer or the queue is not there.
pub async fn management_queue(
    http: &reqwest::Client,
    broker: &Broker,
    name: &str,
) -> Result<QueueStatus, String> {
    let url = format!("http://{}/api/queues/%2F/{name}", broker.management);
    let response = http
        .get(&url)
        .basic_auth(
            &broker.credentials.username,
            Some(&broker.credentials.password),
        )
        .timeout(broker.timeout)
        .send()
        .await
        .map_err(|e| format!("management API {}: {e}", broker.management))?;
    if !response.status().is_success() {
        return Err(format!(
            "management API {} answered {} for queue {name}",
            broker.management,
            response.status()
        ));
    }
    let q: ManagementQueue = response
        .json()
        .await
        .map_err(|e| format!("management API {}: {e}", broker.management))?;
    let stats = q.message_stats.unwrap_or_default();
    // Rates rounded to 0.1/s: finer digits are noise and would rewrite the status.
    let round = |r: Option<Rate>| (r.map_or(0.0, |r| r.rate) * 10.0).round() / 10.0;
    Ok(QueueStatus {
        name: name.to_owned(),
        ready: q.messages_ready,
        unacked: q.messages_unacknowledged,
        consumers: q.consumers,
        publish_rate: round(stats.publish_details),
        deliver_rate: round(stats.deliver_get_details),
    })
}

/// Ready messages of `name` from an AMQP passive declare (the fallback when the management
/// API does not answer: no unacked count, no rates).
pub async fn passive_depth(conn: &Connection, name: &str) -> Result<u64, String> {
    let channel = conn.create_channel().await.map_err(|e| e.to_string())?;
    let declared = channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string());
    if channel.status().connected() {
        let _ = channel.close(200, "checked".into()).await;
    }
    Ok(u64::from(declared?.message_count()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conflict_names_the_queue_and_argument_and_other_queues_do_not_hide_it() {
        let outcome = Ok(vec![
            ("ok".to_owned(), Ok(())),
            (
                "orders".to_owned(),
                Err(TopologyError::Conflict {
                    queue: "orders".into(),
                    detail: "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue \
                             'orders' in vhost '/': received 'quorum' but current is 'classic'"
                        .into(),
                }),
            ),
        ]);
        let v = queues_verdict(&outcome);
        assert!(!v.ok);
        assert_eq!(v.reason, "QueueArgumentConflict");
        assert!(v.message.contains("queue orders"), "{}", v.message);
        assert!(v.message.contains("x-queue-type"), "{}", v.message);
        assert!(!v.message.contains("queue ok"), "{}", v.message);
        let all_ok = queues_verdict(&Ok(vec![("ok".to_owned(), Ok(()))]));
        assert!(all_ok.ok);
        assert!(!queues_verdict(&Err("refused".into())).ok);
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let t0 = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let t1 = Time(k8s_openapi::jiff::Timestamp::from_second(100).unwrap());
        let mut status = SwappoMessagingStatus::default();
        let v = |ok, reason| Verdict {
            ok,
            reason,
            message: String::new(),
        };
        set_condition(&mut status, "X", &v(false, "A"), None, &t0);
        set_condition(&mut status, "X", &v(false, "B"), None, &t1);
        assert_eq!(status.conditions.len(), 1);
        assert_eq!(status.conditions[0].reason, "B");
        assert_eq!(status.conditions[0].last_transition_time, t0);
        set_condition(&mut status, "X", &v(true, "C"), None, &t1);
        assert_eq!(status.conditions[0].last_transition_time, t1);
    }

    #[test]
    fn the_management_address_follows_the_overrides_then_the_endpoint() {
        let endpoint = Endpoint {
            host: "b.ns.svc".into(),
            port: 5672,
            management_port: 15673,
            tls: false,
        };
        let amqp = Target::parse("127.0.0.1:5672", false).unwrap();
        assert_eq!(
            management_address(Some("h:1"), Some(&amqp), &endpoint),
            "h:1"
        );
        assert_eq!(
            management_address(None, Some(&amqp), &endpoint),
            "127.0.0.1:15672"
        );
        assert_eq!(management_address(None, None, &endpoint), "b.ns.svc:15673");
    }

    #[test]
    fn queue_specs_map_type_dead_letter_ttl_and_priority() {
        let q: crd::QueueSpec = serde_json::from_value(serde_json::json!({
            "name": "n", "type": "classic", "deadLetter": {"maxDeliveries": 3},
            "messageTtlSeconds": 2, "maxPriority": 4
        }))
        .unwrap();
        let s = topology_spec(&q);
        assert_eq!(s.kind, QueueKind::Classic);
        assert_eq!(s.max_deliveries, Some(3));
        assert_eq!(s.message_ttl_ms, Some(2000));
        assert_eq!(s.max_priority, Some(4));
    }
}
