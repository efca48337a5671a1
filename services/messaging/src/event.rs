//! The notification event contract (DESIGN.md §6): the JSON body both services agree on,
//! with validation that names the field at fault.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

pub mod v0;

/// The only schema version this library reads and writes. A consumer refuses (dead-letters)
/// any other version instead of guessing at its meaning.
pub const SCHEMA_VERSION: u32 = 1;

/// Longest `user_id` / `related_user_id`, in characters: the notifications table stores
/// user ids as `VARCHAR(100)`.
pub const MAX_USER_ID_CHARS: usize = 100;
/// Longest `title`, in characters (`VARCHAR(255)` in the notifications table).
pub const MAX_TITLE_CHARS: usize = 255;
/// Longest `body`, in characters: a notification is a short text, and a 10 000-character
/// cap keeps one message far below the broker's frame and memory limits.
pub const MAX_BODY_CHARS: usize = 10_000;

/// What happened, as the `type` field and the AMQP `type` property spell it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// Someone offered the user a trade.
    TradeOfferReceived,
    /// The user's offer was accepted.
    TradeOfferAccepted,
    /// The user's offer was rejected.
    TradeOfferRejected,
    /// An offer to the user was withdrawn.
    TradeOfferCancelled,
    /// A trade the user took part in completed.
    TradeCompleted,
    /// A chat message arrived.
    NewMessage,
    /// Someone liked one of the user's items.
    ItemLiked,
    /// A message from Swappo itself.
    System,
}

impl EventType {
    /// Every event type, in declaration order.
    pub const ALL: [EventType; 8] = [
        EventType::TradeOfferReceived,
        EventType::TradeOfferAccepted,
        EventType::TradeOfferRejected,
        EventType::TradeOfferCancelled,
        EventType::TradeCompleted,
        EventType::NewMessage,
        EventType::ItemLiked,
        EventType::System,
    ];

