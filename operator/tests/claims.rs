//! One writer per consumer Deployment's replicas, on the local control plane and the local
//! RabbitMQ: two resources naming the same Deployment (the oldest scales it, the other is
//! refused naming it), and a Deployment that an HPA or a KEDA ScaledObject already targets
//! (refused with a condition). Consumer pods never run (kwok nodes): replicas only move by
//! scale patches, and a Deployment's `generation` counts every such write.
mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, PostParams};
use swappo_operator::crd::SwappoMessaging;
use swappo_operator::fixtures::TestExt;
use swappo_testkit::{TestNamespace, eventually, unique_name};

async fn consumer_deployment(ns: &TestNamespace, name: &str) {
    let d: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}
            }
        }
    }))
    .unwrap();
    ns.api::<Deployment>()
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
}

/// Replicas and generation of Deployment `name` (the generation moves with every scale
/// write).
async fn replicas_and_generation(ns: &TestNamespace, name: &str) -> (i32, i64) {
    let d = ns.api::<Deployment>().get(name).await.unwrap();
    (
        d.spec.replicas.unwrap_or(1),
        d.metadata.generation.unwrap_or(0),
    )
}

/// A resource `name` on the local broker with one queue and consumer `worker` whose minimum
/// is `min` replicas (an empty queue: each resource alone would set `min`).
fn resource(ns: &TestNamespace, name: &str, queue: &str, min: i32) -> SwappoMessaging {
    let mut sm = SwappoMessaging::new_in(name, ns.name())
        .with_credentials_secret("broker-login")
        .with_external("127.0.0.1", false)
        .with_queue(queue)
        .with_consumer("worker", queue);
    sm.spec.consumers[0].min_replicas = min;
    sm
}

