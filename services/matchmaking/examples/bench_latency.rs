//! End-to-end latency driver for `make bench-latency` (bench/latency_bench.py starts the
//! services and calls this): offer status changes through matchmaking's HTTP API at a fixed
//! rate, and the time from each HTTP 200 to the notification row being committed in the
//! notifications database (readable by its API from then on).
//!
//! ```text
//! bench_latency --api http://127.0.0.1:PORT[,http://...] --notifications-db postgres://... \
//!     --rate 1000 --events 10000 [--prepare-only] [--tag T]
//! ```
//! 1. Prepare: creates `events` offers (`POST /api/v2/offers`, 32 at a time, untimed) and waits
//!    until their `trade_offer_received` notifications are stored, so the timed phase starts
//!    with an idle pipeline. With `--prepare-only` it stops there (the relay benchmark).
//! 2. Timed: offer `i` is accepted by its receiver (`PATCH /api/v2/offers/{id}`) at
//!    `start + i / rate`, open loop (a slow answer never delays the next request), the
//!    requests spread over the `--api` instances in turn. A poller reads the new
//!    `trade_offer_accepted` rows every millisecond (keyset on the row id) and notes when it
//!    first saw each offer's row. Latency = seen - HTTP 200.
//!
//! Prints one JSON line: the rate asked and achieved, how late requests went out, the
//! latency percentiles in milliseconds, and the count of missing rows or failed requests.
use reqwest::Client;
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::postgres::PgPoolOptions;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

struct Args {
    apis: Vec<String>,
    db: String,
    rate: f64,
    events: usize,
    prepare_only: bool,
    tag: String,
}

fn args() -> Args {
    let mut a = Args {
        apis: Vec::new(),
        db: String::new(),
        rate: 1000.0,
        events: 10_000,
        prepare_only: false,
        tag: "lat".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--api" => a.apis = value().split(',').map(str::to_string).collect(),
            "--notifications-db" => a.db = value(),
            "--rate" => a.rate = value().parse().expect("--rate is events/s"),
            "--events" => a.events = value().parse().expect("--events is a count"),
            "--prepare-only" => a.prepare_only = true,
            "--tag" => a.tag = value(),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!a.apis.is_empty(), "--api is required");
    a
}

