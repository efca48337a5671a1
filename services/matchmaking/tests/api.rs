//! The HTTP API against a real PostgreSQL: the transition table, every route's bad inputs,
//! listings, and the offer change + outbox row written in one transaction.
mod common;

use common::{Api, Env};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const P: &str = "alice"; // proposer
const R: &str = "bob"; // receiver
const S: &str = "mallory"; // stranger

/// Brings a fresh offer into `status` through the API and returns its id.
async fn offer_in(api: &Api, status: &str) -> i64 {
    let id = api.create(P, R, &[1], &[2]).await;
    match status {
        "pending" => {}
        "accepted" => api.must_patch(id, R, "accepted").await,
        "rejected" => api.must_patch(id, R, "rejected").await,
        "cancelled" => api.must_patch(id, P, "cancelled").await,
        "completed" => {
            api.must_patch(id, R, "accepted").await;
            api.must_patch(id, P, "completed").await;
        }
        other => panic!("unknown status {other}"),
    }
    id
}

/// The rule table, written out independently of the service's own function.
fn expected(actor: &str, from: &str, to: &str) -> StatusCode {
    let allowed = [
        (R, "pending", "accepted"),
        (R, "pending", "rejected"),
        (P, "pending", "cancelled"),
        (P, "accepted", "completed"),
        (R, "accepted", "completed"),
    ];
    if allowed.contains(&(actor, from, to)) {
        return StatusCode::OK;
    }
    let reserved_to_other = matches!((actor, to), (P, "accepted" | "rejected") | (R, "cancelled"));
    if actor == S || (to != "pending" && reserved_to_other) {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::BAD_REQUEST
    }
}

