//! Stale-ReplicaSet clean-up (DESIGN.md §7), the I/O around the pure verdict in
//! [`crate::decisions::replicasets`]: observe what concerns the instance (its managed Deployments, the
//! ReplicaSets they select or that carry its labels, their pods), ask the verdict, delete each
//! stale ReplicaSet (with a precondition on its UID, so a set recreated
//! under the same name is never hit), publish an Event per deletion and count it by reason.
//!
//! The Deployments judged are the ones this instance scales: every
//! `spec.consumers[].deployment` (the broker is a StatefulSet, which has no ReplicaSets; the
//! ReplicaSets of a broker Deployment of an earlier version go with it, or, left without it,
//! as case (b): they carry the instance's labels).
use crate::builders::{MANAGER, label};
use crate::context::{Caches, Context};
use crate::crd::SwappoMessaging;
use crate::decisions::replicasets::{
    DEFAULT_HISTORY_LIMIT, Observation, Stale, needs, old_revisions_hold_pods, stale_replica_sets,
    worth_a_look,
};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use futures::FutureExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::core::Selector;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use std::collections::{BTreeMap, BTreeSet};
use tracing::{info, warn};

/// The labels that mark a ReplicaSet as this instance's: its `instance` label and the
/// operator's `managed-by` label (the broker's pods carry both; a consumer's pod template
/// can carry them to opt in to case (b)).
pub fn instance_labels(sm: &SwappoMessaging) -> BTreeMap<String, String> {
    BTreeMap::from([
        (label::INSTANCE.to_owned(), sm.name_any()),
        (label::MANAGED_BY.to_owned(), MANAGER.to_owned()),
    ])
}

/// Names of the Deployments `sm` scales, in its namespace.
pub fn managed_deployment_names(sm: &SwappoMessaging) -> BTreeSet<String> {
    sm.spec
        .consumers
        .iter()
        .map(|c| c.deployment.clone())
        .collect()
}

/// One deletion done, for the caller to report.
#[derive(Debug, Clone)]
pub struct Deleted {
    /// What was deleted and why.
    pub stale: Stale,
    /// A reference to the deleted ReplicaSet (for the Event's `related` object).
    pub reference: ObjectReference,
}

/// Lists `K` in `api` under each selector, merged without duplicates (by UID).
async fn list_selected<K>(
    api: &Api<K>,
    selectors: &[Selector],
    what: &str,
    metrics: &Metrics,
) -> Result<Vec<K>>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for selector in selectors {
        metrics.read(&K::kind(&()));
        let items = api
            .list(&ListParams::default().labels_from(selector))
            .await
            .map_err(Error::kube(format!("list {what} ({selector})")))?
            .items;
        for item in items {
            if seen.insert(item.meta().uid.clone().unwrap_or_default()) {
                out.push(item);
            }
        }
    }
    Ok(out)
}

