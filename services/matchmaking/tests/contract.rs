//! The original API's contract (issue 16): each call the Swappo front end makes
//! (`Swapppo/Swappo-FE` `services/matchmaking.service.ts`), sent as axios sends it, with the
//! answer checked against the front end's own TypeScript types
//! (`types/matchmaking.types.ts`, transcribed below as field names and JSON types); the
//! original's status codes and `{"detail"}` errors; CORS preflights as a browser sends them.
mod common;

use common::{Api, Env};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A JSON type as TypeScript names it in the front end's interfaces.
#[derive(Clone, Copy, Debug)]
enum Ts {
    Number,
    String,
    NumberArray,
    /// An ISO date string.
    Date,
}

/// `(field, type, optional)`; `field?: T` may be absent or null (pydantic sent null).
type Interface = &'static [(&'static str, Ts, bool)];

/// `interface TradeOfferResponse`.
const TRADE_OFFER_RESPONSE: Interface = &[
    ("id", Ts::Number, false),
    ("proposer_id", Ts::String, false),
    ("receiver_id", Ts::String, false),
    ("offered_item_ids", Ts::NumberArray, false),
    ("requested_item_ids", Ts::NumberArray, false),
    ("message", Ts::String, true),
    ("status", Ts::String, false),
    ("created_at", Ts::Date, false),
    ("updated_at", Ts::Date, false),
    ("responded_at", Ts::Date, true),
];

/// `interface MatchStatistics`.
const MATCH_STATISTICS: Interface = &[
    ("total_offers", Ts::Number, false),
    ("pending_offers", Ts::Number, false),
    ("accepted_offers", Ts::Number, false),
    ("rejected_offers", Ts::Number, false),
    ("completed_offers", Ts::Number, false),
];

/// `enum TradeOfferStatus`: what `status` holds.
const TRADE_OFFER_STATUSES: &[&str] =
    &["pending", "accepted", "rejected", "cancelled", "completed"];

#[track_caller]
fn assert_conforms(v: &Value, iface: Interface, what: &str) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{what}: expected an object, got {v}"));
    for (name, ts, optional) in iface {
        let ok = match (obj.get(*name), ts) {
            (None | Some(Value::Null), _) => *optional,
            (Some(Value::Number(_)), Ts::Number) => true,
            (Some(Value::String(_)), Ts::String) => true,
            (Some(Value::Array(a)), Ts::NumberArray) => a.iter().all(Value::is_number),
            (Some(Value::String(s)), Ts::Date) => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
            _ => false,
        };
        assert!(
            ok,
            "{what}: field `{name}` is not {ts:?} (optional: {optional}) in {v}"
        );
    }
    if let Some(status) = obj.get("status").and_then(Value::as_str) {
        assert!(
            TRADE_OFFER_STATUSES.contains(&status),
            "{what}: status {status}"
        );
    }
}

#[track_caller]
fn assert_offers(v: &Value, what: &str) -> Vec<i64> {
    let items = v
        .as_array()
        .unwrap_or_else(|| panic!("{what}: expected a bare JSON array, got {v}"));
    items
        .iter()
        .map(|o| {
            assert_conforms(o, TRADE_OFFER_RESPONSE, what);
            o["id"].as_i64().unwrap()
        })
        .collect()
}

#[track_caller]
fn assert_detail(got: &(StatusCode, Value), status: StatusCode, detail: &str) {
    assert_eq!(got.0, status, "body: {}", got.1);
    assert_eq!(got.1, json!({ "detail": detail }));
}

#[track_caller]
fn assert_unprocessable(got: &(StatusCode, Value), field: &str) {
    assert_eq!(got.0, StatusCode::UNPROCESSABLE_ENTITY, "body: {}", got.1);
    let loc = got.1["detail"][0]["loc"].as_array().expect("a loc list");
    assert_eq!(loc.last().unwrap(), field, "body: {}", got.1);
}

