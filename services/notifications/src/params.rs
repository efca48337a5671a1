//! Pure parsing of request input into checked values; each failure names its field.
//!
//! Path segments and query parameters arrive as strings and are parsed here rather than by
//! axum's typed extractors, so that a bad value answers with our JSON error naming the
//! parameter instead of a plain-text extractor message.
use crate::error::{ApiError, Result};
use crate::storage::{ListQuery, NewNotification};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use swappo_messaging::{EventType, NotificationEvent, SCHEMA_VERSION};
use uuid::Uuid;

/// Longest user id, in characters: the column is `VARCHAR(100)`, as in the event contract.
pub const MAX_USER_ID_CHARS: usize = 100;
/// Page size when `limit` is not given.
pub const DEFAULT_LIMIT: i64 = 50;
/// Largest page: keeps one response small and its query cheap.
pub const MAX_LIMIT: i64 = 100;
/// Most ids one mark-read request may carry: one statement with an array bind, and a
/// bound on how long the rows stay locked.
pub const MAX_MARK_READ_IDS: usize = 1000;

/// Query parameters of the list route, as sent.
#[derive(Debug, Default, Deserialize)]
pub struct RawListQuery {
    /// `true`/`false` (also `1`/`0`).
    pub unread_only: Option<String>,
    /// 1..=100.
    pub limit: Option<String>,
    /// >= 0.
    pub offset: Option<String>,
    /// An event type's wire name.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Keyset cursor of the previous page's last row (see [`crate::keyset`]).
    pub cursor: Option<String>,
}

/// The `user_id` query parameter of the routes that act on one notification.
#[derive(Debug, Default, Deserialize)]
pub struct RawUserQuery {
    /// Whose notification it must be.
    pub user_id: Option<String>,
}

/// Body of `PATCH /api/v2/notifications/mark-read`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkReadBody {
    /// Row ids of the user's notifications.
    pub notification_ids: Vec<i64>,
}

/// Body of `POST /api/v2/notifications`: an event without `schema`, with optional id
/// (for idempotent retries) and time, plus `related_item_id`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// Event id; a fresh one when absent. Creating the same id twice is a conflict.
    pub id: Option<Uuid>,
    /// The user the notification is for.
    pub user_id: String,
    /// An event type's wire name.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Short headline.
    pub title: String,
    /// Text shown to the user.
    pub body: String,
    /// The other party.
    pub related_user_id: Option<String>,
    /// The trade offer concerned.
    pub related_offer_id: Option<i64>,
    /// The item concerned.
    pub related_item_id: Option<i64>,
    /// When it happened; now when absent.
    pub occurred_at: Option<DateTime<Utc>>,
}

/// A user id from a path segment or query parameter: non-blank, at most 100 characters.
pub fn user_id(field: &str, raw: Option<&str>) -> Result<String> {
    let raw = raw.ok_or_else(|| ApiError::invalid(field, "is required"))?;
    if raw.trim().is_empty() {
        return Err(ApiError::invalid(field, "must not be empty"));
    }
    let chars = raw.chars().count();
    if chars > MAX_USER_ID_CHARS {
        return Err(ApiError::invalid(
            field,
            format!("must be at most {MAX_USER_ID_CHARS} characters, got {chars}"),
        ));
    }
    Ok(raw.to_string())
}

/// A notification row id: a positive integer.
pub fn notification_id(raw: &str) -> Result<i64> {
    match raw.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(ApiError::invalid(
            "id",
            format!("must be a positive integer, got `{}`", clip(raw)),
        )),
    }
}

/// The list route's parameters, with defaults and ranges applied.
pub fn list_query(raw: &RawListQuery) -> Result<ListQuery> {
    let unread_only = match raw.unread_only.as_deref() {
        None => false,
        Some("true" | "1") => true,
        Some("false" | "0") => false,
        Some(other) => {
            return Err(ApiError::invalid(
                "unread_only",
                format!("must be true or false, got `{}`", clip(other)),
            ));
        }
    };
    let limit = match raw.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid(
                    "limit",
                    format!(
                        "must be an integer from 1 to {MAX_LIMIT}, got `{}`",
                        clip(s)
                    ),
                ));
            }
        },
    };
    let offset = match raw.offset.as_deref() {
        None => 0,
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n >= 0 => n,
            _ => {
                return Err(ApiError::invalid(
                    "offset",
                    format!("must be a non-negative integer, got `{}`", clip(s)),
                ));
            }
        },
    };
    let event_type = raw.event_type.as_deref().map(event_type).transpose()?;
    Ok(ListQuery {
        unread_only,
        event_type,
        limit,
        offset,
    })
}

