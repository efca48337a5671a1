//! The consumer autoscaler loop (DESIGN §7): every poll interval, for each `SwappoMessaging`
//! whose broker is ready, read each queue's numbers (management API; AMQP passive declare as
//! the fallback), decide each consumer's replicas with [`crate::autoscale::decide`], apply a
//! change through the Deployment's `scale` subresource, and write `status.queues`,
//! `status.consumers`, `depth`, `consumerReplicas` and `ConsumersScaled` only when they changed.
use crate::autoscale::{self, DepthSource, History, Policy, QueueMetrics};
use crate::builders::Names;
use crate::builders::secret::{Credentials, Endpoint, key, secret_value};
use crate::crd::{ConsumerStatus, QueueStatus, SwappoMessaging};
use crate::queues::{self, Broker, condition, set_condition};
use crate::reconcile::{Context, cached};
use crate::status::{Verdict, condition as base_condition};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::Store;
use kube::{Api, Resource, ResourceExt};
use lapin::Connection;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Per-consumer recommendation histories, keyed by (namespace, resource, Deployment).
type Histories = HashMap<(String, String, String), History>;

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
        for sm in list {
            if sm.spec.queues.is_empty() && sm.spec.consumers.is_empty() {
                continue;
            }
            let broker_ready = sm
                .condition(base_condition::BROKER_READY)
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
            let result = scale_one(&ctx, &http, &sm, &mut histories, &mut conn, now).await;
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

/// The broker login of `sm` from the operator's Secret, or `None` when it has none yet.
async fn broker_of(ctx: &Context, sm: &SwappoMessaging, ns: &str) -> Option<Broker> {
    let name = Names::of(sm).secret;
    let secret = match cached(ctx.caches.get().map(|c| &c.secrets), ns, &name) {
        Some(s) => s,
        None => {
            ctx.metrics.read("Secret");
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
            Arc::new(secrets.get_opt(&name).await.ok()??)
        }
    };
    let credentials = Credentials {
        username: secret_value(&secret, key::USERNAME)?,
        password: secret_value(&secret, key::PASSWORD)?,
        erlang_cookie: None,
    };
    let endpoint = Endpoint::of(sm);
    let s = &ctx.settings;
    let amqp = s.broker_override.clone().unwrap_or(crate::amqp::Target {
        host: endpoint.host.clone(),
        port: endpoint.port,
        tls: endpoint.tls,
    });
    Some(Broker {
        management: queues::management_address(
            s.management_override.as_deref(),
            s.broker_override.as_ref(),
            &endpoint,
        ),
        amqp,
        credentials,
        timeout: s.amqp_timeout,
    })
}

/// Each queue's metrics (when any source answered) and status.
///
/// The management API's queue counts are refreshed by the broker every 5 s (its statistics
/// interval), while a passive declare on the kept AMQP connection reads the ready count at
/// once: the depth is the larger of management ready + unacked and AMQP ready, so a new
/// backlog is seen at the next poll. Without the management API, the depth is AMQP ready only
/// (no unacked, no rates), and the consumer status says so. A resource without consumers has
/// no kept connection: the management API alone, or while it is down, one connection per poll.
async fn observe_queues(
    http: &reqwest::Client,
    broker: &Broker,
    sm: &SwappoMessaging,
    amqp: &mut Option<Connection>,
) -> (HashMap<String, QueueMetrics>, Vec<QueueStatus>) {
    let mut metrics = HashMap::new();
    let mut statuses = Vec::new();
    // Nothing to scale: the management API's numbers are enough for the status (a kept AMQP
    // connection per resource would not be).
    let scaling = !sm.spec.consumers.is_empty();
    if scaling && !amqp.as_ref().is_some_and(|c| c.status().connected()) {
        *amqp = queues::connect(broker, "swappo-operator autoscaler")
            .await
            .map_err(|e| debug!(error = %e, "autoscaler: no AMQP connection"))
            .ok();
    }
    for q in &sm.spec.queues {
        let management = queues::management_queue(http, broker, &q.name).await;
        if !scaling && management.is_err() && amqp.is_none() {
            // The management API is down: one AMQP connection for this poll, closed below.
            *amqp = queues::connect(broker, "swappo-operator queue status")
                .await
                .map_err(|e| debug!(error = %e, "queue status: no AMQP connection"))
                .ok();
        }
        let fresh = match amqp.as_ref() {
            // Bounded like every broker call: a half-open connection must not stall the loop.
            Some(conn) => {
                tokio::time::timeout(broker.timeout, queues::passive_depth(conn, &q.name))
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            None => None,
        };
        match management {
            Ok(status) => {
                let depth = (status.ready + status.unacked).max(fresh.unwrap_or(0));
                metrics.insert(
                    q.name.clone(),
                    QueueMetrics {
                        depth,
                        publish_rate: Some(status.publish_rate),
                        per_replica_rate: None,
                        source: DepthSource::Management,
                    },
                );
                statuses.push(status);
            }
            Err(e) => {
                debug!(queue = %q.name, error = %e, "management API failed; AMQP depth only");
                if let Some(ready) = fresh {
                    metrics.insert(
                        q.name.clone(),
                        QueueMetrics {
                            depth: ready,
                            publish_rate: None,
                            per_replica_rate: None,
                            source: DepthSource::AmqpPassive,
                        },
                    );
                    statuses.push(QueueStatus {
                        name: q.name.clone(),
                        ready,
                        ..QueueStatus::default()
                    });
                }
            }
        }
    }
    if !scaling && let Some(conn) = amqp.take() {
        let close = conn.close(200, "queue status read".into());
        let _ = tokio::time::timeout(broker.timeout, close).await;
    }
    (metrics, statuses)
}

/// The policy of a `spec.consumers` entry.
pub fn policy(c: &crate::crd::ConsumerSpec) -> Policy {
    Policy {
        min_replicas: c.min_replicas,
        max_replicas: c.max_replicas,
        messages_per_replica: c.messages_per_replica,
        drain_within: c
            .drain_within_seconds
            .map(|s| Duration::from_secs(s.into())),
        scale_down_delay: Duration::from_secs(c.scale_down_delay_seconds.into()),
    }
}

/// One pass over one resource.
async fn scale_one(
    ctx: &Context,
    http: &reqwest::Client,
    sm: &SwappoMessaging,
    histories: &mut Histories,
    amqp: &mut Option<Connection>,
    now: Duration,
) -> Result<(), String> {
    let ns = sm.namespace().unwrap_or_default();
    let Some(broker) = broker_of(ctx, sm, &ns).await else {
        return Err("no credentials Secret yet".into());
    };
    let (mut metrics, queue_statuses) = observe_queues(http, &broker, sm, amqp).await;
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let previous = sm.status.clone().unwrap_or_default();
    let stamp =
        Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH));
    let mut consumers = Vec::new();
    let mut missing = Vec::new();
    let mut failed = Vec::new();
    for c in &sm.spec.consumers {
        let key = (ns.clone(), sm.name_any(), c.deployment.clone());
        let last_scale_time = previous
            .consumers
            .iter()
            .find(|p| p.deployment == c.deployment)
            .and_then(|p| p.last_scale_time.clone());
        // A consumer's Deployment is the user's, not in the operator's caches: read live (its
        // replicas are what the decision starts from).
        ctx.metrics.read("Deployment");
        let deployment = match deployments.get_opt(&c.deployment).await {
            Ok(Some(d)) => d,
            Ok(None) => {
                histories.remove(&key);
                missing.push(c.deployment.clone());
                consumers.push(ConsumerStatus {
                    deployment: c.deployment.clone(),
                    reason: "DeploymentNotFound".into(),
                    last_scale_time,
                    ..ConsumerStatus::default()
                });
                continue;
            }
            Err(e) => return Err(format!("get Deployment {}: {e}", c.deployment)),
        };
        let current = deployment.spec.replicas.unwrap_or(1);
        let mut queue = metrics.remove(&c.queue);
        if let Some(m) = queue.as_mut()
            && current > 0
        {
            // Deliveries per replica, measured: what drainWithinSeconds sizes against.
            let rate = queue_statuses
                .iter()
                .find(|q| q.name == c.queue)
                .map_or(0.0, |q| q.deliver_rate);
            m.per_replica_rate = (rate > 0.0).then(|| rate / f64::from(current));
        }
        let history = histories
            .entry(key)
            .or_insert_with(|| History::starting_at(now, current));
        let decision = autoscale::decide(&policy(c), current, queue.as_ref(), history, now);
        if let Some(m) = &queue {
            metrics.insert(c.queue.clone(), m.clone());
        }
        let mut replicas = current;
        let mut scaled_at = last_scale_time;
        if let Some(to) = decision.scale_to.filter(|to| *to != current) {
            let patch = serde_json::json!({"spec": {"replicas": to}});
            match deployments
                .patch_scale(
                    &c.deployment,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    ctx.metrics.wrote("Deployment/scale");
                    replicas = to;
                    scaled_at = Some(stamp.clone());
                    let note = format!(
                        "scaled Deployment {} from {current} to {to}: {}",
                        c.deployment, decision.message
                    );
                    info!(namespace = %ns, "{note}");
                    let event = Event {
                        type_: EventType::Normal,
                        reason: decision.reason.code().into(),
                        note: Some(note),
                        action: "Scale".into(),
                        secondary: Some(deployment.object_ref(&())),
                    };
                    if let Err(e) = ctx.recorder.publish(&event, &sm.object_ref(&())).await {
                        warn!(error = %e, "could not publish the scale Event");
                    }
                }
                Err(e) => {
                    warn!(deployment = %c.deployment, error = %e, "scale failed");
                    failed.push(format!("{}: {e}", c.deployment));
                }
            }
        }
        let fallback = queue
            .as_ref()
            .is_some_and(|m| m.source == DepthSource::AmqpPassive);
        consumers.push(ConsumerStatus {
            deployment: c.deployment.clone(),
            replicas,
            desired_replicas: decision.desired,
            last_scale_time: scaled_at,
            reason: if fallback {
                format!(
                    "{} (depth from AMQP: ready only, management API unavailable)",
                    decision.reason.code()
                )
            } else {
                decision.reason.code().to_owned()
            },
        });
    }

    let verdict = if !missing.is_empty() {
        Verdict {
            ok: false,
            reason: "DeploymentNotFound",
            message: format!(
                "consumer Deployment {} not found in namespace {ns}: create it or fix \
                 spec.consumers[].deployment",
                missing.join(", ")
            ),
        }
    } else if !failed.is_empty() {
        Verdict {
            ok: false,
            reason: "ScaleFailed",
            message: failed.join("; "),
        }
    } else {
        Verdict {
            ok: true,
            reason: "Scaled",
            message: consumers
                .iter()
                .map(|c| format!("{}: {} replicas ({})", c.deployment, c.replicas, c.reason))
                .collect::<Vec<_>>()
                .join(", "),
        }
    };
    let ours = Observation {
        queues: queue_statuses,
        consumers: (!sm.spec.consumers.is_empty()).then_some((consumers, verdict)),
        generation: sm.metadata.generation,
        stamp,
    };
    let api: Api<SwappoMessaging> = Api::namespaced(ctx.client.clone(), &ns);
    let mut base = sm.clone();
    // Twice at most: on a conflict (the reconciler wrote since the cache's copy), once more on
    // a fresh read, so a scale just made keeps its lastScaleTime in status.
    for attempt in 0..2 {
        let previous = base.status.clone().unwrap_or_default();
        let status = ours.applied_to(&previous);
        if status == previous {
            return Ok(());
        }
        // Only the fields this loop owns, guarded by the resourceVersion read.
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": base.resource_version()},
            "status": {
                "queues": status.queues,
                "consumers": status.consumers,
                "depth": status.depth,
                "consumerReplicas": status.consumer_replicas,
                "conditions": status.conditions,
            }
        });
        match api
            .patch_status(
                &sm.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {
                ctx.metrics.wrote("SwappoMessaging/status");
                return Ok(());
            }
            Err(kube::Error::Api(e)) if e.code == 409 && attempt == 0 => {
                ctx.metrics.read("SwappoMessaging");
                base = api
                    .get(&sm.name_any())
                    .await
                    .map_err(|e| format!("read after a conflict: {e}"))?;
            }
            Err(e) => return Err(format!("patch status: {e}")),
        }
    }
    Ok(())
}

