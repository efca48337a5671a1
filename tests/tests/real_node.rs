//! The real node of the local cluster (`make cluster-up`: kubelet, containerd with Debian's runc,
//! a CNI bridge fenced off from the machine's uplink, kube-proxy, CoreDNS, a local-path volume
//! provisioner): pods from locally built images run, log, exec and get Ready by their probes;
//! Services and cluster DNS work between pods; a pod has no way out of the machine (shown by
//! its routing table and the host's fence rules, never by sending anything out); a claim binds
//! and its data survives the pod. Skipped when the node is not Ready, unless
//! `SWAPPO_REQUIRE_NODE` is set (as `make test` does).
//!
//! Traffic in these tests stays between pods on the node's bridge and the host: nothing is
//! sent to any other address.
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use std::time::Duration;
use swappo_testkit::node::{
    NODE_BRIDGE, NODE_NAME, STORAGE_CLASS, debian_pod, describe, exec, kubectl, real_node_client,
    run_ready,
};
use swappo_testkit::{TestNamespace, eventually, wait_for};

/// Failure guard for every wait: far above what the node needs (a pod from an imported image
/// starts in a second or two), so only a stuck node trips it.
const GUARD: Duration = Duration::from_secs(120);

fn phase(pod: Option<&Pod>) -> Option<String> {
    pod.and_then(|p| p.status.as_ref())
        .and_then(|s| s.phase.clone())
}

/// Creates the pod and waits until it has run to completion; panics with its state if it failed.
async fn run_to_completion(ns: &TestNamespace, pod: &Pod) {
    let pods: Api<Pod> = ns.api();
    let name = pod.metadata.name.clone().expect("a named pod");
    pods.create(&PostParams::default(), pod)
        .await
        .expect("pod created");
    let what = format!("pod {}/{name} finished", ns.name());
    let done = |p: Option<&Pod>| matches!(phase(p).as_deref(), Some("Succeeded" | "Failed"));
    let last = wait_for(&pods, &name, &what, GUARD, done).await;
    let finished = last.as_ref().ok().and_then(|p| phase(p.as_ref()));
    assert_eq!(
        finished.as_deref(),
        Some("Succeeded"),
        "{what}: {}",
        describe(ns, &name).await
    );
}

#[tokio::test]
async fn a_pod_from_a_locally_built_image_runs_logs_execs_and_is_ready_by_its_probe() {
    let Some(_client) = real_node_client().await else {
        return;
    };
    let ns = TestNamespace::new("node-pod-").await;
    let pod = debian_pod(
        "web",
        json!({"app": "web"}),
        "echo started on the real node; mkdir -p /tmp/www && echo ready > /tmp/www/ready \
         && exec busybox httpd -f -p 8080 -h /tmp/www",
        json!({"readinessProbe": {
            "httpGet": {"path": "/ready", "port": 8080},
            "periodSeconds": 1, "failureThreshold": 60,
        }}),
        json!({}),
    );
    let pod = run_ready(&ns, GUARD, &pod).await;

    let spec = pod.spec.as_ref().expect("a spec");
    assert_eq!(spec.node_name.as_deref(), Some(NODE_NAME));
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("a pod IP");
    assert!(
        ip.starts_with("10.246."),
        "the pod's address {ip} is on the node's bridge network"
    );
    let log = kubectl(&["-n", ns.name(), "logs", "web"]).await.unwrap();
    assert_eq!(log.trim(), "started on the real node");
    let version = exec(&ns, "web", &["cat", "/etc/debian_version"])
        .await
        .unwrap();
    assert!(
        version.starts_with("12."),
        "the image is Debian bookworm: {version}"
    );
    let id = exec(&ns, "web", &["id", "-u"]).await.unwrap();
    assert_eq!(id.trim(), "1000", "the pod's runAsUser applies");
}

