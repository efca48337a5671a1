//! The managed broker on the real node (issue 19): the operator, installed by its chart as a
//! pod with its own ServiceAccount and namespace Role only (in this process, saying so, when
//! the node lacks the operator image and `SWAPPO_REQUIRE_APP_IMAGES` is unset), runs its StatefulSet, claim, ConfigMap, Secret and Service with the locally
//! built `swappo.local/rabbitmq:3.10.8-management` image on the kubelet + containerd node,
//! and a backlog of persistent messages, counted by message id, survives everything that
//! replaces or restarts the broker:
//!
//! - a spec change (resources) and a plain pod deletion, and a container killed with
//!   `crictl stop`: sampled every 20 ms on the node (the Erlang VMs that have the claim's host
//!   directory mounted, from `/proc/<pid>/mountinfo`) and every 100 ms through the API server
//!   (broker pods, terminating ones included), never two at once;
//! - the generated Secret deleted: regenerated with a new password, the broker restarted by
//!   the operator imports the new user at boot, the new login works, the messages are there;
//! - the resource deleted with `whenDeleted: Retain`: claim and Secret stay; re-created, the
//!   data and the login are back.
//!
//! - a sustained publish of 384 MiB into a broker limited to 512Mi: RabbitMQ runs with the
//!   absolute watermark the operator derived from the limit (so it blocks publishers there, and
//!   nowhere below), every message is confirmed and there, and the container is never
//!   OOM-killed (RabbitMQ's defaults, a watermark relative to the host's memory and a 512 MiB
//!   quorum WAL, let it grow past the limit);
//! - the node's containerd restarted (`scripts/cluster-up.sh --restart-containerd`, which
//!   starts it again with its configuration: the test bed is restored): the broker's container
//!   runs on in its shim, the same process, never a second one, the pod Ready, the backlog there.
//!   The tests of this file hold [`NODE_RUNTIME`] so that no other runs meanwhile (cargo runs
//!   test binaries one after another).
//!
//! Traffic: AMQP from this process to the broker's Service address (the test bed's Service
//! range, routed onto the node's bridge); nothing leaves the machine.
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use swappo_operator::broker::amqp::Target;
use swappo_operator::builders::broker::service;
use swappo_operator::builders::secret::secret_value;
use swappo_operator::context::{Context, Settings};
use swappo_operator::crd::SwappoMessaging;
use swappo_operator::metrics::Metrics;
use swappo_testkit::node::{
    NODE_NAME, NODE_TAINT, STORAGE_CLASS, app_images_required, helm, node_has_image,
    real_node_client, testbin_dir,
};
use swappo_testkit::{TestNamespace, eventually};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The broker image built from Debian's package by images/build.sh (never pulled).
const IMAGE: &str = "swappo.local/rabbitmq:3.10.8-management";
/// Failure guard of every wait: far above a broker start on this machine (about 20 s with
/// the readiness probe's 10 s initial delay and period), so only a stuck broker trips it.
const GUARD: Duration = Duration::from_secs(240);
/// The queue holding the backlog (quorum, declared by the operator from the spec).
const QUEUE: &str = "backlog";
/// containerd's socket on the real node (scripts/node-lib.sh `CONTAINERD_SOCK`).
const CONTAINERD_SOCK: &str = "unix:///run/swappo/containerd/containerd.sock";

/// The node's container runtime, shared by the tests of this file: the containerd restart
/// holds it for writing, the others for reading (for their whole run).
static NODE_RUNTIME: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A resource for the real node: the local image and storage class, placed on the node.
fn resource(ns: &str) -> SwappoMessaging {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "swappo.io/v1alpha1", "kind": "SwappoMessaging",
        "metadata": {"name": "dev", "namespace": ns},
        "spec": {
            "broker": {
                "image": IMAGE,
                "storage": {"storageClassName": STORAGE_CLASS},
                "nodeSelector": {"kubernetes.io/hostname": NODE_NAME},
                "tolerations": [{"key": NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
            },
            "queues": [{"name": QUEUE, "type": "quorum", "deadLetter": {"maxDeliveries": 5}}],
        },
    }))
    .expect("a valid resource")
}

/// The operator image `make test` builds and imports (images/build.sh).
const OPERATOR_IMAGE: &str = "swappo.local/swappo-operator:dev";
/// The operator chart's release in the test's namespace.
const OPERATOR_RELEASE: &str = "swappo-operator";

