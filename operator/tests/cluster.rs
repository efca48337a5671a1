//! The operator on the local control plane (real kube-apiserver, controller-manager with its
//! garbage collector, scheduler, kwok nodes) and the local RabbitMQ. Each test takes a
//! namespace of its own. Tests skip (saying so) when no control plane answers, unless
//! `SWAPPO_REQUIRE_CLUSTER` is set, as `make test` does.
mod common;

use common::*;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Api, Client, ResourceExt};
use std::time::Duration;
use swappo_operator::builders::secret::secret_value;
use swappo_operator::crd::SwappoMessaging;
use swappo_operator::fixtures::TestExt;
use swappo_testkit::{TestNamespace, eventually, wait_for};

const MANAGED_BY: &str = "app.kubernetes.io/managed-by=swappo-operator";

async fn create(ns: &TestNamespace, sm: &SwappoMessaging) -> SwappoMessaging {
    ns.api::<SwappoMessaging>()
        .create(&PostParams::default(), sm)
        .await
        .expect("the object is accepted")
}

/// Waits until condition `type_` of `name` has `status`, returns the object.
async fn wait_condition(
    ns: &TestNamespace,
    name: &str,
    type_: &str,
    status: &str,
) -> SwappoMessaging {
    let api = ns.api::<SwappoMessaging>();
    let what = format!("{type_}={status} on {name}");
    let found = wait_for(&api, name, &what, WAIT, |sm: Option<&SwappoMessaging>| {
        sm.and_then(|sm| sm.condition(type_))
            .is_some_and(|c| c.status == status)
    })
    .await;
    match found {
        Ok(Some(sm)) => sm,
        other => {
            let now = api
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .and_then(|s| s.status);
            panic!("{what}: {other:?}; status now: {now:#?}")
        }
    }
}

