//! The reconcile of one `SwappoMessaging`, as the list of its steps: the credentials, each
//! owned object ensured ([`Owner::ensure`]: observe, apply when it differs, report), the
//! broker login, the stale-ReplicaSet clean-up, the queues, the status. Each step's logic is
//! in a module of its own; nothing is written when the observed state already matches the
//! decision.
use super::credentials::{self, Found};
use super::migration;
use super::owned::Owner;
use super::{cleanup, status};
use crate::broker::amqp::Target;
use crate::broker::connections::Shared;
use crate::broker::{Broker, topology};
use crate::builders::secret::{Credentials, Endpoint, credentials_secret};
use crate::builders::{Names, broker, network_policy};
use crate::context::Context;
use crate::crd::SwappoMessaging;
use crate::decisions::queues::declaration_key;
use crate::decisions::status::{AmqpCheck, Observed, condition};
use crate::error::{Error, Result};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::DeleteParams;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use std::sync::Arc;
use tracing::{debug, instrument};

/// Reconciles one `SwappoMessaging`.
#[instrument(skip(sm, ctx), fields(namespace = sm.namespace().unwrap_or_default(), name = sm.name_any()))]
pub async fn reconcile(sm: Arc<SwappoMessaging>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    let result = steps(&sm, &ctx).await;
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

/// The steps of a reconcile, in order.
async fn steps(sm: &SwappoMessaging, ctx: &Context) -> Result<Action> {
    let ns = sm
        .namespace()
        .ok_or_else(|| Error::MissingNamespace(sm.name_any()))?;
    if sm.metadata.deletion_timestamp.is_some() {
        // Owned objects go with it: garbage collection follows the owner references.
        return Ok(Action::await_change());
    }
    let o = Owner { sm, ns: &ns, ctx };
    let names = Names::of(sm);
    let endpoint = Endpoint::of(sm);

    let Found {
        creds,
        state,
        own,
        regenerated,
    } = credentials::resolve(&o, &names).await?;
    if let Some(creds) = &creds {
        o.ensure_seen(credentials_secret(sm, creds, &endpoint), own)
            .await?;
    }
    // A spec the API server would refuse in the StatefulSet is not applied: the broker keeps
    // its last settings and BrokerReady says which field to fix.
    let invalid_spec = broker::invalid_resources(sm);
    let broker_pods = match sm.is_managed() && invalid_spec.is_none() {
        true => Some(ensure_broker(&o, &names, creds.as_ref(), regenerated).await?),
        false => None,
    };

    let target = ctx.settings.broker_override.clone().unwrap_or(Target {
        host: endpoint.host.clone(),
        port: endpoint.port,
        tls: endpoint.tls,
    });
    let (amqp, login) = log_in(&target, creds.as_ref(), broker_pods, ctx).await;
    let observed = Observed {
        endpoint: endpoint.address(),
        dialled: target.address(),
        invalid_spec,
        credentials: state,
        broker_pods,
        amqp,
    };
    cleanup::clean_replica_sets(sm, ctx, &ns).await;
    // Whole seconds: the API keeps conditions' times at second precision.
    let now =
        Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH));
    let with_queues = declare_queues(sm, &target, creds, &observed, login, &now, ctx).await;
    status::write(sm, &with_queues, &observed, &now, ctx).await
}

/// The managed broker's objects, each ensured; its ready and wanted pods. The StatefulSet
/// waits (0 ready) while a broker Deployment of an earlier operator version or its pods are
/// still there ([`migration`]): never two brokers on one volume.
async fn ensure_broker(
    o: &Owner<'_>,
    names: &Names,
    creds: Option<&Credentials>,
    regenerated: bool,
) -> Result<(i32, i32)> {
    o.ensure(broker::config_map(o.sm)).await?;
    // Created once: a claim's spec is immutable but for growing, which is a manual step.
    o.create_once(broker::pvc(o.sm)).await?;
    o.ensure(broker::service(o.sm)).await?;
    ensure_network_policy(o, names).await?;
    if regenerated {
        credentials::warn_if_the_broker_ran(o, names).await?;
    }
    if !migration::legacy_broker_gone(o, names).await? {
        return Ok((0, 1));
    }
    let set = o.ensure(broker::stateful_set(o.sm, creds)).await?;
    let ready = set.status.and_then(|s| s.ready_replicas).unwrap_or(0);
    let wanted = set.spec.replicas.unwrap_or(1);
    Ok((ready, wanted))
}

