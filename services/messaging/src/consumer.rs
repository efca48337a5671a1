//! A batching consumer: manual acks, one multiple-ack per stored batch, retries with
//! backoff, and dead-lettering that never acks a message away before its copy is in the DLQ.
//!
//! Per batch (pure decisions in [`classify`] and [`classic_retry`], I/O around them):
//! 1. Bodies that are not valid events (bad JSON, unknown `type`, a broken field) are
//!    published to `<queue>.dlx` with the reason in `x-swappo-dead-letter-reason`; only once
//!    the broker confirmed that copy is the original acked (alone).
//! 2. The valid events go to the handler. [`BatchOutcome::Done`]: one `basic.ack` with
//!    `multiple` up to the batch's last delivery tag.
//! 3. [`BatchOutcome::Retry`]: after a backoff, the batch is retried one event at a time to
//!    tell a poison message from an outage (stopping after [`ISOLATION_GIVE_UP`] failures in a
//!    row with no success: that is an outage). Events that succeed are acked; the failing
//!    ones are returned: quorum queues `basic.nack(requeue)` (the broker counts deliveries
//!    and dead-letters at `x-delivery-limit`); classic queues republish the message to the
//!    queue with `x-swappo-deliveries` incremented, confirmed, then ack the original, and
//!    dead-letter it once `max_deliveries` is reached.
//!
//! Classic-queue counting covers handler failures only: a delivery cut short by a crash or a
//! lost connection goes back unmarked (the broker's `redelivered` flag carries no count), so a
//! message that crashes the process itself is only caught by a quorum queue's broker-side
//! limit. Quorum queues are the default for that reason.
//!
//! Broker loss: the batch in hand is not acked (the broker redelivers it; the handler must
//! be idempotent on `id`), and the consumer reconnects with backoff. Shutdown: stop the
//! subscription, finish and ack the batch in hand, close the channel (prefetched,
//! unprocessed messages return to the queue).
use crate::backoff::Backoff;
use crate::connection;
use crate::topology::dlx_name;
use crate::{BrokerConfig, ContractError, MessagingMetrics, NotificationEvent, QueueKind};
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

/// Header carrying why the consumer dead-lettered a message.
pub const DEAD_LETTER_REASON_HEADER: &str = "x-swappo-dead-letter-reason";
/// Header naming the queue a dead-lettered message came from.
pub const DEAD_LETTER_QUEUE_HEADER: &str = "x-swappo-dead-lettered-from";
/// Header counting failed deliveries of a message on a classic queue.
pub const DELIVERIES_HEADER: &str = "x-swappo-deliveries";
/// In the one-at-a-time retry of a failed batch, this many failures in a row without a
/// single success mean the failure is not the events' fault (the database is down): stop
/// and return the rest, rather than hammer a dead dependency once per event.
pub const ISOLATION_GIVE_UP: usize = 3;
/// Longest reason written to a header: enough for any contract error, bounded for a handler
/// that returns a whole stack trace.
const MAX_REASON_CHARS: usize = 1000;
/// How long a dead-letter or republish may wait for its confirm.
const SIDE_CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// What the handler did with a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// All stored: ack the batch with one multiple-ack.
    Done,
    /// Transient failure (e.g. the database is down): return the batch with backoff; a
    /// message that keeps failing ends in the DLQ after `max_deliveries`.
    Retry(String),
}

/// Stores batches of events. Must be idempotent on `event.id`: after a lost connection a
/// stored batch may be delivered again.
pub trait BatchHandler: Send + Sync + 'static {
    /// Handles one batch (never empty, at most `batch_size` events, in delivery order).
    fn handle(&self, batch: Vec<NotificationEvent>) -> impl Future<Output = BatchOutcome> + Send;
}

