//! What the controller and the autoscaler share: the settings, the API client, the Event
//! recorder, the metrics and the watch caches. Its own module so that neither loop imports
//! the other.
use crate::broker::amqp::Target;
use crate::broker::connections::{Connections, Shared};
use crate::builders::MANAGER;
use crate::builders::secret::Credentials;
use crate::crd::SwappoMessaging;
use crate::decisions::claims::Autoscaler;
use crate::decisions::status::AmqpCheck;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    ConfigMap, ObjectReference, PersistentVolumeClaim, Secret, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DynamicObject, PartialObjectMeta};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Reconciler settings (from the flags, or set directly by tests).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Dial this instead of the broker's endpoint (development only).
    pub broker_override: Option<Target>,
    /// AMQP login timeout.
    pub amqp_timeout: Duration,
    /// Requeue interval while the broker is ready.
    pub recheck: Duration,
    /// Requeue interval while it is not.
    pub retry: Duration,
    /// `reportingInstance` of Events.
    pub instance: String,
    /// Reconciles run at once (0: unbounded).
    pub concurrency: u16,
    /// Management API `host:port` instead of the derived one (development only).
    pub management_override: Option<String>,
    /// Autoscaler poll interval.
    pub autoscale_interval: Duration,
    /// The namespace the operator runs in (its pod's), allowed through the brokers'
    /// NetworkPolicies; `None` outside a cluster.
    pub operator_namespace: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            broker_override: None,
            amqp_timeout: Duration::from_secs(5),
            recheck: Duration::from_secs(60),
            retry: Duration::from_secs(10),
            instance: "swappo-operator".into(),
            concurrency: 16,
            management_override: None,
            autoscale_interval: Duration::from_secs(2),
            operator_namespace: None,
        }
    }
}

/// Watch caches of the objects the operator owns (selected by its `managed-by` label) and of
/// the watched namespaces' ReplicaSets, filled by the controller's own watches (the same
/// streams that trigger reconciles). A reconcile reads them first and goes to the API server
/// only on a miss, or when the cached copy differs from its decision: then a live read
/// confirms before anything is written, so a cache that lags never causes a write or an
/// Event. In a steady state a reconcile reads none of its owned objects from the server.
#[derive(Clone)]
pub struct Caches {
    /// Secrets the operator owns (its credentials Secrets).
    pub secrets: Store<Secret>,
    /// Broker ConfigMaps.
    pub config_maps: Store<ConfigMap>,
    /// Broker volume claims.
    pub claims: Store<PersistentVolumeClaim>,
    /// Deployments with the operator's label: brokers of operator versions before the
    /// StatefulSet (removed on upgrade).
    pub deployments: Store<Deployment>,
    /// Broker StatefulSets.
    pub stateful_sets: Store<StatefulSet>,
    /// Broker NetworkPolicies.
    pub network_policies: Store<NetworkPolicy>,
    /// Broker Services.
    pub services: Store<Service>,
    /// The ReplicaSets carrying the operator's `managed-by` label (the brokers', and sets
    /// left with an instance's labels): the clean-up's first look. Others' ReplicaSets are
    /// not cached; a consumer Deployment's rollout state comes from [`Caches::workloads`].
    pub replica_sets: Store<ReplicaSet>,
    /// Every Deployment in the watched namespaces, trimmed to what the autoscaler and the
    /// clean-up read (no pod template, no conditions, no managed fields): the consumer
    /// Deployments' replicas and rollout state, read without a GET per poll.
    pub workloads: Store<Deployment>,
    /// HorizontalPodAutoscalers in the watched namespaces: a consumer Deployment one of them
    /// targets is not scaled by the autoscaler.
    pub hpas: Store<HorizontalPodAutoscaler>,
    /// KEDA ScaledObjects, the same way (`None`: KEDA's CRD was not installed at start).
    pub scaled_objects: Option<Store<DynamicObject>>,
    /// The name and resourceVersion of every Secret in the watched namespaces (a
    /// metadata-only watch, nothing else kept): a user's `credentialsSecret` is read from the
    /// API server only when its resourceVersion is not the one last read
    /// ([`Context::user_secrets`]), and its changes trigger the resources naming it.
    pub secret_versions: Store<PartialObjectMeta<Secret>>,
}

impl Caches {
    /// The autoscalers (HPAs, ScaledObjects) in `ns` that target a Deployment.
    pub fn autoscalers(&self, ns: &str) -> Vec<Autoscaler> {
        let mut out: Vec<Autoscaler> = self
            .hpas
            .state()
            .iter()
            .filter(|h| h.namespace().as_deref() == Some(ns))
            .filter_map(|h| {
                let target = &h.spec.scale_target_ref;
                (target.kind == "Deployment").then(|| Autoscaler {
                    kind: "HorizontalPodAutoscaler",
                    name: h.name_any(),
                    target: target.name.clone(),
                })
            })
            .collect();
        if let Some(objects) = &self.scaled_objects {
            out.extend(
                objects
                    .state()
                    .iter()
                    .filter(|o| o.namespace().as_deref() == Some(ns))
                    .filter_map(|o| {
                        let target = o.data.get("spec")?.get("scaleTargetRef")?;
                        // KEDA's default target kind is a Deployment.
                        let kind = target
                            .get("kind")
                            .and_then(|k| k.as_str())
                            .unwrap_or("Deployment");
                        let name = target.get("name")?.as_str()?.to_owned();
                        (kind == "Deployment").then(|| Autoscaler {
                            kind: "ScaledObject",
                            name: o.name_any(),
                            target: name,
                        })
                    }),
            );
        }
        out
    }
}

