//! Upgrade from the broker Deployment of operator versions before the StatefulSet: the old
//! Deployment `<name>-rabbitmq` is deleted in the foreground (the API server keeps it until
//! its ReplicaSets and pods are gone, and a pod is gone only once the kubelet has stopped its
//! containers), and the StatefulSet is created only when neither it nor any broker pod that
//! is not the StatefulSet's is left. The volume is never opened by two brokers, and the new
//! pod opens the same database: the node name is the same (see
//! [`crate::builders::broker::node_hostname`]).
use super::owned::Owner;
use crate::builders::{MANAGER, Names, label, selector_labels};
use crate::crd::SwappoMessaging;
use crate::error::{Error, Result};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use kube::core::Selector;
use kube::{Api, Resource, ResourceExt};
use tracing::info;

/// Whether `obj` carries `sm`'s instance label and the operator's `managed-by` label (an
/// object of the same name someone else made is never touched).
pub fn is_ours<K: Resource>(sm: &SwappoMessaging, obj: &K) -> bool {
    let labels = obj.labels();
    labels.get(label::INSTANCE) == Some(&sm.name_any())
        && labels.get(label::MANAGED_BY).map(String::as_str) == Some(MANAGER)
}

/// Whether `pod` is run by a StatefulSet (its controller owner).
fn from_a_stateful_set(pod: &Pod) -> bool {
    pod.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.kind == "StatefulSet")
}

/// `true` when the broker StatefulSet may be applied: it exists already, or no broker
/// Deployment of an earlier version and none of its pods are left. Otherwise starts or waits
/// for their removal (`false`; the Deployment's deletion triggers the next reconcile, the
/// retry interval covers pods left without it).
pub async fn legacy_broker_gone(o: &Owner<'_>, names: &Names) -> Result<bool> {
    if o.observe::<StatefulSet>(&names.stateful_set)
        .await?
        .exists()
    {
        return Ok(true);
    }
    let legacy = o.observe::<Deployment>(&names.legacy_deployment).await?;
    if let Some(deployment) = legacy.current().filter(|d| is_ours(o.sm, d)) {
        if deployment.metadata.deletion_timestamp.is_none() {
            o.delete(
                &deployment,
                DeleteParams::foreground(),
                "LegacyBrokerDeleted",
            )
            .await?;
        }
        info!(deployment = %names.legacy_deployment, "waiting for the broker Deployment of an earlier version and its pods to be gone");
        return Ok(false);
    }
    let pods: Api<Pod> = Api::namespaced(o.ctx.client.clone(), o.ns);
    let selector = Selector::from_iter(selector_labels(o.sm));
    o.ctx.metrics.read("Pod");
    let left: Vec<String> = pods
        .list(&ListParams::default().labels_from(&selector))
        .await
        .map_err(Error::kube(format!("list broker pods ({selector})")))?
        .items
        .iter()
        .filter(|p| !from_a_stateful_set(p))
        .map(ResourceExt::name_any)
        .collect();
    if !left.is_empty() {
        info!(pods = ?left, "waiting for broker pods not run by the StatefulSet to be gone");
        return Ok(false);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::object_meta;
    use crate::fixtures::TestExt;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    #[test]
    fn only_objects_with_the_instance_and_operator_labels_are_ours() {
        let sm = SwappoMessaging::test();
        let ours = Deployment {
            metadata: object_meta(&sm, "test-rabbitmq"),
            ..Deployment::default()
        };
        assert!(is_ours(&sm, &ours));
        let mut theirs = ours.clone();
        theirs
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .remove(label::MANAGED_BY);
        assert!(!is_ours(&sm, &theirs));
        let other = SwappoMessaging::new_in("other", "test-ns");
        assert!(!is_ours(&other, &ours));
    }

    #[test]
    fn a_pod_counts_as_the_stateful_sets_only_when_it_controls_it() {
        let owned_by = |kind: &str, controller: bool| {
            let mut pod = Pod::default();
            pod.metadata.owner_references = Some(vec![OwnerReference {
                kind: kind.into(),
                controller: Some(controller),
                ..OwnerReference::default()
            }]);
            pod
        };
        assert!(from_a_stateful_set(&owned_by("StatefulSet", true)));
        assert!(!from_a_stateful_set(&owned_by("ReplicaSet", true)));
        assert!(!from_a_stateful_set(&owned_by("StatefulSet", false)));
        assert!(!from_a_stateful_set(&Pod::default()));
    }
}
