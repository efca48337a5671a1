//! A publisher that reports a message as sent only when the broker confirmed it.
//!
//! One background task owns the connection and its confirm channel. Callers hand it
//! requests through a bounded queue; it publishes them (persistent, `mandatory`) keeping up
//! to `window` unconfirmed messages in flight, and answers each caller when the broker's
//! confirm arrives. Confirms are settled in publish order, which is what makes a returned
//! (unroutable) message attributable to the right event: see [`settle`].
//!
//! Broker alarm (`connection.blocked`, a memory or disk alarm): the publisher pauses. It
//! writes nothing new, and the confirm timeout does not run for messages in flight while the
//! connection is blocked: the broker holds them, and will confirm them once the alarm
//! clears. Timing them out would report as failed messages that then get stored anyway (late
//! duplicates for a relay that retries), and rebuilding the connection cannot work (lapin
//! writes nothing, not even a close frame, on a blocked connection). [`Publisher::is_blocked`]
//! tells callers, so a relay can stop its own clock too.
//!
//! Connection loss: everything in flight is answered with an error (it may or may not have
//! reached the queue; a retry makes at most a duplicate, which consumers drop by `id`).
//! Requests not yet written wait for the reconnect (capped exponential backoff) for up to
//! `connect_wait`, then fail with [`PublishError::NotConnected`].
use crate::backoff::Backoff;
use crate::connection::{self, ConnectError};
use crate::{BrokerConfig, ContractError, MessagingMetrics, NotificationEvent};
use futures::FutureExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Errors a publish can end with. Any error means: not known to be stored; publish again
/// (the event keeps its `id`, so a duplicate is harmless).
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// The event breaks the contract; it was not sent.
    #[error("event refused before publishing: {0}")]
    Contract(#[from] ContractError),
    /// No connection to the broker within the wait.
    #[error("not connected to {broker} (waited {waited:?}){}", last_error.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    NotConnected {
        /// The redacted broker URL.
        broker: String,
        /// How long the request waited for a connection.
        waited: Duration,
        /// The last connection error, if any.
        last_error: Option<String>,
    },
    /// The first connection attempt of [`Publisher::connect`] failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The connection or channel was lost while the message was unconfirmed.
    #[error("connection lost before the broker confirmed the message: {0}")]
    ConnectionLost(String),
    /// The broker refused to take responsibility for the message (basic.nack).
    #[error("the broker nacked the message")]
    Nacked,
    /// No queue is bound for the routing key (basic.return of a mandatory message):
    /// the queue is missing, so the message was not stored.
    #[error(
        "unroutable: exchange `{exchange}` has no queue for routing key `{routing_key}` ({reply})"
    )]
    Unroutable {
        /// Exchange published to (`""` = default exchange).
        exchange: String,
        /// Routing key used.
        routing_key: String,
        /// The broker's reply text (`NO_ROUTE`).
        reply: String,
    },
    /// The broker did not confirm within the timeout.
    #[error("no confirm from the broker within {0:?}")]
    ConfirmTimeout(Duration),
    /// The publisher was closed.
    #[error("the publisher is closed")]
    Closed,
}

/// Publisher settings.
#[derive(Debug, Clone)]
pub struct PublisherOptions {
    /// Exchange to publish to; `""` (the default exchange) routes by queue name.
    pub exchange: String,
    /// Routing key; with the default exchange, the queue's name.
    pub routing_key: String,
    /// Unconfirmed messages in flight at most. Confirms come back in batches after the
    /// broker's fsync (every few ms); 256 in flight keeps the broker's disk writes batched
    /// and the pipe full without holding much memory (256 x a ~1 KiB event).
    pub window: usize,
    /// How long a message may stay unconfirmed before it is reported failed (and the
    /// connection, evidently unhealthy, is rebuilt).
    pub confirm_timeout: Duration,
    /// How long a request waits for a (re)connection before failing with
    /// [`PublishError::NotConnected`]: long enough to ride out a broker restart, short
    /// enough that an outbox relay notices an outage and backs off.
    pub connect_wait: Duration,
    /// Reconnect backoff.
    pub backoff: Backoff,
    /// AMQP `app_id` property on every message.
    pub app_id: String,
}

