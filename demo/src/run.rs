//! One demo run on the real node, start to finish: the operator's Secret, the services' pods
//! serving, the load with its live view (pods included) and the outage drill, the drain, the
//! account by event id. Everything it drives runs as pods that `scripts/demo.sh` installed
//! with helm; the script removes them afterwards.
use crate::config::{self, Config};
use crate::drill::{self, Action, Drill, Fault, Injected, Observed};
use crate::faults;
use crate::load::{self, Counters, Endpoints, Targets};
use crate::observe::{self, Observer};
use crate::plan;
use crate::summary::Totals;
use crate::view::Snapshot;
use crate::{account, cluster};
use anyhow::{Context as _, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The databases of the demo's services, named after its namespace (`swappo-demo` ->
/// `swappo_demo_matchmaking`, `swappo_demo_notifications`); `scripts/demo.sh` creates them
/// afresh on every run and puts their URLs in the services' Secrets.
pub fn database_names(namespace: &str) -> [String; 2] {
    let base = namespace.replace(['-', '.'], "_");
    [
        format!("{base}_matchmaking"),
        format!("{base}_notifications"),
    ]
}

/// How long the services' pods may take to serve: the broker pod starts first (its readiness
/// probe alone waits 10 s, then checks every 10 s), then the services connect and migrate.
const READY_WITHIN: Duration = Duration::from_secs(240);
/// The services' HTTP port in their pods (the charts' default).
const SERVICE_PORT: u16 = 8080;

/// Ctrl-C and SIGTERM, counted: the first stops the load and drains, the second skips the drain.
fn signals() -> (CancellationToken, CancellationToken) {
    let (first, second) = (CancellationToken::new(), CancellationToken::new());
    let (f, s) = (first.clone(), second.clone());
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        for token in [f, s] {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            token.cancel();
        }
    });
    (first, second)
}

async fn kube_client(path: &std::path::Path) -> anyhow::Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {} (make cluster-up?)", path.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("kubeconfig")?;
    kube::Client::try_from(cfg).context("kube client")
}

/// The Secret's `username` and `password` (the script waited for the Secret to exist).
async fn credentials(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> anyhow::Result<(String, String)> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = api
        .get(name)
        .await
        .with_context(|| format!("reading the broker Secret {ns}/{name}"))?;
    let data = secret.data.unwrap_or_default();
    let get = |k: &str| {
        data.get(k)
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .filter(|v| !v.is_empty())
    };
    match (get("username"), get("password")) {
        (Some(u), Some(p)) => Ok((u, p)),
        _ => bail!("the Secret {ns}/{name} has no username/password"),
    }
}

fn say(msg: &str) {
    eprintln!("[demo] {msg}");
}

fn url_of(pod: &cluster::PodRow) -> Option<String> {
    Some(format!("http://{}:{SERVICE_PORT}", pod.ip.as_ref()?))
}