/// `name` in `ns` from `cache`, if the cache holds it.
pub fn cached<K>(cache: Option<&Store<K>>, ns: &str, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    cache?.get(&ObjectRef::new(name).within(ns))
}

/// What every reconcile shares.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub settings: Settings,
    /// The watch caches, once [`crate::controller::run_controller`] has started the watches.
    pub caches: OnceLock<Caches>,
    /// One AMQP connection per broker, shared by the reconciler and the autoscaler.
    pub amqp: Connections,
    /// The users' `credentialsSecret`s as last read, by (namespace, name): used while the
    /// watch shows the same resourceVersion ([`Caches::secret_versions`]).
    pub user_secrets: Mutex<HashMap<(String, String), Arc<Secret>>>,
    /// What each resource's queues were last declared for in this process (the
    /// `status.queuesDeclared` it wrote), so a recheck that runs before the watch brought
    /// that status back does not declare them again.
    pub(crate) queues_declared: Mutex<HashMap<ObjectRef<SwappoMessaging>, String>>,
    /// The installed CRD predates `status.queuesDeclared` (the API server refused it: helm
    /// does not upgrade CRDs): the status is written without it, and the in-process record
    /// above is all there is.
    pub(crate) crd_without_queues_declared: std::sync::atomic::AtomicBool,
    pub(crate) failures: Mutex<HashMap<ObjectRef<SwappoMessaging>, u32>>,
    /// Cancelled when this replica lost the leader Lease: from then on nothing is written.
    lost_leadership: CancellationToken,
}

impl Context {
    /// A context for `client`.
    pub fn new(client: Client, metrics: Arc<Metrics>, settings: Settings) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: Some(settings.instance.clone()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            settings,
            caches: OnceLock::new(),
            amqp: Connections::default(),
            user_secrets: Mutex::default(),
            queues_declared: Mutex::default(),
            crd_without_queues_declared: Default::default(),
            failures: Mutex::default(),
            lost_leadership: CancellationToken::new(),
        }
    }

    /// Stops every write of this process: called at once when the leader Lease is lost, so
    /// a reconcile or an autoscaler pass in flight writes nothing more while another replica
    /// leads.
    pub fn stop_writing(&self) {
        self.lost_leadership.cancel();
    }

    /// `Ok` while this replica may write; [`Error::LostLeadership`] once it lost the Lease.
    /// Checked right before every write (apply, create, delete, scale, status, Event).
    pub fn may_write(&self) -> Result<()> {
        if self.lost_leadership.is_cancelled() {
            return Err(Error::LostLeadership(
                "stopped writing: another replica may lead".into(),
            ));
        }
        Ok(())
    }

    /// The kept AMQP connection to `target` as `creds` ([`Connections::get`]), opened when
    /// there is none (counted in `amqp_connections_opened`).
    pub async fn broker_connection(
        &self,
        target: &Target,
        creds: &Credentials,
    ) -> std::result::Result<Shared, AmqpCheck> {
        self.amqp
            .get(target, creds, self.settings.amqp_timeout, || {
                self.metrics.amqp_connections_opened.inc();
            })
            .await
    }

    /// Publishes an Event on `sm`, with no related object.
    pub async fn event(&self, sm: &SwappoMessaging, warning: bool, reason: &str, note: String) {
        self.event_about(sm, warning, reason, note, None).await;
    }

    /// Publishes an Event on `sm`, `related` to a child object when given (the recorder folds
    /// Events with the same reason and related object into one series).
    pub async fn event_about(
        &self,
        sm: &SwappoMessaging,
        warning: bool,
        reason: &str,
        note: String,
        related: Option<ObjectReference>,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: related,
        };
        if self.may_write().is_err() {
            return;
        }
        if let Err(e) = self.recorder.publish(&event, &sm.object_ref(&())).await {
            warn!(error = %e, reason, "could not publish an Event");
        } else {
            self.metrics.wrote("Event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn once_the_lease_is_lost_every_write_is_refused() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("a URL"));
        let client = Client::try_from(config).expect("a client (never used)");
        let ctx = Context::new(client, Arc::new(Metrics::default()), Settings::default());
        assert!(ctx.may_write().is_ok());
        ctx.stop_writing();
        let refused = ctx.may_write().unwrap_err();
        assert_eq!(refused.kind(), "lost_leadership");
    }
}