impl Default for PublisherOptions {
    fn default() -> Self {
        Self {
            exchange: String::new(),
            routing_key: String::new(),
            window: 256,
            confirm_timeout: Duration::from_secs(30),
            connect_wait: Duration::from_secs(5),
            backoff: Backoff::default(),
            app_id: "swappo".into(),
        }
    }
}

impl PublisherOptions {
    /// Publishes to `queue` through the default exchange.
    pub fn for_queue(queue: impl Into<String>) -> Self {
        Self {
            routing_key: queue.into(),
            ..Self::default()
        }
    }
}

/// One message waiting to be published, and where its outcome goes.
struct Request {
    id: String,
    body: Vec<u8>,
    properties: BasicProperties,
    enqueued: Instant,
    reply: oneshot::Sender<Result<(), PublishError>>,
}

/// Resolves when the broker confirmed (or refused) one message.
type ConfirmFuture = std::pin::Pin<Box<dyn Future<Output = lapin::Result<Confirmation>> + Send>>;

/// A written, unconfirmed message.
struct InFlight {
    id: String,
    /// Write, then broker confirm, of this message.
    confirm: ConfirmFuture,
    deadline: Instant,
    reply: oneshot::Sender<Result<(), PublishError>>,
}

/// A cloneable handle on the publishing task. Dropping the last handle stops the task;
/// [`Publisher::close`] also waits for the messages in flight.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Request>,
    connected: Arc<AtomicBool>,
    blocked: Arc<AtomicBool>,
    metrics: Arc<MessagingMetrics>,
    shutdown: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
    options: PublisherOptions,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Publisher {
    /// Connects (one attempt; an unreachable broker or bad credentials are an error here, at
    /// start-up) and keeps the connection up by itself from then on.
    pub async fn connect(
        config: BrokerConfig,
        options: PublisherOptions,
    ) -> Result<Self, PublishError> {
        let (first_tx, first_rx) = oneshot::channel();
        let publisher = Self::spawn(config, options, Some(first_tx));
        match first_rx.await {
            Ok(Ok(())) => Ok(publisher),
            Ok(Err(e)) => {
                publisher.close().await;
                Err(PublishError::Connect(e))
            }
            Err(_) => Err(PublishError::Closed),
        }
    }

    /// Starts without waiting for the broker: connects in the background, with backoff.
    /// Publishes meanwhile wait up to `connect_wait`.
    pub fn start(config: BrokerConfig, options: PublisherOptions) -> Self {
        Self::spawn(config, options, None)
    }

    fn spawn(
        config: BrokerConfig,
        options: PublisherOptions,
        first: Option<oneshot::Sender<Result<(), ConnectError>>>,
    ) -> Self {
        let window = options.window.max(1);
        // The queue in front of the task holds one more window: callers of publish_all
        // keep it full while the task waits for confirms.
        let (tx, rx) = mpsc::channel(window);
        let connected = Arc::new(AtomicBool::new(false));
        let blocked = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(MessagingMetrics::default());
        let shutdown = CancellationToken::new();
        let task = Task {
            config,
            options: PublisherOptions {
                window,
                ..options.clone()
            },
            rx,
            pending: VecDeque::new(),
            connected: connected.clone(),
            blocked: blocked.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            last_error: None,
        };
        let handle = tokio::spawn(task.run(first));
        Self {
            inner: Arc::new(Inner {
                tx,
                connected,
                blocked,
                metrics,
                shutdown,
                task: Mutex::new(Some(handle)),
                options,
            }),
        }
    }

    /// Publishes one event; resolves when the broker confirmed it (stored, routed to a queue).
    /// Nack, unroutable, lost connection, timeout or no connection: `Err`.
    pub async fn publish(&self, event: &NotificationEvent) -> Result<(), PublishError> {
        let rx = match self.submit(event).await {
            Ok(rx) => rx,
            Err(e) => {
                MessagingMetrics::add(&self.inner.metrics.publish_failed, 1);
                return Err(e);
            }
        };
        rx.await.unwrap_or(Err(PublishError::Closed))
    }

    /// Publishes many events pipelined (up to `window` unconfirmed at once); result `i`
    /// belongs to `events[i]`, and is `Ok` only if the broker confirmed that event.
    pub async fn publish_all(&self, events: &[NotificationEvent]) -> Vec<Result<(), PublishError>> {
        let mut waiting = Vec::with_capacity(events.len());
        for event in events {
            waiting.push(self.submit(event).await);
        }
        let mut results = Vec::with_capacity(events.len());
        for w in waiting {
            results.push(match w {
                Ok(rx) => rx.await.unwrap_or(Err(PublishError::Closed)),
                Err(e) => {
                    MessagingMetrics::add(&self.inner.metrics.publish_failed, 1);
                    Err(e)
                }
            });
        }
        results
    }

    async fn submit(
        &self,
        event: &NotificationEvent,
    ) -> Result<oneshot::Receiver<Result<(), PublishError>>, PublishError> {
        event.validate()?;
        let (reply, rx) = oneshot::channel();
        let request = Request {
            id: event.id.to_string(),
            body: event.to_json(),
            properties: properties(event, &self.inner.options.app_id),
            enqueued: Instant::now(),
            reply,
        };
        self.inner
            .tx
            .send(request)
            .await
            .map_err(|_| PublishError::Closed)?;
        Ok(rx)
    }

    /// Whether the publisher holds a working connection and channel right now.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// Whether the broker has blocked the connection (a resource alarm): messages wait,
    /// neither written nor timed out, until it is unblocked.
    pub fn is_blocked(&self) -> bool {
        self.inner.blocked.load(Ordering::Relaxed)
    }

    /// The publisher's counters.
    pub fn metrics(&self) -> Arc<MessagingMetrics> {
        self.inner.metrics.clone()
    }

    /// Stops taking requests, waits (up to the confirm timeout) for the confirms of what is
    /// in flight, fails what was never sent with [`PublishError::Closed`], closes the
    /// connection. Idempotent; other clones then fail with `Closed`.
    pub async fn close(&self) {
        self.inner.shutdown.cancel();
        let handle = self.inner.task.lock().expect("publisher task lock").take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
    }
}