async fn wait_exists<K>(api: &Api<K>, name: &str) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    wait_for(
        api,
        name,
        &format!("{name} to exist"),
        WAIT,
        |o: Option<&K>| o.is_some(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .expect("it exists")
}

fn secret(s: &Secret, key: &str) -> String {
    secret_value(s, key).unwrap_or_else(|| panic!("Secret key {key} missing"))
}

#[tokio::test]
async fn bad_objects_are_refused_by_the_api_server_with_a_message_naming_the_field() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-bad-").await;
    let resource = ApiResource::erase::<SwappoMessaging>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns.name(), &resource);
    let q = |name: &str| serde_json::json!({"name": name});
    let consumer = |min: i32, max: i32| serde_json::json!({"deployment": "d", "queue": "q", "minReplicas": min, "maxReplicas": max});
    let cases: Vec<(&str, &str, serde_json::Value, &[&str])> = vec![
        (
            "min above max",
            "a",
            serde_json::json!({"queues": [q("q")], "consumers": [consumer(5, 2)]}),
            &["spec.consumers[0]", "minReplicas must be <= maxReplicas"],
        ),
        (
            "max below 1",
            "a",
            serde_json::json!({"queues": [q("q")], "consumers": [consumer(0, 0)]}),
            &[
                "spec.consumers[0].maxReplicas",
                "greater than or equal to 1",
            ],
        ),
        (
            "messagesPerReplica 0",
            "a",
            serde_json::json!({"queues": [q("q")], "consumers": [{"deployment": "d", "queue": "q", "messagesPerReplica": 0}]}),
            &["spec.consumers[0].messagesPerReplica"],
        ),
        (
            "duplicate queues",
            "a",
            serde_json::json!({"queues": [q("q"), q("q")]}),
            &["spec.queues", "spec.queues[].name must be unique"],
        ),
        (
            "bad queue name",
            "a",
            serde_json::json!({"queues": [q("has space")]}),
            &["spec.queues[0].name", "should match"],
        ),
        (
            "reserved queue name",
            "a",
            serde_json::json!({"queues": [q("amq.mine")]}),
            &["spec.queues[0].name", "must not start with amq."],
        ),
        (
            "unknown queue type",
            "a",
            serde_json::json!({"queues": [{"name": "q", "type": "stream"}]}),
            &["spec.queues[0].type", "Unsupported value"],
        ),
        (
            "priority on quorum",
            "a",
            serde_json::json!({"queues": [{"name": "q", "maxPriority": 5}]}),
            &["spec.queues[0]", "maxPriority needs type classic"],
        ),
        (
            "consumer of an undeclared queue",
            "a",
            serde_json::json!({"queues": [q("q")], "consumers": [{"deployment": "d", "queue": "other"}]}),
            &["spec", "must name a queue declared in spec.queues"],
        ),
        (
            "duplicate consumer deployments",
            "a",
            serde_json::json!({"queues": [q("q")], "consumers": [consumer(1, 2), consumer(1, 3)]}),
            &["spec.consumers", "one scaler per Deployment"],
        ),
        (
            "storage not a quantity",
            "a",
            serde_json::json!({"broker": {"storage": {"size": "lots"}}}),
            &["spec.broker.storage.size", "should match"],
        ),
        (
            "storage zero",
            "a",
            serde_json::json!({"broker": {"storage": {"size": "0"}}}),
            &["spec.broker.storage.size", "must be larger than 0"],
        ),
        (
            "legacy quorum queue",
            "a",
            serde_json::json!({"queues": [{"name": "q", "legacy": true}]}),
            &[
                "spec.queues[0]",
                "legacy declares the queue as the original services do",
            ],
        ),
        (
            "legacy queue with a TTL",
            "a",
            serde_json::json!({"queues": [{"name": "q", "type": "classic", "legacy": true, "messageTtlSeconds": 5}]}),
            &["spec.queues[0]", "remove messageTtlSeconds and maxPriority"],
        ),
        (
            "external mixed with managed fields",
            "a",
            serde_json::json!({"broker": {"image": "rabbitmq:3", "credentialsSecret": "c", "external": {"host": "h"}}}),
            &[
                "spec.broker",
                "remove spec.broker.image, storage and resources (and nodeSelector, tolerations, networkPolicy)",
            ],
        ),
        (
            "external without credentials",
            "a",
            serde_json::json!({"broker": {"external": {"host": "h"}}}),
            &["spec.broker", "needs spec.broker.credentialsSecret"],
        ),
        (
            "external port out of range",
            "a",
            serde_json::json!({"broker": {"credentialsSecret": "c", "external": {"host": "h", "port": 70000}}}),
            &["spec.broker.external.port", "less than or equal to 65535"],
        ),
        (
            "name too long",
            "a234567890123456789012345678901234567890x",
            serde_json::json!({}),
            &["at most 40 characters"],
        ),
        (
            "name starting with a digit",
            "1abc",
            serde_json::json!({}),
            &["must start with a letter"],
        ),
    ];
    let mut failures = Vec::new();
    for (what, name, spec, expected) in &cases {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "swappo.io/v1alpha1", "kind": "SwappoMessaging",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(kube::Error::Api(status)) => {
                let message = status.message.clone();
                if status.code != 422 || !expected.iter().all(|e| message.contains(e)) {
                    failures.push(format!(
                        "{what}: {} {message} (expected {expected:?})",
                        status.code
                    ));
                }
            }
            Err(e) => failures.push(format!("{what}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "unexpected answers:\n{}",
        failures.join("\n")
    );
    // Nothing was created, and the same API takes a valid object (the table is not vacuous).
    assert!(
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let valid = SwappoMessaging::new_in("valid", ns.name())
        .with_queue("q")
        .with_consumer("d", "q");
    create(&ns, &valid).await;
}

#[tokio::test]
async fn a_valid_object_gets_its_broker_objects_running_under_restricted_and_broker_ready() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-valid-").await;
    enforce_restricted(&client, ns.name()).await;
    let _volume = BoundVolume::new(&client, ns.name(), "dev-rabbitmq-data").await;
    let operator = InProcess::start(&client, ns.name(), local_broker_settings());
    let sm = create(
        &ns,
        &SwappoMessaging::new_in("dev", ns.name()).with_queue("notifications_queue"),
    )
    .await;
    let uid = sm.uid().unwrap();

    // Every owned object, with owner reference and labels.
    let secret_obj = wait_exists(&ns.api::<Secret>(), "dev-rabbitmq").await;
    let deployment = wait_exists(&ns.api::<StatefulSet>(), "dev-rabbitmq").await;
    let service = wait_exists(&ns.api::<Service>(), "dev-rabbitmq").await;
    let policy = wait_exists(&ns.api::<NetworkPolicy>(), "dev-rabbitmq").await;
    let config = wait_exists(&ns.api::<ConfigMap>(), "dev-rabbitmq-config").await;
    let claim = wait_exists(&ns.api::<PersistentVolumeClaim>(), "dev-rabbitmq-data").await;
    // The Secret and the claim are retained by default (whenDeleted: Retain): no owner.
    assert!(secret_obj.metadata.owner_references.is_none());
    assert!(claim.metadata.owner_references.is_none());
    let metas = [
        &secret_obj.metadata,
        &deployment.metadata,
        &service.metadata,
        &policy.metadata,
        &config.metadata,
        &claim.metadata,
    ];
    for meta in metas {
        let name = meta.name.clone().unwrap();
        if let Some(owners) = &meta.owner_references {
            let owner = &owners[0];
            assert_eq!(
                (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
                ("SwappoMessaging", uid.as_str(), Some(true)),
                "{name}"
            );
        } else {
            assert!(
                name == "dev-rabbitmq" || name == "dev-rabbitmq-data",
                "{name}"
            );
        }
        let labels = meta.labels.as_ref().unwrap();
        for (k, v) in [
            ("app.kubernetes.io/name", "rabbitmq"),
            ("app.kubernetes.io/instance", "dev"),
            ("app.kubernetes.io/component", "broker"),
            ("app.kubernetes.io/managed-by", "swappo-operator"),
        ] {
            assert_eq!(
                labels.get(k).map(String::as_str),
                Some(v),
                "{name} label {k}"
            );
        }
    }
    let password = secret(&secret_obj, "password");
    let username = secret(&secret_obj, "username");
    assert!(password.len() >= 24);
    for key in ["host", "port", "uri", "management-uri", "erlang-cookie"] {
        secret(&secret_obj, key);
    }
    assert_eq!(
        secret(&secret_obj, "host"),
        format!("dev-rabbitmq.{}.svc", ns.name())
    );
    let spec = &deployment.spec;
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(
        spec.update_strategy.as_ref().unwrap().type_.as_deref(),
        Some("RollingUpdate")
    );
    // The policy as the API server stored it (no NetworkPolicy enforcement on this test
    // bed: its content is what is checked): AMQP from the namespace's pods, and the
    // management and Prometheus ports from no one else (the in-process operator has no
    // namespace of its own).
    let rules = policy.spec.unwrap().ingress.unwrap();
    let amqp = &rules[0];
    assert_eq!(
        amqp.ports.as_ref().unwrap()[0].port,
        Some(IntOrString::Int(5672))
    );
    let from = amqp.from.as_ref().unwrap();
    assert_eq!(from.len(), 1);
    assert!(from[0].namespace_selector.is_none());
    assert_eq!(from[0].pod_selector.as_ref().unwrap().match_labels, None);
    assert_eq!(rules.len(), 1, "{rules:?}");
    let container = &spec.template.spec.as_ref().unwrap().containers[0];
    let readiness = container.readiness_probe.as_ref().unwrap();
    assert!(readiness.tcp_socket.is_some() && readiness.timeout_seconds == Some(5));
    let ports: Vec<i32> = service
        .spec
        .unwrap()
        .ports
        .unwrap()
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(ports, [5672, 15672, 15692]);

    // The pod passes `restricted` admission and runs (kwok); the StatefulSet's pod is Ready.
    let pods = ns.api::<Pod>();
    let running = eventually("a Running broker pod", WAIT, || async {
        let list = pods
            .list(&ListParams::default().labels("app.kubernetes.io/instance=dev"))
            .await
            .ok()?;
        list.items
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        running
            .spec
            .unwrap()
            .security_context
            .unwrap()
            .run_as_non_root,
        Some(true)
    );
    // The namespace really enforces `restricted`: a root pod is refused there.
    let root_pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "root"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": {"runAsUser": 0}}]}
    }))
    .unwrap();
    match pods.create(&PostParams::default(), &root_pod).await {
        Err(kube::Error::Api(status)) => {
            assert!(
                status.message.contains("violates PodSecurity"),
                "{}",
                status.message
            )
        }
        other => panic!("a root pod was not refused by restricted admission: {other:?}"),
    }

    // No broker user with these credentials yet: the login is refused, and says so.
    let refused = eventually("BrokerReady reason AuthenticationFailed", WAIT, || async {
        let sm = ns.api::<SwappoMessaging>().get("dev").await.ok()?;
        sm.condition("BrokerReady")
            .filter(|c| c.reason == "AuthenticationFailed")
            .cloned()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        refused.message.contains(&username) && refused.message.contains("Secret dev-rabbitmq"),
        "{}",
        refused.message
    );
    assert!(!refused.message.contains(&password));

    // With a matching broker user, BrokerReady and Ready turn True.
    let _user = BrokerUser::new(&username, &password).await;
    let ready = wait_condition(&ns, "dev", "Ready", "True").await;
    let status = ready.status.unwrap();
    assert_eq!(status.observed_generation, Some(1));
    let broker = status.broker.unwrap();
    assert_eq!(broker.secret_name, "dev-rabbitmq");
    assert_eq!(
        broker.endpoint,
        format!("dev-rabbitmq.{}.svc:5672", ns.name())
    );
    assert_eq!(broker.ready_replicas, 1);
    let brokerready = ready_condition(&ns, "BrokerReady").await;
    assert_eq!(brokerready.reason, "BrokerAvailable");

    // Events tell the story: objects created, broker down then up. The operator publishes a
    // transition's Event after writing the status, so wait for them rather than list once.
    let uid = uid.as_str();
    eventually(
        "Created, AuthenticationFailed and BrokerReady Events",
        WAIT,
        || async {
            let events = ns.api::<Event>().list(&ListParams::default()).await.ok()?;
            let reasons: Vec<String> = events
                .items
                .iter()
                .filter(|e| e.regarding.as_ref().and_then(|r| r.uid.as_deref()) == Some(uid))
                .filter_map(|e| e.reason.clone())
                .collect();
            ["Created", "AuthenticationFailed", "BrokerReady"]
                .iter()
                .all(|r| reasons.iter().any(|x| x == r))
                .then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    operator.stop().await;
}

async fn ready_condition(
    ns: &TestNamespace,
    type_: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    let sm = ns.api::<SwappoMessaging>().get("dev").await.unwrap();
    sm.condition(type_).cloned().unwrap()
}

async fn credentials_secret(ns: &TestNamespace, name: &str, username: &str, password: &str) {
    let s = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        string_data: Some(
            [
                ("username".to_owned(), username.to_owned()),
                ("password".to_owned(), password.to_owned()),
            ]
            .into(),
        ),
        ..Secret::default()
    };
    let api = ns.api::<Secret>();
    api.patch(
        name,
        &PatchParams::apply("operator-tests").force(),
        &Patch::Apply(&s),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn an_external_broker_with_wrong_credentials_is_not_ready_with_a_reason_then_recovers() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-ext-").await;
    credentials_secret(&ns, "broker-login", "swappo", "certainly-not-the-password").await;
    let operator = InProcess::start(&client, ns.name(), local_broker_settings());
    let sm = SwappoMessaging::new_in("dev", ns.name())
        .with_credentials_secret("broker-login")
        .with_external("127.0.0.1", false);
    create(&ns, &sm).await;

    let refused = eventually(
        "BrokerReady False with AuthenticationFailed",
        WAIT,
        || async {
            let sm = ns.api::<SwappoMessaging>().get("dev").await.ok()?;
            sm.condition("BrokerReady")
                .filter(|c| c.reason == "AuthenticationFailed")
                .cloned()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(refused.status, "False");
    assert!(
        refused.message.contains("refused user swappo"),
        "{}",
        refused.message
    );
    assert!(
        refused
            .message
            .contains("make the Secret's username and password match"),
        "{}",
        refused.message
    );
    assert!(!refused.message.contains("certainly-not-the-password"));
    assert_eq!(ready_condition(&ns, "Ready").await.status, "False");

    // No StatefulSet, PVC, ConfigMap or NetworkPolicy for an external broker; the Secret
    // points at it.
    let own = wait_exists(&ns.api::<Secret>(), "dev-rabbitmq").await;
    assert_eq!(secret(&own, "host"), "127.0.0.1");
    assert_eq!(secret(&own, "username"), "swappo");
    assert!(secret_value(&own, "erlang-cookie").is_none());
    let managed = ListParams::default().labels(MANAGED_BY);
    assert!(
        ns.api::<StatefulSet>()
            .list(&managed)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        ns.api::<NetworkPolicy>()
            .list(&managed)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        ns.api::<PersistentVolumeClaim>()
            .list(&managed)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        ns.api::<ConfigMap>()
            .list(&managed)
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Fixing the Secret fixes the condition.
    let password =
        std::env::var("SWAPPO_TEST_PASSWORD").unwrap_or_else(|_| "swappo-local-test".into());
    credentials_secret(&ns, "broker-login", "swappo", &password).await;
    let ready = wait_condition(&ns, "dev", "BrokerReady", "True").await;
    assert_eq!(
        ready.status.unwrap().broker.unwrap().endpoint,
        "127.0.0.1:5672"
    );
    let own = ns.api::<Secret>().get("dev-rabbitmq").await.unwrap();
    assert_eq!(
        secret(&own, "password"),
        password,
        "the operator's Secret follows the user's"
    );
    operator.stop().await;
}

#[tokio::test]
async fn a_missing_credentials_secret_is_a_false_condition_not_a_crash() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-nosecret-").await;
    let operator = InProcess::start(&client, ns.name(), local_broker_settings());
    create(
        &ns,
        &SwappoMessaging::new_in("dev", ns.name()).with_credentials_secret("nope"),
    )
    .await;
    let sm = wait_condition(&ns, "dev", "BrokerReady", "False").await;
    let c = sm.condition("BrokerReady").unwrap();
    assert_eq!(c.reason, "CredentialsSecretNotFound");
    assert!(c.message.contains("Secret nope"), "{}", c.message);
    // The rest is still in place (the broker waits for its Secret).
    wait_exists(&ns.api::<StatefulSet>(), "dev-rabbitmq").await;
    assert_eq!(
        operator.metric("swappo_operator_reconcile_errors_total"),
        0.0
    );
    operator.stop().await;
}

#[tokio::test]
async fn a_memory_limit_that_is_not_a_quantity_is_named_in_broker_ready_and_not_applied() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-badlimit-").await;
    let operator = InProcess::start(&client, ns.name(), local_broker_settings());
    create(&ns, &SwappoMessaging::new_in("dev", ns.name())).await;
    let sets = ns.api::<StatefulSet>();
    let memory_limit = |set: &StatefulSet| {
        set.spec.template.spec.as_ref()?.containers[0]
            .resources
            .as_ref()?
            .limits
            .as_ref()?
            .get("memory")
            .map(|q| q.0.clone())
    };
    let before = memory_limit(&wait_exists(&sets, "dev-rabbitmq").await);
    assert_eq!(before.as_deref(), Some("512Mi"));

    // The CRD accepts any string in a resources map; the API server would refuse it in the
    // StatefulSet. The operator names the field and leaves the broker as it is.
    let patch = serde_json::json!({"spec": {"broker": {"resources": {
        "requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1.5 Gigs"}}}}});
    let resources = ns.api::<SwappoMessaging>();
    resources
        .patch("dev", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("the CRD accepts the string");
    let sm = wait_for(
        &resources,
        "dev",
        "BrokerReady=False InvalidBrokerSpec",
        WAIT,
        |sm: Option<&SwappoMessaging>| {
            sm.and_then(|sm| sm.condition("BrokerReady"))
                .is_some_and(|c| c.reason == "InvalidBrokerSpec")
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .expect("it exists");
    let c = sm.condition("BrokerReady").unwrap();
    assert_eq!(c.status, "False");
    assert!(
        c.message.starts_with(
            "spec.broker.resources.limits.memory: \"1.5 Gigs\" is not a Kubernetes quantity"
        ),
        "{}",
        c.message
    );
    assert_eq!(sm.condition("Ready").unwrap().status, "False");
    let set = sets.get("dev-rabbitmq").await.unwrap();
    assert_eq!(
        memory_limit(&set),
        before,
        "the broker keeps its last applied settings"
    );
    assert_eq!(
        operator.metric("swappo_operator_reconcile_errors_total"),
        0.0,
        "a reported condition, not a failing reconcile"
    );

    // Fixed: applied, and the condition moves on.
    let patch =
        serde_json::json!({"spec": {"broker": {"resources": {"limits": {"memory": "768Mi"}}}}});
    resources
        .patch("dev", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for(
        &sets,
        "dev-rabbitmq",
        "the new limit applied",
        WAIT,
        |set: Option<&StatefulSet>| set.and_then(memory_limit).as_deref() == Some("768Mi"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    wait_for(
        &resources,
        "dev",
        "BrokerReady no longer InvalidBrokerSpec",
        WAIT,
        |sm: Option<&SwappoMessaging>| {
            sm.and_then(|sm| sm.condition("BrokerReady"))
                .is_some_and(|c| c.reason != "InvalidBrokerSpec")
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    operator.stop().await;
}

#[tokio::test]
async fn a_user_given_password_with_uri_and_config_characters_yields_uris_that_decode_to_it() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-awkward-").await;
    let (username, password) = ("ops:team@x", "p@ss:w/rd#1?x=%41&\u{e9} ~");
    credentials_secret(&ns, "mine", username, password).await;
    let operator = InProcess::start(&client, ns.name(), local_broker_settings());
    create(
        &ns,
        &SwappoMessaging::new_in("dev", ns.name()).with_credentials_secret("mine"),
    )
    .await;
    let own = wait_exists(&ns.api::<Secret>(), "dev-rabbitmq").await;
    let decode = |s: &str| -> String {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .unwrap()
            .into_owned()
    };
    for key in ["uri", "management-uri"] {
        let uri = url::Url::parse(&secret(&own, key)).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(decode(uri.username()), username, "{key}");
        assert_eq!(decode(uri.password().unwrap()), password, "{key}");
        assert_eq!(
            uri.host_str().map(str::to_owned),
            Some(format!("dev-rabbitmq.{}.svc", ns.name())),
            "{key}"
        );
    }
    let conf = secret(&own, "advanced.config");
    let bytes: Vec<String> = password.bytes().map(|b| b.to_string()).collect();
    assert!(conf.contains(&format!("{{default_pass, <<{}>>}}", bytes.join(","))));
    assert!(!conf.contains("p@ss"));
    operator.stop().await;
}

#[tokio::test]
async fn drift_is_repaired_a_deleted_service_and_edited_probes_come_back() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-drift-").await;
    let operator = InProcess::start(&client, ns.name(), local_broker_settings());
    create(&ns, &SwappoMessaging::new_in("dev", ns.name())).await;
    let services = ns.api::<Service>();
    let deployments = ns.api::<StatefulSet>();
    let before = wait_exists(&services, "dev-rabbitmq").await;
    wait_exists(&deployments, "dev-rabbitmq").await;

    services
        .delete("dev-rabbitmq", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the Service to come back", WAIT, || async {
        services
            .get_opt("dev-rabbitmq")
            .await
            .ok()
            .flatten()
            .filter(|s| s.uid() != before.uid())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // Someone shortens the readiness timeout to Kubernetes' 1 s default, with another manager.
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [
        {"name": "rabbitmq", "readinessProbe": {"timeoutSeconds": 1}}
    ]}}}});
    deployments
        .patch(
            "dev-rabbitmq",
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
        .unwrap();
    let repaired = eventually("the probe timeout to be put back to 5 s", WAIT, || async {
        let d = deployments.get("dev-rabbitmq").await.ok()?;
        let probe = d.spec.template.spec.as_ref()?.containers[0]
            .readiness_probe
            .clone()?;
        (probe.timeout_seconds == Some(5)).then_some(d)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(repaired.metadata.generation.unwrap() >= 2);
    operator.stop().await;
}

#[tokio::test]
async fn the_secret_is_stable_across_reconciles_and_operator_restarts() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-secret-").await;
    let mut settings = local_broker_settings();
    // No volume for the claim: the broker's pods never get ready, and while they are not, the
    // operator re-checks at the recheck interval (the Deployment's watch wakes it earlier).
    settings.recheck = Duration::from_secs(1);
    settings.retry = Duration::from_secs(1);
    let first = InProcess::start(&client, ns.name(), settings.clone());
    create(&ns, &SwappoMessaging::new_in("dev", ns.name())).await;
    let secrets = ns.api::<Secret>();
    let original = wait_exists(&secrets, "dev-rabbitmq").await;
    // Several reconciles happen (every second while the broker is not ready).
    eventually("five reconciles", WAIT, || async {
        (first.metric("swappo_operator_reconciles_total") >= 5.0).then_some(())
    })
    .await
    .unwrap();
    first.stop().await;
    assert_eq!(
        secrets.get("dev-rabbitmq").await.unwrap().data,
        original.data
    );

    // A new operator (fresh memory) takes over; a spec change makes it reconcile at once.
    let second = InProcess::start(&client, ns.name(), settings);
    let patch = serde_json::json!({"spec": {"queues": [{"name": "q2"}]}});
    ns.api::<SwappoMessaging>()
        .patch("dev", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for(
        &ns.api::<SwappoMessaging>(),
        "dev",
        "observedGeneration 2",
        WAIT,
        |sm: Option<&SwappoMessaging>| {
            sm.and_then(|s| s.status.as_ref())
                .and_then(|s| s.observed_generation)
                == Some(2)
        },
    )
    .await
    .unwrap();
    let after = secrets.get("dev-rabbitmq").await.unwrap();
    assert_eq!(
        after.data, original.data,
        "credentials must never rotate by accident"
    );
    assert_eq!(after.resource_version(), original.resource_version());

    // A deleted Secret comes back with new credentials, and a Warning says what that means
    // for a broker that already has data.
    secrets
        .delete("dev-rabbitmq", &DeleteParams::default())
        .await
        .unwrap();
    let recreated = eventually("the Secret to come back", WAIT, || async {
        secrets
            .get_opt("dev-rabbitmq")
            .await
            .ok()
            .flatten()
            .filter(|s| s.uid() != original.uid())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(
        secret(&recreated, "password"),
        secret(&original, "password")
    );
    eventually("a CredentialsRegenerated Warning", WAIT, || async {
        let events = ns
            .api::<Event>()
            .list(&ListParams::default())
            .await
            .ok()?
            .items;
        events.into_iter().find(|e| {
            e.reason.as_deref() == Some("CredentialsRegenerated")
                && e.type_.as_deref() == Some("Warning")
        })
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    second.stop().await;
}

/// `dev` with `spec.broker.storage.whenDeleted` set to `policy`.
fn with_retention(ns: &TestNamespace, policy: &str) -> SwappoMessaging {
    let mut sm = SwappoMessaging::new_in("dev", ns.name());
    sm.spec.broker.storage =
        Some(serde_json::from_value(serde_json::json!({"whenDeleted": policy})).unwrap());
    sm
}

/// Deletes `dev` (foreground) and waits until it and its StatefulSet, Service, ConfigMap and
/// pods are gone.
async fn delete_and_wait(ns: &TestNamespace) {
    ns.api::<SwappoMessaging>()
        .delete("dev", &DeleteParams::foreground())
        .await
        .unwrap();
    let managed = ListParams::default().labels(MANAGED_BY);
    let (d, s, c) = (
        ns.api::<StatefulSet>(),
        ns.api::<Service>(),
        ns.api::<ConfigMap>(),
    );
    eventually(
        "the resource and its owned objects to be gone",
        WAIT,
        || async {
            let left = d.list(&managed).await.ok()?.items.len()
                + s.list(&managed).await.ok()?.items.len()
                + c.list(&managed).await.ok()?.items.len()
                + ns.api::<Pod>()
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .len()
                + usize::from(
                    ns.api::<SwappoMessaging>()
                        .get_opt("dev")
                        .await
                        .ok()?
                        .is_some(),
                );
            (left == 0).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn deleting_the_resource_with_when_deleted_delete_garbage_collects_everything_it_owns() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-gc-").await;
    let operator = InProcess::start(&client, ns.name(), local_broker_settings());
    create(&ns, &with_retention(&ns, "Delete")).await;
    wait_exists(&ns.api::<Service>(), "dev-rabbitmq").await;
    wait_exists(&ns.api::<StatefulSet>(), "dev-rabbitmq").await;
    wait_exists(&ns.api::<PersistentVolumeClaim>(), "dev-rabbitmq-data").await;
    delete_and_wait(&ns).await;
    let managed = ListParams::default().labels(MANAGED_BY);
    let (sec, p) = (ns.api::<Secret>(), ns.api::<PersistentVolumeClaim>());
    eventually("the Secret and claim to be gone too", WAIT, || async {
        let left =
            sec.list(&managed).await.ok()?.items.len() + p.list(&managed).await.ok()?.items.len();
        (left == 0).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    operator.stop().await;
}

#[tokio::test]
async fn with_retain_the_claim_and_secret_outlive_the_resource_and_a_new_one_adopts_them() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-retain-").await;
    let operator = InProcess::start(&client, ns.name(), local_broker_settings());
    // Retain is the default: no storage section at all.
    create(&ns, &SwappoMessaging::new_in("dev", ns.name())).await;
    let (sec, p) = (ns.api::<Secret>(), ns.api::<PersistentVolumeClaim>());
    let before = wait_exists(&sec, "dev-rabbitmq").await;
    let claim = wait_exists(&p, "dev-rabbitmq-data").await;
    assert!(before.metadata.owner_references.is_none());
    assert!(claim.metadata.owner_references.is_none());
    wait_exists(&ns.api::<StatefulSet>(), "dev-rabbitmq").await;
    delete_and_wait(&ns).await;
    // The garbage collector has run (the StatefulSet is gone); the two are still there.
    let kept = sec.get("dev-rabbitmq").await.expect("the Secret is kept");
    let kept_claim = p.get("dev-rabbitmq-data").await.expect("the claim is kept");
    assert_eq!(kept.metadata.uid, before.metadata.uid);
    assert_eq!(kept_claim.metadata.uid, claim.metadata.uid);

    // Re-created with the same name: the same claim and the same login.
    create(&ns, &SwappoMessaging::new_in("dev", ns.name())).await;
    let deployment = wait_exists(&ns.api::<StatefulSet>(), "dev-rabbitmq").await;
    let volumes = deployment.spec.template.spec.unwrap().volumes.unwrap();
    assert!(volumes.iter().any(|v| {
        v.persistent_volume_claim
            .as_ref()
            .is_some_and(|c| c.claim_name == "dev-rabbitmq-data")
    }));
    let after = sec.get("dev-rabbitmq").await.unwrap();
    assert_eq!(after.metadata.uid, before.metadata.uid);
    for key in ["username", "password", "erlang-cookie"] {
        assert_eq!(secret(&after, key), secret(&before, key), "{key}");
    }
    assert_eq!(
        p.get("dev-rabbitmq-data").await.unwrap().metadata.uid,
        claim.metadata.uid
    );
    operator.stop().await;
}

#[tokio::test]
async fn an_earlier_versions_broker_deployment_and_its_pods_are_gone_before_the_stateful_set_exists()
 {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-upgrade-").await;
    let _volume = BoundVolume::new(&client, ns.name(), "dev-rabbitmq-data").await;
    // The broker as the previous operator version left it: a Deployment `dev-rabbitmq`
    // with the operator's labels and the broker's selector, its pod running (kwok), with a
    // grace period so its deletion takes a while.
    let labels = serde_json::json!({
        "app.kubernetes.io/name": "rabbitmq", "app.kubernetes.io/instance": "dev",
        "app.kubernetes.io/component": "broker", "app.kubernetes.io/managed-by": "swappo-operator",
    });
    let selector = serde_json::json!({
        "app.kubernetes.io/name": "rabbitmq", "app.kubernetes.io/instance": "dev",
        "app.kubernetes.io/component": "broker",
    });
    let legacy: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "dev-rabbitmq", "labels": labels},
        "spec": {
            "replicas": 1, "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": labels}, "spec": {
                "terminationGracePeriodSeconds": 5,
                "containers": [{"name": "rabbitmq", "image": "rabbitmq:3.10"}]}}
        }
    }))
    .unwrap();
    let deployments = ns.api::<Deployment>();
    deployments
        .create(&PostParams::default(), &legacy)
        .await
        .unwrap();
    let pods = ns.api::<Pod>();
    let broker_pods = ListParams::default().labels("app.kubernetes.io/instance=dev");
    eventually("the old broker pod Running", WAIT, || async {
        let list = pods.list(&broker_pods).await.ok()?.items;
        list.iter()
            .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let operator = InProcess::start(&client, ns.name(), local_broker_settings());
    create(&ns, &SwappoMessaging::new_in("dev", ns.name())).await;
    let sets = ns.api::<StatefulSet>();
    // Sampled until the StatefulSet exists: at every sample before, the old pod may still
    // be there; at the first sample where the StatefulSet is, the old Deployment and every
    // pod not run by a StatefulSet must already be gone.
    let leftover = eventually("the broker StatefulSet", WAIT, || async {
        let set = sets.get_opt("dev-rabbitmq").await.ok()??;
        let old = deployments.get_opt("dev-rabbitmq").await.ok()?;
        let foreign: Vec<String> = pods
            .list(&broker_pods)
            .await
            .ok()?
            .items
            .into_iter()
            .filter(|p| {
                !p.owner_references()
                    .iter()
                    .any(|o| o.kind == "StatefulSet" && o.uid == set.uid().unwrap_or_default())
            })
            .map(|p| p.name_any())
            .collect();
        Some((old.map(|d| d.name_any()), foreign))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        leftover,
        (None, Vec::<String>::new()),
        "left when the StatefulSet was created"
    );
    let deleted = eventually("the LegacyBrokerDeleted Event", WAIT, || async {
        let events = ns.api::<Event>().list(&ListParams::default()).await.ok()?;
        events
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("LegacyBrokerDeleted"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        deleted
            .note
            .unwrap_or_default()
            .contains("Deployment dev-rabbitmq"),
        "the Event names the old Deployment"
    );
    // The StatefulSet's pod runs on the same claim.
    eventually("the StatefulSet's pod Ready", WAIT, || async {
        let s = sets.get("dev-rabbitmq").await.ok()?.status?;
        (s.ready_replicas == Some(1)).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    operator.stop().await;
}

#[tokio::test]
async fn the_network_policy_is_shipped_by_default_and_removed_when_opted_out() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-netpol-").await;
    let operator = InProcess::start(&client, ns.name(), local_broker_settings());
    let mut sm = SwappoMessaging::new_in("dev", ns.name());
    sm.spec.broker.network_policy = Some(
        serde_json::from_value(serde_json::json!({
            "amqpClients": {"matchLabels": {"rabbitmq-client": "true"}},
            "monitoringNamespace": "monitoring"
        }))
        .unwrap(),
    );
    create(&ns, &sm).await;
    let policies = ns.api::<NetworkPolicy>();
    let policy = wait_exists(&policies, "dev-rabbitmq").await;
    // The content as the API server stored it (this test bed enforces no NetworkPolicy).
    let spec = policy.spec.unwrap();
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_owned()]));
    let rules = spec.ingress.unwrap();
    let clients = &rules[0].from.as_ref().unwrap()[0];
    assert_eq!(
        clients
            .pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()["rabbitmq-client"],
        "true"
    );
    let monitoring = &rules[1].from.as_ref().unwrap()[0];
    assert_eq!(
        monitoring
            .namespace_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()["kubernetes.io/metadata.name"],
        "monitoring"
    );
    let ports: Vec<Option<IntOrString>> = rules[1]
        .ports
        .iter()
        .flatten()
        .map(|p| p.port.clone())
        .collect();
    assert_eq!(
        ports,
        [Some(IntOrString::Int(15672)), Some(IntOrString::Int(15692))]
    );

    let patch = serde_json::json!({"spec": {"broker": {"networkPolicy": {"enabled": false}}}});
    ns.api::<SwappoMessaging>()
        .patch("dev", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("the NetworkPolicy removed", WAIT, || async {
        policies
            .get_opt("dev-rabbitmq")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    operator.stop().await;
}

/// resourceVersions of the resource and everything it owns.
async fn versions(ns: &TestNamespace) -> Vec<(String, String)> {
    let managed = ListParams::default().labels(MANAGED_BY);
    let mut out = Vec::new();
    let sm = ns.api::<SwappoMessaging>().get("dev").await.unwrap();
    out.push(("SwappoMessaging/dev".into(), sm.resource_version().unwrap()));
    macro_rules! add {
        ($k:ty) => {
            for o in ns.api::<$k>().list(&managed).await.unwrap().items {
                out.push((
                    format!("{}/{}", stringify!($k), o.name_any()),
                    o.resource_version().unwrap(),
                ));
            }
        };
    }
    add!(StatefulSet);
    add!(NetworkPolicy);
    add!(Service);
    add!(ConfigMap);
    add!(Secret);
    add!(PersistentVolumeClaim);
    out
}

#[tokio::test]
async fn nothing_is_written_over_thirty_seconds_of_steady_state() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-steady-").await;
    let _volume = BoundVolume::new(&client, ns.name(), "dev-rabbitmq-data").await;
    let mut settings = local_broker_settings();
    // Re-check the ready broker every 3 s: about ten full reconciles in the window.
    settings.recheck = Duration::from_secs(3);
    let operator = InProcess::start(&client, ns.name(), settings);
    create(&ns, &SwappoMessaging::new_in("dev", ns.name())).await;
    let secret_obj = wait_exists(&ns.api::<Secret>(), "dev-rabbitmq").await;
    let _user = BrokerUser::new(
        &secret(&secret_obj, "username"),
        &secret(&secret_obj, "password"),
    )
    .await;
    wait_condition(&ns, "dev", "Ready", "True").await;

    // The reconcile that set Ready may still be publishing its Event: wait until one more
    // reconcile has completed (they never overlap for one object), so all before it are done.
    let started = operator.metric("swappo_operator_reconciles_total");
    eventually("one more complete reconcile", WAIT, || async {
        let done = operator.metric("swappo_operator_reconcile_duration_seconds_count");
        (done > started).then_some(())
    })
    .await
    .unwrap();

    let before = versions(&ns).await;
    let writes_before = operator.metric("swappo_operator_api_writes_total");
    let reads_before = operator.metric("swappo_operator_api_reads_total");
    let exposition_before = operator.metrics.encode();
    let reconciles_before = operator.metric("swappo_operator_reconciles_total");
    tokio::time::sleep(Duration::from_secs(30)).await;
    let after = versions(&ns).await;
    assert_eq!(
        before.len(),
        7,
        "the resource and its six objects: {before:?}"
    );
    assert_eq!(after, before, "resourceVersions changed in a steady state");
    if operator.metric("swappo_operator_api_writes_total") != writes_before {
        let writes = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.starts_with("swappo_operator_api_writes"))
                .map(str::to_owned)
                .collect()
        };
        let events: Vec<String> = ns
            .api::<Event>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|e| format!("{:?} {:?} {:?}", e.event_time, e.reason, e.note))
            .collect();
        panic!(
            "the operator wrote in a steady state: before {:?}, after {:?}; events {events:#?}",
            writes(&exposition_before),
            writes(&operator.metrics.encode())
        );
    }
    // Every object it owns is read from the watch caches: the rechecks cost no API read.
    let reads = operator.metric("swappo_operator_api_reads_total") - reads_before;
    assert_eq!(
        reads,
        0.0,
        "API reads in a steady state: {:?}",
        operator
            .metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with("swappo_operator_api_reads"))
            .collect::<Vec<_>>()
    );
    let reconciles = operator.metric("swappo_operator_reconciles_total") - reconciles_before;
    let seconds = operator.metric("swappo_operator_reconcile_duration_seconds_sum");
    let count = operator.metric("swappo_operator_reconcile_duration_seconds_count");
    eprintln!(
        "steady state: {reconciles} reconciles in 30 s, 0 writes, 0 reads; mean reconcile \
         {:.1} ms over the whole test (cache reads and one AMQP login to the local broker each)",
        1000.0 * seconds / count
    );
    assert!(
        reconciles >= 5.0,
        "only {reconciles} reconciles in the window: the test proves nothing"
    );
    operator.stop().await;
}

async fn lease_holder(client: &Client, ns: &str) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt("swappo-operator")
        .await
        .ok()??;
    lease.spec?.holder_identity
}

/// Waits until `operator` holds the Lease in `ns`; on timeout fails with its log.
async fn wait_leading(client: &Client, ns: &str, operator: &Process) {
    let what = format!("{} to lead", operator.identity);
    eventually(&what, WAIT, || async {
        (lease_holder(client, ns).await.as_deref() == Some(operator.identity.as_str()))
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; log of {}:\n{}", operator.identity, operator.log()));
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_standby_takes_over_when_it_is_killed() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-leader-").await;
    let args = [
        "--namespace",
        ns.name(),
        "--lease-namespace",
        ns.name(),
        "--lease-duration-seconds",
        "4",
        "--broker-address-override",
        "127.0.0.1:5672",
    ];
    let mut a = Process::spawn("operator-a", "info", &args);
    wait_leading(&client, ns.name(), &a).await;
    let b = Process::spawn("operator-b", "info", &args);
    b.http_addr().await;

    create(&ns, &SwappoMessaging::new_in("dev", ns.name())).await;
    let services = ns.api::<Service>();
    let first = wait_exists(&services, "dev-rabbitmq").await;
    wait_condition(&ns, "dev", "BrokerReady", "False").await;
    let a_metrics = a.metrics().await;
    let b_metrics = b.metrics().await;
    assert!(metric(&a_metrics, "swappo_operator_reconciles_total") >= 1.0);
    assert_eq!(metric(&a_metrics, "swappo_operator_leader"), 1.0);
    assert_eq!(
        metric(&b_metrics, "swappo_operator_reconciles_total"),
        0.0,
        "the standby reconciled"
    );
    assert_eq!(metric(&b_metrics, "swappo_operator_leader"), 0.0);

    a.kill();
    wait_leading(&client, ns.name(), &b).await;
    // The new leader reconciles: a deleted Service comes back from it.
    services
        .delete("dev-rabbitmq", &DeleteParams::default())
        .await
        .unwrap();
    eventually("operator-b to recreate the Service", WAIT, || async {
        services
            .get_opt("dev-rabbitmq")
            .await
            .ok()
            .flatten()
            .filter(|s| s.uid() != first.uid())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; log of b:\n{}", b.log()));
    assert!(metric(&b.metrics().await, "swappo_operator_reconciles_total") >= 1.0);
}

#[tokio::test]
async fn a_terminated_leader_releases_its_lease_and_exits_cleanly() {
    let Some(client) = cluster().await else {
        return;
    };
    let ns = TestNamespace::new("op-release-").await;
    let args = [
        "--namespace",
        ns.name(),
        "--lease-namespace",
        ns.name(),
        "--lease-duration-seconds",
        "60",
    ];
    let mut a = Process::spawn("operator-a", "info", &args);
    wait_leading(&client, ns.name(), &a).await;
    assert!(a.terminate(), "a clean exit on SIGTERM; log:\n{}", a.log());
    // Released, so a standby need not wait out the 60 s lease.
    assert_eq!(
        lease_holder(&client, ns.name()).await,
        None,
        "log:\n{}",
        a.log()
    );
}

#[tokio::test]
async fn the_broker_password_never_appears_in_the_operator_logs() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-logs-").await;
    let _volume = BoundVolume::new(&client, ns.name(), "dev-rabbitmq-data").await;
    // Debug level for every crate, the operator's own included: the strictest setting.
    let mut op = Process::spawn(
        "operator-logs",
        "debug",
        &[
            "--namespace",
            ns.name(),
            "--leader-election=false",
            "--broker-address-override",
            "127.0.0.1:5672",
            "--retry-seconds",
            "1",
        ],
    );
    op.http_addr().await;
    create(&ns, &SwappoMessaging::new_in("dev", ns.name())).await;
    let secret_obj = wait_exists(&ns.api::<Secret>(), "dev-rabbitmq").await;
    let password = secret(&secret_obj, "password");
    let username = secret(&secret_obj, "username");
    // A refused login first (no such user yet), then a successful one.
    eventually("a refused login", WAIT, || async {
        let sm = ns.api::<SwappoMessaging>().get("dev").await.ok()?;
        sm.condition("BrokerReady")
            .filter(|c| c.reason == "AuthenticationFailed")
            .map(|_| ())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", op.log()));
    let _user = BrokerUser::new(&username, &password).await;
    wait_condition(&ns, "dev", "BrokerReady", "True").await;
    assert!(op.terminate(), "clean exit");
    let log = op.log();
    assert!(
        log.contains(&username),
        "the log is captured (it names the user)"
    );
    let cookie = secret(&secret_obj, "erlang-cookie");
    for (what, needle) in [
        ("password", password.as_str()),
        ("erlang cookie", cookie.as_str()),
    ] {
        assert!(
            !log.contains(needle),
            "the {what} appears in the operator's log"
        );
    }
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&password);
    assert!(
        !log.contains(&encoded),
        "the base64 password appears in the operator's log"
    );
}

#[tokio::test]
async fn a_leader_that_finds_its_lease_taken_stops_and_exits_with_an_error() {
    let Some(client) = cluster().await else {
        return;
    };
    let ns = TestNamespace::new("op-stolen-").await;
    let args = [
        "--namespace",
        ns.name(),
        "--lease-namespace",
        ns.name(),
        "--lease-duration-seconds",
        "4",
    ];
    let mut a = Process::spawn("operator-a", "info", &args);
    wait_leading(&client, ns.name(), &a).await;
    // Another replica (say, after a network partition) holds the Lease now.
    let leases = Api::<Lease>::namespaced(client.clone(), ns.name());
    let patch = serde_json::json!({"spec": {
        "holderIdentity": "intruder",
        "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            k8s_openapi::jiff::Timestamp::now()
        ),
    }});
    leases
        .patch(
            "swappo-operator",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let status = a
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("still running; log:\n{}", a.log()));
    assert!(
        !status.success(),
        "a leader that lost its lease must not exit 0"
    );
    assert!(
        a.log().contains("lost the leader lease"),
        "log:\n{}",
        a.log()
    );
    assert_eq!(
        lease_holder(&client, ns.name()).await.as_deref(),
        Some("intruder")
    );
}

/// The namespaced permissions the operator needs (the chart grants the same, cluster-wide).
fn operator_rules(with_stateful_sets: bool) -> serde_json::Value {
    let rw = ["get", "list", "watch", "create", "patch", "update"];
    let mut rules = vec![
        serde_json::json!({"apiGroups": ["swappo.io"], "resources": ["swappomessagings"], "verbs": ["get", "list", "watch"]}),
        serde_json::json!({"apiGroups": ["swappo.io"], "resources": ["swappomessagings/status"], "verbs": ["get", "patch", "update"]}),
        serde_json::json!({"apiGroups": [""], "resources": ["secrets", "configmaps", "services", "persistentvolumeclaims"], "verbs": rw}),
        serde_json::json!({"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}),
        serde_json::json!({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}),
    ];
    let apps_verbs: &[&str] = if with_stateful_sets {
        &rw
    } else {
        &["get", "list", "watch"]
    };
    rules.push(serde_json::json!({"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": apps_verbs}));
    rules.push(serde_json::json!({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch", "delete"]}));
    rules.push(serde_json::json!({"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]}));
    rules.push(serde_json::json!({"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["list", "watch", "delete"]}));
    rules.push(
        serde_json::json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}),
    );
    rules.push(serde_json::json!({"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": ["list", "watch"]}));
    rules.push(serde_json::json!({"apiGroups": ["keda.sh"], "resources": ["scaledobjects"], "verbs": ["list", "watch"]}));
    serde_json::Value::Array(rules)
}

async fn grant(ns: &TestNamespace, with_stateful_sets: bool) {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "swappo-operator"}, "rules": operator_rules(with_stateful_sets)
    }))
    .unwrap();
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "swappo-operator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "swappo-operator"},
        "subjects": [{"kind": "ServiceAccount", "name": "swappo-operator", "namespace": ns.name()}]
    }))
    .unwrap();
    let apply = PatchParams::apply("operator-tests").force();
    ns.api::<Role>()
        .patch("swappo-operator", &apply, &Patch::Apply(&role))
        .await
        .unwrap();
    ns.api::<RoleBinding>()
        .patch("swappo-operator", &apply, &Patch::Apply(&binding))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_missing_permission_is_a_warning_event_and_the_documented_rbac_is_enough() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-rbac-").await;
    grant(&ns, false).await;
    let operator_client = ns.service_account_client("swappo-operator").await.unwrap();
    let operator = InProcess::start(&operator_client, ns.name(), local_broker_settings());
    let sm = create(&ns, &SwappoMessaging::new_in("dev", ns.name())).await;

    // Without the right to write StatefulSets: a Warning Event naming the refusal, counted.
    let failed = eventually("a ReconcileFailed Warning", WAIT, || async {
        let events = ns
            .api::<Event>()
            .list(&ListParams::default())
            .await
            .ok()?
            .items;
        events.into_iter().find(|e| {
            e.reason.as_deref() == Some("ReconcileFailed")
                && e.regarding.as_ref().and_then(|r| r.uid.clone()) == sm.uid()
        })
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    let note = failed.note.unwrap_or_default();
    assert!(
        note.contains("apply StatefulSet dev-rabbitmq") && note.contains("forbidden"),
        "{note}"
    );
    assert!(
        operator
            .metrics
            .encode()
            .contains("swappo_operator_reconcile_errors_total{kind=\"forbidden\"}")
    );

    // With the documented rules, the next retry (backoff from 5 s) gets through.
    grant(&ns, true).await;
    wait_exists(&ns.api::<StatefulSet>(), "dev-rabbitmq").await;
    wait_condition(&ns, "dev", "BrokerReady", "False").await;
    operator.stop().await;
}
