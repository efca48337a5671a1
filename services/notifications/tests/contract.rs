//! The original API's contract (issue 16): each call the Swappo front end makes
//! (`Swapppo/Swappo-FE` `services/notification.service.ts`) and the chat service's
//! `POST /api/v1/notifications`, sent as they send it, with the answer checked against the
//! front end's own TypeScript types (`types/notification.types.ts`, transcribed below as
//! field names and JSON types). Plus the original's error shapes, CORS preflights as a
//! browser sends them, and keyset paging next to the original offsets.
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use swappo_messaging::{EventType, NotificationEvent};
use swappo_notifications::http::{AppState, Readiness, cors, router, router_with_cors};
use swappo_notifications::metrics::Metrics;
use swappo_notifications::storage::Storage;
use swappo_testkit::TestDb;
use tower::ServiceExt;

/// A JSON type as TypeScript names it in the front end's interfaces.
#[derive(Clone, Copy, Debug)]
enum Ts {
    Number,
    String,
    Boolean,
    NumberArray,
    /// An ISO date string (the front end does `new Date(...)` on it).
    Date,
    /// A TypeScript string enum: one of these values.
    Enum(&'static [&'static str]),
}

/// `field?: T` is optional: absent or null (pydantic sent null) is fine.
type Interface = &'static [(&'static str, Ts, bool)];

/// `enum NotificationType`.
const NOTIFICATION_TYPES: &[&str] = &[
    "trade_offer_received",
    "trade_offer_accepted",
    "trade_offer_rejected",
    "trade_offer_cancelled",
    "trade_completed",
    "new_message",
    "item_liked",
    "system",
];

/// `interface NotificationResponse`.
const NOTIFICATION_RESPONSE: Interface = &[
    ("id", Ts::Number, false),
    ("user_id", Ts::String, false),
    ("type", Ts::Enum(NOTIFICATION_TYPES), false),
    ("title", Ts::String, false),
    ("body", Ts::String, false),
    ("related_user_id", Ts::String, true),
    ("related_item_id", Ts::Number, true),
    ("related_offer_id", Ts::Number, true),
    ("is_read", Ts::Boolean, false),
    ("read_at", Ts::Date, true),
    ("created_at", Ts::Date, false),
];

/// `interface UnreadCountResponse`.
const UNREAD_COUNT_RESPONSE: Interface = &[("unread_count", Ts::Number, false)];

/// `interface NotificationStats`.
const NOTIFICATION_STATS: Interface = &[
    ("total_notifications", Ts::Number, false),
    ("unread_notifications", Ts::Number, false),
    ("read_notifications", Ts::Number, false),
];

/// The original's `mark-read` answer (`response_model=dict`: `marked_count`,
/// `notification_ids`); the front end ignores it, the chat service does not call it.
const MARK_READ_RESPONSE: Interface = &[
    ("marked_count", Ts::Number, false),
    ("notification_ids", Ts::NumberArray, false),
];

/// Checks `v` against a TypeScript interface: every required field present with its type,
/// every optional one absent, null or of its type.
#[track_caller]
fn assert_conforms(v: &Value, iface: Interface, what: &str) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{what}: expected an object, got {v}"));
    for (name, ts, optional) in iface {
        let field = obj.get(*name);
        let ok = match (field, ts) {
            (None | Some(Value::Null), _) => *optional,
            (Some(Value::Number(n)), Ts::Number) => n.is_i64() || n.is_f64(),
            (Some(Value::String(_)), Ts::String) => true,
            (Some(Value::Bool(_)), Ts::Boolean) => true,
            (Some(Value::Array(a)), Ts::NumberArray) => a.iter().all(Value::is_number),
            (Some(Value::String(s)), Ts::Date) => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
            (Some(Value::String(s)), Ts::Enum(values)) => values.contains(&s.as_str()),
            _ => false,
        };
        assert!(
            ok,
            "{what}: field `{name}` is not {ts:?} (optional: {optional}) in {v}"
        );
    }
}

#[track_caller]
fn assert_array_of(v: &Value, iface: Interface, what: &str) -> usize {
    let items = v
        .as_array()
        .unwrap_or_else(|| panic!("{what}: expected a bare JSON array, got {v}"));
    for item in items {
        assert_conforms(item, iface, what);
    }
    items.len()
}

