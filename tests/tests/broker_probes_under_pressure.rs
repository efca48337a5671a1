//! Issue 19, proof 1: the seed's incident, reproduced and fixed on the real node.
//!
//! The seed's broker (`Swapppo/Swappo-DevOps`, `depricated/k8s-gke/rabbitmq.yaml` at commit
//! ec668a27c51d0c641fe47a82b1bfc94e0f1ee173: a Deployment with the default RollingUpdate, a
//! ReadWriteOnce claim, resources 250m/256Mi requested and 500m/512Mi limits, and exec probes
//! `rabbitmq-diagnostics -q ping` (liveness, 60/30) and `rabbitmq-diagnostics -q check_running`
//! (readiness, 20/10) with Kubernetes' default 1 s timeout) runs next to the broker pod the
//! operator's builder makes (`operator/src/builders/broker.rs`), under the same controlled CPU
//! pressure, and both are watched for the same window.
//!
//! The pressure is a fault, not load left to chance: each broker container gets a CPU limit
//! (a CFS quota) and a neighbour pod on the node runs busy loops. Every `rabbitmq-diagnostics`
//! call boots an Erlang VM that needs 0.7 to 1.3 s of CPU (measured in the pod: user + sys,
//! bench/results/broker_probes.md); under a quota of 0.5 CPU that is at least 1.4 s of wall
//! time, so it can never finish within the 1 s timeout, whatever else the machine does. Our
//! probes are TCP connects to the AMQP port, which the kernel completes from the listen
//! backlog without the Erlang VM being scheduled at all, within a 5 s timeout. A busier
//! machine only makes the seed's probes fail more; it cannot make ours spawn a VM.
//!
//! `make bench-probes` runs the sweep below (hog loops x CPU limits) and writes the breaking
//! point to bench/results/broker_probes.md.
//!
//! Traffic: the kubelet's probes, `kubectl exec` into the pods and the kubelet's probe metrics
//! read through the API server (on the node's bridge address); nothing else, nowhere else.
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, PersistentVolumeClaim, Pod, PodTemplateSpec, Secret,
};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, Resource};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;
use swappo_operator::builders::broker;
use swappo_operator::builders::secret::{Credentials, Endpoint, credentials_secret};
use swappo_operator::crd::SwappoMessaging;
use swappo_testkit::node::{
    NODE_NAME, STORAGE_CLASS, debian_pod, describe, exec, kubectl, merge, node_has_image,
    node_required, placement, pod_ready, real_node_client,
};
use swappo_testkit::{TestNamespace, eventually};

/// The broker image both configurations run (images/build.sh; `make test` imports it).
const RABBITMQ_IMAGE: &str = "swappo.local/rabbitmq:3.10.8-management";

/// The label every pod of a trial carries, valued with the trial's name.
const TRIAL_LABEL: &str = "swappo.io/probe-trial";

/// How long both brokers are watched once ours is Ready: three periods of the seed's liveness
/// probe (30 s), so its `failureThreshold` of 3 can be reached within the window.
const WINDOW: Duration = Duration::from_secs(90);

/// How often the pods' Ready condition and restart counts are read during the window; the
/// NotReady seconds are the samples found not Ready times this period.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Failure guard for a broker to boot and for pods to go: a broker under a 250m quota and a
/// hog boots in about a minute here; our startup probe allows 10 s + 30 x 10 s.
const BOOT_GUARD: Duration = Duration::from_secs(330);

/// The CPU request of the neighbour hog pod: twice a broker's 250m, so its busy loops weigh
/// twice as much as a broker in the CPU scheduler (cgroup shares follow requests).
const HOG_REQUEST: &str = "500m";

/// The seed's CPU limit (its manifest's `limits.cpu`).
const SEED_CPU_LIMIT: &str = "500m";

/// A CPU pressure on the broker: its container's CPU limit and a neighbour's busy loops.
#[derive(Clone, Debug)]
struct Pressure {
    /// The broker container's `limits.cpu` (a CFS quota), `None` for no limit.
    cpu_limit: Option<String>,
    /// Busy loops (`while :; do :; done`) in a neighbour pod on the node.
    hog_loops: u32,
}

