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

use crate::broker::connections::IDLE_CLOSE;
use crate::context::Context;
use crate::crd::SwappoMessaging;
use crate::decisions::autoscale::History;
use crate::decisions::status::condition;
use futures::StreamExt;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// Per-consumer recommendation histories, keyed by (namespace, resource, Deployment).
pub(crate) type Histories = HashMap<(String, String, String), History>;

/// The replicas this loop last wrote per consumer, with the Deployment's resourceVersion
/// before that write: while the workloads cache still shows that version, the write is not
/// in it yet, and the written replicas stand (so a lagging cache never causes the same scale,
/// and its Event, twice).
pub(crate) type Written = HashMap<(String, String, String), (Option<String>, i32)>;

/// Resources polled at once. Each poll waits on its broker (a management GET, a passive
/// declare, each bounded by the AMQP timeout): one slow broker then holds up one slot, not the
/// others, and 1000 resources at a few milliseconds each fit in a 2 s tick. The bound keeps
/// the broker's management API and the operator's memory from seeing 1000 requests at once.
pub const POLL_CONCURRENCY: usize = 32;

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
    let histories = Mutex::new(Histories::new());
    let written = Mutex::new(Written::new());
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
        // Histories of consumers no longer declared (or of deleted resources) are dropped.
        let declared = |(ns, name, deployment): &(String, String, String)| {
            list.iter().any(|sm| {
                sm.namespace().as_deref() == Some(ns.as_str())
                    && &sm.name_any() == name
                    && sm
                        .spec
                        .consumers
                        .iter()
                        .any(|c| &c.deployment == deployment)
            })
        };
        histories
            .lock()
            .expect("never poisoned")
            .retain(|k, _| declared(k));
        written
            .lock()
            .expect("never poisoned")
            .retain(|k, _| declared(k));
        let due = list.iter().filter(|sm| {
            if sm.spec.queues.is_empty() && sm.spec.consumers.is_empty() {
                return false;
            }
            let broker_ready = sm
                .condition(condition::BROKER_READY)
                .is_some_and(|c| c.status == "True");
            if !broker_ready || sm.metadata.deletion_timestamp.is_some() {
                return false;
            }
            let key = (sm.namespace().unwrap_or_default(), sm.name_any());
            !sm.spec.consumers.is_empty() || queue_status_due(&key, ticks)
        });
        let now = origin.elapsed();
        let passes = futures::stream::iter(due).for_each_concurrent(POLL_CONCURRENCY, |sm| {
            let (ctx, http, list) = (&ctx, &http, &list);
            let (histories, written) = (&histories, &written);
            async move {
                let result = pass::scale_one(ctx, http, sm, list, histories, written, now).await;
                ctx.metrics.autoscaler_passes.inc();
                if let Err(e) = result {
                    debug!(name = %sm.name_any(), error = %e, "autoscaler pass incomplete");
                }
            }
        });
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = passes => {}
        }
        // Connections no resource used for a while (resources deleted, logins changed).
        ctx.amqp.prune(IDLE_CLOSE).await;
    }
    // The operator is stopping: the kept connections go with it.
    ctx.amqp.close_all().await;
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