/// Observes what concerns `sm` in `ns`, deletes the ReplicaSets the verdict names, and
/// returns those deleted. Nothing is observed or deleted when `spec.cleanup.staleReplicaSets`
/// is false.
///
/// Reads stay proportional to this instance's own objects, not to the namespace (1000
/// instances in one namespace must not make each reconcile list thousands of objects): the
/// managed Deployments by name, the ReplicaSets under each one's selector and under the
/// instance's labels, and only when [`needs`] says so, the pods under the managed selectors
/// and the owner Deployments of labelled sets. A ReplicaSet already gone, or replaced under
/// the same name (UID precondition failed), is skipped silently: someone else cleaned it.
///
/// With `caches` (the controller's watches), a first look there decides whether to
/// read at all: a managed Deployment whose old revisions still hold pods
/// ([`old_revisions_hold_pods`]), or the operator's own ReplicaSets ([`worth_a_look`]). In a
/// steady state nothing is read. A consumer's zero-replica revisions beyond its history limit
/// alone do not make a look (its ReplicaSets are not cached; the Deployment controller prunes
/// those itself): they are judged at the next look. Deletions are always
/// decided on live reads.
pub async fn clean(ctx: &Context, sm: &SwappoMessaging, ns: &str) -> Result<Vec<Deleted>> {
    let (client, caches, metrics) = (&ctx.client, ctx.caches.get(), ctx.metrics.as_ref());
    if !sm.spec.cleanup.stale_replica_sets {
        return Ok(Vec::new());
    }
    let labels = instance_labels(sm);
    let names = managed_deployment_names(sm);
    // A cache still loading its first list would hide everything: read live meanwhile.
    let loaded = |c: &&Caches| {
        c.replica_sets
            .wait_until_ready()
            .now_or_never()
            .is_some_and(|r| r.is_ok())
    };
    if let Some(caches) = caches.filter(loaded) {
        // History limits and rollout state from the workloads cache (every Deployment,
        // trimmed); the cached ReplicaSets are the operator's own only.
        let workloads: Vec<_> = names
            .iter()
            .filter_map(|name| caches.workloads.get(&ObjectRef::new(name).within(ns)))
            .collect();
        let limits: BTreeMap<String, i32> = workloads
            .iter()
            .map(|d| {
                let limit = d
                    .spec
                    .revision_history_limit
                    .unwrap_or(DEFAULT_HISTORY_LIMIT);
                (d.name_any(), limit)
            })
            .collect();
        let in_ns: Vec<_> = caches
            .replica_sets
            .state()
            .into_iter()
            .filter(|rs| rs.namespace().as_deref() == Some(ns))
            .collect();
        let rolling = workloads.iter().any(|d| old_revisions_hold_pods(d));
        if !rolling && !worth_a_look(&names, &limits, in_ns.iter().map(AsRef::as_ref), &labels) {
            return Ok(Vec::new());
        }
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut managed = Vec::new();
    for name in names {
        metrics.read("Deployment");
        if let Some(d) = deployments
            .get_opt(&name)
            .await
            .map_err(Error::kube(format!("get Deployment {ns}/{name}")))?
        {
            managed.push(d);
        }
    }
    let managed_selectors: Vec<Selector> = managed
        .iter()
        .filter_map(|d| Selector::try_from(d.spec.selector.clone()).ok())
        .filter(|s| !s.selects_all())
        .collect();
    let mut rs_selectors = managed_selectors.clone();
    rs_selectors.push(Selector::from_iter(labels.clone()));
    let rs_list = list_selected(&replica_sets, &rs_selectors, "ReplicaSets", metrics).await?;
    if rs_list.is_empty() {
        return Ok(Vec::new());
    }
    let needed = needs(&managed, &rs_list, &labels);
    let pod_list = if needed.pods {
        list_selected(&pods, &managed_selectors, "Pods", metrics).await?
    } else {
        Vec::new()
    };
    let mut existing: BTreeSet<String> = managed.iter().filter_map(|d| d.uid()).collect();
    for name in &needed.owners_to_look_up {
        metrics.read("Deployment");
        if let Some(d) = deployments
            .get_opt(name)
            .await
            .map_err(Error::kube(format!("get Deployment {ns}/{name}")))?
        {
            existing.extend(d.uid());
        }
    }
    let verdict = stale_replica_sets(&Observation {
        managed: &managed,
        existing_deployment_uids: &existing,
        replica_sets: &rs_list,
        pods: &pod_list,
        instance_labels: &labels,
    });
    let mut deleted = Vec::new();
    for stale in verdict {
        let Some(rs) = rs_list.iter().find(|r| r.name_any() == stale.name) else {
            continue;
        };
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: rs.uid(),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        ctx.may_write()?;
        match replica_sets.delete(&stale.name, &params).await {
            Ok(_) => {
                info!(replicaset = %stale.name, reason = stale.reason.code(), "deleted a stale ReplicaSet: {}", stale.reason.message());
                deleted.push(Deleted {
                    reference: ObjectReference {
                        api_version: Some("apps/v1".into()),
                        kind: Some("ReplicaSet".into()),
                        namespace: Some(ns.to_owned()),
                        name: Some(stale.name.clone()),
                        uid: rs.uid(),
                        ..ObjectReference::default()
                    },
                    stale,
                });
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
                warn!(replicaset = %stale.name, code = s.code, "stale ReplicaSet already gone or replaced; skipped");
            }
            Err(e) => {
                return Err(Error::Kube {
                    action: format!("delete ReplicaSet {ns}/{}", stale.name),
                    source: e,
                });
            }
        }
    }
    Ok(deleted)
}

/// Attempts at [`count_cleaned`] before giving up: each conflict means another writer just
/// changed the object; a handful is plenty for one operator and the API server.
const COUNT_ATTEMPTS: u32 = 5;

/// Adds `n` to `status.replicaSetsCleaned` of `ns/name`, read fresh and written under a
/// `resourceVersion` precondition (retried on conflict), so no deletion is counted twice or
/// lost to a write from a stale copy. Returns the new total.
pub async fn count_cleaned(
    client: &Client,
    ns: &str,
    name: &str,
    n: u64,
    metrics: &Metrics,
) -> Result<u64> {
    let api: Api<SwappoMessaging> = Api::namespaced(client.clone(), ns);
    let mut attempt = 0;
    loop {
        attempt += 1;
        metrics.read("SwappoMessaging");
        let current = api
            .get(name)
            .await
            .map_err(Error::kube(format!("get SwappoMessaging {name}")))?;
        let total = current
            .status
            .as_ref()
            .map_or(0, |s| s.replica_sets_cleaned)
            .saturating_add(n);
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": current.resource_version()},
            "status": {"replicaSetsCleaned": total},
        });
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(total),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < COUNT_ATTEMPTS => continue,
            Err(e) => {
                return Err(Error::Kube {
                    action: format!("count cleaned ReplicaSets in the status of {name}"),
                    source: e,
                });
            }
        }
    }
}

