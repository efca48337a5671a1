//! The publisher against the real broker: confirms, returns, outages.
mod common;

use common::*;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use std::collections::HashSet;
use std::time::Duration;
use swappo_messaging::{
    BrokerConfig, EventType, NotificationEvent, PublishError, Publisher, PublisherOptions,
    QueueSpec, declare_with,
};

fn event(i: usize) -> NotificationEvent {
    NotificationEvent::new(
        format!("user{i}"),
        EventType::TradeOfferReceived,
        "New offer",
        format!("Offer #{i}"),
    )
    .with_related_offer(i as i64 + 1)
}

async fn setup(spec: QueueSpec) -> (swappo_testkit::TestVhost, Publisher) {
    let v = vhost().await;
    declare_with(&connect(&v).await, &spec).await.unwrap();
    let p = Publisher::connect(config(&v), PublisherOptions::for_queue(&spec.name))
        .await
        .unwrap();
    (v, p)
}

/// Reads every message in `queue` (no-ack), returning their message ids.
async fn all_ids(v: &swappo_testkit::TestVhost, queue: &str) -> Vec<String> {
    let conn = connect(v).await;
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let total = q.message_count() as usize;
    ch.basic_qos(1000, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "reader".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut ids = Vec::with_capacity(total);
    while ids.len() < total {
        let d = tokio::time::timeout(GUARD, consumer.next())
            .await
            .expect("queue read stalled")
            .unwrap()
            .unwrap();
        ids.push(d.properties.message_id().as_ref().unwrap().to_string());
    }
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_resolves_once_confirmed_and_the_event_is_in_the_queue_with_its_properties() {
    let (v, p) = setup(QueueSpec::quorum("notes")).await;
    let e = event(1);
    p.publish(&e).await.unwrap();
    assert!(p.is_connected());

    let ch = connect(&v).await.create_channel().await.unwrap();
    let got = drain(&ch, "notes", 10).await;
    assert_eq!(got.len(), 1);
    let m = &got[0].delivery;
    assert_eq!(NotificationEvent::from_json(&m.data).unwrap(), e);
    assert_eq!(
        m.properties.message_id().as_ref().unwrap().as_str(),
        e.id.to_string()
    );
    assert_eq!(
        m.properties.kind().as_ref().unwrap().as_str(),
        "trade_offer_received"
    );
    assert_eq!(*m.properties.delivery_mode(), Some(2));
    assert_eq!(
        m.properties.content_type().as_ref().unwrap().as_str(),
        "application/json"
    );
    assert!(m.properties.timestamp().is_some());
    let s = p.metrics().snapshot();
    assert_eq!((s.published, s.confirmed, s.publish_failed), (1, 1, 0));
    p.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_for_a_missing_queue_is_reported_unroutable_not_sent() {
    let v = vhost().await;
    let p = Publisher::connect(config(&v), PublisherOptions::for_queue("nobody-home"))
        .await
        .unwrap();
    let err = p.publish(&event(1)).await.unwrap_err();
    assert!(
        matches!(err, PublishError::Unroutable { ref routing_key, .. } if routing_key == "nobody-home"),
        "{err:?}"
    );
    // Pipelined: every one of them is reported, none as confirmed.
    let events: Vec<_> = (0..500).map(event).collect();
    let results = p.publish_all(&events).await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(PublishError::Unroutable { .. })))
    );
    assert_eq!(p.metrics().snapshot().confirmed, 0);
    assert_eq!(p.metrics().snapshot().publish_failed, 501);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_contract_violation_is_refused_before_anything_is_sent() {
    let (v, p) = setup(QueueSpec::quorum("strict")).await;
    let mut bad = event(1);
    bad.user_id = String::new();
    let err = p.publish(&bad).await.unwrap_err();
    assert!(
        matches!(&err, PublishError::Contract(c) if c.field() == Some("user_id")),
        "{err:?}"
    );
    let results = p.publish_all(&[event(2), bad, event(3)]).await;
    assert!(results[0].is_ok() && results[1].is_err() && results[2].is_ok());
    assert_eq!(queue_ready(&v, "strict").await, 2);
}

async fn queue_ready(v: &swappo_testkit::TestVhost, name: &str) -> u32 {
    let ch = connect(v).await.create_channel().await.unwrap();
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
    .message_count()
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_all_through_an_outage_reports_exactly_what_the_queue_holds() {
    const N: usize = 20_000;
    let v = vhost().await;
    let spec = QueueSpec::quorum("bulk");
    declare_with(&connect(&v).await, &spec).await.unwrap();
    // The publisher reaches the broker through a proxy the test controls, so the fault lands
    // at a known point: with a full window of messages in flight, on any machine's speed.
    let (proxy, url) = swappo_testkit::OutageProxy::for_url(v.amqp_url()).await;
    let options = PublisherOptions::for_queue(&spec.name);
    let window = options.window as u64;
    let p = Publisher::connect(BrokerConfig::from_url(&url).unwrap(), options)
        .await
        .unwrap();
    let events: Vec<_> = (0..N).map(event).collect();
    let (before, during) = events.split_at(N / 5);

    // A fifth goes through undisturbed.
    assert!(p.publish_all(before).await.iter().all(Result::is_ok));
    // Then the broker's replies are held: every message sent from now on stays unconfirmed
    // (its confirm can only come after the hold began), so the publisher fills its window and
    // waits. The connection is cut with exactly `window` messages unconfirmed, and restored.
    proxy.hold_replies();
    let metrics = p.metrics();
    let outage = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + GUARD * 3;
        let in_flight =
            |s: swappo_messaging::MetricsSnapshot| s.published - s.confirmed - s.publish_failed;
        while in_flight(metrics.snapshot()) < window {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the window never filled while confirms were held: {:?}",
                metrics.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let at_cut = in_flight(metrics.snapshot());
        proxy.cut();
        proxy.release_replies();
        proxy.restore();
        (proxy, at_cut)
    });
    let mut results: Vec<Result<(), PublishError>> = before.iter().map(|_| Ok(())).collect();
    results.extend(
        tokio::time::timeout(GUARD * 5, p.publish_all(during))
            .await
            .expect("publish_all finished"),
    );
    let (_proxy, in_flight_at_cut) = outage.await.unwrap();
    assert_eq!(
        in_flight_at_cut, window,
        "the cut came with a full window in flight"
    );

    assert_eq!(results.len(), N);
    let confirmed: HashSet<String> = events
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_ok())
        .map(|(e, _)| e.id.to_string())
        .collect();
    let failed = results.iter().filter(|r| r.is_err()).count();
    // Every message in flight at the cut is reported lost: none is assumed confirmed. Others
    // may fail only as NotConnected (a reconnect slower than connect_wait on a busy machine).
    let lost = results
        .iter()
        .filter(|r| matches!(r, Err(PublishError::ConnectionLost(_))))
        .count();
    assert_eq!(
        lost as u64, window,
        "{lost} reported lost, but {window} were in flight at the cut"
    );
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(
                r,
                PublishError::ConnectionLost(_) | PublishError::NotConnected { .. }
            ),
            "unexpected failure {r:?}"
        );
    }
    let in_queue: HashSet<String> = all_ids(&v, "bulk").await.into_iter().collect();
    let missing = confirmed.difference(&in_queue).count();
    assert_eq!(
        missing, 0,
        "{missing} confirmed events are not in the queue"
    );
    // Failed ones may or may not have made it (at-least-once); nothing else is in there.
    let all: HashSet<String> = events.iter().map(|e| e.id.to_string()).collect();
    assert!(in_queue.is_subset(&all));
    eprintln!(
        "outage: {} confirmed, {failed} failed, {} in the queue",
        confirmed.len(),
        in_queue.len()
    );

    let s = p.metrics().snapshot();
    assert_eq!(s.confirmed as usize, confirmed.len());
    assert_eq!(s.publish_failed as usize, failed);
    // The publisher came back by itself.
    p.publish(&event(N)).await.unwrap();
    assert!(p.is_connected());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_publisher_reconnects_by_itself_after_its_connection_is_closed() {
    let (v, p) = setup(QueueSpec::classic("again")).await;
    p.publish(&event(1)).await.unwrap();
    let deadline = tokio::time::Instant::now() + GUARD;
    while v.management().close_connections(v.name()).await.unwrap() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no connection to close"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Within connect_wait, a publish waits for the reconnect instead of failing.
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        match p.publish(&event(2)).await {
            Ok(()) => break,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "never reconnected: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(p.is_connected());
    assert!(queue_ready(&v, "again").await >= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_broker_is_a_connect_error_that_does_not_leak_the_password() {
    let cfg = BrokerConfig::from_parts("127.0.0.1", 1, "app", "pw-never-shown", "/");
    let err = Publisher::connect(cfg.clone(), PublisherOptions::for_queue("q"))
        .await
        .err()
        .expect("no broker on port 1");
    assert!(matches!(err, PublishError::Connect(_)), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("pw-never-shown"));

    // Started in the background instead, publishes wait `connect_wait`, then fail.
    let p = Publisher::start(
        cfg,
        PublisherOptions {
            connect_wait: Duration::from_millis(300),
            ..PublisherOptions::for_queue("q")
        },
    );
    let results = p.publish_all(&[event(1), event(2)]).await;
    for r in results {
        let e = r.unwrap_err();
        assert!(matches!(e, PublishError::NotConnected { .. }), "{e:?}");
        assert!(!e.to_string().contains("pw-never-shown"), "{e}");
    }
    assert!(!p.is_connected());
    p.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_close_a_publish_fails_with_closed() {
    let (_v, p) = setup(QueueSpec::quorum("bye")).await;
    p.publish(&event(1)).await.unwrap();
    let other = p.clone();
    p.close().await;
    assert!(matches!(
        other.publish(&event(2)).await,
        Err(PublishError::Closed)
    ));
    assert!(!other.is_connected());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_the_broker_refuses_is_reported_nacked_never_confirmed() {
    // A full queue with `x-overflow: reject-publish` makes the broker nack new messages.
    let v = vhost().await;
    let ch = connect(&v).await.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-max-length".into(),
        lapin::types::AMQPValue::LongLongInt(1),
    );
    args.insert(
        "x-overflow".into(),
        lapin::types::AMQPValue::LongString("reject-publish".into()),
    );
    ch.queue_declare(
        "full".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    let p = Publisher::connect(config(&v), PublisherOptions::for_queue("full"))
        .await
        .unwrap();
    p.publish(&event(1)).await.unwrap();
    let results = p.publish_all(&[event(2), event(3)]).await;
    for r in results {
        assert!(matches!(r, Err(PublishError::Nacked)), "{r:?}");
    }
    let s = p.metrics().snapshot();
    assert_eq!((s.confirmed, s.publish_failed), (1, 2));
    assert_eq!(queue_ready(&v, "full").await, 1);
}
