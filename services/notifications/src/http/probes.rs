//! Liveness, readiness and metrics.
use super::AppState;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::time::Duration;

/// Longest a readiness check waits for the database: well inside a Kubernetes probe's
/// timeout, so a hung database reads as "down" rather than as a probe timeout.
const DB_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
}

/// Liveness: the process serves HTTP. Never checks dependencies, so an outage of the
/// database or broker does not get the pod restarted.
async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: what this pod can serve. Ready (200) when the API can answer: the schema is
/// migrated and the API's database pool answers. The consumer is reported beside it, not
/// gating it: a broker outage, or a consumer waiting out a database that refuses writes
/// (read-only, full), leaves the read API serving. 503 with the failing part otherwise.
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let database = if !state.readiness.schema_ready() {
        "migrating"
    } else {
        match tokio::time::timeout(DB_CHECK_TIMEOUT, state.storage.ping()).await {
            Ok(Ok(())) => "up",
            Ok(Err(_)) | Err(_) => "down",
        }
    };
    let connected = state.readiness.broker_connected();
    let broker = if connected {
        "connected"
    } else {
        "disconnected"
    };
    let waiting = state.readiness.consumer_waiting();
    let consumer = match (&waiting, connected) {
        (Some(_), _) => "waiting_for_database",
        (None, true) => "consuming",
        (None, false) => "not_consuming",
    };
    let ready = database == "up";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body =
        json!({"ready": ready, "database": database, "broker": broker, "consumer": consumer});
    if let Some((since, reason)) = waiting {
        body["consumer_waiting_seconds"] = json!(since.as_secs());
        body["consumer_waiting_reason"] = json!(reason);
    }
    (status, Json(body))
}

/// Prometheus text exposition.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
