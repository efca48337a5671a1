//! The load driver: workers make offers through the matchmaking API, accept, reject, cancel
//! or complete them as the parties would, and read notifications back through the
//! notifications API, paced by [`crate::plan::phase_at`].
use crate::plan::{self, Fate};
use rand::Rng;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What the driver did so far.
#[derive(Debug, Default)]
pub struct Counters {
    /// Offers created (201).
    pub offers: AtomicU64,
    /// Status changes accepted by the API.
    pub changes: AtomicU64,
    /// Notifications returned by the notifications API.
    pub read_back: AtomicU64,
    /// Requests that failed (transport error or unexpected status).
    pub errors: AtomicU64,
    /// The last failure, for the summary.
    pub last_error: std::sync::Mutex<Option<String>>,
}

impl Counters {
    fn failed(&self, what: String) {
        self.errors.fetch_add(1, Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(what);
        }
    }
}

/// `http://<pod IP>:<port>` of a serving matchmaking pod and of a serving notifications pod,
/// updated by the view on each refresh (pods come and go; the driver runs on the host, which
/// reaches pods on the node's bridge, not Service addresses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// Matchmaking's API.
    pub matchmaking: String,
    /// A notifications API.
    pub notifications: String,
}

/// Where the driver sends its requests.
#[derive(Clone, Debug)]
pub struct Targets {
    /// The current endpoints.
    pub endpoints: Arc<std::sync::RwLock<Endpoints>>,
    /// Users of the marketplace.
    pub users: u32,
}

impl Targets {
    fn now(&self) -> Endpoints {
        self.endpoints.read().map(|e| e.clone()).unwrap_or_default()
    }
}

/// A running load; stop it with the token given to [`start`], then [`Load::wait`].
pub struct Load {
    tasks: JoinSet<()>,
}

impl Load {
    /// Waits for every worker to finish the offer in hand.
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Starts `workers` workers and the pacer, from `start` on.
pub fn start(
    targets: Targets,
    workers: usize,
    counters: Arc<Counters>,
    start: Instant,
    stop: CancellationToken,
) -> Load {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a plain HTTP client builds");
    // One token per offer. Capacity 1: in a burst the workers' own speed is the limit.
    let (tx, rx) = mpsc::channel::<()>(1);
    let rx = Arc::new(Mutex::new(rx));
    let mut tasks = JoinSet::new();
    let pacer_stop = stop.clone();
    tasks.spawn(async move {
        loop {
            let pause = plan::phase_at(start.elapsed())
                .rate()
                .map(|r| Duration::from_secs_f64(1.0 / r));
            let send = async {
                if let Some(pause) = pause {
                    tokio::time::sleep(pause).await;
                }
                tx.send(()).await
            };
            tokio::select! {
                _ = pacer_stop.cancelled() => break,
                sent = send => if sent.is_err() { break },
            }
        }
    });
    for _ in 0..workers {
        let (http, targets, counters, rx, stop) = (
            http.clone(),
            targets.clone(),
            counters.clone(),
            rx.clone(),
            stop.clone(),
        );
        tasks.spawn(async move {
            loop {
                let token = tokio::select! {
                    _ = stop.cancelled() => None,
                    t = async { rx.lock().await.recv().await } => t,
                };
                if token.is_none() {
                    break;
                }
                one_offer(&http, &targets, &counters).await;
            }
        });
    }
    Load { tasks }
}

/// One offer's life: made, then moved by the parties as its [`Fate`] says; sometimes the
/// receiver then reads their notifications.
async fn one_offer(http: &reqwest::Client, targets: &Targets, counters: &Counters) {
    let t = targets.now();
    let (proposer, receiver, fate, read, items) = {
        let mut rng = rand::rng();
        let (p, r) = plan::pair(targets.users, rng.random(), rng.random());
        let fate = Fate::from_roll(rng.random_range(0..100));
        // Disjoint ranges: an item cannot be both offered and requested.
        let items: [i64; 2] = [rng.random_range(1..5_000), rng.random_range(5_000..10_000)];
        (p, r, fate, rng.random_range(0..100) < 20, items)
    };
    let body = json!({
        "proposer_id": proposer,
        "receiver_id": receiver,
        "offered_item_ids": [items[0]],
        "requested_item_ids": [items[1]],
        "message": "Would you swap?",
    });
    let url = format!("{}/api/v2/offers", t.matchmaking);
    let id = match http.post(&url).json(&body).send().await {
        Ok(r) if r.status().as_u16() == 201 => match r.json::<Value>().await {
            Ok(v) => v.get("id").and_then(Value::as_i64),
            Err(e) => {
                counters.failed(format!("POST /api/v2/offers: body: {e}"));
                return;
            }
        },
        Ok(r) => {
            counters.failed(format!("POST /api/v2/offers: HTTP {}", r.status()));
            return;
        }
        Err(e) => {
            counters.failed(format!("POST /api/v2/offers: {e}"));
            return;
        }
    };
    let Some(id) = id else {
        counters.failed("POST /api/v2/offers: no id in the answer".into());
        return;
    };
    counters.offers.fetch_add(1, Relaxed);
    for (status, by_receiver) in fate.steps() {
        let actor = if *by_receiver { &receiver } else { &proposer };
        let url = format!("{}/api/v2/offers/{id}?user_id={actor}", t.matchmaking);
        match http
            .patch(&url)
            .json(&json!({ "status": status }))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                counters.changes.fetch_add(1, Relaxed);
            }
            Ok(r) => {
                counters.failed(format!("PATCH offer to {status}: HTTP {}", r.status()));
                return;
            }
            Err(e) => {
                counters.failed(format!("PATCH offer to {status}: {e}"));
                return;
            }
        }
    }
    if read {
        let url = format!(
            "{}/api/v2/notifications/{receiver}?limit=20",
            t.notifications
        );
        match http.get(&url).send().await {
            Ok(r) if r.status().is_success() => {
                let n = r
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v.get("notifications")?.as_array().map(Vec::len))
                    .unwrap_or(0);
                counters.read_back.fetch_add(n as u64, Relaxed);
            }
            Ok(r) => counters.failed(format!("GET notifications: HTTP {}", r.status())),
            Err(e) => counters.failed(format!("GET notifications: {e}")),
        }
    }
}
