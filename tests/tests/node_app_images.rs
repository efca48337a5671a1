//! The images of the operator and both services (images/build.sh: release binaries, or under
//! `make test` its own debug build, stripped; on the distroless-like app base) run as pods on the
//! real node, as their image user (65532) in a namespace that enforces the restricted Pod
//! Security profile: the services migrate and serve
//! against the shared PostgreSQL and RabbitMQ, and are Ready by their own `/ready` probe;
//! `/health` answers through a Service from another pod; a cut database shows in `/ready`
//! (503 naming the database). The operator, with a ServiceAccount and no RBAC, reaches the API
//! server through the `kubernetes` Service (Ready by `/readyz`), serves `/healthz`, and waits
//! for a Lease it may not read.
//!
//! The shared broker and database listen on loopback only: each test puts an
//! [`OutageProxy`] on the bridge's host address (the one host address pods reach) in front of
//! them. Traffic stays between pods, the bridge and loopback.
//!
//! Skipped when the node is not Ready (unless `SWAPPO_REQUIRE_NODE`), and when the app images
//! were not imported (`make images`), unless `SWAPPO_REQUIRE_APP_IMAGES` is set (as `make test`
//! does when it builds them).
use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{Value, json};
use std::time::Duration;
use swappo_testkit::node::{
    NODE_IP, app_images_required, debian_pod, exec, kubectl, merge, node_has_image, placement,
    real_node_client, run_ready,
};
use swappo_testkit::{OutageProxy, TestDb, TestNamespace, TestVhost, eventually};

/// Failure guard for every wait: far above what a pod from an imported image needs to start
/// and migrate an empty database (seconds), so only a stuck node or service trips it.
const GUARD: Duration = Duration::from_secs(120);

const OPERATOR_IMAGE: &str = "swappo.local/swappo-operator:dev";
const MATCHMAKING_IMAGE: &str = "swappo.local/swappo-matchmaking:dev";
const NOTIFICATIONS_IMAGE: &str = "swappo.local/swappo-notifications:dev";

/// An admin client when the real node is Ready and holds `image`; `None` (skipped, saying
/// why) otherwise. When the images are required, a missing one is waited for within the guard:
/// the kubelet reports a freshly imported image with its next node status (about 10 s).
async fn node_with(image: &str) -> Option<Client> {
    let client = real_node_client().await?;
    let present = || async {
        node_has_image(&client, image)
            .await
            .expect("the node's status is readable")
            .then_some(())
    };
    if present().await.is_some() {
        return Some(client);
    }
    let why = format!("the node has no image {image} (run `make images`)");
    if app_images_required() {
        eventually(&format!("{image} on the node"), GUARD, present)
            .await
            .unwrap_or_else(|e| panic!("SWAPPO_REQUIRE_APP_IMAGES is set but {why}: {e}"));
        return Some(client);
    }
    eprintln!("skipped: {why}; SWAPPO_REQUIRE_APP_IMAGES=1 fails instead");
    None
}

/// A test namespace whose pods the API server admits only under the restricted Pod Security
/// profile.
async fn restricted_namespace(prefix: &str) -> TestNamespace {
    let ns = TestNamespace::new(prefix).await;
    kubectl(&[
        "label",
        "namespace",
        ns.name(),
        "pod-security.kubernetes.io/enforce=restricted",
    ])
    .await
    .expect("namespace labelled");
    ns
}

/// A pod of one of our images on the real node: the image's own entrypoint and user (no
/// command, no runAsUser), the restricted profile's security context, a read-only root, the
/// HTTP port 8080 of the Dockerfiles; `container` is merged into the container (env, probes).
fn app_pod(name: &str, image: &str, container: Value, extra: Value) -> Pod {
    let mut main = json!({
        "name": "main",
        "image": image,
        "imagePullPolicy": "Never",
        "ports": [{"name": "http", "containerPort": 8080}],
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}},
    });
    merge(&mut main, container);
    let mut spec = json!({
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 1,
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [main],
    });
    merge(&mut spec, placement());
    merge(&mut spec, extra);
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": spec,
    }))
    .expect("a valid pod")
}

/// An HTTP GET probe of `path` on the port named `http`, every second.
fn probe(path: &str) -> Value {
    json!({"httpGet": {"path": path, "port": "http"}, "periodSeconds": 1, "failureThreshold": 60})
}

/// A Service `name` (port 80) in front of the pods labelled `app: name`.
async fn service(client: &Client, ns: &TestNamespace, name: &str) {
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": "http"}]},
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), ns.name())
        .create(&PostParams::default(), &service)
        .await
        .expect("service created");
}

