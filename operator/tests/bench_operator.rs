//! `make bench-operator` (ignored in `cargo test`): the operator at scale on the local control
//! plane. For each count N (`BENCH_SCALES`, default `1 100 1000`), in a fresh namespace: N
//! `SwappoMessaging` objects with a managed broker (the operator creates each one's Secret,
//! ConfigMap, claim, StatefulSet, NetworkPolicy and Service; kwok plays the kubelet on fake nodes added for the
//! run, 100 broker pods per node) and one classic queue with dead-lettering each, declared on
//! the local RabbitMQ (dialled through `--broker-address-override`, with one shared
//! credentials Secret). The operator is the release binary (`SWAPPO_OPERATOR_BIN`), started
//! once all objects exist, watching that namespace only, with its default settings.
//!
//! Measured per N: seconds from the operator's start until every object has a status and until
//! every object is Ready; its reconcile durations (its own histogram); its peak resident
//! memory (VmHWM) and its resident memory at rest; then, over a rest window of `BENCH_REST`
//! seconds (default 130: every object's 60 s recheck runs twice), its API writes (its own
//! counter and, independently, the resourceVersions of every object in the namespace), the
//! Events it published, its reconciles and CPU time, and the GET/LIST requests the API server
//! counted on the kinds it reads. Writes `BENCH_OUT` (markdown).
//!
//! Two cases (`BENCH_CASES`, default `queues consumers`): `queues` as above; `consumers` adds
//! to each resource one consumer Deployment (kwok runs its pods) and, once all are Ready, a
//! backlog of 150 messages in its queue (the autoscaler scales each to 2 replicas); after the
//! rest window, [`REACTION_SAMPLES`] queues get 300 more messages each while every resource
//! keeps polling, and the seconds from the confirmed publish to the scale patch (seen by a
//! watch) give the scale reaction p50/p95. Both cases report the AMQP connections the
//! operator opened (its `amqp_connections_opened_total`).
mod common;

use common::*;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Secret, Service,
};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use swappo_operator::crd::{QueueType, SwappoMessaging};
use swappo_operator::fixtures::TestExt;
use swappo_testkit::{Management, TestNamespace};

/// API calls the bench itself makes at once while creating or deleting objects.
const PARALLEL: usize = 16;
/// Broker pods per fake node: under kwok's (and the kubelet's) default of 110 pods per node,
/// and 100 x the broker's 250m CPU request fits the node's 32 CPUs.
const PODS_PER_NODE: usize = 100;
/// A guard against a run that never converges, not a timing assertion: the bench reports how
/// far it got instead of hanging.
const CONVERGE_GUARD: Duration = Duration::from_secs(1200);
/// Messages put in each queue of the consumers case once all are Ready: 1.5 x
/// messagesPerReplica (100), so each consumer is scaled from 1 to 2 replicas.
const BACKLOG: u32 = 150;
/// Queues that get 300 more messages (to 4.5 x messagesPerReplica: 5 replicas) to time the
/// scale reaction while every resource polls.
const REACTION_SAMPLES: usize = 20;
/// Label on the volumes and nodes this benchmark adds (cluster-scoped: removed at the end).
const BENCH_LABEL: &str = "swappo.dev/bench-operator";
/// The kinds the operator reads, as the API server names them in `apiserver_request_total`.
const READ_KINDS: [&str; 10] = [
    "swappomessagings",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
    "statefulsets",
    "networkpolicies",
    "deployments",
    "services",
    "replicasets",
    "pods",
];

