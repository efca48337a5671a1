//! The HTTP API and the storage beneath it, in-process against a real PostgreSQL database
//! of its own per test (`TestDb`).
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use swappo_messaging::{EventType, NotificationEvent};
use swappo_notifications::http::{AppState, Readiness, router};
use swappo_notifications::metrics::Metrics;
use swappo_notifications::storage::Storage;
use swappo_testkit::TestDb;
use tower::ServiceExt;

struct Api {
    router: Router,
    storage: Storage,
    _db: TestDb,
}

async fn api() -> Api {
    let db = TestDb::new("notif_api_").await;
    let storage = Storage::connect_lazy(db.url(), 4, Duration::from_secs(10)).unwrap();
    storage.migrate().await.expect("migrations run");
    Api {
        router: router(state(storage.clone(), true)),
        storage,
        _db: db,
    }
}

fn state(storage: Storage, broker_up: bool) -> AppState {
    let readiness = Arc::new(Readiness::default());
    readiness.set_schema_ready();
    readiness.set_broker_probe(Arc::new(move || broker_up));
    AppState {
        storage,
        metrics: Arc::new(Metrics::new()),
        readiness,
    }
}

impl Api {
    /// Sends a request; returns the status and the JSON body (`Null` when empty).
    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
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

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call("GET", uri, None).await
    }

    /// Stores events for `user` (one per type given, oldest first) and returns their row ids,
    /// oldest first.
    async fn seed(&self, user: &str, types: &[EventType]) -> Vec<i64> {
        let base = chrono::Utc::now() - chrono::Duration::hours(1);
        let events: Vec<NotificationEvent> = types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut e =
                    NotificationEvent::new(user, *t, format!("title {i}"), format!("body {i}"))
                        .with_related_user("user123")
                        .with_related_offer(i as i64 + 1);
                e.occurred_at = base + chrono::Duration::seconds(i as i64);
                e
            })
            .collect();
        assert_eq!(
            self.storage.insert_events(&events).await.unwrap(),
            events.len() as u64
        );
        let (_, list) = self
            .get(&format!("/api/v2/notifications/{user}?limit=100"))
            .await;
        let mut ids: Vec<i64> = list["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_i64().unwrap())
            .collect();
        ids.reverse();
        ids
    }
}

async fn send(router: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, value)
}

/// Asserts a 4xx JSON error; returns its message.
#[track_caller]
fn assert_error(got: &(StatusCode, Value), status: StatusCode, field: Option<&str>) -> String {
    assert_eq!(got.0, status, "body: {}", got.1);
    let err = &got.1["error"];
    assert!(err["code"].is_string(), "no JSON error body: {}", got.1);
    if let Some(field) = field {
        assert_eq!(err["field"], field, "body: {}", got.1);
    }
    err["message"].as_str().unwrap().to_string()
}

use EventType::*;

