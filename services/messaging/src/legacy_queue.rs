//! The queue as the original Python services declare it, so they keep starting while a team
//! migrates one service at a time.
//!
//! The original publisher and consumer both call `queue_declare(queue, durable=True)`: a
//! classic queue with no arguments. RabbitMQ refuses a redeclaration whose arguments differ
//! (406 PRECONDITION_FAILED), so a queue declared the usual way ([`crate::declare`]:
//! `x-queue-type`, `x-dead-letter-exchange`, ...) stops the originals from starting.
//! [`declare_legacy`] declares the queue exactly as they do, and beside it the dead-letter
//! exchange `<q>.dlx` and queue `<q>.dlq` (separate objects, which the originals never
//! declare, so they do not conflict).
//!
//! What a legacy queue costs: it is classic (not replicated) and the broker itself
//! dead-letters nothing (no `x-dead-letter-exchange`, no `x-delivery-limit`, no TTL). Our
//! consumer still dead-letters contract violations and messages that failed
//! `max_deliveries` times by publishing them to `<q>.dlx` itself (consume it as
//! [`crate::QueueKind::Classic`]); what an original consumer rejects or what expires is not
//! dead-lettered.
use crate::topology::{QueueSpec, TopologyError, dlx_name};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ExchangeKind};

/// The legacy queue's declare arguments: none (pure).
pub fn legacy_queue_arguments() -> FieldTable {
    FieldTable::default()
}

/// Declares `name` as the original services do (durable, classic, no arguments) with a
/// classic `<name>.dlx`/`<name>.dlq` beside it, on a channel of its own. Idempotent; a queue
/// that already exists with arguments is [`TopologyError::Conflict`].
pub async fn declare_legacy(connection: &Connection, name: &str) -> Result<(), TopologyError> {
    let broker = |source| TopologyError::Broker {
        queue: name.to_string(),
        source,
    };
    let channel = connection.create_channel().await.map_err(broker)?;
    let result = declare_on(&channel, name).await;
    if channel.status().connected() {
        let _ = channel.close(200, "declared".into()).await;
    }
    result
}

async fn declare_on(channel: &lapin::Channel, name: &str) -> Result<(), TopologyError> {
    let spec = QueueSpec::classic(name);
    let (dlx, dlq) = (dlx_name(name), spec.dlq_name());
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let err = |queue: &str| {
        let queue = queue.to_string();
        move |source: lapin::Error| crate::topology::classify_error(&queue, source)
    };
    // The queue first: a conflict there is the one that matters, and is named as such.
    channel
        .queue_declare(name.into(), durable, legacy_queue_arguments())
        .await
        .map_err(err(name))?;
    channel
        .exchange_declare(
            dlx.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(err(&dlx))?;
    channel
        .queue_declare(dlq.as_str().into(), durable, spec.dlq_arguments())
        .await
        .map_err(err(&dlq))?;
    channel
        .queue_bind(
            dlq.as_str().into(),
            dlx.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(err(&dlq))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_legacy_queue_has_no_arguments_at_all() {
        assert!(legacy_queue_arguments().inner().is_empty());
    }
}