/// FastAPI's `HTTPException` body: `{"detail": "<text>"}`.
#[track_caller]
fn assert_detail(got: &Answer, status: StatusCode) -> String {
    assert_eq!(got.status, status, "body: {}", got.body);
    got.body["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("not a {{\"detail\": string}} body: {}", got.body))
        .to_string()
}

/// FastAPI's validation error: 422 `{"detail": [{"loc": [.., field], "msg", "type"}]}`.
#[track_caller]
fn assert_unprocessable(got: &Answer, field: &str) {
    assert_eq!(
        got.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "body: {}",
        got.body
    );
    let first = &got.body["detail"][0];
    assert!(first["msg"].is_string(), "body: {}", got.body);
    let loc = first["loc"].as_array().expect("a loc list");
    assert_eq!(loc.last().unwrap(), field, "body: {}", got.body);
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

struct Api {
    router: Router,
    storage: Storage,
    _db: TestDb,
}

fn state(storage: Storage) -> AppState {
    let readiness = Arc::new(Readiness::default());
    readiness.set_schema_ready();
    readiness.set_broker_probe(Arc::new(|| true));
    AppState {
        storage,
        metrics: Arc::new(Metrics::new()),
        readiness,
    }
}

async fn api() -> Api {
    let db = TestDb::new("notif_contract_").await;
    let storage = Storage::connect_lazy(db.url(), 4, Duration::from_secs(10)).unwrap();
    storage.migrate().await.expect("migrations run");
    Api {
        router: router(state(storage.clone())),
        storage,
        _db: db,
    }
}

async fn send(router: &Router, req: Request<Body>) -> Answer {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Answer {
        status,
        headers,
        body,
    }
}

impl Api {
    /// A request as axios sends it: JSON bodies with `Content-Type: application/json`.
    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        send(&self.router, req.body(body).unwrap()).await
    }

    /// The chat service's call (`send_message_notification`), which is also the front
    /// end's `createNotification`.
    async fn create(&self, user: &str, kind: &str) -> Answer {
        self.call(
            "POST",
            "/api/v1/notifications",
            Some(json!({
                "user_id": user, "type": kind, "title": "New Message 💬",
                "body": "You have a new message", "related_user_id": "sender1",
            })),
        )
        .await
    }

    /// Stores `n` events for `user`, one second apart, oldest first.
    async fn seed(&self, user: &str, n: usize, base: chrono::DateTime<chrono::Utc>) {
        let events: Vec<NotificationEvent> = (0..n)
            .map(|i| {
                let mut e = NotificationEvent::new(
                    user,
                    EventType::TradeOfferReceived,
                    format!("title {i}"),
                    "body",
                )
                .with_related_offer(i as i64 + 1);
                e.occurred_at = base + chrono::Duration::seconds(i as i64);
                e
            })
            .collect();
        self.storage.insert_events(&events).await.unwrap();
    }
}

fn ids(list: &Value) -> Vec<i64> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn create_notification_as_the_chat_service_sends_it_is_201_with_a_notification_response() {
    let api = api().await;
    let got = api.create("user456", "new_message").await;
    assert_eq!(got.status, StatusCode::CREATED, "body: {}", got.body);
    assert_conforms(&got.body, NOTIFICATION_RESPONSE, "createNotification");
    assert_eq!(got.body["related_user_id"], "sender1");
    assert_eq!(got.body["is_read"], false);
    // The original's NotificationCreate also takes related ids and ignores unknown fields.
    let got = api
        .call(
            "POST",
            "/api/v1/notifications",
            Some(
                json!({"user_id": "u", "type": "item_liked", "title": "t", "body": "b",
                        "related_item_id": 7, "related_offer_id": 9, "extra": true}),
            ),
        )
        .await;
    assert_eq!(got.status, StatusCode::CREATED, "body: {}", got.body);
    assert_eq!(
        (
            got.body["related_item_id"].as_i64(),
            got.body["related_offer_id"].as_i64()
        ),
        (Some(7), Some(9))
    );
}

#[tokio::test]
async fn create_notification_with_a_type_outside_the_enum_is_fastapis_422() {
    let api = api().await;
    let got = api.create("user456", "new_trade_offer").await;
    assert_unprocessable(&got, "type");
    let got = api
        .call(
            "POST",
            "/api/v1/notifications",
            Some(json!({"user_id": "u"})),
        )
        .await;
    assert_eq!(
        got.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "body: {}",
        got.body
    );
    assert_eq!(api.storage.count().await.unwrap().0, 0, "nothing stored");
}

#[tokio::test]
async fn get_user_notifications_is_a_bare_array_of_notification_responses_newest_first() {
    let api = api().await;
    api.seed("alice", 3, chrono::Utc::now() - chrono::Duration::hours(1))
        .await;
    api.create("alice", "new_message").await;
    let got = api
        .call(
            "GET",
            "/api/v1/notifications/alice?unread_only=false&limit=50&offset=0",
            None,
        )
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        assert_array_of(&got.body, NOTIFICATION_RESPONSE, "getUserNotifications"),
        4
    );
    assert_eq!(got.body[0]["type"], "new_message", "newest first");
    // The screen's pages: limit and offset as the original took them.
    let page = api
        .call("GET", "/api/v1/notifications/alice?limit=2&offset=2", None)
        .await;
    assert_eq!(ids(&page.body), ids(&got.body)[2..4].to_vec());
    // A user without notifications gets an empty array, not an object.
    let none = api.call("GET", "/api/v1/notifications/nobody", None).await;
    assert_eq!(none.body, json!([]));
}