/// `createTradeOffer`: `POST /api/v1/offers`; panics unless 201. Returns the offer.
async fn create(
    api: &Api,
    proposer: &str,
    receiver: &str,
    offered: &[i64],
    requested: &[i64],
) -> Value {
    let got = api
        .call(
            Method::POST,
            "/api/v1/offers",
            Some(json!({
                "proposer_id": proposer, "receiver_id": receiver,
                "offered_item_ids": offered, "requested_item_ids": requested,
                "message": "Swap?",
            })),
        )
        .await;
    assert_eq!(got.0, StatusCode::CREATED, "body: {}", got.1);
    got.1
}

/// `updateTradeOfferStatus`: `PATCH /api/v1/offers/{id}` with `params: {user_id}`.
async fn update(api: &Api, id: i64, user: &str, status: &str) -> (StatusCode, Value) {
    api.call(
        Method::PATCH,
        &format!("/api/v1/offers/{id}?user_id={user}"),
        Some(json!({ "status": status })),
    )
    .await
}

#[tokio::test]
async fn create_and_get_trade_offer_answer_a_trade_offer_response() {
    let env = Env::start().await;
    let created = create(&env.api, "alice", "bob", &[1, 2], &[3]).await;
    assert_conforms(&created, TRADE_OFFER_RESPONSE, "createTradeOffer");
    assert_eq!(created["status"], "pending");
    assert_eq!(created["message"], "Swap?");
    let id = created["id"].as_i64().unwrap();
    let got = env.api.get(&format!("/api/v1/offers/{id}")).await;
    assert_eq!(got.0, StatusCode::OK);
    assert_conforms(&got.1, TRADE_OFFER_RESPONSE, "getTradeOffer");
    assert_detail(
        &env.api.get("/api/v1/offers/999999").await,
        StatusCode::NOT_FOUND,
        "Trade offer with ID 999999 not found",
    );
    assert_unprocessable(&env.api.get("/api/v1/offers/abc").await, "offer_id");
}

#[tokio::test]
async fn create_refuses_as_the_original_did_with_its_status_and_wording() {
    let env = Env::start().await;
    let post = |body: Value| {
        let api = env.api.clone();
        async move { api.call(Method::POST, "/api/v1/offers", Some(body)).await }
    };
    let offer = |p: &str, r: &str, o: Value, q: Value| json!({"proposer_id": p, "receiver_id": r, "offered_item_ids": o, "requested_item_ids": q});
    assert_detail(
        &post(offer("a", "a", json!([1]), json!([2]))).await,
        StatusCode::BAD_REQUEST,
        "Cannot create trade offer with yourself",
    );
    assert_detail(
        &post(offer("a", "b", json!([1, 1]), json!([2]))).await,
        StatusCode::BAD_REQUEST,
        "Duplicate item IDs in offered items",
    );
    assert_detail(
        &post(offer("a", "b", json!([1]), json!([2, 2]))).await,
        StatusCode::BAD_REQUEST,
        "Duplicate item IDs in requested items",
    );
    assert_detail(
        &post(offer("a", "b", json!([1, 2]), json!([2]))).await,
        StatusCode::BAD_REQUEST,
        "Same item cannot be both offered and requested",
    );
    assert_unprocessable(
        &post(offer("a", "b", json!([]), json!([2]))).await,
        "offered_item_ids",
    );
    assert_unprocessable(
        &post(offer("", "b", json!([1]), json!([2]))).await,
        "proposer_id",
    );
    let unreadable = post(json!({"proposer_id": "a"})).await;
    assert_eq!(
        unreadable.0,
        StatusCode::UNPROCESSABLE_ENTITY,
        "body: {}",
        unreadable.1
    );
    assert_eq!(env.count("trade_offers").await, 0, "nothing stored");
}

