//! The original matchmaking's effects on other services (issue 16), each on only when
//! configured, against small stand-ins on 127.0.0.1 that record what they receive:
//! - the catalog check of a new offer's items (synchronous: it gates the create; 503 while
//!   the catalog does not answer);
//! - a chat room per accepted offer, delivered from the database until the chat service
//!   answers, never holding up the offer change. The chat outage is an [`OutageProxy`]
//!   that refuses connections until the test restores it.
mod common;

use axum::extract::{Path, State};
use axum::http::StatusCode as AxumStatus;
use axum::routing::{get, post};
use axum::{Json, Router};
use common::{Api, Instance};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use swappo_matchmaking::Service;
use swappo_matchmaking::catalog::Catalog;
use swappo_matchmaking::chat::ChatOptions;
use swappo_testkit::{OutageProxy, TestDb};
use tokio_util::sync::CancellationToken;

/// Failure guard for every wait (never a timing assertion).
const GUARD: Duration = Duration::from_secs(120);

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < GUARD, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Serves `router` on 127.0.0.1:<free port>.
async fn serve_stand_in(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// The catalog's item route: `GET /items/{id}` answers `{id, owner_id, status, ...}` or 404.
#[derive(Clone, Default)]
struct CatalogStandIn {
    items: Arc<HashMap<i64, (&'static str, &'static str)>>,
    requests: Arc<Mutex<Vec<i64>>>,
}

impl CatalogStandIn {
    async fn start(items: &[(i64, &'static str, &'static str)]) -> (Self, SocketAddr) {
        let me = Self {
            items: Arc::new(items.iter().map(|(id, o, s)| (*id, (*o, *s))).collect()),
            requests: Arc::default(),
        };
        async fn item(
            State(c): State<CatalogStandIn>,
            Path(id): Path<i64>,
        ) -> Result<Json<Value>, AxumStatus> {
            c.requests.lock().unwrap().push(id);
            let (owner, status) = c.items.get(&id).ok_or(AxumStatus::NOT_FOUND)?;
            Ok(Json(
                json!({"id": id, "name": "thing", "owner_id": owner, "status": status,
                           "category": "books", "image_urls": []}),
            ))
        }
        let router = Router::new()
            .route("/items/{id}", get(item))
            .with_state(me.clone());
        let addr = serve_stand_in(router).await;
        (me, addr)
    }

    fn looked_up(&self) -> Vec<i64> {
        let mut v = self.requests.lock().unwrap().clone();
        v.sort_unstable();
        v
    }
}

/// The chat service's `POST /api/v1/chat-rooms`: 201 with the room, or 400 "Chat room
/// already exists for trade offer N", as the original chat service answers.
#[derive(Clone, Default)]
struct ChatStandIn {
    rooms: Arc<Mutex<Vec<Value>>>,
    posts: Arc<Mutex<usize>>,
}

impl ChatStandIn {
    async fn start() -> (Self, SocketAddr) {
        let me = Self::default();
        async fn create(
            State(c): State<ChatStandIn>,
            Json(body): Json<Value>,
        ) -> (AxumStatus, Json<Value>) {
            *c.posts.lock().unwrap() += 1;
            let mut rooms = c.rooms.lock().unwrap();
            let offer = body["trade_offer_id"].clone();
            if rooms.iter().any(|r| r["trade_offer_id"] == offer) {
                return (
                    AxumStatus::BAD_REQUEST,
                    Json(
                        json!({"detail": format!("Chat room already exists for trade offer {offer}")}),
                    ),
                );
            }
            let room = json!({"id": rooms.len() + 1, "trade_offer_id": offer,
                              "user1_id": body["user1_id"], "user2_id": body["user2_id"],
                              "is_active": true});
            rooms.push(body);
            (AxumStatus::CREATED, Json(room))
        }
        let router = Router::new()
            .route("/api/v1/chat-rooms", post(create))
            .with_state(me.clone());
        let addr = serve_stand_in(router).await;
        (me, addr)
    }

    fn rooms_by_offer(&self) -> HashMap<i64, Vec<Value>> {
        let mut by: HashMap<i64, Vec<Value>> = HashMap::new();
        for r in self.rooms.lock().unwrap().iter() {
            by.entry(r["trade_offer_id"].as_i64().unwrap())
                .or_default()
                .push(r.clone());
        }
        by
    }
}

struct Running {
    api: Api,
    pool: PgPool,
    instance: Instance,
    shutdown: CancellationToken,
    relay: Option<tokio::task::JoinHandle<()>>,
    _db: TestDb,
}

impl Running {
    async fn start(catalog: Option<SocketAddr>, chat: Option<SocketAddr>) -> Self {
        common::init_logs();
        let db = TestDb::new("mm_integ_").await;
        let pool = common::pool(&db).await;
        let mut service = Service::new(pool.clone());
        if let Some(addr) = catalog {
            service.set_catalog(
                Catalog::new(&format!("http://{addr}"), Duration::from_secs(5)).unwrap(),
            );
        }
        let shutdown = CancellationToken::new();
        let relay = chat.map(|addr| {
            let mut options = ChatOptions::new(format!("http://{addr}"));
            // Short delays keep the test quick; the behaviour is the same at any scale.
            options.base_delay = Duration::from_millis(100);
            options.max_delay = Duration::from_secs(1);
            options.poll_interval = Duration::from_millis(100);
            let relay = service.chat_rooms(options).unwrap();
            tokio::spawn(relay.run(shutdown.clone()))
        });
        let instance = Instance::start(&service).await;
        Self {
            api: Api::new(&instance.base),
            pool,
            instance,
            shutdown,
            relay,
            _db: db,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        if let Some(r) = self.relay {
            tokio::time::timeout(GUARD, r).await.unwrap().unwrap();
        }
        self.instance.stop().await;
    }

    async fn post_offer(
        &self,
        proposer: &str,
        receiver: &str,
        offered: &[i64],
        requested: &[i64],
    ) -> (StatusCode, Value) {
        self.api
            .call(
                Method::POST,
                "/api/v1/offers",
                Some(json!({"proposer_id": proposer, "receiver_id": receiver,
                            "offered_item_ids": offered, "requested_item_ids": requested})),
            )
            .await
    }

    /// `(trade_offer_id, attempts, outcome)` of every chat-room request.
    async fn requests(&self) -> Vec<(i64, i32, Option<String>)> {
        sqlx::query_as(
            "SELECT trade_offer_id, attempts, outcome FROM chat_room_requests ORDER BY trade_offer_id",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }
}

#[tokio::test]
async fn with_a_catalog_offers_are_created_only_for_existing_active_items_of_their_sides() {
    let (catalog, addr) = CatalogStandIn::start(&[
        (1, "alice", "active"),
        (2, "alice", "active"),
        (3, "bob", "active"),
        (4, "bob", "swapped"),
    ])
    .await;
    let run = Running::start(Some(addr), None).await;

    let (status, body) = run.post_offer("alice", "bob", &[1, 2], &[3]).await;
    assert_eq!(status, StatusCode::CREATED, "body: {body}");
    assert_eq!(catalog.looked_up(), vec![1, 2, 3], "each item looked up");

    let refusals = [
        (
            &[1][..],
            &[99][..],
            StatusCode::NOT_FOUND,
            "Items not found: [99]",
        ),
        (
            &[1][..],
            &[4][..],
            StatusCode::BAD_REQUEST,
            "Items are not active: [4]",
        ),
        (
            &[3][..],
            &[1][..],
            StatusCode::FORBIDDEN,
            "Proposer does not own offered items: [3]",
        ),
        (
            &[1][..],
            &[2][..],
            StatusCode::FORBIDDEN,
            "Receiver does not own requested items: [2]",
        ),
    ];
    for (offered, requested, code, detail) in refusals {
        let got = run.post_offer("alice", "bob", offered, requested).await;
        assert_eq!(got, (code, json!({ "detail": detail })));
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM trade_offers")
        .fetch_one(&run.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1, "no refused offer was stored");
    run.stop().await;
}

#[tokio::test]
async fn while_the_catalog_does_not_answer_a_create_is_a_clear_503_and_stores_nothing() {
    let (catalog, addr) =
        CatalogStandIn::start(&[(1, "alice", "active"), (2, "bob", "active")]).await;
    let proxy = OutageProxy::start(addr).await;
    let run = Running::start(Some(proxy.addr()), None).await;
    proxy.cut();
    let got = run.post_offer("alice", "bob", &[1], &[2]).await;
    assert_eq!(
        got,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"detail": "Catalog service unavailable"})
        )
    );
    assert!(catalog.looked_up().is_empty());
    // Our own API gates the same way, in its own error shape.
    let (status, body) = run
        .api
        .call(
            Method::POST,
            "/api/v2/offers",
            Some(json!({"proposer_id": "alice", "receiver_id": "bob",
                        "offered_item_ids": [1], "requested_item_ids": [2]})),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "catalog_unavailable");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM trade_offers")
        .fetch_one(&run.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);
    proxy.restore();
    let got = run.post_offer("alice", "bob", &[1], &[2]).await;
    assert_eq!(got.0, StatusCode::CREATED, "body: {}", got.1);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_accepted_while_the_chat_service_is_down_each_get_their_room_once_afterwards() {
    const OFFERS: i64 = 12;
    let (chat, addr) = ChatStandIn::start().await;
    let proxy = OutageProxy::start(addr).await;
    proxy.cut();
    let down_since = Instant::now();
    let run = Running::start(None, Some(proxy.addr())).await;

    let mut accepted = HashMap::new();
    for i in 0..OFFERS {
        let (proposer, receiver) = (format!("p{i}"), format!("r{i}"));
        let (status, offer) = run
            .post_offer(&proposer, &receiver, &[100 + i], &[200 + i])
            .await;
        assert_eq!(status, StatusCode::CREATED, "body: {offer}");
        let id = offer["id"].as_i64().unwrap();
        let (status, body) = run
            .api
            .call(
                Method::PATCH,
                &format!("/api/v1/offers/{id}?user_id={receiver}"),
                Some(json!({"status": "accepted"})),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "the chat outage never blocks the accept: {body}"
        );
        accepted.insert(id, (proposer, receiver));
    }
    // A rejected offer gets no room.
    let (_, other) = run.post_offer("x", "y", &[1], &[2]).await;
    let other = other["id"].as_i64().unwrap();
    run.api
        .call(
            Method::PATCH,
            &format!("/api/v1/offers/{other}?user_id=y"),
            Some(json!({"status": "rejected"})),
        )
        .await;

    // Every request has been tried against the dead chat service and is still pending.
    eventually("every request tried at least twice", || async {
        let r = run.requests().await;
        (r.len() == OFFERS as usize && r.iter().all(|(_, a, o)| *a >= 2 && o.is_none()))
            .then_some(())
    })
    .await;
    // The outage lasts 30 s (its length, not something asserted on).
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down_since.elapsed())).await;
    assert!(
        chat.rooms.lock().unwrap().is_empty(),
        "nothing reached the chat service"
    );
    proxy.restore();

    eventually("every room created", || async {
        let r = run.requests().await;
        r.iter()
            .all(|(_, _, o)| o.as_deref() == Some("created"))
            .then_some(())
    })
    .await;
    let rooms = chat.rooms_by_offer();
    assert_eq!(
        rooms.len(),
        OFFERS as usize,
        "one room per accepted offer, none for the rejected"
    );
    for (id, (proposer, receiver)) in &accepted {
        let got = &rooms[id];
        assert_eq!(got.len(), 1, "offer {id}: exactly one room");
        assert_eq!(
            got[0],
            json!({"trade_offer_id": id, "user1_id": proposer, "user2_id": receiver})
        );
    }
    assert_eq!(
        *chat.posts.lock().unwrap(),
        OFFERS as usize,
        "one successful post each"
    );
    run.stop().await;
}

