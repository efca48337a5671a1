//! The reconciler: observe the resource and its objects, decide with the pure builders and
//! status functions, apply with server-side apply under one field manager ([`MANAGER`]).
//! Nothing is written when the observed state already matches the decision.
use crate::amqp::{self, Target};
use crate::builders::secret::{Credentials, Endpoint, credentials_secret, key, secret_value};
use crate::builders::{MANAGER, Names, broker, managed_by_selector};
use crate::crd::SwappoMessaging;
use crate::diff::needs_apply;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::status::{
    AmqpCheck, CredentialsState, Observed, condition, desired_status, transitions,
};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{PredicateConfig, WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};

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
    /// Broker Deployments.
    pub deployments: Store<Deployment>,
    /// Broker Services.
    pub services: Store<Service>,
    /// Every ReplicaSet in the watched namespaces (the clean-up's first look).
    pub replica_sets: Store<ReplicaSet>,
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
    /// The watch caches, once [`run_controller`] has started the watches.
    pub caches: OnceLock<Caches>,
    failures: Mutex<HashMap<ObjectRef<SwappoMessaging>, u32>>,
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
            failures: Mutex::default(),
        }
    }

    async fn event(&self, sm: &SwappoMessaging, warning: bool, reason: &str, note: String) {
        self.event_about(sm, warning, reason, note, None).await;
    }

    /// Publishes an Event on `sm`, `related` to a child object when given (the recorder folds
    /// Events with the same reason and related object into one series).
    async fn event_about(
        &self,
        sm: &SwappoMessaging,
        warning: bool,
        reason: &str,
        note: String,
        related: Option<k8s_openapi::api::core::v1::ObjectReference>,
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
        if let Err(e) = self.recorder.publish(&event, &sm.object_ref(&())).await {
            warn!(error = %e, reason, "could not publish an Event");
        } else {
            self.metrics.wrote("Event");
        }
    }
}

/// The delay before deciding again when the status write met a newer version of the
/// resource (a conflict is not a failure: no backoff, no Warning Event).
const CONFLICT_RETRY: Duration = Duration::from_secs(1);

/// When to look again after a successful reconcile: at the recheck interval while the broker
/// is ready, and also while a managed broker's pods are not ready (the Deployment's watch
/// brings their change; polling at the retry interval would only add load: 1000 brokers
/// starting together would mean 100 reconciles per second for nothing); at the retry interval
/// otherwise (an AMQP login failing has no watch to wake the operator).
pub fn requeue_after(
    broker_ready: bool,
    broker_pods: Option<(i32, i32)>,
    settings: &Settings,
) -> Duration {
    let waiting_for_pods = broker_pods.is_some_and(|(ready, _)| ready < 1);
    if broker_ready || waiting_for_pods {
        settings.recheck
    } else {
        settings.retry
    }
}

/// The delay before retrying after `failures` consecutive failures: 5 s doubling to 5 min.
pub fn backoff_delay(failures: u32) -> Duration {
    Duration::from_secs(5u64.saturating_mul(1 << failures.min(6)).min(300))
}