impl Pressure {
    fn cpu_limit_label(&self) -> &str {
        self.cpu_limit.as_deref().unwrap_or("none")
    }
}

/// Which broker a trial runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Config {
    /// The seed's manifest.
    Seed,
    /// The operator's builder's.
    Ours,
}

/// One broker under watch.
#[derive(Clone, Debug)]
struct Trial {
    name: String,
    config: Config,
    cpu_limit: Option<String>,
}

impl Trial {
    fn new(name: &str, config: Config, cpu_limit: Option<&str>) -> Self {
        Self {
            name: name.to_owned(),
            config,
            cpu_limit: cpu_limit.map(str::to_owned),
        }
    }

    fn selector(&self) -> String {
        format!("{TRIAL_LABEL}={}", self.name)
    }
}

/// What a window saw of one trial.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Counts {
    /// Container restarts during the window (all the trial's pods).
    restarts: i32,
    /// Samples with no Ready pod, times [`SAMPLE_EVERY`].
    not_ready_seconds: u64,
    /// Probes the kubelet ran during the window, and how many of them failed (its
    /// `prober_probe_total` counter: the `Unhealthy` events are rate-limited per pod, about 25,
    /// so they undercount a long run).
    probes: ProbeCounts,
    /// The message of a failed probe's `Unhealthy` event, for the report.
    example_failure: Option<String>,
}

/// The resources block of both configurations: the seed's requests and memory limit, with
/// the CPU limit of the pressure.
fn resources(cpu_limit: Option<&str>) -> Value {
    let mut limits = json!({"memory": "512Mi"});
    if let Some(cpu) = cpu_limit {
        limits["cpu"] = json!(cpu);
    }
    json!({"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": limits})
}

/// The seed's broker as its manifest declares it (path and commit in the module doc), changed
/// only where this test bed needs it: the local image (never pulled) on the real node, the
/// local-path StorageClass, the password Secret created here, the trial's label and CPU limit.
fn seed_objects(trial: &Trial) -> (PersistentVolumeClaim, Secret, Deployment) {
    let name = &trial.name;
    let claim = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": format!("{name}-pvc")},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            "storageClassName": STORAGE_CLASS,
        },
    }))
    .expect("a valid claim");
    let secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("{name}-secrets")},
        "stringData": {"rabbitmq-password": "seed-password-for-the-probe-trial"},
    }))
    .expect("a valid Secret");
    let labels = json!({"app": name, TRIAL_LABEL: name});
    let mut pod_spec = json!({
        "containers": [{
            "name": "rabbitmq",
            "image": RABBITMQ_IMAGE,
            "imagePullPolicy": "Never",
            "ports": [
                {"containerPort": 5672, "name": "amqp"},
                {"containerPort": 15672, "name": "management"},
            ],
            "env": [
                {"name": "RABBITMQ_DEFAULT_USER", "value": "swappo_user"},
                {"name": "RABBITMQ_DEFAULT_PASS", "valueFrom": {"secretKeyRef": {
                    "name": format!("{name}-secrets"), "key": "rabbitmq-password"}}},
            ],
            "volumeMounts": [{"name": "rabbitmq-storage", "mountPath": "/var/lib/rabbitmq"}],
            "resources": resources(trial.cpu_limit.as_deref()),
            // The seed's probes, verbatim: no timeoutSeconds, so Kubernetes' default of 1 s.
            "livenessProbe": {
                "exec": {"command": ["rabbitmq-diagnostics", "-q", "ping"]},
                "initialDelaySeconds": 60,
                "periodSeconds": 30,
            },
            "readinessProbe": {
                "exec": {"command": ["rabbitmq-diagnostics", "-q", "check_running"]},
                "initialDelaySeconds": 20,
                "periodSeconds": 10,
            },
        }],
        "volumes": [{"name": "rabbitmq-storage",
                     "persistentVolumeClaim": {"claimName": format!("{name}-pvc")}}],
    });
    merge(&mut pod_spec, placement());
    let deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        // No `strategy`: the seed's manifest has none, so RollingUpdate.
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }))
    .expect("a valid Deployment");
    (claim, secret, deployment)
}

