//! `/api/v2/statistics`: a user's offer counts.
use super::AppState;
use super::extract::ApiPath;
use crate::error::Result;
use crate::offer::validate_user_id;
use crate::store::Statistics;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

/// The statistics route.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v2/statistics/{user_id}", get(statistics))
}

async fn statistics(
    State(s): State<AppState>,
    ApiPath(user_id): ApiPath<String>,
) -> Result<Json<Statistics>> {
    validate_user_id("user_id", &user_id)?;
    Ok(Json(s.store.statistics(&user_id).await?))
}