#[tokio::test]
async fn get_user_notifications_refuses_a_bad_limit_as_fastapi_did() {
    let api = api().await;
    for bad in ["0", "101", "ten"] {
        let got = api
            .call(
                "GET",
                &format!("/api/v1/notifications/alice?limit={bad}"),
                None,
            )
            .await;
        assert_unprocessable(&got, "limit");
    }
}

#[tokio::test]
async fn unread_count_and_stats_have_the_front_ends_field_names() {
    let api = api().await;
    api.seed("alice", 3, chrono::Utc::now()).await;
    let first = ids(&api
        .call("GET", "/api/v1/notifications/alice", None)
        .await
        .body)[0];
    api.call(
        "PATCH",
        &format!("/api/v1/notifications/{first}/read?user_id=alice"),
        Some(json!({})),
    )
    .await;
    let count = api
        .call("GET", "/api/v1/notifications/alice/unread-count", None)
        .await;
    assert_conforms(&count.body, UNREAD_COUNT_RESPONSE, "getUnreadCount");
    assert_eq!(count.body["unread_count"], 2);
    let stats = api
        .call("GET", "/api/v1/notifications/alice/stats", None)
        .await;
    assert_eq!(stats.status, StatusCode::OK);
    assert_conforms(&stats.body, NOTIFICATION_STATS, "getStats");
    assert_eq!(
        stats.body,
        json!({"total_notifications": 3, "unread_notifications": 2, "read_notifications": 1})
    );
}

