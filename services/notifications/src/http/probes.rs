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

/// Readiness: the database answers (with the schema migrated) and the consumer is
/// connected to the broker. 503 with the failing part otherwise.
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let database = if !state.readiness.schema_ready() {
        "migrating"
    } else {
        match tokio::time::timeout(DB_CHECK_TIMEOUT, state.storage.ping()).await {
            Ok(Ok(())) => "up",
            Ok(Err(_)) | Err(_) => "down",
        }
    };
    let broker = if state.readiness.broker_connected() {
        "connected"
    } else {
        "disconnected"
    };
    let ready = database == "up" && broker == "connected";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"ready": ready, "database": database, "broker": broker})),
    )
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
