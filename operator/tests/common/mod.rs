//! Shared helpers of the operator's control-plane tests: cluster access (skip or fail),
//! CRD installation, the operator in-process or as a process, volumes for the broker's claim.
#![allow(dead_code)]

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, Namespace, ObjectReference, PersistentVolume, PersistentVolumeSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams};
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use swappo_operator::context::{Context, Settings};
use swappo_operator::controller::run_controller;
use swappo_operator::metrics::Metrics;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Generous failure guard for anything the control plane does (not a timing assertion).
pub const WAIT: Duration = Duration::from_secs(90);

/// A client of the local control plane, or `None` (test skipped, said on stderr) when it is
/// unreachable and `SWAPPO_REQUIRE_CLUSTER` is unset. With `SWAPPO_REQUIRE_CLUSTER=1`
/// (`make test`, CI) an unreachable cluster fails the test instead.
pub async fn cluster() -> Option<Client> {
    let required = std::env::var("SWAPPO_REQUIRE_CLUSTER").is_ok_and(|v| !v.is_empty() && v != "0");
    let reach = async {
        let config = swappo_testkit::kube_config()
            .await
            .map_err(|e| e.to_string())?;
        let client = Client::try_from(config).map_err(|e| e.to_string())?;
        client
            .apiserver_version()
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(client)
    };
    match tokio::time::timeout(Duration::from_secs(10), reach).await {
        Ok(Ok(client)) => Some(client),
        Ok(Err(e)) if !required => skip(&e),
        Err(_) if !required => skip("the API server did not answer within 10 s"),
        Ok(Err(e)) => {
            panic!("SWAPPO_REQUIRE_CLUSTER is set but the control plane is unreachable: {e}")
        }
        Err(_) => {
            panic!("SWAPPO_REQUIRE_CLUSTER is set but the API server did not answer within 10 s")
        }
    }
}

fn skip(why: &str) -> Option<Client> {
    eprintln!(
        "SKIPPED: no local control plane ({why}); run `make cluster-up`, or set \
         SWAPPO_REQUIRE_CLUSTER=1 to fail instead of skipping"
    );
    None
}

/// Installs (server-side applies) the CRD and waits until it is Established.
pub async fn install_crd(client: &Client) {
    let crd = swappo_operator::crd::crd();
    swappo_testkit::apply_crd(client, &crd, "swappo-operator-tests", WAIT)
        .await
        .unwrap_or_else(|e| panic!("the CRD is established: {e}"));
}

/// Labels the namespace `pod-security.kubernetes.io/enforce=restricted`.
pub async fn enforce_restricted(client: &Client, namespace: &str) {
    let patch = serde_json::json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }}});
    Api::<Namespace>::all(client.clone())
        .patch(namespace, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("the namespace is labelled");
}

/// Settings for an in-process operator dialling the local broker.
pub fn local_broker_settings() -> Settings {
    Settings {
        broker_override: Some(swappo_operator::broker::amqp::Target {
            host: "127.0.0.1".into(),
            port: 5672,
            tls: false,
        }),
        amqp_timeout: Duration::from_secs(5),
        recheck: Duration::from_secs(30),
        retry: Duration::from_secs(2),
        instance: "operator-tests".into(),
        concurrency: 4,
        ..Settings::default()
    }
}

