//! Queue and dead-letter declaration (DESIGN.md §6), shared by the operator and the
//! services' tests: `<q>.dlx` (a durable fanout exchange), `<q>.dlq` (a durable queue bound
//! to it) and the queue itself, dead-lettering into `<q>.dlx`.
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ErrorKind, ExchangeKind};

/// Longest queue name RabbitMQ accepts (an AMQP short string), in bytes.
const MAX_NAME_BYTES: usize = 255;
/// Room kept for the `.dlx` / `.dlq` suffixes so the derived names fit too.
const SUFFIX_BYTES: usize = 4;

/// Errors declaring a queue's topology.
#[derive(Debug, thiserror::Error, Clone)]
pub enum TopologyError {
    /// The spec cannot be declared as written (caught before talking to the broker).
    #[error("queue `{queue}` cannot be declared: {reason}")]
    InvalidSpec {
        /// Queue name.
        queue: String,
        /// What is wrong.
        reason: String,
    },
    /// The queue (or its `.dlq`/`.dlx`) exists with different arguments or type, which
    /// RabbitMQ cannot change in place (PRECONDITION_FAILED). Retrying will not help: the
    /// queue must be deleted (losing its messages) or the spec changed back.
    #[error("queue `{queue}` exists with different settings: {detail}")]
    Conflict {
        /// The queue or exchange that conflicts.
        queue: String,
        /// The broker's explanation, e.g. `inequivalent arg 'x-queue-type' ...: received
        /// 'classic' but current is 'quorum'`.
        detail: String,
    },
    /// Any other broker or connection failure (worth retrying).
    #[error("declaring `{queue}` failed: {source}")]
    Broker {
        /// Queue (or exchange) being declared.
        queue: String,
        /// The AMQP error.
        #[source]
        source: lapin::Error,
    },
}

impl TopologyError {
    /// For a [`TopologyError::Conflict`], the argument RabbitMQ named (`x-queue-type`, ...).
    pub fn conflicting_argument(&self) -> Option<&str> {
        let TopologyError::Conflict { detail, .. } = self else {
            return None;
        };
        let rest = &detail[detail.find("inequivalent arg '")? + "inequivalent arg '".len()..];
        Some(&rest[..rest.find('\'')?])
    }

    /// Whether retrying later can succeed (a broker outage) or cannot (a bad spec, a conflict).
    pub fn is_retryable(&self) -> bool {
        matches!(self, TopologyError::Broker { .. })
    }
}

/// Queue type (`x-queue-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum QueueKind {
    /// Replicated Raft queue; the broker counts deliveries (`x-delivery-limit`).
    #[default]
    Quorum,
    /// Classic queue; the consumer counts deliveries itself.
    Classic,
}

impl QueueKind {
    /// The `x-queue-type` value.
    pub fn as_str(&self) -> &'static str {
        match self {
            QueueKind::Quorum => "quorum",
            QueueKind::Classic => "classic",
        }
    }
}

/// One queue with its dead-letter exchange and queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// Queue name (also the routing key publishers use on the default exchange).
    pub name: String,
    /// Queue type.
    pub kind: QueueKind,
    /// Handler failures a message gets before it is dead-lettered; the consumer counts them
    /// (`ConsumerOptions::max_deliveries`). Quorum: the queue's `x-delivery-limit` is derived
    /// from it with headroom for session churn ([`quorum_delivery_limit`]); classic:
    /// informative here.
    pub max_deliveries: Option<u32>,
    /// `x-message-ttl`: expired messages are dead-lettered too.
    pub message_ttl_ms: Option<u64>,
    /// `x-max-priority` (classic queues only on RabbitMQ 3.x).
    pub max_priority: Option<u8>,
}