/// `GET path` on Service `name` from the client pod (bash's /dev/tcp: the Debian image's
/// busybox wget crashes); the raw HTTP/1.0 response. The Endpoints may trail the server's
/// readiness by a moment: retried within the guard.
async fn get_through_service(ns: &TestNamespace, name: &str, path: &str) -> String {
    let request = format!(
        "exec 3<>/dev/tcp/{name}/80 && printf 'GET {path} HTTP/1.0\\r\\nHost: {name}\\r\\n\\r\\n' >&3 && cat <&3"
    );
    eventually(
        &format!("{path} of {name} through its Service"),
        GUARD,
        || async {
            exec(ns, "client", &["timeout", "5", "bash", "-c", &request])
                .await
                .ok()
                .filter(|r| r.starts_with("HTTP/"))
        },
    )
    .await
    .unwrap()
}

/// The status code of a raw HTTP response (`HTTP/1.0 200 OK`: an HTTP/1.0 request gets an
/// HTTP/1.0 answer).
fn status_code(response: &str) -> Option<&str> {
    response.split_whitespace().nth(1)
}

/// The client pod: the test bed's Debian image, idle, for requests from inside the cluster.
async fn client_pod(ns: &TestNamespace) {
    let pod = debian_pod("client", json!({}), "exec sleep 3600", json!({}), json!({}));
    run_ready(ns, GUARD, &pod).await;
}

/// `GET http://<pod IP>:8080<path>` from the host (the bridge is the host's): status and JSON body.
async fn get_from_host(pod: &Pod, path: &str) -> (u16, Value) {
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("a pod IP");
    let response = reqwest::get(format!("http://{ip}:8080{path}"))
        .await
        .unwrap_or_else(|e| panic!("GET {path} of the pod at {ip}: {e}"));
    let status = response.status().as_u16();
    let body = response.text().await.expect("a body");
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, json)
}

/// The shared database and broker of one test, each behind a proxy on the bridge's address;
/// the URLs pods use.
struct Backends {
    db: TestDb,
    db_proxy: OutageProxy,
    db_url: String,
    _vhost: TestVhost,
    _mq_proxy: OutageProxy,
    mq_url: String,
}

impl Backends {
    async fn new(prefix: &str) -> Self {
        let db = TestDb::new(prefix).await;
        let (db_proxy, db_url) = OutageProxy::for_url_on(NODE_IP.into(), db.url()).await;
        let vhost = TestVhost::new(prefix).await;
        let (mq_proxy, mq_url) = OutageProxy::for_url_on(NODE_IP.into(), vhost.amqp_url()).await;
        Self {
            db,
            db_proxy,
            db_url,
            _vhost: vhost,
            _mq_proxy: mq_proxy,
            mq_url,
        }
    }
}

