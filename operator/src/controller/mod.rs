//! The controller: the watches that trigger reconciles and fill the [`Caches`], the
//! reconcile ([`reconcile`]: a list of steps), its error policy, the generic apply step for
//! owned objects ([`owned`]), the credentials, the stale-ReplicaSet clean-up and the status
//! write. It starts the autoscaler ([`crate::scaler`]) beside it on the same caches.
pub mod autoscalers;
pub mod cleanup;
pub mod credentials;
pub mod error_policy;
pub mod migration;
pub mod owned;
pub mod reconcile;
pub mod status;

pub use error_policy::{backoff_delay, error_policy, requeue_after};
pub use reconcile::reconcile;

use crate::builders::{label, managed_by_selector};
use crate::context::{Caches, Context};
use crate::crd::SwappoMessaging;
use crate::decisions::status::condition;
use cleanup::managed_deployment_names;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Predicate, PredicateConfig, WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// Drops what no reader of the caches needs: managed fields (a good part of every object's
/// size).
fn trim<K: Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

/// [`trim`], and a ReplicaSet's pod template: the clean-up's first look and the mapping of
/// ReplicaSet events to instances read only metadata, replica counts and owners, and the
/// template is most of a ReplicaSet.
fn trim_replica_set(rs: &mut ReplicaSet) {
    trim(rs);
    rs.spec.template = None;
}

/// Reconcile requests for one resource within this long are merged into one (kube's
/// trailing-edge debounce): creating a broker's five objects, or a rollout's several
/// Deployment updates, make one reconcile instead of one each. Short against the 60 s recheck
/// and the 2 s autoscaler poll, and objects here are not updated continuously, so nothing is
/// hidden for long.
const DEBOUNCE: std::time::Duration = std::time::Duration::from_secs(1);

/// [`trim`], a Deployment's pod template and conditions, and every annotation but its
/// revision: the autoscaler reads replicas, the clean-up the history limit, the selector and
/// the rollout's replica counts.
fn trim_workload(d: &mut Deployment) {
    trim(d);
    if let Some(annotations) = d.metadata.annotations.as_mut() {
        annotations.retain(|k, _| k == crate::decisions::replicasets::REVISION_ANNOTATION);
    }
    d.spec.template = Default::default();
    if let Some(status) = d.status.as_mut() {
        status.conditions = None;
    }
}

/// What of a Deployment tells the clean-up to look again: its generation and its pods by
/// revision (a predicate on the workloads watch).
fn rollout_state(d: &Deployment) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let status = d.status.clone().unwrap_or_default();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        d.metadata.generation,
        status.replicas,
        status.updated_replicas,
        status.available_replicas,
    )
        .hash(&mut h);
    Some(h.finish())
}

/// The `SwappoMessaging` objects in the Deployment's namespace that scale it.
pub fn scaling(
    d: &Deployment,
    instances: &Store<SwappoMessaging>,
) -> Vec<ObjectRef<SwappoMessaging>> {
    let (ns, name) = (d.namespace(), d.name_any());
    instances
        .state()
        .iter()
        .filter(|sm| sm.namespace() == ns)
        .filter(|sm| sm.spec.consumers.iter().any(|c| c.deployment == name))
        .map(|sm| ObjectRef::from_obj(sm.as_ref()))
        .collect()
}

/// Only what says which object and which version: name, namespace, uid, resourceVersion.
fn trim_to_version<K>(o: &mut PartialObjectMeta<K>) {
    let m = &mut o.metadata;
    *m = ObjectMeta {
        name: m.name.take(),
        namespace: m.namespace.take(),
        uid: m.uid.take(),
        resource_version: m.resource_version.take(),
        ..ObjectMeta::default()
    };
}

/// A watch of `api` that fills a cache as it goes, each object passed through `trim` first:
/// the stream of touched objects (for the controller's triggers) and the cache's reader.
fn reflected<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
) -> (
    impl futures::Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static,
    Store<K>,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(trim)
        .reflect(writer)
        .touched_objects();
    (stream, reader)
}

