//! The status fields the autoscaler owns (`queues`, `depth`, `consumers`,
//! `consumerReplicas`, `ConsumersScaled`), laid over the resource's status and written.
use crate::context::Context;
use crate::crd::{ConsumerStatus, QueueStatus, SwappoMessaging, SwappoMessagingStatus};
use crate::decisions::status::{Verdict, condition, set_condition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

/// What one pass observed and decided, to lay over a status: the fields this loop owns.
pub(super) struct Observation {
    pub queues: Vec<QueueStatus>,
    /// The consumers' statuses and the `ConsumersScaled` verdict (`None`: no consumers).
    pub consumers: Option<(Vec<ConsumerStatus>, Verdict)>,
    pub generation: Option<i64>,
    pub stamp: Time,
}

impl Observation {
    /// `base` with this pass's queues, depth, consumers and `ConsumersScaled` condition.
    fn applied_to(&self, base: &SwappoMessagingStatus) -> SwappoMessagingStatus {
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

/// Writes `ours` over the status of `sm` when it changes anything.
pub(super) async fn write(
    ctx: &Context,
    sm: &SwappoMessaging,
    ns: &str,
    ours: &Observation,
) -> Result<(), String> {
    let api: Api<SwappoMessaging> = Api::namespaced(ctx.client.clone(), ns);
    let mut base = sm.clone();
    // Twice at most: on a conflict (the reconciler wrote since the cache's copy), once more on
    // a fresh read, so a scale just made keeps its lastScaleTime in status.
    for attempt in 0..2 {
        let previous = base.status.clone().unwrap_or_default();
        let status = ours.applied_to(&previous);
        if status == previous {
            return Ok(());
        }
        ctx.may_write().map_err(|e| e.to_string())?;
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