/// Errors that stop [`Consumer::run`]. Broker outages are not among them: the consumer
/// reconnects by itself.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// The options cannot work.
    #[error("invalid consumer options: {0}")]
    InvalidOptions(String),
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Queue to consume.
    pub queue: String,
    /// Its type: decides who counts deliveries (quorum: the broker; classic: this library).
    pub kind: QueueKind,
    /// Unacked deliveries the broker may push ahead. 200 = two batches: while one batch is
    /// being stored, the next is already here, so the consumer never waits on the network;
    /// memory stays bounded (200 x ~1 KiB). Must be >= `batch_size`, or batches never fill.
    pub prefetch: u16,
    /// Events per handler call. 100 rows per transaction amortize the commit (the seed's one
    /// transaction per message managed ~240/s) while a failed batch redoes little work.
    pub batch_size: usize,
    /// How long a batch waits to fill up after its first event. 20 ms: under load batches
    /// fill at once; a lone event is stored at most 20 ms later.
    pub batch_linger: Duration,
    /// Deliveries before a failing message is dead-lettered. Classic queues: enforced here.
    /// Quorum queues: the broker's `x-delivery-limit` (set from `QueueSpec::max_deliveries`)
    /// decides; keep both equal.
    pub max_deliveries: u32,
    /// First wait before a failed batch is retried; doubles per consecutive failure up to
    /// `retry_backoff_max`.
    pub retry_backoff: Duration,
    /// Cap of the retry wait.
    pub retry_backoff_max: Duration,
    /// Consumer tag; empty lets the broker choose one.
    pub consumer_tag: String,
    /// Reconnect backoff after the broker was lost.
    pub reconnect_backoff: Backoff,
}

impl ConsumerOptions {
    /// The defaults for `queue` of type `kind`.
    pub fn new(queue: impl Into<String>, kind: QueueKind) -> Self {
        Self {
            queue: queue.into(),
            kind,
            prefetch: 200,
            batch_size: 100,
            batch_linger: Duration::from_millis(20),
            max_deliveries: 5,
            retry_backoff: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(30),
            consumer_tag: String::new(),
            reconnect_backoff: Backoff::default(),
        }
    }

    /// Checks the options (pure).
    pub fn validate(&self) -> Result<(), ConsumeError> {
        let bad = |m: &str| Err(ConsumeError::InvalidOptions(m.to_string()));
        if self.queue.is_empty() {
            return bad("queue is empty");
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1");
        }
        if usize::from(self.prefetch) < self.batch_size {
            return bad("prefetch must be at least batch_size, or a batch can never fill");
        }
        if self.max_deliveries == 0 {
            return bad("max_deliveries must be at least 1");
        }
        Ok(())
    }
}

/// A cloneable view of a consumer's connection state, for readiness probes.
#[derive(Debug, Clone, Default)]
pub struct ConsumerHealth(Arc<AtomicBool>);

impl ConsumerHealth {
    /// Whether the consumer is subscribed to its queue right now.
    pub fn is_connected(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A queue consumer driving a [`BatchHandler`].
pub struct Consumer<H: BatchHandler> {
    config: BrokerConfig,
    options: ConsumerOptions,
    handler: H,
    metrics: Arc<MessagingMetrics>,
    health: ConsumerHealth,
}

/// Why a session with the broker ended.
enum SessionEnd {
    Shutdown,
    Lost(String),
}

struct Session {
    conn: Connection,
    channel: Channel,
    /// Confirm channel for dead letters and classic retries.
    side: Channel,
    consumer: lapin::Consumer,
}

/// What to do with one delivery before the handler sees anything (pure).
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// A valid event for the handler.
    Handle(NotificationEvent),
    /// Not a valid event: dead-letter at once with this reason.
    DeadLetter(ContractError),
}

/// Validates a delivery body against the contract (pure).
pub fn classify(body: &[u8]) -> Verdict {
    match NotificationEvent::from_json(body) {
        Ok(e) => Verdict::Handle(e),
        Err(e) => Verdict::DeadLetter(e),
    }
}

/// Validates a delivery against the contract, current or v0 (the original Python
/// publisher's body, see [`crate::event::v0`]), with its AMQP `timestamp` (pure).
pub fn classify_delivery(body: &[u8], properties: &BasicProperties) -> Verdict {
    match crate::event::v0::parse_any(body, *properties.timestamp()) {
        Ok(e) => Verdict::Handle(e),
        Err(e) => Verdict::DeadLetter(e),
    }
}

/// What a classic queue does with a message whose handling failed (pure).
#[derive(Debug, PartialEq, Eq)]
pub enum ClassicRetry {
    /// Republish with the deliveries header set to this count, then ack the original.
    Requeue(u32),
    /// The message failed `max_deliveries` times: dead-letter it.
    DeadLetter(u32),
}

/// `previous` failed deliveries (the header, 0 when absent) plus this one, against the limit.
pub fn classic_retry(previous: u32, max_deliveries: u32) -> ClassicRetry {
    let deliveries = previous.saturating_add(1);
    if deliveries >= max_deliveries {
        ClassicRetry::DeadLetter(deliveries)
    } else {
        ClassicRetry::Requeue(deliveries)
    }
}

/// Reads the deliveries header of a delivery (any integer type; absent or other: 0).
pub fn deliveries_so_far(properties: &BasicProperties) -> u32 {
    let Some(headers) = properties.headers() else {
        return 0;
    };
    let n: i128 = match headers.inner().get(DELIVERIES_HEADER) {
        Some(AMQPValue::ShortShortInt(v)) => (*v).into(),
        Some(AMQPValue::ShortShortUInt(v)) => (*v).into(),
        Some(AMQPValue::ShortInt(v)) => (*v).into(),
        Some(AMQPValue::ShortUInt(v)) => (*v).into(),
        Some(AMQPValue::LongInt(v)) => (*v).into(),
        Some(AMQPValue::LongUInt(v)) => (*v).into(),
        Some(AMQPValue::LongLongInt(v)) => (*v).into(),
        _ => 0,
    };
    n.clamp(0, i128::from(u32::MAX)) as u32
}

fn truncate(reason: &str) -> String {
    reason.chars().take(MAX_REASON_CHARS).collect()
}

/// The original properties with `extra` headers added.
fn with_headers(properties: &BasicProperties, extra: &[(&str, AMQPValue)]) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    for (k, v) in extra {
        headers.insert((*k).into(), v.clone());
    }
    properties.clone().with_headers(headers)
}