async fn condition(
    ns: &TestNamespace,
    name: &str,
    type_: &str,
    status: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    eventually(&format!("{name}: {type_}={status}"), WAIT, || async {
        let sm = ns.api::<SwappoMessaging>().get(name).await.ok()?;
        sm.condition(type_).filter(|c| c.status == status).cloned()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Waits until the scaler has made `n` more passes (one per resource per poll, counted by
/// its `autoscaler_passes_total`): passes have happened, without timing.
async fn passes(operator: &InProcess, n: f64) {
    let count = || operator.metric("swappo_operator_autoscaler_passes_total");
    let before = count();
    eventually("more autoscaler passes", WAIT, || async {
        (count() >= before + n).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

async fn delete_topology(queue: &str) {
    let conn = lapin::Connection::connect(
        &swappo_testkit::rabbitmq_url(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for q in [queue.to_owned(), format!("{queue}.dlq")] {
        let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
    }
    let _ = ch
        .exchange_delete(format!("{queue}.dlx").as_str().into(), Default::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
}

#[tokio::test]
async fn two_resources_naming_one_deployment_the_oldest_scales_it_and_the_other_is_refused_naming_it()
 {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-claim-").await;
    login_secret(&ns).await;
    consumer_deployment(&ns, "worker").await;
    let (qa, qb) = (unique_name("claim-a-"), unique_name("claim-b-"));
    let operator = InProcess::start(&client, ns.name(), local_broker_settings());
    let api = ns.api::<SwappoMessaging>();
    // The oldest asks for 1 replica (what the Deployment has), the younger for 3.
    api.create(&PostParams::default(), &resource(&ns, "a", &qa, 1))
        .await
        .unwrap();
    condition(&ns, "a", "ConsumersScaled", "True").await;
    api.create(&PostParams::default(), &resource(&ns, "b", &qb, 3))
        .await
        .unwrap();

    let refused = condition(&ns, "b", "ConsumersScaled", "False").await;
    assert_eq!(refused.reason, "DeploymentClaimed");
    assert!(
        refused.message.contains("SwappoMessaging a"),
        "{}",
        refused.message
    );
    let b = api.get("b").await.unwrap();
    assert_eq!(b.status.unwrap().consumers[0].reason, "DeploymentClaimed");
    passes(&operator, 10.0).await;
    // Neither wrote: the younger is refused, the oldest already has what it wants.
    assert_eq!(replicas_and_generation(&ns, "worker").await, (1, 1));
    assert_eq!(
        condition(&ns, "a", "ConsumersScaled", "True").await.reason,
        "Scaled"
    );

    // The oldest gone, the other one takes the Deployment over.
    api.delete("a", &Default::default()).await.unwrap();
    condition(&ns, "b", "ConsumersScaled", "True").await;
    eventually("b scales worker to its minimum", WAIT, || async {
        (replicas_and_generation(&ns, "worker").await.0 == 3).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    operator.stop().await;
    delete_topology(&qa).await;
    delete_topology(&qb).await;
}

#[tokio::test]
async fn a_deployment_an_hpa_targets_is_refused_with_a_condition_and_never_scaled() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-hpa-").await;
    login_secret(&ns).await;
    consumer_deployment(&ns, "worker").await;
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(serde_json::json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "worker-cpu"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"},
            "minReplicas": 1, "maxReplicas": 2,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80}}}]
        }
    }))
    .unwrap();
    ns.api::<HorizontalPodAutoscaler>()
        .create(&PostParams::default(), &hpa)
        .await
        .unwrap();
    let queue = unique_name("hpa-");
    let operator = InProcess::start(&client, ns.name(), local_broker_settings());
    ns.api::<SwappoMessaging>()
        .create(&PostParams::default(), &resource(&ns, "dev", &queue, 3))
        .await
        .unwrap();

    let refused = condition(&ns, "dev", "ConsumersScaled", "False").await;
    assert_eq!(refused.reason, "TargetedByHorizontalPodAutoscaler");
    assert!(
        refused
            .message
            .contains("HorizontalPodAutoscaler worker-cpu"),
        "{}",
        refused.message
    );
    assert_eq!(
        condition(&ns, "dev", "Ready", "False").await.status,
        "False"
    );
    // The operator never wrote to the Deployment (its minimum of 3 would have).
    let (replicas, _) = replicas_and_generation(&ns, "worker").await;
    assert_eq!(replicas, 1);
    assert!(
        !operator
            .metrics
            .encode()
            .contains("kind=\"Deployment/scale\""),
        "{}",
        operator.metrics.encode()
    );

    // The HPA removed, the operator scales it.
    ns.api::<HorizontalPodAutoscaler>()
        .delete("worker-cpu", &Default::default())
        .await
        .unwrap();
    condition(&ns, "dev", "ConsumersScaled", "True").await;
    eventually("worker scaled to the minimum", WAIT, || async {
        (replicas_and_generation(&ns, "worker").await.0 == 3).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    operator.stop().await;
    delete_topology(&queue).await;
}

/// KEDA's ScaledObject CRD, reduced to what the operator reads (the real one has a full
/// schema; the operator only reads `spec.scaleTargetRef`). Cluster-scoped, installed once
/// and left in place like the SwappoMessaging CRD.
async fn install_scaled_object_crd(client: &kube::Client) {
    let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "scaledobjects.keda.sh"},
        "spec": {
            "group": "keda.sh", "scope": "Namespaced",
            "names": {"kind": "ScaledObject", "plural": "scaledobjects", "singular": "scaledobject", "listKind": "ScaledObjectList"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    }))
    .unwrap();
    swappo_testkit::apply_crd(client, &crd, "swappo-operator-tests", WAIT)
        .await
        .unwrap_or_else(|e| panic!("the ScaledObject CRD is established: {e}"));
}

#[tokio::test]
async fn a_deployment_a_keda_scaled_object_targets_is_refused_with_a_condition() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    install_scaled_object_crd(&client).await;
    let ns = TestNamespace::new("op-keda-").await;
    login_secret(&ns).await;
    consumer_deployment(&ns, "worker").await;
    let ar = ApiResource {
        group: "keda.sh".into(),
        version: "v1alpha1".into(),
        api_version: "keda.sh/v1alpha1".into(),
        kind: "ScaledObject".into(),
        plural: "scaledobjects".into(),
    };
    let so: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "worker-queue", "namespace": ns.name()},
        "spec": {"scaleTargetRef": {"name": "worker"}, "triggers": []}
    }))
    .unwrap();
    Api::<DynamicObject>::namespaced_with(client.clone(), ns.name(), &ar)
        .create(&PostParams::default(), &so)
        .await
        .unwrap();
    let queue = unique_name("keda-");
    // Started after the CRD exists: the operator looks for KEDA at start.
    let operator = InProcess::start(&client, ns.name(), local_broker_settings());
    ns.api::<SwappoMessaging>()
        .create(&PostParams::default(), &resource(&ns, "dev", &queue, 3))
        .await
        .unwrap();
    let refused = condition(&ns, "dev", "ConsumersScaled", "False").await;
    assert_eq!(refused.reason, "TargetedByScaledObject");
    assert!(
        refused.message.contains("ScaledObject worker-queue"),
        "{}",
        refused.message
    );
    assert_eq!(replicas_and_generation(&ns, "worker").await, (1, 1));
    operator.stop().await;
    delete_topology(&queue).await;
}