/// The `SwappoMessaging` our broker is built from: the local image and StorageClass, and the
/// seed's resources with the trial's CPU limit.
fn our_resource(trial: &Trial, namespace: &str) -> SwappoMessaging {
    serde_json::from_value(json!({
        "apiVersion": "swappo.io/v1alpha1", "kind": "SwappoMessaging",
        "metadata": {"name": trial.name, "namespace": namespace},
        "spec": {"broker": {
            "image": RABBITMQ_IMAGE,
            "storage": {"storageClassName": STORAGE_CLASS},
            "resources": resources(trial.cpu_limit.as_deref()),
        }},
    }))
    .expect("a valid SwappoMessaging")
}

/// THE one dependency on the builder's workload: the broker's pod template as the operator
/// would apply it (containers, probes, resources, security context, volumes). When the broker
/// moves from a Deployment to a StatefulSet, only this line changes.
fn our_pod_template(sm: &SwappoMessaging) -> PodTemplateSpec {
    broker::pod_template(sm, None)
}

/// Our broker's objects from the builders: the credentials Secret, the ConfigMap, the claim and
/// one pod from the pod template. A bare pod, so the trial does not depend on which workload
/// kind runs the template; no owner references (there is no `SwappoMessaging` object here for
/// garbage collection to find); placed on the real node, labelled with the trial.
fn our_objects(trial: &Trial, namespace: &str) -> (Secret, ConfigMap, PersistentVolumeClaim, Pod) {
    let sm = our_resource(trial, namespace);
    let (credentials, _) = Credentials::keep_or_generate(None, true);
    let mut secret = credentials_secret(&sm, &credentials, &Endpoint::of(&sm));
    let mut config_map = broker::config_map(&sm);
    let mut claim = broker::pvc(&sm);
    secret.metadata.owner_references = None;
    config_map.metadata.owner_references = None;
    claim.metadata.owner_references = None;

    let template = our_pod_template(&sm);
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(TRIAL_LABEL.to_owned(), trial.name.clone());
    let mut spec = serde_json::to_value(template.spec.expect("the template has a pod spec"))
        .expect("a pod spec serializes");
    merge(&mut spec, placement());
    for list in ["containers", "initContainers"] {
        for c in spec[list].as_array_mut().into_iter().flatten() {
            c["imagePullPolicy"] = json!("Never");
        }
    }
    let pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("{}-rabbitmq", trial.name),
            "labels": labels,
            "annotations": template.metadata.and_then(|m| m.annotations),
        },
        "spec": spec,
    }))
    .expect("a valid pod");
    (secret, config_map, claim, pod)
}

async fn create<K>(ns: &TestNamespace, object: &K)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::Serialize
        + k8s_openapi::serde::de::DeserializeOwned,
    <K as Resource>::DynamicType: Default,
{
    ns.api::<K>()
        .create(&PostParams::default(), object)
        .await
        .unwrap_or_else(|e| panic!("create {:?}: {e}", object.meta().name));
}

/// Starts the trial's broker (it boots in the background).
async fn start(ns: &TestNamespace, trial: &Trial) {
    match trial.config {
        Config::Seed => {
            let (claim, secret, deployment) = seed_objects(trial);
            create(ns, &claim).await;
            create(ns, &secret).await;
            create(ns, &deployment).await;
        }
        Config::Ours => {
            let (secret, config_map, claim, pod) = our_objects(trial, ns.name());
            create(ns, &secret).await;
            create(ns, &config_map).await;
            create(ns, &claim).await;
            create(ns, &pod).await;
        }
    }
}

/// The neighbour: `loops` busy loops in one pod on the node, requesting [`HOG_REQUEST`] and
/// no CPU limit, so it may take both cores. Created and deleted between windows.
fn hog_pod(loops: u32) -> Pod {
    let script =
        format!("i=0; while [ $i -lt {loops} ]; do (while :; do :; done) & i=$((i+1)); done; wait");
    debian_pod(
        "hog",
        json!({"app": "hog"}),
        &script,
        json!({"resources": {
            "requests": {"cpu": HOG_REQUEST, "memory": "16Mi"},
            "limits": {"memory": "64Mi"},
        }}),
        json!({"terminationGracePeriodSeconds": 0}),
    )
}

