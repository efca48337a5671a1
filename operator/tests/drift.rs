//! Drift detection against what the API server returns, on the local control plane: resource
//! quantities the server rewrites to their canonical form (`1024Mi` -> `1Gi`, `0.5` ->
//! `500m`) and another owner's reference beside the operator's are not drift, so rechecks
//! write nothing and publish no `Updated` Event.
mod common;

use common::*;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, ResourceRequirements, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;
use std::time::Duration;
use swappo_operator::crd::SwappoMessaging;
use swappo_operator::fixtures::TestExt;
use swappo_testkit::{TestNamespace, eventually, wait_for};

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
        .collect()
}

/// Writes of `kind` the operator counted.
fn writes(operator: &InProcess, kind: &str) -> f64 {
    operator
        .metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("swappo_operator_api_writes_total"))
        .filter(|l| l.contains(&format!("kind=\"{kind}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until `n` more reconciles have completed.
async fn reconciles(operator: &InProcess, n: f64) {
    let done = || operator.metric("swappo_operator_reconcile_duration_seconds_count");
    let before = done();
    eventually("more complete reconciles", WAIT, || async {
        (done() >= before + n).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn quantities_the_api_server_rewrites_and_another_owner_reference_are_not_drift() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-drift-").await;
    let _volume = BoundVolume::new(&client, ns.name(), "dev-rabbitmq-data").await;
    let mut settings = local_broker_settings();
    // A recheck every second, whatever the broker's state: many reconciles, quickly.
    settings.recheck = Duration::from_secs(1);
    settings.retry = Duration::from_secs(1);
    let operator = InProcess::start(&client, ns.name(), settings);
    let mut sm = SwappoMessaging::new_in("dev", ns.name());
    sm.spec.broker.resources = Some(ResourceRequirements {
        limits: Some(quantities(&[("memory", "1024Mi"), ("cpu", "0.5")])),
        requests: Some(quantities(&[("memory", "524288Ki"), ("cpu", "250m")])),
        ..ResourceRequirements::default()
    });
    ns.api::<SwappoMessaging>()
        .create(&PostParams::default(), &sm)
        .await
        .unwrap();
    let deployment = wait_for(
        &ns.api::<StatefulSet>(),
        "dev-rabbitmq",
        "the broker StatefulSet",
        WAIT,
        |d: Option<&StatefulSet>| d.is_some(),
    )
    .await
    .unwrap()
    .unwrap();
    // The API server did rewrite the quantities: the text differs from the spec's.
    let resources = deployment.spec.template.spec.unwrap().containers[0]
        .resources
        .clone()
        .unwrap();
    assert_eq!(resources.limits.unwrap()["memory"].0, "1Gi");
    assert_eq!(resources.requests.unwrap()["memory"].0, "512Mi");

    // Another owner beside the operator on the Service (a ConfigMap of the test's).
    let other = ns
        .api::<ConfigMap>()
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "other-owner"}}))
                .unwrap(),
        )
        .await
        .unwrap();
    wait_for(
        &ns.api::<Service>(),
        "dev-rabbitmq",
        "the broker Service",
        WAIT,
        |s: Option<&Service>| s.is_some(),
    )
    .await
    .unwrap();
    let patch = serde_json::json!({"metadata": {"ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "other-owner", "uid": other.uid().unwrap()},
        {"apiVersion": "swappo.io/v1alpha1", "kind": "SwappoMessaging", "name": "dev",
         "uid": ns.api::<SwappoMessaging>().get("dev").await.unwrap().uid().unwrap(),
         "controller": true, "blockOwnerDeletion": true}
    ]}});
    ns.api::<Service>()
        .patch(
            "dev-rabbitmq",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();

    // Settled: one complete reconcile after the change, then count over five more.
    reconciles(&operator, 1.0).await;
    let (deployments, services) = (
        writes(&operator, "StatefulSet"),
        writes(&operator, "Service"),
    );
    reconciles(&operator, 5.0).await;
    let updated: Vec<String> = ns
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Updated"))
        .map(|e| e.note.unwrap_or_default())
        .collect();
    assert_eq!(
        (
            writes(&operator, "StatefulSet"),
            writes(&operator, "Service")
        ),
        (deployments, services),
        "the rechecks applied again; Updated Events: {updated:?}"
    );
    assert!(updated.is_empty(), "Updated Events: {updated:?}");
    // The other owner's reference stays.
    let owners = ns
        .api::<Service>()
        .get("dev-rabbitmq")
        .await
        .unwrap()
        .owner_references()
        .len();
    assert_eq!(owners, 2);
    operator.stop().await;
}