#[tokio::test]
async fn the_list_is_newest_first_and_pages_with_limit_and_offset() {
    let api = api().await;
    let ids = api
        .seed("alice", &[TradeOfferReceived, NewMessage, ItemLiked])
        .await;
    api.seed("bob", &[System]).await;

    let (status, body) = api.get("/api/v2/notifications/alice").await;
    assert_eq!(status, StatusCode::OK);
    let got: Vec<i64> = body["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_i64().unwrap())
        .collect();
    assert_eq!(got, vec![ids[2], ids[1], ids[0]]);
    assert_eq!(body["limit"], 50);
    let first = &body["notifications"][0];
    assert_eq!(first["type"], "item_liked");
    assert_eq!(first["related_user_id"], "user123");
    assert_eq!(first["related_offer_id"], 3);
    assert_eq!(first["is_read"], false);

    let (_, page) = api
        .get("/api/v2/notifications/alice?limit=1&offset=1")
        .await;
    assert_eq!(page["notifications"].as_array().unwrap().len(), 1);
    assert_eq!(page["notifications"][0]["id"], ids[1]);

    let (_, nobody) = api.get("/api/v2/notifications/carol").await;
    assert_eq!(nobody["notifications"], json!([]));
}

#[tokio::test]
async fn the_list_filters_unread_only_and_by_type() {
    let api = api().await;
    let ids = api.seed("alice", &[NewMessage, NewMessage, System]).await;
    api.call(
        "PATCH",
        &format!("/api/v2/notifications/{}/read?user_id=alice", ids[0]),
        None,
    )
    .await;

    let (_, unread) = api
        .get("/api/v2/notifications/alice?unread_only=true")
        .await;
    assert_eq!(unread["notifications"].as_array().unwrap().len(), 2);
    let (_, messages) = api
        .get("/api/v2/notifications/alice?type=new_message")
        .await;
    assert_eq!(messages["notifications"].as_array().unwrap().len(), 2);
    let (_, both) = api
        .get("/api/v2/notifications/alice?type=new_message&unread_only=1")
        .await;
    assert_eq!(both["notifications"][0]["id"], ids[1]);
    assert_eq!(both["notifications"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_list_parameters_get_a_400_naming_the_parameter() {
    let api = api().await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("unread_only=perhaps", "unread_only"),
        ("type=trade_offer_exploded", "type"),
    ] {
        let got = api
            .get(&format!("/api/v2/notifications/alice?{query}"))
            .await;
        let message = assert_error(&got, StatusCode::BAD_REQUEST, Some(field));
        assert!(!message.is_empty(), "{query}");
    }
    let unknown = api.get("/api/v2/notifications/alice?type=nope").await;
    assert!(assert_error(&unknown, StatusCode::BAD_REQUEST, Some("type")).contains("item_liked"));
    let long_user = api
        .get(&format!("/api/v2/notifications/{}", "u".repeat(101)))
        .await;
    assert_error(&long_user, StatusCode::BAD_REQUEST, Some("user_id"));
}

#[tokio::test]
async fn unread_count_and_stats_count_only_the_users_own() {
    let api = api().await;
    let ids = api
        .seed("alice", &[NewMessage, NewMessage, TradeCompleted])
        .await;
    api.seed("bob", &[NewMessage]).await;
    api.call(
        "PATCH",
        &format!("/api/v2/notifications/{}/read?user_id=alice", ids[2]),
        None,
    )
    .await;

    let (status, count) = api.get("/api/v2/notifications/alice/unread-count").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count, json!({"user_id": "alice", "unread_count": 2}));

    let (_, stats) = api.get("/api/v2/notifications/alice/stats").await;
    assert_eq!(
        stats,
        json!({"user_id": "alice", "total": 3, "unread": 2, "read": 1,
               "by_type": {"new_message": 2, "trade_completed": 1}})
    );
    let (_, empty) = api.get("/api/v2/notifications/nobody/stats").await;
    assert_eq!(empty["total"], 0);
}

#[tokio::test]
async fn marking_one_read_keeps_the_first_read_time_and_refuses_someone_elses() {
    let api = api().await;
    let ids = api.seed("alice", &[NewMessage]).await;
    let bob = api.seed("bob", &[NewMessage]).await;
    let uri = format!("/api/v2/notifications/{}/read?user_id=alice", ids[0]);

    let (status, first) = api.call("PATCH", &uri, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["is_read"], true);
    let (_, again) = api.call("PATCH", &uri, None).await;
    assert_eq!(again["read_at"], first["read_at"]);

    let someone_elses = api
        .call(
            "PATCH",
            &format!("/api/v2/notifications/{}/read?user_id=alice", bob[0]),
            None,
        )
        .await;
    assert_error(&someone_elses, StatusCode::NOT_FOUND, None);
    let (_, bobs) = api.get("/api/v2/notifications/bob").await;
    assert_eq!(
        bobs["notifications"][0]["is_read"], false,
        "bob's notification was not touched"
    );

    let malformed = api
        .call(
            "PATCH",
            "/api/v2/notifications/abc/read?user_id=alice",
            None,
        )
        .await;
    assert_error(&malformed, StatusCode::BAD_REQUEST, Some("id"));
    let no_user = api
        .call(
            "PATCH",
            &format!("/api/v2/notifications/{}/read", ids[0]),
            None,
        )
        .await;
    assert_error(&no_user, StatusCode::BAD_REQUEST, Some("user_id"));
    let missing = api
        .call(
            "PATCH",
            "/api/v2/notifications/999999/read?user_id=alice",
            None,
        )
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, None);
}

#[tokio::test]
async fn marking_many_read_is_all_or_nothing() {
    let api = api().await;
    let ids = api.seed("alice", &[NewMessage, NewMessage, System]).await;
    let bob = api.seed("bob", &[NewMessage]).await;
    let uri = "/api/v2/notifications/mark-read?user_id=alice";

    let with_bobs = api
        .call(
            "PATCH",
            uri,
            Some(json!({"notification_ids": [ids[0], bob[0]]})),
        )
        .await;
    let message = assert_error(&with_bobs, StatusCode::NOT_FOUND, None);
    assert!(message.contains(&bob[0].to_string()), "{message}");
    let (_, count) = api.get("/api/v2/notifications/alice/unread-count").await;
    assert_eq!(count["unread_count"], 3, "nothing was marked");

    let (status, done) = api
        .call(
            "PATCH",
            uri,
            Some(json!({"notification_ids": [ids[0], ids[1]]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["newly_read"], 2);
    let (_, count) = api.get("/api/v2/notifications/alice/unread-count").await;
    assert_eq!(count["unread_count"], 1);

    let empty = api
        .call("PATCH", uri, Some(json!({"notification_ids": []})))
        .await;
    assert_error(&empty, StatusCode::BAD_REQUEST, Some("notification_ids"));
    let strings = api
        .call("PATCH", uri, Some(json!({"notification_ids": ["one"]})))
        .await;
    assert!(
        assert_error(&strings, StatusCode::UNPROCESSABLE_ENTITY, None).contains("notification_ids")
    );
    let no_user = api
        .call(
            "PATCH",
            "/api/v2/notifications/mark-read",
            Some(json!({"notification_ids": [1]})),
        )
        .await;
    assert_error(&no_user, StatusCode::BAD_REQUEST, Some("user_id"));
    let not_json = send(
        &api.router,
        Request::builder()
            .method("PATCH")
            .uri(uri)
            .body(Body::from("notification_ids=1"))
            .unwrap(),
    )
    .await;
    assert_error(&not_json, StatusCode::UNSUPPORTED_MEDIA_TYPE, None);
}

#[tokio::test]
async fn deleting_one_removes_only_the_users_own_notification() {
    let api = api().await;
    let ids = api.seed("alice", &[NewMessage, System]).await;
    let bob = api.seed("bob", &[NewMessage]).await;

    let (status, body) = api
        .call(
            "DELETE",
            &format!("/api/v2/notifications/{}?user_id=alice", ids[0]),
            None,
        )
        .await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    let (_, left) = api.get("/api/v2/notifications/alice").await;
    assert_eq!(left["notifications"].as_array().unwrap().len(), 1);

    let someone_elses = api
        .call(
            "DELETE",
            &format!("/api/v2/notifications/{}?user_id=alice", bob[0]),
            None,
        )
        .await;
    assert_error(&someone_elses, StatusCode::NOT_FOUND, None);
    let (_, bobs) = api.get("/api/v2/notifications/bob").await;
    assert_eq!(
        bobs["notifications"].as_array().unwrap().len(),
        1,
        "bob's notification survived"
    );

    let gone = api
        .call(
            "DELETE",
            &format!("/api/v2/notifications/{}?user_id=alice", ids[0]),
            None,
        )
        .await;
    assert_error(&gone, StatusCode::NOT_FOUND, None);
    let malformed = api
        .call("DELETE", "/api/v2/notifications/-4?user_id=alice", None)
        .await;
    assert_error(&malformed, StatusCode::BAD_REQUEST, Some("id"));
}

#[tokio::test]
async fn deleting_all_of_a_user_leaves_other_users_alone() {
    let api = api().await;
    api.seed("alice", &[NewMessage, System, ItemLiked]).await;
    api.seed("bob", &[NewMessage]).await;

    let (status, body) = api
        .call("DELETE", "/api/v2/notifications/user/alice", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"user_id": "alice", "deleted": 3}));
    let (_, bobs) = api.get("/api/v2/notifications/bob/unread-count").await;
    assert_eq!(bobs["unread_count"], 1);
    let (_, again) = api
        .call("DELETE", "/api/v2/notifications/user/alice", None)
        .await;
    assert_eq!(again["deleted"], 0);
}

#[tokio::test]
async fn direct_creation_stores_a_valid_notification_once() {
    let api = api().await;
    let id = uuid::Uuid::new_v4();
    let body = json!({"id": id, "user_id": "alice", "type": "item_liked", "title": "Liked!",
                      "body": "bob liked your bike", "related_user_id": "bob", "related_item_id": 9});

    let (status, created) = api
        .call("POST", "/api/v2/notifications", Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["event_id"], id.to_string());
    assert_eq!(created["related_item_id"], 9);
    assert_eq!(created["type"], "item_liked");

    let again = api.call("POST", "/api/v2/notifications", Some(body)).await;
    assert_error(&again, StatusCode::CONFLICT, None);
    assert_eq!(api.storage.count().await.unwrap(), (1, 1));
}

#[tokio::test]
async fn direct_creation_refuses_what_the_event_contract_refuses() {
    let api = api().await;
    let valid = json!({"user_id": "alice", "type": "system", "title": "Hi", "body": "Welcome"});
    let with = |key: &str, value: Value| {
        let mut v = valid.clone();
        v[key] = value;
        v
    };
    for (body, field) in [
        (with("type", json!("trade_offer_exploded")), "type"),
        (with("title", json!("")), "title"),
        (with("title", json!("t".repeat(256))), "title"),
        (with("user_id", json!("   ")), "user_id"),
        (with("related_offer_id", json!(-1)), "related_offer_id"),
        (with("related_item_id", json!(0)), "related_item_id"),
    ] {
        let got = api
            .call("POST", "/api/v2/notifications", Some(body.clone()))
            .await;
        assert_error(&got, StatusCode::BAD_REQUEST, Some(field));
    }
    let mut missing = valid.clone();
    missing.as_object_mut().unwrap().remove("title");
    let got = api
        .call("POST", "/api/v2/notifications", Some(missing))
        .await;
    assert!(assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, None).contains("title"));
    let got = api
        .call(
            "POST",
            "/api/v2/notifications",
            Some(with("titel", json!("typo"))),
        )
        .await;
    assert!(assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, None).contains("titel"));
    let got = api
        .call(
            "POST",
            "/api/v2/notifications",
            Some(with("id", json!("not-a-uuid"))),
        )
        .await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, None);
    let bad_json = send(
        &api.router,
        Request::builder()
            .method("POST")
            .uri("/api/v2/notifications")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{\"user_id\": "))
            .unwrap(),
    )
    .await;
    assert_error(&bad_json, StatusCode::BAD_REQUEST, None);
    assert_eq!(
        api.storage.count().await.unwrap(),
        (0, 0),
        "nothing was stored"
    );
}