/// Replaces the hog with one of `loops` loops (none for 0); waits until it runs.
async fn set_hog(ns: &TestNamespace, loops: u32) {
    remove_hog(ns).await;
    if loops == 0 {
        return;
    }
    let pods: Api<Pod> = ns.api();
    pods.create(&PostParams::default(), &hog_pod(loops))
        .await
        .expect("hog created");
    let running = || async {
        let pod = pods.get_opt("hog").await.ok().flatten();
        let phase = pod.as_ref().and_then(|p| p.status.as_ref()?.phase.clone());
        (phase.as_deref() == Some("Running")).then_some(())
    };
    if let Err(e) = eventually("the hog pod running", BOOT_GUARD, running).await {
        panic!("{e}: {}", describe(ns, "hog").await);
    }
}

/// Deletes the hog at once and waits until it is gone (its loops stop with it).
async fn remove_hog(ns: &TestNamespace) {
    let pods: Api<Pod> = ns.api();
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    match pods.delete("hog", &now).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return,
        Err(e) => panic!("delete the hog: {e}"),
    }
    let gone = || async { matches!(pods.get_opt("hog").await, Ok(None)).then_some(()) };
    eventually("the hog pod gone", BOOT_GUARD, gone)
        .await
        .expect("the hog goes");
}

async fn trial_pods(ns: &TestNamespace, trial: &Trial) -> Vec<Pod> {
    ns.api::<Pod>()
        .list(&ListParams::default().labels(&trial.selector()))
        .await
        .expect("pods listed")
        .items
}

fn restarts(pods: &[Pod]) -> i32 {
    pods.iter()
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .map(|c| c.restart_count)
        .sum()
}

/// Waits until every one of `trials` has a Ready pod.
async fn wait_ready(ns: &TestNamespace, trials: &[&Trial]) {
    for trial in trials {
        let ready = || async {
            trial_pods(ns, trial)
                .await
                .iter()
                .any(|p| pod_ready(Some(p)))
                .then_some(())
        };
        let what = format!("broker {} Ready", trial.name);
        if let Err(e) = eventually(&what, BOOT_GUARD, ready).await {
            let pods = trial_pods(ns, trial).await;
            let name = pods
                .first()
                .and_then(|p| p.metadata.name.clone())
                .unwrap_or_default();
            panic!("{e}: {}", describe(ns, &name).await);
        }
    }
}

/// The message of an `Unhealthy` event (a failed probe) of one of `pods`, if any.
async fn unhealthy_message(ns: &TestNamespace, pods: &[String]) -> Option<String> {
    let events: Api<Event> = ns.api();
    let list = events
        .list(&ListParams::default().fields("reason=Unhealthy"))
        .await
        .expect("events listed");
    list.items
        .into_iter()
        .filter(|e| {
            e.involved_object
                .name
                .as_ref()
                .is_some_and(|n| pods.contains(n))
        })
        .find_map(|e| e.message)
}

/// Probes run and failed, from the kubelet's `prober_probe_total`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ProbeCounts {
    run: u64,
    failed: u64,
}

/// The kubelet's probe counters (`/metrics/probes`, read through the API server's node proxy)
/// of the pods of `namespace`, keyed by pod name.
async fn kubelet_probe_counts(namespace: &str) -> BTreeMap<String, ProbeCounts> {
    let path = format!("/api/v1/nodes/{NODE_NAME}/proxy/metrics/probes");
    let text = kubectl(&["get", "--raw", &path])
        .await
        .expect("the kubelet's probe metrics");
    parse_probe_counts(&text, namespace)
}

/// `prober_probe_total{...,namespace="ns",pod="p",...,result="failed"} 3` lines summed per pod
/// of `namespace` (the Prometheus text format the kubelet serves).
fn parse_probe_counts(text: &str, namespace: &str) -> BTreeMap<String, ProbeCounts> {
    let mut out: BTreeMap<String, ProbeCounts> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("prober_probe_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let label = |key: &str| {
            labels
                .split("\",")
                .find_map(|kv| kv.strip_prefix(&format!("{key}=\"")))
                .map(|v| v.trim_end_matches('"'))
        };
        if label("namespace") != Some(namespace) {
            continue;
        }
        let n = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        let entry = out
            .entry(label("pod").unwrap_or_default().to_owned())
            .or_default();
        entry.run += n;
        if label("result") == Some("failed") {
            entry.failed += n;
        }
    }
    out
}