/// `error_policy`: requeue with a per-object exponential backoff.
pub fn error_policy(sm: Arc<SwappoMessaging>, error: &Error, ctx: Arc<Context>) -> Action {
    let mut failures = ctx
        .failures
        .lock()
        .expect("the failure map is never poisoned");
    let n = failures
        .entry(ObjectRef::from_obj(sm.as_ref()))
        .or_insert(0);
    let delay = backoff_delay(*n);
    *n = n.saturating_add(1);
    warn!(name = %sm.name_any(), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Reconciles one `SwappoMessaging`.
#[instrument(skip(sm, ctx), fields(namespace = sm.namespace().unwrap_or_default(), name = sm.name_any()))]
pub async fn reconcile(sm: Arc<SwappoMessaging>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    let result = reconcile_inner(&sm, &ctx).await;
    match &result {
        Ok(_) => {
            ctx.failures
                .lock()
                .expect("never poisoned")
                .remove(&ObjectRef::from_obj(sm.as_ref()));
        }
        Err(e) => {
            ctx.metrics.reconcile_failed(e);
            ctx.event(&sm, true, "ReconcileFailed", e.to_string()).await;
        }
    }
    result
}

/// Outcome of [`ensure`].
enum Applied<K> {
    Unchanged(K),
    Created(K),
    Repaired(K),
}

impl<K> Applied<K> {
    fn into_inner(self) -> K {
        match self {
            Applied::Unchanged(k) | Applied::Created(k) | Applied::Repaired(k) => k,
        }
    }
}

/// An observed object and where it came from.
enum Seen<K> {
    /// The watch cache's copy (as fresh as the last watch event).
    Cached(Arc<K>),
    /// A live read from the API server (`None`: it does not exist).
    Live(Option<K>),
}

impl<K: Clone> Seen<K> {
    /// The object, if it exists (as far as this observation knows).
    fn current(&self) -> Option<K> {
        match self {
            Seen::Cached(k) => Some(K::clone(k)),
            Seen::Live(k) => k.clone(),
        }
    }
}

/// `name` from the cache, else from the API server.
async fn observe<K>(
    api: &Api<K>,
    cache: Option<&Store<K>>,
    ns: &str,
    name: &str,
    ctx: &Context,
) -> Result<Seen<K>>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug + 'static,
{
    match cached(cache, ns, name) {
        Some(k) => Ok(Seen::Cached(k)),
        None => Ok(Seen::Live(get(api, name, ctx).await?)),
    }
}

/// Applies `desired` unless the observed object already has everything it sets. A cached
/// observation that differs is confirmed by a live read first (the cache may lag behind).
async fn ensure<K>(api: &Api<K>, desired: &K, seen: Seen<K>, ctx: &Context) -> Result<Applied<K>>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug + 'static,
{
    let kind = K::kind(&());
    let name = desired.meta().name.clone().unwrap_or_default();
    let differs = |observed: Option<&K>| {
        needs_apply(desired, observed).map_err(|source| Error::Serialize {
            what: format!("{kind} {name}"),
            source,
        })
    };
    let observed = match seen {
        Seen::Cached(k) if !differs(Some(&k))? => return Ok(Applied::Unchanged(K::clone(&k))),
        Seen::Cached(_) => get(api, &name, ctx).await?,
        Seen::Live(k) => k,
    };
    match observed {
        Some(current) if !differs(Some(&current))? => Ok(Applied::Unchanged(current)),
        observed => {
            let applied = api
                .patch(
                    &name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(desired),
                )
                .await
                .map_err(Error::kube(format!("apply {kind} {name}")))?;
            ctx.metrics.wrote(&kind);
            Ok(if observed.is_some() {
                Applied::Repaired(applied)
            } else {
                Applied::Created(applied)
            })
        }
    }
}

/// Publishes Created / Repaired Events for an [`ensure`] outcome.
async fn report<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    sm: &SwappoMessaging,
    applied: &Applied<K>,
) {
    let (reason, verb, obj) = match applied {
        Applied::Unchanged(_) => return,
        Applied::Created(k) => ("Created", "created", k),
        Applied::Repaired(k) => ("Updated", "put back the desired state of", k),
    };
    let note = format!("{verb} {} {}", K::kind(&()), obj.name_any());
    info!("{note}");
    ctx.event_about(sm, false, reason, note, Some(obj.object_ref(&())))
        .await;
}

/// A live read of `name`, counted in the reads metric.
async fn get<K>(api: &Api<K>, name: &str, ctx: &Context) -> Result<Option<K>>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug,
{
    ctx.metrics.read(&K::kind(&()));
    api.get_opt(name)
        .await
        .map_err(Error::kube(format!("get {} {name}", K::kind(&()))))
}

/// The credentials to use and what to report about them.
async fn credentials(
    sm: &SwappoMessaging,
    secrets: &Api<Secret>,
    own: Option<&Secret>,
    names: &Names,
    ctx: &Context,
) -> Result<(Option<Credentials>, CredentialsState)> {
    let managed = sm.is_managed();
    let Some(user_secret) = &sm.spec.broker.credentials_secret else {
        let (creds, generated) = Credentials::keep_or_generate(own, managed);
        if generated {
            info!(secret = %names.secret, username = %creds.username, "generated broker credentials");
        }
        let state = CredentialsState::Ok {
            secret: names.secret.clone(),
            username: creds.username.clone(),
        };
        return Ok((Some(creds), state));
    };
    // The user's Secret is not the operator's (no managed-by label, so not in the caches):
    // read live, so a changed password shows at the next reconcile.
    let Some(source) = get(secrets, user_secret, ctx).await? else {
        return Ok((None, CredentialsState::SecretNotFound(user_secret.clone())));
    };
    let incomplete = |key: &str| CredentialsState::SecretIncomplete {
        secret: user_secret.clone(),
        key: key.into(),
    };
    let Some(username) = secret_value(&source, key::USERNAME) else {
        return Ok((None, incomplete(key::USERNAME)));
    };
    let Some(password) = secret_value(&source, key::PASSWORD) else {
        return Ok((None, incomplete(key::PASSWORD)));
    };
    // A managed broker still needs a cookie of its own: kept from the operator's Secret.
    let erlang_cookie = managed.then(|| {
        own.and_then(|s| secret_value(s, key::ERLANG_COOKIE))
            .unwrap_or_else(|| {
                Credentials::generate(&mut rand::rng(), true)
                    .erlang_cookie
                    .unwrap_or_default()
            })
    });
    let state = CredentialsState::Ok {
        secret: names.secret.clone(),
        username: username.clone(),
    };
    Ok((
        Some(Credentials {
            username,
            password,
            erlang_cookie,
        }),
        state,
    ))
}

async fn reconcile_inner(sm: &SwappoMessaging, ctx: &Context) -> Result<Action> {
    let ns = sm
        .namespace()
        .ok_or_else(|| Error::MissingNamespace(sm.name_any()))?;
    if sm.metadata.deletion_timestamp.is_some() {
        // Owned objects go with it: garbage collection follows the owner references.
        return Ok(Action::await_change());
    }
    let client = ctx.client.clone();
    let names = Names::of(sm);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);

    let caches = ctx.caches.get();
    // A complete cached copy is as good as a live read: the password only changes when the
    // Secret is edited, and the watch brings that within moments. Anything that would make
    // the operator generate credentials or a cookie (missing, incomplete) is confirmed live
    // first: a lagging cache must never replace a good Secret.
    let seen = observe(
        &secrets,
        caches.map(|c| &c.secrets),
        &ns,
        &names.secret,
        ctx,
    )
    .await?;
    let seen = match seen {
        Seen::Cached(s) if Credentials::from_secret(&s, sm.is_managed()).is_none() => {
            Seen::Live(get(&secrets, &names.secret, ctx).await?)
        }
        seen => seen,
    };
    let own_secret = seen.current();
    let regenerated = sm.spec.broker.credentials_secret.is_none()
        && own_secret
            .as_ref()
            .and_then(|s| Credentials::from_secret(s, sm.is_managed()))
            .is_none();
    let (creds, credentials_state) =
        credentials(sm, &secrets, own_secret.as_ref(), &names, ctx).await?;
    let endpoint = Endpoint::of(sm);
    if let Some(creds) = &creds {
        let desired = credentials_secret(sm, creds, &endpoint);
        let applied = ensure(&secrets, &desired, seen, ctx).await?;
        report(ctx, sm, &applied).await;
    }

    let mut broker_pods = None;
    if sm.is_managed() {
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let cm = observe(
            &config_maps,
            caches.map(|c| &c.config_maps),
            &ns,
            &names.config_map,
            ctx,
        )
        .await?;
        report(
            ctx,
            sm,
            &ensure(&config_maps, &broker::config_map(sm), cm, ctx).await?,
        )
        .await;

        // Created once: a claim's spec is immutable but for growing, which is a manual step.
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
        let claim = observe(&claims, caches.map(|c| &c.claims), &ns, &names.pvc, ctx).await?;
        if claim.current().is_none() {
            let pvc = broker::pvc(sm);
            let created = claims
                .create(
                    &PostParams {
                        field_manager: Some(MANAGER.into()),
                        ..PostParams::default()
                    },
                    &pvc,
                )
                .await;
            match created {
                Ok(_) => {
                    ctx.metrics.wrote("PersistentVolumeClaim");
                    report(ctx, sm, &Applied::Created(pvc)).await;
                }
                // Created meanwhile (by a previous reconcile whose result the cache had not
                // seen yet): nothing to do.
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => {
                    return Err(Error::Kube {
                        action: format!("create PersistentVolumeClaim {}", names.pvc),
                        source: e,
                    });
                }
            }
        }

        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let current = observe(
            &deployments,
            caches.map(|c| &c.deployments),
            &ns,
            &names.deployment,
            ctx,
        )
        .await?;
        if regenerated && current.current().is_some() {
            // RabbitMQ applies default_user only to an empty data directory: a broker that
            // already ran keeps its old user, and the new credentials will be refused.
            let note = format!(
                "Secret {} was missing or incomplete and got new credentials; a broker with \
                 existing data keeps its old user: restore the old Secret, or set the new \
                 password on the broker (rabbitmqctl change_password)",
                names.secret
            );
            warn!("{note}");
            ctx.event(sm, true, "CredentialsRegenerated", note).await;
        }
        let applied = ensure(&deployments, &broker::deployment(sm), current, ctx).await?;
        report(ctx, sm, &applied).await;
        let deployment = applied.into_inner();
        let status = deployment.status.unwrap_or_default();
        let wanted = deployment.spec.replicas.unwrap_or(1);
        broker_pods = Some((status.available_replicas.unwrap_or(0), wanted));

        let services: Api<Service> = Api::namespaced(client.clone(), &ns);
        let svc = observe(
            &services,
            caches.map(|c| &c.services),
            &ns,
            &names.service,
            ctx,
        )
        .await?;
        report(
            ctx,
            sm,
            &ensure(&services, &broker::service(sm), svc, ctx).await?,
        )
        .await;
    }

    let target = ctx
        .settings
        .broker_override
        .clone()
        .unwrap_or_else(|| Target {
            host: endpoint.host.clone(),
            port: endpoint.port,
            tls: endpoint.tls,
        });
    let pods_ready = broker_pods.is_none_or(|(ready, _)| ready >= 1);
    // The login's connection is kept for the queue declarations below, then closed.
    let (amqp, login) = match &creds {
        Some(creds) if pods_ready => {
            match amqp::login(&target, creds, ctx.settings.amqp_timeout).await {
                Ok(conn) => (Some(AmqpCheck::Ok), Some(conn)),
                Err(failed) => (Some(failed), None),
            }
        }
        _ => (None, None),
    };
    debug!(check = ?amqp.as_ref().map(|a| matches!(a, AmqpCheck::Ok)), "broker login checked");
    let observed = Observed {
        endpoint: endpoint.address(),
        dialled: target.address(),
        credentials: credentials_state,
        broker_pods,
        amqp,
    };
    let cleaned = clean_replica_sets(sm, ctx, &ns).await;
    // Whole seconds: the API keeps conditions' times at second precision.
    let now =
        Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH));
    let queues_broker = match (&creds, &observed.amqp) {
        (Some(creds), Some(AmqpCheck::Ok)) => Some(crate::queues::Broker {
            amqp: target.clone(),
            management: String::new(),
            credentials: creds.clone(),
            timeout: ctx.settings.amqp_timeout,
        }),
        _ => None,
    };
    let with_queues =
        crate::queues::with_queues_declared(sm, queues_broker.as_ref(), login.as_ref(), &now).await;
    if let Some(conn) = login {
        // Bounded: a reconcile must never wait on a broker that stopped answering.
        let close = conn.close(200, "swappo-operator reconcile".into());
        let _ = tokio::time::timeout(ctx.settings.amqp_timeout, close).await;
    }
    let mut status = desired_status(&with_queues, &observed, &now);
    if let Some(total) = cleaned {
        status.replica_sets_cleaned = total;
    }
    if sm.status.as_ref() != Some(&status) {
        let api: Api<SwappoMessaging> = Api::namespaced(client, &ns);
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

/// Deletes the stale ReplicaSets ([`crate::cleanup`]), with an Event and a metric count per
/// deletion, and the new `status.replicaSetsCleaned` when any were deleted. A failure is a
/// Warning Event, not a failed reconcile: the broker's status is not held hostage by the
/// clean-up, retried next time.
async fn clean_replica_sets(sm: &SwappoMessaging, ctx: &Context, ns: &str) -> Option<u64> {
    match crate::cleanup::clean(&ctx.client, sm, ns, ctx.caches.get(), &ctx.metrics).await {
        Ok(deleted) if deleted.is_empty() => None,
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
            match crate::cleanup::count_cleaned(&ctx.client, ns, &sm.name_any(), n, &ctx.metrics)
                .await
            {
                Ok(total) => {
                    ctx.metrics.wrote("SwappoMessaging/status");
                    Some(total)
                }
                Err(e) => {
                    ctx.metrics.reconcile_failed(&e);
                    warn!(error = %e, "could not count the deleted ReplicaSets in status");
                    None
                }
            }
        }
        Err(e) => {
            ctx.metrics.reconcile_failed(&e);
            ctx.event(sm, true, "ReplicaSetCleanupFailed", e.to_string())
                .await;
            None
        }
    }
}