/// The AMQP properties of an event: persistent, JSON, `message_id` = id, `type`, timestamp.
pub(crate) fn properties(event: &NotificationEvent, app_id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2) // persistent: written to disk before the confirm
        .with_message_id(event.id.to_string().into())
        .with_type(event.event_type.as_str().into())
        .with_timestamp(event.occurred_at.timestamp().max(0) as u64)
        .with_app_id(app_id.into())
}

/// The background task: owns the connection, the channel and every unconfirmed message.
struct Task {
    config: BrokerConfig,
    options: PublisherOptions,
    rx: mpsc::Receiver<Request>,
    /// Requests taken from `rx` but not written yet (e.g. waiting for a reconnect).
    pending: VecDeque<Request>,
    connected: Arc<AtomicBool>,
    blocked: Arc<AtomicBool>,
    metrics: Arc<MessagingMetrics>,
    shutdown: CancellationToken,
    last_error: Option<String>,
}

enum SessionEnd {
    Lost,
    Shutdown,
}

impl Task {
    async fn run(mut self, mut first: Option<oneshot::Sender<Result<(), ConnectError>>>) {
        let mut attempt = 0u32;
        while !self.shutdown.is_cancelled() {
            match self.open().await {
                Ok((conn, channel)) => {
                    if let Some(first) = first.take() {
                        let _ = first.send(Ok(()));
                    }
                    info!(broker = %self.config.redacted(), "publisher connected");
                    attempt = 0;
                    self.connected.store(true, Ordering::Relaxed);
                    let end = self.session(&conn, &channel).await;
                    self.connected.store(false, Ordering::Relaxed);
                    self.blocked.store(false, Ordering::Relaxed);
                    connection::close_when_unblocked(conn).await;
                    if let SessionEnd::Shutdown = end {
                        break;
                    }
                }
                Err(e) => {
                    warn!(error = %e, attempt, "publisher cannot connect");
                    self.last_error = Some(e.to_string());
                    if let Some(first) = first.take() {
                        let _ = first.send(Err(e));
                        return;
                    }
                    self.wait_disconnected(self.options.backoff.delay(attempt))
                        .await;
                    attempt = attempt.saturating_add(1);
                }
            }
        }
        // Shut down: whatever was never written is failed, not silently dropped.
        self.rx.close();
        while let Ok(r) = self.rx.try_recv() {
            self.pending.push_back(r);
        }
        for r in self.pending.drain(..) {
            MessagingMetrics::add(&self.metrics.publish_failed, 1);
            let _ = r.reply.send(Err(PublishError::Closed));
        }
    }

