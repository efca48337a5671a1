//! `/api/v2/notifications`: a user's notifications, read marks, deletion, direct creation,
//! in this service's own shapes (richer than the original's, which `/api/v1` keeps:
//! [`super::compat`]). The list is an object with `next_cursor` for keyset paging; stats
//! count per type; errors are `{"error": {"code", "message", "field"}}`.
//!
//! The routes act for the user named in the path or in `?user_id=`; a notification id that
//! is not that user's answers 404 exactly like one that does not exist.
use super::AppState;
use super::extract::{Json, Path, Query};
use crate::error::{ApiError, Result};
use crate::keyset;
use crate::params::{self, CreateBody, MarkReadBody, RawListQuery, RawUserQuery};
use crate::storage::{MarkRead, Notification};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, patch, post};
use serde_json::{Value, json};

pub(super) fn router() -> Router<AppState> {
    // One parameter name per path position: the router cannot tell `{user_id}` and `{id}`
    // apart in the same place, so `{key}` is a user id or a notification id by route.
    Router::new()
        .route("/api/v2/notifications", post(create))
        .route("/api/v2/notifications/mark-read", patch(mark_many_read))
        .route("/api/v2/notifications/user/{key}", delete(delete_all))
        .route("/api/v2/notifications/{key}", get(list).delete(delete_one))
        .route(
            "/api/v2/notifications/{key}/unread-count",
            get(unread_count),
        )
        .route("/api/v2/notifications/{key}/stats", get(stats))
        .route("/api/v2/notifications/{key}/read", patch(mark_read))
}

/// `GET /api/v2/notifications/{user_id}?unread_only&type&limit&offset|cursor`: newest first.
async fn list(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    Query(raw): Query<RawListQuery>,
) -> Result<axum::Json<Value>> {
    let user_id = params::user_id("user_id", Some(&user_id))?;
    let q = params::list_query(&raw)?;
    let cursor = keyset::cursor_param(&q, raw.cursor.as_deref())?;
    let (rows, next) = keyset::page(&state.storage, &user_id, &q, cursor).await?;
    Ok(axum::Json(json!({
        "user_id": user_id,
        "notifications": rows,
        "limit": q.limit,
        "offset": q.offset,
        "unread_only": q.unread_only,
        "next_cursor": next.map(|c| c.encode()),
    })))
}

/// `GET /api/v2/notifications/{user_id}/unread-count`.
async fn unread_count(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> Result<axum::Json<Value>> {
    let user_id = params::user_id("user_id", Some(&user_id))?;
    let n = state.storage.unread_count(&user_id).await?;
    Ok(axum::Json(json!({"user_id": user_id, "unread_count": n})))
}

/// `GET /api/v2/notifications/{user_id}/stats`: total, unread, read, per type.
async fn stats(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> Result<axum::Json<Value>> {
    let user_id = params::user_id("user_id", Some(&user_id))?;
    let s = state.storage.stats(&user_id).await?;
    Ok(axum::Json(json!({
        "user_id": user_id,
        "total": s.total,
        "unread": s.unread,
        "read": s.read,
        "by_type": s.by_type,
    })))
}

/// `PATCH /api/v2/notifications/mark-read?user_id=` with `{"notification_ids": [..]}`:
/// all or nothing; ids that are not the user's make it a 404 naming them.
async fn mark_many_read(
    State(state): State<AppState>,
    Query(user): Query<RawUserQuery>,
    Json(body): Json<MarkReadBody>,
) -> Result<axum::Json<Value>> {
    let user_id = params::user_id("user_id", user.user_id.as_deref())?;
    let ids = params::mark_read_ids(&body)?;
    match state.storage.mark_many_read(&user_id, &ids).await? {
        MarkRead::Marked { newly_read } => Ok(axum::Json(json!({
            "user_id": user_id,
            "notification_ids": ids,
            "newly_read": newly_read,
        }))),
        MarkRead::NotFound(missing) => Err(ApiError::NotFound(format!(
            "notifications {missing:?} not found for user `{user_id}`; none were marked read"
        ))),
    }
}

/// `PATCH /api/v2/notifications/{id}/read?user_id=`: the updated notification.
async fn mark_read(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(user): Query<RawUserQuery>,
) -> Result<axum::Json<Notification>> {
    let id = params::notification_id(&id)?;
    let user_id = params::user_id("user_id", user.user_id.as_deref())?;
    state
        .storage
        .mark_read(&user_id, id)
        .await?
        .map(axum::Json)
        .ok_or_else(|| not_found(id, &user_id))
}

/// `DELETE /api/v2/notifications/{id}?user_id=`: 204.
async fn delete_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(user): Query<RawUserQuery>,
) -> Result<StatusCode> {
    let id = params::notification_id(&id)?;
    let user_id = params::user_id("user_id", user.user_id.as_deref())?;
    if state.storage.delete(&user_id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(id, &user_id))
    }
}

/// `DELETE /api/v2/notifications/user/{user_id}`: how many were deleted.
async fn delete_all(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> Result<axum::Json<Value>> {
    let user_id = params::user_id("user_id", Some(&user_id))?;
    let deleted = state.storage.delete_all(&user_id).await?;
    Ok(axum::Json(json!({"user_id": user_id, "deleted": deleted})))
}

/// `POST /api/v2/notifications`: 201 with the stored notification; 409 when the event id
/// is already stored.
async fn create(
    State(state): State<AppState>,
    Json(body): Json<CreateBody>,
) -> Result<(StatusCode, axum::Json<Notification>)> {
    let new = params::new_notification(body)?;
    match state.storage.create(&new).await? {
        Some(row) => Ok((StatusCode::CREATED, axum::Json(row))),
        None => Err(ApiError::Conflict(format!(
            "a notification with event id {} already exists",
            new.event.id
        ))),
    }
}

fn not_found(id: i64, user_id: &str) -> ApiError {
    ApiError::NotFound(format!("notification {id} not found for user `{user_id}`"))
}
