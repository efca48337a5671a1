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
//!    row with no success: that is an outage). Events that succeed are acked; each failing one
//!    is republished to the queue with `x-swappo-deliveries` incremented (confirmed, then the
//!    original acked), and dead-lettered with the handler's reason once it failed
//!    `max_deliveries` times. This counting is the library's, on both queue types.
//!
//! Why the library counts handler failures itself, on quorum queues too:
//! - RabbitMQ counts every *return* of a message against a quorum queue's
//!   `x-delivery-limit`: a `basic.nack`/`basic.reject` with requeue, and also every unacked
//!   delivery handed back when a channel closes (a lost connection, a restart, the broker's
//!   consumer timeout). A budget shared with session churn dead-letters good events after a
//!   few connection flaps; so handler failures are counted in a header instead, and the
//!   queue's `x-delivery-limit` keeps generous headroom ([`crate::topology::quorum_delivery_limit`])
//!   for what only the broker can see: a message that kills the process, again and again.
//! - RabbitMQ 4.3 and later only count `basic.reject` (a `basic.nack` with requeue no longer
//!   increments the delivery count), so a nack-based give-back would loop a poison message
//!   forever there. A counted republish behaves the same on 3.x and 4.x.
//! - Prefetch defaults to the batch size, so a session end returns (and the broker counts)
//!   only the batch in hand, not a second batch that was never looked at.
//!
//! A side publish (dead letter, counted requeue) goes out on a connection of its own
//! ([`crate::side`]): a broker alarm that blocks publishing then never stops the acks of
//! stored batches. When a side publish fails (the DLQ was deleted, the exchange routes
//! nowhere, the broker is blocked), the message concerned is kept unacked and tried again
//! with backoff; the rest of the batch is stored and acked as usual.
//!
//! Broker loss: the batch in hand is not acked (the broker redelivers it; the handler must
//! be idempotent on `id`), and the consumer reconnects with backoff. Shutdown: stop the
//! subscription, finish and ack the batch in hand, close the channel (prefetched,
//! unprocessed messages return to the queue).
use crate::backoff::Backoff;
use crate::connection;
use crate::side::{SideError, SidePublisher};
use crate::topology::dlx_name;
use crate::{BrokerConfig, ContractError, MessagingMetrics, NotificationEvent, QueueKind};
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

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
/// Headers the broker sets on a delivery, dropped from a republished copy (the copy is a new
/// message to the broker; our own count travels in [`DELIVERIES_HEADER`]).
const BROKER_HEADERS: [&str; 2] = ["x-delivery-count", "x-death"];

/// What the handler did with a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// All stored: ack the batch with one multiple-ack.
    Done,
    /// The batch failed because of what some event in it holds (a value the database
    /// refuses): it is retried one event at a time, and an event that keeps failing ends in
    /// the DLQ after `max_deliveries`. A failure that is not about the events (a database
    /// that is down, read-only or timing out) should be waited out inside the handler
    /// instead, with the batch in hand: every `Retry` spends a delivery of each event.
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
    /// Unacked deliveries the broker may push ahead. Default: the batch size. Every
    /// unacked delivery is handed back (and counted against a quorum queue's delivery limit)
    /// when the session ends, so a prefetch of two batches would spend a delivery of a batch
    /// that was never looked at at every reconnect, restart or consumer timeout. The cost is
    /// one round trip between a batch's ack and the next deliveries (well under a
    /// millisecond on a cluster network against a commit of ~10 ms). Must be >= `batch_size`,
    /// or batches never fill.
    pub prefetch: u16,
    /// Events per handler call. 100 rows per transaction amortize the commit (the seed's one
    /// transaction per message managed ~240/s) while a failed batch redoes little work.
    pub batch_size: usize,
    /// How long a batch waits to fill up after its first event. 20 ms: under load batches
    /// fill at once; a lone event is stored at most 20 ms later.
    pub batch_linger: Duration,
    /// Handler failures before a message is dead-lettered, counted by this library on both
    /// queue types (see the module docs). Keep it equal to `QueueSpec::max_deliveries`, from
    /// which a quorum queue's broker-side limit is derived with headroom.
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
            prefetch: 100,
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
    /// Dead letters and counted requeues, on a connection of their own.
    side: SidePublisher,
    consumer: lapin::Consumer,
    /// Deliveries whose side publish failed: kept unacked, tried again with backoff.
    held: Vec<Held>,
    /// Consecutive rounds in which some held delivery still failed.
    held_attempt: u32,
    /// When the held deliveries are tried next.
    held_retry_at: Instant,
}

