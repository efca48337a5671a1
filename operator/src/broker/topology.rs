//! Queue topology (DESIGN §6): declaring each `spec.queues` entry over AMQP once the broker
//! answers, the `QueuesReady` condition on the resource, and the AMQP passive declare that
//! reads a queue's depth (the fallback when the management API does not answer).
//!
//! Declaration is idempotent; a queue that exists with other arguments (PRECONDITION_FAILED)
//! is reported by name and argument and does not stop the other queues from being declared.
use super::Broker;
use crate::crd::{self, SwappoMessaging};
use crate::decisions::queues::{Declared, queues_verdict};
use crate::decisions::status::{condition, set_condition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use lapin::Connection;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use swappo_messaging::legacy_queue;
use swappo_messaging::topology::{self, QueueKind, TopologyError};

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

/// Declares every queue of `sm` (each on a channel of its own, so one conflict does not break
/// the others); the outcome per queue, in spec order.
pub async fn declare_all(broker: &Broker, sm: &SwappoMessaging) -> Declared {
    let conn = broker.connect("swappo-operator topology").await?;
    let results = declare_on(&conn, broker.timeout, sm).await;
    // Bounded: a reconcile must never wait on a broker that stopped answering.
    let _ = tokio::time::timeout(broker.timeout, conn.close(200, "declared".into())).await;
    Ok(results)
}

/// Declares every queue of `sm` on `conn` (each on a channel of its own), each bounded by
/// `timeout`; the outcome per queue, in spec order. A `legacy` queue is declared as the
/// original services declare it (`swappo_messaging::legacy_queue`).
pub async fn declare_on(
    conn: &Connection,
    timeout: std::time::Duration,
    sm: &SwappoMessaging,
) -> Vec<(String, Result<(), TopologyError>)> {
    let mut results = Vec::with_capacity(sm.spec.queues.len());
    for q in &sm.spec.queues {
        let declared = async {
            if q.legacy {
                legacy_queue::declare_legacy(conn, &q.name).await
            } else {
                topology::declare_with(conn, &topology_spec(q)).await
            }
        };
        let outcome = tokio::time::timeout(timeout, declared)
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
    let legacy: Vec<&str> = sm
        .spec
        .queues
        .iter()
        .filter(|q| q.legacy)
        .map(|q| q.name.as_str())
        .collect();
    let verdict = queues_verdict(&outcome, &legacy);
    if !verdict.ok {
        tracing::warn!(reason = verdict.reason, "{}", verdict.message);
    }
    let generation = sm.metadata.generation;
    let status = sm.status.get_or_insert_with(Default::default);
    set_condition(status, condition::QUEUES_READY, &verdict, generation, now);
    sm
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