#[tokio::test]
async fn a_batch_delivered_again_adds_no_rows() {
    let api = api().await;
    let events: Vec<NotificationEvent> = (0..250)
        .map(|i| NotificationEvent::new(format!("user{}", i % 7), System, "t", "b"))
        .collect();
    assert_eq!(api.storage.insert_events(&events).await.unwrap(), 250);
    assert_eq!(api.storage.insert_events(&events).await.unwrap(), 0);
    // Half old, half new, and one event twice in the same batch.
    let mut mixed: Vec<NotificationEvent> = events[..50].to_vec();
    mixed.extend((0..50).map(|_| NotificationEvent::new("user1", NewMessage, "t", "b")));
    mixed.push(mixed[60].clone());
    assert_eq!(api.storage.insert_events(&mixed).await.unwrap(), 50);
    assert_eq!(api.storage.count().await.unwrap(), (300, 300));
    assert_eq!(api.storage.insert_events(&[]).await.unwrap(), 0);
}

#[tokio::test]
async fn an_internal_error_says_only_internal_error() {
    let api = api().await;
    sqlx::query("DROP TABLE notifications")
        .execute(api.storage.pool())
        .await
        .unwrap();
    let got = api.get("/api/v2/notifications/alice").await;
    let message = assert_error(&got, StatusCode::INTERNAL_SERVER_ERROR, None);
    assert_eq!(message, "internal error");
    assert!(!got.1.to_string().contains("relation"), "{}", got.1);
}

