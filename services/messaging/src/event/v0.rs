//! Version 0 of the contract: the body the original Python matchmaking published
//! (`Swapppo/Swappo-Matchmaking`, `rabbitmq_publisher.py`), so a team can run the original
//! publisher against this library's consumer while it migrates one service at a time.
//!
//! A v0 message is `json.dumps({"user_id", "related_offer_id", "related_user_id", "type",
//! "title", "body"})`, published persistent with `content_type: application/json` to the
//! default exchange, with no `message_id` or `timestamp`. The body has no `id`, `schema` or
//! `occurred_at`; that absence is what marks it as v0 (a body with any of the three but no
//! `schema` is a broken current event, not a v0 one, and is refused as before).
//!
//! A v0 event gets:
//! - an id derived from what identifies the notification (UUID v5 of its type, related offer
//!   and recipient, plus the remaining fields when there is no offer), so a redelivered or
//!   republished message is the same event and is stored once;
//! - `occurred_at` from the AMQP `timestamp` property when the publisher set one, else the
//!   time it is read.
use super::{ContractError, EventType, NotificationEvent, SCHEMA_VERSION};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Namespace of the v5 ids of v0 events (a fixed random UUID: changing it would give every
/// v0 event a new id, and redeliveries across the change would be stored twice).
pub const NAMESPACE: Uuid = Uuid::from_u128(0x5b0a_77e2_3c41_4d8e_9f6a_0d2c_71b4_e915);

/// Fields whose presence makes a body a current (versioned) event rather than a v0 one.
const VERSIONED_FIELDS: [&str; 3] = ["schema", "id", "occurred_at"];

/// Whether `map` is a v0 body: none of `schema`, `id`, `occurred_at`.
pub fn is_v0(map: &Map<String, Value>) -> bool {
    VERSIONED_FIELDS.iter().all(|f| !map.contains_key(*f))
}

/// The id of the v0 notification of `event_type` for `user_id` about `related_offer_id`.
/// An offer's status change happens once, so type + offer + recipient names one
/// notification. Without an offer (a chat message, a like), the sender, title and body are
/// part of the name too, and `occurred_at` when the publisher stamped the message.
pub fn derive_id(
    event_type: EventType,
    user_id: &str,
    related_offer_id: Option<i64>,
    rest: Option<(&str, &str, &str, Option<i64>)>,
) -> Uuid {
    // `\u{1f}` (unit separator) cannot be confused with text inside the fields.
    let mut name = format!("v0\u{1f}{}\u{1f}{user_id}", event_type.as_str());
    match related_offer_id {
        Some(offer) => name.push_str(&format!("\u{1f}offer={offer}")),
        None => {
            if let Some((related_user, title, body, stamped)) = rest {
                name.push_str(&format!("\u{1f}{related_user}\u{1f}{title}\u{1f}{body}"));
                if let Some(ts) = stamped {
                    name.push_str(&format!("\u{1f}at={ts}"));
                }
            }
        }
    }
    Uuid::new_v5(&NAMESPACE, name.as_bytes())
}

/// Reads a v0 body (already parsed into `map`, which [`is_v0`] accepted) as an event of the
/// current schema. `timestamp` is the AMQP `timestamp` property (seconds since the epoch);
/// `now` is used when there is none.
pub fn from_v0(
    map: &Map<String, Value>,
    timestamp: Option<u64>,
    now: DateTime<Utc>,
) -> Result<NotificationEvent, ContractError> {
    let type_name: String = super::required(map, "type")?;
    let event_type = EventType::parse(&type_name)?;
    let user_id: String = super::required(map, "user_id")?;
    let title: String = super::required(map, "title")?;
    let body: String = super::required(map, "body")?;
    let related_user_id: Option<String> = super::optional(map, "related_user_id")?;
    let related_offer_id: Option<i64> = super::optional(map, "related_offer_id")?;
    let stamped = timestamp.and_then(|s| i64::try_from(s).ok());
    let occurred_at = stamped
        .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0))
        .unwrap_or(now);
    let id = derive_id(
        event_type,
        &user_id,
        related_offer_id,
        Some((
            related_user_id.as_deref().unwrap_or(""),
            &title,
            &body,
            stamped,
        )),
    );
    let event = NotificationEvent {
        id,
        schema: SCHEMA_VERSION,
        occurred_at,
        user_id,
        event_type,
        title,
        body,
        related_user_id,
        related_offer_id,
    };
    event.validate()?;
    Ok(event)
}