fn sum_probes(counts: &BTreeMap<String, ProbeCounts>, pods: &[String]) -> ProbeCounts {
    pods.iter()
        .filter_map(|p| counts.get(p))
        .fold(ProbeCounts::default(), |a, c| ProbeCounts {
            run: a.run + c.run,
            failed: a.failed + c.failed,
        })
}

/// Watches `trials` for [`WINDOW`]: per trial the restarts, the seconds without a Ready pod and
/// the failed probes the kubelet reported.
async fn observe(ns: &TestNamespace, trials: &[&Trial]) -> Vec<Counts> {
    let mut names: Vec<Vec<String>> = vec![Vec::new(); trials.len()];
    let mut first_restarts = Vec::new();
    let mut counts = vec![Counts::default(); trials.len()];
    let probes_before = kubelet_probe_counts(ns.name()).await;
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    let samples = WINDOW.as_secs() / SAMPLE_EVERY.as_secs();
    for sample in 0..samples {
        tick.tick().await;
        for (i, trial) in trials.iter().enumerate() {
            let pods = trial_pods(ns, trial).await;
            for p in &pods {
                let name = p.metadata.name.clone().unwrap_or_default();
                if !names[i].contains(&name) {
                    names[i].push(name);
                }
            }
            if sample == 0 {
                first_restarts.push(restarts(&pods));
            }
            counts[i].restarts = restarts(&pods) - first_restarts[i];
            if !pods.iter().any(|p| pod_ready(Some(p))) {
                counts[i].not_ready_seconds += SAMPLE_EVERY.as_secs();
            }
        }
    }
    let probes_after = kubelet_probe_counts(ns.name()).await;
    for (i, c) in counts.iter_mut().enumerate() {
        let (before, after) = (
            sum_probes(&probes_before, &names[i]),
            sum_probes(&probes_after, &names[i]),
        );
        c.probes = ProbeCounts {
            run: after.run.saturating_sub(before.run),
            failed: after.failed.saturating_sub(before.failed),
        };
        if c.probes.failed > 0 {
            c.example_failure = unhealthy_message(ns, &names[i]).await;
        }
    }
    counts
}