/// Drops what no reader of the caches needs: managed fields (a good part of every object's
/// size).
fn trim<K: Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

/// [`trim`], and a ReplicaSet's pod template: the clean-up's first look and the mapping of
/// ReplicaSet events to instances read only metadata, replica counts and owners, and the
/// template is most of a ReplicaSet (every ReplicaSet in the watched namespaces is cached).
fn trim_replica_set(rs: &mut ReplicaSet) {
    trim(rs);
    rs.spec.template = None;
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
/// the objects it owns (selected by the `managed-by` label) and ReplicaSets, each watch also
/// filling the [`Caches`] the reconciler reads.
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
    let (services, services_cache) = reflected(api::<Service>(client, namespace), owned, trim);
    let (replica_sets, replica_sets_cache) = reflected(
        api::<ReplicaSet>(client, namespace),
        watcher::Config::default(),
        trim_replica_set,
    );
    // One controller per context (per process): set once.
    let _ = ctx.caches.set(Caches {
        secrets: secrets_cache,
        config_maps: config_maps_cache,
        claims: claims_cache,
        deployments: deployments_cache,
        services: services_cache,
        replica_sets: replica_sets_cache,
    });
    let (resources, writer) = reflector::store();
    let trigger = watcher(
        api::<SwappoMessaging>(client, namespace),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .touched_objects()
    // Only a new resource or a spec change calls for a reconcile: the status writes of the
    // operator's own loops (reconciler, autoscaler, clean-up count) would otherwise each cost
    // one more (several per resource while 1000 of them start).
    .predicate_filter(predicates::generation, PredicateConfig::default());
    let base = Controller::for_stream(trigger, resources.clone());
    let instances = resources.clone();
    let scaler = crate::scaler::run(ctx.clone(), resources, shutdown.clone());
    // ReplicaSet changes (a rollout finishing, a set scaled by hand, an orphan appearing)
    // reconcile the instances that manage their Deployment or whose labels they carry.
    let controller = base
        .watches_stream(replica_sets, move |rs| {
            crate::cleanup::concerned(&rs, &instances)
        })
        .owns_stream(deployments)
        .owns_stream(services)
        .owns_stream(config_maps)
        .owns_stream(secrets)
        .owns_stream(claims)
        .with_config(controller::Config::default().concurrency(ctx.settings.concurrency))
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => debug!(object = %obj, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile did not complete"),
            }
        });
    tokio::join!(controller, scaler);
    info!("controller stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_broker_with_ready_pods_that_does_not_answer_is_polled_at_the_retry_interval() {
        let s = Settings::default();
        assert_eq!(requeue_after(true, Some((1, 1)), &s), s.recheck);
        assert_eq!(requeue_after(true, None, &s), s.recheck);
        assert_eq!(requeue_after(false, Some((0, 1)), &s), s.recheck);
        assert_eq!(requeue_after(false, Some((1, 1)), &s), s.retry);
        assert_eq!(requeue_after(false, None, &s), s.retry);
    }

    #[test]
    fn failures_back_off_from_five_seconds_to_five_minutes() {
        assert_eq!(backoff_delay(0), Duration::from_secs(5));
        assert_eq!(backoff_delay(1), Duration::from_secs(10));
        assert_eq!(backoff_delay(3), Duration::from_secs(40));
        assert_eq!(backoff_delay(6), Duration::from_secs(300));
        assert_eq!(backoff_delay(u32::MAX), Duration::from_secs(300));
    }
}