/// The operator under test (proof 5 of issue 19): the chart's pod, with its image, its
/// ServiceAccount and the namespace Role of `watch.scope=namespace` only, dialling the broker
/// through cluster DNS, when the node holds the operator image (always under `make test`);
/// otherwise, saying so, in this process with the test's admin identity, dialling the
/// broker's Service address (this process cannot resolve cluster DNS names).
enum Operator {
    Chart {
        namespace: String,
    },
    InProcess {
        stop: CancellationToken,
        task: JoinHandle<()>,
    },
}

impl Operator {
    async fn start(client: &Client, ns: &str, service_ip: &str) -> Self {
        if node_has_image(client, OPERATOR_IMAGE)
            .await
            .unwrap_or(false)
        {
            return Self::install_chart(ns).await;
        }
        assert!(
            !app_images_required(),
            "SWAPPO_REQUIRE_APP_IMAGES is set but the node has no {OPERATOR_IMAGE}"
        );
        eprintln!(
            "the operator runs in this process: the node has no {OPERATOR_IMAGE} (make images)"
        );
        let settings = Settings {
            broker_override: Some(Target {
                host: service_ip.into(),
                port: 5672,
                tls: false,
            }),
            management_override: Some(format!("{service_ip}:15672")),
            retry: Duration::from_secs(2),
            recheck: Duration::from_secs(10),
            instance: "broker-on-node".into(),
            ..Settings::default()
        };
        let ctx = Arc::new(Context::new(
            client.clone(),
            Arc::new(Metrics::default()),
            settings,
        ));
        let stop = CancellationToken::new();
        let (token, ns) = (stop.clone(), ns.to_owned());
        let task = tokio::spawn(async move {
            swappo_operator::controller::run_controller(ctx, Some(&ns), token).await
        });
        Self::InProcess { stop, task }
    }

    /// `helm install` of charts/swappo-operator, scoped to `ns`, placed on the real node,
    /// rechecking a broker that is not ready every 2 s; waits for its pod to be Ready.
    async fn install_chart(ns: &str) -> Self {
        let placement = format!("nodeSelector={{\"kubernetes.io/hostname\":\"{NODE_NAME}\"}}");
        let tolerations = format!(
            "tolerations=[{{\"key\":\"{NODE_TAINT}\",\"operator\":\"Exists\",\"effect\":\"NoSchedule\"}}]"
        );
        let timeout = format!("{}s", GUARD.as_secs());
        helm(&[
            "install",
            OPERATOR_RELEASE,
            "charts/swappo-operator",
            "--namespace",
            ns,
            "--set",
            "image.repository=swappo.local/swappo-operator",
            "--set",
            "image.tag=dev",
            "--set",
            "image.pullPolicy=Never",
            "--set",
            "watch.scope=namespace",
            "--set",
            "broker.retrySeconds=2",
            "--set",
            "broker.recheckSeconds=10",
            "--set",
            "resources.requests.cpu=20m",
            "--set",
            "log.format=text",
            "--set-json",
            &placement,
            "--set-json",
            &tolerations,
            "--wait",
            "--timeout",
            &timeout,
        ])
        .await
        .unwrap_or_else(|e| panic!("the operator chart installs: {e}"));
        eprintln!(
            "the operator runs as the chart's pod ({OPERATOR_IMAGE}, its own ServiceAccount and Role)"
        );
        Self::Chart {
            namespace: ns.to_owned(),
        }
    }

    async fn stop(self) {
        match self {
            Self::Chart { namespace } => {
                let timeout = format!("{}s", GUARD.as_secs());
                helm(&[
                    "uninstall",
                    OPERATOR_RELEASE,
                    "--namespace",
                    &namespace,
                    "--wait",
                    "--timeout",
                    &timeout,
                ])
                .await
                .unwrap_or_else(|e| panic!("the operator chart uninstalls: {e}"));
            }
            Self::InProcess { stop, task } => {
                stop.cancel();
                tokio::time::timeout(GUARD, task)
                    .await
                    .expect("the operator stops")
                    .unwrap();
            }
        }
    }
}

/// Keeps this branch's CRD served while the test runs: the test bed's API server is shared,
/// and tests of other checkouts apply their own version of the CRD, whose schema would prune
/// the placement fields (`nodeSelector`, `tolerations`) this test needs. Re-applied only when
/// the served schema lacks them (this version is a superset).
struct CrdGuard(JoinHandle<()>);