impl QueueSpec {
    /// A quorum queue, dead-lettering after 5 deliveries (the design's default).
    pub fn quorum(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: QueueKind::Quorum,
            max_deliveries: Some(5),
            message_ttl_ms: None,
            max_priority: None,
        }
    }

    /// A classic queue (the consumer counts deliveries).
    pub fn classic(name: impl Into<String>) -> Self {
        Self {
            kind: QueueKind::Classic,
            ..Self::quorum(name)
        }
    }

    /// Sets [`QueueSpec::max_deliveries`].
    pub fn with_max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = Some(n);
        self
    }

    /// Sets [`QueueSpec::message_ttl_ms`].
    pub fn with_message_ttl_ms(mut self, ttl: u64) -> Self {
        self.message_ttl_ms = Some(ttl);
        self
    }

    /// Sets [`QueueSpec::max_priority`].
    pub fn with_max_priority(mut self, p: u8) -> Self {
        self.max_priority = Some(p);
        self
    }

    /// The dead-letter exchange: `<q>.dlx`.
    pub fn dlx_name(&self) -> String {
        dlx_name(&self.name)
    }

    /// The dead-letter queue: `<q>.dlq`.
    pub fn dlq_name(&self) -> String {
        format!("{}.dlq", self.name)
    }

    /// Checks what the broker would refuse or silently misread, before any declare.
    pub fn validate(&self) -> Result<(), TopologyError> {
        let invalid = |reason: String| TopologyError::InvalidSpec {
            queue: self.name.clone(),
            reason,
        };
        if self.name.trim().is_empty() {
            return Err(invalid("the name is empty".into()));
        }
        if self.name.len() > MAX_NAME_BYTES - SUFFIX_BYTES {
            return Err(invalid(format!(
                "the name is {} bytes long; at most {} leave room for the `.dlx`/`.dlq` suffix",
                self.name.len(),
                MAX_NAME_BYTES - SUFFIX_BYTES
            )));
        }
        if self.name.starts_with("amq.") {
            return Err(invalid(
                "names starting with `amq.` are reserved by RabbitMQ".into(),
            ));
        }
        if self.max_deliveries == Some(0) {
            return Err(invalid("max_deliveries must be at least 1".into()));
        }
        if let Some(ttl) = self.message_ttl_ms
            && ttl > u64::from(u32::MAX)
        {
            // RabbitMQ caps x-message-ttl at 2^32-1 ms (about 49.7 days).
            return Err(invalid(format!(
                "message_ttl_ms {ttl} exceeds {} ms",
                u32::MAX
            )));
        }
        match self.max_priority {
            Some(0) => return Err(invalid("max_priority must be between 1 and 255".into())),
            Some(_) if self.kind == QueueKind::Quorum => {
                return Err(invalid(
                    "quorum queues do not support x-max-priority on RabbitMQ 3.x; use a classic queue".into(),
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// The main queue's declare arguments (pure):
    /// `x-queue-type`, `x-dead-letter-exchange = <q>.dlx`, and when set `x-message-ttl`,
    /// `x-max-priority`; quorum queues also get `x-delivery-limit` and at-least-once
    /// dead-lettering (`x-dead-letter-strategy`, which requires `x-overflow =
    /// reject-publish`), so a poison message is never dropped on its way to the DLQ.
    pub fn queue_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), text(self.kind.as_str()));
        args.insert("x-dead-letter-exchange".into(), text(&self.dlx_name()));
        if self.kind == QueueKind::Quorum {
            if let Some(n) = self.max_deliveries {
                args.insert(
                    "x-delivery-limit".into(),
                    AMQPValue::LongLongInt(i64::from(quorum_delivery_limit(n))),
                );
            }
            args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
            args.insert("x-overflow".into(), text("reject-publish"));
        }
        if let Some(ttl) = self.message_ttl_ms {
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(ttl.min(u64::from(u32::MAX)) as i64),
            );
        }
        if let Some(p) = self.max_priority {
            args.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(p));
        }
        args
    }

    /// The dead-letter queue's declare arguments (pure): same queue type as the main queue,
    /// nothing else: the DLQ keeps what it gets until someone looks.
    pub fn dlq_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), text(self.kind.as_str()));
        args
    }
}

/// `<queue>.dlx`, where the consumer and the broker dead-letter `queue`'s messages.
pub fn dlx_name(queue: &str) -> String {
    format!("{queue}.dlx")
}

/// Returns of a message a quorum queue tolerates on top of its handler failures: every
/// session end (a lost connection, a restart or rolling update, the broker's consumer timeout)
/// hands the batch in hand back, and RabbitMQ counts each return against `x-delivery-limit`.
/// Handler failures are counted by the consumer itself (`x-swappo-deliveries`), so the broker's
/// limit only has to stop a message that kills the consumer process again and again. 15 more
/// returns bring the default of 5 deliveries to a broker limit of 20 deliveries, RabbitMQ 4's
/// own default for quorum queues; it outlasts a connection flapping every minute through a
/// quarter of an hour with the same batch in hand (the demo drill cuts it 6 times), and a
/// crash-looping message still leaves after 20 restarts.
pub const SESSION_END_HEADROOM: u32 = 15;

