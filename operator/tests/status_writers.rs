//! The status has two writers, on the local control plane and the local RabbitMQ: the
//! reconciler and the autoscaler each server-side apply their own fields under their own
//! field manager, conditions being a map keyed by type, and `Ready` follows the autoscaler's
//! `ConsumersScaled` at once (the recheck is an hour here: it plays no part).
mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::PostParams;
use std::time::Duration;
use swappo_operator::crd::SwappoMessaging;
use swappo_operator::fixtures::TestExt;
use swappo_testkit::{TestNamespace, eventually, unique_name};

async fn condition(ns: &TestNamespace, type_: &str, status: &str) -> String {
    eventually(&format!("{type_}={status}"), WAIT, || async {
        let sm = ns.api::<SwappoMessaging>().get("dev").await.ok()?;
        sm.condition(type_)
            .filter(|c| c.status == status)
            .map(|c| c.reason.clone())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The condition types `manager` owns in the status, from `managedFields`.
async fn owned_conditions(ns: &TestNamespace, manager: &str) -> Vec<String> {
    let sm = ns.api::<SwappoMessaging>().get("dev").await.unwrap();
    let mut types: Vec<String> = sm
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.manager.as_deref() == Some(manager))
        .filter(|m| m.subresource.as_deref() == Some("status"))
        .filter_map(|m| m.fields_v1)
        .flat_map(|f| {
            let conditions = f.0["f:status"]["f:conditions"].clone();
            conditions
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .filter_map(|k| {
            let v: serde_json::Value = serde_json::from_str(k.strip_prefix("k:")?).ok()?;
            Some(v["type"].as_str()?.to_owned())
        })
        .collect();
    types.sort();
    types
}

#[tokio::test]
async fn each_writer_owns_its_conditions_and_ready_follows_consumers_scaled_within_a_poll() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-writers-").await;
    login_secret(&ns).await;
    let queue = unique_name("writers-");
    let mut settings = local_broker_settings();
    // No recheck during the test: only the autoscaler's condition can move Ready.
    settings.recheck = Duration::from_secs(3600);
    let operator = InProcess::start(&client, ns.name(), settings);
    let sm = SwappoMessaging::new_in("dev", ns.name())
        .with_credentials_secret("broker-login")
        .with_external("127.0.0.1", false)
        .with_queue(&queue)
        .with_consumer("worker", &queue);
    ns.api::<SwappoMessaging>()
        .create(&PostParams::default(), &sm)
        .await
        .unwrap();
    assert_eq!(
        condition(&ns, "ConsumersScaled", "False").await,
        "DeploymentNotFound"
    );
    condition(&ns, "BrokerReady", "True").await;
    condition(&ns, "Ready", "False").await;

    // The Deployment appears: the autoscaler sets ConsumersScaled, and Ready follows.
    let d: Deployment = serde_json::from_value(serde_json::json!({
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
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    condition(&ns, "ConsumersScaled", "True").await;
    assert_eq!(condition(&ns, "Ready", "True").await, "Ready");

    assert_eq!(
        owned_conditions(&ns, "swappo-operator").await,
        ["BrokerReady", "QueuesReady", "Ready"]
    );
    assert_eq!(
        owned_conditions(&ns, "swappo-operator-autoscaler").await,
        ["ConsumersScaled"]
    );
    let status = ns
        .api::<SwappoMessaging>()
        .get("dev")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(status.conditions.len(), 4, "{:?}", status.conditions);
    assert!(status.broker.is_some());
    assert_eq!(status.consumers.len(), 1);
    operator.stop().await;
    let conn = lapin::Connection::connect(
        &swappo_testkit::rabbitmq_url(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for q in [queue.clone(), format!("{queue}.dlq")] {
        let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
    }
    let _ = ch
        .exchange_delete(format!("{queue}.dlx").as_str().into(), Default::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
}