#[tokio::test]
async fn the_notifications_image_runs_as_nonroot_migrates_consumes_and_reports_a_cut_database() {
    let Some(client) = node_with(NOTIFICATIONS_IMAGE).await else {
        return;
    };
    let ns = restricted_namespace("node-notif-").await;
    let backends = Backends::new("nodenotif").await;
    let pod = app_pod(
        "notifications",
        NOTIFICATIONS_IMAGE,
        json!({
            "env": [
                {"name": "DATABASE_URL", "value": backends.db_url},
                {"name": "RABBITMQ_URL", "value": backends.mq_url},
            ],
            "livenessProbe": probe("/health"),
            "readinessProbe": probe("/ready"),
        }),
        json!({}),
    );
    // Ready by its own probe: the schema is migrated and the database answers.
    let pod = run_ready(&ns, GUARD, &pod).await;
    let tables = sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'notifications'",
    )
    .fetch_one(&sqlx::PgPool::connect(backends.db.url()).await.unwrap())
    .await
    .unwrap();
    assert_eq!(tables, 1, "the pod migrated the database it was given");
    let consuming = eventually("the consumer consuming", GUARD, || async {
        let (status, body) = get_from_host(&pod, "/ready").await;
        (status == 200 && body["consumer"] == "consuming").then_some(body)
    })
    .await
    .unwrap();
    assert_eq!(consuming["broker"], "connected", "{consuming}");

    service(&client, &ns, "notifications").await;
    client_pod(&ns).await;
    let health = get_through_service(&ns, "notifications", "/health").await;
    assert_eq!(status_code(&health), Some("200"), "{health}");
    assert!(health.ends_with(r#"{"status":"ok"}"#), "{health}");

    // The database cut: /ready says so (503, naming the database); /health stays 200.
    backends.db_proxy.cut();
    let (status, body) = eventually("/ready 503 with the database down", GUARD, || async {
        let (status, body) = get_from_host(&pod, "/ready").await;
        (status == 503).then_some((status, body))
    })
    .await
    .unwrap();
    assert_eq!((status, &body["database"]), (503, &json!("down")), "{body}");
    assert_eq!(get_from_host(&pod, "/health").await.0, 200);
}

#[tokio::test]
async fn the_matchmaking_image_runs_as_nonroot_migrates_and_is_ready_through_its_service() {
    let Some(client) = node_with(MATCHMAKING_IMAGE).await else {
        return;
    };
    let ns = restricted_namespace("node-match-").await;
    let backends = Backends::new("nodematch").await;
    let pod = app_pod(
        "matchmaking",
        MATCHMAKING_IMAGE,
        json!({
            "env": [
                {"name": "DATABASE_URL", "value": backends.db_url},
                {"name": "RABBITMQ_URL", "value": backends.mq_url},
            ],
            "livenessProbe": probe("/health"),
            "readinessProbe": probe("/ready"),
        }),
        json!({}),
    );
    let pod = run_ready(&ns, GUARD, &pod).await;
    let connected = eventually("the relay's broker connected", GUARD, || async {
        let (status, body) = get_from_host(&pod, "/ready").await;
        (status == 200 && body["broker"] == "connected").then_some(body)
    })
    .await
    .unwrap();
    assert_eq!(connected["database"], "up", "{connected}");

    service(&client, &ns, "matchmaking").await;
    client_pod(&ns).await;
    let ready = get_through_service(&ns, "matchmaking", "/ready").await;
    assert_eq!(status_code(&ready), Some("200"), "{ready}");
    let health = get_through_service(&ns, "matchmaking", "/health").await;
    assert_eq!(status_code(&health), Some("200"), "{health}");

    // The import binary the Dockerfile ships is in the image: it runs (its --help) as a
    // second container would, with the image's user.
    let import = app_pod(
        "import",
        MATCHMAKING_IMAGE,
        json!({"command": ["/usr/local/bin/swappo-matchmaking-import", "--help"]}),
        json!({}),
    );
    let pods: Api<Pod> = ns.api();
    pods.create(&PostParams::default(), &import).await.unwrap();
    let log = eventually("the import binary's help", GUARD, || async {
        kubectl(&["-n", ns.name(), "logs", "import"])
            .await
            .ok()
            .filter(|l| l.contains("Usage:"))
    })
    .await
    .unwrap();
    assert!(log.contains("swappo-matchmaking-import"), "{log}");
}

#[tokio::test]
async fn the_operator_image_reaches_the_api_server_in_cluster_and_serves_healthz_without_rbac() {
    let Some(client) = node_with(OPERATOR_IMAGE).await else {
        return;
    };
    let ns = restricted_namespace("node-op-").await;
    let account: ServiceAccount = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "operator"},
    }))
    .unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), ns.name())
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    // No Role, no binding: the account may ask the API server's version (what /readyz needs)
    // and nothing else. Leader election stays on: the operator waits for a Lease it may not
    // read, retrying, and never starts its controller (which could not list anything).
    let pod = app_pod(
        "operator",
        OPERATOR_IMAGE,
        json!({
            "env": [{"name": "POD_NAMESPACE", "value": ns.name()}],
            "livenessProbe": probe("/healthz"),
            "readinessProbe": probe("/readyz"),
        }),
        json!({"serviceAccountName": "operator"}),
    );
    let pod = run_ready(&ns, GUARD, &pod).await;
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("a pod IP");
    let healthz = reqwest::get(format!("http://{ip}:8080/healthz"))
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);
    assert_eq!(healthz.text().await.unwrap(), "ok");
    // The API server knows the pod by its ServiceAccount: the Lease is refused to exactly it.
    let denied = format!("system:serviceaccount:{}:operator", ns.name());
    let log = eventually(
        "the Lease refused to the operator's account",
        GUARD,
        || async {
            kubectl(&["-n", ns.name(), "logs", "operator"])
                .await
                .ok()
                .filter(|l| l.contains(&denied))
        },
    )
    .await
    .unwrap();
    assert!(log.contains("connected to the API server"), "{log}");
    assert!(log.contains("waiting to lead"), "{log}");
}
