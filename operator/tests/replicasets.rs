//! Stale ReplicaSets on the local control plane (the real Deployment and ReplicaSet
//! controllers, kwok pods that become Running and Ready): the two-broker-pods failure
//! reproduced, and each stale case cleaned by the operator while an in-progress rollout and
//! an unmanaged ReplicaSet are left alone. Tests skip (saying so) without a control plane,
//! unless `SWAPPO_REQUIRE_CLUSTER` is set.
mod common;

use common::*;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use std::time::Duration;
use swappo_operator::crd::SwappoMessaging;
use swappo_operator::fixtures::TestExt;
use swappo_testkit::{TestNamespace, eventually};

/// A node selector no kwok node matches: pods that need it stay Pending, never Ready.
const NOWHERE: &str = "swappo.test/no-such-node";
/// The label [`Pin`] protects.
const PINNED: &str = "swappo.test/pinned";

/// A one-replica Deployment `name` (selector `app=name`) with extra pod labels.
fn deployment(name: &str, pod_labels: &[(&str, &str)], history: Option<i32>) -> Deployment {
    let mut labels = serde_json::Map::new();
    labels.insert("app".into(), name.into());
    for (k, v) in pod_labels {
        labels.insert((*k).into(), (*v).into());
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": history,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}
            }
        }
    }))
    .unwrap()
}

/// A ReplicaSet made by hand as if the Deployment controller had made it for `revision`
/// (controller owner reference, revision annotation, a template of its own).
fn crafted(
    owner: &Deployment,
    name: &str,
    revision: i64,
    replicas: i32,
    pinned: bool,
) -> ReplicaSet {
    let app = owner.name_any();
    let mut labels = serde_json::json!({"app": app, "pod-template-hash": name});
    if pinned {
        labels[PINNED] = "true".into();
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"deployment.kubernetes.io/revision": revision.to_string()},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "name": app,
                "uid": owner.uid().unwrap(), "controller": true
            }]
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app, "pod-template-hash": name}},
            "template": {
                "metadata": {"labels": {"app": app, "pod-template-hash": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:0"}]}
            }
        }
    }))
    .unwrap()
}

fn live(rs: &ReplicaSet) -> bool {
    rs.spec.replicas.unwrap_or(0) > 0 || rs.status.as_ref().is_some_and(|s| s.replicas > 0)
}

async fn replica_sets(ns: &TestNamespace, selector: &str) -> Vec<ReplicaSet> {
    ns.api::<ReplicaSet>()
        .list(&ListParams::default().labels(selector))
        .await
        .expect("ReplicaSets list")
        .items
}