#[tokio::test]
async fn mark_as_read_marks_the_users_ids_it_finds_and_is_404_only_when_it_finds_none() {
    let api = api().await;
    api.seed("alice", 2, chrono::Utc::now()).await;
    api.seed("bob", 1, chrono::Utc::now()).await;
    let alice = ids(&api
        .call("GET", "/api/v1/notifications/alice", None)
        .await
        .body);
    let bob = ids(&api
        .call("GET", "/api/v1/notifications/bob", None)
        .await
        .body);
    let got = api
        .call(
            "PATCH",
            "/api/v1/notifications/mark-read?user_id=alice",
            Some(json!({"notification_ids": [alice[0], bob[0], 999_999]})),
        )
        .await;
    assert_eq!(got.status, StatusCode::OK, "body: {}", got.body);
    assert_conforms(&got.body, MARK_READ_RESPONSE, "markAsRead");
    assert_eq!(got.body["marked_count"], 1);
    assert_eq!(got.body["notification_ids"], json!([alice[0]]));
    let bobs = api.call("GET", "/api/v1/notifications/bob", None).await;
    assert_eq!(
        bobs.body[0]["is_read"], false,
        "another user's id is left alone"
    );

    let none = api
        .call(
            "PATCH",
            "/api/v1/notifications/mark-read?user_id=alice",
            Some(json!({"notification_ids": [bob[0]]})),
        )
        .await;
    assert_eq!(
        assert_detail(&none, StatusCode::NOT_FOUND),
        "No notifications found for the given IDs"
    );
    let empty = api
        .call(
            "PATCH",
            "/api/v1/notifications/mark-read?user_id=alice",
            Some(json!({"notification_ids": []})),
        )
        .await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn mark_single_as_read_returns_the_notification_read_and_keeps_the_first_read_at() {
    let api = api().await;
    api.seed("alice", 1, chrono::Utc::now()).await;
    let id = ids(&api
        .call("GET", "/api/v1/notifications/alice", None)
        .await
        .body)[0];
    let uri = format!("/api/v1/notifications/{id}/read?user_id=alice");
    // axios.patch(url, {}) sends an empty JSON object.
    let got = api.call("PATCH", &uri, Some(json!({}))).await;
    assert_eq!(got.status, StatusCode::OK, "body: {}", got.body);
    assert_conforms(&got.body, NOTIFICATION_RESPONSE, "markSingleAsRead");
    assert_eq!(got.body["is_read"], true);
    let again = api.call("PATCH", &uri, Some(json!({}))).await;
    assert_eq!(again.body["read_at"], got.body["read_at"]);
    let other = api
        .call(
            "PATCH",
            &format!("/api/v1/notifications/{id}/read?user_id=bob"),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        assert_detail(&other, StatusCode::NOT_FOUND),
        format!("Notification with ID {id} not found")
    );
    let bad = api
        .call(
            "PATCH",
            "/api/v1/notifications/abc/read?user_id=alice",
            Some(json!({})),
        )
        .await;
    assert_unprocessable(&bad, "notification_id");
}

#[tokio::test]
async fn delete_notification_and_delete_all_answer_204_without_a_body() {
    let api = api().await;
    api.seed("alice", 3, chrono::Utc::now()).await;
    let all = ids(&api
        .call("GET", "/api/v1/notifications/alice", None)
        .await
        .body);
    let got = api
        .call(
            "DELETE",
            &format!("/api/v1/notifications/{}?user_id=alice", all[0]),
            None,
        )
        .await;
    assert_eq!(
        (got.status, got.body.clone()),
        (StatusCode::NO_CONTENT, Value::Null)
    );
    let again = api
        .call(
            "DELETE",
            &format!("/api/v1/notifications/{}?user_id=alice", all[0]),
            None,
        )
        .await;
    assert_detail(&again, StatusCode::NOT_FOUND);
    let got = api
        .call("DELETE", "/api/v1/notifications/user/alice", None)
        .await;
    assert_eq!(
        (got.status, got.body.clone()),
        (StatusCode::NO_CONTENT, Value::Null)
    );
    let left = api.call("GET", "/api/v1/notifications/alice", None).await;
    assert_eq!(left.body, json!([]));
}

#[tokio::test]
async fn a_browser_preflight_from_any_origin_is_allowed_with_credentials_by_default() {
    let api = api().await;
    let preflight = Request::builder()
        .method("OPTIONS")
        .uri("/api/v1/notifications/mark-read?user_id=alice")
        .header(header::ORIGIN, "http://localhost:8081")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "PATCH")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
        .body(Body::empty())
        .unwrap();
    let got = send(&api.router, preflight).await;
    assert!(got.status.is_success(), "preflight answered {}", got.status);
    let h = |name: header::HeaderName| {
        got.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_ascii_lowercase())
            .unwrap_or_default()
    };
    assert_eq!(
        h(header::ACCESS_CONTROL_ALLOW_ORIGIN),
        "http://localhost:8081"
    );
    assert!(h(header::ACCESS_CONTROL_ALLOW_METHODS).contains("patch"));
    assert!(h(header::ACCESS_CONTROL_ALLOW_HEADERS).contains("content-type"));
    assert_eq!(h(header::ACCESS_CONTROL_ALLOW_CREDENTIALS), "true");

    // The actual request carries the CORS headers too, and exposes the paging cursor.
    let get = Request::builder()
        .uri("/api/v1/notifications/alice")
        .header(header::ORIGIN, "https://swappo.example")
        .body(Body::empty())
        .unwrap();
    let got = send(&api.router, get).await;
    assert_eq!(
        got.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://swappo.example"
    );
    assert!(
        got.headers[header::ACCESS_CONTROL_EXPOSE_HEADERS]
            .to_str()
            .unwrap()
            .contains("x-next-cursor")
    );
}

