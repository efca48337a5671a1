//! What keeps the operator cheap at 1000 resources, on the local control plane and broker:
//! rechecks of a resource that did not change open no AMQP connection and declare no queue
//! (one kept connection per broker; the declaration recorded in `status.queuesDeclared`); a
//! user's credentials Secret is watched, not read at every recheck; the ReplicaSet cache holds
//! the operator's own sets only, trimmed; consumer Deployments are read from a cache.
mod common;

use common::*;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams, PostParams};
use std::time::Duration;
use swappo_operator::crd::SwappoMessaging;
use swappo_operator::fixtures::TestExt;
use swappo_testkit::{TestNamespace, eventually, unique_name};

/// Waits until `sm` in `ns` has condition `type_` with `status`.
async fn until_condition(ns: &TestNamespace, name: &str, type_: &str, status: &str) {
    let api = ns.api::<SwappoMessaging>();
    let last = std::sync::Mutex::new(None);
    eventually(&format!("{name}: {type_}={status}"), WAIT, || async {
        let sm = api.get(name).await.ok()?;
        let found = sm.condition(type_).is_some_and(|c| c.status == status);
        *last.lock().unwrap() = sm.status;
        found.then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; last status: {:?}", last.lock().unwrap()));
}

/// Waits until the operator ran `more` reconciles beyond `from`.
async fn reconciles_beyond(operator: &InProcess, from: f64, more: f64) {
    eventually("more rechecks", WAIT, || async {
        (operator.metric("swappo_operator_reconciles_total") >= from + more).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

async fn delete_queues(queues: &[String]) {
    let m = swappo_testkit::Management::from_env();
    for q in queues {
        let _ = m.delete_queue("/", q).await;
        let _ = m.delete_queue("/", &format!("{q}.dlq")).await;
        let _ = m.delete_exchange("/", &format!("{q}.dlx")).await;
    }
}

#[tokio::test]
async fn rechecks_of_an_unchanged_resource_open_no_amqp_connection_and_declare_no_queue() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-scale-amqp-").await;
    login_secret(&ns).await;
    let (first, second) = (unique_name("kept-a-"), unique_name("kept-b-"));
    let mut settings = local_broker_settings();
    // A recheck every second: several rechecks within the test.
    settings.recheck = Duration::from_secs(1);
    let operator = InProcess::start(&client, ns.name(), settings);
    let api = ns.api::<SwappoMessaging>();
    let sm = SwappoMessaging::new_in("dev", ns.name())
        .with_credentials_secret("broker-login")
        .with_external("127.0.0.1", false)
        .with_queue(&first);
    api.create(&PostParams::default(), &sm).await.unwrap();
    until_condition(&ns, "dev", "Ready", "True").await;
    let opened = operator.metric("swappo_operator_amqp_connections_opened_total");
    let declared = operator.metric("swappo_operator_queue_declarations_total");
    assert_eq!(opened, 1.0, "one connection to the one broker");
    assert!(declared >= 1.0, "the queue was declared");

    let reconciles = operator.metric("swappo_operator_reconciles_total");
    reconciles_beyond(&operator, reconciles, 3.0).await;
    assert_eq!(
        operator.metric("swappo_operator_amqp_connections_opened_total"),
        opened,
        "a recheck opens no connection"
    );
    assert_eq!(
        operator.metric("swappo_operator_queue_declarations_total"),
        declared,
        "a recheck declares no queue"
    );

    // A spec change declares the queues again, on the same connection.
    let patch = serde_json::json!({"spec": {"queues": [
        {"name": first, "type": "quorum", "deadLetter": {"maxDeliveries": 5}},
        {"name": second, "type": "quorum", "deadLetter": {"maxDeliveries": 5}},
    ]}});
    api.patch("dev", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("both queues declared", WAIT, || async {
        let m = swappo_testkit::Management::from_env();
        m.queue("/", &second).await.ok()?.map(|_| ())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let after_change = operator.metric("swappo_operator_queue_declarations_total");
    assert!(
        after_change >= declared + 2.0,
        "{after_change} after {declared}"
    );
    let reconciles = operator.metric("swappo_operator_reconciles_total");
    reconciles_beyond(&operator, reconciles, 3.0).await;
    let status = api.get("dev").await.unwrap().status;
    assert_eq!(
        operator.metric("swappo_operator_queue_declarations_total"),
        after_change,
        "opened {}; {status:?}",
        operator.metric("swappo_operator_amqp_connections_opened_total")
    );
    assert_eq!(
        operator.metric("swappo_operator_amqp_connections_opened_total"),
        opened
    );
    operator.stop().await;
    delete_queues(&[first, second]).await;
}

/// The Secret `name` with a broker login.
async fn put_login(ns: &TestNamespace, name: &str, user: &str, password: &str) {
    let s: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "stringData": {"username": user, "password": password}
    }))
    .unwrap();
    ns.api::<Secret>()
        .patch(
            name,
            &PatchParams::apply("scale-test").force(),
            &Patch::Apply(&s),
        )
        .await
        .unwrap();
}

/// Reads of users' credentials Secrets the operator sent to the API server.
fn secret_reads(operator: &InProcess) -> f64 {
    metric(
        &operator.metrics.encode(),
        "swappo_operator_api_reads_total{kind=\"credentialsSecret\"}",
    )
}

#[tokio::test]
async fn a_credentials_secret_change_reconciles_at_once_and_reconciles_without_a_change_read_no_secret()
 {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-scale-secret-").await;
    let (user, password) = (unique_name("scale-u-"), unique_name("pw-"));
    let _user = BrokerUser::new(&user, &password).await;
    put_login(&ns, "login", &user, &password).await;
    let mut settings = local_broker_settings();
    // No recheck within the test: only a watch event can start a reconcile.
    settings.recheck = Duration::from_secs(3600);
    let operator = InProcess::start(&client, ns.name(), settings);
    let sm = SwappoMessaging::new_in("dev", ns.name())
        .with_credentials_secret("login")
        .with_external("127.0.0.1", false);
    ns.api::<SwappoMessaging>()
        .create(&PostParams::default(), &sm)
        .await
        .unwrap();
    until_condition(&ns, "dev", "BrokerReady", "True").await;

    // Reconciles caused by something else (a label on the operator's own Secret): the
    // user's Secret did not change, so none of them reads it.
    let reads = secret_reads(&operator);
    for i in 0..3 {
        let reconciles = operator.metric("swappo_operator_reconciles_total");
        let label = serde_json::json!({"metadata": {"labels": {"touched": i.to_string()}}});
        ns.api::<Secret>()
            .patch(
                "dev-rabbitmq",
                &PatchParams::default(),
                &Patch::Merge(&label),
            )
            .await
            .unwrap();
        reconciles_beyond(&operator, reconciles, 1.0).await;
    }
    assert_eq!(
        secret_reads(&operator),
        reads,
        "no read of an unchanged Secret"
    );

    // A wrong password: the Secret's watch event reconciles (no recheck is due), which reads
    // it once and is refused by the broker.
    put_login(&ns, "login", &user, "not-the-password").await;
    until_condition(&ns, "dev", "BrokerReady", "False").await;
    let reconciles = operator.metric("swappo_operator_reconciles_total");
    // Retries while BrokerReady is False (every 2 s) read it no more.
    reconciles_beyond(&operator, reconciles, 2.0).await;
    assert_eq!(secret_reads(&operator), reads + 1.0, "one read per change");
    put_login(&ns, "login", &user, &password).await;
    until_condition(&ns, "dev", "BrokerReady", "True").await;
    operator.stop().await;
}

/// A ReplicaSet `name` with pod labels `labels`, no owner, no replicas.
fn replica_set(name: &str, labels: serde_json::Value) -> ReplicaSet {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn only_the_operators_replica_sets_are_cached_trimmed_and_consumer_deployments_are_read_from_a_cache()
 {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-scale-cache-").await;
    login_secret(&ns).await;
    let queue = unique_name("cache-");
    let sets = ns.api::<ReplicaSet>();
    // Someone else's ReplicaSet, and one left with this instance's labels.
    sets.create(
        &PostParams::default(),
        &replica_set("theirs", serde_json::json!({"app": "web"})),
    )
    .await
    .unwrap();
    let ours = serde_json::json!({
        "app.kubernetes.io/instance": "dev",
        "app.kubernetes.io/managed-by": "swappo-operator",
    });
    sets.create(&PostParams::default(), &replica_set("ours", ours))
        .await
        .unwrap();
    let worker: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "worker"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "worker"}},
            "template": {"metadata": {"labels": {"app": "worker"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
        }
    }))
    .unwrap();
    ns.api::<Deployment>()
        .create(&PostParams::default(), &worker)
        .await
        .unwrap();
    let operator = InProcess::start(&client, ns.name(), local_broker_settings());
    let mut sm = SwappoMessaging::new_in("dev", ns.name())
        .with_credentials_secret("broker-login")
        .with_external("127.0.0.1", false)
        .with_queue(&queue)
        .with_consumer("worker", &queue);
    // The labelled set stays: this test is about the cache, not the clean-up.
    sm.spec.cleanup.stale_replica_sets = false;
    ns.api::<SwappoMessaging>()
        .create(&PostParams::default(), &sm)
        .await
        .unwrap();
    until_condition(&ns, "dev", "ConsumersScaled", "True").await;

    let caches = operator.ctx.caches.get().expect("the watches started");
    let cached: Vec<ReplicaSet> = caches
        .replica_sets
        .state()
        .iter()
        .map(|rs| ReplicaSet::clone(rs))
        .filter(|rs| rs.namespace().as_deref() == Some(ns.name()))
        .collect();
    let names: Vec<String> = cached.iter().map(ResourceExt::name_any).collect();
    assert_eq!(
        names,
        ["ours"],
        "only the operator's ReplicaSets are cached"
    );
    assert!(cached[0].metadata.managed_fields.is_none());
    assert!(
        cached[0].spec.template.is_none(),
        "the pod template is dropped"
    );
    let cached_worker = caches
        .workloads
        .state()
        .into_iter()
        .find(|d| d.name_any() == "worker")
        .expect("the consumer Deployment is cached");
    assert!(cached_worker.metadata.managed_fields.is_none());
    assert!(
        cached_worker.spec.template.spec.is_none(),
        "the pod template is dropped"
    );

    // Polls every 2 s: none reads the consumer Deployment from the API server.
    let reads = || {
        metric(
            &operator.metrics.encode(),
            "swappo_operator_api_reads_total{kind=\"Deployment\"}",
        )
    };
    let before = reads();
    let scaled = operator.metric("swappo_operator_amqp_connections_opened_total");
    assert_eq!(
        scaled, 1.0,
        "the reconciler and the autoscaler share one connection"
    );
    let passes = operator.metric("swappo_operator_autoscaler_passes_total");
    eventually("three more autoscaler passes", WAIT, || async {
        (operator.metric("swappo_operator_autoscaler_passes_total") >= passes + 3.0).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        reads(),
        before,
        "no Deployment read by the autoscaler's polls"
    );
    assert_eq!(
        operator.metric("swappo_operator_amqp_connections_opened_total"),
        scaled,
        "the autoscaler uses the kept connection"
    );
    operator.stop().await;
    delete_queues(&[queue]).await;
}
