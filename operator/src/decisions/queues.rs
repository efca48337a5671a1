//! The `QueuesReady` verdict from the outcome of declaring each `spec.queues` entry.
use crate::crd::QueueSpec;
use crate::decisions::status::Verdict;
use std::hash::{Hash, Hasher};
use swappo_messaging::topology::TopologyError;

/// Each queue's declaration outcome, in spec order, or why no connection was made.
pub type Declared = Result<Vec<(String, Result<(), TopologyError>)>, String>;

/// The `QueuesReady` verdict from the declaration outcomes (or the connection failure);
/// `legacy` names the queues declared as the original services do, which the verdict says
/// (reason `LegacyQueue`) since the broker dead-letters nothing from them.
pub fn queues_verdict(outcome: &Declared, legacy: &[&str]) -> Verdict {
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
    if !legacy.is_empty() {
        return Verdict {
            ok: true,
            reason: "LegacyQueue",
            message: format!(
                "{} queues declared as specified; legacy (classic, no arguments: no \
                 broker-side dead-lettering): {}",
                results.len(),
                legacy.join(", ")
            ),
        };
    }
    Verdict {
        ok: true,
        reason: "QueuesDeclared",
        message: format!("{} queues declared as specified", results.len()),
    }
}

/// What `queues` declared on the connection `connection` (its [`Shared::id`]) is recorded as
/// in `status.queuesDeclared`: the queues are declared again only when this changes. std's
/// hasher is not promised to stay the same across Rust releases: a new one costs one more
/// declaration per resource, nothing else.
///
/// [`Shared::id`]: crate::broker::connections::Shared::id
pub fn declaration_key(queues: &[QueueSpec], connection: u64) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(queues)
        .unwrap_or_default()
        .hash(&mut h);
    connection.hash(&mut h);
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declaration_key_changes_with_the_queues_or_the_connection_only() {
        let spec = |ttl: Option<u32>| -> Vec<QueueSpec> {
            vec![
                serde_json::from_value(serde_json::json!({
                    "name": "q", "type": "classic", "messageTtlSeconds": ttl
                }))
                .unwrap(),
            ]
        };
        let key = declaration_key(&spec(None), 7);
        assert_eq!(key, declaration_key(&spec(None), 7));
        assert_ne!(key, declaration_key(&spec(Some(5)), 7));
        assert_ne!(key, declaration_key(&spec(None), 8));
        assert_ne!(key, declaration_key(&[], 7));
    }

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
        let v = queues_verdict(&outcome, &[]);
        assert!(!v.ok);
        assert_eq!(v.reason, "QueueArgumentConflict");
        assert!(v.message.contains("queue orders"), "{}", v.message);
        assert!(v.message.contains("x-queue-type"), "{}", v.message);
        assert!(!v.message.contains("queue ok"), "{}", v.message);
        let all_ok = queues_verdict(&Ok(vec![("ok".to_owned(), Ok(()))]), &[]);
        assert!(all_ok.ok);
        assert_eq!(all_ok.reason, "QueuesDeclared");
        assert!(!queues_verdict(&Err("refused".into()), &[]).ok);
    }

    #[test]
    fn a_legacy_queue_is_ready_with_a_reason_saying_nothing_is_dead_lettered() {
        let outcome = Ok(vec![
            ("new".to_owned(), Ok(())),
            ("notifications".to_owned(), Ok(())),
        ]);
        let v = queues_verdict(&outcome, &["notifications"]);
        assert!(v.ok);
        assert_eq!(v.reason, "LegacyQueue");
        assert!(
            v.message
                .contains("classic, no arguments: no broker-side dead-lettering"),
            "{}",
            v.message
        );
        assert!(v.message.contains("notifications") && !v.message.contains("new,"));
        // A failure elsewhere still wins over the legacy note.
        let failed = Ok(vec![(
            "notifications".to_owned(),
            Err(TopologyError::InvalidSpec {
                queue: "notifications".into(),
                reason: "no answer within 5s".into(),
            }),
        )]);
        assert_eq!(
            queues_verdict(&failed, &["notifications"]).reason,
            "DeclareFailed"
        );
    }
}