#[tokio::test]
async fn health_always_answers_and_ready_needs_the_database_but_not_the_broker() {
    let api = api().await;
    assert_eq!(api.get("/health").await.0, StatusCode::OK);
    let (status, ready) = api.get("/ready").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ready,
        json!({"ready": true, "database": "up", "broker": "connected", "consumer": "consuming"})
    );

    let broker_down = router(state(api.storage.clone(), false));
    let (status, body) = send(
        &broker_down,
        Request::get("/ready").body(Body::empty()).unwrap(),
    )
    .await;
    // The read API still serves while only the broker is down.
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["broker"], "disconnected");
    assert_eq!(body["consumer"], "not_consuming");

    // Nothing listens on port 1: the database is down for this router.
    let dead = Storage::connect_lazy("postgres://u:p@127.0.0.1:1/none", 1, Duration::from_secs(1))
        .unwrap();
    let db_down = router(state(dead.clone(), true));
    let (status, body) = send(
        &db_down,
        Request::get("/ready").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["database"], "down");
    assert_eq!(
        send(
            &db_down,
            Request::get("/health").body(Body::empty()).unwrap()
        )
        .await
        .0,
        StatusCode::OK
    );
    let (status, body) = send(
        &db_down,
        Request::get("/api/v2/notifications/alice")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(!body.to_string().contains("127.0.0.1"), "{body}");
}

#[tokio::test]
async fn metrics_are_served_in_prometheus_text_format() {
    let api = api().await;
    let (status, text) = api.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let text = text.as_str().unwrap().to_string();
    for name in [
        "notifications_stored_total",
        "notifications_duplicates_total",
        "notifications_batch_duration_seconds",
    ] {
        assert!(text.contains(name), "{name} missing: {text}");
    }
}