#[tokio::test]
async fn a_pod_reaches_another_pod_through_its_service_by_cluster_dns_name() {
    let Some(client) = real_node_client().await else {
        return;
    };
    let ns = TestNamespace::new("node-svc-").await;
    let token = ns.name().to_owned();
    let server = debian_pod(
        "server",
        json!({"app": "server"}),
        &format!(
            "mkdir -p /tmp/www && echo {token} > /tmp/www/token \
             && exec busybox httpd -f -p 8080 -h /tmp/www"
        ),
        json!({"readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}),
        json!({}),
    );
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "server"},
        "spec": {"selector": {"app": "server"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }))
    .unwrap();
    let services: Api<Service> = Api::namespaced(client, ns.name());
    let service = services
        .create(&PostParams::default(), &service)
        .await
        .expect("service created");
    let cluster_ip = service
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP");
    let client_pod = debian_pod(
        "client",
        json!({"app": "client"}),
        "exec sleep 3600",
        json!({}),
        json!({}),
    );
    run_ready(&ns, GUARD, &server).await;
    run_ready(&ns, GUARD, &client_pod).await;

    // Cluster DNS answers for the API server's Service and this namespace's Service.
    let api = exec(
        &ns,
        "client",
        &["getent", "hosts", "kubernetes.default.svc.cluster.local"],
    )
    .await
    .unwrap();
    assert!(
        api.starts_with("10.96.0.1 "),
        "kubernetes.default resolves to the Service range's first address: {api}"
    );
    let name = format!("server.{}.svc.cluster.local", ns.name());
    let resolved = exec(&ns, "client", &["getent", "hosts", &name])
        .await
        .unwrap();
    assert!(
        resolved.starts_with(&format!("{cluster_ip} ")),
        "{name} resolves to its ClusterIP {cluster_ip}: {resolved}"
    );
    // A name outside the cluster is not resolved: CoreDNS has no upstream to ask (the query
    // goes only to the in-cluster DNS Service).
    let outside = exec(&ns, "client", &["getent", "hosts", "swappo-test.invalid"]).await;
    assert!(
        outside.is_err(),
        "an outside name must not resolve: {outside:?}"
    );
    // Pod -> Service (kube-proxy's DNAT) -> pod, by the short name from the pod's search path;
    // an HTTP/1.0 request from bash (busybox's wget crashes in this image). The Endpoints may
    // trail the server's readiness by a moment: retried within the guard.
    let request =
        "exec 3<>/dev/tcp/server/80 && printf 'GET /token HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3";
    let response = eventually("the server's token through its Service", GUARD, || async {
        exec(&ns, "client", &["timeout", "5", "bash", "-c", request])
            .await
            .ok()
    })
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.lines().last().unwrap_or_default();
    assert_eq!(body.trim(), token);
}

/// IPv4 routes of a pod's network namespace from `/proc/net/route`: (interface, destination,
/// mask) in hex as the kernel prints them.
fn ipv4_routes(table: &str) -> Vec<(String, String, String)> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 8).then(|| (f[0].to_owned(), f[1].to_owned(), f[7].to_owned()))
        })
        .collect()
}

