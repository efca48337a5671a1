//! Shared set-up of the integration tests: a private database, the service in-process on a
//! free port, and small HTTP helpers.
#![allow(dead_code)]
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::{PgPool, Row};
use swappo_matchmaking::{Service, migrate, serve};
use swappo_testkit::TestDb;
use tokio_util::sync::CancellationToken;

/// Logs of the code under test when `RUST_LOG` is set (e.g. `RUST_LOG=swappo_matchmaking=debug`);
/// silent otherwise: the expected connection errors of the outage tests are noise.
pub fn init_logs() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

/// One running service instance.
pub struct Instance {
    pub base: String,
    pub service_metrics: std::sync::Arc<swappo_matchmaking::metrics::Metrics>,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Instance {
    /// Serves `service` on 127.0.0.1 with a free port.
    pub async fn start(service: &Service) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, service.router(), shutdown.clone()));
        Self {
            base,
            service_metrics: service.metrics(),
            shutdown,
            server,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.unwrap().unwrap();
    }
}

/// A database with the schema and one instance without a relay.
pub struct Env {
    pub db: TestDb,
    pub pool: PgPool,
    pub api: Api,
    pub instance: Instance,
}

impl Env {
    pub async fn start() -> Self {
        let db = TestDb::new("mm_").await;
        let pool = pool(&db).await;
        let service = Service::new(pool.clone());
        let instance = Instance::start(&service).await;
        let api = Api::new(&instance.base);
        Self {
            db,
            pool,
            api,
            instance,
        }
    }

    /// Outbox rows about `offer_id`: (event type, recipient), oldest first.
    pub async fn events_of(&self, offer_id: i64) -> Vec<(String, String)> {
        events_of(&self.pool, offer_id).await
    }

    pub async fn count(&self, table: &str) -> i64 {
        count(&self.pool, table).await
    }
}

pub async fn pool(db: &TestDb) -> PgPool {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect(db.url())
        .await
        .unwrap();
    migrate(&pool).await.unwrap();
    pool
}

pub async fn events_of(pool: &PgPool, offer_id: i64) -> Vec<(String, String)> {
    sqlx::query(
        "SELECT payload->>'type' AS t, payload->>'user_id' AS u FROM outbox \
         WHERE (payload->>'related_offer_id')::bigint = $1 ORDER BY id",
    )
    .bind(offer_id)
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get("t"), r.get("u")))
    .collect()
}

pub async fn count(pool: &PgPool, table: &str) -> i64 {
    let sql = match table {
        "outbox" => "SELECT count(*) FROM outbox",
        "trade_offers" => "SELECT count(*) FROM trade_offers",
        "pending" => "SELECT count(*) FROM outbox WHERE sent_at IS NULL",
        other => panic!("unknown table {other}"),
    };
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// A thin JSON client for the API.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_string(),
            http: reqwest::Client::new(),
        }
    }

    /// Sends a request with an optional JSON body; returns the status and the JSON body
    /// (`Value::Null` when empty; panics on a non-JSON body, which is itself a bug).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{path}: body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, value)
    }

    /// Sends a raw body with the given content type.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .body(body.to_string());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let value = resp.json().await.unwrap_or(Value::Null);
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    /// Creates an offer from `proposer` to `receiver`; panics unless 201. Returns its id.
    pub async fn create(
        &self,
        proposer: &str,
        receiver: &str,
        offered: &[i64],
        requested: &[i64],
    ) -> i64 {
        let (status, body) = self
            .call(
                Method::POST,
                "/api/v2/offers",
                Some(json!({
                    "proposer_id": proposer, "receiver_id": receiver,
                    "offered_item_ids": offered, "requested_item_ids": requested,
                })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_i64().unwrap()
    }

    pub async fn patch(&self, id: i64, user: &str, status: &str) -> (StatusCode, Value) {
        self.call(
            Method::PATCH,
            &format!("/api/v2/offers/{id}?user_id={user}"),
            Some(json!({ "status": status })),
        )
        .await
    }

    /// Moves `id` to `status`, panicking unless 200.
    pub async fn must_patch(&self, id: i64, user: &str, status: &str) {
        let (code, body) = self.patch(id, user, status).await;
        assert_eq!(code, StatusCode::OK, "{id} -> {status} by {user}: {body}");
    }
}