/// Deletes the stale ReplicaSets ([`clean`]), with an Event and a metric count per
/// deletion, and the new `status.replicaSetsCleaned` when any were deleted. A failure is a
/// Warning Event, not a failed reconcile: the broker's status is not held hostage by the
/// clean-up, retried next time.
pub async fn clean_replica_sets(sm: &SwappoMessaging, ctx: &Context, ns: &str) {
    match clean(ctx, sm, ns).await {
        Ok(deleted) if deleted.is_empty() => {}
        Ok(deleted) => {
            for d in &deleted {
                let code = d.stale.reason.code();
                ctx.metrics.wrote("ReplicaSet");
                ctx.metrics.replica_set_cleaned(code);
                let note = format!(
                    "deleted stale ReplicaSet {}: {}",
                    d.stale.name,
                    d.stale.reason.message()
                );
                ctx.event_about(sm, false, code, note, Some(d.reference.clone()))
                    .await;
            }
            let n = deleted.len() as u64;
            let counted = match ctx.may_write() {
                Ok(()) => count_cleaned(&ctx.client, ns, &sm.name_any(), n, &ctx.metrics).await,
                Err(e) => Err(e),
            };
            match counted {
                Ok(_) => ctx.metrics.wrote("SwappoMessaging/status"),
                Err(e) => {
                    ctx.metrics.reconcile_failed(&e);
                    warn!(error = %e, "could not count the deleted ReplicaSets in status");
                }
            }
        }
        Err(e) => {
            ctx.metrics.reconcile_failed(&e);
            ctx.event(sm, true, "ReplicaSetCleanupFailed", e.to_string())
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::TestExt;

    #[test]
    fn managed_deployments_are_the_consumers_not_the_broker_stateful_set() {
        let sm = SwappoMessaging::new_in("dev", "ns")
            .with_queue("q")
            .with_consumer("worker", "q");
        let names: Vec<String> = managed_deployment_names(&sm).into_iter().collect();
        assert_eq!(names, ["worker"]);
        let external = sm.with_external("rabbit.example", false);
        let names: Vec<String> = managed_deployment_names(&external).into_iter().collect();
        assert_eq!(names, ["worker"]);
    }

    #[test]
    fn instance_labels_are_the_instance_and_the_operator() {
        let sm = SwappoMessaging::new_in("dev", "ns");
        let labels = instance_labels(&sm);
        assert_eq!(labels[label::INSTANCE], "dev");
        assert_eq!(labels[label::MANAGED_BY], "swappo-operator");
    }
}