#[tokio::test]
async fn a_pod_has_no_default_route_and_the_host_fence_drops_anything_leaving_the_bridge() {
    let Some(_client) = real_node_client().await else {
        return;
    };
    let ns = TestNamespace::new("node-fence-").await;
    let pod = debian_pod("probe", json!({}), "exec sleep 3600", json!({}), json!({}));
    run_ready(&ns, GUARD, &pod).await;

    // Read from the kernel's routing table: nothing is sent anywhere.
    let table = exec(&ns, "probe", &["cat", "/proc/net/route"])
        .await
        .unwrap();
    let routes = ipv4_routes(&table);
    assert!(!routes.is_empty(), "the pod has routes at all: {table}");
    assert!(
        routes
            .iter()
            .all(|(_, dest, mask)| !(dest == "00000000" && mask == "00000000")),
        "no default route in the pod: {table}"
    );
    // Exactly two routes: the bridge subnet 10.246.0.0/16 on-link and the Service range
    // 10.96.0.0/16 via the bridge's address (little-endian hex in /proc).
    let mut dests: Vec<(&str, &str)> = routes
        .iter()
        .map(|(_, d, m)| (d.as_str(), m.as_str()))
        .collect();
    dests.sort_unstable();
    assert_eq!(
        dests,
        vec![("0000600A", "0000FFFF"), ("0000F60A", "0000FFFF")],
        "{table}"
    );

    // The host side: the fence table drops whatever would be forwarded between the bridge
    // and another interface, and only the bridge forwards.
    let fence = std::process::Command::new("/usr/sbin/nft")
        .args(["list", "table", "inet", "swappo_fence"])
        .output()
        .expect("nft runs (scripts/node-deps.sh installs nftables)");
    let rules = String::from_utf8_lossy(&fence.stdout);
    assert!(fence.status.success(), "the fence table exists: {rules}");
    assert!(rules.contains("hook forward"), "{rules}");
    assert!(
        rules.contains(&format!(
            "iifname \"{NODE_BRIDGE}\" oifname != \"{NODE_BRIDGE}\""
        )) && rules.contains(&format!(
            "iifname != \"{NODE_BRIDGE}\" oifname \"{NODE_BRIDGE}\""
        )),
        "both directions are fenced: {rules}"
    );
    let drops = rules.lines().filter(|l| l.contains(" drop")).count();
    assert_eq!(drops, 2, "two drop rules: {rules}");
    let forwarding =
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{NODE_BRIDGE}/forwarding"))
            .unwrap();
    assert_eq!(forwarding.trim(), "1", "the bridge forwards between pods");
    // No masquerade for pods except kube-proxy's own (Service hairpin, marked packets).
    let ruleset = std::process::Command::new("/usr/sbin/nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    let ruleset = String::from_utf8_lossy(&ruleset.stdout);
    let mut table = "";
    for line in ruleset.lines() {
        if let Some(t) = line.strip_prefix("table ") {
            table = t;
        }
        if line.contains("masquerade") {
            assert!(
                table.starts_with("ip kube-proxy") || table.starts_with("ip6 kube-proxy"),
                "masquerade only in kube-proxy's tables, found in {table}: {line}"
            );
        }
    }
}

#[tokio::test]
async fn a_claim_binds_to_a_local_path_volume_owned_by_the_fs_group_and_outlives_its_pod() {
    let Some(client) = real_node_client().await else {
        return;
    };
    let ns = TestNamespace::new("node-pvc-").await;
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {
            "storageClassName": STORAGE_CLASS,
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "64Mi"}},
        },
    }))
    .unwrap();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, ns.name());
    claims
        .create(&PostParams::default(), &claim)
        .await
        .expect("claim created");
    // The broker's identity: uid/gid 999 with fsGroup 999, as the operator's pod spec has it.
    let volume_pod = |name: &str, script: &str| {
        debian_pod(
            name,
            json!({}),
            script,
            json!({"volumeMounts": [{"name": "data", "mountPath": "/data"}]}),
            json!({
                "securityContext": {
                    "runAsNonRoot": true, "runAsUser": 999, "runAsGroup": 999, "fsGroup": 999,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
            }),
        )
    };
    let token = ns.name().to_owned();
    run_to_completion(
        &ns,
        &volume_pod("writer", &format!("echo {token} > /data/token")),
    )
    .await;
    let bound = claims.get("data").await.unwrap();
    assert_eq!(bound.status.and_then(|s| s.phase).as_deref(), Some("Bound"));
    let pods: Api<Pod> = ns.api();
    pods.delete("writer", &DeleteParams::default())
        .await
        .expect("writer deleted");
    eventually("the writer pod gone", GUARD, || async {
        pods.get_opt("writer")
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await
    .unwrap();

    run_to_completion(
        &ns,
        &volume_pod(
            "reader",
            "cat /data/token; stat -c '%u:%g' /data/token /data",
        ),
    )
    .await;
    let log = kubectl(&["-n", ns.name(), "logs", "reader"]).await.unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines,
        vec![token.as_str(), "999:999", "0:999"],
        "the data survived the pod; the file is uid 999's and the volume the fsGroup's"
    );
}