impl CrdGuard {
    fn start(client: &Client) -> Self {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
        let client = client.clone();
        Self(tokio::spawn(async move {
            loop {
                let served = crds
                    .get_opt("swappomessagings.swappo.io")
                    .await
                    .ok()
                    .flatten();
                let has_placement = served
                    .and_then(|c| serde_json::to_value(c).ok())
                    .is_some_and(|v| {
                        v.pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/broker/properties/tolerations")
                            .is_some()
                    });
                if !has_placement {
                    let _ = swappo_testkit::apply_crd(
                        &client,
                        &swappo_operator::crd::crd(),
                        "swappo-e2e-tests",
                        GUARD,
                    )
                    .await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }))
    }
}

impl Drop for CrdGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Creates `sm` (again while a CRD without its placement fields pruned them), then its
/// Service from the operator's own builder (so its address is known before the operator
/// starts; the operator finds it as it would have made it), then the operator. Returns the
/// Service address and the operator.
async fn deploy(client: &Client, ns: &TestNamespace, sm: &SwappoMessaging) -> (String, Operator) {
    let resources = ns.api::<SwappoMessaging>();
    let mut created = None;
    for _ in 0..10 {
        swappo_testkit::apply_crd(
            client,
            &swappo_operator::crd::crd(),
            "swappo-e2e-tests",
            GUARD,
        )
        .await
        .expect("the CRD is installed");
        let sm = resources.create(&PostParams::default(), sm).await.unwrap();
        if sm.spec.broker.tolerations.is_some() {
            created = Some(sm);
            break;
        }
        resources
            .delete("dev", &DeleteParams::default())
            .await
            .unwrap();
        eventually("the pruned resource gone", GUARD, || async {
            resources.get_opt("dev").await.ok()?.is_none().then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let created = created.expect("created with its placement within 10 attempts");
    let svc = ns
        .api::<Service>()
        .create(&PostParams::default(), &service(&created))
        .await
        .unwrap();
    let ip = svc.spec.and_then(|s| s.cluster_ip).expect("a ClusterIP");
    (ip.clone(), Operator::start(client, ns.name(), &ip).await)
}

/// Waits until `dev` is Ready (broker logged in, queue declared) and returns the broker pod.
async fn ready(ns: &TestNamespace, not_uid: Option<&str>) -> Pod {
    let resources = ns.api::<SwappoMessaging>();
    let pods = ns.api::<Pod>();
    let found = eventually("the broker Ready and the resource Ready", GUARD, || async {
        let pod = pods.get_opt("dev-rabbitmq-0").await.ok()??;
        if not_uid.is_some() && pod.uid().as_deref() == not_uid {
            return None;
        }
        let tolerated = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_ref())
            .is_some_and(|t| t.iter().any(|t| t.key.as_deref() == Some(NODE_TAINT)));
        assert!(
            tolerated,
            "the broker pod lost its toleration: another checkout's CRD (without \
             spec.broker.tolerations) was served meanwhile and pruned it"
        );
        if !swappo_testkit::node::pod_ready(Some(&pod)) {
            return None;
        }
        let sm = resources.get("dev").await.ok()?;
        let ok = |t: &str| sm.condition(t).is_some_and(|c| c.status == "True");
        (ok("BrokerReady") && ok("QueuesReady")).then_some(pod)
    })
    .await;
    match found {
        Ok(pod) => pod,
        Err(e) => {
            let sm = resources.get("dev").await.ok().and_then(|s| s.status);
            panic!(
                "{e}; status {sm:?}; {}",
                swappo_testkit::node::describe(ns, "dev-rabbitmq-0").await
            )
        }
    }
}

/// The login in the operator's Secret.
async fn login(ns: &TestNamespace) -> (String, String, Secret) {
    let s = ns.api::<Secret>().get("dev-rabbitmq").await.unwrap();
    (
        secret_value(&s, "username").unwrap(),
        secret_value(&s, "password").unwrap(),
        s,
    )
}

fn url(ip: &str, user: &str, password: &str) -> String {
    // Generated credentials are alphanumeric (and `swappo-`): nothing to escape.
    format!("amqp://{user}:{password}@{ip}:5672/%2f")
}

/// Publishes `n` persistent messages with ids `m-0`.. `m-<n-1>`, each confirmed.
async fn publish(amqp: &str, n: usize) {
    let conn = Connection::connect(amqp, ConnectionProperties::default())
        .await
        .expect("the broker takes the login");
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..n {
        let confirm = ch
            .basic_publish(
                "".into(),
                QUEUE.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                format!("message {i}").as_bytes(),
                BasicProperties::default()
                    .with_message_id(format!("m-{i}").into())
                    .with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack(), "message {i} confirmed");
    }
    conn.close(200, "done".into()).await.unwrap();
}

/// The message ids in the queue: each message fetched without an ack, then all handed back
/// by closing the channel (quorum: one return per read, far below the delivery limit of 5).
async fn message_ids(amqp: &str) -> BTreeSet<String> {
    let conn = Connection::connect(amqp, ConnectionProperties::default())
        .await
        .expect("the broker takes the login");
    let ch = conn.create_channel().await.unwrap();
    // Passive: the queue must be there, not re-created empty.
    ch.queue_declare(
        QUEUE.into(),
        QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("the queue survived");
    let mut out = BTreeSet::new();
    while let Some(m) = ch
        .basic_get(QUEUE.into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
    {
        let id = m.delivery.properties.message_id().clone().unwrap();
        assert!(out.insert(id.to_string()), "{id} twice");
    }
    ch.close(200, "counted".into()).await.unwrap();
    conn.close(200, "done".into()).await.unwrap();
    out
}

fn expected(n: usize) -> BTreeSet<String> {
    (0..n).map(|i| format!("m-{i}")).collect()
}

/// Runs the test bed's crictl against the node's containerd; its stdout.
async fn crictl(args: &[&str]) -> String {
    let out = tokio::process::Command::new(testbin_dir().join("crictl"))
        .args(["--runtime-endpoint", CONTAINERD_SOCK, "--timeout", "10s"])
        .args(args)
        .output()
        .await
        .expect("crictl runs (installed by make testenv-bins)");
    assert!(
        out.status.success(),
        "crictl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The running `rabbitmq` containers of namespace `ns` on the node (their ids).
async fn running_brokers(ns: &str) -> Vec<String> {
    let label = format!("io.kubernetes.pod.namespace={ns}");
    crictl(&[
        "ps",
        "-q",
        "--state",
        "running",
        "--name",
        "^rabbitmq$",
        "--label",
        &label,
    ])
    .await
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

/// The host directory of the broker's volume (the node's local-path provisioner makes
/// `local` PersistentVolumes).
async fn volume_dir(ns: &TestNamespace) -> String {
    let claim = ns
        .api::<PersistentVolumeClaim>()
        .get("dev-rabbitmq-data")
        .await
        .unwrap();
    let pv = claim
        .spec
        .and_then(|s| s.volume_name)
        .expect("a bound claim");
    let pvs: kube::Api<k8s_openapi::api::core::v1::PersistentVolume> =
        kube::Api::all(ns.client().clone());
    let pv = pvs.get(&pv).await.unwrap();
    pv.spec
        .and_then(|s| s.local.map(|l| l.path).or(s.host_path.map(|h| h.path)))
        .expect("a local volume")
}

/// The Erlang VMs (`beam.smp`) on this machine that have `dir` mounted as their data
/// directory, read from `/proc/<pid>/mountinfo` (the node is this machine and the test runs as
/// root, as `make test` does): the ground truth of what runs on the volume. Each with whether
/// it is a broker (`-s rabbit boot` on its command line; the others are short-lived CLI VMs
/// inside the broker's own container).
fn vms_on(dir: &str) -> Vec<(u32, bool)> {
    let needle = format!(" {dir} /var/lib/rabbitmq ");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut vms: Vec<(u32, bool)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "beam.smp")
                && std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
                    .is_ok_and(|m| m.contains(&needle))
        })
        .map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (pid, cmdline.contains(" -s rabbit boot"))
        })
        .collect();
    vms.sort_unstable();
    vms
}

/// The broker processes on the volume `dir` (see [`vms_on`]).
fn brokers_on(dir: &str) -> Vec<u32> {
    vms_on(dir)
        .into_iter()
        .filter_map(|(pid, broker)| broker.then_some(pid))
        .collect()
}

/// What a [`Sampler`] saw.
#[derive(Debug, Default)]
struct Samples {
    /// Samples of the node's processes, and of the API server's pods.
    count: (u32, u32),
    /// Most broker pods the API server listed at once (terminating ones included).
    most_pods: usize,
    /// Most broker processes with the volume mounted at once.
    most_processes: usize,
    /// Most Erlang VMs of any kind (brokers and CLI tools) with the volume mounted at once.
    most_vms: usize,
    /// (when, broker process ids) at each change.
    changes: Vec<(Instant, Vec<u32>)>,
}

/// Samples the broker processes on the volume (every 20 ms) and the broker pods the API
/// server lists (every 100 ms) until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Samples>,
}

impl Sampler {
    async fn start(ns: &TestNamespace) -> Self {
        let dir = volume_dir(ns).await;
        assert!(
            !brokers_on(&dir).is_empty(),
            "the broker process is found by its volume {dir}"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, pods) = (stop.clone(), ns.api::<Pod>());
        let api_flag = stop.clone();
        let api = tokio::spawn(async move {
            let (mut most, mut count) = (0, 0);
            let selector = ListParams::default().labels("app.kubernetes.io/instance=dev");
            while !api_flag.load(Ordering::SeqCst) {
                most = most.max(pods.list(&selector).await.unwrap().items.len());
                count += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (most, count)
        });
        let task = tokio::spawn(async move {
            let mut s = Samples::default();
            while !flag.load(Ordering::SeqCst) {
                let vms = vms_on(&dir);
                let running: Vec<u32> = vms.iter().filter(|v| v.1).map(|v| v.0).collect();
                s.most_vms = s.most_vms.max(vms.len());
                s.count.0 += 1;
                s.most_processes = s.most_processes.max(running.len());
                if s.changes.last().is_none_or(|(_, last)| *last != running) {
                    s.changes.push((Instant::now(), running));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let (most, count) = api.await.unwrap();
            (s.most_pods, s.count.1) = (most, count);
            s
        });
        Self { stop, task }
    }

    async fn finish(self) -> Samples {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap()
    }
}

/// Seconds from the moment no broker container ran (after `from`) to `ready_at`, and the
/// seconds with none running.
fn gap(s: &Samples, from: Instant, ready_at: Instant) -> (f64, f64) {
    let after: Vec<&(Instant, Vec<u32>)> = s.changes.iter().filter(|(t, _)| *t >= from).collect();
    let none = after
        .iter()
        .find(|(_, ids)| ids.is_empty())
        .map(|(t, _)| *t);
    let next = none.and_then(|n| {
        after
            .iter()
            .find(|(t, ids)| *t > n && !ids.is_empty())
            .map(|(t, _)| *t)
    });
    match (none, next) {
        (Some(n), Some(x)) => (
            ready_at.duration_since(n).as_secs_f64(),
            x.duration_since(n).as_secs_f64(),
        ),
        _ => (f64::NAN, f64::NAN),
    }
}

/// Skips (None) unless the real node is Ready and holds the broker image.
async fn node() -> Option<Client> {
    let client = real_node_client().await?;
    if !node_has_image(&client, IMAGE).await.unwrap_or(false) {
        assert!(
            !swappo_testkit::node::node_required(),
            "SWAPPO_REQUIRE_NODE is set but the node has no {IMAGE} (make images)"
        );
        eprintln!("skipped: the node has no {IMAGE} (make images)");
        return None;
    }
    Some(client)
}

const BACKLOG: usize = 200;

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_survives_a_spec_change_a_pod_deletion_and_a_killed_container_with_never_two_brokers_at_once()
 {
    let Some(client) = node().await else {
        return;
    };
    let _runtime = NODE_RUNTIME.read().await;
    let ns = TestNamespace::new("broker-node-").await;
    let _crd = CrdGuard::start(&client);
    let (ip, operator) = deploy(&client, &ns, &resource(ns.name())).await;
    let first = ready(&ns, None).await;
    let (user, password, _) = login(&ns).await;
    let amqp = url(&ip, &user, &password);
    publish(&amqp, BACKLOG).await;
    let sampler = Sampler::start(&ns).await;

    // A spec change: new resources, so a new pod template.
    let started = Instant::now();
    let patch = serde_json::json!({"spec": {"broker": {"resources": {
        "requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"memory": "640Mi"}}}}});
    ns.api::<SwappoMessaging>()
        .patch("dev", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let second = ready(&ns, first.uid().as_deref()).await;
    let after_change = Instant::now();
    let limit = second.spec.as_ref().unwrap().containers[0]
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .map(|l| l["memory"].0.clone());
    assert_eq!(
        limit.as_deref(),
        Some("640Mi"),
        "the new pod has the new spec"
    );

    // A plain pod deletion.
    let deleted = Instant::now();
    ns.api::<Pod>()
        .delete("dev-rabbitmq-0", &DeleteParams::default())
        .await
        .unwrap();
    let third = ready(&ns, second.uid().as_deref()).await;
    let after_delete = Instant::now();

    // The broker container killed through the CRI: the kubelet restarts it in the same pod.
    let killed = Instant::now();
    let running = running_brokers(ns.name()).await;
    assert_eq!(running.len(), 1, "{running:?}");
    crictl(&["stop", "--timeout", "0", &running[0]]).await;
    let pods = ns.api::<Pod>();
    eventually("the killed broker restarted and Ready", GUARD, || async {
        let pod = pods.get("dev-rabbitmq-0").await.ok()?;
        let restarts = pod.status.as_ref()?.container_statuses.as_ref()?[0].restart_count;
        (pod.uid() == third.uid() && restarts >= 1 && swappo_testkit::node::pod_ready(Some(&pod)))
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    ready(&ns, None).await;
    let after_kill = Instant::now();

    let samples = sampler.finish().await;
    eprintln!(
        "{} process samples and {} API samples over {:.0} s: at most {} broker process(es) \
         on the volume ({} Erlang VMs counting CLI tools in its container) and {} broker \
         pod(s) at once",
        samples.count.0,
        samples.count.1,
        started.elapsed().as_secs_f64(),
        samples.most_processes,
        samples.most_vms,
        samples.most_pods,
    );
    for (what, from, to) in [
        ("spec change", started, after_change),
        ("pod deletion", deleted, after_delete),
        ("crictl stop", killed, after_kill),
    ] {
        let (to_ready, none_running) = gap(&samples, from, to);
        eprintln!(
            "{what}: no broker process on the volume for {none_running:.1} s; {to_ready:.1} s \
             from the old process gone to the resource Ready again"
        );
    }
    assert!(samples.count.0 > 100 && samples.count.1 > 20, "{samples:?}");
    assert_eq!(samples.most_pods, 1, "never two broker pods: {samples:?}");
    assert_eq!(
        samples.most_processes, 1,
        "never two brokers on the volume: {samples:?}"
    );

    let found = message_ids(&amqp).await;
    eprintln!(
        "{} of {BACKLOG} messages there after all three",
        found.len()
    );
    assert_eq!(found, expected(BACKLOG));
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_secret_brings_a_new_login_and_a_retained_volume_brings_data_and_login_back() {
    let Some(client) = node().await else {
        return;
    };
    let _runtime = NODE_RUNTIME.read().await;
    let ns = TestNamespace::new("broker-node-").await;
    let _crd = CrdGuard::start(&client);
    let (ip, operator) = deploy(&client, &ns, &resource(ns.name())).await;
    let first = ready(&ns, None).await;
    let (old_user, old_password, old_secret) = login(&ns).await;
    publish(&url(&ip, &old_user, &old_password), BACKLOG).await;

    // The generated Secret deleted: a new one, new credentials, the broker restarted with them.
    let secrets = ns.api::<Secret>();
    secrets
        .delete("dev-rabbitmq", &DeleteParams::default())
        .await
        .unwrap();
    let renewed = eventually("a new Secret", GUARD, || async {
        let s = secrets.get_opt("dev-rabbitmq").await.ok()??;
        (s.uid() != old_secret.uid()).then_some(s)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let user = secret_value(&renewed, "username").unwrap();
    let password = secret_value(&renewed, "password").unwrap();
    assert_ne!(password, old_password);
    let second = ready(&ns, first.uid().as_deref()).await;
    let amqp = url(&ip, &user, &password);
    let found = message_ids(&amqp).await;
    eprintln!(
        "Secret re-created: the new login works, {} of {BACKLOG} messages there",
        found.len()
    );
    assert_eq!(found, expected(BACKLOG));

    // Deleted with whenDeleted: Retain (the default): claim and Secret stay.
    operator.stop().await;
    let claim_before = ns
        .api::<PersistentVolumeClaim>()
        .get("dev-rabbitmq-data")
        .await
        .unwrap();
    ns.api::<SwappoMessaging>()
        .delete("dev", &DeleteParams::foreground())
        .await
        .unwrap();
    let (sets, pods) = (ns.api::<StatefulSet>(), ns.api::<Pod>());
    let gone = Instant::now();
    eventually(
        "the resource, its StatefulSet and pod gone",
        GUARD,
        || async {
            let left = ns
                .api::<SwappoMessaging>()
                .get_opt("dev")
                .await
                .ok()?
                .is_some()
                || sets.get_opt("dev-rabbitmq").await.ok()?.is_some()
                || pods.get_opt("dev-rabbitmq-0").await.ok()?.is_some()
                || !running_brokers(ns.name()).await.is_empty();
            (!left).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("deleted in {:.1} s", gone.elapsed().as_secs_f64());
    assert!(second.uid().is_some());
    let kept = secrets
        .get("dev-rabbitmq")
        .await
        .expect("the Secret is kept");
    assert_eq!(kept.uid(), renewed.uid());
    let claim = ns
        .api::<PersistentVolumeClaim>()
        .get("dev-rabbitmq-data")
        .await
        .expect("the claim is kept");
    assert_eq!(claim.uid(), claim_before.uid());

    // Re-created: the same claim, the same login, the same messages.
    let (ip, operator) = deploy(&client, &ns, &resource(ns.name())).await;
    ready(&ns, None).await;
    let found = message_ids(&url(&ip, &user, &password)).await;
    eprintln!(
        "re-created: the kept login works, {} of {BACKLOG} messages there",
        found.len()
    );
    assert_eq!(found, expected(BACKLOG));
    operator.stop().await;
    // The claim is retained by design: delete it (and its volume goes with the namespace).
    ns.api::<PersistentVolumeClaim>()
        .delete("dev-rabbitmq-data", &DeleteParams::default())
        .await
        .unwrap();
}

/// Runs `scripts/cluster-up.sh --restart-containerd` (stops the node's containerd by its
/// recorded pid, starts it again with the same configuration, waits until it answers).
async fn restart_containerd() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster-up.sh");
    let out = tokio::process::Command::new("bash")
        .arg(script)
        .arg("--restart-containerd")
        .output()
        .await
        .expect("bash runs");
    assert!(
        out.status.success(),
        "cluster-up.sh --restart-containerd failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_and_its_running_broker_survive_a_restart_of_the_nodes_containerd() {
    let Some(client) = node().await else {
        return;
    };
    let ns = TestNamespace::new("broker-ctrd-").await;
    let _crd = CrdGuard::start(&client);
    let (ip, operator) = deploy(&client, &ns, &resource(ns.name())).await;
    let pod = ready(&ns, None).await;
    let (user, password, _) = login(&ns).await;
    let amqp = url(&ip, &user, &password);
    publish(&amqp, BACKLOG).await;
    let _runtime = NODE_RUNTIME.write().await;
    let before = running_brokers(ns.name()).await;
    assert_eq!(before.len(), 1, "{before:?}");
    let sampler = Sampler::start(&ns).await;

    let restarted = Instant::now();
    restart_containerd().await;
    eprintln!(
        "containerd stopped and answering again after {:.1} s",
        restarted.elapsed().as_secs_f64()
    );
    // The kubelet back in touch with the runtime: the node Ready for 15 s in a row (longer than
    // the kubelet's 10 s status period, in which it reports a runtime it found down), the pod
    // Ready, and the same container running (containerd's restart leaves its shims alone).
    let nodes = kube::Api::<k8s_openapi::api::core::v1::Node>::all(client.clone());
    let node_ready = || async {
        let node = nodes.get(NODE_NAME).await.ok()?;
        let conditions = node.status?.conditions?;
        Some(
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
        )
    };
    let (settle, mut ready_since) = (Duration::from_secs(15), None::<Instant>);
    while ready_since.is_none_or(|t| t.elapsed() < settle) {
        assert!(
            restarted.elapsed() < GUARD,
            "the node not Ready for 15 s in a row within {GUARD:?} of containerd's restart"
        );
        match node_ready().await {
            Some(true) => ready_since = ready_since.or(Some(Instant::now())),
            _ => ready_since = None,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let after = ready(&ns, None).await;
    assert_eq!(after.uid(), pod.uid(), "the same broker pod");
    let restarts = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|c| c[0].restart_count)
    };
    assert_eq!(
        restarts(&after),
        restarts(&pod),
        "the broker container was not restarted"
    );
    assert_eq!(
        running_brokers(ns.name()).await,
        before,
        "the same broker container runs on"
    );
    let samples = sampler.finish().await;
    eprintln!(
        "{} process samples over {:.0} s around the restart: broker processes on the volume at \
         each change {:?}",
        samples.count.0,
        restarted.elapsed().as_secs_f64(),
        samples
            .changes
            .iter()
            .map(|(_, ids)| ids.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        samples.changes.len(),
        1,
        "one broker process, the same, at every sample (no stop, no second one): {samples:?}"
    );
    assert_eq!(samples.most_processes, 1, "{samples:?}");

    let found = message_ids(&amqp).await;
    eprintln!(
        "{} of {BACKLOG} messages there after containerd's restart",
        found.len()
    );
    assert_eq!(found, expected(BACKLOG));
    operator.stop().await;
}

/// The broker node's memory as its management API reports it.
#[derive(Clone, Copy, Debug)]
struct Memory {
    used: u64,
    /// The high watermark in bytes (`mem_limit`): publishers are blocked above it.
    watermark: u64,
    alarm: bool,
}

async fn broker_memory(
    http: &reqwest::Client,
    ip: &str,
    user: &str,
    password: &str,
) -> Option<Memory> {
    let nodes: serde_json::Value = http
        .get(format!("http://{ip}:15672/api/nodes"))
        .basic_auth(user, Some(password))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let node = nodes.get(0)?;
    Some(Memory {
        used: node["mem_used"].as_u64()?,
        watermark: node["mem_limit"].as_u64()?,
        alarm: node["mem_alarm"].as_bool()?,
    })
}

/// Bytes per message and messages of the sustained publish: 384 MiB, more than the 246 MiB
/// watermark of a 512Mi container and nearly what the container holds in all, and nearly four
/// rollovers of the 102 MiB quorum WAL the operator derived (RabbitMQ's default 512 MiB WAL is
/// held in memory until it rolls over). Measured on a quiet machine: 2.3 s, RabbitMQ's memory
/// peak 151 MiB, no alarm. A 1 GiB run by hand (8192 messages) was confirmed whole without an
/// OOM kill too, but took 906 s: past 317 MiB the memory alarm stayed on for most of the run
/// (publishers blocked at the watermark, as configured; the memory came back slowly): too slow
/// for `make test`, and recorded in issue 19's note.
const BODY_BYTES: usize = 128 << 10;
const SUSTAINED: usize = 3072;
/// Publishes in flight before waiting for their confirms (keeps the broker busy).
const WINDOW: usize = 64;

#[tokio::test(flavor = "multi_thread")]
async fn a_sustained_publish_past_the_watermark_is_confirmed_whole_and_never_oom_kills_the_broker()
{
    let Some(client) = node().await else {
        return;
    };
    let _runtime = NODE_RUNTIME.read().await;
    let ns = TestNamespace::new("broker-mem-").await;
    let _crd = CrdGuard::start(&client);
    let sm = resource(ns.name());
    let limit = 512u64 << 20;
    let (ip, operator) = deploy(&client, &ns, &sm).await;
    let pod = ready(&ns, None).await;
    let (user, password, _) = login(&ns).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let at_start = eventually("the management API answers", GUARD, || {
        broker_memory(&http, &ip, &user, &password)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        at_start.watermark,
        swappo_operator::builders::broker::memory_high_watermark(limit),
        "RabbitMQ runs with the absolute watermark derived from the 512Mi limit"
    );

    // Memory sampled every 250 ms while the publish runs.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, http, ip, user, password) = (
            stop.clone(),
            http.clone(),
            ip.clone(),
            user.clone(),
            password.clone(),
        );
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                if let Some(m) = broker_memory(&http, &ip, &user, &password).await {
                    samples.push(m);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            samples
        })
    };
    let started = Instant::now();
    let conn = Connection::connect(&url(&ip, &user, &password), ConnectionProperties::default())
        .await
        .expect("the broker takes the login");
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let body = vec![b'x'; BODY_BYTES];
    let mut confirmed = 0;
    for chunk in (0..SUSTAINED).collect::<Vec<_>>().chunks(WINDOW) {
        let mut pending = Vec::with_capacity(chunk.len());
        for i in chunk {
            let confirm = ch
                .basic_publish(
                    "".into(),
                    QUEUE.into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default()
                        .with_message_id(format!("m-{i}").into())
                        .with_delivery_mode(2),
                )
                .await
                .unwrap();
            pending.push(confirm);
        }
        for confirm in pending {
            let c = tokio::time::timeout(GUARD, confirm)
                .await
                .expect("confirmed within the guard: publishers are released")
                .unwrap();
            assert!(c.is_ack());
            confirmed += 1;
        }
    }
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    // The readings before and right after the publish always count, whatever the sampler
    // caught in between (a fast publish can end before its first 250 ms tick).
    let at_end = broker_memory(&http, &ip, &user, &password)
        .await
        .expect("the management API answers after the publish");
    assert_eq!(
        at_end.watermark, at_start.watermark,
        "the derived watermark holds after the publish"
    );
    let mut samples = sampler.await.unwrap();
    samples.extend([at_start, at_end]);
    let depth = ch
        .queue_declare(
            QUEUE.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count();
    conn.close(200, "done".into()).await.unwrap();

    let peak = samples.iter().map(|m| m.used).max().unwrap_or(0);
    let alarms = samples.iter().filter(|m| m.alarm).count();
    eprintln!(
        "{confirmed} x {} KiB confirmed in {:.1} s; broker memory peak {} MiB of a {} MiB \
         watermark and a {} MiB container limit ({} samples, {alarms} with the memory alarm on)",
        BODY_BYTES >> 10,
        took.as_secs_f64(),
        peak >> 20,
        at_start.watermark >> 20,
        limit >> 20,
        samples.len(),
    );
    assert_eq!(confirmed, SUSTAINED);
    assert_eq!(
        depth as usize, SUSTAINED,
        "every confirmed message is in the queue"
    );
    let after = ns.api::<Pod>().get("dev-rabbitmq-0").await.unwrap();
    assert_eq!(after.uid(), pod.uid(), "the same broker pod");
    let status = after
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|c| c[0].clone())
        .unwrap();
    assert_eq!(
        status.restart_count, 0,
        "never restarted (OOM-killed): {status:?}"
    );
    assert!(
        peak < limit,
        "RabbitMQ's own count stays below the container limit: {peak}"
    );
    operator.stop().await;
}
