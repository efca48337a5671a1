//! `/health` (the process answers), `/ready` (the database answers; the broker is reported
//! but never makes the service unready: requests do not depend on it) and `/metrics`.
use super::AppState;
use crate::outbox;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::time::Duration;

/// How long `/ready` and `/metrics` wait for the database: below the usual 5 s probe
/// timeout, so a hung database makes the probe fail clearly instead of timing out.
const DB_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The probe and metrics routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn ready(State(s): State<AppState>) -> impl IntoResponse {
    let db = tokio::time::timeout(
        DB_CHECK_TIMEOUT,
        sqlx::query("SELECT 1").execute(s.store.pool()),
    )
    .await;
    let db_up = matches!(db, Ok(Ok(_)));
    let broker = match &s.broker {
        None => "disabled",
        Some(b) if b.is_connected() => "connected",
        Some(_) => "disconnected",
    };
    let (status, word) = if db_up {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    };
    let body = json!({
        "status": word,
        "database": if db_up { "up" } else { "down" },
        "broker": broker,
    });
    (status, Json(body))
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    // The backlog is counted at scrape time; if the database does not answer the gauges keep
    // their last values and the scrape still succeeds.
    if let Ok(Ok(b)) = tokio::time::timeout(DB_CHECK_TIMEOUT, outbox::backlog(s.store.pool())).await
    {
        s.metrics.set_backlog(b);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}
