//! The consumer autoscaler loop (DESIGN §7): every poll interval, for each `SwappoMessaging`
//! whose broker is ready, read each queue's numbers (management API; AMQP passive declare as
//! the fallback), decide each consumer's replicas with [`crate::decisions::autoscale::decide`], apply a
//! change through the Deployment's `scale` subresource, and write `status.queues`,
//! `status.consumers`, `depth`, `consumerReplicas` and `ConsumersScaled` only when they changed.
//!
//! [`run`] is the loop; [`observe`] reads the broker, [`pass`] decides and scales one
//! resource, [`status`] writes the fields this loop owns.
mod observe;
mod pass;
mod status;

pub use pass::policy;

use crate::context::Context;
use crate::crd::SwappoMessaging;
use crate::decisions::autoscale::History;
use crate::decisions::status::condition;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use lapin::Connection;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// Per-consumer recommendation histories, keyed by (namespace, resource, Deployment).
pub(crate) type Histories = HashMap<(String, String, String), History>;

/// Kept AMQP connections (for passive declares), keyed by (namespace, resource).
type Connections = HashMap<(String, String), Connection>;

/// A resource without consumers only has `status.queues` to keep current (nothing to scale):
/// it is polled every this many ticks (30 s at the default 2 s), each in a tick of its own
/// (spread by a hash of its name), over the management API only. With 1000 such resources,
/// that is about 67 HTTP requests per tick instead of 1000 requests and 1000 kept AMQP
/// connections.
const QUEUE_STATUS_EVERY: u64 = 15;

/// Whether a resource without consumers is due at tick `tick` (see [`QUEUE_STATUS_EVERY`]).
fn queue_status_due(key: &(String, String), tick: u64) -> bool {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (tick + h.finish() % QUEUE_STATUS_EVERY).is_multiple_of(QUEUE_STATUS_EVERY)
}

/// Runs the loop until `shutdown`, over the resources in `instances` (the controller's
/// cache of `SwappoMessaging`, so a poll costs no API read).
pub async fn run(
    ctx: Arc<Context>,
    instances: Store<SwappoMessaging>,
    shutdown: CancellationToken,
) {
    let http = reqwest::Client::new();
    let origin = Instant::now();
    let mut histories = Histories::new();
    let mut connections = Connections::new();
    let mut tick = tokio::time::interval(ctx.settings.autoscale_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        ticks += 1;
        let list = instances.state();
        // Connections of resources that are gone (or no longer scaled) are closed.
        connections.retain(|(ns, name), _| {
            list.iter().any(|sm| {
                sm.namespace().as_deref() == Some(ns.as_str())
                    && &sm.name_any() == name
                    && !sm.spec.consumers.is_empty()
            })
        });
        // Histories of consumers no longer declared (or of deleted resources) are dropped.
        histories.retain(|(ns, name, deployment), _| {
            list.iter().any(|sm| {
                sm.namespace().as_deref() == Some(ns.as_str())
                    && &sm.name_any() == name
                    && sm
                        .spec
                        .consumers
                        .iter()
                        .any(|c| &c.deployment == deployment)
            })
        });
        for sm in &list {
            if sm.spec.queues.is_empty() && sm.spec.consumers.is_empty() {
                continue;
            }
            let broker_ready = sm
                .condition(condition::BROKER_READY)
                .is_some_and(|c| c.status == "True");
            if !broker_ready || sm.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let key = (sm.namespace().unwrap_or_default(), sm.name_any());
            if sm.spec.consumers.is_empty() && !queue_status_due(&key, ticks) {
                continue;
            }
            let now = origin.elapsed();
            let mut conn = connections.remove(&key);
            let result =
                pass::scale_one(&ctx, &http, sm, &list, &mut histories, &mut conn, now).await;
            if let Some(conn) = conn {
                connections.insert(key, conn);
            }
            if let Err(e) = result {
                debug!(name = %sm.name_any(), error = %e, "autoscaler pass incomplete");
            }
        }
    }
    for conn in connections.into_values() {
        // Bounded: a broker that stopped answering must not hold up the operator's shutdown.
        let close = conn.close(200, "operator stopping".into());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), close).await;
    }
    info!("autoscaler stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_without_consumers_is_due_once_every_fifteen_ticks() {
        for name in ["a", "b", "sm-0042", "notifications"] {
            let key = ("ns".to_owned(), name.to_owned());
            let due: Vec<u64> = (1..=3 * QUEUE_STATUS_EVERY)
                .filter(|t| queue_status_due(&key, *t))
                .collect();
            assert_eq!(due.len(), 3, "{name}: {due:?}");
            assert!(
                due.windows(2).all(|w| w[1] - w[0] == QUEUE_STATUS_EVERY),
                "{name}: {due:?}"
            );
        }
    }

    #[test]
    fn resources_without_consumers_are_spread_over_the_ticks() {
        // 1000 resources: no tick carries more than a few times its share (1000 / 15 = 67).
        let mut per_tick = vec![0; QUEUE_STATUS_EVERY as usize];
        for i in 0..1000 {
            let key = ("ns".to_owned(), format!("sm-{i:04}"));
            for t in 0..QUEUE_STATUS_EVERY {
                if queue_status_due(&key, t) {
                    per_tick[t as usize] += 1;
                }
            }
        }
        assert_eq!(per_tick.iter().sum::<i32>(), 1000);
        assert!(per_tick.iter().all(|n| *n < 2 * 67), "{per_tick:?}");
    }
}