#[tokio::test]
async fn a_room_the_chat_service_already_has_counts_as_created_and_is_not_made_twice() {
    let (chat, addr) = ChatStandIn::start().await;
    let proxy = OutageProxy::start(addr).await;
    proxy.cut();
    let run = Running::start(None, Some(proxy.addr())).await;
    let (_, offer) = run.post_offer("alice", "bob", &[1], &[2]).await;
    let id = offer["id"].as_i64().unwrap();
    let (status, _) = run
        .api
        .call(
            Method::PATCH,
            &format!("/api/v1/offers/{id}?user_id=bob"),
            Some(json!({"status": "accepted"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // As if an earlier try reached the chat service and only its answer was lost.
    chat.rooms
        .lock()
        .unwrap()
        .push(json!({"trade_offer_id": id, "user1_id": "alice", "user2_id": "bob"}));
    proxy.restore();
    eventually("the request finished", || async {
        let r = run.requests().await;
        (r.first()?.2.is_some()).then_some(())
    })
    .await;
    assert_eq!(run.requests().await[0].2.as_deref(), Some("existed"));
    assert_eq!(chat.rooms_by_offer()[&id].len(), 1);
    run.stop().await;
}

#[tokio::test]
async fn without_a_chat_service_configured_accepting_requests_no_room() {
    let run = Running::start(None, None).await;
    let (_, offer) = run.post_offer("alice", "bob", &[1], &[2]).await;
    let id = offer["id"].as_i64().unwrap();
    let (status, _) = run
        .api
        .call(
            Method::PATCH,
            &format!("/api/v1/offers/{id}?user_id=bob"),
            Some(json!({"status": "accepted"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(run.requests().await.is_empty());
    run.stop().await;
}