/// The broker's NetworkPolicy, ensured; or, when `spec.broker.networkPolicy.enabled` is
/// false, the one made earlier deleted.
async fn ensure_network_policy(o: &Owner<'_>, names: &Names) -> Result<()> {
    if network_policy::enabled(o.sm) {
        let ns = o.ctx.settings.operator_namespace.as_deref();
        o.ensure(network_policy::network_policy(o.sm, ns)).await?;
        return Ok(());
    }
    let seen = o
        .observe::<k8s_openapi::api::networking::v1::NetworkPolicy>(&names.network_policy)
        .await?;
    match seen.current() {
        Some(policy) if migration::is_ours(o.sm, &policy) => {
            o.delete(&policy, DeleteParams::background(), "NetworkPolicyRemoved")
                .await
        }
        _ => Ok(()),
    }
}

/// The AMQP login behind `BrokerReady`, once the broker's pods are ready: its outcome, and
/// the broker's kept connection ([`Context::broker_connection`]: opened only when there is
/// none, so a recheck logs in again only when the connection closed or the login changed).
async fn log_in(
    target: &Target,
    creds: Option<&Credentials>,
    broker_pods: Option<(i32, i32)>,
    ctx: &Context,
) -> (Option<AmqpCheck>, Option<Shared>) {
    let pods_ready = broker_pods.is_none_or(|(ready, _)| ready >= 1);
    let outcome = match creds {
        Some(creds) if pods_ready => match ctx.broker_connection(target, creds).await {
            Ok(shared) => (Some(AmqpCheck::Ok), Some(shared)),
            Err(failed) => (Some(failed), None),
        },
        _ => (None, None),
    };
    debug!(check = ?outcome.0.as_ref().map(|a| matches!(a, AmqpCheck::Ok)), "broker login checked");
    outcome
}

/// `sm` with its `QueuesReady` condition decided, the queues declared on the broker's kept
/// connection when the broker accepted the login and what they were last declared for
/// (`status.queuesDeclared`: `spec.queues` and the connection) changed; `sm` as it is when
/// nothing changed (its `QueuesReady` stands).
async fn declare_queues(
    sm: &SwappoMessaging,
    target: &Target,
    creds: Option<Credentials>,
    observed: &Observed,
    login: Option<Shared>,
    now: &Time,
    ctx: &Context,
) -> SwappoMessaging {
    let key = login
        .as_ref()
        .map(|shared| declaration_key(&sm.spec.queues, shared.id));
    let status = sm.status.as_ref();
    let this = ObjectRef::from_obj(sm);
    let declared = status.and_then(|s| s.queues_declared.clone());
    let decided = status.is_some_and(|s| {
        sm.spec.queues.is_empty()
            || s.conditions
                .iter()
                .any(|c| c.type_ == condition::QUEUES_READY)
    });
    let in_memory = ctx
        .queues_declared
        .lock()
        .expect("never poisoned")
        .get(&this)
        .cloned();
    if key.is_some() && (key == declared || key == in_memory) && decided {
        return sm.clone();
    }
    let broker = match (creds, &observed.amqp) {
        (Some(credentials), Some(AmqpCheck::Ok)) => Some(Broker {
            amqp: target.clone(),
            management: String::new(),
            credentials,
            timeout: ctx.settings.amqp_timeout,
        }),
        _ => None,
    };
    if broker.is_some() {
        ctx.metrics
            .queue_declarations
            .inc_by(sm.spec.queues.len() as u64);
    }
    let conn = login.as_ref().map(|shared| shared.conn.as_ref());
    let mut with_queues = topology::with_queues_declared(sm, broker.as_ref(), conn, now).await;
    let ready = with_queues
        .condition(condition::QUEUES_READY)
        .is_none_or(|c| c.status == "True");
    if let (Some(key), true) = (key, ready) {
        // Only a declaration that succeeded is not repeated; a failed one is retried.
        ctx.queues_declared
            .lock()
            .expect("never poisoned")
            .insert(this, key.clone());
        with_queues
            .status
            .get_or_insert_with(Default::default)
            .queues_declared = Some(key);
    }
    with_queues
}