/// Waits until Deployment `name` has rolled out its latest spec: observed, one replica,
/// updated and available.
async fn rolled_out(ns: &TestNamespace, name: &str) -> Deployment {
    let api = ns.api::<Deployment>();
    eventually(&format!("Deployment {name} rolled out"), WAIT, || async {
        let d = api.get(name).await.ok()?;
        let s = d.status.as_ref()?;
        let done = s.observed_generation >= d.metadata.generation
            && s.replicas == Some(1)
            && s.updated_replicas == Some(1)
            && s.available_replicas == Some(1);
        done.then_some(d)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

async fn merge<K>(api: &Api<K>, name: &str, patch: serde_json::Value)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("patch {name}: {e}"));
}

async fn wait_two_live(ns: &TestNamespace, app: &str) -> Vec<ReplicaSet> {
    eventually(&format!("two live ReplicaSets of {app}"), WAIT, || async {
        let live: Vec<ReplicaSet> = replica_sets(ns, &format!("app={app}"))
            .await
            .into_iter()
            .filter(live)
            .collect();
        (live.len() == 2).then_some(live)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_rolling_update_that_cannot_get_ready_keeps_two_live_replica_sets_but_the_stateful_set_broker_never_has_two_pods()
 {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-rs-repro-").await;
    let _volume = BoundVolume::new(&client, ns.name(), "dev-rabbitmq-data").await;
    let operator = InProcess::start(&client, ns.name(), local_broker_settings());
    ns.api::<SwappoMessaging>()
        .create(
            &PostParams::default(),
            &SwappoMessaging::new_in("dev", ns.name()),
        )
        .await
        .unwrap();

    // The original failure: RollingUpdate, and the new revision's pod can never be Ready.
    let deployments = ns.api::<Deployment>();
    deployments
        .create(&PostParams::default(), &deployment("web", &[], None))
        .await
        .unwrap();
    rolled_out(&ns, "web").await;
    let selector =
        serde_json::json!({"spec": {"template": {"spec": {"nodeSelector": {NOWHERE: "true"}}}}});
    merge(&deployments, "web", selector.clone()).await;
    wait_two_live(&ns, "web").await;
    // It stays that way (the operator runs in this namespace but does not manage `web`):
    // 40 looks over 10 s, each seeing the old revision's pod still available.
    for _ in 0..40 {
        let sets = replica_sets(&ns, "app=web").await;
        assert_eq!(sets.iter().filter(|r| live(r)).count(), 2, "{sets:#?}");
        let old_available = sets.iter().any(|r| {
            r.status
                .as_ref()
                .is_some_and(|s| s.available_replicas == Some(1))
        });
        assert!(old_available, "the old revision keeps its Ready pod");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The operator's broker StatefulSet, given the same update, never has two pods: the
    // replacement is created only once the old pod is gone.
    let sets = ns.api::<StatefulSet>();
    eventually("the broker StatefulSet's pod Ready", WAIT, || async {
        let s = sets.get("dev-rabbitmq").await.ok()?.status?;
        (s.ready_replicas == Some(1)).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let broker = "app.kubernetes.io/instance=dev";
    let sampler = {
        let api = ns.api::<Pod>();
        tokio::spawn(async move {
            let mut most = 0;
            let mut samples = 0u32;
            // Until the updated pod (unschedulable: it stays Pending) exists and 5 s beyond;
            // bounded by the failure guard.
            let deadline = tokio::time::Instant::now() + WAIT;
            let mut done_at = None;
            while tokio::time::Instant::now() < deadline {
                let pods = api
                    .list(&ListParams::default().labels(broker))
                    .await
                    .unwrap()
                    .items;
                samples += 1;
                // Terminating pods count: their containers may still run.
                most = most.max(pods.len());
                let updated = pods.iter().any(|p| {
                    p.spec
                        .as_ref()
                        .and_then(|s| s.node_selector.as_ref())
                        .is_some_and(|n| n.contains_key(NOWHERE))
                });
                if updated && done_at.is_none() {
                    done_at = Some(tokio::time::Instant::now());
                }
                if done_at.is_some_and(|t| t.elapsed() > Duration::from_secs(5)) {
                    return (most, samples, true);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (most, samples, false)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await; // a few samples before the update
    merge(&sets, "dev-rabbitmq", selector).await;
    let (most, samples, updated) = sampler.await.unwrap();
    assert!(updated, "the broker update went through");
    assert_eq!(most, 1, "at most one broker pod in {samples} samples");
    eprintln!("broker update: {samples} samples, at most {most} broker pod");
    operator.stop().await;
}

/// A ValidatingAdmissionPolicy (with its binding) refusing any decrease of `spec.replicas`
/// of the ReplicaSets labelled [`PINNED`] in one namespace: it keeps the Deployment
/// controller from scaling an old revision down, as a stuck controller or a hand-made set
/// would. Deleted when dropped (cluster-scoped: the namespace's deletion does not remove it).
struct Pin {
    name: String,
}

impl Pin {
    async fn new(client: &Client, ns: &TestNamespace) -> Self {
        let name = format!("{}-pin", ns.name());
        let policy: ValidatingAdmissionPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {swappo_testkit::kube::TEST_NAMESPACE_LABEL: "true"}},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                        "operations": ["UPDATE"], "resources": ["replicasets"]}],
                    "objectSelector": {"matchLabels": {PINNED: "true"}},
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns.name()}}
                },
                "validations": [{
                    "expression": "object.spec.replicas >= oldObject.spec.replicas",
                    "message": "pinned by a test: replicas may not decrease"
                }]
            }
        }))
        .unwrap();
        let binding: ValidatingAdmissionPolicyBinding =
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "labels": {swappo_testkit::kube::TEST_NAMESPACE_LABEL: "true"}},
                "spec": {"policyName": name, "validationActions": ["Deny"]}
            }))
            .unwrap();
        Api::<ValidatingAdmissionPolicy>::all(client.clone())
            .create(&PostParams::default(), &policy)
            .await
            .unwrap();
        Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();
        Self { name }
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let name = self.name.clone();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let client = swappo_testkit::kube_client().await;
                    let dp = DeleteParams::default();
                    let _ = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
                        .delete(&name, &dp)
                        .await;
                    let _ = Api::<ValidatingAdmissionPolicy>::all(client)
                        .delete(&name, &dp)
                        .await;
                })
        })
        .join()
        .ok();
    }
}