/// The quorum queue's `x-delivery-limit` for `max_deliveries` handler failures. RabbitMQ
/// dead-letters a message once it has been *returned* more than `x-delivery-limit` times,
/// i.e. on what would be delivery `limit + 2`; so `n` deliveries need a limit of `n - 1`, and
/// [`SESSION_END_HEADROOM`] more returns are allowed for session churn.
pub fn quorum_delivery_limit(max_deliveries: u32) -> u32 {
    max_deliveries
        .saturating_sub(1)
        .saturating_add(SESSION_END_HEADROOM)
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// Declares `<q>.dlx`, `<q>.dlq` (bound to it) and the queue on `channel`. Idempotent.
///
/// A PRECONDITION_FAILED (the queue exists with other arguments) is
/// [`TopologyError::Conflict`]; the broker closes the channel when that happens, so
/// prefer [`declare_with`], which uses a throwaway channel.
pub async fn declare(channel: &Channel, spec: &QueueSpec) -> Result<(), TopologyError> {
    spec.validate()?;
    let dlx = spec.dlx_name();
    let dlq = spec.dlq_name();
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let durable_queue = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            dlx.as_str().into(),
            ExchangeKind::Fanout,
            durable_exchange,
            FieldTable::default(),
        )
        .await
        .map_err(|e| classify(&dlx, e))?;
    channel
        .queue_declare(dlq.as_str().into(), durable_queue, spec.dlq_arguments())
        .await
        .map_err(|e| classify(&dlq, e))?;
    channel
        .queue_bind(
            dlq.as_str().into(),
            dlx.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| classify(&dlq, e))?;
    channel
        .queue_declare(
            spec.name.as_str().into(),
            durable_queue,
            spec.queue_arguments(),
        )
        .await
        .map_err(|e| classify(&spec.name, e))?;
    Ok(())
}

/// [`declare`] on a channel of its own, opened on `connection` and closed afterwards, so a
/// conflict never breaks a channel the caller uses for something else.
pub async fn declare_with(connection: &Connection, spec: &QueueSpec) -> Result<(), TopologyError> {
    spec.validate()?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|source| TopologyError::Broker {
            queue: spec.name.clone(),
            source,
        })?;
    let result = declare(&channel, spec).await;
    if channel.status().connected() {
        // Best effort: a channel the broker already closed needs no closing.
        let _ = channel.close(200, "declared".into()).await;
    }
    result
}

/// A declare failure as a [`TopologyError`]: PRECONDITION_FAILED is a conflict.
pub(crate) fn classify_error(queue: &str, source: lapin::Error) -> TopologyError {
    classify(queue, source)
}

