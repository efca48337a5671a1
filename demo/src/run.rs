//! One demo run, start to finish: fresh databases and queue, the operator, the broker user
//! matching the operator's Secret, the consumers (as many as the Deployment has replicas),
//! matchmaking, the load with its live view, the drain, the summary, and the stop of every
//! process the demo started.
use crate::broker::Management;
use crate::config::{self, Config};
use crate::load::{self, Counters, Targets};
use crate::observe::{self, Observer};
use crate::plan;
use crate::procs::{Proc, Spec};
use crate::summary::Totals;
use crate::supervise::{self, Supervisor};
use crate::view::Snapshot;
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

/// The databases the demo owns and re-creates on every run, named after its namespace
/// (`swappo-demo` -> `swappo_demo_matchmaking`, `swappo_demo_notifications`).
pub fn database_names(namespace: &str) -> [String; 2] {
    let base = namespace.replace(['-', '.'], "_");
    [
        format!("{base}_matchmaking"),
        format!("{base}_notifications"),
    ]
}
/// Seconds a process may take to answer its readiness probe (first start runs migrations).
const READY_WITHIN: Duration = Duration::from_secs(60);
/// Seconds the operator may take to write the credentials Secret.
const SECRET_WITHIN: Duration = Duration::from_secs(60);

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

/// Drops and creates the demo's databases: counts start at zero on every run.
async fn fresh_databases(admin_url: &str, namespace: &str) -> anyhow::Result<(String, String)> {
    let [mm, nf] = database_names(namespace);
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(admin_url)
        .await
        .context("connecting to PostgreSQL (DATABASE_URL; make testenv-deps?)")?;
    for db in [&mm, &nf] {
        // A namespace name (DNS label: letters, digits, '-') with '-' made '_': no quoting needed.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
        )))
        .execute(&admin)
        .await
        .with_context(|| format!("dropping {db}"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&admin)
            .await
            .with_context(|| format!("creating {db}"))?;
    }
    admin.close().await;
    Ok((
        config::database_url(admin_url, &mm)?,
        config::database_url(admin_url, &nf)?,
    ))
}