#[tokio::test]
async fn every_actor_status_and_target_gets_the_answer_of_the_transition_table() {
    let env = Env::start().await;
    let statuses = ["pending", "accepted", "rejected", "cancelled", "completed"];
    let mut checked = 0;
    for from in statuses {
        for actor in [P, R, S] {
            for to in statuses {
                let id = offer_in(&env.api, from).await;
                let events_before = env.events_of(id).await.len();
                let (code, body) = env.api.patch(id, actor, to).await;
                let want = expected(actor, from, to);
                assert_eq!(code, want, "{actor}: {from} -> {to}: {body}");
                let (_, now) = env.api.get(&format!("/api/v2/offers/{id}")).await;
                let events = env.events_of(id).await;
                if want == StatusCode::OK {
                    assert_eq!(body["status"], to);
                    assert_eq!(now["status"], to);
                    assert_eq!(events.len(), events_before + 1, "one event per change");
                } else {
                    let code_word = if want == StatusCode::FORBIDDEN {
                        "forbidden"
                    } else {
                        "invalid_transition"
                    };
                    assert_eq!(body["error"]["code"], code_word, "{body}");
                    assert!(
                        body["error"]["message"]
                            .as_str()
                            .is_some_and(|m| !m.is_empty())
                    );
                    assert_eq!(
                        now["status"], from,
                        "a refused change leaves the offer as it was"
                    );
                    assert_eq!(
                        events.len(),
                        events_before,
                        "a refused change writes no event"
                    );
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 75);
}

#[tokio::test]
async fn each_change_writes_the_event_for_the_other_party_in_its_transaction() {
    let env = Env::start().await;
    let a = offer_in(&env.api, "completed").await; // receiver accepted, proposer completed
    assert_eq!(
        env.events_of(a).await,
        vec![
            ("trade_offer_received".to_string(), R.to_string()),
            ("trade_offer_accepted".to_string(), P.to_string()),
            ("trade_completed".to_string(), R.to_string()),
        ]
    );
    let b = offer_in(&env.api, "rejected").await;
    assert_eq!(
        env.events_of(b).await[1],
        ("trade_offer_rejected".into(), P.into())
    );
    let c = offer_in(&env.api, "cancelled").await;
    assert_eq!(
        env.events_of(c).await[1],
        ("trade_offer_cancelled".into(), R.into())
    );
    // The receiver may complete too; then the proposer hears of it.
    let d = offer_in(&env.api, "accepted").await;
    env.api.must_patch(d, R, "completed").await;
    assert_eq!(
        env.events_of(d).await[2],
        ("trade_completed".into(), P.into())
    );

    // The stored payload is a full contract event.
    let payload: Value = sqlx::query_scalar(
        "SELECT payload FROM outbox WHERE payload->>'type' = 'trade_offer_accepted' LIMIT 1",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    let event =
        swappo_messaging::NotificationEvent::from_json(payload.to_string().as_bytes()).unwrap();
    assert_eq!(event.title, "Trade Offer Accepted! 🎉");
    assert_eq!(
        event.body,
        "Great news! Your trade offer has been accepted."
    );
    assert_eq!(event.related_user_id.as_deref(), Some(R));
    assert_eq!(event.related_offer_id, Some(a));
}

#[tokio::test]
async fn an_offer_change_whose_event_cannot_be_stored_is_not_committed() {
    let env = Env::start().await;
    let id = env.api.create(P, R, &[1], &[2]).await;
    // A real database failure on the outbox insert only.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN RAISE EXCEPTION 'outbox unavailable (test)'; END $$; \
         CREATE TRIGGER refuse BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    let (code, body) = env.api.patch(id, R, "accepted").await;
    assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        body,
        json!({"error": {"code": "internal", "message": "internal error", "field": null}}),
        "no internals leak"
    );
    let (_, offer) = env.api.get(&format!("/api/v2/offers/{id}")).await;
    assert_eq!(
        offer["status"], "pending",
        "the change rolled back with its event"
    );
    let (code, _) = env.api.create_raw(P, R).await;
    assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        env.count("trade_offers").await,
        1,
        "no offer without its event"
    );

    sqlx::raw_sql("DROP TRIGGER refuse ON outbox")
        .execute(&env.pool)
        .await
        .unwrap();
    env.api.must_patch(id, R, "accepted").await;
    assert_eq!(env.events_of(id).await.len(), 2);
}

trait CreateRaw {
    async fn create_raw(&self, p: &str, r: &str) -> (StatusCode, Value);
}
impl CreateRaw for Api {
    async fn create_raw(&self, p: &str, r: &str) -> (StatusCode, Value) {
        let body = json!({"proposer_id": p, "receiver_id": r, "offered_item_ids": [1], "requested_item_ids": [2]});
        self.call(Method::POST, "/api/v2/offers", Some(body)).await
    }
}

#[tokio::test]
async fn concurrent_accept_and_reject_of_one_offer_let_exactly_one_win() {
    let env = Env::start().await;
    for _ in 0..10 {
        let id = env.api.create(P, R, &[1], &[2]).await;
        let (a, b) = tokio::join!(
            env.api.patch(id, R, "accepted"),
            env.api.patch(id, R, "rejected")
        );
        let codes = [a.0, b.0];
        assert!(
            codes.contains(&StatusCode::OK) && codes.contains(&StatusCode::BAD_REQUEST),
            "{codes:?}"
        );
        assert_eq!(
            env.events_of(id).await.len(),
            2,
            "created + exactly one decision"
        );
    }
}

#[tokio::test]
async fn deleting_withdraws_a_pending_offer_for_its_proposer_only() {
    let env = Env::start().await;
    let id = env.api.create(P, R, &[1], &[2]).await;
    let del = |user: &str| format!("/api/v2/offers/{id}?user_id={user}");
    for (user, code) in [(R, StatusCode::FORBIDDEN), (S, StatusCode::FORBIDDEN)] {
        let (got, body) = env.api.call(Method::DELETE, &del(user), None).await;
        assert_eq!(got, code, "{user}: {body}");
    }
    let (got, body) = env
        .api
        .call(Method::DELETE, &format!("/api/v2/offers/{id}"), None)
        .await;
    assert_eq!(
        (got, body["error"]["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("user_id"))
    );
    let (got, body) = env.api.call(Method::DELETE, &del(P), None).await;
    assert_eq!(got, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(
        env.api.get(&format!("/api/v2/offers/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        env.events_of(id).await.last().unwrap(),
        &("trade_offer_cancelled".into(), R.into())
    );
    let (got, _) = env.api.call(Method::DELETE, &del(P), None).await;
    assert_eq!(got, StatusCode::NOT_FOUND, "a second delete finds nothing");

    let accepted = offer_in(&env.api, "accepted").await;
    let (got, body) = env
        .api
        .call(
            Method::DELETE,
            &format!("/api/v2/offers/{accepted}?user_id={P}"),
            None,
        )
        .await;
    assert_eq!(
        (got, body["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_transition"))
    );
    assert_eq!(
        env.api.get(&format!("/api/v2/offers/{accepted}")).await.1["status"],
        "accepted"
    );
}

/// Asserts `status`, the error code, a message, and the field (`null` unless given).
fn assert_refused(
    case: &str,
    got: (StatusCode, Value),
    status: StatusCode,
    error: &str,
    field: Option<&str>,
) {
    let (code, body) = got;
    assert_eq!(code, status, "{case}: {body}");
    let e = &body["error"];
    assert_eq!(e["code"], error, "{case}: {body}");
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{case}: {body}"
    );
    match field {
        Some(f) => assert_eq!(e["field"], f, "{case}: {body}"),
        None => assert_eq!(e["field"], Value::Null, "{case}: {body}"),
    }
}

#[tokio::test]
async fn a_bad_new_offer_is_refused_with_the_reason_and_nothing_is_stored() {
    let env = Env::start().await;
    let base = json!({"proposer_id": P, "receiver_id": R, "offered_item_ids": [1, 2], "requested_item_ids": [3]});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let validation = [
        ("self trade", with("receiver_id", json!(P)), "receiver_id"),
        (
            "empty proposer",
            with("proposer_id", json!("")),
            "proposer_id",
        ),
        (
            "blank receiver",
            with("receiver_id", json!("   ")),
            "receiver_id",
        ),
        (
            "long proposer",
            with("proposer_id", json!("x".repeat(101))),
            "proposer_id",
        ),
        (
            "no offered items",
            with("offered_item_ids", json!([])),
            "offered_item_ids",
        ),
        (
            "no requested items",
            with("requested_item_ids", json!([])),
            "requested_item_ids",
        ),
        (
            "duplicate offered",
            with("offered_item_ids", json!([5, 5])),
            "offered_item_ids",
        ),
        (
            "duplicate requested",
            with("requested_item_ids", json!([3, 4, 3])),
            "requested_item_ids",
        ),
        (
            "offered and requested",
            with("requested_item_ids", json!([2])),
            "requested_item_ids",
        ),
        (
            "zero item id",
            with("offered_item_ids", json!([0])),
            "offered_item_ids",
        ),
        (
            "negative item id",
            with("requested_item_ids", json!([-1])),
            "requested_item_ids",
        ),
        (
            "too many items",
            with("offered_item_ids", json!((1..=51).collect::<Vec<i64>>())),
            "offered_item_ids",
        ),
        (
            "long message",
            with("message", json!("m".repeat(1001))),
            "message",
        ),
    ];
    for (case, body, field) in validation {
        let got = env
            .api
            .call(Method::POST, "/api/v2/offers", Some(body))
            .await;
        assert_refused(
            case,
            got,
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some(field),
        );
    }
    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("receiver_id");
    let shape = [
        ("missing field", missing),
        (
            "item id not a number",
            with("offered_item_ids", json!(["one"])),
        ),
        ("items not a list", with("offered_item_ids", json!(1))),
        (
            "item id not an integer",
            with("offered_item_ids", json!([1.5])),
        ),
        ("user id not a string", with("proposer_id", json!(7))),
        ("unknown field", with("status", json!("accepted"))),
        ("not an object", json!([1, 2])),
    ];
    for (case, body) in shape {
        let got = env
            .api
            .call(Method::POST, "/api/v2/offers", Some(body))
            .await;
        assert_refused(case, got, StatusCode::BAD_REQUEST, "bad_request", None);
    }
    let got = env
        .api
        .raw(
            Method::POST,
            "/api/v2/offers",
            Some("application/json"),
            "{not json",
        )
        .await;
    assert_refused(
        "broken JSON",
        got,
        StatusCode::BAD_REQUEST,
        "bad_request",
        None,
    );
    let got = env
        .api
        .raw(Method::POST, "/api/v2/offers", None, &base.to_string())
        .await;
    assert_refused(
        "no content type",
        got,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "bad_request",
        None,
    );

    assert_eq!(env.count("trade_offers").await, 0, "nothing stored");
    assert_eq!(env.count("outbox").await, 0, "no event written");
}

/// (case, path, body, expected status, error code, field).
type PatchCase = (
    &'static str,
    String,
    Option<Value>,
    StatusCode,
    &'static str,
    Option<&'static str>,
);

#[tokio::test]
async fn a_bad_status_change_is_refused_with_the_reason_and_changes_nothing() {
    let env = Env::start().await;
    let id = env.api.create(P, R, &[1], &[2]).await;
    let path = format!("/api/v2/offers/{id}?user_id={R}");
    let cases: Vec<PatchCase> = vec![
        (
            "no user",
            format!("/api/v2/offers/{id}"),
            Some(json!({"status": "accepted"})),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("user_id"),
        ),
        (
            "empty user",
            format!("/api/v2/offers/{id}?user_id="),
            Some(json!({"status": "accepted"})),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("user_id"),
        ),
        (
            "unknown query field",
            format!("{path}&as=admin"),
            Some(json!({"status": "accepted"})),
            StatusCode::BAD_REQUEST,
            "bad_request",
            None,
        ),
        (
            "unknown status",
            path.clone(),
            Some(json!({"status": "approved"})),
            StatusCode::BAD_REQUEST,
            "bad_request",
            None,
        ),
        (
            "status not a string",
            path.clone(),
            Some(json!({"status": 1})),
            StatusCode::BAD_REQUEST,
            "bad_request",
            None,
        ),
        (
            "no status",
            path.clone(),
            Some(json!({})),
            StatusCode::BAD_REQUEST,
            "bad_request",
            None,
        ),
        (
            "back to pending",
            path.clone(),
            Some(json!({"status": "pending"})),
            StatusCode::BAD_REQUEST,
            "invalid_transition",
            None,
        ),
        (
            "id not a number",
            format!("/api/v2/offers/abc?user_id={R}"),
            Some(json!({"status": "accepted"})),
            StatusCode::BAD_REQUEST,
            "bad_request",
            None,
        ),
        (
            "id overflows",
            format!("/api/v2/offers/99999999999999999999?user_id={R}"),
            Some(json!({"status": "accepted"})),
            StatusCode::BAD_REQUEST,
            "bad_request",
            None,
        ),
        (
            "unknown offer",
            format!("/api/v2/offers/{}?user_id={R}", id + 1000),
            Some(json!({"status": "accepted"})),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
    ];
    for (case, path, body, status, error, field) in cases {
        let got = env.api.call(Method::PATCH, &path, body).await;
        assert_refused(case, got, status, error, field);
    }
    let got = env
        .api
        .raw(Method::PATCH, &path, None, r#"{"status":"accepted"}"#)
        .await;
    assert_refused(
        "no content type",
        got,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "bad_request",
        None,
    );
    assert_eq!(
        env.api.get(&format!("/api/v2/offers/{id}")).await.1["status"],
        "pending"
    );
    assert_eq!(env.count("outbox").await, 1, "only the creation's event");
}

#[tokio::test]
async fn bad_reads_are_refused_with_the_reason() {
    let env = Env::start().await;
    let long = "x".repeat(101);
    let cases: Vec<(&str, String, StatusCode, &str, Option<&str>)> = vec![
        (
            "get: id not a number",
            "/api/v2/offers/abc".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            None,
        ),
        (
            "get: unknown id",
            "/api/v2/offers/424242".into(),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
        (
            "list: no user",
            "/api/v2/offers".into(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("user_id"),
        ),
        (
            "list: blank user",
            "/api/v2/offers?user_id=%20".into(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("user_id"),
        ),
        (
            "list: unknown status",
            "/api/v2/offers?user_id=a&status=done".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            None,
        ),
        (
            "list: limit 0",
            "/api/v2/offers?user_id=a&limit=0".into(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("limit"),
        ),
        (
            "list: limit 101",
            "/api/v2/offers?user_id=a&limit=101".into(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("limit"),
        ),
        (
            "list: limit not a number",
            "/api/v2/offers?user_id=a&limit=ten".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            None,
        ),
        (
            "list: negative offset",
            "/api/v2/offers?user_id=a&offset=-1".into(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("offset"),
        ),
        (
            "list: flag not a bool",
            "/api/v2/offers?user_id=a&as_proposer=maybe".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            None,
        ),
        (
            "list: both sides off",
            "/api/v2/offers?user_id=a&as_proposer=false&as_receiver=false".into(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("as_receiver"),
        ),
        (
            "list: unknown parameter",
            "/api/v2/offers?user_id=a&sort=asc".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            None,
        ),
        (
            "received: long user",
            format!("/api/v2/offers/received/{long}"),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("user_id"),
        ),
        (
            "received: bad limit",
            "/api/v2/offers/received/a?limit=0".into(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("limit"),
        ),
        (
            "received: unknown status",
            "/api/v2/offers/received/a?status=x".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            None,
        ),
        (
            "sent: long user",
            format!("/api/v2/offers/sent/{long}"),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("user_id"),
        ),
        (
            "sent: negative offset",
            "/api/v2/offers/sent/a?offset=-5".into(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("offset"),
        ),
        (
            "by-item: not a number",
            "/api/v2/offers/by-item/abc".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            None,
        ),
        (
            "by-item: zero",
            "/api/v2/offers/by-item/0".into(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("item_id"),
        ),
        (
            "by-item: negative",
            "/api/v2/offers/by-item/-4".into(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("item_id"),
        ),
        (
            "by-item: bad limit",
            "/api/v2/offers/by-item/4?limit=1000".into(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("limit"),
        ),
        (
            "statistics: long user",
            format!("/api/v2/statistics/{long}"),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("user_id"),
        ),
        (
            "statistics: padded user",
            "/api/v2/statistics/%20a".into(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("user_id"),
        ),
        (
            "unknown route",
            "/api/v2/nothing".into(),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
    ];
    for (case, path, status, error, field) in cases {
        assert_refused(case, env.api.get(&path).await, status, error, field);
    }
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn listings_filter_by_side_status_item_and_page_newest_first() {
    let env = Env::start().await;
    let api = &env.api;
    let a = api.create(P, R, &[10], &[20]).await; // alice -> bob, pending
    let b = api.create(R, P, &[21], &[11]).await; // bob -> alice, pending
    let c = api.create(P, "carol", &[12], &[30]).await; // alice -> carol
    api.must_patch(c, "carol", "accepted").await;
    let d = api.create("carol", R, &[31, 10], &[22]).await; // item 10 again, other side

    let (code, created) = api.get(&format!("/api/v2/offers/{a}")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(created["proposer_id"], P);
    assert_eq!(created["offered_item_ids"], json!([10]));
    assert_eq!(created["responded_at"], Value::Null);
    let (_, accepted) = api.get(&format!("/api/v2/offers/{c}")).await;
    assert!(
        accepted["responded_at"].is_string(),
        "accepting records the response time"
    );

    assert_eq!(
        ids(&api.get(&format!("/api/v2/offers?user_id={P}")).await.1),
        vec![c, b, a]
    );
    assert_eq!(
        ids(&api
            .get(&format!("/api/v2/offers?user_id={P}&as_receiver=false"))
            .await
            .1),
        vec![c, a]
    );
    assert_eq!(
        ids(&api
            .get(&format!("/api/v2/offers?user_id={P}&as_proposer=false"))
            .await
            .1),
        vec![b]
    );
    assert_eq!(
        ids(&api
            .get(&format!("/api/v2/offers?user_id={P}&status=accepted"))
            .await
            .1),
        vec![c]
    );
    assert_eq!(
        ids(&api
            .get(&format!("/api/v2/offers?user_id={P}&limit=1&offset=1"))
            .await
            .1),
        vec![b]
    );
    assert_eq!(
        ids(&api.get(&format!("/api/v2/offers/sent/{P}")).await.1),
        vec![c, a]
    );
    assert_eq!(
        ids(&api.get(&format!("/api/v2/offers/received/{R}")).await.1),
        vec![d, a]
    );
    assert_eq!(
        ids(&api
            .get(&format!("/api/v2/offers/received/{R}?status=accepted"))
            .await
            .1),
        Vec::<i64>::new()
    );
    assert_eq!(
        ids(&api.get("/api/v2/offers/by-item/10").await.1),
        vec![d, a]
    );
    assert_eq!(
        ids(&api.get("/api/v2/offers/by-item/10?limit=1").await.1),
        vec![d]
    );
    assert_eq!(
        ids(&api.get("/api/v2/offers/by-item/999").await.1),
        Vec::<i64>::new()
    );

    let (code, stats) = api.get(&format!("/api/v2/statistics/{P}")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        stats,
        json!({"user_id": P, "total_sent": 2, "total_received": 1, "pending_sent": 1,
               "pending_received": 1, "accepted": 1, "rejected": 0, "cancelled": 0, "completed": 0})
    );
    let (_, nobody) = api.get("/api/v2/statistics/nobody").await;
    assert_eq!(nobody["total_sent"], 0);
}

#[tokio::test]
async fn health_ready_and_metrics_answer_without_a_broker() {
    let env = Env::start().await;
    let (code, body) = env.api.get("/health").await;
    assert_eq!((code, body), (StatusCode::OK, json!({"status": "ok"})));
    let (code, body) = env.api.get("/ready").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        body,
        json!({"status": "ready", "database": "up", "broker": "disabled"})
    );

    let id = env.api.create(P, R, &[1], &[2]).await;
    env.api.must_patch(id, R, "accepted").await;
    let _ = env.api.get("/api/v2/offers/abc").await;
    let text = env
        .api
        .http
        .get(format!("{}/metrics", env.api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"matchmaking_offer_changes_total{change="created"} 1"#,
        r#"matchmaking_offer_changes_total{change="accepted"} 1"#,
        r#"matchmaking_http_errors_total{code="bad_request"} 1"#,
        "matchmaking_outbox_pending 2",
        "matchmaking_outbox_published_total 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[tokio::test]
async fn ready_reports_a_database_that_does_not_answer() {
    // A pool pointing at a port where no PostgreSQL listens: the service still starts and
    // answers, /ready says why it is not ready.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let pool = swappo_matchmaking::connect_lazy(
        &format!("postgres://u:secret@127.0.0.1:{port}/none"),
        2,
        std::time::Duration::from_millis(300),
    )
    .unwrap();
    let service = swappo_matchmaking::Service::new(pool);
    let instance = common::Instance::start(&service).await;
    let api = Api::new(&instance.base);
    let (code, body) = api.get("/ready").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["database"], "down");
    let (code, body) = api.get("/api/v2/offers/1").await;
    assert_eq!(
        (code, body),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": {"code": "unavailable", "message": "database unavailable, retry later", "field": null}})
        )
    );
    assert_eq!(api.get("/health").await.0, StatusCode::OK);
    instance.stop().await;
}

#[tokio::test]
async fn purging_deletes_only_confirmed_rows_past_the_retention() {
    let env = Env::start().await;
    let a = env.api.create(P, R, &[1], &[2]).await;
    env.api.must_patch(a, R, "accepted").await;
    env.api.create(P, R, &[3], &[4]).await;
    // Row 1 confirmed two hours ago, row 2 just now, row 3 still pending.
    sqlx::raw_sql(
        "UPDATE outbox SET sent_at = now() - interval '2 hours' WHERE id = (SELECT min(id) FROM outbox); \
         UPDATE outbox SET sent_at = now() WHERE id = (SELECT min(id) + 1 FROM outbox);",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    let hour = std::time::Duration::from_secs(3600);
    let deleted = swappo_matchmaking::outbox::purge_sent(&env.pool, hour)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert_eq!(env.count("outbox").await, 2);
    assert_eq!(
        env.count("pending").await,
        1,
        "a pending row is never purged"
    );
    assert_eq!(
        swappo_matchmaking::outbox::purge_sent(&env.pool, hour)
            .await
            .unwrap(),
        0
    );
}