async fn events_with(ns: &TestNamespace, reason: &str) -> Vec<Event> {
    ns.api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

#[tokio::test]
async fn each_kind_of_stale_replica_set_is_deleted_with_an_event_and_counted_while_a_rollout_in_progress_and_unmanaged_sets_are_left_alone()
 {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-rs-clean-").await;
    let _volume = BoundVolume::new(&client, ns.name(), "dev-rabbitmq-data").await;
    let deployments = ns.api::<Deployment>();
    let sets = ns.api::<ReplicaSet>();

    // The pin, proven active on an unmanaged set (no owner, none of our labels), which
    // stays to the end as the unmanaged ReplicaSet nobody may touch.
    let _pin = Pin::new(&client, &ns).await;
    let probe: ReplicaSet = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "probe", "labels": {"app": "probe", PINNED: "true"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "probe"}},
            "template": {"metadata": {"labels": {"app": "probe"}},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}}}
    }))
    .unwrap();
    sets.create(&PostParams::default(), &probe).await.unwrap();
    eventually("the pin refuses a scale-down", WAIT, || async {
        let dry = PatchParams {
            dry_run: true,
            ..PatchParams::default()
        };
        let patch = serde_json::json!({"spec": {"replicas": 0}});
        sets.patch("probe", &dry, &Patch::Merge(&patch))
            .await
            .is_err()
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // The instance, clean-up off for now; two consumers it scales (held at one replica).
    let operator = InProcess::start(&client, ns.name(), local_broker_settings());
    let mut sm = SwappoMessaging::new_in("dev", ns.name())
        .with_queue("jobs")
        .with_consumer("worker", "jobs")
        .with_consumer("stuck", "jobs");
    for c in &mut sm.spec.consumers {
        c.max_replicas = 1;
    }
    sm.spec.cleanup.stale_replica_sets = false;
    let instances = ns.api::<SwappoMessaging>();
    instances.create(&PostParams::default(), &sm).await.unwrap();

    // `worker`, history limit 0, at revision 3 after two template updates.
    deployments
        .create(&PostParams::default(), &deployment("worker", &[], Some(0)))
        .await
        .unwrap();
    rolled_out(&ns, "worker").await;
    for rev in ["2", "3"] {
        let patch =
            serde_json::json!({"spec": {"template": {"metadata": {"annotations": {"rev": rev}}}}});
        merge(&deployments, "worker", patch).await;
        rolled_out(&ns, "worker").await;
    }
    let worker = rolled_out(&ns, "worker").await;
    // History limit 0: the controller deletes the old revisions once the rollout is done.
    let current: Vec<String> = eventually("worker down to its current revision", WAIT, || async {
        let names: Vec<String> = replica_sets(&ns, "app=worker")
            .await
            .iter()
            .map(|r| r.name_any())
            .collect();
        (names.len() == 1).then_some(names)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // (a) revision 2 holding a replica the controller cannot take away (pinned) although
    // revision 3 is available; created first, so the controller stays stuck on it and
    // never gets to its own history clean-up, which would otherwise race ours for (c).
    sets.create(
        &PostParams::default(),
        &crafted(&worker, "worker-holding", 2, 1, true),
    )
    .await
    .unwrap();
    // Its pod available first: the controller scales unhealthy old replicas down without
    // stopping on a refusal, and would then go on to its own history clean-up.
    eventually("worker-holding's pod available", WAIT, || async {
        let rs = sets.get("worker-holding").await.ok()?;
        (rs.status?.available_replicas == Some(1)).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // (c) revision 1, no replicas, beyond the limit of 0.
    sets.create(
        &PostParams::default(),
        &crafted(&worker, "worker-ancient", 1, 0, false),
    )
    .await
    .unwrap();

    // An in-progress rollout of a managed consumer: the new revision can never be Ready.
    deployments
        .create(&PostParams::default(), &deployment("stuck", &[], None))
        .await
        .unwrap();
    rolled_out(&ns, "stuck").await;
    let nowhere =
        serde_json::json!({"spec": {"template": {"spec": {"nodeSelector": {NOWHERE: "true"}}}}});
    merge(&deployments, "stuck", nowhere).await;
    let stuck_sets: Vec<String> = wait_two_live(&ns, "stuck")
        .await
        .iter()
        .map(|r| r.name_any())
        .collect();

    // (b) a set with this instance's labels whose Deployment was deleted, orphaning it.
    let instance_labels = [
        ("app.kubernetes.io/instance", "dev"),
        ("app.kubernetes.io/managed-by", "swappo-operator"),
    ];
    deployments
        .create(
            &PostParams::default(),
            &deployment("legacy", &instance_labels, None),
        )
        .await
        .unwrap();
    rolled_out(&ns, "legacy").await;
    deployments
        .delete("legacy", &DeleteParams::orphan())
        .await
        .unwrap();
    let orphan = eventually("the legacy set orphaned", WAIT, || async {
        let sets = replica_sets(&ns, "app=legacy").await;
        let rs = sets.into_iter().next()?;
        let gone = deployments.get_opt("legacy").await.ok()?.is_none();
        (gone && rs.owner_references().is_empty()).then_some(rs.name_any())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // With clean-up off, reconciles (set off by these ReplicaSet changes) delete nothing.
    let seen = operator.metric("swappo_operator_reconciles_total");
    eventually("two more reconciles", WAIT, || async {
        (operator.metric("swappo_operator_reconciles_total") >= seen + 2.0).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    for name in ["worker-holding", "worker-ancient", orphan.as_str()] {
        assert!(
            sets.get_opt(name).await.unwrap().is_some(),
            "{name} kept while clean-up is off"
        );
    }
    assert_eq!(
        operator.metric("swappo_operator_stale_replica_sets_deleted_total"),
        0.0
    );

    // Clean-up on: the three stale sets go, one Event each, counted in status and metric.
    merge(
        &instances,
        "dev",
        serde_json::json!({"spec": {"cleanup": {"staleReplicaSets": true}}}),
    )
    .await;
    let expected = [
        ("worker-holding", "OldRevisionHoldingReplicas"),
        ("worker-ancient", "BeyondHistoryLimit"),
        (orphan.as_str(), "OwnerDeploymentGone"),
    ];
    for (name, reason) in expected {
        let gone = eventually(&format!("{name} deleted"), WAIT, || async {
            sets.get_opt(name).await.ok()?.is_none().then_some(())
        })
        .await;
        if let Err(e) = gone {
            let worker = deployments
                .get("worker")
                .await
                .ok()
                .map(|d| (d.metadata.generation, d.status));
            let all: Vec<_> = replica_sets(&ns, "app=worker")
                .await
                .into_iter()
                .map(|r| {
                    (
                        r.name_any(),
                        r.annotations().clone(),
                        r.spec.replicas,
                        r.status,
                    )
                })
                .collect();
            let status = instances.get("dev").await.ok().and_then(|s| s.status);
            let warnings: Vec<_> = ns
                .api::<Event>()
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|e| e.type_.as_deref() == Some("Warning"))
                .map(|e| (e.reason, e.note))
                .collect();
            let reconciles = operator.metric("swappo_operator_reconciles_total");
            eprintln!(
                "warnings: {warnings:#?}\nreconciles: {reconciles}\nmetrics:\n{}",
                operator.metrics.encode()
            );
            panic!("{e}\nworker: {worker:#?}\nsets: {all:#?}\nstatus: {status:#?}");
        }
        // The Event follows the deletion (published once the clean-up's deletions are done).
        let event = eventually(&format!("an Event {reason} about {name}"), WAIT, || async {
            events_with(&ns, reason)
                .await
                .into_iter()
                .find(|e| e.related.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(event.type_.as_deref(), Some("Normal"));
        let note = event.note.clone().unwrap_or_default();
        assert!(note.contains(name), "{note}");
        assert_eq!(
            event.regarding.as_ref().and_then(|r| r.name.as_deref()),
            Some("dev")
        );
    }
    eventually("status.replicaSetsCleaned = 3", WAIT, || async {
        let sm = instances.get("dev").await.ok()?;
        (sm.status?.replica_sets_cleaned == 3).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        operator.metric("swappo_operator_stale_replica_sets_deleted_total"),
        3.0
    );

    // Left alone: the rollout in progress (both sets, still live), the unmanaged probe and
    // worker's current revision.
    for name in stuck_sets.iter().chain(current.iter()) {
        let rs = sets.get(name).await.unwrap();
        assert!(live(&rs), "{name} still live");
    }
    assert!(sets.get_opt("probe").await.unwrap().is_some());
    let sm = instances.get("dev").await.unwrap();
    assert_eq!(
        sm.status.unwrap().replica_sets_cleaned,
        3,
        "no more than three"
    );
    operator.stop().await;
}