/// The Secret's `username` and `password`, once the operator has written it.
async fn credentials(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> anyhow::Result<(String, String)> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + SECRET_WITHIN;
    loop {
        if let Some(secret) = api.get_opt(name).await.context("reading the Secret")? {
            let data = secret.data.unwrap_or_default();
            let get = |k: &str| {
                data.get(k)
                    .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                    .filter(|v| !v.is_empty())
            };
            if let (Some(u), Some(p)) = (get("username"), get("password")) {
                return Ok((u, p));
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the operator wrote no Secret {ns}/{name} within {}s; see its log",
                SECRET_WITHIN.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until `GET url` answers 2xx, while `alive()` says the process still runs.
/// Waits until `url` answers 200 and, with `consuming`, its body says the consumer is
/// subscribed (the notifications service is ready for its API before its queue is declared).
async fn wait_ready(
    name: &str,
    url: &str,
    consuming: bool,
    log: &std::path::Path,
    mut alive: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            if !consuming || body["consumer"] == "consuming" {
                return Ok(());
            }
        }
        if !alive() {
            bail!("{name} exited during start-up; see {}", log.display());
        }
        if Instant::now() > deadline {
            bail!(
                "{name} not ready within {}s ({url}); see {}",
                READY_WITHIN.as_secs(),
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn say(msg: &str) {
    eprintln!("[demo] {msg}");
}

/// What the processes need to know.
struct Started {
    operator: Proc,
    matchmaking: Option<Proc>,
    consumers: Supervisor,
    broker_user: Option<String>,
}

impl Started {
    async fn stop(mut self, management: &Management) {
        say("stopping the consumers, matchmaking and the operator");
        self.consumers.stop_all().await;
        if let Some(m) = self.matchmaking.take() {
            m.stop(Duration::from_secs(15)).await;
        }
        self.operator.stop(Duration::from_secs(15)).await;
        if let Some(user) = &self.broker_user
            && let Err(e) = management.delete_user(user).await
        {
            say(&format!("could not delete the demo's broker user: {e}"));
        }
    }
}

/// Runs the demo; `Ok(true)` when nothing was lost.
pub async fn run(cfg: Config) -> anyhow::Result<bool> {
    let (first_signal, second_signal) = signals();
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("creating {}", cfg.state_dir.display()))?;
    let client = kube_client(&cfg.kubeconfig).await?;
    let management = Management::new(&cfg.management_url)?;

    let [mm, nf] = database_names(&cfg.namespace);
    say(&format!("fresh databases {mm} and {nf}"));
    let (mm_url, nf_url) = fresh_databases(&cfg.database_url, &cfg.namespace).await?;
    say(&format!(
        "fresh queue {q} and {q}.dlq on the local broker (vhost /)",
        q = cfg.queue
    ));
    management.delete_queue(&cfg.queue).await?;
    management
        .delete_queue(&format!("{}.dlq", cfg.queue))
        .await?;

    let bin = |name: &str| cfg.bin_dir.join(name);
    say(&format!(
        "starting swappo-operator (namespace {}, broker override {})",
        cfg.namespace, cfg.amqp_address
    ));
    let operator = Proc::start(
        &Spec {
            name: "operator".into(),
            program: bin("swappo-operator"),
            args: vec![
                format!("--kubeconfig={}", cfg.kubeconfig.display()),
                format!("--namespace={}", cfg.namespace),
                format!("--http-addr={}", cfg.addr(0)),
                format!("--broker-address-override={}", cfg.amqp_address),
                "--leader-election=false".into(),
                // Retry a broker that is not ready yet every 3 s, not 10: the demo creates
                // the broker user only once the operator has written the Secret.
                "--retry-seconds=3".into(),
            ]
            .into_iter()
            .chain(cfg.operator_args.split_whitespace().map(String::from))
            .collect(),
            env: vec![],
        },
        &cfg.state_dir,
    )?;
    let mut started = Started {
        operator,
        matchmaking: None,
        consumers: Supervisor::new(cfg.state_dir.clone(), |_| unreachable_spec()),
        broker_user: None,
    };
    let result = async {
        // Ctrl-C during start-up ends the run at once (nothing to drain yet).
        let running = tokio::select! {
            r = start_processes(&cfg, &client, &management, &mut started, mm_url, nf_url) => r?,
            _ = first_signal.cancelled() => bail!("interrupted during start-up"),
        };
        drive(
            &cfg,
            &client,
            &management,
            &mut started,
            running,
            first_signal,
            second_signal,
        )
        .await
    }
    .await;
    started.stop(&management).await;
    let still = leftover_pids(&cfg.state_dir);
    if !still.is_empty() {
        say(&format!(
            "processes still running after the stop: {still:?}"
        ));
    }
    result
}

fn unreachable_spec() -> Spec {
    Spec {
        name: "none".into(),
        program: "false".into(),
        args: vec![],
        env: vec![],
    }
}

/// Pid files whose process still runs.
fn leftover_pids(dir: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|p| p.trim().to_string())
        .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        .collect()
}

/// What the load and the view need from start-up.
struct Running {
    observer: Observer,
    user: String,
    mm_api: String,
    nf_api: String,
}

/// Credentials, broker user, consumers and matchmaking, each waited for until ready.
async fn start_processes(
    cfg: &Config,
    client: &kube::Client,
    management: &Management,
    started: &mut Started,
    mm_url: String,
    nf_url: String,
) -> anyhow::Result<Running> {
    let secret = format!("{}-rabbitmq", cfg.name);
    say(&format!(
        "waiting for the operator's Secret {}/{secret}",
        cfg.namespace
    ));
    let (user, password) = credentials(client, &cfg.namespace, &secret).await?;
    say(&format!(
        "creating broker user {user:?} from the Secret on the local broker (the operator's broker pod would have it)"
    ));
    management.put_user(&user, &password).await?;
    started.broker_user = Some(user.clone());
    let amqp = config::amqp_url(&cfg.amqp_address, &user, &password);

    let observer = Observer {
        management: management.clone(),
        client: client.clone(),
        namespace: cfg.namespace.clone(),
        name: cfg.name.clone(),
        deployment: cfg.deployment.clone(),
        queue: cfg.queue.clone(),
        matchmaking: lazy_pool(&mm_url)?,
        notifications: lazy_pool(&nf_url)?,
    };

    let (nf_amqp, nf_db, queue, base) = (
        amqp.clone(),
        nf_url.clone(),
        cfg.queue.clone(),
        cfg.port_base,
    );
    let bin = cfg.bin_dir.join("swappo-notifications");
    started.consumers = Supervisor::new(cfg.state_dir.clone(), move |i| Spec {
        name: format!("notifications-{i}"),
        program: bin.clone(),
        args: vec![],
        env: vec![
            ("DATABASE_URL".into(), nf_db.clone()),
            ("RABBITMQ_URL".into(), nf_amqp.clone()),
            ("QUEUE_NAME".into(), queue.clone()),
            (
                "BIND_ADDR".into(),
                format!("127.0.0.1:{}", base + 10 + i as u16),
            ),
        ],
    });
    let replicas = observer.deployment().await.and_then(|(r, _)| r);
    let first = supervise::wanted(replicas, 1, cfg.max_consumers).max(1);
    say(&format!(
        "starting {first} notifications consumer(s), one per replica of Deployment {}",
        cfg.deployment
    ));
    started.consumers.converge(first).await?;
    let nf_api = format!("http://{}", cfg.addr(10));
    // The first consumer declares the queue and migrates the schema: wait for it.
    let consumers = &mut started.consumers;
    wait_ready(
        "notifications-0",
        &format!("{nf_api}/ready"),
        true,
        &cfg.state_dir.join("notifications-0.log"),
        || consumers.alive(),
    )
    .await?;

    say("starting swappo-matchmaking");
    let mut mm = Proc::start(
        &Spec {
            name: "matchmaking".into(),
            program: cfg.bin_dir.join("swappo-matchmaking"),
            args: vec![],
            env: vec![
                ("DATABASE_URL".into(), mm_url.clone()),
                ("RABBITMQ_URL".into(), amqp.clone()),
                ("LISTEN_ADDR".into(), cfg.addr(1)),
                ("NOTIFICATIONS_QUEUE".into(), cfg.queue.clone()),
            ],
        },
        &cfg.state_dir,
    )?;
    let mm_api = format!("http://{}", cfg.addr(1));
    let ready = wait_ready(
        "matchmaking",
        &format!("{mm_api}/ready"),
        false,
        &cfg.state_dir.join("matchmaking.log"),
        || mm.is_running(),
    )
    .await;
    started.matchmaking = Some(mm);
    ready?;
    Ok(Running {
        observer,
        user,
        mm_api,
        nf_api,
    })
}

/// The load and the live view, the drain and the account; `Ok(true)` when nothing was lost.
async fn drive(
    cfg: &Config,
    client: &kube::Client,
    management: &Management,
    started: &mut Started,
    running: Running,
    first_signal: CancellationToken,
    second_signal: CancellationToken,
) -> anyhow::Result<bool> {
    let Running {
        observer,
        user,
        mm_api,
        nf_api,
    } = running;
    let counters = Arc::new(Counters::default());
    let metrics_http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let load_stop = CancellationToken::new();
    let start = Instant::now();
    let mut driver = Some(load::start(
        Targets {
            matchmaking: mm_api,
            notifications: nf_api,
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
        "load running{}; logs in {}",
        cfg.duration
            .map(|d| format!(" for {d}s"))
            .unwrap_or_else(|| " until Ctrl-C".into()),
        cfg.state_dir.display()
    ));
    let mut last: Option<(Instant, Snapshot)> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut lines = 0u64;
    // Load, then drain: the same refresh loop, the phase says which.
    let mut draining_since: Option<Instant> = None;
    let mut drill: Option<String> = None;
    let drain = Duration::from_secs(cfg.drain_seconds);
    let outcome = loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = first_signal.cancelled(), if draining_since.is_none() => {}
            _ = second_signal.cancelled() => {}
        }
        let stop_load =
            first_signal.is_cancelled() || cfg.duration().is_some_and(|d| start.elapsed() >= d);
        if stop_load && draining_since.is_none() {
            load_stop.cancel();
            // Offers in hand finish first, so the drain sees every outbox row there will be.
            if let Some(d) = driver.take() {
                d.wait().await;
            }
            draining_since = Some(Instant::now());
        }
        if cfg.outage
            && drill.is_none()
            && draining_since.is_none()
            && start.elapsed() >= plan::OUTAGE_AT
        {
            drill = Some(match management.close_connections_of(&user).await {
                Ok(n) => format!(
                    "t={}s: closed {n} service connections to the broker",
                    start.elapsed().as_secs()
                ),
                Err(e) => format!("could not close connections: {e}"),
            });
        }
        let mut s = Snapshot {
            drill: drill.clone(),
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
        observer.fill(&mut s).await;
        let consumer_urls: Vec<String> = (0..started.consumers.count())
            .map(|i| format!("http://{}", cfg.addr(10 + i as u16)))
            .collect();
        s.duplicates = observe::duplicates(&metrics_http, &consumer_urls).await;
        let target = supervise::wanted(s.replicas, started.consumers.count(), cfg.max_consumers);
        if let Err(e) = started.consumers.converge(target).await {
            say(&format!("could not start a consumer: {e}"));
        }
        s.local_consumers = started.consumers.count();
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
        } else if lines.is_multiple_of(5) || draining_since.is_some() {
            println!("{}", s.line());
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
    let totals = Totals {
        offers: counters.offers.load(Relaxed),
        outbox: outcome.outbox.unwrap_or(0),
        published: outcome.published.unwrap_or(0),
        stored: outcome.stored.unwrap_or(0),
        dead_lettered: outcome.dead_lettered.unwrap_or(0),
        in_queue: outcome.depth().unwrap_or(0),
        read_back: counters.read_back.load(Relaxed),
        request_errors: counters.errors.load(Relaxed),
    };
    println!();
    println!("{totals}");
    if let Some(d) = &drill {
        println!("outage drill: {d}");
    }
    if let Some(n) = outcome.duplicates {
        println!("redelivered events skipped as already stored (running consumers): {n}");
    }
    if let Some(e) = counters.last_error.lock().ok().and_then(|e| e.clone()) {
        println!("last request error: {e}");
    }
    if started.consumers.restarts > 0 {
        println!(
            "consumer restarts (a local process exited): {}",
            started.consumers.restarts
        );
    }
    let deployment: Api<Deployment> = Api::namespaced(client.clone(), &cfg.namespace);
    if let Ok(d) = deployment.get(&cfg.deployment).await {
        println!(
            "Deployment {} replicas at the end: {}",
            cfg.deployment,
            d.spec.replicas.unwrap_or(0)
        );
    }
    println!("logs: {}", cfg.state_dir.display());
    Ok(totals.verdict().ok())
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
