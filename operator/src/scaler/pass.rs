//! One autoscaler pass over one resource: read the queues, decide each consumer's replicas
//! with [`crate::decisions::autoscale::decide`], scale through the `scale` subresource, and
//! write the status fields the loop owns.
use super::observe::{broker_of, observe_queues};
use super::status::{Observation, write};
use super::{Histories, Written};
use crate::context::{Context, cached};
use crate::crd::{ConsumerStatus, SwappoMessaging};
use crate::decisions::autoscale::{self, DepthSource, History, Policy};
use crate::decisions::claims::{self, Refusal};
use crate::decisions::status::Verdict;
use futures::FutureExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, warn};

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

/// The consumer Deployment `name`: from the workloads cache (no API read; `None`: it does not
/// exist), or from the API server while that cache is not loaded.
async fn consumer_deployment(
    ctx: &Context,
    api: &Api<Deployment>,
    ns: &str,
    name: &str,
) -> kube::Result<Option<Deployment>> {
    let loaded = ctx.caches.get().map(|c| &c.workloads).filter(|w| {
        w.wait_until_ready()
            .now_or_never()
            .is_some_and(|r| r.is_ok())
    });
    if let Some(workloads) = loaded {
        return Ok(cached(Some(workloads), ns, name).map(|d| Deployment::clone(&d)));
    }
    ctx.metrics.read("Deployment");
    api.get_opt(name).await
}

/// One pass over one resource; `claimants` are all the resources the operator knows (a
/// Deployment named by several is scaled by the oldest only).
pub(super) async fn scale_one(
    ctx: &Context,
    http: &reqwest::Client,
    sm: &SwappoMessaging,
    claimants: &[Arc<SwappoMessaging>],
    histories: &Mutex<Histories>,
    written: &Mutex<Written>,
    now: Duration,
) -> Result<(), String> {
    let ns = sm.namespace().unwrap_or_default();
    let Some(broker) = broker_of(ctx, sm, &ns).await else {
        return Err("no credentials Secret yet".into());
    };
    let (mut metrics, queue_statuses) = observe_queues(ctx, http, &broker, sm).await;
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let previous = sm.status.clone().unwrap_or_default();
    let stamp =
        Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH));
    let autoscalers = ctx
        .caches
        .get()
        .map_or_else(Vec::new, |c| c.autoscalers(&ns));
    let mut consumers = Vec::new();
    let mut refused: Vec<Refusal> = Vec::new();
    let mut refused_messages = Vec::new();
    let mut missing = Vec::new();
    let mut failed = Vec::new();
    for c in &sm.spec.consumers {
        let key = (ns.clone(), sm.name_any(), c.deployment.clone());
        let last_scale_time = previous
            .consumers
            .iter()
            .find(|p| p.deployment == c.deployment)
            .and_then(|p| p.last_scale_time.clone());
        // One writer per Deployment's replicas: another autoscaler, or an older resource
        // naming the same Deployment, keeps it; this one writes nothing to it.
        if let Some(refusal) = claims::refusal(sm, &c.deployment, claimants, &autoscalers) {
            histories.lock().expect("never poisoned").remove(&key);
            consumers.push(ConsumerStatus {
                deployment: c.deployment.clone(),
                reason: refusal.reason().into(),
                last_scale_time,
                ..ConsumerStatus::default()
            });
            refused.push(refusal.clone());
            refused_messages.push(refusal.message(&c.deployment));
            continue;
        }
        let deployment = match consumer_deployment(ctx, &deployments, &ns, &c.deployment).await {
            Ok(Some(d)) => d,
            Ok(None) => {
                histories.lock().expect("never poisoned").remove(&key);
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
        let current = {
            let mut written = written.lock().expect("never poisoned");
            let cached = deployment.spec.replicas.unwrap_or(1);
            match written.get(&key) {
                // The cache has not seen this loop's last scale yet: what was written stands.
                Some((version, to)) if *version == deployment.metadata.resource_version => *to,
                _ => {
                    written.remove(&key);
                    cached
                }
            }
        };
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
        let decision = {
            let mut histories = histories.lock().expect("never poisoned");
            let history = histories
                .entry(key.clone())
                .or_insert_with(|| History::starting_at(now, current));
            autoscale::decide(&policy(c), current, queue.as_ref(), history, now)
        };
        if let Some(m) = &queue {
            metrics.insert(c.queue.clone(), m.clone());
        }
        let mut replicas = current;
        let mut scaled_at = last_scale_time;
        if let Some(to) = decision.scale_to.filter(|to| *to != current) {
            ctx.may_write().map_err(|e| e.to_string())?;
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
                    written.lock().expect("never poisoned").insert(
                        key.clone(),
                        (deployment.metadata.resource_version.clone(), to),
                    );
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
                    let published = match ctx.may_write() {
                        Ok(()) => ctx.recorder.publish(&event, &sm.object_ref(&())).await,
                        Err(_) => Ok(()),
                    };
                    if let Err(e) = published {
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

    let verdict = if let Some(first) = refused.first() {
        Verdict {
            ok: false,
            reason: first.reason(),
            message: refused_messages.join("; "),
        }
    } else if !missing.is_empty() {
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
    write(ctx, sm, &ns, &ours).await
}
