//! Publisher throughput for `make bench-publisher`: confirmed, persistent events per second.
//!
//! ```text
//! bench_publisher --url amqp://... --queue Q --kind quorum|classic [-n 50000] [--window 256] [--declare-only]
//! ```
//! Declares `Q` with the library's topology (fresh or identical), publishes `n` events with
//! `publish_all` and prints one line:
//! `rust publish N msgs in S s = R msg/s (confirm=True, window=W, body=B bytes, failed=F)`.
use std::time::Instant;
use swappo_messaging::{
    BrokerConfig, EventType, NotificationEvent, Publisher, PublisherOptions, QueueSpec,
    declare_with,
};

struct Args {
    url: String,
    queue: String,
    quorum: bool,
    n: usize,
    window: usize,
    declare_only: bool,
}

fn args() -> Args {
    let mut a = Args {
        url: std::env::var("RABBITMQ_URL").unwrap_or_default(),
        queue: "bench_rust".into(),
        quorum: true,
        n: 50_000,
        window: 256,
        declare_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value(),
            "--queue" => a.queue = value(),
            "--kind" => a.quorum = value() == "quorum",
            "-n" => a.n = value().parse().expect("-n is a count"),
            "--window" => a.window = value().parse().expect("--window is a count"),
            "--declare-only" => a.declare_only = true,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// The same content as the seed publisher's events: same user ids, title and body.
fn event(i: usize) -> NotificationEvent {
    NotificationEvent::new(
        format!("user{}", i % 1000),
        EventType::TradeOfferAccepted,
        "Trade Offer Accepted!",
        "Your trade offer has been accepted.",
    )
    .with_related_user("user123")
    .with_related_offer(i as i64 + 1)
}

#[tokio::main]
async fn main() {
    let a = args();
    let config = BrokerConfig::from_url(&a.url).expect("--url or RABBITMQ_URL is an AMQP URL");
    let spec = if a.quorum {
        QueueSpec::quorum(&a.queue)
    } else {
        QueueSpec::classic(&a.queue)
    };
    let conn = lapin::Connection::connect_uri(config.uri().clone(), Default::default())
        .await
        .expect("broker reachable");
    declare_with(&conn, &spec).await.expect("queue declared");
    let _ = conn.close(200, "declared".into()).await;
    if a.declare_only {
        return;
    }
    let events: Vec<_> = (0..a.n).map(event).collect();
    let body = events[0].to_json().len();
    let options = PublisherOptions {
        window: a.window,
        ..PublisherOptions::for_queue(&a.queue)
    };
    let publisher = Publisher::connect(config, options)
        .await
        .expect("publisher connects");
    let start = Instant::now();
    let results = publisher.publish_all(&events).await;
    let secs = start.elapsed().as_secs_f64();
    let failed = results.iter().filter(|r| r.is_err()).count();
    publisher.close().await;
    let confirmed = a.n - failed;
    println!(
        "rust publish {} msgs in {secs:.2} s = {:.0} msg/s (confirm=True, window={}, body={body} bytes, failed={failed})",
        a.n,
        confirmed as f64 / secs,
        a.window
    );
}