/// Runs the controller until `shutdown`: watches `SwappoMessaging` (in `namespace`, or all),
/// the objects it owns and its ReplicaSets (selected by the `managed-by` label), the
/// Deployments (trimmed: the consumers') and the Secrets' versions (metadata only: the users'
/// credentials Secrets), each watch also
/// filling the [`Caches`] the reconciler reads, and the other autoscalers (HPAs, KEDA
/// ScaledObjects) the scaler must not fight.
pub async fn run_controller(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: CancellationToken,
) {
    fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let client = &ctx.client;
    let owned = watcher::Config::default().labels(&managed_by_selector());
    let (secrets, secrets_cache) = reflected(api::<Secret>(client, namespace), owned.clone(), trim);
    let (config_maps, config_maps_cache) =
        reflected(api::<ConfigMap>(client, namespace), owned.clone(), trim);
    let (claims, claims_cache) = reflected(
        api::<PersistentVolumeClaim>(client, namespace),
        owned.clone(),
        trim,
    );
    let (deployments, deployments_cache) =
        reflected(api::<Deployment>(client, namespace), owned.clone(), trim);
    let (stateful_sets, stateful_sets_cache) =
        reflected(api::<StatefulSet>(client, namespace), owned.clone(), trim);
    let (policies, policies_cache) =
        reflected(api::<NetworkPolicy>(client, namespace), owned.clone(), trim);
    let (services, services_cache) =
        reflected(api::<Service>(client, namespace), owned.clone(), trim);
    // The operator's own ReplicaSets only (its label), not every ReplicaSet of the cluster.
    let (replica_sets, replica_sets_cache) = reflected(
        api::<ReplicaSet>(client, namespace),
        owned.clone(),
        trim_replica_set,
    );
    let (workloads, workloads_cache) = reflected(
        api::<Deployment>(client, namespace),
        watcher::Config::default(),
        trim_workload,
    );
    // Every Secret's name and resourceVersion only (metadata-only watch, trimmed): users'
    // credentials Secrets carry no label of ours, and a metadata watch costs a few hundred
    // bytes per Secret where a full one would hold every Secret's data.
    let (secret_versions, secret_versions_cache) = reflected(
        api::<PartialObjectMeta<Secret>>(client, namespace),
        watcher::Config::default(),
        trim_to_version,
    );
    let (hpas, scaled_objects, autoscaler_watches) = autoscalers::watch(client, namespace).await;
    // One controller per context (per process): set once.
    let _ = ctx.caches.set(Caches {
        hpas,
        scaled_objects,
        secrets: secrets_cache,
        config_maps: config_maps_cache,
        claims: claims_cache,
        deployments: deployments_cache,
        stateful_sets: stateful_sets_cache,
        network_policies: policies_cache,
        services: services_cache,
        replica_sets: replica_sets_cache,
        workloads: workloads_cache,
        secret_versions: secret_versions_cache,
    });
    let (resources, writer) = reflector::store();
    let trigger = watcher(
        api::<SwappoMessaging>(client, namespace),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .touched_objects()
    // Only a new resource, a spec change, or the autoscaler's condition flipping calls for a
    // reconcile (`Ready` follows `ConsumersScaled` at once, not at the next recheck): the
    // other status writes of the operator's own loops would otherwise each cost one more
    // (several per resource while 1000 of them start).
    .predicate_filter(
        predicates::generation.combine(consumers_scaled),
        PredicateConfig::default(),
    );
    let base = Controller::for_stream(trigger, resources.clone());
    let instances = resources.clone();
    let namers = resources.clone();
    let scalers = resources.clone();
    let listed = resources.clone();
    let scaler = crate::scaler::run(ctx.clone(), resources, shutdown.clone());
    // ReplicaSet changes (a rollout finishing, a set scaled by hand, an orphan appearing)
    // reconcile the instances that manage their Deployment or whose labels they carry.
    let controller = base
        .watches_stream(replica_sets, move |rs| concerned(&rs, &instances))
        // A consumer Deployment's rollout moved (its ReplicaSets' replicas changed): the
        // instances scaling it look for stale ReplicaSets. Its other changes do not matter.
        .watches_stream(
            workloads.predicate_filter(rollout_state, PredicateConfig::default()),
            move |d| scaling(&d, &scalers),
        )
        // A user's credentials Secret changed: the resources naming it log in again.
        .watches_stream(secret_versions, move |s| naming_secret(&s, &namers))
        .owns_stream(deployments)
        .owns_stream(stateful_sets)
        .owns_stream(policies)
        .owns_stream(services)
        .owns_stream(config_maps)
        .owns_stream(secrets)
        .owns_stream(claims)
        .with_config(
            controller::Config::default()
                .concurrency(ctx.settings.concurrency)
                .debounce(DEBOUNCE),
        )
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => debug!(object = %obj, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile did not complete"),
            }
        });
    // kube holds the reconciles until the resources' first list is in, and its graceful
    // shutdown waits for them: a shutdown before that list waited forever (the stopped watch
    // never fills the store). Then no reconcile ever ran, so the controller is dropped.
    let stop = shutdown.clone();
    let never_listed = async move {
        stop.cancelled().await;
        // Ready once is ready for good; a watch dropped before its first list is not.
        if matches!(listed.wait_until_ready().now_or_never(), Some(Ok(()))) {
            std::future::pending::<()>().await;
        }
    };
    let controller = async {
        tokio::select! {
            () = controller => {}
            () = never_listed => debug!("stopped before the first list: no reconcile ran"),
        }
    };
    // The other autoscalers' watches only fill caches; they stop with the controller.
    let watches = futures::stream::select_all(autoscaler_watches)
        .take_until(shutdown.cancelled_owned())
        .for_each(|()| async {});
    tokio::join!(controller, scaler, watches);
    info!("controller stopped");
}