    /// The wire name (`trade_offer_accepted`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            EventType::TradeOfferReceived => "trade_offer_received",
            EventType::TradeOfferAccepted => "trade_offer_accepted",
            EventType::TradeOfferRejected => "trade_offer_rejected",
            EventType::TradeOfferCancelled => "trade_offer_cancelled",
            EventType::TradeCompleted => "trade_completed",
            EventType::NewMessage => "new_message",
            EventType::ItemLiked => "item_liked",
            EventType::System => "system",
        }
    }

    /// Parses a wire name; anything else is [`ContractError::UnknownType`].
    pub fn parse(s: &str) -> Result<Self, ContractError> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| ContractError::UnknownType(s.to_string()))
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventType {
    type Err = ContractError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Why a body is not a valid [`NotificationEvent`]. The message is safe to put in a
/// dead-letter header and a log line: it names the field, never echoes a whole body.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ContractError {
    /// Not JSON, or not a JSON object.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// A required field is absent (or `null`).
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A field is present but breaks a rule (wrong JSON type, empty, too long, ...).
    #[error("invalid field `{field}`: {reason}")]
    InvalidField {
        /// The field's JSON name.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `type` is not one of [`EventType::ALL`].
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    /// `schema` is not [`SCHEMA_VERSION`].
    #[error("unsupported schema version {0} (this library reads version {SCHEMA_VERSION})")]
    UnsupportedSchema(u32),
}

impl ContractError {
    /// The JSON field at fault, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ContractError::InvalidJson(_) => None,
            ContractError::MissingField(f) => Some(f),
            ContractError::InvalidField { field, .. } => Some(field),
            ContractError::UnknownType(_) => Some("type"),
            ContractError::UnsupportedSchema(_) => Some("schema"),
        }
    }

    fn invalid(field: &str, reason: impl Into<String>) -> Self {
        ContractError::InvalidField {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

/// One notification for one user (DESIGN.md §6).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct NotificationEvent {
    /// Unique per event; also the AMQP `message_id`. Consumers deduplicate on it.
    pub id: Uuid,
    /// Contract version, always [`SCHEMA_VERSION`] when written by this library.
    pub schema: u32,
    /// When the change happened (not when it was published).
    pub occurred_at: DateTime<Utc>,
    /// The user the notification is for.
    pub user_id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Short headline.
    pub title: String,
    /// Text shown to the user.
    pub body: String,
    /// The other party, when there is one.
    pub related_user_id: Option<String>,
    /// The trade offer concerned, when there is one.
    pub related_offer_id: Option<i64>,
}

impl NotificationEvent {
    /// New event with a fresh v4 id, schema [`SCHEMA_VERSION`], `occurred_at` = now.
    pub fn new(
        user_id: impl Into<String>,
        event_type: EventType,
        title: impl Into<String>,
        body: impl Into<String>,
    ) -> Self {
        Self {
            id: Uuid::new_v4(),
            schema: SCHEMA_VERSION,
            occurred_at: Utc::now(),
            user_id: user_id.into(),
            event_type,
            title: title.into(),
            body: body.into(),
            related_user_id: None,
            related_offer_id: None,
        }
    }

    /// Sets `related_user_id`.
    pub fn with_related_user(mut self, user_id: impl Into<String>) -> Self {
        self.related_user_id = Some(user_id.into());
        self
    }

    /// Sets `related_offer_id`.
    pub fn with_related_offer(mut self, offer_id: i64) -> Self {
        self.related_offer_id = Some(offer_id);
        self
    }

    /// Checks the field rules: schema is [`SCHEMA_VERSION`], the id is not nil, `user_id`,
    /// `title` and `body` are non-blank and within [`MAX_USER_ID_CHARS`],
    /// [`MAX_TITLE_CHARS`], [`MAX_BODY_CHARS`]; `related_user_id`, when set, is non-blank
    /// and within [`MAX_USER_ID_CHARS`]; `related_offer_id`, when set, is positive.
    pub fn validate(&self) -> Result<(), ContractError> {
        if self.schema != SCHEMA_VERSION {
            return Err(ContractError::UnsupportedSchema(self.schema));
        }
        if self.id.is_nil() {
            return Err(ContractError::invalid("id", "must not be the nil UUID"));
        }
        check_text("user_id", &self.user_id, MAX_USER_ID_CHARS)?;
        check_text("title", &self.title, MAX_TITLE_CHARS)?;
        check_text("body", &self.body, MAX_BODY_CHARS)?;
        if let Some(related) = &self.related_user_id {
            check_text("related_user_id", related, MAX_USER_ID_CHARS)?;
        }
        if let Some(offer) = self.related_offer_id
            && offer <= 0
        {
            return Err(ContractError::invalid(
                "related_offer_id",
                format!("must be positive, got {offer}"),
            ));
        }
        Ok(())
    }

    /// Parses a JSON body and validates it. Bad JSON, a missing or mistyped field, an
    /// unknown `type` or schema each give a [`ContractError`] naming the field. Fields this
    /// version does not know are ignored (a newer producer may add optional ones).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ContractError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| ContractError::InvalidJson(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(ContractError::InvalidJson(format!(
                "expected a JSON object, got {}",
                json_kind(&value)
            )));
        };
        // Schema first: a different version may legitimately have different fields.
        let schema: u32 = required(&map, "schema")?;
        if schema != SCHEMA_VERSION {
            return Err(ContractError::UnsupportedSchema(schema));
        }
        let type_name: String = required(&map, "type")?;
        let event = NotificationEvent {
            id: required(&map, "id")?,
            schema,
            occurred_at: required(&map, "occurred_at")?,
            user_id: required(&map, "user_id")?,
            event_type: EventType::parse(&type_name)?,
            title: required(&map, "title")?,
            body: required(&map, "body")?,
            related_user_id: optional(&map, "related_user_id")?,
            related_offer_id: optional(&map, "related_offer_id")?,
        };
        event.validate()?;
        Ok(event)
    }

    /// The JSON body, as published.
    pub fn to_json(&self) -> Vec<u8> {
        // Sized once for a typical event (~280 bytes of JSON plus the text fields): growing
        // from serde_json's default 128 bytes reallocated and copied twice per event, a
        // measurable part of the publisher's CPU (bench/results/publisher.md).
        let text = self.title.len() + self.body.len() + self.user_id.len();
        let mut out = Vec::with_capacity(256 + text + text / 8);
        serde_json::to_writer(&mut out, self).expect("a NotificationEvent always serializes");
        out
    }
}