#[tokio::test]
async fn list_received_and_sent_are_bare_arrays_filtered_as_the_original_read_its_flags() {
    let env = Env::start().await;
    let a = create(&env.api, "alice", "bob", &[1], &[2]).await["id"]
        .as_i64()
        .unwrap();
    let b = create(&env.api, "bob", "alice", &[3], &[4]).await["id"]
        .as_i64()
        .unwrap();
    let c = create(&env.api, "carol", "alice", &[5], &[6]).await["id"]
        .as_i64()
        .unwrap();
    assert_eq!(
        update(&env.api, c, "alice", "accepted").await.0,
        StatusCode::OK
    );

    // axios serializes `params` as plain query parameters, booleans as true/false.
    let list = |q: &str| {
        let api = env.api.clone();
        let q = q.to_string();
        async move { api.get(&format!("/api/v1/offers?{q}")).await }
    };
    let all = list("user_id=alice").await;
    assert_eq!(assert_offers(&all.1, "listTradeOffers"), vec![c, b, a]);
    let proposer = list("user_id=alice&as_proposer=true").await;
    assert_eq!(assert_offers(&proposer.1, "listTradeOffers"), vec![a]);
    let receiver = list("user_id=alice&as_receiver=true&limit=20&offset=0").await;
    assert_eq!(assert_offers(&receiver.1, "listTradeOffers"), vec![c, b]);
    // `as_proposer=false` alone did not narrow the original's list.
    let both = list("user_id=alice&as_proposer=false").await;
    assert_eq!(assert_offers(&both.1, "listTradeOffers"), vec![c, b, a]);
    let accepted = list("user_id=alice&status=accepted").await;
    assert_eq!(assert_offers(&accepted.1, "listTradeOffers"), vec![c]);
    assert_unprocessable(&list("as_proposer=true").await, "user_id");
    assert_unprocessable(&list("user_id=alice&status=countered").await, "status");
    assert_unprocessable(&list("user_id=alice&limit=101").await, "limit");

    let received = env
        .api
        .get("/api/v1/offers/received/alice?limit=20&offset=0")
        .await;
    assert_eq!(assert_offers(&received.1, "getReceivedOffers"), vec![c, b]);
    let sent = env
        .api
        .get("/api/v1/offers/sent/alice?status=pending")
        .await;
    assert_eq!(assert_offers(&sent.1, "getSentOffers"), vec![a]);
}

#[tokio::test]
async fn by_item_returns_every_offer_of_the_item_not_a_page() {
    let env = Env::start().await;
    let mut made = Vec::new();
    for i in 0..25 {
        let o = create(&env.api, &format!("p{i}"), "owner", &[1000 + i], &[7]).await;
        made.push(o["id"].as_i64().unwrap());
    }
    let got = env.api.get("/api/v1/offers/by-item/7").await;
    assert_eq!(got.0, StatusCode::OK);
    let ids = assert_offers(&got.1, "getOffersByItem");
    assert_eq!(ids.len(), 25, "the original had no page size here");
    made.reverse();
    assert_eq!(ids, made, "newest first");
    let pending = env.api.get("/api/v1/offers/by-item/7?status=pending").await;
    assert_eq!(assert_offers(&pending.1, "getOffersByItem").len(), 25);
    let none = env
        .api
        .get("/api/v1/offers/by-item/7?status=accepted")
        .await;
    assert_eq!(none.1, json!([]));
}

#[tokio::test]
async fn a_party_asking_for_the_other_partys_change_is_400_and_a_stranger_403() {
    let env = Env::start().await;
    let id = create(&env.api, "alice", "bob", &[1], &[2]).await["id"]
        .as_i64()
        .unwrap();
    assert_detail(
        &update(&env.api, id, "alice", "accepted").await,
        StatusCode::BAD_REQUEST,
        "Invalid status transition for proposer",
    );
    assert_detail(
        &update(&env.api, id, "bob", "cancelled").await,
        StatusCode::BAD_REQUEST,
        "Invalid status transition for receiver",
    );
    assert_detail(
        &update(&env.api, id, "bob", "completed").await,
        StatusCode::BAD_REQUEST,
        "Invalid status transition for receiver",
    );
    assert_detail(
        &update(&env.api, id, "mallory", "accepted").await,
        StatusCode::FORBIDDEN,
        "User not authorized to modify this trade offer",
    );
    assert_unprocessable(&update(&env.api, id, "bob", "countered").await, "status");
    assert_detail(
        &update(&env.api, 999_999, "bob", "accepted").await,
        StatusCode::NOT_FOUND,
        "Trade offer with ID 999999 not found",
    );

    let accepted = update(&env.api, id, "bob", "accepted").await;
    assert_eq!(accepted.0, StatusCode::OK, "body: {}", accepted.1);
    assert_conforms(&accepted.1, TRADE_OFFER_RESPONSE, "updateTradeOfferStatus");
    assert_eq!(accepted.1["status"], "accepted");
    assert!(accepted.1["responded_at"].is_string());
    let completed = update(&env.api, id, "alice", "completed").await;
    assert_eq!(completed.1["status"], "completed");
}

