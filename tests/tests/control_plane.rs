//! Smoke tests of the local Kubernetes control plane (`make cluster-up`) through kube-rs:
//! the parts the operator relies on really run — server-side apply with the Deployment and
//! ReplicaSet controllers and kwok's node, RBAC with ServiceAccount tokens, CRD validation
//! rules (CEL), garbage collection and Pod Security admission. Each test works in a namespace
//! of its own, deleted at the end.
use futures::FutureExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::runtime::wait::conditions;
use kube::{Api, ResourceExt};
use serde_json::json;
use std::io::Write as _;
use std::panic::AssertUnwindSafe;
use std::time::Duration;
use swappo_testkit::{TestNamespace, eventually, kube_client, unique_name, wait_for};

/// Failure guard for every wait: far above what a healthy cluster needs (a second or two),
/// so only a stuck cluster trips it.
const GUARD: Duration = Duration::from_secs(90);

/// The API status code of a failed call, or a panic naming the unexpected error.
fn status_of(result: Result<impl std::fmt::Debug, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_control_plane_serves_kubernetes_v1_37_2_with_a_ready_fake_node() {
    let client = kube_client().await;
    let version = client.apiserver_version().await.expect("GET /version");
    // Straight to stderr, past the test harness's capture: the log of every run names the
    // server it tested against, even when everything passes.
    let _ = writeln!(
        std::io::stderr(),
        "control plane: kube-apiserver {} (major {}, minor {}, {})",
        version.git_version,
        version.major,
        version.minor,
        version.platform
    );
    assert_eq!(
        version.git_version, "v1.37.2",
        "the build stamped the version"
    );
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "37")
    );

    let nodes: Api<Node> = Api::all(client);
    let ready_nodes: Vec<Node> = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        // kwok's nodes (label type=kwok); the real node, when up, is tainted on purpose.
        .filter(|n| n.labels().get("type").map(String::as_str) == Some("kwok"))
        .filter(|n| {
            let conditions = n.status.as_ref().and_then(|s| s.conditions.as_ref());
            conditions
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
        .collect();
    assert!(
        !ready_nodes.is_empty(),
        "kwok keeps at least one node Ready"
    );
    let node = &ready_nodes[0];
    assert!(
        node.spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_none_or(|t| t.is_empty())
    );
    println!("node {} Ready", node.name_any());
}

#[tokio::test]
async fn a_server_side_applied_deployment_gets_a_replicaset_and_a_running_ready_pod() {
    let ns = TestNamespace::new("cp-deploy-").await;
    let deployments: Api<Deployment> = ns.api();
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                // kwok plays the kubelet: the image is never pulled.
                "spec": { "containers": [{ "name": "web", "image": "registry.invalid/web:1" }] }
            }
        }
    }))
    .unwrap();
    let applied = deployments
        .patch(
            "web",
            &PatchParams::apply("swappo-e2e"),
            &Patch::Apply(&deployment),
        )
        .await
        .expect("server-side apply of a Deployment");
    let managers: Vec<_> = applied
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.as_deref())
        .collect();
    assert!(
        managers.contains(&"swappo-e2e"),
        "apply records its field manager: {managers:?}"
    );

    let replica_sets: Api<ReplicaSet> = ns.api();
    let owned_by_web = |rs: &ReplicaSet| {
        rs.owner_references()
            .iter()
            .any(|o| o.kind == "Deployment" && o.uid == applied.uid().unwrap())
    };
    let rs = eventually("a ReplicaSet owned by the Deployment", GUARD, || async {
        let list = replica_sets.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|rs| owned_by_web(rs))
    })
    .await
    .unwrap();

    let pods: Api<Pod> = ns.api();
    let pod = eventually(
        "a Running and Ready pod of the ReplicaSet",
        GUARD,
        || async {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            list.items.into_iter().find(|pod| {
                let owned = pod
                    .owner_references()
                    .iter()
                    .any(|o| o.uid == rs.uid().unwrap());
                let status = pod.status.as_ref();
                let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
                let ready = status
                    .and_then(|s| s.conditions.as_ref())
                    .into_iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                owned && running && ready
            })
        },
    )
    .await
    .unwrap();
    assert!(
        pod.spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some(),
        "the pod was scheduled"
    );

    let done = wait_for(
        &deployments,
        "web",
        "the Deployment to complete its rollout",
        GUARD,
        conditions::is_deployment_completed(),
    )
    .await
    .unwrap();
    let status = done.and_then(|d| d.status).unwrap();
    assert_eq!(status.available_replicas, Some(1));
}

#[tokio::test]
async fn a_service_account_without_rights_is_refused_until_a_role_binding_grants_them() {
    let ns = TestNamespace::new("cp-rbac-").await;
    let as_nobody = ns
        .service_account_client("nobody")
        .await
        .expect("a token for the ServiceAccount");
    let their_config_maps: Api<ConfigMap> = Api::namespaced(as_nobody, ns.name());

    let refused = status_of(their_config_maps.list(&ListParams::default()).await);
    assert_eq!(refused.code, 403, "{refused:?}");
    let user = format!("system:serviceaccount:{}:nobody", ns.name());
    assert!(
        refused.message.contains(&user),
        "the token authenticated as the ServiceAccount (not anonymous): {}",
        refused.message
    );

    // The same token works once RBAC allows it: the refusal was RBAC, not a broken token.
    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "read-config-maps" },
        "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"] }]
    }))
    .unwrap();
    ns.api::<Role>()
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "nobody-reads-config-maps" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-config-maps" },
        "subjects": [{ "kind": "ServiceAccount", "name": "nobody", "namespace": ns.name() }]
    }))
    .unwrap();
    ns.api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    eventually("the RoleBinding to take effect", GUARD, || async {
        their_config_maps.list(&ListParams::default()).await.ok()
    })
    .await
    .unwrap();
    let still_refused = status_of(
        their_config_maps
            .delete("anything", &DeleteParams::default())
            .await,
    );
    assert_eq!(
        still_refused.code, 403,
        "only the granted verb is allowed: {still_refused:?}"
    );
}