/// `rabbitmq-diagnostics -q ping` timed in the seed's container (the cgroup its probes run
/// in): (wall, user + sys CPU) seconds of each of `runs` calls, `None` for a call that could not
/// run (the container restarting).
async fn time_cli(ns: &TestNamespace, trial: &Trial, runs: usize) -> Vec<Option<(f64, f64)>> {
    let mut out = Vec::new();
    for _ in 0..runs {
        let pods = trial_pods(ns, trial).await;
        let Some(pod) = pods.first().and_then(|p| p.metadata.name.clone()) else {
            out.push(None);
            continue;
        };
        let script =
            "TIMEFORMAT='%R %U %S'; { time rabbitmq-diagnostics -q ping >/dev/null 2>&1; } 2>&1";
        let timed = exec(ns, &pod, &["bash", "-c", script]).await.ok();
        out.push(timed.and_then(|t| {
            let v: Vec<f64> = t
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (v.len() == 3).then(|| (v[0], v[1] + v[2]))
        }));
    }
    out
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// The real node with the broker image on it, or `None` (skipped, saying why) when the node is
/// not there or lacks the image and `SWAPPO_REQUIRE_NODE` is unset.
async fn node_with_broker_image() -> Option<Client> {
    let client = real_node_client().await?;
    let present = || async {
        node_has_image(&client, RABBITMQ_IMAGE)
            .await
            .expect("the node's status is readable")
            .then_some(())
    };
    if present().await.is_some() {
        return Some(client);
    }
    let why = format!("the node has no image {RABBITMQ_IMAGE} (run `make images`)");
    if node_required() {
        // An image imported just now shows in the node's status at the kubelet's next update.
        eventually(
            &format!("{RABBITMQ_IMAGE} on the node"),
            BOOT_GUARD,
            present,
        )
        .await
        .unwrap_or_else(|e| panic!("SWAPPO_REQUIRE_NODE is set but {why}: {e}"));
        return Some(client);
    }
    eprintln!("skipped: {why}");
    None
}

/// The broker's log says "Server startup complete": it booted, whatever its probes said. The
/// current container's log or, after a restart by the liveness probe, the previous one's.
async fn booted(ns: &TestNamespace, trial: &Trial) -> bool {
    let selector = trial.selector();
    for previous in [false, true] {
        let mut args = vec!["-n", ns.name(), "logs", "-l", &selector, "--tail=-1"];
        if previous {
            args.push("--previous");
        }
        if kubectl(&args)
            .await
            .is_ok_and(|log| log.contains("Server startup complete"))
        {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn under_a_cpu_quota_and_a_neighbours_hog_the_seeds_exec_probes_fail_while_ours_stay_ready() {
    if node_with_broker_image().await.is_none() {
        return;
    }
    let ns = TestNamespace::new("probes-").await;
    // The pressure: a 250m CPU quota on the seed's broker (the CLI's 0.7 s or more of CPU
    // needs at least 2.8 s of wall time under it: it cannot fit in the 1 s timeout on any
    // machine; under the seed's own 500m a quiet, fast machine fitted it 9 times of 10, 2026-12-01),
    // and a neighbour with two busy loops, one per core. Ours at the same 250m quota
    // (`ours-250m`) and at the seed's own 500m.
    let pressure = Pressure {
        cpu_limit: Some(SEED_CPU_LIMIT.to_owned()),
        hog_loops: 2,
    };
    let seed = Trial::new("seed", Config::Seed, Some("250m"));
    let ours = Trial::new("ours", Config::Ours, pressure.cpu_limit.as_deref());
    let ours_tighter = Trial::new("ours-250m", Config::Ours, Some("250m"));
    set_hog(&ns, pressure.hog_loops).await;
    for trial in [&seed, &ours, &ours_tighter] {
        start(&ns, trial).await;
    }
    wait_ready(&ns, &[&ours, &ours_tighter]).await;
    // The seed's broker boots under this pressure (as fast as ours under the same quota), so
    // what fails below is its probes, not the broker.
    let seed_booted = eventually("the seed's broker booted", BOOT_GUARD, || async {
        booted(&ns, &seed).await.then_some(())
    })
    .await;
    let counts = observe(&ns, &[&seed, &ours, &ours_tighter]).await;
    remove_hog(&ns).await;

    let [seed_counts, ours_counts, tighter_counts] = &counts[..] else {
        unreachable!("three trials")
    };
    eprintln!(
        "pressure: CPU limit seed 250m, ours {}, ours-250m 250m; hog {} loops ({HOG_REQUEST} requested); \
         window {} s",
        pressure.cpu_limit_label(),
        pressure.hog_loops,
        WINDOW.as_secs()
    );
    for (trial, c) in [&seed, &ours, &ours_tighter].iter().zip(&counts) {
        eprintln!(
            "{:<10} restarts {}, NotReady {} s of {} s, probes failed {} of {}{}",
            trial.name,
            c.restarts,
            c.not_ready_seconds,
            WINDOW.as_secs(),
            c.probes.failed,
            c.probes.run,
            c.example_failure
                .as_deref()
                .map(|m| format!(" (\"{m}\")"))
                .unwrap_or_default()
        );
    }
    assert!(
        seed_booted.is_ok(),
        "the seed's broker booted (its log says so), so what fails is its probe: {seed_booted:?}"
    );
    assert!(
        seed_counts.restarts > 0 || seed_counts.not_ready_seconds > 0,
        "the seed's exec probes fail under this pressure: {seed_counts:?}"
    );
    assert!(
        seed_counts
            .example_failure
            .as_deref()
            .is_some_and(|m| m.contains("timed out")),
        "the seed's probes fail by their 1 s timeout: {seed_counts:?}"
    );
    for (trial, c) in [(&ours, ours_counts), (&ours_tighter, tighter_counts)] {
        assert_eq!(
            (c.restarts, c.not_ready_seconds),
            (0, 0),
            "{} stays Ready with no restart for the whole window: {c:?}",
            trial.name
        );
    }
}

/// `make bench-probes`: the sweep. For each CPU limit (`BENCH_PROBES_LIMITS`, default
/// `none 500m 250m`; `none` removes the seed's limit, its only change) both brokers boot, then
/// for each hog level (`BENCH_PROBES_HOGS`, default `0 1 2 4` loops) the CLI is timed three
/// times in the seed's container and both are watched for [`WINDOW`]. Writes a markdown
/// report to `BENCH_OUT` (conditions from `BENCH_CONDITIONS`).
#[tokio::test]
#[ignore = "benchmark: make bench-probes"]
async fn sweep_of_cpu_pressure_against_both_brokers_probes() {
    if node_with_broker_image().await.is_none() {
        return;
    }
    let list = |var: &str, default: &str| -> Vec<String> {
        std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| default.to_owned())
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let limits = list("BENCH_PROBES_LIMITS", "none 500m 250m");
    let hogs: Vec<u32> = list("BENCH_PROBES_HOGS", "0 1 2 4")
        .iter()
        .map(|h| h.parse().expect("BENCH_PROBES_HOGS: numbers of loops"))
        .collect();
    let mut rows = Vec::new();
    for limit in &limits {
        let cpu_limit = (limit != "none").then_some(limit.as_str());
        let ns = TestNamespace::new("probes-bench-").await;
        let seed = Trial::new("seed", Config::Seed, cpu_limit);
        let ours = Trial::new("ours", Config::Ours, cpu_limit);
        start(&ns, &seed).await;
        start(&ns, &ours).await;
        wait_ready(&ns, &[&ours]).await;
        for &hog_loops in &hogs {
            let pressure = Pressure {
                cpu_limit: cpu_limit.map(str::to_owned),
                hog_loops,
            };
            set_hog(&ns, hog_loops).await;
            let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
            let timed = time_cli(&ns, &seed, 3).await;
            let counts = observe(&ns, &[&seed, &ours]).await;
            let wall = median(timed.iter().flatten().map(|t| t.0).collect());
            let cpu = median(timed.iter().flatten().map(|t| t.1).collect());
            let row = (pressure, load, wall, cpu, timed, counts);
            eprintln!("{row:?}");
            rows.push(row);
        }
        remove_hog(&ns).await;
        // Free the node for the next limit: the pods go at once (their data is not kept).
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        for d in ["seed"] {
            let _ = ns.api::<Deployment>().delete(d, &now).await;
        }
        let _ = ns
            .api::<Pod>()
            .delete_collection(&now, &ListParams::default())
            .await;
    }

    let fmt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Broker probes under CPU pressure: the seed's exec probes vs the operator's\n\n\
         Run by `make bench-probes` (tests/tests/broker_probes_under_pressure.rs, the sweep). \
         The seed's broker (`Swapppo/Swappo-DevOps` `depricated/k8s-gke/rabbitmq.yaml`: exec \
         probes `rabbitmq-diagnostics -q ping` (liveness 60/30) and `-q check_running` \
         (readiness 20/10), default 1 s timeout, RollingUpdate, RWO claim) and the operator's \
         broker pod (TCP probes on AMQP, 5 s timeout, no liveness probe) run side by side on the \
         real node, image `{RABBITMQ_IMAGE}`, both with the seed's resources (250m/256Mi \
         requested, 512Mi memory limit) and the CPU limit of the row (`none`: the seed's 500m \
         removed). The hog is a neighbour pod on the node with that many busy loops, \
         {HOG_REQUEST} CPU requested, no CPU limit. Per row: `rabbitmq-diagnostics -q ping` \
         timed 3 times inside the seed's container (median wall and user+sys CPU; the probe's \
         cost), then both brokers watched for {} s: container restarts, seconds without a Ready \
         pod (sampled every {} s) and probes failed of probes run (the kubelet's \
         `prober_probe_total`).\n\n{}\n",
        WINDOW.as_secs(),
        SAMPLE_EVERY.as_secs(),
        std::env::var("BENCH_CONDITIONS").unwrap_or_default()
    );
    let _ = writeln!(
        md,
        "| CPU limit | hog loops | CLI ping time s (median of 3) | CLI CPU s | load avg (1 min) | \
         seed restarts | seed NotReady s | seed probes failed | ours restarts | ours NotReady s | \
         ours probes failed |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (pressure, load, wall, cpu, _, counts) in &rows {
        let (s, o) = (&counts[0], &counts[1]);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} of {} | {} | {} | {} of {} |",
            pressure.cpu_limit_label(),
            pressure.hog_loops,
            fmt(*wall),
            fmt(*cpu),
            load.split_whitespace().next().unwrap_or("?"),
            s.restarts,
            s.not_ready_seconds,
            s.probes.failed,
            s.probes.run,
            o.restarts,
            o.not_ready_seconds,
            o.probes.failed,
            o.probes.run
        );
    }
    let broken: Vec<String> = rows
        .iter()
        .filter(|r| r.5[0].restarts > 0 || r.5[0].not_ready_seconds > 0)
        .map(|r| format!("{} / {} loops", r.0.cpu_limit_label(), r.0.hog_loops))
        .collect();
    let ours_failed: Vec<String> = rows
        .iter()
        .filter(|r| r.5[1].restarts > 0 || r.5[1].not_ready_seconds > 0)
        .map(|r| format!("{} / {} loops", r.0.cpu_limit_label(), r.0.hog_loops))
        .collect();
    let _ = writeln!(
        md,
        "\nThe seed's probes failed (restart or NotReady) at: {}.\n\
         Ours failed at: {}.\n",
        if broken.is_empty() {
            "none".to_owned()
        } else {
            broken.join(", ")
        },
        if ours_failed.is_empty() {
            "none".to_owned()
        } else {
            ours_failed.join(", ")
        },
    );
    if let Some(example) = rows.iter().find_map(|r| r.5[0].example_failure.clone()) {
        let _ = writeln!(
            md,
            "A failed probe of the seed's, as the kubelet reported it: `{example}`\n"
        );
    }
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| "broker_probes.md".to_owned());
    std::fs::write(&out, md).unwrap_or_else(|e| panic!("write {out}: {e}"));
    eprintln!("wrote {out}");
}