    async fn open(&self) -> Result<(Connection, Channel), ConnectError> {
        let conn = connection::open(&self.config, "publisher").await?;
        let broker = self.config.redacted();
        let amqp = |source| ConnectError::Amqp {
            broker: broker.clone(),
            source,
        };
        let channel = conn.create_channel().await.map_err(amqp)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(amqp)?;
        Ok((conn, channel))
    }

    /// Sleeps `delay` while disconnected, still taking requests and failing those that
    /// waited longer than `connect_wait`.
    async fn wait_disconnected(&mut self, delay: Duration) {
        let until = Instant::now() + delay;
        loop {
            self.expire_pending();
            let next_expiry = self
                .pending
                .front()
                .map(|r| r.enqueued + self.options.connect_wait);
            let wake = next_expiry.map_or(until, |e| e.min(until));
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= until { self.expire_pending(); return; }
                }
                r = self.rx.recv() => match r {
                    Some(r) => self.pending.push_back(r),
                    // Every handle is gone: nothing can be asked any more.
                    None => { self.shutdown.cancel(); return; }
                },
            }
        }
    }

    fn expire_pending(&mut self) {
        let now = Instant::now();
        while let Some(r) = self.pending.front() {
            if now.duration_since(r.enqueued) < self.options.connect_wait {
                break;
            }
            let r = self.pending.pop_front().expect("front exists");
            MessagingMetrics::add(&self.metrics.publish_failed, 1);
            let _ = r.reply.send(Err(PublishError::NotConnected {
                broker: self.config.redacted(),
                waited: now.duration_since(r.enqueued),
                last_error: self.last_error.clone(),
            }));
        }
    }

    /// Publishes and settles confirms on one connection until it fails or shutdown.
    async fn session(&mut self, conn: &Connection, channel: &Channel) -> SessionEnd {
        let mut inflight: VecDeque<InFlight> = VecDeque::new();
        let mut returned: HashSet<String> = HashSet::new();
        let mut health = tokio::time::interval(Duration::from_millis(500));
        // One timer for the oldest message's deadline, moved when the front changes: a new
        // timer per turn of the loop (one turn per message) cost a timer-wheel insert and
        // removal per message.
        let overdue = tokio::time::sleep(self.options.confirm_timeout);
        tokio::pin!(overdue);
        let mut accepting = true;
        loop {
            if !accepting && inflight.is_empty() {
                return SessionEnd::Shutdown;
            }
            let blocked = conn.status().blocked();
            self.blocked.store(blocked, Ordering::Relaxed);
            if blocked && accepting {
                // The broker holds what is in flight: no confirm is overdue while blocked.
                let until = Instant::now() + self.options.confirm_timeout;
                for f in inflight.iter_mut() {
                    f.deadline = f.deadline.max(until);
                }
            }
            let front_deadline = inflight.front().map(|f| f.deadline);
            if let Some(deadline) = front_deadline
                && overdue.deadline() != deadline
            {
                overdue.as_mut().reset(deadline);
            }
            let can_send = accepting && !blocked && inflight.len() < self.options.window;
            enum Step {
                Confirmed(lapin::Result<Confirmation>),
                TimedOut,
                Send(Request),
                Health,
                Shutdown,
                HandlesGone,
            }
            let step = {
                let pending = &mut self.pending;
                let rx = &mut self.rx;
                let next_request = async {
                    match pending.pop_front() {
                        Some(r) => Some(r),
                        None => rx.recv().await,
                    }
                };
                let front_confirm = std::future::poll_fn(|cx| match inflight.front_mut() {
                    Some(f) => f.confirm.as_mut().poll(cx),
                    None => std::task::Poll::Pending,
                });
                tokio::select! {
                    biased;
                    r = front_confirm, if front_deadline.is_some() => Step::Confirmed(r),
                    _ = self.shutdown.cancelled(), if accepting => Step::Shutdown,
                    _ = health.tick() => Step::Health,
                    _ = &mut overdue, if front_deadline.is_some() => Step::TimedOut,
                    r = next_request, if can_send => match r { Some(r) => Step::Send(r), None => Step::HandlesGone },
                }
            };
            match step {
                Step::Confirmed(first) => {
                    let front = inflight.pop_front().expect("a confirm came from the front");
                    let group = settle_group(front, first, &mut inflight);
                    self.settle(group, &mut returned);
                }
                Step::Send(first) => {
                    // Every request already waiting goes out in this turn (up to the window):
                    // one pass through the select per message cost more than the publish.
                    let mut next = Some(first);
                    let mut result = Ok(());
                    while let Some(request) = next.take() {
                        result = self.send(channel, request, &mut inflight).await;
                        if result.is_err() || inflight.len() >= self.options.window {
                            break;
                        }
                        next = self.pending.pop_front().or_else(|| self.rx.try_recv().ok());
                    }
                    if let Err(e) = result {
                        warn!(error = %e, "publish failed to write; reconnecting");
                        self.last_error = Some(e.to_string());
                        self.fail_inflight(
                            &mut inflight,
                            PublishError::ConnectionLost(e.to_string()),
                        );
                        return SessionEnd::Lost;
                    }
                }
                Step::TimedOut => {
                    warn!(timeout = ?self.options.confirm_timeout, "broker confirm overdue; rebuilding the connection");
                    self.fail_inflight(
                        &mut inflight,
                        PublishError::ConfirmTimeout(self.options.confirm_timeout),
                    );
                    return SessionEnd::Lost;
                }
                Step::Health => {
                    if !(conn.status().connected() && channel.status().connected()) {
                        // Confirms in flight are normally rejected by lapin already; those
                        // still pending are failed here, never assumed.
                        let e = "connection closed".to_string();
                        warn!("publisher connection lost; reconnecting");
                        self.last_error = Some(e.clone());
                        self.drain_resolved(&mut inflight, &mut returned);
                        self.fail_inflight(&mut inflight, PublishError::ConnectionLost(e));
                        return SessionEnd::Lost;
                    }
                }
                Step::Shutdown | Step::HandlesGone => {
                    debug!(
                        in_flight = inflight.len(),
                        "publisher closing: waiting for confirms"
                    );
                    accepting = false;
                    self.shutdown.cancel();
                }
            }
        }
    }

    async fn send(
        &mut self,
        channel: &Channel,
        r: Request,
        inflight: &mut VecDeque<InFlight>,
    ) -> lapin::Result<()> {
        // mandatory: an unroutable message comes back (basic.return) instead of vanishing.
        let options = BasicPublishOptions {
            mandatory: true,
            immediate: false,
        };
        let (ch, body, props) = (channel.clone(), r.body.clone(), r.properties.clone());
        let (exchange, routing_key) = (
            self.options.exchange.clone(),
            self.options.routing_key.clone(),
        );
        let mut confirm: ConfirmFuture = Box::pin(async move {
            ch.basic_publish(exchange.into(), routing_key.into(), options, &body, props)
                .await?
                .await
        });
        // Poll once now: that takes the delivery tag and queues the frames, in this order.
        // The write itself completes in lapin's I/O loop while the next messages queue up,
        // so the socket gets many messages per write instead of one write per message.
        match futures::poll!(confirm.as_mut()) {
            std::task::Poll::Ready(Err(e)) if !channel.status().connected() => {
                // Refused before anything was written: safe to send on the next connection.
                self.pending.push_front(r);
                Err(e)
            }
            polled => {
                MessagingMetrics::add(&self.metrics.published, 1);
                if let std::task::Poll::Ready(result) = polled {
                    confirm = Box::pin(std::future::ready(result));
                }
                inflight.push_back(InFlight {
                    id: r.id,
                    confirm,
                    deadline: Instant::now() + self.options.confirm_timeout,
                    reply: r.reply,
                });
                Ok(())
            }
        }
    }

    /// Settles the confirms that already resolved, in order, before the rest are failed.
    fn drain_resolved(&self, inflight: &mut VecDeque<InFlight>, returned: &mut HashSet<String>) {
        while let Some(front) = inflight.front_mut() {
            let Some(first) = front.confirm.as_mut().now_or_never() else {
                break;
            };
            let front = inflight.pop_front().expect("front exists");
            let group = settle_group(front, first, inflight);
            self.settle(group, returned);
        }
    }

    fn settle(
        &self,
        group: Vec<(InFlight, lapin::Result<Confirmation>)>,
        returned: &mut HashSet<String>,
    ) {
        let outcomes = settle(group.iter().map(|(f, r)| (f.id.as_str(), r)), returned);
        for ((f, _), outcome) in group.into_iter().zip(outcomes) {
            let result = match outcome {
                Outcome::Confirmed => {
                    MessagingMetrics::add(&self.metrics.confirmed, 1);
                    Ok(())
                }
                Outcome::Nacked => Err(PublishError::Nacked),
                Outcome::Returned(reply) => Err(PublishError::Unroutable {
                    exchange: self.options.exchange.clone(),
                    routing_key: self.options.routing_key.clone(),
                    reply,
                }),
                Outcome::Failed(e) => Err(PublishError::ConnectionLost(e)),
            };
            if result.is_err() {
                MessagingMetrics::add(&self.metrics.publish_failed, 1);
            }
            let _ = f.reply.send(result);
        }
    }

    fn fail_inflight(&self, inflight: &mut VecDeque<InFlight>, error: PublishError) {
        for f in inflight.drain(..) {
            MessagingMetrics::add(&self.metrics.publish_failed, 1);
            let _ = f.reply.send(Err(error.clone()));
        }
    }
}