#[tokio::test]
async fn a_crd_with_a_cel_rule_refuses_an_object_that_breaks_it_with_the_rules_message() {
    let ns = TestNamespace::new("cp-cel-").await;
    // CRDs are cluster-wide: a group of its own keeps parallel runs apart.
    let group = format!("{}.e2e.swappo.dev", unique_name("cel"));
    let crd_name = format!("ranges.{group}");
    let crds: Api<CustomResourceDefinition> = Api::all(ns.client().clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": { "name": crd_name, "labels": { "swappo.dev/test-namespace": "true" } },
        "spec": {
            "group": group,
            "names": { "kind": "Range", "plural": "ranges", "singular": "range" },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": { "spec": {
                        "type": "object",
                        "required": ["min", "max"],
                        "properties": {
                            "min": { "type": "integer" },
                            "max": { "type": "integer" }
                        },
                        "x-kubernetes-validations": [
                            { "rule": "self.min <= self.max", "message": "min must not exceed max" }
                        ]
                    }}
                }}
            }]
        }
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("create the CRD");

    let body = async {
        wait_for(
            &crds,
            &crd_name,
            "the CRD to be established",
            GUARD,
            conditions::is_crd_established(),
        )
        .await
        .unwrap();
        let gvk = GroupVersionKind::gvk(&group, "v1", "Range");
        let resource = ApiResource::from_gvk_with_plural(&gvk, "ranges");
        let ranges: Api<DynamicObject> =
            Api::namespaced_with(ns.client().clone(), ns.name(), &resource);
        let range = |name: &str, min: i64, max: i64| {
            let mut obj = DynamicObject::new(name, &resource);
            obj.data = json!({ "spec": { "min": min, "max": max } });
            obj
        };
        // Discovery of a just-established CRD can lag a moment: retry the valid create.
        eventually("a valid Range to be accepted", GUARD, || async {
            ranges
                .create(&PostParams::default(), &range("good", 1, 2))
                .await
                .ok()
        })
        .await
        .unwrap();

        let refused = status_of(
            ranges
                .create(&PostParams::default(), &range("bad", 3, 2))
                .await,
        );
        assert_eq!(refused.code, 422, "{refused:?}");
        assert!(
            refused.message.contains("min must not exceed max"),
            "{}",
            refused.message
        );
        let missing = status_of(ranges.get("bad").await);
        assert_eq!(missing.code, 404, "the refused object was not stored");
    };
    let outcome = AssertUnwindSafe(body).catch_unwind().await;
    if let Err(e) = crds.delete(&crd_name, &DeleteParams::default()).await {
        eprintln!("could not delete CRD {crd_name}: {e}");
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_its_dependents_and_nothing_else() {
    let ns = TestNamespace::new("cp-gc-").await;
    let config_maps: Api<ConfigMap> = ns.api();
    let config_map = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap()
    };
    let owner = config_maps
        .create(&PostParams::default(), &config_map("owner"))
        .await
        .unwrap();
    let mut dependent = config_map("dependent");
    dependent.metadata.owner_references = Some(vec![
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.uid().unwrap()
        }))
        .unwrap(),
    ]);
    config_maps
        .create(&PostParams::default(), &dependent)
        .await
        .unwrap();
    config_maps
        .create(&PostParams::default(), &config_map("bystander"))
        .await
        .unwrap();

    config_maps
        .delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    let dependent_uid = config_maps.get("dependent").await.map(|d| d.uid().unwrap());
    if let Ok(uid) = dependent_uid {
        wait_for(
            &config_maps,
            "dependent",
            "the dependent to be collected",
            GUARD,
            conditions::is_deleted(&uid),
        )
        .await
        .unwrap();
    }
    assert_eq!(status_of(config_maps.get("dependent").await).code, 404);
    config_maps
        .get("bystander")
        .await
        .expect("an object without owner stays");
}

#[tokio::test]
async fn pod_security_admission_refuses_a_privileged_pod_in_a_restricted_namespace() {
    let ns = TestNamespace::new("cp-psa-").await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ns.client().clone());
    let label =
        json!({ "metadata": { "labels": { "pod-security.kubernetes.io/enforce": "restricted" } } });
    namespaces
        .patch(ns.name(), &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();

    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "privileged" },
        "spec": { "containers": [{
            "name": "c", "image": "registry.invalid/c:1",
            "securityContext": { "privileged": true }
        }]}
    }))
    .unwrap();
    let refused = status_of(ns.api::<Pod>().create(&PostParams::default(), &pod).await);
    assert_eq!(refused.code, 403, "{refused:?}");
    assert!(
        refused
            .message
            .contains("violates PodSecurity \"restricted"),
        "{}",
        refused.message
    );
}