#[tokio::test]
async fn with_configured_origins_a_preflight_from_another_origin_gets_no_allowance() {
    let api = api().await;
    let layer = cors::layer(&["https://app.swappo.example".to_string()]).unwrap();
    let router = router_with_cors(state(api.storage.clone()), layer);
    let preflight = |origin: &str| {
        Request::builder()
            .method("OPTIONS")
            .uri("/api/v1/notifications/alice")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
            .body(Body::empty())
            .unwrap()
    };
    let allowed = send(&router, preflight("https://app.swappo.example")).await;
    assert_eq!(
        allowed.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.swappo.example"
    );
    let other = send(&router, preflight("https://evil.example")).await;
    assert!(
        other
            .headers
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
}

#[tokio::test]
async fn a_cursor_pages_without_repeating_when_a_late_event_lands_in_pages_already_read() {
    let api = api().await;
    let base = chrono::Utc::now() - chrono::Duration::hours(1);
    api.seed("alice", 6, base).await;
    let first = api
        .call("GET", "/api/v1/notifications/alice?limit=3", None)
        .await;
    let cursor = first.headers["x-next-cursor"].to_str().unwrap().to_string();
    let seen = ids(&first.body);
    // A late event: it happened among the rows of the first page, and is stored now.
    let mut late = NotificationEvent::new("alice", EventType::System, "late", "late");
    late.occurred_at = base + chrono::Duration::milliseconds(4500);
    api.storage.insert_events(&[late]).await.unwrap();

    let by_offset = api
        .call("GET", "/api/v1/notifications/alice?limit=3&offset=3", None)
        .await;
    assert!(
        ids(&by_offset.body).iter().any(|id| seen.contains(id)),
        "offset paging repeats a row here (what the cursor is for)"
    );
    let by_cursor = api
        .call(
            "GET",
            &format!("/api/v1/notifications/alice?limit=3&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(by_cursor.status, StatusCode::OK, "body: {}", by_cursor.body);
    let next = ids(&by_cursor.body);
    assert_eq!(next.len(), 3);
    assert!(
        next.iter().all(|id| !seen.contains(id)),
        "no repeats: {seen:?} then {next:?}"
    );
    assert!(
        by_cursor.headers.get("x-next-cursor").is_some(),
        "a full page has a next cursor"
    );

    let bad = api
        .call("GET", "/api/v1/notifications/alice?cursor=nope", None)
        .await;
    assert_unprocessable(&bad, "cursor");
    let both = api
        .call(
            "GET",
            &format!("/api/v1/notifications/alice?offset=1&cursor={cursor}"),
            None,
        )
        .await;
    assert_unprocessable(&both, "cursor");
}

#[tokio::test]
async fn an_unread_only_cursor_does_not_skip_rows_when_earlier_ones_are_marked_read() {
    let api = api().await;
    api.seed("alice", 6, chrono::Utc::now() - chrono::Duration::hours(1))
        .await;
    let first = api
        .call(
            "GET",
            "/api/v1/notifications/alice?unread_only=true&limit=3",
            None,
        )
        .await;
    let cursor = first.headers["x-next-cursor"].to_str().unwrap().to_string();
    // The user reads the first page while paging on.
    api.call(
        "PATCH",
        "/api/v1/notifications/mark-read?user_id=alice",
        Some(json!({"notification_ids": ids(&first.body)})),
    )
    .await;
    let by_offset = api
        .call(
            "GET",
            "/api/v1/notifications/alice?unread_only=true&limit=3&offset=3",
            None,
        )
        .await;
    assert_eq!(
        ids(&by_offset.body).len(),
        0,
        "offset paging skips the three left"
    );
    let by_cursor = api
        .call(
            "GET",
            &format!("/api/v1/notifications/alice?unread_only=true&limit=3&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(ids(&by_cursor.body).len(), 3, "the cursor finds them");
    // Our own API pages the same way, naming the cursor in its body.
    let v2 = api
        .call("GET", "/api/v2/notifications/alice?limit=3", None)
        .await;
    assert!(v2.body["next_cursor"].is_string(), "body: {}", v2.body);
}