/// An event type's wire name.
pub fn event_type(raw: &str) -> Result<EventType> {
    EventType::parse(raw).map_err(|_| {
        let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        ApiError::invalid(
            "type",
            format!(
                "unknown type `{}`; known types: {}",
                clip(raw),
                known.join(", ")
            ),
        )
    })
}

/// The ids of a mark-read body: 1 to 1000 positive ids, duplicates removed.
pub fn mark_read_ids(body: &MarkReadBody) -> Result<Vec<i64>> {
    let field = "notification_ids";
    if body.notification_ids.is_empty() {
        return Err(ApiError::invalid(field, "must list at least one id"));
    }
    if body.notification_ids.len() > MAX_MARK_READ_IDS {
        return Err(ApiError::invalid(
            field,
            format!(
                "must list at most {MAX_MARK_READ_IDS} ids, got {}",
                body.notification_ids.len()
            ),
        ));
    }
    if let Some(bad) = body.notification_ids.iter().find(|id| **id <= 0) {
        return Err(ApiError::invalid(
            field,
            format!("ids must be positive, got {bad}"),
        ));
    }
    let mut ids = body.notification_ids.clone();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// A create body checked by the event contract's own rules.
pub fn new_notification(body: CreateBody) -> Result<NewNotification> {
    let event_type = event_type(&body.event_type)?;
    let event = NotificationEvent {
        id: body.id.unwrap_or_else(Uuid::new_v4),
        schema: SCHEMA_VERSION,
        occurred_at: body.occurred_at.unwrap_or_else(Utc::now),
        user_id: body.user_id,
        event_type,
        title: body.title,
        body: body.body,
        related_user_id: body.related_user_id,
        related_offer_id: body.related_offer_id,
    };
    event.validate().map_err(|e| {
        let field = e.field().unwrap_or("body").to_string();
        ApiError::invalid(field, e.to_string())
    })?;
    if let Some(item) = body.related_item_id
        && item <= 0
    {
        return Err(ApiError::invalid(
            "related_item_id",
            format!("must be positive, got {item}"),
        ));
    }
    Ok(NewNotification {
        event,
        related_item_id: body.related_item_id,
    })
}

/// Echoes at most 40 characters of client input in an error message.
fn clip(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(MAX).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: ApiError) -> String {
        match e {
            ApiError::InvalidField { field, .. } => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    fn raw(limit: Option<&str>, offset: Option<&str>) -> RawListQuery {
        RawListQuery {
            limit: limit.map(str::to_string),
            offset: offset.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn a_list_without_parameters_gets_the_first_fifty_of_all() {
        let q = list_query(&RawListQuery::default()).unwrap();
        assert_eq!(
            q,
            ListQuery {
                unread_only: false,
                event_type: None,
                limit: 50,
                offset: 0
            }
        );
    }

    #[test]
    fn limit_must_be_from_1_to_100() {
        for bad in ["0", "101", "-1", "ten", "1.5", ""] {
            assert_eq!(
                field_of(list_query(&raw(Some(bad), None)).unwrap_err()),
                "limit",
                "{bad}"
            );
        }
        assert_eq!(list_query(&raw(Some("1"), None)).unwrap().limit, 1);
        assert_eq!(list_query(&raw(Some("100"), None)).unwrap().limit, 100);
    }

    #[test]
    fn offset_must_be_a_non_negative_integer() {
        assert_eq!(
            field_of(list_query(&raw(None, Some("-5"))).unwrap_err()),
            "offset"
        );
        assert_eq!(
            field_of(list_query(&raw(None, Some("x"))).unwrap_err()),
            "offset"
        );
        assert_eq!(list_query(&raw(None, Some("0"))).unwrap().offset, 0);
    }

    #[test]
    fn unread_only_accepts_booleans_only() {
        let q = |v: &str| RawListQuery {
            unread_only: Some(v.into()),
            ..Default::default()
        };
        assert!(list_query(&q("true")).unwrap().unread_only);
        assert!(!list_query(&q("0")).unwrap().unread_only);
        assert_eq!(
            field_of(list_query(&q("yes please")).unwrap_err()),
            "unread_only"
        );
    }

    #[test]
    fn an_unknown_type_is_refused_and_the_known_ones_are_listed() {
        let e = event_type("trade_offer_exploded").unwrap_err();
        assert!(e.to_string().contains("trade_offer_accepted"), "{e}");
        assert_eq!(field_of(e), "type");
        assert_eq!(event_type("item_liked").unwrap(), EventType::ItemLiked);
    }

    #[test]
    fn notification_ids_are_positive_integers() {
        assert_eq!(notification_id("42").unwrap(), 42);
        for bad in ["0", "-3", "abc", "4.2", "99999999999999999999", ""] {
            assert_eq!(field_of(notification_id(bad).unwrap_err()), "id", "{bad}");
        }
    }

    #[test]
    fn user_ids_are_non_blank_and_at_most_100_characters() {
        assert_eq!(user_id("user_id", Some("user456")).unwrap(), "user456");
        assert_eq!(field_of(user_id("user_id", None).unwrap_err()), "user_id");
        assert_eq!(
            field_of(user_id("user_id", Some("  ")).unwrap_err()),
            "user_id"
        );
        assert!(user_id("user_id", Some(&"u".repeat(100))).is_ok());
        assert_eq!(
            field_of(user_id("user_id", Some(&"u".repeat(101))).unwrap_err()),
            "user_id"
        );
    }

    #[test]
    fn mark_read_needs_one_to_a_thousand_positive_ids() {
        let body = |ids: Vec<i64>| MarkReadBody {
            notification_ids: ids,
        };
        assert_eq!(mark_read_ids(&body(vec![3, 1, 3])).unwrap(), vec![1, 3]);
        assert_eq!(
            field_of(mark_read_ids(&body(vec![])).unwrap_err()),
            "notification_ids"
        );
        assert_eq!(
            field_of(mark_read_ids(&body(vec![1, 0])).unwrap_err()),
            "notification_ids"
        );
        assert_eq!(
            field_of(mark_read_ids(&body(vec![1; 1001])).unwrap_err()),
            "notification_ids"
        );
    }

    fn create(title: &str, event_type: &str) -> CreateBody {
        CreateBody {
            id: None,
            user_id: "user456".into(),
            event_type: event_type.into(),
            title: title.into(),
            body: "Your trade offer has been accepted.".into(),
            related_user_id: None,
            related_offer_id: Some(42),
            related_item_id: Some(7),
            occurred_at: None,
        }
    }

    #[test]
    fn a_created_notification_follows_the_event_contract() {
        let new = new_notification(create("Accepted!", "trade_offer_accepted")).unwrap();
        assert_eq!(new.event.event_type, EventType::TradeOfferAccepted);
        assert_eq!(new.related_item_id, Some(7));
        assert_eq!(
            field_of(new_notification(create(" ", "system")).unwrap_err()),
            "title"
        );
        assert_eq!(
            field_of(new_notification(create("t", "nope")).unwrap_err()),
            "type"
        );
        let mut long = create("t", "system");
        long.user_id = "u".repeat(101);
        assert_eq!(field_of(new_notification(long).unwrap_err()), "user_id");
        let mut bad_item = create("t", "system");
        bad_item.related_item_id = Some(0);
        assert_eq!(
            field_of(new_notification(bad_item).unwrap_err()),
            "related_item_id"
        );
    }

    #[test]
    fn long_input_is_clipped_in_error_messages() {
        let e = notification_id(&"9".repeat(500)).unwrap_err().to_string();
        assert!(e.len() < 120, "{e}");
    }
}