fn check_text(field: &str, value: &str, max_chars: usize) -> Result<(), ContractError> {
    if value.trim().is_empty() {
        return Err(ContractError::invalid(field, "must not be empty"));
    }
    if let Some(at) = value.chars().position(|c| c == '\0') {
        // PostgreSQL text cannot hold U+0000: refused here with the reason, rather than by
        // the database after the event was accepted.
        return Err(ContractError::invalid(
            field,
            format!(
                "contains a NUL character (U+0000) at character {at}, which storage cannot hold"
            ),
        ));
    }
    let chars = value.chars().count();
    if chars > max_chars {
        return Err(ContractError::invalid(
            field,
            format!("is {chars} characters long, the limit is {max_chars}"),
        ));
    }
    Ok(())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn required<T: serde::de::DeserializeOwned>(
    map: &Map<String, Value>,
    field: &'static str,
) -> Result<T, ContractError> {
    optional(map, field)?.ok_or(ContractError::MissingField(field))
}

fn optional<T: serde::de::DeserializeOwned>(
    map: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<T>, ContractError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| ContractError::invalid(field, format!("{e} (got {})", json_kind(v)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> Value {
        json!({
            "id": "7d8f3c2a-1b4e-4f6a-9c0d-2e5b8a7f1c3d", "schema": 1,
            "occurred_at": "2026-11-27T06:00:00Z", "user_id": "user456",
            "type": "trade_offer_accepted", "title": "Trade Offer Accepted!",
            "body": "Your trade offer has been accepted.",
            "related_user_id": "user123", "related_offer_id": 42
        })
    }

    fn with(field: &str, value: Value) -> Vec<u8> {
        let mut v = valid();
        v[field] = value;
        serde_json::to_vec(&v).unwrap()
    }

    fn without(field: &str) -> Vec<u8> {
        let mut v = valid();
        v.as_object_mut().unwrap().remove(field);
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn the_design_example_parses_into_every_field() {
        let e = NotificationEvent::from_json(&serde_json::to_vec(&valid()).unwrap()).unwrap();
        assert_eq!(e.user_id, "user456");
        assert_eq!(e.event_type, EventType::TradeOfferAccepted);
        assert_eq!(e.related_user_id.as_deref(), Some("user123"));
        assert_eq!(e.related_offer_id, Some(42));
        assert_eq!(e.occurred_at.to_rfc3339(), "2026-11-27T06:00:00+00:00");
    }

    #[test]
    fn an_event_survives_a_json_round_trip() {
        let e = NotificationEvent::new("u1", EventType::NewMessage, "Hi", "You have mail")
            .with_related_user("u2")
            .with_related_offer(7);
        assert_eq!(NotificationEvent::from_json(&e.to_json()).unwrap(), e);
    }

    #[test]
    fn the_wire_json_uses_the_contract_names() {
        let e = NotificationEvent::new("u1", EventType::ItemLiked, "t", "b");
        let v: Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["type"], "item_liked");
        assert_eq!(v["schema"], 1);
        assert_eq!(v["related_user_id"], Value::Null);
        assert!(v.get("event_type").is_none());
    }

    #[test]
    fn every_event_type_parses_from_its_wire_name_and_serde_agrees() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Ok(t));
            assert_eq!(serde_json::to_value(t).unwrap(), json!(t.as_str()));
        }
    }

    #[test]
    fn optional_fields_may_be_absent_or_null() {
        let mut v = valid();
        v["related_user_id"] = Value::Null;
        v.as_object_mut().unwrap().remove("related_offer_id");
        let e = NotificationEvent::from_json(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!((e.related_user_id, e.related_offer_id), (None, None));
    }

    #[test]
    fn unknown_extra_fields_are_ignored() {
        assert!(NotificationEvent::from_json(&with("priority", json!("high"))).is_ok());
    }

    #[test]
    fn each_bad_input_is_refused_with_an_error_naming_the_field() {
        let long = |n: usize| json!("x".repeat(n));
        let cases: Vec<(&str, Vec<u8>, Option<&str>, &str)> = vec![
            ("not json", b"{not json".to_vec(), None, "invalid JSON"),
            ("array", b"[1,2]".to_vec(), None, "expected a JSON object"),
            ("empty body", b"".to_vec(), None, "invalid JSON"),
            ("no id", without("id"), Some("id"), "missing field `id`"),
            ("no user", without("user_id"), Some("user_id"), "missing"),
            (
                "null title",
                with("title", Value::Null),
                Some("title"),
                "missing",
            ),
            ("no body", without("body"), Some("body"), "missing"),
            ("no type", without("type"), Some("type"), "missing"),
            ("no schema", without("schema"), Some("schema"), "missing"),
            (
                "no time",
                without("occurred_at"),
                Some("occurred_at"),
                "missing",
            ),
            (
                "bad id",
                with("id", json!("nope")),
                Some("id"),
                "invalid field `id`",
            ),
            ("nil id", with("id", json!(Uuid::nil())), Some("id"), "nil"),
            (
                "bad time",
                with("occurred_at", json!("yesterday")),
                Some("occurred_at"),
                "invalid",
            ),
            (
                "numeric user",
                with("user_id", json!(456)),
                Some("user_id"),
                "a number",
            ),
            (
                "blank user",
                with("user_id", json!("  ")),
                Some("user_id"),
                "empty",
            ),
            (
                "long user",
                with("user_id", long(101)),
                Some("user_id"),
                "limit is 100",
            ),
            (
                "empty title",
                with("title", json!("")),
                Some("title"),
                "empty",
            ),
            (
                "long title",
                with("title", long(256)),
                Some("title"),
                "limit is 255",
            ),
            (
                "long body",
                with("body", long(10_001)),
                Some("body"),
                "limit is 10000",
            ),
            (
                "unknown type",
                with("type", json!("trade_exploded")),
                Some("type"),
                "unknown event type `trade_exploded`",
            ),
            (
                "type case",
                with("type", json!("TRADE_COMPLETED")),
                Some("type"),
                "unknown event type",
            ),
            (
                "numeric type",
                with("type", json!(3)),
                Some("type"),
                "invalid field `type`",
            ),
            (
                "schema 2",
                with("schema", json!(2)),
                Some("schema"),
                "unsupported schema version 2",
            ),
            (
                "negative schema",
                with("schema", json!(-1)),
                Some("schema"),
                "invalid field `schema`",
            ),
            (
                "blank related user",
                with("related_user_id", json!("")),
                Some("related_user_id"),
                "empty",
            ),
            (
                "zero offer",
                with("related_offer_id", json!(0)),
                Some("related_offer_id"),
                "positive",
            ),
            (
                "text offer",
                with("related_offer_id", json!("42")),
                Some("related_offer_id"),
                "a string",
            ),
        ];
        for (name, body, field, needle) in cases {
            let err = NotificationEvent::from_json(&body).expect_err(name);
            assert_eq!(err.field(), field, "{name}: {err}");
            assert!(
                err.to_string().contains(needle),
                "{name}: `{err}` lacks `{needle}`"
            );
        }
    }

    #[test]
    fn a_nul_character_in_any_text_field_is_refused_with_the_reason() {
        for field in ["user_id", "title", "body", "related_user_id"] {
            let err =
                NotificationEvent::from_json(&with(field, json!("ab\u{0}c"))).expect_err(field);
            assert_eq!(err.field(), Some(field), "{err}");
            assert!(
                err.to_string()
                    .contains("NUL character (U+0000) at character 2"),
                "{err}"
            );
        }
        let mut e = NotificationEvent::new("u", EventType::System, "t", "b");
        e.body.push('\0');
        assert_eq!(e.validate().unwrap_err().field(), Some("body"));
    }

    #[test]
    fn limits_are_inclusive_and_count_characters_not_bytes() {
        assert!(NotificationEvent::from_json(&with("user_id", json!("é".repeat(100)))).is_ok());
        assert!(NotificationEvent::from_json(&with("title", json!("x".repeat(255)))).is_ok());
        assert!(NotificationEvent::from_json(&with("body", json!("x".repeat(10_000)))).is_ok());
    }

    #[test]
    fn validate_refuses_what_from_json_refuses() {
        let mut e = NotificationEvent::new("u", EventType::System, "t", "b");
        assert_eq!(e.validate(), Ok(()));
        e.title.clear();
        assert_eq!(e.validate().unwrap_err().field(), Some("title"));
        let mut e = NotificationEvent::new("u", EventType::System, "t", "b");
        e.schema = 9;
        assert_eq!(e.validate(), Err(ContractError::UnsupportedSchema(9)));
    }
}