/// What must be published before a delivery may be acked away.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SideAction {
    /// To `<queue>.dlx`, with this reason.
    DeadLetter(String),
    /// Back to the queue with the deliveries header set to this count.
    Requeue(u32),
}

struct Held {
    delivery: Delivery,
    action: SideAction,
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

/// The original properties with `extra` headers added and the broker's own delivery headers
/// ([`BROKER_HEADERS`]) dropped: the copy is a new message to the broker.
fn with_headers(properties: &BasicProperties, extra: &[(&str, AMQPValue)]) -> BasicProperties {
    let mut headers = properties
        .headers()
        .as_ref()
        .map(|h| h.inner().clone())
        .unwrap_or_default();
    for k in BROKER_HEADERS {
        headers.remove(k);
    }
    for (k, v) in extra {
        headers.insert((*k).into(), v.clone());
    }
    properties.clone().with_headers(FieldTable::from(headers))
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
            let mut session = session;
            let end = self
                .consume(&mut session, &shutdown, &mut failures, &mut progressed)
                .await;
            self.health.0.store(false, Ordering::Relaxed);
            if !session.held.is_empty() {
                warn!(queue = %self.options.queue, held = session.held.len(),
                    "session ends with messages whose dead letter or requeue never went out; the broker redelivers them");
            }
            session.side.close().await;
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
            let consumer = channel
                .basic_consume(
                    self.options.queue.as_str().into(),
                    self.options.consumer_tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, lapin::Error>((channel, consumer))
        };
        match setup.await {
            Ok((channel, consumer)) => Ok(Session {
                conn,
                channel,
                side: SidePublisher::new(self.config.clone()),
                consumer,
                held: Vec::new(),
                held_attempt: 0,
                held_retry_at: Instant::now(),
            }),
            Err(e) => {
                connection::close_quietly(&conn).await;
                Err(format!("subscribing to `{}`: {e}", self.options.queue))
            }
        }
    }

    async fn consume(
        &self,
        s: &mut Session,
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
                    if let Err(e) = self.retry_held(s).await {
                        return SessionEnd::Lost(e);
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
            let done = async {
                self.retry_held(s).await?;
                self.process(s, batch, shutdown, failures).await
            };
            if let Err(e) = done.instrument(span).await {
                return SessionEnd::Lost(e);
            }
            *progressed = true;
            if shutdown.is_cancelled() {
                return SessionEnd::Shutdown;
            }
        }
    }

