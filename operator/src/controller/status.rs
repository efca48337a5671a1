//! The status step of the reconcile: the fields the reconciler owns, decided by
//! [`desired_status`] and written by server-side apply when they changed, with an Event per
//! condition transition.
use super::error_policy::requeue_after;
use crate::builders::MANAGER;
use crate::context::Context;
use crate::crd::SwappoMessaging;
use crate::decisions::status::{Observed, condition, desired_status, reconciler_part, transitions};
use crate::error::{Error, Result};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use std::sync::atomic::Ordering;
use tracing::{info, warn};

/// Writes the status decided from `with_queues` (the resource with its `QueuesReady`
/// condition decided) and `observed`, when it differs from the resource's; publishes the
/// transitions' Events; and says when to look again.
pub async fn write(
    sm: &SwappoMessaging,
    with_queues: &SwappoMessaging,
    observed: &Observed,
    now: &Time,
    ctx: &Context,
) -> Result<Action> {
    let status = desired_status(with_queues, observed, now);
    let current = sm.status.clone().unwrap_or_default();
    let old_crd = &ctx.crd_without_queues_declared;
    let mut ours = reconciler_part(&status);
    if old_crd.load(Ordering::Relaxed) {
        without_queues_declared(&mut ours);
    }
    if ours != reconciler_part(&current) {
        ctx.may_write()?;
        let api: Api<SwappoMessaging> =
            Api::namespaced(ctx.client.clone(), &sm.namespace().unwrap_or_default());
        // Server-side apply of the reconciler's fields only, under its own field manager:
        // the autoscaler's fields (and its condition, conditions being a map keyed by type)
        // are not in this body, so this write cannot undo them, and no resourceVersion guard
        // (nor a retry on conflict) is needed.
        let apply = |part: &serde_json::Value| {
            let body = serde_json::json!({
                "apiVersion": "swappo.io/v1alpha1",
                "kind": "SwappoMessaging",
                "status": part,
            });
            let api = api.clone();
            let name = sm.name_any();
            async move {
                api.patch_status(
                    &name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&body),
                )
                .await
            }
        };
        let mut applied = apply(&ours).await;
        if let Err(kube::Error::Api(s)) = &applied
            && s.message.contains("queuesDeclared")
        {
            warn!(
                "the installed SwappoMessaging CRD has no status.queuesDeclared (apply crds/: \
                 helm does not upgrade CRDs); the status is written without it"
            );
            old_crd.store(true, Ordering::Relaxed);
            without_queues_declared(&mut ours);
            applied = apply(&ours).await;
        }
        applied.map_err(Error::kube(format!(
            "apply the status of SwappoMessaging {}",
            sm.name_any()
        )))?;
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

/// `part` without `queuesDeclared` (for a CRD that predates it).
fn without_queues_declared(part: &mut serde_json::Value) {
    if let Some(map) = part.as_object_mut() {
        map.remove("queuesDeclared");
    }
}