fn classify(queue: &str, source: lapin::Error) -> TopologyError {
    if let ErrorKind::ProtocolError(e) = source.kind()
        && matches!(
            e.kind(),
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
        )
    {
        return TopologyError::Conflict {
            queue: queue.to_string(),
            detail: e.get_message().to_string(),
        };
    }
    TopologyError::Broker {
        queue: queue.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg<'a>(t: &'a FieldTable, k: &str) -> Option<&'a AMQPValue> {
        t.inner().get(k)
    }

    fn text_arg(t: &FieldTable, k: &str) -> Option<String> {
        match arg(t, k)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            other => panic!("{k} is {other:?}"),
        }
    }

    #[test]
    fn dead_letter_names_derive_from_the_queue() {
        let s = QueueSpec::quorum("notifications_queue");
        assert_eq!(s.dlx_name(), "notifications_queue.dlx");
        assert_eq!(s.dlq_name(), "notifications_queue.dlq");
    }

    #[test]
    fn a_quorum_queue_gets_type_dead_lettering_and_a_delivery_limit() {
        let a = QueueSpec::quorum("q")
            .with_max_deliveries(5)
            .queue_arguments();
        assert_eq!(text_arg(&a, "x-queue-type").as_deref(), Some("quorum"));
        assert_eq!(
            text_arg(&a, "x-dead-letter-exchange").as_deref(),
            Some("q.dlx")
        );
        assert_eq!(
            arg(&a, "x-delivery-limit"),
            Some(&AMQPValue::LongLongInt(4 + i64::from(SESSION_END_HEADROOM)))
        );
        assert_eq!(
            text_arg(&a, "x-dead-letter-strategy").as_deref(),
            Some("at-least-once")
        );
        assert_eq!(
            text_arg(&a, "x-overflow").as_deref(),
            Some("reject-publish")
        );
        assert!(arg(&a, "x-message-ttl").is_none() && arg(&a, "x-max-priority").is_none());
    }

    #[test]
    fn a_classic_queue_has_no_broker_delivery_limit() {
        let a = QueueSpec::classic("q")
            .with_max_deliveries(3)
            .queue_arguments();
        assert_eq!(text_arg(&a, "x-queue-type").as_deref(), Some("classic"));
        assert_eq!(
            text_arg(&a, "x-dead-letter-exchange").as_deref(),
            Some("q.dlx")
        );
        assert!(arg(&a, "x-delivery-limit").is_none());
        assert!(arg(&a, "x-dead-letter-strategy").is_none());
    }

    #[test]
    fn ttl_and_priority_are_passed_when_set() {
        let a = QueueSpec::classic("q")
            .with_message_ttl_ms(60_000)
            .with_max_priority(10)
            .queue_arguments();
        assert_eq!(
            arg(&a, "x-message-ttl"),
            Some(&AMQPValue::LongLongInt(60_000))
        );
        assert_eq!(
            arg(&a, "x-max-priority"),
            Some(&AMQPValue::ShortShortUInt(10))
        );
    }

    #[test]
    fn a_quorum_queue_without_a_limit_has_none() {
        let mut s = QueueSpec::quorum("q");
        s.max_deliveries = None;
        assert!(arg(&s.queue_arguments(), "x-delivery-limit").is_none());
    }

    #[test]
    fn the_dlq_has_the_queue_type_and_no_dead_lettering_of_its_own() {
        let a = QueueSpec::quorum("q").dlq_arguments();
        assert_eq!(text_arg(&a, "x-queue-type").as_deref(), Some("quorum"));
        assert_eq!(a.inner().len(), 1);
    }

    #[test]
    fn max_deliveries_maps_to_one_less_broker_delivery_limit() {
        assert_eq!(quorum_delivery_limit(1), SESSION_END_HEADROOM);
        assert_eq!(quorum_delivery_limit(5), 4 + SESSION_END_HEADROOM);
        assert_eq!(quorum_delivery_limit(u32::MAX), u32::MAX);
    }

    #[test]
    fn specs_the_broker_would_refuse_are_rejected_before_declaring() {
        let cases = [
            (QueueSpec::quorum(""), "empty"),
            (QueueSpec::quorum("x".repeat(252)), "bytes long"),
            (QueueSpec::quorum("amq.mine"), "reserved"),
            (QueueSpec::quorum("q").with_max_deliveries(0), "at least 1"),
            (
                QueueSpec::classic("q").with_message_ttl_ms(1 << 33),
                "exceeds",
            ),
            (
                QueueSpec::classic("q").with_max_priority(0),
                "between 1 and 255",
            ),
            (QueueSpec::quorum("q").with_max_priority(5), "classic queue"),
        ];
        for (spec, needle) in cases {
            let err = spec.validate().expect_err(needle);
            assert!(err.to_string().contains(needle), "{err}");
            assert!(!err.is_retryable());
        }
        assert!(QueueSpec::quorum("x".repeat(251)).validate().is_ok());
        assert!(
            QueueSpec::classic("q")
                .with_max_priority(10)
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn the_conflicting_argument_is_read_from_the_broker_message() {
        let e = TopologyError::Conflict {
            queue: "q".into(),
            detail: "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in vhost 'v': received 'classic' but current is 'quorum'".into(),
        };
        assert_eq!(e.conflicting_argument(), Some("x-queue-type"));
        assert!(!e.is_retryable());
        let other = TopologyError::Conflict {
            queue: "q".into(),
            detail: "something else".into(),
        };
        assert_eq!(other.conflicting_argument(), None);
    }
}
