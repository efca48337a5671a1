//! The real node of the local cluster (`make cluster-up`, scripts/node-up.sh): a kubelet with
//! containerd on this machine, next to kwok's fake node. Tests that need it call
//! [`real_node_client`], which skips them (returns `None`) when the node is not Ready, unless
//! `SWAPPO_REQUIRE_NODE` is set (as `make test` does): then it panics with the reason.
//!
//! The node is tainted [`NODE_TAINT`] so that pods of the other tests (images that cannot be
//! pulled here) stay on kwok's node; a pod meant for the real node takes [`placement`].
use crate::kube::{KubeError, TestNamespace, kube_config, local_kubeconfig_path, wait_for};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{Value, json};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

/// The real node's name (scripts/node-lib.sh).
pub const NODE_NAME: &str = "swappo-node-0";
/// The taint that keeps pods off the real node unless they tolerate it.
pub const NODE_TAINT: &str = "swappo.io/real-node";
/// The test bed's Debian image (minbase + busybox), built by images/build.sh and imported by
/// `make cluster-up`; never pulled.
pub const DEBIAN_IMAGE: &str = "swappo.local/debian:bookworm";
/// The StorageClass of the node's local-path provisioner.
pub const STORAGE_CLASS: &str = "swappo-local-path";
/// The node's pod bridge (its address is the node IP and the API server's).
pub const NODE_BRIDGE: &str = "swappo0";
/// The bridge's address on the host (scripts/node-lib.sh's NODE_IP): the one host address pods
/// reach. A test server listening there (e.g. an [`crate::OutageProxy::start_on`] in front of
/// the loopback-only shared broker or database) is reachable from pods.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 246, 0, 1);