/// The status of the autoscaler's `ConsumersScaled` condition, hashed (a reconcile
/// predicate: when it flips, the reconciler decides `Ready` again).
fn consumers_scaled(sm: &SwappoMessaging) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let status = &sm.condition(condition::CONSUMERS_SCALED)?.status;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    status.hash(&mut h);
    Some(h.finish())
}

/// The `SwappoMessaging` objects in the Secret's namespace that name it in
/// `spec.broker.credentialsSecret`.
pub fn naming_secret(
    secret: &PartialObjectMeta<Secret>,
    instances: &Store<SwappoMessaging>,
) -> Vec<ObjectRef<SwappoMessaging>> {
    let (ns, name) = (secret.namespace(), secret.name_any());
    instances
        .state()
        .iter()
        .filter(|sm| sm.namespace() == ns)
        .filter(|sm| sm.spec.broker.credentials_secret.as_deref() == Some(name.as_str()))
        .map(|sm| ObjectRef::from_obj(sm.as_ref()))
        .collect()
}

/// The `SwappoMessaging` objects a ReplicaSet change concerns: the instance named by its
/// `instance` label, and every instance managing its owning Deployment (by name, in the same
/// namespace). Used to map the ReplicaSet watch onto reconciles.
pub fn concerned(
    rs: &ReplicaSet,
    instances: &Store<SwappoMessaging>,
) -> Vec<ObjectRef<SwappoMessaging>> {
    let Some(ns) = rs.namespace() else {
        return Vec::new();
    };
    let owner = rs
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "Deployment")
        .map(|o| o.name.clone());
    let labelled = rs.labels().get(label::INSTANCE).cloned();
    instances
        .state()
        .iter()
        .filter(|sm| sm.namespace().as_deref() == Some(ns.as_str()))
        .filter(|sm| {
            labelled.as_deref() == Some(sm.name_any().as_str())
                || owner
                    .as_ref()
                    .is_some_and(|d| managed_deployment_names(sm).contains(d))
        })
        .map(|sm| ObjectRef::from_obj(sm.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::TestExt;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::runtime::reflector::store;

    fn rs(name: &str, labels: &[(&str, &str)], owner: Option<&str>) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                owner_references: owner.map(|d| {
                    vec![OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: "Deployment".into(),
                        name: d.into(),
                        uid: format!("uid-{d}"),
                        controller: Some(true),
                        ..OwnerReference::default()
                    }]
                }),
                ..ObjectMeta::default()
            },
            spec: ReplicaSetSpec::default(),
            status: None,
        }
    }

    #[test]
    fn a_replica_set_change_maps_to_the_instances_managing_or_labelling_it() {
        let (reader, mut writer) = store::<SwappoMessaging>();
        let dev = SwappoMessaging::new_in("dev", "ns")
            .with_queue("q")
            .with_consumer("worker", "q");
        let other = SwappoMessaging::new_in("other", "ns");
        let elsewhere = SwappoMessaging::new_in("dev", "elsewhere")
            .with_queue("q")
            .with_consumer("worker", "q");
        for sm in [dev, other, elsewhere] {
            writer.apply_watcher_event(&watcher::Event::Apply(sm));
        }
        let names = |refs: Vec<ObjectRef<SwappoMessaging>>| {
            let mut v: Vec<String> = refs.into_iter().map(|r| r.name).collect();
            v.sort();
            v
        };
        assert_eq!(
            names(concerned(&rs("worker-1", &[], Some("worker")), &reader)),
            ["dev"]
        );
        // The broker is a StatefulSet: a ReplicaSet of a Deployment of that name concerns the
        // instance through its labels only (an earlier version's broker carries them).
        assert!(concerned(&rs("dev-rabbitmq-1", &[], Some("dev-rabbitmq")), &reader).is_empty());
        assert_eq!(
            names(concerned(
                &rs(
                    "dev-rabbitmq-1",
                    &[(label::INSTANCE, "dev")],
                    Some("dev-rabbitmq")
                ),
                &reader
            )),
            ["dev"]
        );
        assert_eq!(
            names(concerned(
                &rs("x", &[(label::INSTANCE, "other")], None),
                &reader
            )),
            ["other"]
        );
        assert!(concerned(&rs("web-1", &[("app", "web")], Some("web")), &reader).is_empty());
    }
}
