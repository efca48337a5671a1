//! The service binary as a deployment runs it: configured by environment variables, it
//! migrates, serves, relays, and exits cleanly on SIGTERM.
mod common;

use common::Api;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use reqwest::StatusCode;
use std::process::{Command, Stdio};
use std::time::Duration;
use swappo_messaging::{EventType, NotificationEvent, QueueSpec, declare};
use swappo_testkit::{TestDb, TestVhost};

/// Failure guard for waits; never reached when things work.
const GUARD: Duration = Duration::from_secs(60);

// Multi-threaded for the same reason as in tests/relay.rs: the vhost is deleted on drop
// while an AMQP connection of this runtime is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_relays_and_stops_cleanly_on_sigterm() {
    let vhost = TestVhost::new("mm-").await;
    let db = TestDb::new("mm_").await;
    let queue = "offers_events";
    let conn = Connection::connect(vhost.amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    declare(&channel, &QueueSpec::quorum(queue)).await.unwrap();

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_swappo-matchmaking"))
        .env_clear()
        .env("DATABASE_URL", db.url())
        .env("RABBITMQ_URL", vhost.amqp_url())
        .env("NOTIFICATIONS_QUEUE", queue)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary starts");

    let api = Api::new(&format!("http://127.0.0.1:{port}"));
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        if let Ok(r) = api.http.get(format!("{}/ready", api.base)).send().await
            && r.status() == StatusCode::OK
        {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the binary exited early"
        );
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = api.create("alice", "bob", &[1], &[2]).await;

    let deadline = tokio::time::Instant::now() + GUARD;
    let message = loop {
        if let Some(m) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            break m;
        }
        assert!(tokio::time::Instant::now() < deadline, "no event arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let event = NotificationEvent::from_json(&message.delivery.data).unwrap();
    assert_eq!(
        (event.event_type, event.user_id.as_str()),
        (EventType::TradeOfferReceived, "bob")
    );
    assert_eq!(event.related_offer_id, Some(id));

    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + GUARD;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
    let opts = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let left = channel
        .queue_declare(queue.into(), opts, FieldTable::default())
        .await
        .unwrap();
    assert_eq!(left.message_count(), 0, "exactly one event was published");
    conn.close(200, "done".into()).await.unwrap();
}
