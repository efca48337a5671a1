//! The status fields the autoscaler owns (`queues`, `depth`, `consumers`,
//! `consumerReplicas`, `ConsumersScaled`), laid over the resource's status and written.
use crate::builders::SCALER_MANAGER;
use crate::context::Context;
use crate::crd::{ConsumerStatus, QueueStatus, SwappoMessaging, SwappoMessagingStatus};
use crate::decisions::status::{Verdict, condition, scaler_part, set_condition};
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

/// Writes `ours` over the status of `sm` when it changes anything: server-side apply of the
/// autoscaler's fields only, under its own field manager, so the reconciler's writes and this
/// one never undo each other (no resourceVersion guard, no retry on conflict).
pub(super) async fn write(
    ctx: &Context,
    sm: &SwappoMessaging,
    ns: &str,
    ours: &Observation,
) -> Result<(), String> {
    let previous = sm.status.clone().unwrap_or_default();
    let part = scaler_part(&ours.applied_to(&previous));
    if part == scaler_part(&previous) {
        return Ok(());
    }
    ctx.may_write().map_err(|e| e.to_string())?;
    let body = serde_json::json!({
        "apiVersion": "swappo.io/v1alpha1",
        "kind": "SwappoMessaging",
        "status": part,
    });
    let api: Api<SwappoMessaging> = Api::namespaced(ctx.client.clone(), ns);
    api.patch_status(
        &sm.name_any(),
        &PatchParams::apply(SCALER_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|e| format!("apply status: {e}"))?;
    ctx.metrics.wrote("SwappoMessaging/status");
    Ok(())
}