/// One scale's figures.
#[derive(Debug, Default)]
struct Figures {
    n: usize,
    consumers: bool,
    amqp_opened: f64,
    reaction_p50_s: Option<f64>,
    reaction_p95_s: Option<f64>,
    all_status_s: Option<f64>,
    all_ready_s: Option<f64>,
    reconciles_to_ready: f64,
    errors_to_ready: f64,
    reconcile_mean_ms: f64,
    reconcile_p50_ms: f64,
    reconcile_p95_ms: f64,
    peak_rss_mib: f64,
    rest_rss_mib: f64,
    rest_seconds: f64,
    rest_writes: f64,
    rest_changed_objects: usize,
    rest_events: usize,
    rest_reconciles: f64,
    rest_cpu_s: f64,
    rest_reads: f64,
    rest_operator_reads: Vec<(String, f64)>,
    rest_operator_writes: Vec<(String, f64)>,
    rest_reconcile_mean_ms: f64,
    ready_at_end: usize,
    note: String,
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `VmHWM` and `VmRSS` of `pid`, in KiB.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// User + system CPU seconds of `pid` (fields 14 and 15 of `/proc/<pid>/stat`, in clock ticks
/// of 1/100 s on Linux).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // After ')': field 3 is index 0, so utime (14) is index 11 and stime (15) index 12.
    (ticks(11).unwrap_or(0.0) + ticks(12).unwrap_or(0.0)) / 100.0
}

/// Cumulative `(upper bound, count)` of the reconcile-duration histogram.
fn buckets(exposition: &str) -> Vec<(f64, f64)> {
    exposition
        .lines()
        .filter(|l| l.starts_with("swappo_operator_reconcile_duration_seconds_bucket{"))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// The upper bound (ms) of the bucket holding quantile `q` of the histogram.
fn quantile_ms(cumulative: &[(f64, f64)], q: f64) -> f64 {
    let total = cumulative.last().map_or(0.0, |b| b.1);
    let rank = q * total;
    cumulative
        .iter()
        .find(|(_, c)| *c >= rank && *c > 0.0)
        .map_or(f64::NAN, |(le, _)| le * 1000.0)
}

/// The samples of `name{kind="..."}` as `(kind, value)`.
fn by_kind(exposition: &str, name: &str) -> BTreeMap<String, f64> {
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{kind=\"")))
        .filter_map(|l| {
            let kind = l.split("kind=\"").nth(1)?.split('"').next()?;
            Some((kind.to_owned(), l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// What grew in `name{kind}` between two expositions, by kind.
fn grown(before: &str, after: &str, name: &str) -> Vec<(String, f64)> {
    let before = by_kind(before, name);
    by_kind(after, name)
        .into_iter()
        .map(|(k, v)| {
            let d = v - before.get(&k).copied().unwrap_or(0.0);
            (k, d)
        })
        .filter(|(_, d)| *d > 0.0)
        .collect()
}

/// The API server's own GET and LIST counts on [`READ_KINDS`] (all clients).
async fn api_server_reads(client: &Client) -> f64 {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client
        .request_text(request)
        .await
        .expect("the API server's /metrics answers");
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| l.contains("verb=\"GET\"") || l.contains("verb=\"LIST\""))
        .filter(|l| {
            READ_KINDS
                .iter()
                .any(|k| l.contains(&format!("resource=\"{k}\"")))
        })
        .filter(|l| l.contains("subresource=\"\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `kind/name -> resourceVersion` of every object the operator writes in `ns`.
async fn versions(ns: &TestNamespace) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    macro_rules! add {
        ($k:ty) => {
            for o in ns
                .api::<$k>()
                .list_metadata(&ListParams::default())
                .await
                .unwrap()
                .items
            {
                out.insert(
                    format!("{}/{}", stringify!($k), o.name_any()),
                    o.resource_version().unwrap_or_default(),
                );
            }
        };
    }
    add!(SwappoMessaging);
    add!(Secret);
    add!(ConfigMap);
    add!(PersistentVolumeClaim);
    add!(StatefulSet);
    add!(Service);
    out
}

async fn event_count(ns: &TestNamespace) -> usize {
    ns.api::<Event>()
        .list_metadata(&ListParams::default())
        .await
        .unwrap()
        .items
        .len()
}

/// Fake nodes for the broker pods, removed by [`remove_nodes`].
async fn add_nodes(client: &Client, count: usize) {
    let nodes: Api<Node> = Api::all(client.clone());
    for i in 0..count {
        let name = format!("swappo-bench-{i}");
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                           "kubernetes.io/arch": "amd64", BENCH_LABEL: "true"},
            },
        }))
        .unwrap();
        nodes
            .patch(
                &name,
                &PatchParams::apply("bench").force(),
                &Patch::Apply(&node),
            )
            .await
            .expect("a bench node is created");
        let status = serde_json::json!({"status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
        }});
        nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("a bench node's capacity is set");
    }
    swappo_testkit::eventually("the bench nodes Ready (kwok)", WAIT, || async {
        let list = nodes
            .list(&ListParams::default().labels(&format!("{BENCH_LABEL}=true")))
            .await
            .ok()?;
        let ready = list
            .items
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        (ready >= count).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

async fn remove_nodes(client: &Client) {
    let _ = Api::<Node>::all(client.clone())
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&format!("{BENCH_LABEL}=true")),
        )
        .await;
}

