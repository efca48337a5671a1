//! Pure builders of the Kubernetes objects a `SwappoMessaging` owns.
//!
//! Each builder takes the resource (and what was observed) and returns the object to apply
//! with server-side apply: names, the standard labels and a controller owner reference are
//! set here, in one place, so every owned object carries them.
use crate::crd::SwappoMessaging;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

pub mod broker;
pub mod network_policy;
pub mod secret;

/// The field manager of every server-side apply, and the `managed-by` label value.
pub const MANAGER: &str = "swappo-operator";

/// The autoscaler's field manager on the status (its fields only: see
/// [`crate::crd::SwappoMessagingStatus`]).
pub const SCALER_MANAGER: &str = "swappo-operator-autoscaler";

/// `app.kubernetes.io/name` of the broker's objects.
pub const APP_NAME: &str = "rabbitmq";
/// `app.kubernetes.io/component` of the broker's objects.
pub const COMPONENT_BROKER: &str = "broker";

/// Label keys (`app.kubernetes.io/...`, the Kubernetes recommended labels).
pub mod label {
    /// The application's name.
    pub const NAME: &str = "app.kubernetes.io/name";
    /// The instance: the `SwappoMessaging` name.
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    /// The component within the application.
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    /// The tool managing the object.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// The larger application this is part of.
    pub const PART_OF: &str = "app.kubernetes.io/part-of";
}

/// Names of the owned objects, derived from the resource's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// Credentials Secret `<name>-rabbitmq`.
    pub secret: String,
    /// ConfigMap `<name>-rabbitmq-config`.
    pub config_map: String,
    /// PersistentVolumeClaim `<name>-rabbitmq-data`.
    pub pvc: String,
    /// StatefulSet `<name>-rabbitmq`: the broker.
    pub stateful_set: String,
    /// Deployment `<name>-rabbitmq`: the broker as operator versions before the StatefulSet
    /// ran it, deleted (with its pods) before the StatefulSet starts on the same volume.
    pub legacy_deployment: String,
    /// Service `<name>-rabbitmq`.
    pub service: String,
    /// NetworkPolicy `<name>-rabbitmq`.
    pub network_policy: String,
}

impl Names {
    /// The names for the resource `name`.
    pub fn new(name: &str) -> Self {
        let base = format!("{name}-rabbitmq");
        Self {
            secret: base.clone(),
            config_map: format!("{base}-config"),
            pvc: format!("{base}-data"),
            stateful_set: base.clone(),
            legacy_deployment: base.clone(),
            service: base.clone(),
            network_policy: base,
        }
    }

    /// The names for `sm`.
    pub fn of(sm: &SwappoMessaging) -> Self {
        Self::new(&sm.name_any())
    }
}

/// The selector labels of the broker's pods (a subset of [`labels`]; immutable once a
/// StatefulSet exists, so they never change; the same as the earlier broker Deployment's).
pub fn selector_labels(sm: &SwappoMessaging) -> BTreeMap<String, String> {
    BTreeMap::from([
        (label::NAME.to_owned(), APP_NAME.to_owned()),
        (label::INSTANCE.to_owned(), sm.name_any()),
        (label::COMPONENT.to_owned(), COMPONENT_BROKER.to_owned()),
    ])
}

/// The standard labels of every owned object.
pub fn labels(sm: &SwappoMessaging) -> BTreeMap<String, String> {
    let mut labels = selector_labels(sm);
    labels.insert(label::MANAGED_BY.to_owned(), MANAGER.to_owned());
    labels.insert(label::PART_OF.to_owned(), "swappo".to_owned());
    labels
}

/// The label selector the operator's watches of owned objects use.
pub fn managed_by_selector() -> String {
    format!("{}={MANAGER}", label::MANAGED_BY)
}

/// The controller owner reference to `sm` (garbage collection deletes the object with it).
pub fn owner_reference(sm: &SwappoMessaging) -> OwnerReference {
    let mut owner = sm
        .controller_owner_ref(&())
        .unwrap_or_else(|| OwnerReference {
            api_version: SwappoMessaging::api_version(&()).into_owned(),
            kind: SwappoMessaging::kind(&()).into_owned(),
            name: sm.name_any(),
            uid: sm.uid().unwrap_or_default(),
            controller: Some(true),
            ..OwnerReference::default()
        });
    owner.block_owner_deletion = Some(true);
    owner
}

/// Metadata of an object `name` that outlives `sm` when it retains its data
/// ([`SwappoMessaging::retains_data`]): without an owner reference then, so garbage collection
/// leaves it and a resource re-created with the same name finds and uses it (it is found by
/// name and label, never by owner); with one under `whenDeleted: Delete`.
pub fn retained_object_meta(sm: &SwappoMessaging, name: &str) -> ObjectMeta {
    let mut meta = object_meta(sm, name);
    if sm.retains_data() {
        meta.owner_references = None;
    }
    meta
}

/// Metadata of an owned object `name`: namespace, standard labels, owner reference.
pub fn object_meta(sm: &SwappoMessaging, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: sm.namespace(),
        labels: Some(labels(sm)),
        owner_references: Some(vec![owner_reference(sm)]),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::TestExt;

    #[test]
    fn retained_objects_have_no_owner_unless_the_policy_is_delete_or_the_broker_external() {
        use crate::crd::{RetentionPolicy, StorageSpec};
        let mut sm = SwappoMessaging::test();
        assert!(retained_object_meta(&sm, "x").owner_references.is_none());
        assert!(retained_object_meta(&sm, "x").labels.is_some());
        sm.spec.broker.storage = Some(StorageSpec {
            when_deleted: RetentionPolicy::Delete,
            ..StorageSpec::default()
        });
        assert_eq!(
            retained_object_meta(&sm, "x").owner_references,
            object_meta(&sm, "x").owner_references
        );
        let external = SwappoMessaging::test().with_external("h", false);
        assert!(
            retained_object_meta(&external, "x")
                .owner_references
                .is_some()
        );
    }

    #[test]
    fn owned_object_names_derive_from_the_resource_name() {
        let names = Names::new("prod");
        assert_eq!(names.secret, "prod-rabbitmq");
        assert_eq!(names.config_map, "prod-rabbitmq-config");
        assert_eq!(names.pvc, "prod-rabbitmq-data");
        assert_eq!(names.stateful_set, "prod-rabbitmq");
        assert_eq!(names.legacy_deployment, "prod-rabbitmq");
        assert_eq!(names.service, "prod-rabbitmq");
        assert_eq!(names.network_policy, "prod-rabbitmq");
    }

    #[test]
    fn object_meta_carries_the_standard_labels_and_a_controller_owner_reference() {
        let sm = SwappoMessaging::test();
        let meta = object_meta(&sm, "x");
        let labels = meta.labels.unwrap();
        assert_eq!(labels[label::NAME], "rabbitmq");
        assert_eq!(labels[label::INSTANCE], "test");
        assert_eq!(labels[label::COMPONENT], "broker");
        assert_eq!(labels[label::MANAGED_BY], "swappo-operator");
        let owner = &meta.owner_references.unwrap()[0];
        assert_eq!(owner.kind, "SwappoMessaging");
        assert_eq!(owner.api_version, "swappo.io/v1alpha1");
        assert_eq!(owner.uid, "0b4c1e3e-0000-4000-8000-000000000001");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, Some(true));
        assert_eq!(meta.namespace.as_deref(), Some("test-ns"));
    }
}
