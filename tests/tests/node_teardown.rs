//! `make cluster-down` leaves nothing of the real node behind: no process it started (the
//! recorded daemons, containerd's shims), no mount under the kubelet's root or the runtime's
//! state, no kubepods cgroup, no bridge, route or nft rule. Destructive (it stops the shared
//! cluster), hence ignored in the workspace run: `make node-teardown-check` runs it with a pod
//! holding a volume in place, then brings the cluster back.
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;
use swappo_testkit::node::{DEBIAN_IMAGE, NODE_BRIDGE, placement, real_node_client};
use swappo_testkit::{TestNamespace, wait_for};

const GUARD: Duration = Duration::from_secs(120);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cluster_dir() -> PathBuf {
    let var = |n: &str| {
        std::env::var_os(n)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("SWAPPO_STATE")
        .unwrap_or_else(|| {
            var("SWAPPO_CACHE")
                .unwrap_or_else(|| {
                    var("HOME")
                        .unwrap_or_else(|| "/root".into())
                        .join(".cache/swappo")
                })
                .join("state")
        })
        .join("cluster")
}

/// The pids recorded by cluster-up for the node's daemons.
fn recorded_pids() -> Vec<(String, u32)> {
    [
        "containerd",
        "kubelet",
        "kube-proxy",
        "local-path-provisioner",
    ]
    .iter()
    .filter_map(|name| {
        let text =
            std::fs::read_to_string(cluster_dir().join("pids").join(format!("{name}.pid"))).ok()?;
        let pid = text.split_whitespace().next()?.parse().ok()?;
        Some(((*name).to_owned(), pid))
    })
    .collect()
}

/// Processes whose command line mentions `needle` (the node's containerd socket).
fn processes_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            e.file_name().to_str()?.parse::<u32>().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(needle).then_some(cmd)
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

fn node_mounts() -> Vec<String> {
    let node = cluster_dir().join("node");
    let node = node.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(&*node) || m.starts_with("/run/swappo/"))
        .collect()
}

fn nft(args: &[&str]) -> String {
    let out = std::process::Command::new("/usr/sbin/nft")
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
#[ignore = "stops the shared cluster: run by `make node-teardown-check`"]
async fn cluster_down_leaves_no_process_mount_cgroup_bridge_or_rule_of_the_node_behind() {
    let Some(_client) = real_node_client().await else {
        return;
    };
    // A running pod with a volume: a sandbox, a shim, mounts and cgroups to clean.
    let ns = TestNamespace::new("node-down-").await;
    let mut spec = json!({
        "terminationGracePeriodSeconds": 1,
        "containers": [{
            "name": "main", "image": DEBIAN_IMAGE, "imagePullPolicy": "Never",
            "command": ["sleep", "3600"],
            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
        }],
        "volumes": [{"name": "scratch", "emptyDir": {"medium": "Memory"}}],
    });
    spec.as_object_mut()
        .unwrap()
        .extend(placement().as_object().unwrap().clone());
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "holder"}, "spec": spec,
    }))
    .unwrap();
    let pods: Api<Pod> = ns.api();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let running = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.phase.as_deref())
            == Some("Running")
    };
    wait_for(&pods, "holder", "pod holder Running", GUARD, running)
        .await
        .unwrap();

    let daemons = recorded_pids();
    assert_eq!(
        daemons.len(),
        4,
        "the node's daemons are recorded: {daemons:?}"
    );
    assert!(
        !processes_mentioning("containerd-shim-runc-v2").is_empty(),
        "a shim runs"
    );
    assert!(!node_mounts().is_empty(), "the pod's mounts exist");
    assert!(Path::new(&format!("/sys/class/net/{NODE_BRIDGE}")).exists());
    std::mem::forget(ns); // its namespace goes with the cluster's etcd

    let down = std::process::Command::new("bash")
        .arg(repo().join("scripts/cluster-down.sh"))
        .output()
        .expect("cluster-down runs");
    let log = String::from_utf8_lossy(&down.stderr);
    assert!(down.status.success(), "cluster-down failed: {log}");

    for (name, pid) in &daemons {
        assert!(!alive(*pid), "{name} (pid {pid}) still runs: {log}");
    }
    let shims: Vec<String> =
        processes_mentioning("-address /run/swappo/containerd/containerd.sock")
            .into_iter()
            .filter(|c| c.contains("containerd-shim"))
            .collect();
    assert!(shims.is_empty(), "shims left: {shims:?}");
    assert_eq!(node_mounts(), Vec::<String>::new(), "mounts left");
    let cgroups: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path().join("kubepods")))
        .filter(|p| p.exists())
        .collect();
    assert!(cgroups.is_empty(), "kubepods cgroups left: {cgroups:?}");
    assert!(
        !Path::new(&format!("/sys/class/net/{NODE_BRIDGE}")).exists(),
        "the bridge is gone"
    );
    let tables = nft(&["list", "tables"]);
    assert!(
        !tables.contains("swappo_fence") && !tables.contains("kube-proxy"),
        "nft tables left: {tables}"
    );
    let routes = std::fs::read_to_string("/proc/net/route").unwrap();
    assert!(!routes.contains(NODE_BRIDGE), "routes left: {routes}");
    assert!(
        !Path::new("/run/swappo").exists(),
        "the runtime state is gone"
    );
}