/// A volume pre-bound to each broker's claim (the local cluster has no provisioner).
async fn add_volumes(client: &Client, ns: &str, names: &[String]) {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    stream::iter(names.iter().cloned())
        .map(|name| {
            let volumes = volumes.clone();
            let claim = format!("{name}-rabbitmq-data");
            let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": format!("{ns}-{name}"), "labels": {BENCH_LABEL: ns}},
                "spec": {
                    "capacity": {"storage": "8Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {"path": format!("/tmp/swappo-bench-pv/{ns}/{name}")},
                    "claimRef": {"namespace": ns, "name": claim},
                },
            }))
            .unwrap();
            async move { volumes.create(&PostParams::default(), &pv).await }
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<_>>()
        .await
        .expect("the volumes are created");
}

async fn remove_volumes(client: &Client, ns: &str) {
    let _ = Api::<PersistentVolume>::all(client.clone())
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&format!("{BENCH_LABEL}={ns}")),
        )
        .await;
}

async fn remove_queues(queues: &[String]) {
    let management = Management::from_env();
    stream::iter(queues.iter().cloned())
        .for_each_concurrent(PARALLEL, |q| {
            let m = management.clone();
            async move {
                let _ = m.delete_queue("/", &q).await;
                let _ = m.delete_queue("/", &format!("{q}.dlq")).await;
                let _ = m.delete_exchange("/", &format!("{q}.dlx")).await;
            }
        })
        .await;
}

/// Deletes the namespace and waits until it is gone, so the next scale starts on a quiet
/// control plane (garbage collection of thousands of objects is real work for it).
async fn remove_namespace(client: &Client, ns: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(ns, &DeleteParams::default()).await;
    let gone = swappo_testkit::eventually(
        "the benchmark namespace deleted",
        Duration::from_secs(600),
        || async { matches!(namespaces.get_opt(ns).await, Ok(None)).then_some(()) },
    )
    .await;
    if let Err(e) = gone {
        eprintln!("warning: {e}");
    }
}

/// One consumer Deployment per resource (`<name>-worker`, 1 replica; kwok runs its pods).
async fn add_workers(ns: &TestNamespace, names: &[String]) {
    let api = ns.api::<Deployment>();
    stream::iter(names.iter().cloned())
        .map(|name| {
            let api = api.clone();
            let app = format!("{name}-worker");
            let d: Deployment = serde_json::from_value(serde_json::json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": app},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": app}},
                    "template": {"metadata": {"labels": {"app": app}},
                        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
                }
            }))
            .unwrap();
            async move { api.create(&PostParams::default(), &d).await }
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<_>>()
        .await
        .expect("the consumer Deployments are created");
}

/// Publishes `count` messages to each of `queues` (default exchange), confirmed.
async fn publish(queues: &[String], count: u32) {
    let conn = Connection::connect(
        &swappo_testkit::rabbitmq_url(),
        ConnectionProperties::default(),
    )
    .await
    .expect("the bench connects to the broker");
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    for q in queues {
        let mut confirms = Vec::new();
        for i in 0..count {
            confirms.push(
                ch.basic_publish(
                    "".into(),
                    q.as_str().into(),
                    BasicPublishOptions::default(),
                    format!("backlog {i}").as_bytes(),
                    BasicProperties::default(),
                )
                .await
                .unwrap(),
            );
        }
        for c in confirms {
            c.await.unwrap();
        }
    }
    let _ = conn.close(200, "published".into()).await;
}