/// `front` resolved; every following message whose confirm has also resolved joins it.
/// lapin resolves all the messages of one (multiple) ack frame at once, so the group holds
/// that whole frame, and with it every basic.return lapin attached to any of them.
fn settle_group(
    front: InFlight,
    first: lapin::Result<Confirmation>,
    inflight: &mut VecDeque<InFlight>,
) -> Vec<(InFlight, lapin::Result<Confirmation>)> {
    let mut group = vec![(front, first)];
    while let Some(next) = inflight.front_mut() {
        let Some(result) = next.confirm.as_mut().now_or_never() else {
            break;
        };
        group.push((inflight.pop_front().expect("front exists"), result));
    }
    group
}

/// The verdict on one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Confirmed,
    Nacked,
    Returned(String),
    Failed(String),
}

/// Decides the outcome of a group of resolved confirms, in publish order (pure).
///
/// lapin hands each basic.return to whichever confirm of the same ack frame it completes
/// first (its pending confirms live in a hash map), not necessarily the returned message's
/// own. The broker always sends a message's return before its ack, so the return is attached
/// to a message of the same frame or an earlier one. Hence: collect the `message_id`s of
/// every returned message of the group into `returned` (which carries over to later groups),
/// and a message is unroutable exactly when its own id is in there, whoever carried it.
pub(crate) fn settle<'a>(
    group: impl Iterator<Item = (&'a str, &'a lapin::Result<Confirmation>)> + Clone,
    returned: &mut HashSet<String>,
) -> Vec<Outcome> {
    for (_, result) in group.clone() {
        if let Ok(Confirmation::Ack(Some(r)) | Confirmation::Nack(Some(r))) = result {
            let id = r
                .delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str().to_string());
            returned.insert(id.unwrap_or_default());
        }
    }
    group
        .map(|(id, result)| match result {
            Ok(Confirmation::Ack(_)) if returned.remove(id) => Outcome::Returned("NO_ROUTE".into()),
            Ok(Confirmation::Ack(_)) => Outcome::Confirmed,
            Ok(Confirmation::Nack(_)) => {
                returned.remove(id);
                Outcome::Nacked
            }
            Ok(Confirmation::NotRequested) => {
                Outcome::Failed("confirms not enabled on the channel".into())
            }
            Err(e) => Outcome::Failed(e.to_string()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventType;
    use lapin::message::{BasicReturnMessage, Delivery};

    fn returned(id: &str) -> Confirmation {
        let mut delivery = Delivery::mock(0, "".into(), "q".into(), false, vec![]);
        delivery.properties = BasicProperties::default().with_message_id(id.into());
        Confirmation::Ack(Some(BasicReturnMessage {
            delivery,
            reply_code: 312,
            reply_text: "NO_ROUTE".into(),
        }))
    }

    #[test]
    fn a_return_counts_against_its_own_message_whichever_confirm_carried_it() {
        let results = [
            Ok(returned("b")),
            Ok(Confirmation::Ack(None)),
            Ok(Confirmation::Ack(None)),
        ];
        let group = ["a", "b", "c"].into_iter().zip(results.iter());
        let mut set = HashSet::new();
        let out = settle(group, &mut set);
        assert_eq!(
            out,
            [
                Outcome::Confirmed,
                Outcome::Returned("NO_ROUTE".into()),
                Outcome::Confirmed
            ]
        );
        assert!(set.is_empty());
    }

    #[test]
    fn a_return_carried_by_an_earlier_group_is_remembered() {
        let mut set = HashSet::new();
        let early = [Ok(returned("late"))];
        assert_eq!(
            settle(["early"].into_iter().zip(early.iter()), &mut set),
            [Outcome::Confirmed]
        );
        let late = [Ok(Confirmation::Ack(None))];
        assert_eq!(
            settle(["late"].into_iter().zip(late.iter()), &mut set),
            [Outcome::Returned("NO_ROUTE".into())]
        );
    }

    #[test]
    fn nacks_and_errors_are_never_confirmed() {
        let err: lapin::Error =
            lapin::ErrorKind::InvalidChannelState(lapin::ChannelState::Closed, "test").into();
        let results = [
            Ok(Confirmation::Nack(None)),
            Err(err),
            Ok(Confirmation::NotRequested),
        ];
        let out = settle(
            ["a", "b", "c"].into_iter().zip(results.iter()),
            &mut HashSet::new(),
        );
        assert_eq!(out[0], Outcome::Nacked);
        assert!(matches!(out[1], Outcome::Failed(_)));
        assert!(matches!(out[2], Outcome::Failed(_)));
    }

    #[test]
    fn event_properties_are_persistent_json_with_id_and_type() {
        let e = NotificationEvent::new("u", EventType::TradeCompleted, "t", "b");
        let p = properties(&e, "swappo");
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(
            p.message_id().as_ref().map(|s| s.to_string()),
            Some(e.id.to_string())
        );
        assert_eq!(
            p.kind().as_ref().map(|s| s.as_str()),
            Some("trade_completed")
        );
        assert_eq!(*p.timestamp(), Some(e.occurred_at.timestamp() as u64));
    }
}
