//! The Helm charts (`charts/swappo-operator`, `charts/swappo-services`) with the real `helm`
//! and `kubectl` (built by `make testenv-bins`) against the local control plane
//! (`make cluster-up`): lint, schema, rendered objects, a server-side dry-run, installs into
//! fresh namespaces, what the operator's ServiceAccount may and may not do (asked with its own
//! token), the operator reconciling the example resource to Ready with only that identity, and
//! the services running under the restricted Pod Security Standard.
//!
//! Every install goes into namespaces of its own (deleted at the end); a cluster-wide install
//! is uninstalled by a guard, so no ClusterRole outlives its test.
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, Namespace, ObjectReference, PersistentVolume, PersistentVolumeSpec, Pod,
    Secret, ServiceAccount,
};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use swappo_operator::crd::SwappoMessaging;
use swappo_testkit::{Management, TestNamespace, eventually, kube_client, unique_name};
use tokio_util::sync::CancellationToken;

/// Failure guard for every wait on the cluster: far above what a healthy one needs.
const GUARD: Duration = Duration::from_secs(120);
/// The Kubernetes version `helm template` renders for (the local control plane's).
const KUBE_VERSION: &str = "v1.37.2";
const OPERATOR_CHART: &str = "charts/swappo-operator";
const SERVICES_CHART: &str = "charts/swappo-services";
const CRD_FILE: &str = "swappo.io_swappomessagings.yaml";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// `helm` / `kubectl` from `$SWAPPO_TESTBIN` (as `scripts/env.sh` sets it), else from PATH.
fn tool(name: &str) -> PathBuf {
    let var = |n: &str| {
        std::env::var_os(n)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let testbin = var("SWAPPO_TESTBIN").unwrap_or_else(|| {
        var("SWAPPO_CACHE")
            .unwrap_or_else(|| {
                var("HOME")
                    .unwrap_or_else(|| "/root".into())
                    .join(".cache/swappo")
            })
            .join("testbin")
            .join(KUBE_VERSION)
    });
    let candidate = testbin.join(name);
    if candidate.exists() {
        candidate
    } else {
        PathBuf::from(name)
    }
}

/// The admin kubeconfig of the local cluster (what the testkit uses).
fn admin_kubeconfig() -> PathBuf {
    match std::env::var("KUBECONFIG") {
        Ok(k) if !k.is_empty() => PathBuf::from(k),
        _ => swappo_testkit::kube::local_kubeconfig_path(),
    }
}

/// What a command printed and whether it succeeded.
struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `program args` in the repository root, with `stdin` fed in, `KUBECONFIG` set to the
/// local cluster's; panics only when it cannot start.
async fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(tool(program))
        .args(args)
        .current_dir(repo())
        .env("KUBECONFIG", admin_kubeconfig())
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program} (run `make testenv-bins`): {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).await.unwrap();
        drop(pipe);
    }
    let out = tokio::time::timeout(GUARD + Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish"))
        .unwrap();
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs it and panics with its output unless it succeeded; returns stdout.
async fn must(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = run(program, args, stdin).await;
    assert!(
        out.ok,
        "{program} {} failed:\n{}\n{}",
        args.join(" "),
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// `helm template` of `chart` as release `release` in `namespace` with `--set` values.
async fn render(chart: &str, release: &str, namespace: &str, set: &[&str]) -> String {
    let mut args = vec![
        "template",
        release,
        chart,
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
    ];
    for s in set {
        args.extend(["--set", s]);
    }
    must("helm", &args, None).await
}

/// The objects of a multi-document YAML stream.
fn objects(yaml: &str) -> Vec<Value> {
    let mut docs = vec![String::new()];
    for line in yaml.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else {
            let doc = docs.last_mut().unwrap();
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.iter()
        .map(|doc| serde_yaml::from_str::<Value>(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn kinds(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// Name/value (or `secretKeyRef` name/key) of a container's environment.
fn env(container: &Value) -> BTreeMap<String, Value> {
    container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_owned();
            let value = if e["value"].is_null() {
                e["valueFrom"].clone()
            } else {
                e["value"].clone()
            };
            (name, value)
        })
        .collect()
}

/// Every `"UPPER_CASE"` string literal in the given sources: the variables they read.
fn variables_read_by(sources: &[&str]) -> Vec<String> {
    let mut names = Vec::new();
    for path in sources {
        for piece in read(path).split('"').skip(1).step_by(2) {
            if !piece.is_empty()
                && piece
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                names.push(piece.to_owned());
            }
        }
    }
    names
}

/// Asserts the pod spec meets the restricted Pod Security Standard and runs without a token
/// unless `token` is wanted.
fn assert_restricted(pod: &Value, what: &str) {
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true, "{what}");
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{what}");
    assert!(psc["runAsUser"].as_u64().unwrap() > 0, "{what}");
    for c in pod["containers"].as_sequence().unwrap() {
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
        assert_eq!(sc["capabilities"]["drop"][0], "ALL", "{what}");
        assert!(c["resources"]["requests"].is_mapping(), "{what}: requests");
        assert!(
            c["resources"]["limits"]["memory"].is_string(),
            "{what}: memory limit"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Without a cluster: files, lint, schema, rendered objects.
// ---------------------------------------------------------------------------------------

#[test]
fn the_chart_carries_the_generated_crd_unchanged() {
    let generated = read(&format!("crds/{CRD_FILE}"));
    let shipped = read(&format!("{OPERATOR_CHART}/crds/{CRD_FILE}"));
    assert!(
        generated == shipped,
        "{OPERATOR_CHART}/crds/{CRD_FILE} differs from crds/{CRD_FILE}: run `make crds`"
    );
}

#[tokio::test]
async fn helm_lint_is_clean_for_both_charts_in_every_mode() {
    let cases: [(&str, &[&str]); 4] = [
        (OPERATOR_CHART, &[]),
        (
            OPERATOR_CHART,
            &["watch.scope=namespace", "watch.namespace=apps"],
        ),
        (
            OPERATOR_CHART,
            &[
                "replicaCount=2",
                "grafanaDashboard.enabled=true",
                "metrics.serviceMonitor.enabled=true",
                "development.brokerAddressOverride=127.0.0.1:5672",
            ],
        ),
        (SERVICES_CHART, &["notifications.scaledByOperator=false"]),
    ];
    for (chart, set) in cases {
        let mut args = vec!["lint", "--strict", chart];
        for s in set {
            args.extend(["--set", s]);
        }
        let out = must("helm", &args, None).await;
        assert!(out.contains("0 chart(s) failed"), "{out}");
        assert!(
            !out.contains("[WARNING]") && !out.contains("[ERROR]"),
            "{chart} {set:?}:\n{out}"
        );
    }
}

#[tokio::test]
async fn bad_values_are_refused_with_a_message_naming_the_setting() {
    let cases: [(&str, &[&str], &str); 6] = [
        (
            OPERATOR_CHART,
            &["replicaCount=2", "leaderElection.enabled=false"],
            "replicaCount > 1 needs leaderElection.enabled=true",
        ),
        (OPERATOR_CHART, &["watch.scope=everywhere"], "watch/scope"),
        (OPERATOR_CHART, &["replicas=2"], "replicas"),
        (
            OPERATOR_CHART,
            &["development.brokerAddressOverride=no port"],
            "brokerAddressOverride",
        ),
        (
            SERVICES_CHART,
            &["messaging.name=Not_A_Name"],
            "messaging/name",
        ),
        (
            SERVICES_CHART,
            &["notifications.env.RABBITMQ_PASSWORD=guest"],
            "RABBITMQ_PASSWORD",
        ),
    ];
    for (chart, set, expected) in cases {
        let mut args = vec!["template", "t", chart, "--kube-version", KUBE_VERSION];
        for s in set {
            args.extend(["--set", s]);
        }
        let out = run("helm", &args, None).await;
        assert!(!out.ok, "{chart} {set:?} was accepted:\n{}", out.stdout);
        assert!(
            out.stderr.contains(expected),
            "{chart} {set:?}: the error does not name {expected}:\n{}",
            out.stderr
        );
    }
}

#[tokio::test]
async fn the_operator_runs_restricted_probed_and_configured_only_through_variables_it_reads() {
    let known = variables_read_by(&["operator/src/config.rs"]);
    let rendered = objects(
        &render(
            OPERATOR_CHART,
            "rel",
            "ops",
            &[
                "replicaCount=2",
                "development.brokerAddressOverride=127.0.0.1:5672",
            ],
        )
        .await,
    );
    let deployment = find(&rendered, "Deployment", "rel-swappo-operator");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_restricted(pod, "operator");
    assert_eq!(pod["serviceAccountName"], "rel-swappo-operator");
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "swappo/swappo-operator:0.1.0");
    let vars = env(container);
    for name in vars.keys() {
        assert!(
            known.contains(name),
            "the chart sets {name}, which operator/src/config.rs does not read"
        );
    }
    assert_eq!(vars["SWAPPO_LEADER_ELECTION"], "true");
    assert_eq!(vars["SWAPPO_LEASE_NAME"], "rel-swappo-operator");
    assert_eq!(vars["SWAPPO_BROKER_ADDRESS_OVERRIDE"], "127.0.0.1:5672");
    assert_eq!(
        vars["POD_NAMESPACE"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(vars["POD_NAME"]["fieldRef"]["fieldPath"], "metadata.name");
    assert!(
        !vars.contains_key("WATCH_NAMESPACE"),
        "cluster scope watches all"
    );
    // The probes and the metrics Service reach the port the operator listens on.
    assert_eq!(vars["SWAPPO_OPERATOR_HTTP_ADDR"], "0.0.0.0:8080");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "http");
        assert!(container[probe]["timeoutSeconds"].as_u64().unwrap() >= 5);
    }
    let metrics = find(&rendered, "Service", "rel-swappo-operator-metrics");
    assert_eq!(metrics["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(
        metrics["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    // A standby: a disruption budget and a preference for another node.
    find(&rendered, "PodDisruptionBudget", "rel-swappo-operator");
    assert!(pod["affinity"]["podAntiAffinity"].is_mapping());
    // Cluster scope: a ClusterRole; the Lease Role in the release namespace.
    let all = kinds(&rendered);
    assert!(all.contains(&"ClusterRole".into()) && all.contains(&"ClusterRoleBinding".into()));
    let lease_role = find(&rendered, "Role", "rel-swappo-operator-leader-election");
    assert_eq!(lease_role["metadata"]["namespace"], "ops");
    assert_eq!(
        lease_role["rules"][1]["resourceNames"][0],
        "rel-swappo-operator"
    );

    // Namespace scope: WATCH_NAMESPACE, the rules in a Role there, no cluster-wide object.
    let namespaced = objects(
        &render(
            OPERATOR_CHART,
            "rel",
            "ops",
            &["watch.scope=namespace", "watch.namespace=apps"],
        )
        .await,
    );
    let vars = env(
        &find(&namespaced, "Deployment", "rel-swappo-operator")["spec"]["template"]["spec"]["containers"]
            [0],
    );
    assert_eq!(vars["WATCH_NAMESPACE"], "apps");
    let role = find(&namespaced, "Role", "rel-swappo-operator");
    assert_eq!(role["metadata"]["namespace"], "apps");
    let all = kinds(&namespaced);
    assert!(
        !all.iter().any(|k| k.starts_with("Cluster")),
        "namespaced mode created {all:?}"
    );
    assert!(!all.contains(&"PodDisruptionBudget".into()));
}

#[tokio::test]
async fn the_services_read_the_operators_secret_and_their_database_secrets_by_reference() {
    let rendered = objects(&render(SERVICES_CHART, "svc", "apps", &[]).await);
    let example: Value =
        serde_yaml::from_str(&read("examples/swappomessaging.yaml")).expect("example YAML");
    let broker = "services/messaging/src/config.rs";
    for (name, config, database_secret, scaled) in [
        (
            "matchmaking-service",
            "services/matchmaking/src/config.rs",
            "matchmaking-database",
            false,
        ),
        (
            "notifications-service",
            "services/notifications/src/config.rs",
            "notifications-database",
            true,
        ),
    ] {
        let deployment = find(&rendered, "Deployment", name);
        // The operator owns the consumer's replicas: the chart must not set them.
        assert_eq!(deployment["spec"]["replicas"].is_null(), scaled, "{name}");
        let pod = &deployment["spec"]["template"]["spec"];
        assert_restricted(pod, name);
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
        let container = &pod["containers"][0];
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
        let vars = env(container);
        for (var, key) in [
            ("RABBITMQ_HOST", "host"),
            ("RABBITMQ_PORT", "port"),
            ("RABBITMQ_USER", "username"),
            ("RABBITMQ_PASSWORD", "password"),
        ] {
            let r = &vars[var]["secretKeyRef"];
            assert_eq!(
                (r["name"].as_str(), r["key"].as_str()),
                (Some("swappo-rabbitmq"), Some(key)),
                "{name} {var}"
            );
        }
        let db = &vars["DATABASE_URL"]["secretKeyRef"];
        assert_eq!(db["name"], database_secret, "{name}");
        // No secret value in the manifest, and every variable is one the service reads.
        let known = variables_read_by(&[config, broker]);
        for var in vars.keys() {
            assert!(known.contains(var), "{name}: {var} is not read by {config}");
        }
        let port = container["ports"][0]["containerPort"].as_u64().unwrap();
        let addr = vars
            .get("LISTEN_ADDR")
            .or(vars.get("BIND_ADDR"))
            .and_then(Value::as_str)
            .unwrap();
        assert_eq!(addr, format!("0.0.0.0:{port}"), "{name}");
        let service = find(&rendered, "Service", name);
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    }
    // The example SwappoMessaging names the chart's defaults: its Secret and the consumer.
    assert_eq!(example["metadata"]["name"], "swappo");
    let consumer = &example["spec"]["consumers"][0];
    assert_eq!(consumer["deployment"], "notifications-service");
    let notifications = env(
        &find(&rendered, "Deployment", "notifications-service")["spec"]["template"]["spec"]["containers"]
            [0],
    );
    assert_eq!(notifications["QUEUE_NAME"], consumer["queue"]);
    assert_eq!(notifications["DECLARE_QUEUE"], "false");
}

#[tokio::test]
async fn the_dashboard_queries_only_metrics_the_code_exports_and_ships_unchanged() {
    let file = read(&format!(
        "{OPERATOR_CHART}/dashboards/swappo-messaging.json"
    ));
    let dashboard: serde_json::Value = serde_json::from_str(&file).expect("dashboard JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        assert!(panel["title"].is_string() && panel["description"].is_string());
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", panel["title"]);
        exprs.extend(
            targets
                .iter()
                .map(|t| t["expr"].as_str().unwrap().to_owned()),
        );
    }
    // Each of our metrics in a query is registered under that name by the code.
    let sources = [
        ("swappo_operator_", vec!["operator/src/metrics.rs"]),
        ("matchmaking_", vec!["services/matchmaking/src/metrics.rs"]),
        (
            "notifications_",
            vec![
                "services/notifications/src/metrics.rs",
                "services/notifications/src/app.rs",
            ],
        ),
    ];
    let mut checked = 0;
    for expr in &exprs {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            for (prefix, files) in &sources {
                let Some(rest) = word.strip_prefix(prefix) else {
                    continue;
                };
                let base = ["_total", "_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| rest.strip_suffix(s))
                    .unwrap_or(rest);
                let registered = files
                    .iter()
                    .any(|f| read(f).contains(&format!("\"{base}\"")));
                assert!(
                    registered,
                    "the dashboard queries {word}, but {files:?} register no \"{base}\""
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 20,
        "only {checked} metrics of ours in the dashboard"
    );
    for needed in [
        "rabbitmq_detailed_queue_messages_ready",
        "kube_deployment_spec_replicas",
        "kube_deployment_status_replicas_available",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(needed)),
            "no {needed} panel"
        );
    }

    // Shipped as-is in the ConfigMap, only when asked, with the sidecar's label.
    let off = objects(&render(OPERATOR_CHART, "rel", "ops", &[]).await);
    assert!(!kinds(&off).contains(&"ConfigMap".into()));
    let on = objects(
        &render(
            OPERATOR_CHART,
            "rel",
            "ops",
            &["grafanaDashboard.enabled=true"],
        )
        .await,
    );
    let cm = find(&on, "ConfigMap", "rel-swappo-operator-dashboard");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        cm["data"]["swappo-messaging.json"].as_str().unwrap(),
        file.trim_end()
    );
}

/// Every PromQL expression of the dashboard.
fn dashboard_exprs() -> Vec<String> {
    let file = read(&format!(
        "{OPERATOR_CHART}/dashboards/swappo-messaging.json"
    ));
    let dashboard: serde_json::Value = serde_json::from_str(&file).expect("dashboard JSON");
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_dashboards_broker_queries_name_metrics_a_real_rabbitmq_serves() {
    // The local RabbitMQ (`make testenv-deps`) with its prometheus plugin on 15692: the
    // aggregated /metrics and the per-queue families the dashboard's description names.
    let addr =
        std::env::var("RABBITMQ_PROMETHEUS_ADDR").unwrap_or_else(|_| "127.0.0.1:15692".into());
    let mut served = http_get(&addr, "/metrics").await;
    served.push_str(
        &http_get(
            &addr,
            "/metrics/detailed?family=queue_coarse_metrics&family=queue_consumer_count",
        )
        .await,
    );
    let mut checked = 0;
    for expr in dashboard_exprs() {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("rabbitmq_") {
                assert!(
                    served
                        .lines()
                        .any(|l| l.starts_with(&format!("# TYPE {word} "))),
                    "the dashboard queries {word}, which RabbitMQ does not serve"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 8, "only {checked} broker metrics checked");
}

// ---------------------------------------------------------------------------------------
// On the local control plane.
// ---------------------------------------------------------------------------------------

/// Applies the CRD the operator's code generates (server-side, as the operator's own tests
/// do, so concurrent tests never install two different versions) and waits until it is
/// served. The chart's copy is the same file (`the_chart_carries_the_generated_crd_unchanged`).
async fn install_crd() {
    let crd = swappo_operator::crd::crd();
    swappo_testkit::apply_crd(&kube_client().await, &crd, "swappo-e2e-helm", GUARD)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn rendered_manifests_and_the_example_pass_a_server_side_dry_run() {
    install_crd().await;
    let ns = TestNamespace::new("helm-dry-").await;
    let name = ns.name();
    let watch = format!("watch.namespace={name}");
    let cases: [(&str, Vec<&str>); 4] = [
        (
            OPERATOR_CHART,
            vec![
                "replicaCount=2",
                "grafanaDashboard.enabled=true",
                "development.brokerAddressOverride=127.0.0.1:5672",
            ],
        ),
        (OPERATOR_CHART, vec!["watch.scope=namespace", &watch]),
        (SERVICES_CHART, vec![]),
        (SERVICES_CHART, vec!["notifications.scaledByOperator=false"]),
    ];
    for (chart, set) in cases {
        let manifest = render(chart, "dry", name, &set).await;
        let out = must(
            "kubectl",
            &[
                "apply",
                "--server-side",
                "--dry-run=server",
                "--field-manager=helm-dry-run",
                "-f",
                "-",
            ],
            Some(&manifest),
        )
        .await;
        let applied = out
            .lines()
            .filter(|l| l.ends_with("(server dry run)"))
            .count();
        assert_eq!(applied, objects(&manifest).len(), "{chart} {set:?}:\n{out}");
    }
    let out = must(
        "kubectl",
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-n",
            name,
            "-f",
            "examples/swappomessaging.yaml",
        ],
        None,
    )
    .await;
    assert!(
        out.contains("swappomessaging.swappo.io/swappo serverside-applied"),
        "{out}"
    );
}

/// A kubeconfig file that authenticates as a ServiceAccount with a fresh token from the
/// TokenRequest API (the same kind of token the pod would get); removed when dropped.
struct ServiceAccountKubeconfig {
    path: PathBuf,
}

impl ServiceAccountKubeconfig {
    async fn new(client: &Client, namespace: &str, account: &str) -> Self {
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                // The API server's minimum; a test needs a few minutes.
                expiration_seconds: Some(600),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let token = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
            .create_token_request(account, &PostParams::default(), &request)
            .await
            .expect("a token for the chart's ServiceAccount")
            .status
            .expect("token status")
            .token;
        let admin: serde_json::Value = serde_json::from_str(
            &must(
                "kubectl",
                &[
                    "config",
                    "view",
                    "--raw",
                    "--minify",
                    "--flatten",
                    "-o",
                    "json",
                ],
                None,
            )
            .await,
        )
        .unwrap();
        let cluster = admin["clusters"][0]["cluster"].clone();
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": cluster}],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {
                "cluster": "local", "user": account, "namespace": namespace}}],
            "current-context": "sa",
        });
        let path = std::env::temp_dir().join(format!("{}.kubeconfig", unique_name("swappo-sa-")));
        std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
        Self { path }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for ServiceAccountKubeconfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One row of the access table: `kubectl auth can-i` asked with the identity's own token
/// (a SelfSubjectAccessReview, so the answer is the API server's RBAC decision).
struct Access<'a> {
    verb: &'a str,
    resource: String,
    scope: String,
    expected: bool,
}

fn allow(verb: &'static str, resource: &str, namespace: &str) -> Access<'static> {
    Access {
        verb,
        resource: resource.to_owned(),
        scope: namespace.to_owned(),
        expected: true,
    }
}

fn deny(verb: &'static str, resource: &str, namespace: &str) -> Access<'static> {
    Access {
        expected: false,
        ..allow(verb, resource, namespace)
    }
}

/// Asks every row, prints the table, and fails listing each row that differs.
async fn check_access(kubeconfig: &ServiceAccountKubeconfig, who: &str, rows: &[Access<'_>]) {
    let mut table = format!("what {who} can do (kubectl auth can-i with its token):\n");
    let mut wrong = Vec::new();
    for row in rows {
        let (resource, subresource) = match row.resource.split_once(" --subresource=") {
            Some((r, s)) => (r, Some(s)),
            None => (row.resource.as_str(), None),
        };
        let mut args = vec![
            "auth",
            "can-i",
            row.verb,
            resource,
            "--kubeconfig",
            kubeconfig.path(),
        ];
        let sub;
        if let Some(s) = subresource {
            sub = format!("--subresource={s}");
            args.push(&sub);
        }
        match row.scope.as_str() {
            "*" => args.push("--all-namespaces"),
            "" => {}
            ns => args.extend(["--namespace", ns]),
        }
        let out = run("kubectl", &args, None).await;
        let answer = out.stdout.trim();
        assert!(
            answer == "yes" || answer == "no",
            "can-i {args:?}: {}\n{}",
            out.stdout,
            out.stderr
        );
        let can = answer == "yes";
        let mark = if can == row.expected { "  " } else { "!!" };
        let scope = match row.scope.as_str() {
            "*" => "all namespaces".to_owned(),
            "" => "cluster".to_owned(),
            ns => ns.to_owned(),
        };
        table.push_str(&format!(
            "{mark} {:<4} {:<7} {:<62} in {scope}\n",
            answer, row.verb, row.resource
        ));
        if can != row.expected {
            wrong.push(format!(
                "{} {} in {scope}: {answer}",
                row.verb, row.resource
            ));
        }
    }
    println!("{table}");
    assert!(wrong.is_empty(), "unexpected answers: {wrong:?}\n{table}");
}

/// `helm install` of `chart` as `release` into `namespace`, waiting for its Deployments.
async fn helm_install(chart: &str, release: &str, namespace: &str, set: &[&str]) -> String {
    let mut args = vec![
        "install",
        release,
        chart,
        "--namespace",
        namespace,
        "--wait",
        "--timeout",
        "120s",
    ];
    for s in set {
        args.extend(["--set", s]);
    }
    must("helm", &args, None).await
}

/// A PersistentVolume pre-bound to one claim (the local cluster has no provisioner), deleted
/// when dropped: it is cluster-scoped, so the namespace's deletion does not remove it.
struct BoundVolume {
    name: String,
}

impl BoundVolume {
    async fn new(client: &Client, namespace: &str, claim: &str) -> Self {
        let name = format!("{namespace}-{claim}");
        let pv = PersistentVolume {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(
                    swappo_testkit::kube::TEST_NAMESPACE_LABEL.to_owned(),
                    "true".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeSpec {
                capacity: Some(BTreeMap::from([("storage".into(), Quantity("1Gi".into()))])),
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                persistent_volume_reclaim_policy: Some("Retain".into()),
                // Never mounted: pods on kwok nodes do not run.
                host_path: Some(HostPathVolumeSource {
                    path: format!("/tmp/swappo-test-pv/{name}"),
                    ..HostPathVolumeSource::default()
                }),
                claim_ref: Some(ObjectReference {
                    namespace: Some(namespace.to_owned()),
                    name: Some(claim.to_owned()),
                    ..ObjectReference::default()
                }),
                ..PersistentVolumeSpec::default()
            }),
            ..PersistentVolume::default()
        };
        Api::<PersistentVolume>::all(client.clone())
            .create(&PostParams::default(), &pv)
            .await
            .expect("the volume is created");
        Self { name }
    }
}

/// Runs `cleanup` to completion on a runtime of its own (the test's runtime is blocked in drop).
fn block_on_cleanup<F: std::future::Future<Output = ()> + Send + 'static>(cleanup: F) {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(cleanup)
    })
    .join()
    .ok();
}

impl Drop for BoundVolume {
    fn drop(&mut self) {
        let name = self.name.clone();
        block_on_cleanup(async move {
            if let Ok(config) = swappo_testkit::kube_config().await
                && let Ok(client) = Client::try_from(config)
            {
                let _ = Api::<PersistentVolume>::all(client)
                    .delete(&name, &DeleteParams::default())
                    .await;
            }
        });
    }
}

/// A user on the local RabbitMQ matching the credentials the operator generated (the broker
/// pods on kwok only pretend to run, so the operator is pointed at the local broker).
struct BrokerUser {
    name: String,
}

impl BrokerUser {
    async fn new(name: &str, password: &str) -> Self {
        Management::from_env()
            .create_user(name, password, "/")
            .await
            .expect("the broker user is created");
        Self {
            name: name.to_owned(),
        }
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let name = self.name.clone();
        block_on_cleanup(async move {
            let _ = Management::from_env().delete_user(&name).await;
        });
    }
}

fn secret_value(secret: &Secret, key: &str) -> String {
    let bytes = &secret.data.as_ref().unwrap()[key].0;
    String::from_utf8(bytes.clone()).unwrap()
}

fn condition(sm: &SwappoMessaging, type_: &str) -> Option<(String, String, String)> {
    sm.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn a_namespaced_install_reconciles_its_namespace_to_ready_and_reaches_nothing_else() {
    install_crd().await;
    let client = kube_client().await;
    let ops = TestNamespace::new("helm-ops-").await;
    let apps = TestNamespace::new("helm-apps-").await;
    let other = TestNamespace::new("helm-other-").await;
    let release = "swappo";
    let account = "swappo-swappo-operator";
    let lease = "swappo-swappo-operator";
    let watch = format!("watch.namespace={}", apps.name());
    let out = helm_install(
        OPERATOR_CHART,
        release,
        ops.name(),
        &["watch.scope=namespace", &watch],
    )
    .await;
    assert!(out.contains("STATUS: deployed"), "{out}");
    assert!(
        out.contains(&format!("watching namespace {} only", apps.name())),
        "NOTES:\n{out}"
    );

    let sa = ServiceAccountKubeconfig::new(&client, ops.name(), account).await;
    let (a, o, op) = (apps.name(), other.name(), ops.name());
    let lease_named = format!("leases.coordination.k8s.io/{lease}");
    check_access(
        &sa,
        &format!("system:serviceaccount:{op}:{account} (watch.scope=namespace)"),
        &[
            allow("watch", "swappomessagings.swappo.io", a),
            allow("get", "swappomessagings.swappo.io", a),
            allow(
                "patch",
                "swappomessagings.swappo.io --subresource=status",
                a,
            ),
            deny("update", "swappomessagings.swappo.io", a),
            deny("delete", "swappomessagings.swappo.io", a),
            allow("get", "secrets", a),
            allow("create", "secrets", a),
            allow("patch", "secrets", a),
            deny("delete", "secrets", a),
            allow("create", "persistentvolumeclaims", a),
            deny("patch", "persistentvolumeclaims", a),
            allow("patch", "statefulsets.apps", a),
            deny("delete", "statefulsets.apps", a),
            deny("patch", "deployments.apps", a),
            allow("patch", "deployments.apps --subresource=scale", a),
            deny("update", "deployments.apps --subresource=scale", a),
            // Only for an earlier operator version's broker Deployment (upgrade).
            allow("delete", "deployments.apps", a),
            allow("patch", "networkpolicies.networking.k8s.io", a),
            allow("delete", "replicasets.apps", a),
            allow("create", "events.events.k8s.io", a),
            allow("list", "pods", a),
            deny("get", "pods", a),
            deny("delete", "pods", a),
            deny("create", "pods", a),
            deny("create", "pods --subresource=exec", a),
            deny("create", "roles.rbac.authorization.k8s.io", a),
            deny("get", "secrets", o),
            deny("watch", "swappomessagings.swappo.io", o),
            deny("list", "secrets", "*"),
            deny("get", "secrets", op),
            allow("create", "leases.coordination.k8s.io", op),
            allow("update", &lease_named, op),
            deny("update", "leases.coordination.k8s.io/someone-elses", op),
            deny("get", "leases.coordination.k8s.io", a),
            deny("delete", "namespaces", ""),
            deny(
                "create",
                "customresourcedefinitions.apiextensions.k8s.io",
                "",
            ),
            deny(
                "create",
                "clusterrolebindings.rbac.authorization.k8s.io",
                "",
            ),
            deny("list", "nodes", ""),
        ],
    )
    .await;

    // The operator itself, with nothing but that token, reconciles the example to Ready:
    // its leader election on the chart's Lease, every object it owns, status and Events.
    let _volume = BoundVolume::new(&client, a, "swappo-rabbitmq-data").await;
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .to_string();
    let config = <swappo_operator::Config as clap::Parser>::try_parse_from([
        "swappo-operator",
        "--kubeconfig",
        sa.path(),
        "--namespace",
        a,
        "--lease-namespace",
        op,
        "--lease-name",
        lease,
        "--identity",
        "helm-chart-test",
        "--http-addr",
        &http,
        "--broker-address-override",
        "127.0.0.1:5672",
        "--retry-seconds",
        "1",
    ])
    .expect("operator flags");
    let stop = CancellationToken::new();
    let operator = tokio::spawn(swappo_operator::run(config, stop.clone()));
    helm_install(SERVICES_CHART, "services", a, &[]).await;
    must(
        "kubectl",
        &["apply", "-n", a, "-f", "examples/swappomessaging.yaml"],
        None,
    )
    .await;

    let secrets: Api<Secret> = apps.api();
    let secret = eventually("the operator's Secret swappo-rabbitmq", GUARD, || async {
        secrets.get_opt("swappo-rabbitmq").await.ok().flatten()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let _user = BrokerUser::new(
        &secret_value(&secret, "username"),
        &secret_value(&secret, "password"),
    )
    .await;
    let resources: Api<SwappoMessaging> = apps.api();
    let ready = eventually("SwappoMessaging swappo Ready=True", GUARD, || async {
        let sm = resources.get("swappo").await.ok()?;
        (condition(&sm, "Ready")?.0 == "True").then_some(sm)
    })
    .await;
    let ready = match ready {
        Ok(sm) => sm,
        Err(e) => {
            let sm = resources.get("swappo").await.ok();
            panic!("{e}; last status: {:?}", sm.and_then(|s| s.status));
        }
    };
    let status = ready.status.as_ref().unwrap();
    println!(
        "reconciled with the chart's identity: {:?}",
        status
            .conditions
            .iter()
            .map(|c| format!("{}={} ({})", c.type_, c.status, c.reason))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        status.broker.as_ref().unwrap().secret_name,
        "swappo-rabbitmq"
    );
    // The autoscaler, with the same identity, reads the consumer Deployment the services chart
    // installed and sizes it (the scale subresource).
    let scaled = eventually("ConsumersScaled=True", GUARD, || async {
        let sm = resources.get("swappo").await.ok()?;
        (condition(&sm, "ConsumersScaled")?.0 == "True").then_some(sm)
    })
    .await;
    let scaled = match scaled {
        Ok(sm) => sm,
        Err(e) => {
            let sm = resources.get("swappo").await.ok();
            panic!("{e}; last status: {:?}", sm.and_then(|s| s.status));
        }
    };
    let consumers = &scaled.status.as_ref().unwrap().consumers;
    assert_eq!(consumers.len(), 1, "{consumers:?}");
    assert_eq!(consumers[0].deployment, "notifications-service");
    assert!(consumers[0].desired_replicas >= 1, "{consumers:?}");
    println!(
        "consumer sized with the chart's identity: {:?}",
        consumers[0]
    );

    let holder = Api::<Lease>::namespaced(client.clone(), op)
        .get(lease)
        .await
        .expect("the Lease the chart's Role allows")
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some("helm-chart-test"));
    let events = Api::<Event>::namespaced(client.clone(), a)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(
        events
            .iter()
            .any(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("swappo")),
        "no Event about the SwappoMessaging"
    );
    // The services chart's Deployments were not touched by the operator's field manager.
    let notifications = apps
        .api::<Deployment>()
        .get("notifications-service")
        .await
        .unwrap();
    assert!(
        notifications
            .managed_fields()
            .iter()
            .any(|f| f.manager.as_deref() == Some("helm"))
    );

    // No call of the operator's was refused on the way: not in its error counter by kind, not
    // in an Event (failed clean-ups and scale patches are reported as Warning Events), not in a
    // condition.
    let refused: Vec<String> = Api::<Event>::namespaced(client.clone(), a)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.note)
        .chain(status.conditions.iter().map(|c| c.message.clone()))
        .filter(|note| note.contains("forbidden"))
        .collect();
    assert!(refused.is_empty(), "refused API calls: {refused:?}");
    let metrics = http_get(&http, "/metrics").await;
    let forbidden: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("swappo_operator_reconcile_errors_total") && l.contains("forbidden")
        })
        .collect();
    assert!(forbidden.is_empty(), "refused API calls: {forbidden:?}");
    assert!(metrics.contains("swappo_operator_leader 1"), "{metrics}");

    stop.cancel();
    tokio::time::timeout(GUARD, operator)
        .await
        .expect("the operator stops")
        .unwrap()
        .expect("the operator exits cleanly (no permission error on the way out)");
    must("helm", &["uninstall", "services", "-n", a, "--wait"], None).await;
    must("helm", &["uninstall", release, "-n", op, "--wait"], None).await;
}

/// The body of `GET path` from a local HTTP server (HTTP/1.0: the server closes when done).
async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(GUARD, stream.read_to_string(&mut response))
        .await
        .expect("the response")
        .unwrap();
    assert!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "{response}"
    );
    response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// Uninstalls a cluster-wide release when dropped: its ClusterRole and binding are not in
/// any test namespace.
struct Release {
    name: String,
    namespace: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let (name, namespace) = (self.name.clone(), self.namespace.clone());
        block_on_cleanup(async move {
            let out = run(
                "helm",
                &["uninstall", &name, "-n", &namespace, "--wait"],
                None,
            )
            .await;
            if !out.ok && !out.stderr.contains("not found") {
                eprintln!("helm uninstall {name}: {}", out.stderr);
            }
        });
    }
}

#[tokio::test]
async fn a_cluster_wide_install_reaches_every_namespace_but_cannot_escalate() {
    install_crd().await;
    let client = kube_client().await;
    let ops = TestNamespace::new("helm-cw-").await;
    let elsewhere = TestNamespace::new("helm-cw-other-").await;
    let release = unique_name("cw-");
    let guard = Release {
        name: release.clone(),
        namespace: ops.name().to_owned(),
    };
    let out = helm_install(OPERATOR_CHART, &release, ops.name(), &["replicaCount=2"]).await;
    assert!(out.contains("watching every namespace"), "NOTES:\n{out}");
    let account = format!("{release}-swappo-operator");
    let sa = ServiceAccountKubeconfig::new(&client, ops.name(), &account).await;
    let e = elsewhere.name();
    check_access(
        &sa,
        &format!(
            "system:serviceaccount:{}:{account} (watch.scope=cluster)",
            ops.name()
        ),
        &[
            allow("list", "swappomessagings.swappo.io", "*"),
            allow(
                "patch",
                "swappomessagings.swappo.io --subresource=status",
                e,
            ),
            allow("get", "secrets", e),
            allow("list", "secrets", "*"),
            allow("patch", "deployments.apps --subresource=scale", e),
            allow("patch", "statefulsets.apps", e),
            deny("delete", "secrets", e),
            deny("delete", "statefulsets.apps", e),
            deny("create", "pods", e),
            deny("create", "leases.coordination.k8s.io", e),
            deny("delete", "namespaces", ""),
            deny("create", "namespaces", ""),
            deny(
                "create",
                "customresourcedefinitions.apiextensions.k8s.io",
                "",
            ),
            deny(
                "patch",
                "customresourcedefinitions.apiextensions.k8s.io",
                "",
            ),
            deny("create", "clusterroles.rbac.authorization.k8s.io", ""),
            deny(
                "create",
                "clusterrolebindings.rbac.authorization.k8s.io",
                "",
            ),
            deny("bind", "clusterroles.rbac.authorization.k8s.io", ""),
            deny("impersonate", "serviceaccounts", e),
            deny("create", "serviceaccounts --subresource=token", e),
            deny("list", "nodes", ""),
            deny("create", "persistentvolumes", ""),
        ],
    )
    .await;

    // Two replicas: both Running (kwok), one PodDisruptionBudget.
    let pods: Api<Pod> = ops.api();
    let selector = format!("app.kubernetes.io/instance={release}");
    let running = eventually("two Running operator pods", GUARD, || async {
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .ok()?;
        let n = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        (n == 2).then_some(n)
    })
    .await;
    running.unwrap_or_else(|e| panic!("{e}"));

    // Uninstalling removes the cluster-scoped objects too.
    drop(guard);
    let roles: Api<ClusterRole> = Api::all(client.clone());
    assert!(
        roles.get_opt(&account).await.unwrap().is_none(),
        "ClusterRole {account} outlived helm uninstall"
    );
}

#[tokio::test]
async fn the_services_run_under_restricted_pod_security_and_an_upgrade_keeps_the_operators_scale() {
    let client = kube_client().await;
    let ns = TestNamespace::new("helm-svc-").await;
    let name = ns.name();
    let labels = serde_json::json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }}});
    Api::<Namespace>::all(client.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .unwrap();
    // The Secrets the pods reference (the operator's one is faked here: no operator runs).
    for (secret, pairs) in [
        (
            "swappo-rabbitmq",
            vec![
                ("username", "u"),
                ("password", "p"),
                ("host", "swappo-rabbitmq"),
                ("port", "5672"),
                ("uri", "amqp://u:p@swappo-rabbitmq:5672/%2f"),
            ],
        ),
        ("matchmaking-database", vec![("url", "postgres://db/mm")]),
        ("notifications-database", vec![("url", "postgres://db/nt")]),
    ] {
        let s = Secret {
            metadata: ObjectMeta {
                name: Some(secret.into()),
                ..ObjectMeta::default()
            },
            string_data: Some(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            ),
            ..Secret::default()
        };
        ns.api::<Secret>()
            .create(&PostParams::default(), &s)
            .await
            .unwrap();
    }

    let out = helm_install(SERVICES_CHART, "services", name, &[]).await;
    assert!(!out.contains("would violate PodSecurity"), "{out}");
    let pods: Api<Pod> = ns.api();
    for deployment in ["matchmaking-service", "notifications-service"] {
        let selector = format!("app.kubernetes.io/name={deployment}");
        eventually(&format!("a Running {deployment} pod"), GUARD, || async {
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            list.items
                .into_iter()
                .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }

    // The namespace really enforces: the same pod without its security context is refused.
    let deployments: Api<Deployment> = ns.api();
    let template = deployments
        .get("notifications-service")
        .await
        .unwrap()
        .spec
        .template;
    let compliant = Pod {
        metadata: ObjectMeta {
            name: Some("probe".into()),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        ..Pod::default()
    };
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    pods.create(&dry, &compliant)
        .await
        .expect("the chart's pod passes restricted admission");
    let mut stripped = compliant.clone();
    let spec = stripped.spec.as_mut().unwrap();
    spec.security_context = None;
    spec.containers[0].security_context = None;
    match pods.create(&dry, &stripped).await {
        Err(kube::Error::Api(status)) => assert!(
            status.code == 403 && status.message.contains("restricted"),
            "{status:?}"
        ),
        other => panic!("a pod without a security context was admitted: {other:?}"),
    }

    // The operator scales the consumer through the scale subresource; a later helm upgrade
    // (the chart leaves spec.replicas out) does not undo it.
    let scale = serde_json::json!({"spec": {"replicas": 3}});
    deployments
        .patch_scale(
            "notifications-service",
            &PatchParams::default(),
            &Patch::Merge(&scale),
        )
        .await
        .unwrap();
    must(
        "helm",
        &[
            "upgrade",
            "services",
            SERVICES_CHART,
            "-n",
            name,
            "--set",
            "notifications.logFormat=text",
        ],
        None,
    )
    .await;
    let after = deployments.get("notifications-service").await.unwrap();
    assert_eq!(after.spec.replicas, Some(3));
    let logs = after.spec.template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .find(|e| e.name == "LOG_FORMAT")
        .and_then(|e| e.value);
    assert_eq!(logs.as_deref(), Some("text"), "the upgrade was applied");
    must(
        "helm",
        &["uninstall", "services", "-n", name, "--wait"],
        None,
    )
    .await;
}