/// The endpoints of serving pods, once matchmaking serves and a notifications consumer is
/// subscribed to the queue (its `/ready` says `consuming`).
async fn wait_serving(observer: &Observer, http: &reqwest::Client) -> anyhow::Result<Endpoints> {
    let deadline = Instant::now() + READY_WITHIN;
    let mut last_said = Instant::now();
    loop {
        let pods = cluster::pods(&observer.client, &observer.namespace)
            .await
            .unwrap_or_default();
        let mm = cluster::serving(&pods, &observer.matchmaking_selector()).and_then(url_of);
        let nf = cluster::serving(&pods, &observer.consumer_selector()).and_then(url_of);
        if let (Some(mm), Some(nf)) = (mm, nf) {
            let consuming = match http.get(format!("{nf}/ready")).send().await {
                Ok(r) if r.status().is_success() => r
                    .json::<serde_json::Value>()
                    .await
                    .is_ok_and(|b| b["consumer"] == "consuming"),
                _ => false,
            };
            if consuming {
                return Ok(Endpoints {
                    matchmaking: mm,
                    notifications: nf,
                });
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the services did not serve within {}s:\n{}\nsee `kubectl describe pods -n {}` and their logs",
                READY_WITHIN.as_secs(),
                crate::view::pod_table(&pods),
                observer.namespace
            );
        }
        if last_said.elapsed() >= Duration::from_secs(10) {
            say(&format!(
                "waiting for the pods to serve:\n{}",
                crate::view::pod_table(&pods)
            ));
            last_said = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Runs the demo; `Ok(true)` when nothing was lost and every drilled fault recovered.
pub async fn run(cfg: Config) -> anyhow::Result<bool> {
    let (first_signal, second_signal) = signals();
    let client = kube_client(&cfg.kubeconfig).await?;
    let login = credentials(&client, &cfg.namespace, &cfg.secret).await?;
    let [mm, nf] = database_names(&cfg.namespace);
    let observer = Observer::new(
        client.clone(),
        cfg.namespace.clone(),
        cfg.name.clone(),
        cfg.deployment.clone(),
        cfg.matchmaking.clone(),
        cfg.queue.clone(),
        login,
        lazy_pool(&config::database_url(&cfg.database_url, &mm)?)?,
        lazy_pool(&config::database_url(&cfg.database_url, &nf)?)?,
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    say("waiting for matchmaking and a notifications consumer to serve (pods on the node)");
    // Ctrl-C during start-up ends the run at once (nothing to drain yet).
    let endpoints = tokio::select! {
        r = wait_serving(&observer, &http) => r?,
        _ = first_signal.cancelled() => bail!("interrupted during start-up"),
    };
    if let Some(t0) = cfg.started_at {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(t0);
        say(&format!(
            "start-up took {}s (from `make demo` to every part serving)",
            now.saturating_sub(t0)
        ));
    }
    drive(
        &cfg,
        &client,
        &observer,
        endpoints,
        first_signal,
        second_signal,
    )
    .await
}

/// Everything [`Observed`] needs from one snapshot.
fn observed(s: &Snapshot, observer: &Observer, name: &str, mid_batch: Vec<String>) -> Observed {
    let consumers = cluster::matching(&s.pods, &observer.consumer_selector());
    Observed {
        elapsed: s.elapsed,
        ready_broker_uids: cluster::matching(&s.pods, &cluster::broker_selector(name))
            .into_iter()
            .filter(|p| p.serving())
            .map(|p| p.uid.clone())
            .collect(),
        queue_consumers: s.queue_consumers,
        mid_batch,
        consumers_ready: s.replicas.map(|wanted| {
            (
                consumers.iter().filter(|p| p.serving()).count() as i32,
                wanted,
            )
        }),
        consumer_restarts: consumers.iter().map(|p| p.restarts).sum(),
        published: s.published,
        stored: s.stored,
    }
}

/// Injects `fault`; the target in words.
async fn inject(
    cfg: &Config,
    client: &kube::Client,
    observer: &Observer,
    pods: &[cluster::PodRow],
    fault: Fault,
    peer: Option<&str>,
) -> anyhow::Result<String> {
    match fault {
        Fault::BrokerPod => {
            let pod = cluster::serving(pods, &cluster::broker_selector(&cfg.name))
                .context("no serving broker pod to kill")?;
            faults::kill_broker_pod(client, &cfg.namespace, pod).await?;
            Ok(format!("pod {}", pod.name))
        }
        Fault::ConsumerMidBatch => {
            let consumers = cluster::matching(pods, &observer.consumer_selector());
            let pod = peer
                .and_then(|ip| {
                    consumers
                        .iter()
                        .find(|p| p.serving() && p.ip.as_deref() == Some(ip))
                })
                .or_else(|| consumers.iter().find(|p| p.serving()))
                .context("no serving consumer pod to kill")?;
            faults::kill_container(&cfg.crictl, &cfg.containerd_sock, pod).await?;
            Ok(format!(
                "pod {}, SIGKILL{}",
                pod.name,
                if peer.is_some() {
                    " with unacked messages in hand"
                } else {
                    ", no batch in hand seen"
                }
            ))
        }
        Fault::DatabaseRestart => {
            faults::restart_database(&cfg.pg_bin_dir, &cfg.pg_data).await?;
            Ok("PostgreSQL, pg_ctl restart -m immediate".into())
        }
    }
}

/// The load and the live view, the drill, the drain and the account.
async fn drive(
    cfg: &Config,
    client: &kube::Client,
    observer: &Observer,
    endpoints: Endpoints,
    first_signal: CancellationToken,
    second_signal: CancellationToken,
) -> anyhow::Result<bool> {
    let counters = Arc::new(Counters::default());
    let metrics_http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let endpoints = Arc::new(std::sync::RwLock::new(endpoints));
    let load_stop = CancellationToken::new();
    let start = Instant::now();
    let mut driver = Some(load::start(
        Targets {
            endpoints: endpoints.clone(),
            users: cfg.users,
        },
        cfg.workers,
        counters.clone(),
        start,
        load_stop.clone(),
    ));
    let tty = std::io::stdout().is_terminal();
    let title = format!("swappo demo ({}/{})", cfg.namespace, cfg.name);
    say(&format!(
        "load running{}{}",
        cfg.duration
            .map(|d| format!(" for {d}s"))
            .unwrap_or_else(|| " until Ctrl-C".into()),
        if cfg.outage {
            format!(
                "; outage drill from t={}s: {}",
                drill::FIRST_AT.as_secs(),
                Fault::ALL.map(Fault::name).join(", then ")
            )
        } else {
            String::new()
        }
    ));
    let mut last: Option<(Instant, Snapshot)> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut lines = 0u64;
    // In a log (no terminal), the pod table is printed whenever it changes.
    let mut last_pods = String::new();
    let mut last_drill: Vec<String> = vec![];
    // Load, then drain: the same refresh loop, the phase says which.
    let mut draining_since: Option<Instant> = None;
    let mut drill = Drill::default();
    let drain = Duration::from_secs(cfg.drain_seconds);
    let outcome = loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = first_signal.cancelled(), if draining_since.is_none() => {}
            _ = second_signal.cancelled() => {}
        }
        let mut s = Snapshot {
            elapsed: start.elapsed(),
            phase: if draining_since.is_some() {
                "stopped, draining"
            } else {
                plan::phase_at(start.elapsed()).name()
            },
            offers: counters.offers.load(Relaxed),
            changes: counters.changes.load(Relaxed),
            read_back: counters.read_back.load(Relaxed),
            request_errors: counters.errors.load(Relaxed),
            ..Snapshot::default()
        };
        let (pods, mid_batch) = observer.fill(&mut s).await;
        // The driver follows the pods: a serving matchmaking and notifications pod each.
        if let Ok(mut e) = endpoints.write() {
            if let Some(url) =
                cluster::serving(&pods, &observer.matchmaking_selector()).and_then(url_of)
            {
                e.matchmaking = url;
            }
            let consumers = cluster::matching(&pods, &observer.consumer_selector());
            if !consumers
                .iter()
                .any(|p| p.serving() && url_of(p).as_ref() == Some(&e.notifications))
                && let Some(url) = consumers
                    .iter()
                    .find(|p| p.serving())
                    .and_then(|p| url_of(p))
            {
                e.notifications = url;
            }
        }
        let consumer_urls: Vec<String> = cluster::matching(&pods, &observer.consumer_selector())
            .into_iter()
            .filter(|p| p.serving())
            .filter_map(url_of)
            .collect();
        s.duplicates = observe::duplicates(&metrics_http, &consumer_urls).await;
        if cfg.outage && draining_since.is_none() && !first_signal.is_cancelled() {
            let o = observed(&s, observer, &cfg.name, mid_batch);
            if let Action::Inject(fault, peer) = drill.decide(&o) {
                let injected = inject(cfg, client, observer, &pods, fault, peer.as_deref()).await;
                let failed = injected.is_err();
                drill.record(Injected {
                    fault,
                    at: o.elapsed,
                    target: injected.unwrap_or_else(|e| format!("could not inject: {e:#}")),
                    broker_uids: o.ready_broker_uids.clone(),
                    consumer_restarts: o.consumer_restarts,
                    published: o.published,
                    stored: o.stored,
                });
                if failed && let Some(step) = drill.steps.last_mut() {
                    step.gave_up = true;
                }
            }
        }
        s.drill = drill.steps.iter().map(ToString::to_string).collect();
        let drill_done = !cfg.outage || drill.finished();
        let stop_load = first_signal.is_cancelled()
            || (drill_done && cfg.duration().is_some_and(|d| start.elapsed() >= d));
        if stop_load && draining_since.is_none() {
            load_stop.cancel();
            // Offers in hand finish first, so the drain sees every outbox row there will be.
            if let Some(d) = driver.take() {
                d.wait().await;
            }
            draining_since = Some(Instant::now());
        }
        if let Some((at, prev)) = &last {
            let secs = at.elapsed().as_secs_f64().max(0.001);
            let per_sec = |now: Option<u64>, before: Option<u64>| {
                Some(now?.saturating_sub(before?) as f64 / secs)
            };
            s.published_rate = per_sec(s.published, prev.published);
            s.stored_rate = per_sec(s.stored, prev.stored);
        }
        if tty {
            print!("\x1b[H\x1b[2J{}", s.render(&title));
        } else {
            if lines.is_multiple_of(5) || draining_since.is_some() {
                println!("{}", s.line());
            }
            let pods = crate::view::pod_table(&s.pods);
            if pods != last_pods {
                println!("{pods}");
                last_pods = pods;
            }
            for (k, step) in s.drill.iter().enumerate() {
                if last_drill.get(k) != Some(step) {
                    println!("drill: {step}");
                }
            }
            last_drill.clone_from(&s.drill);
        }
        let _ = std::io::stdout().flush();
        lines += 1;
        if let Some(since) = draining_since {
            let drained = s.outbox.is_some()
                && s.outbox == s.published
                && s.depth() == Some(0)
                && match (s.published, s.stored, s.dead_lettered) {
                    (Some(p), Some(st), Some(d)) => st + d == p,
                    _ => false,
                };
            if drained || since.elapsed() > drain || second_signal.is_cancelled() {
                break s;
            }
        }
        last = Some((Instant::now(), s));
    };
    if let Some(d) = driver.take() {
        d.wait().await;
    }
    let dead_lettered = outcome.dead_lettered.unwrap_or(0);
    let [confirmed, stored, dead] = observer.ids(dead_lettered).await?;
    let totals = Totals {
        offers: counters.offers.load(Relaxed),
        outbox: outcome.outbox.unwrap_or(0),
        published: confirmed.len() as u64,
        stored: stored.len() as u64,
        dead_lettered,
        in_queue: outcome.depth().unwrap_or(0),
        read_back: counters.read_back.load(Relaxed),
        request_errors: counters.errors.load(Relaxed),
        ids: account::reconcile(&confirmed, &stored, &dead),
    };
    println!();
    println!("{totals}");
    for step in &drill.steps {
        println!("outage drill: {step}");
    }
    if let Some(n) = outcome.duplicates {
        println!("redelivered events skipped as already stored (running consumers): {n}");
    }
    if let Some(e) = counters.last_error.lock().ok().and_then(|e| e.clone()) {
        println!("last request error: {e}");
    }
    let deployment: Api<Deployment> = Api::namespaced(client.clone(), &cfg.namespace);
    if let Ok(d) = deployment.get(&cfg.deployment).await {
        println!(
            "Deployment {} replicas at the end: {}",
            cfg.deployment,
            d.spec.replicas.unwrap_or(0)
        );
    }
    println!("{}", crate::view::pod_table(&outcome.pods));
    let drill_failed = drill.steps.iter().any(|s| s.gave_up);
    if drill_failed {
        println!("result: FAILED, a drilled fault did not recover");
    }
    Ok(totals.verdict().ok() && !drill_failed)
}

fn lazy_pool(url: &str) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy(url)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_demo_namespace_gets_its_own_databases() {
        assert_eq!(
            database_names("swappo-demo"),
            ["swappo_demo_matchmaking", "swappo_demo_notifications"]
        );
        assert_eq!(
            database_names("swappo-demo-check")[0],
            "swappo_demo_check_matchmaking"
        );
    }
}