impl<H: BatchHandler> Consumer<H> {
    /// A consumer of `options.queue`; nothing happens until [`Consumer::run`].
    pub fn new(config: BrokerConfig, options: ConsumerOptions, handler: H) -> Self {
        Self {
            config,
            options,
            handler,
            metrics: Arc::new(MessagingMetrics::default()),
            health: ConsumerHealth::default(),
        }
    }

    /// The consumer's counters (take before `run`, which consumes the consumer).
    pub fn metrics(&self) -> Arc<MessagingMetrics> {
        self.metrics.clone()
    }

    /// Whether the consumer is subscribed right now.
    pub fn is_connected(&self) -> bool {
        self.health.is_connected()
    }

    /// A handle on the connection state that outlives `run`'s borrow, for `/ready`.
    pub fn health(&self) -> ConsumerHealth {
        self.health.clone()
    }

    /// Consumes until `shutdown` is cancelled: reconnects after broker loss (capped
    /// exponential backoff); on cancel stops the subscription, finishes and acks the batch
    /// in hand, and closes. Errors only on invalid options.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ConsumeError> {
        self.options.validate()?;
        let mut attempt = 0u32;
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            let session = match self.open().await {
                Ok(s) => s,
                Err(e) => {
                    let delay = self.options.reconnect_backoff.delay(attempt);
                    warn!(queue = %self.options.queue, error = %e, ?delay, "consumer cannot subscribe; retrying");
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            info!(queue = %self.options.queue, broker = %self.config.redacted(), "consumer subscribed");
            self.health.0.store(true, Ordering::Relaxed);
            let mut progressed = false;
            let end = self
                .consume(&session, &shutdown, &mut failures, &mut progressed)
                .await;
            self.health.0.store(false, Ordering::Relaxed);
            match end {
                SessionEnd::Shutdown => {
                    // Unacked, unprocessed deliveries go back to the queue with the channel.
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        session.channel.close(200, "shutdown".into()),
                    )
                    .await;
                    connection::close_quietly(&session.conn).await;
                    info!(queue = %self.options.queue, "consumer stopped");
                    break;
                }
                SessionEnd::Lost(reason) => {
                    warn!(queue = %self.options.queue, %reason, "consumer lost the broker; reconnecting");
                    connection::close_quietly(&session.conn).await;
                    // A session that got work done reconnects at once; one that failed
                    // before finishing a batch (e.g. the DLX is missing) backs off, so a
                    // persistent fault never turns into a reconnect storm.
                    if progressed {
                        attempt = 0;
                    } else {
                        let delay = self.options.reconnect_backoff.delay(attempt);
                        attempt = attempt.saturating_add(1);
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn open(&self) -> Result<Session, String> {
        let conn = connection::open(&self.config, "consumer")
            .await
            .map_err(|e| e.to_string())?;
        let setup = async {
            let channel = conn.create_channel().await?;
            channel
                .basic_qos(self.options.prefetch, BasicQosOptions::default())
                .await?;
            let side = conn.create_channel().await?;
            side.confirm_select(ConfirmSelectOptions::default()).await?;
            let consumer = channel
                .basic_consume(
                    self.options.queue.as_str().into(),
                    self.options.consumer_tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, lapin::Error>((channel, side, consumer))
        };
        match setup.await {
            Ok((channel, side, consumer)) => Ok(Session {
                conn,
                channel,
                side,
                consumer,
            }),
            Err(e) => {
                connection::close_quietly(&conn).await;
                Err(format!("subscribing to `{}`: {e}", self.options.queue))
            }
        }
    }

    async fn consume(
        &self,
        s: &Session,
        shutdown: &CancellationToken,
        failures: &mut u32,
        progressed: &mut bool,
    ) -> SessionEnd {
        let mut consumer = s.consumer.clone();
        let mut health = tokio::time::interval(Duration::from_secs(1));
        loop {
            // Wait for the first delivery of the next batch.
            let first = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return SessionEnd::Shutdown,
                d = consumer.next() => d,
                _ = health.tick() => {
                    if !(s.conn.status().connected() && s.channel.status().connected()) {
                        return SessionEnd::Lost("connection closed".into());
                    }
                    continue;
                }
            };
            let mut batch = match first {
                Some(Ok(d)) => vec![d],
                Some(Err(e)) => return SessionEnd::Lost(e.to_string()),
                None => return SessionEnd::Lost("the broker cancelled the subscription".into()),
            };
            // Fill it for up to batch_linger.
            let linger = Instant::now() + self.options.batch_linger;
            let mut stopping = false;
            while batch.len() < self.options.batch_size {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => { stopping = true; break; }
                    d = consumer.next() => match d {
                        Some(Ok(d)) => batch.push(d),
                        // The batch in hand is not acked: the broker redelivers it.
                        Some(Err(e)) => return SessionEnd::Lost(e.to_string()),
                        None => return SessionEnd::Lost("the broker cancelled the subscription".into()),
                    },
                    _ = tokio::time::sleep_until(linger) => break,
                }
            }
            if stopping || shutdown.is_cancelled() {
                // Stop taking deliveries before finishing the batch in hand.
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    s.channel
                        .basic_cancel(consumer.tag(), BasicCancelOptions::default()),
                )
                .await;
            }
            let span = info_span!("batch", queue = %self.options.queue, size = batch.len());
            if let Err(e) = self
                .process(s, batch, shutdown, failures)
                .instrument(span)
                .await
            {
                return SessionEnd::Lost(e);
            }
            *progressed = true;
            if shutdown.is_cancelled() {
                return SessionEnd::Shutdown;
            }
        }
    }

    /// One batch, start to finish. `Err` = the channel failed; whatever is not acked yet is
    /// left to the broker to redeliver.
    async fn process(
        &self,
        s: &Session,
        deliveries: Vec<Delivery>,
        shutdown: &CancellationToken,
        failures: &mut u32,
    ) -> Result<(), String> {
        MessagingMetrics::add(&self.metrics.consumed, deliveries.len() as u64);
        let mut valid: Vec<(Delivery, NotificationEvent)> = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            match classify_delivery(&d.data, &d.properties) {
                Verdict::Handle(e) => valid.push((d, e)),
                Verdict::DeadLetter(reason) => {
                    warn!(delivery_tag = d.delivery_tag, %reason, "dead-lettering an invalid message");
                    self.dead_letter(s, &d, &reason.to_string()).await?;
                }
            }
        }
        if valid.is_empty() {
            return Ok(());
        }
        let events: Vec<NotificationEvent> = valid.iter().map(|(_, e)| e.clone()).collect();
        match self.handler.handle(events).await {
            BatchOutcome::Done => {
                *failures = 0;
                let last = valid
                    .iter()
                    .map(|(d, _)| d.delivery_tag)
                    .max()
                    .expect("non-empty");
                s.channel
                    .basic_ack(last, BasicAckOptions { multiple: true })
                    .await
                    .map_err(|e| format!("ack: {e}"))?;
                MessagingMetrics::add(&self.metrics.acked, valid.len() as u64);
                debug!(acked = valid.len(), "batch stored");
                Ok(())
            }
            BatchOutcome::Retry(reason) => {
                let delay = Backoff {
                    initial: self.options.retry_backoff,
                    max: self.options.retry_backoff_max,
                }
                .delay(*failures);
                *failures = failures.saturating_add(1);
                warn!(%reason, ?delay, events = valid.len(), "batch failed; retrying after backoff");
                // Held unacked while waiting, so the broker does not hand them straight back.
                if !shutdown.is_cancelled() {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                let failed = if valid.len() > 1 && !shutdown.is_cancelled() {
                    self.isolate(s, valid).await?
                } else {
                    valid
                        .into_iter()
                        .map(|(d, _)| (d, reason.clone()))
                        .collect()
                };
                for (d, reason) in failed {
                    self.give_back(s, &d, &reason).await?;
                }
                Ok(())
            }
        }
    }

    /// Retries a failed batch one event at a time; acks the ones that succeed and returns
    /// the ones that fail (with the reason), plus the rest once the failure looks global.
    async fn isolate(
        &self,
        s: &Session,
        valid: Vec<(Delivery, NotificationEvent)>,
    ) -> Result<Vec<(Delivery, String)>, String> {
        let mut failed = Vec::new();
        let mut succeeded = 0usize;
        let mut failures_in_a_row = 0usize;
        let mut rest = valid.into_iter();
        for (d, e) in rest.by_ref() {
            match self.handler.handle(vec![e]).await {
                BatchOutcome::Done => {
                    succeeded += 1;
                    failures_in_a_row = 0;
                    s.channel
                        .basic_ack(d.delivery_tag, BasicAckOptions { multiple: false })
                        .await
                        .map_err(|e| format!("ack: {e}"))?;
                    MessagingMetrics::add(&self.metrics.acked, 1);
                }
                BatchOutcome::Retry(reason) => {
                    failed.push((d, reason));
                    failures_in_a_row += 1;
                    if succeeded == 0 && failures_in_a_row >= ISOLATION_GIVE_UP {
                        break;
                    }
                }
            }
        }
        let reason = failed.last().map(|(_, r)| r.clone()).unwrap_or_default();
        failed.extend(rest.map(|(d, _)| (d, reason.clone())));
        Ok(failed)
    }

    /// Returns one failed delivery to the queue, or dead-letters it when it used up its
    /// deliveries (classic queues; quorum queues leave that to the broker).
    async fn give_back(&self, s: &Session, d: &Delivery, reason: &str) -> Result<(), String> {
        match self.options.kind {
            QueueKind::Quorum => {
                s.channel
                    .basic_nack(
                        d.delivery_tag,
                        BasicNackOptions {
                            multiple: false,
                            requeue: true,
                        },
                    )
                    .await
                    .map_err(|e| format!("nack: {e}"))?;
                MessagingMetrics::add(&self.metrics.requeued, 1);
            }
            QueueKind::Classic => match classic_retry(
                deliveries_so_far(&d.properties),
                self.options.max_deliveries,
            ) {
                ClassicRetry::DeadLetter(n) => {
                    let why = format!(
                        "failed {n} deliveries (max_deliveries {}): {reason}",
                        self.options.max_deliveries
                    );
                    warn!(delivery_tag = d.delivery_tag, reason = %why, "dead-lettering a message that keeps failing");
                    self.dead_letter(s, d, &why).await?;
                }
                ClassicRetry::Requeue(n) => {
                    let props = with_headers(
                        &d.properties,
                        &[(DELIVERIES_HEADER, AMQPValue::LongLongInt(n.into()))],
                    );
                    // Copy first, confirmed; then ack the original: a crash in between
                    // leaves a duplicate, never a loss.
                    self.confirmed_publish(s, "", &self.options.queue, &d.data, props)
                        .await?;
                    self.ack_one(s, d).await?;
                    MessagingMetrics::add(&self.metrics.requeued, 1);
                }
            },
        }
        Ok(())
    }

    /// Publishes the message to `<queue>.dlx` with the reason header, waits for the
    /// confirm, then acks the original. Any failure leaves the original unacked.
    async fn dead_letter(&self, s: &Session, d: &Delivery, reason: &str) -> Result<(), String> {
        let props = with_headers(
            &d.properties,
            &[
                (
                    DEAD_LETTER_REASON_HEADER,
                    AMQPValue::LongString(LongString::from(truncate(reason))),
                ),
                (
                    DEAD_LETTER_QUEUE_HEADER,
                    AMQPValue::LongString(LongString::from(self.options.queue.as_str())),
                ),
            ],
        );
        let dlx = dlx_name(&self.options.queue);
        self.confirmed_publish(s, &dlx, &self.options.queue, &d.data, props)
            .await?;
        self.ack_one(s, d).await?;
        MessagingMetrics::add(&self.metrics.dead_lettered, 1);
        Ok(())
    }

    async fn ack_one(&self, s: &Session, d: &Delivery) -> Result<(), String> {
        s.channel
            .basic_ack(d.delivery_tag, BasicAckOptions { multiple: false })
            .await
            .map_err(|e| format!("ack: {e}"))
    }

    /// One mandatory publish on the side channel, awaited to its confirm (one at a time, so
    /// a return can only be this message's).
    async fn confirmed_publish(
        &self,
        s: &Session,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), String> {
        let publish = async {
            s.side
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    body,
                    props,
                )
                .await?
                .await
        };
        match tokio::time::timeout(SIDE_CONFIRM_TIMEOUT, publish).await {
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => {
                error!(%exchange, routing_key, "no queue bound: the message stays in its queue (declare the topology)");
                Err(format!(
                    "`{exchange}` routed the message nowhere (is `{routing_key}`'s topology declared?)"
                ))
            }
            Ok(Ok(other)) => Err(format!("publish to `{exchange}` not confirmed: {other:?}")),
            Ok(Err(e)) => Err(format!("publish to `{exchange}`: {e}")),
            Err(_) => Err(format!(
                "publish to `{exchange}`: no confirm within {SIDE_CONFIRM_TIMEOUT:?}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_body_goes_to_the_handler_and_a_bad_one_to_the_dlq_with_its_reason() {
        let e = NotificationEvent::new("u", crate::EventType::System, "t", "b");
        assert_eq!(classify(&e.to_json()), Verdict::Handle(e));
        let Verdict::DeadLetter(reason) = classify(b"{oops") else {
            panic!("bad JSON accepted")
        };
        assert!(reason.to_string().starts_with("invalid JSON"));
    }

    #[test]
    fn a_classic_message_is_requeued_until_its_last_allowed_delivery_then_dead_lettered() {
        assert_eq!(classic_retry(0, 3), ClassicRetry::Requeue(1));
        assert_eq!(classic_retry(1, 3), ClassicRetry::Requeue(2));
        assert_eq!(classic_retry(2, 3), ClassicRetry::DeadLetter(3));
        assert_eq!(classic_retry(0, 1), ClassicRetry::DeadLetter(1));
        assert_eq!(
            classic_retry(u32::MAX, 5),
            ClassicRetry::DeadLetter(u32::MAX)
        );
    }

    #[test]
    fn the_deliveries_header_is_read_from_any_integer_type() {
        let props = |v: AMQPValue| {
            let mut h = FieldTable::default();
            h.insert(DELIVERIES_HEADER.into(), v);
            BasicProperties::default().with_headers(h)
        };
        assert_eq!(deliveries_so_far(&BasicProperties::default()), 0);
        assert_eq!(deliveries_so_far(&props(AMQPValue::LongLongInt(4))), 4);
        assert_eq!(deliveries_so_far(&props(AMQPValue::ShortShortUInt(2))), 2);
        assert_eq!(deliveries_so_far(&props(AMQPValue::LongInt(-3))), 0);
        assert_eq!(
            deliveries_so_far(&props(AMQPValue::LongString("7".into()))),
            0
        );
    }

    #[test]
    fn added_headers_keep_the_original_ones() {
        let mut h = FieldTable::default();
        h.insert("trace".into(), AMQPValue::LongString("abc".into()));
        let p = BasicProperties::default()
            .with_headers(h)
            .with_message_id("m".into());
        let p = with_headers(
            &p,
            &[(
                DEAD_LETTER_REASON_HEADER,
                AMQPValue::LongString("why".into()),
            )],
        );
        let h = p.headers().as_ref().unwrap().inner();
        assert!(h.contains_key("trace") && h.contains_key(DEAD_LETTER_REASON_HEADER));
        assert_eq!(p.message_id().as_ref().unwrap().as_str(), "m");
    }

    #[test]
    fn a_long_reason_is_truncated_for_the_header() {
        assert_eq!(
            truncate(&"é".repeat(5000)).chars().count(),
            MAX_REASON_CHARS
        );
    }

    #[test]
    fn options_that_cannot_work_are_refused() {
        let ok = ConsumerOptions::new("q", QueueKind::Quorum);
        assert!(ok.validate().is_ok());
        assert!(
            ConsumerOptions {
                prefetch: 10,
                ..ok.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            ConsumerOptions {
                batch_size: 0,
                ..ok.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            ConsumerOptions {
                max_deliveries: 0,
                ..ok.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            ConsumerOptions {
                queue: String::new(),
                ..ok
            }
            .validate()
            .is_err()
        );
    }
}