/// Offers created at once while preparing (the preparation is not timed).
const PREPARE_CONCURRENCY: usize = 32;
/// Longest wait for the pipeline to store what was sent: far above any latency measured
/// here; reaching it means rows were lost, and the run says how many.
const DRAIN_GUARD: Duration = Duration::from_secs(120);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() {
    let a = args();
    let client = Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client");
    let db = PgPoolOptions::new()
        .max_connections(2)
        .connect(&a.db)
        .await
        .expect("notifications database reachable");

    // 1. Offers to change, created untimed.
    let offers: Vec<(i64, String)> = {
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let out = Arc::new(Mutex::new(vec![(0i64, String::new()); a.events]));
        let mut tasks = Vec::new();
        for w in 0..PREPARE_CONCURRENCY {
            let (client, next, out, apis, tag, n) = (
                client.clone(),
                next.clone(),
                out.clone(),
                a.apis.clone(),
                a.tag.clone(),
                a.events,
            );
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let receiver = format!("{tag}r{i}");
                    let body = json!({
                        "proposer_id": format!("{tag}p{i}"), "receiver_id": receiver,
                        "offered_item_ids": [1], "requested_item_ids": [2],
                    });
                    let api = &apis[(i + w) % apis.len()];
                    let r = client
                        .post(format!("{api}/api/v2/offers"))
                        .json(&body)
                        .send()
                        .await
                        .expect("matchmaking answers");
                    assert!(r.status().is_success(), "create failed: {}", r.status());
                    let v: Value = r.json().await.expect("offer JSON");
                    out.lock().await[i] = (v["id"].as_i64().expect("offer id"), receiver);
                }
            }));
        }
        for t in tasks {
            t.await.expect("create task");
        }
        Arc::try_unwrap(out).expect("tasks done").into_inner()
    };
    let ids: Vec<i64> = offers.iter().map(|(id, _)| *id).collect();
    let received = |db: sqlx::PgPool, ids: Vec<i64>| async move {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM notifications WHERE type = 'trade_offer_received' \
             AND related_offer_id = ANY($1)",
        )
        .bind(ids)
        .fetch_one(&db)
        .await
        .unwrap_or(0)
    };
    if a.prepare_only {
        println!("{}", json!({"prepared": ids.len()}));
        return;
    }
    let guard = Instant::now() + DRAIN_GUARD;
    while (received(db.clone(), ids.clone()).await as usize) < a.events {
        assert!(
            Instant::now() < guard,
            "the created offers' notifications never all arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last_row: i64 = sqlx::query_scalar("SELECT COALESCE(max(id), 0) FROM notifications")
        .fetch_one(&db)
        .await
        .expect("max id");

    // 2. The timed phase.
    let by_offer: HashMap<i64, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let seen = Arc::new(Mutex::new(vec![None::<Instant>; a.events]));
    let poller = {
        let (db, seen) = (db.clone(), seen.clone());
        tokio::spawn(async move {
            let mut last = last_row;
            let mut found = 0usize;
            let guard = Instant::now() + DRAIN_GUARD + Duration::from_secs(60);
            let total = by_offer.len();
            while found < total && Instant::now() < guard {
                let rows = sqlx::query(
                    "SELECT id, related_offer_id FROM notifications WHERE id > $1 \
                     AND type = 'trade_offer_accepted' ORDER BY id",
                )
                .bind(last)
                .fetch_all(&db)
                .await
                .expect("poll notifications");
                let now = Instant::now();
                let mut s = seen.lock().await;
                for r in rows {
                    last = last.max(r.get::<i64, _>("id"));
                    let offer: Option<i64> = r.get("related_offer_id");
                    if let Some(&i) = offer.and_then(|o| by_offer.get(&o))
                        && s[i].is_none()
                    {
                        s[i] = Some(now);
                        found += 1;
                    }
                }
                drop(s);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let interval = Duration::from_secs_f64(1.0 / a.rate);
    let start = Instant::now() + Duration::from_millis(100);
    let mut requests = Vec::with_capacity(a.events);
    for (i, (id, receiver)) in offers.into_iter().enumerate() {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let late = Instant::now().saturating_duration_since(due);
        let api = a.apis[i % a.apis.len()].clone();
        let client = client.clone();
        requests.push(tokio::spawn(async move {
            let r = client
                .patch(format!("{api}/api/v2/offers/{id}?user_id={receiver}"))
                .json(&json!({"status": "accepted"}))
                .send()
                .await;
            let ok = Instant::now();
            let status = r.map(|r| r.status().as_u16()).unwrap_or(0);
            (status, ok, late)
        }));
    }
    let sent_secs = start.elapsed().as_secs_f64();
    let mut answers = Vec::with_capacity(a.events);
    for r in requests {
        answers.push(r.await.expect("request task"));
    }
    let last_answer = answers.iter().map(|(_, ok, _)| *ok).max().expect("answers");
    let answered_secs = last_answer.duration_since(start).as_secs_f64();
    let _ = poller.await;
    let seen = seen.lock().await;
    let mut latencies = Vec::with_capacity(a.events);
    let (mut failed, mut missing) = (0usize, 0usize);
    for ((status, ok, _), seen) in answers.iter().zip(seen.iter()) {
        if *status != 200 {
            failed += 1;
            continue;
        }
        match seen {
            Some(t) => latencies.push(t.saturating_duration_since(*ok).as_secs_f64() * 1000.0),
            None => missing += 1,
        }
    }
    latencies.sort_by(|x, y| x.total_cmp(y));
    let mut lates: Vec<f64> = answers
        .iter()
        .map(|(_, _, l)| l.as_secs_f64() * 1000.0)
        .collect();
    lates.sort_by(|x, y| x.total_cmp(y));
    println!(
        "{}",
        json!({
            "rate": a.rate, "events": a.events,
            "achieved_rate": a.events as f64 / answered_secs,
            "send_seconds": sent_secs,
            "send_late_ms_p99": percentile(&lates, 99.0),
            "http_failed": failed, "missing": missing,
            "p50_ms": percentile(&latencies, 50.0), "p95_ms": percentile(&latencies, 95.0),
            "p99_ms": percentile(&latencies, 99.0), "max_ms": latencies.last().copied().unwrap_or(f64::NAN),
        })
    );
}