#[test]
fn the_kubelets_probe_counters_are_summed_per_pod_of_the_namespace_only() {
    let text = "# HELP prober_probe_total Cumulative number of a liveness, readiness or startup probe for a container by result.\n\
        # TYPE prober_probe_total counter\n\
        prober_probe_total{container=\"rabbitmq\",namespace=\"a\",pod=\"seed-1\",pod_uid=\"u\",probe_type=\"Liveness\",result=\"failed\"} 3\n\
        prober_probe_total{container=\"rabbitmq\",namespace=\"a\",pod=\"seed-1\",pod_uid=\"u\",probe_type=\"Readiness\",result=\"failed\"} 9\n\
        prober_probe_total{container=\"rabbitmq\",namespace=\"a\",pod=\"seed-1\",pod_uid=\"u\",probe_type=\"Readiness\",result=\"successful\"} 2\n\
        prober_probe_total{container=\"rabbitmq\",namespace=\"a\",pod=\"ours\",pod_uid=\"v\",probe_type=\"Readiness\",result=\"successful\"} 7\n\
        prober_probe_total{container=\"rabbitmq\",namespace=\"b\",pod=\"seed-1\",pod_uid=\"w\",probe_type=\"Readiness\",result=\"failed\"} 100\n\
        prober_probe_duration_seconds_count{container=\"rabbitmq\",namespace=\"a\",pod=\"ours\",probe_type=\"Readiness\"} 7\n";
    let counts = parse_probe_counts(text, "a");
    assert_eq!(
        counts["seed-1"],
        ProbeCounts {
            run: 14,
            failed: 12
        }
    );
    assert_eq!(counts["ours"], ProbeCounts { run: 7, failed: 0 });
    assert_eq!(counts.len(), 2);
    let both = sum_probes(&counts, &["seed-1".to_owned(), "gone".to_owned()]);
    assert_eq!(
        both,
        ProbeCounts {
            run: 14,
            failed: 12
        }
    );
}
