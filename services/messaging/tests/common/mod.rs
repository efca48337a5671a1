//! Helpers shared by the integration tests: a private vhost, a raw lapin connection and
//! bounded waits on the management API's counts.
#![allow(dead_code)]
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::time::Duration;
use swappo_messaging::BrokerConfig;
use swappo_testkit::{QueueInfo, TestVhost};

// Tests run on the multi-thread runtime: TestVhost's Drop blocks its thread while the
// management client's pooled connection needs the runtime to make progress.

/// Failure guard for waits: generous, only reached when something is broken.
pub const GUARD: Duration = Duration::from_secs(60);

pub async fn vhost() -> TestVhost {
    TestVhost::new("msg-").await
}

pub fn config(v: &TestVhost) -> BrokerConfig {
    BrokerConfig::from_url(v.amqp_url()).expect("the testkit URL parses")
}

pub async fn connect(v: &TestVhost) -> Connection {
    Connection::connect(v.amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect")
}

pub async fn confirm_channel(conn: &Connection) -> Channel {
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch
}

/// Publishes a raw body to the queue through the default exchange, confirmed.
pub async fn publish_raw(ch: &Channel, queue: &str, body: &[u8], props: BasicProperties) {
    let confirm = ch
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        confirm.is_ack() && confirm.take_message().is_none(),
        "raw publish to {queue} not routed"
    );
}

/// The queue's counts, panicking if it does not exist.
pub async fn queue(v: &TestVhost, name: &str) -> QueueInfo {
    v.management()
        .queue(v.name(), name)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no queue {name}"))
}

/// Waits (bounded by [`GUARD`]) until `check` holds for the queue's counts; the management
/// API refreshes its statistics every few seconds, so this polls.
pub async fn wait_queue(
    v: &TestVhost,
    name: &str,
    what: &str,
    check: impl Fn(&QueueInfo) -> bool,
) -> QueueInfo {
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let q = queue(v, name).await;
        if check(&q) {
            return q;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: {what} not reached within {GUARD:?}: {q:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Takes every ready message of `queue` with basic.get (acking them), at most `max`.
pub async fn drain(ch: &Channel, queue: &str, max: usize) -> Vec<lapin::message::BasicGetMessage> {
    let mut out = Vec::new();
    while out.len() < max {
        match ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(m) => out.push(m),
            None => break,
        }
    }
    out
}

/// A header's value as text, if it is a string.
pub fn header(props: &BasicProperties, key: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(key)? {
        lapin::types::AMQPValue::LongString(s) => {
            Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        lapin::types::AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        other => Some(format!("{other:?}")),
    }
}