/// For each (Deployment, queue): 300 more messages, confirmed, then the seconds until a watch
/// sees the Deployment scaled to 5 replicas. Samples are published one after another.
async fn reaction_times(ns: &TestNamespace, samples: &[(String, String)]) -> Vec<f64> {
    let deployments = ns.api::<Deployment>();
    let mut out = Vec::new();
    for (deployment, queue) in samples {
        publish(std::slice::from_ref(queue), 300).await;
        let t0 = Instant::now();
        let scaled = kube::runtime::wait::await_condition(
            deployments.clone(),
            deployment,
            |d: Option<&Deployment>| d.is_some_and(|d| d.spec.replicas == Some(5)),
        );
        match tokio::time::timeout(WAIT, scaled).await {
            Ok(Ok(_)) => out.push(t0.elapsed().as_secs_f64()),
            _ => eprintln!("warning: {deployment} not scaled to 5 within {WAIT:?}"),
        }
    }
    out
}

fn is_ready(sm: &SwappoMessaging) -> bool {
    sm.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// Runs one scale and returns its figures.
async fn measure(client: &Client, n: usize, rest: Duration, consumers: bool) -> Figures {
    let mut figures = Figures {
        n,
        consumers,
        ..Figures::default()
    };
    let ns = TestNamespace::new("op-scale-").await;
    let names: Vec<String> = (0..n).map(|i| format!("sm-{i:04}")).collect();
    let queues: Vec<String> = (0..n).map(|i| format!("{}.q{i:04}", ns.name())).collect();
    // Broker pods, and with consumers up to 5 consumer pods per resource (the reaction
    // samples) but 2 for most.
    let pods = if consumers {
        3 * n + 4 * REACTION_SAMPLES
    } else {
        n
    };
    add_nodes(client, pods.div_ceil(PODS_PER_NODE)).await;
    add_volumes(client, ns.name(), &names).await;
    login_secret(&ns).await;
    if consumers {
        add_workers(&ns, &names).await;
    }
    let api = ns.api::<SwappoMessaging>();
    stream::iter(names.iter().zip(&queues))
        .map(|(name, queue)| {
            let mut sm = SwappoMessaging::new_in(name, ns.name())
                .with_credentials_secret("broker-login")
                .with_queue(queue);
            sm.spec.queues[0].queue_type = QueueType::Classic;
            if consumers {
                sm = sm.with_consumer(&format!("{name}-worker"), queue);
                sm.spec.consumers[0].min_replicas = 1;
                sm.spec.consumers[0].max_replicas = 5;
                sm.spec.consumers[0].messages_per_replica = 100;
            }
            let api = api.clone();
            async move { api.create(&PostParams::default(), &sm).await }
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<_>>()
        .await
        .expect("the objects are created");

    let start = Instant::now();
    let mut operator = Process::spawn(
        "bench-operator",
        "info,kube=warn,lapin=warn",
        &[
            "--namespace",
            ns.name(),
            "--leader-election",
            "false",
            "--broker-address-override",
            "127.0.0.1:5672",
        ],
    );
    let pid = operator.pid();
    let sampling = Arc::new(AtomicBool::new(true));
    let last_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (sampling, last_rss) = (sampling.clone(), last_rss.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                if let Some((_, rss)) = memory_kib(pid) {
                    last_rss.store(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };

    // Converge: poll every second until every object is Ready (or the guard trips).
    let mut ready = 0;
    while start.elapsed() < CONVERGE_GUARD {
        let list = api.list(&ListParams::default()).await.unwrap().items;
        let with_status = list
            .iter()
            .filter(|s| s.status.as_ref().is_some_and(|s| !s.conditions.is_empty()))
            .count();
        ready = list.iter().filter(|s| is_ready(s)).count();
        let t = start.elapsed().as_secs_f64();
        if figures.all_status_s.is_none() && with_status == n {
            figures.all_status_s = Some(t);
        }
        if ready == n {
            figures.all_ready_s = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let exposition = operator.metrics().await;
    figures.reconciles_to_ready = metric(&exposition, "swappo_operator_reconciles_total");
    figures.errors_to_ready = metric(&exposition, "swappo_operator_reconcile_errors_total");
    let cumulative = buckets(&exposition);
    figures.reconcile_p50_ms = quantile_ms(&cumulative, 0.5);
    figures.reconcile_p95_ms = quantile_ms(&cumulative, 0.95);
    figures.reconcile_mean_ms = 1000.0
        * metric(
            &exposition,
            "swappo_operator_reconcile_duration_seconds_sum",
        )
        / metric(
            &exposition,
            "swappo_operator_reconcile_duration_seconds_count",
        )
        .max(1.0);
    if figures.all_ready_s.is_none() {
        figures.note = format!(
            "only {ready} of {n} Ready after {} s",
            CONVERGE_GUARD.as_secs()
        );
    }

    if consumers && figures.all_ready_s.is_some() {
        publish(&queues, BACKLOG).await;
        // Each consumer scaled to 2 (the backlog) before the rest window.
        let guard = Instant::now();
        while guard.elapsed() < CONVERGE_GUARD {
            let list = api.list(&ListParams::default()).await.unwrap().items;
            let scaled = list
                .iter()
                .filter(|s| {
                    s.status
                        .as_ref()
                        .is_some_and(|s| s.consumers.iter().any(|c| c.replicas == 2))
                })
                .count();
            if scaled == n {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    // Settle: the autoscaler writes each queue's numbers in status.queues at its first poll
    // (every 30 s for resources without consumers), and the write that set the last Ready may
    // still be followed by its Events: wait until every object has its queue status, then
    // until no write was counted for 10 s.
    let settle_start = Instant::now();
    while settle_start.elapsed() < Duration::from_secs(180) {
        let list = api.list(&ListParams::default()).await.unwrap().items;
        let with_queues = list
            .iter()
            .filter(|s| s.status.as_ref().is_some_and(|s| !s.queues.is_empty()))
            .count();
        if with_queues == n {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut quiet_since = Instant::now();
    let mut writes = metric(
        &operator.metrics().await,
        "swappo_operator_api_writes_total",
    );
    while quiet_since.elapsed() < Duration::from_secs(10)
        && settle_start.elapsed() < Duration::from_secs(180)
    {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = metric(
            &operator.metrics().await,
            "swappo_operator_api_writes_total",
        );
        if now != writes {
            writes = now;
            quiet_since = Instant::now();
        }
    }

    // Rest window.
    let before_exposition = operator.metrics().await;
    let before_versions = versions(&ns).await;
    let before_events = event_count(&ns).await;
    let before_cpu = cpu_seconds(pid);
    let before_reads = api_server_reads(client).await;
    let rest_start = Instant::now();
    let rss_samples = Arc::new(Mutex::new(Vec::new()));
    while rest_start.elapsed() < rest {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_samples
            .lock()
            .unwrap()
            .push(last_rss.load(Ordering::Relaxed));
    }
    figures.rest_seconds = rest_start.elapsed().as_secs_f64();
    let after_exposition = operator.metrics().await;
    // Before the benchmark's own LISTs below, which the API server counts too.
    figures.rest_reads = api_server_reads(client).await - before_reads;
    let after_versions = versions(&ns).await;
    figures.rest_cpu_s = cpu_seconds(pid) - before_cpu;
    figures.rest_events = event_count(&ns).await.saturating_sub(before_events);
    figures.rest_changed_objects = after_versions
        .iter()
        .filter(|(k, v)| before_versions.get(*k) != Some(*v))
        .count();
    let delta = |name: &str| metric(&after_exposition, name) - metric(&before_exposition, name);
    figures.rest_writes = delta("swappo_operator_api_writes_total");
    figures.rest_operator_reads = grown(
        &before_exposition,
        &after_exposition,
        "swappo_operator_api_reads_total",
    );
    figures.rest_operator_writes = grown(
        &before_exposition,
        &after_exposition,
        "swappo_operator_api_writes_total",
    );
    figures.rest_reconciles = delta("swappo_operator_reconciles_total");
    figures.rest_reconcile_mean_ms = 1000.0
        * delta("swappo_operator_reconcile_duration_seconds_sum")
        / delta("swappo_operator_reconcile_duration_seconds_count").max(1.0);
    let mut samples = rss_samples.lock().unwrap().clone();
    samples.sort_unstable();
    figures.rest_rss_mib = samples.get(samples.len() / 2).copied().unwrap_or(0) as f64 / 1024.0;
    figures.peak_rss_mib = memory_kib(pid).map_or(0.0, |(hwm, _)| hwm as f64 / 1024.0);
    figures.ready_at_end = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|s| is_ready(s))
        .count();

    if consumers && figures.all_ready_s.is_some() {
        let samples: Vec<(String, String)> = names
            .iter()
            .zip(&queues)
            .step_by((n / REACTION_SAMPLES).max(1))
            .take(REACTION_SAMPLES)
            .map(|(name, q)| (format!("{name}-worker"), q.clone()))
            .collect();
        let mut reactions = reaction_times(&ns, &samples).await;
        reactions.sort_by(f64::total_cmp);
        let at = |q: f64| {
            (!reactions.is_empty())
                .then(|| reactions[((q * reactions.len() as f64).ceil() as usize).max(1) - 1])
        };
        figures.reaction_p50_s = at(0.5);
        figures.reaction_p95_s = at(0.95);
    }
    figures.amqp_opened = metric(
        &operator.metrics().await,
        "swappo_operator_amqp_connections_opened_total",
    );
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    if !operator.terminate() {
        figures
            .note
            .push_str(" the operator did not exit cleanly on SIGTERM;");
    }
    let log = operator.log();
    if let Some(line) = log.lines().find(|l| l.contains("\"level\":\"ERROR\"")) {
        figures
            .note
            .push_str(&format!(" first error logged: {line};"));
    }
    drop(operator);
    eprintln!("{figures:?}");

    remove_queues(&queues).await;
    let name = ns.name().to_owned();
    remove_namespace(client, &name).await;
    remove_volumes(client, &name).await;
    drop(ns);
    figures
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "not reached".into(), |v| format!("{v:.1}"))
}

/// The row label of a measurement: its object count, and its case.
fn label(f: &Figures) -> String {
    match f.consumers {
        true => format!("{} with consumers", f.n),
        false => f.n.to_string(),
    }
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "missed" }
}

fn report(all: &[Figures]) -> String {
    let conditions = std::env::var("BENCH_CONDITIONS").unwrap_or_default();
    let limit_mib = 256.0; // the chart's default memory limit (charts/swappo-operator/values.yaml)
    let mut out = String::new();
    out.push_str("# Operator scale benchmark: reconcile time, memory and API traffic\n\n");
    out.push_str(&format!("{conditions}\n\n"));
    // The summary `make bench` gathers (bench/aggregate.py reads the first column whose
    // header names a unit as the figure and each "vs ..." column as a ratio).
    out.push_str("| objects | measure | value | ratio |\n");
    out.push_str("|---:|---|---:|---|\n");
    for f in all {
        let per_min = 60.0 / f.rest_seconds.max(1.0);
        let at_1000 = |goal: &str| {
            if f.n == 1000 {
                goal.to_owned()
            } else {
                String::new()
            }
        };
        let of_limit =
            |mib: f64| format!("{:.2}x the chart's 256 MiB memory limit", mib / limit_mib);
        let rows = [
            (
                "seconds until every object has a status",
                opt(f.all_status_s),
                String::new(),
            ),
            (
                "seconds until every object is Ready",
                opt(f.all_ready_s),
                at_1000(&format!(
                    "goal < 60 s: {}; vs 218 s before issue 17",
                    met(f.all_ready_s.is_some_and(|t| t < 60.0))
                )),
            ),
            (
                "AMQP connections opened",
                format!("{:.0}", f.amqp_opened),
                at_1000("vs ~24,000 before issue 17"),
            ),
            (
                "mean reconcile (ms) until all Ready",
                format!("{:.1}", f.reconcile_mean_ms),
                String::new(),
            ),
            (
                "peak RSS (MiB)",
                format!("{:.1}", f.peak_rss_mib),
                match f.n {
                    1000 => format!(
                        "{}; goal < 64 MiB: {}; vs 247 MiB before issue 17",
                        of_limit(f.peak_rss_mib),
                        met(f.peak_rss_mib < 64.0)
                    ),
                    _ => of_limit(f.peak_rss_mib),
                },
            ),
            (
                "RSS at rest (MiB)",
                format!("{:.1}", f.rest_rss_mib),
                match f.n {
                    1000 => format!("{}; vs 172 MiB before issue 17", of_limit(f.rest_rss_mib)),
                    _ => of_limit(f.rest_rss_mib),
                },
            ),
            (
                "API writes per minute at rest",
                format!("{:.1}", f.rest_writes * per_min),
                if f.rest_writes == 0.0 && f.rest_changed_objects == 0 {
                    "target 0: met".into()
                } else {
                    "target 0: missed".into()
                },
            ),
            (
                "API reads per minute at rest (the operator's own)",
                format!(
                    "{:.0}",
                    f.rest_operator_reads.iter().map(|(_, n)| n).sum::<f64>() * per_min + 0.0
                ),
                format!(
                    "target 0: {}{}",
                    met(f.rest_operator_reads.is_empty()),
                    at_1000("; vs 1,044 before issue 17")
                ),
            ),
            (
                "scale reaction p50 (s), every resource polling",
                opt(f.reaction_p50_s),
                String::new(),
            ),
            (
                "scale reaction p95 (s), every resource polling",
                opt(f.reaction_p95_s),
                String::new(),
            ),
        ];
        for (measure, value, ratio) in rows {
            if !f.consumers && measure.starts_with("scale reaction") {
                continue;
            }
            out.push_str(&format!(
                "| {} | {measure} | {value} | {ratio} |\n",
                label(f)
            ));
        }
    }
    out.push_str("\n## Details\n\n");
    out.push_str(
        "Each row: N `SwappoMessaging` objects in one namespace, each with a managed broker \
         (the operator creates its Secret, ConfigMap, claim, StatefulSet, NetworkPolicy and \
         Service; kwok plays \
         the kubelet on fake nodes added for the run) and one classic queue with \
         dead-lettering, declared on the local RabbitMQ. The objects exist before the \
         operator (release build, default settings: 16 reconciles at once, recheck 60 s) \
         starts; it watches that namespace only. `Ready` needs the broker StatefulSet's pod \
         available (controller-manager, scheduler and kwok at work), an AMQP login and the \
         queue declared. The objects name a user credentials Secret (`credentialsSecret`, \
         the local broker's login, so all of them dial one broker as one user: the operator \
         keeps one AMQP connection per broker and login); that Secret is not the operator's: \
         a metadata-only watch gives its resourceVersion and it is read only when that \
         changed. \"with consumers\": each object also scales one consumer Deployment \
         (`<name>-worker`, kwok runs its pods, min 1 max 5, 100 messages per replica); once \
         all are Ready each queue gets a backlog of 150 messages (scaled to 2 before the \
         rest window; Ready then needs ConsumersScaled too). After the rest window 20 of \
         the queues, one after another, get 300 more messages; the reaction is the time \
         from the confirmed publish to a watch seeing the Deployment at 5 replicas, while \
         every object keeps polling every 2 s. Everything else the operator reads is from \
         its watch caches.\n\n",
    );
    out.push_str("| objects | all have a status (s) | all Ready (s) | reconciles until all Ready (errors) | reconcile mean / p50 / p95 (ms) | peak RSS (MiB) | RSS at rest (MiB) | RSS at rest vs the chart's 256 MiB limit |\n");
    out.push_str("|---:|---:|---:|---:|---|---:|---:|---:|\n");
    for f in all {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} ({:.0}) | {:.1} / <= {:.0} / <= {:.0} | {:.1} | {:.1} | {:.3}x |\n",
            label(f),
            opt(f.all_status_s),
            opt(f.all_ready_s),
            f.reconciles_to_ready,
            f.errors_to_ready + 0.0, // an empty sum is -0.0
            f.reconcile_mean_ms,
            f.reconcile_p50_ms,
            f.reconcile_p95_ms,
            f.peak_rss_mib,
            f.rest_rss_mib,
            f.rest_rss_mib / limit_mib,
        ));
    }
    out.push_str("\nAt rest (after the last Ready and 10 s without a write):\n\n");
    out.push_str("| objects | window (s) | API writes per minute (operator's counter) | objects whose resourceVersion changed | Event objects created | reconciles per minute | mean reconcile at rest (ms) | operator CPU (% of one core) | GET+LIST per minute on the kinds it reads (API server, all clients) | Ready at the end |\n");
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for f in all {
        let per_min = |v: f64| v * 60.0 / f.rest_seconds.max(1.0);
        out.push_str(&format!(
            "| {} | {:.0} | {:.1} | {} | {} | {:.0} | {:.1} | {:.2} | {:.0} | {}/{} |\n",
            label(f),
            f.rest_seconds,
            per_min(f.rest_writes),
            f.rest_changed_objects,
            f.rest_events,
            per_min(f.rest_reconciles),
            f.rest_reconcile_mean_ms,
            100.0 * f.rest_cpu_s / f.rest_seconds.max(1.0),
            per_min(f.rest_reads),
            f.ready_at_end,
            f.n,
        ));
    }
    out.push_str("\nThe operator's own API calls at rest, by kind (its `api_reads_total` and `api_writes_total` counters over the window):\n\n");
    out.push_str("| objects | reads | writes |\n|---:|---|---|\n");
    for f in all {
        let list = |v: &[(String, f64)]| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.iter()
                    .map(|(k, n)| format!("{k} {n:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            label(f),
            list(&f.rest_operator_reads),
            list(&f.rest_operator_writes)
        ));
    }
    let notes: Vec<String> = all
        .iter()
        .filter(|f| !f.note.trim().is_empty())
        .map(|f| format!("- {}: {}", label(f), f.note.trim()))
        .collect();
    if !notes.is_empty() {
        out.push_str(&format!("\nNotes:\n{}\n", notes.join("\n")));
    }
    out.push_str(
        "\nTarget (DESIGN §9): 0 API writes per minute at rest. p50/p95 are the upper bounds \
         of the histogram buckets that hold them (buckets double from 1 ms). Peak RSS is the \
         kernel's high-water mark (VmHWM); RSS at rest is the median of 1 s samples over the \
         window. The GET+LIST count is the API server's `apiserver_request_total` over the \
         window for all clients; the control plane's own components read through watches, so \
         nearly all of it is the operator's rechecks.\n",
    );
    out
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run by `make bench-operator`"]
async fn operator_scale() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    // Leftovers of an interrupted run (cluster-scoped, so not removed with its namespace).
    remove_nodes(&client).await;
    let _ = Api::<PersistentVolume>::all(client.clone())
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(BENCH_LABEL),
        )
        .await;
    let scales: Vec<usize> = std::env::var("BENCH_SCALES")
        .unwrap_or_else(|_| "1 100 1000".into())
        .split_whitespace()
        .map(|s| s.parse().expect("BENCH_SCALES holds numbers"))
        .collect();
    let rest = Duration::from_secs(env_or("BENCH_REST", 130));
    let cases: Vec<bool> = std::env::var("BENCH_CASES")
        .unwrap_or_else(|_| "queues consumers".into())
        .split_whitespace()
        .map(|c| match c {
            "queues" => false,
            "consumers" => true,
            other => panic!("BENCH_CASES: unknown case {other} (queues, consumers)"),
        })
        .collect();
    let mut all = Vec::new();
    for (consumers, n) in cases
        .iter()
        .flat_map(|c| scales.iter().map(move |n| (*c, *n)))
    {
        all.push(measure(&client, n, rest, consumers).await);
        remove_nodes(&client).await;
        let out = report(&all);
        if let Ok(path) = std::env::var("BENCH_OUT") {
            std::fs::write(&path, &out).expect("the report is written");
        }
        println!("{out}");
    }
    for f in &all {
        assert_eq!(
            f.ready_at_end, f.n,
            "{} objects: not all Ready at the end ({})",
            f.n, f.note
        );
    }
}