    /// One batch, start to finish. `Err` = the consuming channel failed; whatever is not
    /// acked yet is left to the broker to redeliver.
    async fn process(
        &self,
        s: &mut Session,
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
                    self.side_action(s, d, SideAction::DeadLetter(reason.to_string()))
                        .await?;
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
                let tags: Vec<u64> = valid.iter().map(|(d, _)| d.delivery_tag).collect();
                let lowest_held = s.held.iter().map(|h| h.delivery.delivery_tag).min();
                ack_stored(&s.channel, &tags, lowest_held).await?;
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
                if shutdown.is_cancelled() {
                    // Not the events' fault that we stop: no count against them; the channel
                    // close hands them back.
                    return Ok(());
                }
                let failed = if valid.len() > 1 {
                    self.isolate(&s.channel, valid).await?
                } else {
                    valid
                        .into_iter()
                        .map(|(d, _)| (d, reason.clone()))
                        .collect()
                };
                for (d, reason) in failed {
                    self.give_back(s, d, &reason).await?;
                }
                Ok(())
            }
        }
    }

    /// Retries a failed batch one event at a time; acks the ones that succeed and returns
    /// the ones that fail (with the reason), plus the rest once the failure looks global.
    async fn isolate(
        &self,
        channel: &Channel,
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
                    ack_one(channel, &d).await?;
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

    /// Returns one failed delivery to the queue with its failure counted, or dead-letters it
    /// when it used up its deliveries (both queue types: see the module docs).
    async fn give_back(&self, s: &mut Session, d: Delivery, reason: &str) -> Result<(), String> {
        let action = match classic_retry(
            deliveries_so_far(&d.properties),
            self.options.max_deliveries,
        ) {
            ClassicRetry::DeadLetter(n) => {
                let why = format!(
                    "failed {n} deliveries (max_deliveries {}): {reason}",
                    self.options.max_deliveries
                );
                warn!(delivery_tag = d.delivery_tag, reason = %why, "dead-lettering a message that keeps failing");
                SideAction::DeadLetter(why)
            }
            ClassicRetry::Requeue(n) => SideAction::Requeue(n),
        };
        self.side_action(s, d, action).await
    }

    /// Publishes what `action` needs, confirmed, then acks the original. When the publish
    /// fails, the delivery is held unacked for a later try and the batch goes on; `Err` only
    /// when the consuming channel fails.
    async fn side_action(
        &self,
        s: &mut Session,
        d: Delivery,
        action: SideAction,
    ) -> Result<(), String> {
        match self.publish_side(s, &d, &action).await {
            Ok(()) => {
                ack_one(&s.channel, &d).await?;
                self.count_side(&action);
            }
            Err(e) => {
                self.hold(s, d, action, &e);
            }
        }
        Ok(())
    }

    fn count_side(&self, action: &SideAction) {
        match action {
            SideAction::DeadLetter(_) => MessagingMetrics::add(&self.metrics.dead_lettered, 1),
            SideAction::Requeue(_) => MessagingMetrics::add(&self.metrics.requeued, 1),
        }
    }

    fn hold(&self, s: &mut Session, d: Delivery, action: SideAction, e: &SideError) {
        MessagingMetrics::add(&self.metrics.side_publish_failed, 1);
        warn!(queue = %self.options.queue, delivery_tag = d.delivery_tag, error = %e,
            "a dead letter or requeue did not go out; the message stays unacked and is tried again");
        if s.held.is_empty() {
            s.held_retry_at = Instant::now() + self.held_backoff().delay(s.held_attempt);
        }
        s.held.push(Held {
            delivery: d,
            action,
        });
    }

    fn held_backoff(&self) -> Backoff {
        Backoff {
            initial: self.options.retry_backoff,
            max: self.options.retry_backoff_max,
        }
    }

    /// Tries the held deliveries' side publishes again once their backoff is over.
    async fn retry_held(&self, s: &mut Session) -> Result<(), String> {
        if s.held.is_empty() || Instant::now() < s.held_retry_at {
            return Ok(());
        }
        let held = std::mem::take(&mut s.held);
        let mut still = Vec::new();
        let mut blocked = false;
        for h in held {
            if blocked {
                still.push(h);
                continue;
            }
            match self.publish_side(s, &h.delivery, &h.action).await {
                Ok(()) => {
                    ack_one(&s.channel, &h.delivery).await?;
                    self.count_side(&h.action);
                }
                Err(e) => {
                    MessagingMetrics::add(&self.metrics.side_publish_failed, 1);
                    blocked = e == SideError::Blocked;
                    still.push(h);
                }
            }
        }
        if still.is_empty() {
            s.held_attempt = 0;
            info!(queue = %self.options.queue, "held dead letters and requeues went out");
        } else {
            s.held_attempt = s.held_attempt.saturating_add(1);
            s.held_retry_at = Instant::now() + self.held_backoff().delay(s.held_attempt);
        }
        s.held = still;
        Ok(())
    }

    /// The side publish `action` needs for `d`.
    async fn publish_side(
        &self,
        s: &mut Session,
        d: &Delivery,
        action: &SideAction,
    ) -> Result<(), SideError> {
        match action {
            SideAction::DeadLetter(reason) => {
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
                s.side
                    .publish(d.delivery_tag, &dlx, &self.options.queue, &d.data, props)
                    .await
            }
            SideAction::Requeue(n) => {
                let props = with_headers(
                    &d.properties,
                    &[(DELIVERIES_HEADER, AMQPValue::LongLongInt((*n).into()))],
                );
                // Copy first, confirmed; then ack the original: a crash in between leaves a
                // duplicate, never a loss.
                s.side
                    .publish(d.delivery_tag, "", &self.options.queue, &d.data, props)
                    .await
            }
        }
    }
}

async fn ack_one(channel: &Channel, d: &Delivery) -> Result<(), String> {
    channel
        .basic_ack(d.delivery_tag, BasicAckOptions { multiple: false })
        .await
        .map_err(|e| format!("ack: {e}"))
}

/// Acks stored deliveries: one multiple-ack up to the last tag, unless a held delivery
/// (whose side publish failed) lies below it; then one ack each, so the held one stays
/// unacked.
async fn ack_stored(
    channel: &Channel,
    tags: &[u64],
    lowest_held: Option<u64>,
) -> Result<(), String> {
    let Some(&last) = tags.iter().max() else {
        return Ok(());
    };
    let ack = |tag: u64, multiple: bool| async move {
        channel
            .basic_ack(tag, BasicAckOptions { multiple })
            .await
            .map_err(|e| format!("ack: {e}"))
    };
    if lowest_held.is_none_or(|held| held > last) {
        return ack(last, true).await;
    }
    for &tag in tags {
        ack(tag, false).await?;
    }
    Ok(())
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
