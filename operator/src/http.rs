//! The HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (the process serves),
//! `/readyz` (the API server answered this replica).
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State as Extract;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Shared state of the endpoints.
#[derive(Clone, Default)]
pub struct State {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

impl State {
    /// State serving `metrics`, not ready yet.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            ready: Arc::default(),
        }
    }

    /// Marks this replica ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

/// The router.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(Extract(state): Extract<State>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn readyz(Extract(state): Extract<State>) -> impl IntoResponse {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the API server has not answered yet",
        )
    }
}

/// Serves on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, state: State, shutdown: CancellationToken) -> Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(Error::Http)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn health_metrics_and_readiness_answer_over_http() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = State::new(Arc::new(Metrics::default()));
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, state.clone(), shutdown.clone()));
        let get = |path: &str| reqwest::get(format!("{base}{path}"));
        assert_eq!(get("/healthz").await.unwrap().status(), 200);
        assert_eq!(get("/readyz").await.unwrap().status(), 503);
        state.set_ready(true);
        assert_eq!(get("/readyz").await.unwrap().status(), 200);
        let body = get("/metrics").await.unwrap().text().await.unwrap();
        assert!(body.contains("swappo_operator_reconciles_total"), "{body}");
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }
}