/// How long [`real_node_client`] waits for the API server's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// `SWAPPO_REQUIRE_NODE` is set (and not `0`): a missing node fails the test.
pub fn node_required() -> bool {
    std::env::var("SWAPPO_REQUIRE_NODE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// An admin client when the real node is Ready; `None` (the test skips, saying why on
/// stderr) otherwise, or a panic when [`node_required`].
pub async fn real_node_client() -> Option<Client> {
    match probe_node().await {
        Ok(client) => Some(client),
        Err(why) if node_required() => panic!("SWAPPO_REQUIRE_NODE is set but {why}"),
        Err(why) => {
            eprintln!(
                "skipped: {why} (run `make cluster-up`; SWAPPO_REQUIRE_NODE=1 fails instead)"
            );
            None
        }
    }
}

async fn probe_node() -> Result<Client, String> {
    let config = kube_config().await.map_err(|e| e.to_string())?;
    let client = Client::try_from(config).map_err(|e| KubeError::Client(e).to_string())?;
    let nodes: Api<Node> = Api::all(client.clone());
    let node = tokio::time::timeout(PROBE_TIMEOUT, nodes.get_opt(NODE_NAME))
        .await
        .map_err(|_| format!("the API server did not answer within {PROBE_TIMEOUT:?}"))?
        .map_err(|e| format!("the control plane is unreachable: {e}"))?
        .ok_or_else(|| format!("there is no node {NODE_NAME}"))?;
    let ready = node
        .status
        .and_then(|s| s.conditions)
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if ready {
        Ok(client)
    } else {
        Err(format!("node {NODE_NAME} is not Ready"))
    }
}

/// Pod spec fields that put a pod on the real node: its hostname as node selector and a
/// toleration of [`NODE_TAINT`]. Merge them into a pod spec's JSON.
pub fn placement() -> serde_json::Value {
    serde_json::json!({
        "nodeSelector": {"kubernetes.io/hostname": NODE_NAME},
        "tolerations": [{"key": NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
    })
}

/// The directory of the test bed's binaries (`$SWAPPO_TESTBIN`, else its default under
/// `$SWAPPO_CACHE` or `~/.cache/swappo`, as in scripts/env.sh).
pub fn testbin_dir() -> PathBuf {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("SWAPPO_TESTBIN").unwrap_or_else(|| {
        var("SWAPPO_CACHE")
            .unwrap_or_else(|| {
                var("HOME")
                    .unwrap_or_else(|| PathBuf::from("/root"))
                    .join(".cache/swappo")
            })
            .join("testbin/v1.37.2")
    })
}

/// Runs the test bed's `kubectl` with the test cluster's kubeconfig; returns its stdout, or an
/// error with its exit status and stderr. For what kube-rs does not cover without extra
/// features: `logs` and `exec` through the API server and the kubelet.
pub async fn kubectl(args: &[&str]) -> Result<String, String> {
    test_bed_tool("kubectl", &["--request-timeout=30s"], args).await
}

/// Runs the test bed's `helm` with the test cluster's kubeconfig, in the repository root (so
/// `charts/...` paths work); its stdout, or an error with its exit status and stderr.
pub async fn helm(args: &[&str]) -> Result<String, String> {
    test_bed_tool("helm", &[], args).await
}

async fn test_bed_tool(tool: &str, fixed: &[&str], args: &[&str]) -> Result<String, String> {
    let kubeconfig = std::env::var_os("KUBECONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(local_kubeconfig_path);
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tokio::process::Command::new(testbin_dir().join(tool))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(fixed)
        .args(args)
        .current_dir(repo)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("{tool} {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{tool} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `SWAPPO_REQUIRE_APP_IMAGES` is set (and not `0`), as `make test` does after building and
/// importing the operator's and services' images: a test that needs one must not skip.
pub fn app_images_required() -> bool {
    std::env::var("SWAPPO_REQUIRE_APP_IMAGES").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Whether the real node's containerd holds `image` (the names the kubelet reports in the
/// node's status): a locally built image is never pulled, so a pod of a missing one cannot run.
pub async fn node_has_image(client: &Client, image: &str) -> Result<bool, kube::Error> {
    let node = Api::<Node>::all(client.clone()).get(NODE_NAME).await?;
    Ok(node
        .status
        .and_then(|s| s.images)
        .into_iter()
        .flatten()
        .any(|i| i.names.unwrap_or_default().iter().any(|n| n == image)))
}

/// Shallow merge of `extra`'s keys into `into` (both JSON objects).
pub fn merge(into: &mut Value, extra: Value) {
    if let (Some(into), Value::Object(extra)) = (into.as_object_mut(), extra) {
        into.extend(extra);
    }
}

/// The pod's Ready condition is True.
pub fn pod_ready(pod: Option<&Pod>) -> bool {
    pod.and_then(|p| p.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Creates the pod and waits (at most `guard`) until it is Ready; returns it as last seen (its
/// node, its IP). Panics with what kubectl knows of it otherwise.
pub async fn run_ready(ns: &TestNamespace, guard: Duration, pod: &Pod) -> Pod {
    let pods: Api<Pod> = ns.api();
    let name = pod.metadata.name.clone().expect("a named pod");
    pods.create(&PostParams::default(), pod)
        .await
        .expect("pod created");
    let what = format!("pod {}/{name} Ready", ns.name());
    match wait_for(&pods, &name, &what, guard, pod_ready).await {
        Ok(Some(pod)) => pod,
        other => panic!("{what}: {other:?}; {}", describe(ns, &name).await),
    }
}

/// What kubectl knows of a pod and its log: the failure message of a test that waited on it.
pub async fn describe(ns: &TestNamespace, name: &str) -> String {
    let d = kubectl(&["-n", ns.name(), "describe", "pod", name]).await;
    let l = kubectl(&["-n", ns.name(), "logs", name, "--all-containers"]).await;
    format!("describe: {d:?}\nlogs: {l:?}")
}

/// Runs `command` in the pod's first container (`kubectl exec`); its stdout.
pub async fn exec(ns: &TestNamespace, pod: &str, command: &[&str]) -> Result<String, String> {
    let mut args = vec!["-n", ns.name(), "exec", pod, "--"];
    args.extend_from_slice(command);
    kubectl(&args).await
}

/// A pod on the real node from the test bed's Debian image, running `script` with `sh -c` as an
/// unprivileged user under the restricted Pod Security profile; `extra` is merged into the
/// pod spec (volumes, probes go in `container`).
pub fn debian_pod(name: &str, labels: Value, script: &str, container: Value, extra: Value) -> Pod {
    let mut spec = json!({
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 1,
        "securityContext": {
            "runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [],
    });
    let mut main = json!({
        "name": "main",
        "image": DEBIAN_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", script],
        "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
    });
    merge(&mut main, container);
    spec["containers"] = json!([main]);
    merge(&mut spec, placement());
    merge(&mut spec, extra);
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }))
    .expect("a valid pod")
}