/// What one pass observed and decided, to lay over a status: the fields this loop owns.
struct Observation {
    queues: Vec<QueueStatus>,
    /// The consumers' statuses and the `ConsumersScaled` verdict (`None`: no consumers).
    consumers: Option<(Vec<ConsumerStatus>, Verdict)>,
    generation: Option<i64>,
    stamp: Time,
}

impl Observation {
    /// `base` with this pass's queues, depth, consumers and `ConsumersScaled` condition.
    fn applied_to(
        &self,
        base: &crate::crd::SwappoMessagingStatus,
    ) -> crate::crd::SwappoMessagingStatus {
        let mut status = base.clone();
        status.queues = self.queues.clone();
        // No numbers from either source: unknown, not 0.
        status.depth = (!self.queues.is_empty())
            .then(|| self.queues.iter().map(|q| q.ready + q.unacked).sum());
        match &self.consumers {
            None => {
                status.consumer_replicas = None;
                status.consumers = Vec::new();
            }
            Some((consumers, verdict)) => {
                status.consumer_replicas = Some(consumers.iter().map(|c| c.replicas).sum());
                status.consumers = consumers.clone();
                set_condition(
                    &mut status,
                    condition::CONSUMERS_SCALED,
                    verdict,
                    self.generation,
                    &self.stamp,
                );
            }
        }
        status
    }
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