/// Parses a message body of either version: the current one (see
/// [`NotificationEvent::from_json`]) or v0. `timestamp` is the AMQP `timestamp` property.
pub fn parse_any(bytes: &[u8], timestamp: Option<u64>) -> Result<NotificationEvent, ContractError> {
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(bytes)
        && is_v0(&map)
    {
        return from_v0(&map, timestamp, Utc::now());
    }
    NotificationEvent::from_json(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The body `rabbitmq_publisher.py` sends for an accepted offer (`json.dumps` of the
    /// dict built in the original `send_trade_notification`, in its key order).
    fn accepted() -> Vec<u8> {
        br#"{"user_id": "user123", "related_offer_id": 42, "related_user_id": "user456", "type": "trade_offer_accepted", "title": "Trade Offer Accepted! \ud83c\udf89", "body": "Great news! Your trade offer has been accepted."}"#.to_vec()
    }

    fn map(bytes: &[u8]) -> Map<String, Value> {
        match serde_json::from_slice(bytes).unwrap() {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn an_original_publisher_body_is_read_as_an_event_with_its_fields() {
        let e = parse_any(&accepted(), None).unwrap();
        assert_eq!(e.user_id, "user123");
        assert_eq!(e.event_type, EventType::TradeOfferAccepted);
        assert_eq!(e.title, "Trade Offer Accepted! 🎉");
        assert_eq!(e.related_user_id.as_deref(), Some("user456"));
        assert_eq!(e.related_offer_id, Some(42));
        assert_eq!(e.schema, SCHEMA_VERSION);
    }

    #[test]
    fn the_same_notification_always_gets_the_same_id_and_another_one_another() {
        let a = parse_any(&accepted(), None).unwrap();
        let b = parse_any(&accepted(), Some(1_700_000_000)).unwrap();
        assert_eq!(a.id, b.id, "redelivered or republished: one id");
        assert_eq!(a.id.get_version_num(), 5);
        let mut other = map(&accepted());
        other.insert("related_offer_id".into(), json!(43));
        let c = from_v0(&other, None, Utc::now()).unwrap();
        assert_ne!(a.id, c.id);
        let mut rejected = map(&accepted());
        rejected.insert("type".into(), json!("trade_offer_rejected"));
        assert_ne!(a.id, from_v0(&rejected, None, Utc::now()).unwrap().id);
    }

    #[test]
    fn without_an_offer_the_content_and_stamp_tell_notifications_apart() {
        let msg = |body: &str| {
            map(
                json!({"user_id": "u1", "type": "new_message", "title": "New Message",
                       "body": body, "related_user_id": "u2"})
                .to_string()
                .as_bytes(),
            )
        };
        let now = Utc::now();
        let a = from_v0(&msg("hi"), None, now).unwrap();
        assert_eq!(a.id, from_v0(&msg("hi"), None, now).unwrap().id);
        assert_ne!(a.id, from_v0(&msg("hello"), None, now).unwrap().id);
        assert_ne!(
            a.id,
            from_v0(&msg("hi"), Some(1_700_000_000), now).unwrap().id
        );
    }

    #[test]
    fn occurred_at_is_the_amqp_timestamp_when_there_is_one() {
        let now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let stamped = from_v0(&map(&accepted()), Some(1_700_000_000), now).unwrap();
        assert_eq!(stamped.occurred_at.timestamp(), 1_700_000_000);
        let unstamped = from_v0(&map(&accepted()), None, now).unwrap();
        assert_eq!(unstamped.occurred_at, now);
    }

    #[test]
    fn a_body_with_an_id_or_time_but_no_schema_is_a_broken_current_event_not_v0() {
        for field in VERSIONED_FIELDS {
            let mut m = map(&accepted());
            m.insert(field.into(), json!("x"));
            assert!(!is_v0(&m), "{field}");
        }
        let mut m = map(&accepted());
        m.insert("id".into(), json!("7d8f3c2a-1b4e-4f6a-9c0d-2e5b8a7f1c3d"));
        let err = parse_any(Value::Object(m).to_string().as_bytes(), None).unwrap_err();
        assert_eq!(err, ContractError::MissingField("schema"));
    }

    #[test]
    fn a_v0_body_that_breaks_the_field_rules_is_refused_naming_the_field() {
        let mut m = map(&accepted());
        m.remove("title");
        assert_eq!(
            from_v0(&m, None, Utc::now()).unwrap_err(),
            ContractError::MissingField("title")
        );
        let mut m = map(&accepted());
        m.insert("type".into(), json!("new_trade_offer"));
        assert!(matches!(
            from_v0(&m, None, Utc::now()).unwrap_err(),
            ContractError::UnknownType(_)
        ));
    }
}