/// The controller running in this test's runtime, watching one namespace.
pub struct InProcess {
    pub metrics: Arc<Metrics>,
    /// Its context (the caches, once its watches started).
    pub ctx: Arc<Context>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl InProcess {
    /// Starts the controller for `namespace`.
    pub fn start(client: &Client, namespace: &str, settings: Settings) -> Self {
        // `SWAPPO_TEST_LOG=<filter>`: the controller's logs in the test output.
        if let Ok(filter) = std::env::var("SWAPPO_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
        let metrics = Arc::new(Metrics::default());
        let ctx = Arc::new(Context::new(client.clone(), metrics.clone(), settings));
        let stop = CancellationToken::new();
        let ns = namespace.to_owned();
        let token = stop.clone();
        let shared = ctx.clone();
        let task = tokio::spawn(async move { run_controller(ctx, Some(&ns), token).await });
        Self {
            metrics,
            ctx: shared,
            stop,
            task,
        }
    }

    /// Stops it and waits for it to finish.
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the controller stops")
            .unwrap();
    }

    /// A metric's value from the exposition (0 when absent).
    pub fn metric(&self, name: &str) -> f64 {
        metric(&self.metrics.encode(), name)
    }
}

/// The sum of the samples of `name` (with any labels) in a Prometheus exposition.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The operator binary as a child process; its stdout and stderr are captured.
pub struct Process {
    child: Child,
    log: Arc<Mutex<String>>,
    pub identity: String,
}

impl Process {
    /// Spawns `swappo-operator` with `args`, JSON logs, filter `log_filter`: the binary at
    /// `$SWAPPO_OPERATOR_BIN` when set (the benchmarks' release build), else this package's.
    pub fn spawn(identity: &str, log_filter: &str, args: &[&str]) -> Self {
        let kubeconfig = kubeconfig_path();
        let binary = std::env::var_os("SWAPPO_OPERATOR_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_swappo-operator")));
        let mut child = Command::new(binary)
            .args(args)
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--identity",
                identity,
            ])
            .args(["--log-filter", log_filter])
            .env("KUBECONFIG", kubeconfig)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the operator binary starts");
        let log = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        Self {
            child,
            log,
            identity: identity.to_owned(),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The address of its HTTP server, from its start-up log line.
    pub async fn http_addr(&self) -> String {
        swappo_testkit::eventually("the operator's HTTP address in its log", WAIT, || async {
            self.log().lines().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                (v["fields"]["message"] == "serving /metrics, /healthz, /readyz")
                    .then(|| v["fields"]["addr"].as_str().map(str::to_owned))?
            })
        })
        .await
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", self.log()))
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self) -> String {
        let addr = self.http_addr().await;
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("/metrics answers")
            .text()
            .await
            .unwrap()
    }

    /// SIGKILL: no lease release, no clean-up (a crashed replica).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// SIGTERM, then waits for the exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..300 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill();
        false
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The kubeconfig the tests use (what the testkit reads).
pub fn kubeconfig_path() -> PathBuf {
    match std::env::var("KUBECONFIG") {
        Ok(k) if !k.is_empty() => PathBuf::from(k),
        _ => swappo_testkit::kube::local_kubeconfig_path(),
    }
}

/// A PersistentVolume pre-bound to one claim (the local cluster has no provisioner), deleted
/// when dropped: it is cluster-scoped, so the namespace's deletion does not remove it.
pub struct BoundVolume {
    name: String,
}

impl BoundVolume {
    /// A 1Gi volume for claim `namespace/claim`.
    pub async fn new(client: &Client, namespace: &str, claim: &str) -> Self {
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
                capacity: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity("1Gi".into()),
                )])),
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
            .create(&Default::default(), &pv)
            .await
            .expect("the volume is created");
        Self { name }
    }
}

impl Drop for BoundVolume {
    fn drop(&mut self) {
        let name = self.name.clone();
        // A fresh client on a thread of its own: the test's runtime is blocked in drop.
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    if let Some(client) = cluster_quiet().await {
                        let _ = Api::<PersistentVolume>::all(client)
                            .delete(&name, &DeleteParams::default())
                            .await;
                    }
                })
        })
        .join()
        .ok();
    }
}

async fn cluster_quiet() -> Option<Client> {
    let config = swappo_testkit::kube_config().await.ok()?;
    Client::try_from(config).ok()
}

/// A broker user on the local RabbitMQ, deleted when dropped.
pub struct BrokerUser {
    name: String,
}

impl BrokerUser {
    /// Creates `name` with `password` and access to vhost `/`.
    pub async fn new(name: &str, password: &str) -> Self {
        swappo_testkit::Management::from_env()
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
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let _ = swappo_testkit::Management::from_env()
                        .delete_user(&name)
                        .await;
                })
        })
        .join()
        .ok();
    }
}

/// The local broker's test user's password (what `make testenv-deps` sets).
pub fn password() -> String {
    std::env::var("SWAPPO_TEST_PASSWORD").unwrap_or_else(|_| "swappo-local-test".into())
}

/// The Secret `broker-login` in `ns` with the local broker's test login (for resources that
/// name it in `spec.broker.credentialsSecret`).
pub async fn login_secret(ns: &swappo_testkit::TestNamespace) {
    let s: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "broker-login"},
        "stringData": {"username": "swappo", "password": password()}
    }))
    .unwrap();
    ns.api::<k8s_openapi::api::core::v1::Secret>()
        .patch(
            "broker-login",
            &PatchParams::apply("operator-tests").force(),
            &Patch::Apply(&s),
        )
        .await
        .unwrap();
}
