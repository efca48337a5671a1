//! The HTTP API: one module per route group, each exposing `router()`.
pub mod compat;
pub mod cors;
pub mod extract;
pub mod health;
pub mod offers;
pub mod statistics;

use crate::catalog::Catalog;
use crate::error::ErrorCode;
use crate::metrics::Metrics;
use crate::relay::BrokerStatus;
use crate::store::Store;
use axum::Router;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Offers and their outbox.
    pub store: Store,
    /// The service's metrics.
    pub metrics: Arc<Metrics>,
    /// The relay's broker connection; `None` when this instance runs no relay.
    pub broker: Option<Arc<BrokerStatus>>,
    /// The catalog that new offers are checked against; `None`: no check.
    pub catalog: Option<Catalog>,
}

/// The whole API: the original's routes and shapes under `/api/v1` ([`compat`]), ours
/// under `/api/v2`, the probes.
pub fn router(state: AppState) -> Router {
    let metrics = state.metrics.clone();
    Router::new()
        .merge(compat::router())
        .merge(offers::router())
        .merge(statistics::router())
        .merge(health::router())
        .fallback(not_found)
        // One span per request (method, path, status, latency) at debug level.
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(axum::middleware::map_response(move |resp: Response| {
            let metrics = metrics.clone();
            async move {
                if let Some(ErrorCode(code)) = resp.extensions().get::<ErrorCode>() {
                    metrics.http_error(code);
                }
                resp
            }
        }))
        .with_state(state)
}

async fn not_found() -> Response {
    crate::error::Error::NoRoute.into_response()
}
