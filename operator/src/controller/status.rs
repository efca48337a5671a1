//! The status step of the reconcile: the fields the reconciler owns, decided by
//! [`desired_status`] and written when they changed, with an Event per condition transition.
use super::error_policy::{CONFLICT_RETRY, requeue_after};
use crate::context::Context;
use crate::crd::SwappoMessaging;
use crate::decisions::status::{Observed, condition, desired_status, transitions};
use crate::error::{Error, Result};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tracing::{debug, info};

/// Writes the status decided from `with_queues` (the resource with its `QueuesReady`
/// condition decided) and `observed`, when it differs from the resource's; publishes the
/// transitions' Events; and says when to look again.
pub async fn write(
    sm: &SwappoMessaging,
    with_queues: &SwappoMessaging,
    observed: &Observed,
    cleaned: Option<u64>,
    now: &Time,
    ctx: &Context,
) -> Result<Action> {
    let mut status = desired_status(with_queues, observed, now);
    if let Some(total) = cleaned {
        status.replica_sets_cleaned = total;
    }
    if sm.status.as_ref() != Some(&status) {
        ctx.may_write()?;
        let api: Api<SwappoMessaging> =
            Api::namespaced(ctx.client.clone(), &sm.namespace().unwrap_or_default());
        // Under the resourceVersion this reconcile read: the autoscaler writes its fields of
        // the status too, and a status computed from an older copy must not set them back.
        let mut patch = serde_json::json!({
            "metadata": {"resourceVersion": sm.resource_version()},
            "status": status,
        });
        // The clean-up count is written only by `cleanup::count_cleaned` (from a fresh read,
        // under a resourceVersion precondition): a status computed from a stale cached object
        // must not set it back.
        if let Some(s) = patch["status"].as_object_mut() {
            s.remove("replicaSetsCleaned");
        }
        match api
            .patch_status(
                &sm.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            // Someone wrote first (the autoscaler, the clean-up count): the change reaches the
            // controller as a new version, and this decision is taken again on it shortly.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                debug!("the resource changed while reconciling; again on the new version");
                return Ok(Action::requeue(CONFLICT_RETRY));
            }
            Err(source) => {
                return Err(Error::Kube {
                    action: format!("patch status of SwappoMessaging {}", sm.name_any()),
                    source,
                });
            }
        }
        ctx.metrics.wrote("SwappoMessaging/status");
        for t in transitions(sm.status.as_ref(), &status) {
            info!(reason = %t.reason, "{}", t.note);
            ctx.event(sm, t.warning, &t.reason, t.note).await;
        }
    }
    let broker_ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == condition::BROKER_READY && c.status == "True");
    Ok(Action::requeue(requeue_after(
        broker_ready,
        observed.broker_pods,
        &ctx.settings,
    )))
}