#[tokio::test]
async fn delete_trade_offer_is_204_for_the_proposer_of_a_pending_offer_only() {
    let env = Env::start().await;
    let id = create(&env.api, "alice", "bob", &[1], &[2]).await["id"]
        .as_i64()
        .unwrap();
    let delete = |user: &str| {
        let api = env.api.clone();
        let path = format!("/api/v1/offers/{id}?user_id={user}");
        async move { api.call(Method::DELETE, &path, None).await }
    };
    assert_detail(
        &delete("bob").await,
        StatusCode::FORBIDDEN,
        "Only the proposer can delete a trade offer",
    );
    assert_eq!(delete("alice").await, (StatusCode::NO_CONTENT, Value::Null));
    assert_detail(
        &delete("alice").await,
        StatusCode::NOT_FOUND,
        &format!("Trade offer with ID {id} not found"),
    );
    let id = create(&env.api, "alice", "bob", &[1], &[2]).await["id"]
        .as_i64()
        .unwrap();
    assert_eq!(
        update(&env.api, id, "bob", "rejected").await.0,
        StatusCode::OK
    );
    let got = env
        .api
        .call(
            Method::DELETE,
            &format!("/api/v1/offers/{id}?user_id=alice"),
            None,
        )
        .await;
    assert_detail(
        &got,
        StatusCode::BAD_REQUEST,
        "Can only delete pending trade offers",
    );
}

#[tokio::test]
async fn user_statistics_have_the_front_ends_field_names_and_the_originals_counts() {
    let env = Env::start().await;
    let o1 = create(&env.api, "alice", "bob", &[1], &[2]).await["id"]
        .as_i64()
        .unwrap();
    let o2 = create(&env.api, "bob", "alice", &[3], &[4]).await["id"]
        .as_i64()
        .unwrap();
    let o3 = create(&env.api, "carol", "alice", &[5], &[6]).await["id"]
        .as_i64()
        .unwrap();
    create(&env.api, "alice", "dave", &[7], &[8]).await;
    create(&env.api, "eve", "frank", &[9], &[10]).await;
    update(&env.api, o1, "bob", "accepted").await;
    update(&env.api, o1, "bob", "completed").await;
    update(&env.api, o2, "alice", "rejected").await;
    update(&env.api, o3, "alice", "accepted").await;
    let got = env.api.get("/api/v1/statistics/alice").await;
    assert_eq!(got.0, StatusCode::OK);
    assert_conforms(&got.1, MATCH_STATISTICS, "getUserStatistics");
    assert_eq!(
        got.1,
        json!({"total_offers": 4, "pending_offers": 1, "accepted_offers": 1,
               "rejected_offers": 1, "completed_offers": 1})
    );
}

#[tokio::test]
async fn a_browser_preflight_from_any_origin_is_allowed_by_default() {
    let env = Env::start().await;
    let resp = env
        .api
        .http
        .request(Method::OPTIONS, format!("{}/api/v1/offers/1", env.api.base))
        .header("origin", "http://localhost:8081")
        .header("access-control-request-method", "PATCH")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "preflight answered {}",
        resp.status()
    );
    let h = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_ascii_lowercase())
            .unwrap_or_default()
    };
    assert_eq!(h("access-control-allow-origin"), "http://localhost:8081");
    assert!(h("access-control-allow-methods").contains("patch"));
    assert!(h("access-control-allow-headers").contains("content-type"));
    assert_eq!(h("access-control-allow-credentials"), "true");
}

#[tokio::test]
async fn our_own_shapes_stay_under_api_v2() {
    let env = Env::start().await;
    let id = env.api.create("alice", "bob", &[1], &[2]).await;
    let stats = env.api.get("/api/v2/statistics/alice").await;
    assert_eq!(stats.1["total_sent"], 1, "body: {}", stats.1);
    let (status, body) = env.api.patch(id, "alice", "accepted").await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "v2 keeps 403 for the other party's change"
    );
    assert!(body["error"]["code"].is_string());
}
