//! `/api/v1/notifications`: the original Python service's routes with its request and
//! response shapes, which the Swappo front end (`services/notification.service.ts`) and the
//! chat service call unchanged.
//!
//! What differs from our own API (`/api/v2`, [`super::notifications`]), and why it is kept
//! here as the original had it:
//! - the list is a bare JSON array (the front end renders `response.data` as the list);
//! - stats are `total_notifications/unread_notifications/read_notifications`;
//! - `mark-read` marks the ids it finds (404 only when it finds none) and answers
//!   `{"marked_count", "notification_ids"}`;
//! - deleting all of a user's notifications answers 204 without a body;
//! - errors are FastAPI's: `{"detail": "..."}`, and 422 with `{"detail": [{"loc", "msg",
//!   "type"}]}` for a parameter or body that does not validate.
//!
//! Additions that old clients ignore: every notification also carries `event_id` and
//! `occurred_at`; the list takes an optional `cursor` (keyset paging, [`crate::keyset`]) and
//! names the next page's cursor in the `X-Next-Cursor` header.
use super::AppState;
use crate::error::ApiError;
use crate::keyset;
use crate::params::{self, CreateBody, MarkReadBody, RawListQuery, RawUserQuery};
use crate::storage::Notification;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Response header naming the cursor of the next page of a list (absent on a last page).
pub const NEXT_CURSOR: HeaderName = HeaderName::from_static("x-next-cursor");

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/api/v1/notifications", post(create))
        .route("/api/v1/notifications/mark-read", patch(mark_many_read))
        .route("/api/v1/notifications/user/{key}", delete(delete_all))
        .route("/api/v1/notifications/{key}", get(list).delete(delete_one))
        .route(
            "/api/v1/notifications/{key}/unread-count",
            get(unread_count),
        )
        .route("/api/v1/notifications/{key}/stats", get(stats))
        .route("/api/v1/notifications/{key}/read", patch(mark_read))
}

/// An error in FastAPI's shape.
#[derive(Debug)]
pub enum Legacy {
    /// `{"detail": message}` with this status.
    Detail(StatusCode, String),
    /// 422 `{"detail": [{"loc": [where, field], "msg", "type": "value_error"}]}`.
    Invalid {
        /// `query`, `path` or `body`, as FastAPI names the request part.
        part: &'static str,
        /// The parameter or field.
        field: String,
        /// What is wrong.
        message: String,
    },
}

type LegacyResult<T> = Result<T, Legacy>;

impl Legacy {
    fn not_found(id: i64) -> Self {
        Legacy::Detail(
            StatusCode::NOT_FOUND,
            format!("Notification with ID {id} not found"),
        )
    }

    /// Our error as the original would have reported it; `part` is where its fields live.
    fn from_api(e: ApiError, part: &'static str) -> Self {
        match e {
            ApiError::InvalidField { field, message } => Legacy::Invalid {
                part,
                field,
                message,
            },
            ApiError::Unreadable { message, .. } => Legacy::Invalid {
                part: "body",
                field: String::new(),
                message,
            },
            other => Legacy::Detail(other.status(), other.public_message()),
        }
    }
}

impl From<crate::storage::StorageError> for Legacy {
    fn from(e: crate::storage::StorageError) -> Self {
        Legacy::from_api(ApiError::Storage(e), "body")
    }
}

impl IntoResponse for Legacy {
    fn into_response(self) -> Response {
        match self {
            Legacy::Detail(status, detail) => {
                if status.is_server_error() {
                    tracing::error!(%status, %detail, "request failed");
                }
                (status, axum::Json(json!({ "detail": detail }))).into_response()
            }
            Legacy::Invalid {
                part,
                field,
                message,
            } => {
                let loc: Vec<&str> = [part, field.as_str()]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect();
                let body = json!({"detail": [{"loc": loc, "msg": message, "type": "value_error"}]});
                (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response()
            }
        }
    }
}

/// A JSON body whose rejection is FastAPI's 422.
pub struct LegacyJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for LegacyJson<T> {
    type Rejection = Legacy;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|axum::Json(v)| LegacyJson(v))
            .map_err(|r: JsonRejection| Legacy::Invalid {
                part: "body",
                field: String::new(),
                message: r.body_text(),
            })
    }
}

/// `GET /`: the original's service banner.
async fn root() -> axum::Json<Value> {
    axum::Json(json!({
        "service": "Swappo Notifications Service",
        "status": "running",
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// The original's `NotificationCreate`: unknown fields are ignored, as pydantic did.
#[derive(Debug, Deserialize)]
struct CreateLegacy {
    user_id: String,
    #[serde(rename = "type")]
    event_type: String,
    title: String,
    body: String,
    related_user_id: Option<String>,
    related_item_id: Option<i64>,
    related_offer_id: Option<i64>,
}

/// `POST /api/v1/notifications`: 201 with the stored notification (the chat service's call).
async fn create(
    State(state): State<AppState>,
    LegacyJson(body): LegacyJson<CreateLegacy>,
) -> LegacyResult<(StatusCode, axum::Json<Notification>)> {
    let new = params::new_notification(CreateBody {
        id: None,
        user_id: body.user_id,
        event_type: body.event_type,
        title: body.title,
        body: body.body,
        related_user_id: body.related_user_id,
        related_offer_id: body.related_offer_id,
        related_item_id: body.related_item_id,
        occurred_at: None,
    })
    .map_err(|e| Legacy::from_api(e, "body"))?;
    // A fresh event id each time, as the original made a fresh row each time.
    let row = state.storage.create(&new).await?.ok_or_else(|| {
        Legacy::Detail(StatusCode::CONFLICT, "notification already exists".into())
    })?;
    Ok((StatusCode::CREATED, axum::Json(row)))
}

/// `GET /api/v1/notifications/{user_id}?unread_only&limit&offset[&cursor]`: a bare array,
/// newest first.
async fn list(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    Query(raw): Query<RawListQuery>,
) -> LegacyResult<Response> {
    let user_id = params::user_id("user_id", Some(&user_id)).map_err(path)?;
    // The original knew no `type` filter; it is ignored here as FastAPI ignored it.
    let raw = RawListQuery {
        event_type: None,
        ..raw
    };
    let q = params::list_query(&raw).map_err(query)?;
    let cursor = keyset::cursor_param(&q, raw.cursor.as_deref()).map_err(query)?;
    let (rows, next) = keyset::page(&state.storage, &user_id, &q, cursor).await?;
    let mut resp = axum::Json(rows).into_response();
    if let Some(next) = next
        && let Ok(v) = HeaderValue::from_str(&next.encode())
    {
        resp.headers_mut().insert(NEXT_CURSOR, v);
    }
    Ok(resp)
}

/// `GET /api/v1/notifications/{user_id}/unread-count`: `{"unread_count"}`.
async fn unread_count(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> LegacyResult<axum::Json<Value>> {
    let user_id = params::user_id("user_id", Some(&user_id)).map_err(path)?;
    let n = state.storage.unread_count(&user_id).await?;
    Ok(axum::Json(json!({ "unread_count": n })))
}

/// `GET /api/v1/notifications/{user_id}/stats`.
async fn stats(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> LegacyResult<axum::Json<Value>> {
    let user_id = params::user_id("user_id", Some(&user_id)).map_err(path)?;
    let s = state.storage.stats(&user_id).await?;
    Ok(axum::Json(json!({
        "total_notifications": s.total,
        "unread_notifications": s.unread,
        "read_notifications": s.read,
    })))
}

/// `PATCH /api/v1/notifications/mark-read?user_id=` with `{"notification_ids"}`: marks the
/// user's notifications among the ids; 404 only when none is the user's.
async fn mark_many_read(
    State(state): State<AppState>,
    Query(user): Query<RawUserQuery>,
    LegacyJson(body): LegacyJson<MarkReadBody>,
) -> LegacyResult<axum::Json<Value>> {
    let user_id = params::user_id("user_id", user.user_id.as_deref()).map_err(query)?;
    let ids = params::mark_read_ids(&body).map_err(|e| Legacy::from_api(e, "body"))?;
    let marked = state.storage.mark_found_read(&user_id, &ids).await?;
    if marked.is_empty() {
        return Err(Legacy::Detail(
            StatusCode::NOT_FOUND,
            "No notifications found for the given IDs".into(),
        ));
    }
    Ok(axum::Json(json!({
        "marked_count": marked.len(),
        "notification_ids": marked,
    })))
}

/// `PATCH /api/v1/notifications/{id}/read?user_id=`: the updated notification.
async fn mark_read(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(user): Query<RawUserQuery>,
) -> LegacyResult<axum::Json<Notification>> {
    let id = notification_id(&id)?;
    let user_id = params::user_id("user_id", user.user_id.as_deref()).map_err(query)?;
    state
        .storage
        .mark_read(&user_id, id)
        .await?
        .map(axum::Json)
        .ok_or_else(|| Legacy::not_found(id))
}

/// `DELETE /api/v1/notifications/{id}?user_id=`: 204.
async fn delete_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(user): Query<RawUserQuery>,
) -> LegacyResult<StatusCode> {
    let id = notification_id(&id)?;
    let user_id = params::user_id("user_id", user.user_id.as_deref()).map_err(query)?;
    if state.storage.delete(&user_id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Legacy::not_found(id))
    }
}

/// `DELETE /api/v1/notifications/user/{user_id}`: 204 without a body.
async fn delete_all(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> LegacyResult<StatusCode> {
    let user_id = params::user_id("user_id", Some(&user_id)).map_err(path)?;
    state.storage.delete_all(&user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The `{notification_id}` path segment, named as the original named it.
fn notification_id(raw: &str) -> Result<i64, Legacy> {
    params::notification_id(raw).map_err(|e| match path(e) {
        Legacy::Invalid { part, message, .. } => Legacy::Invalid {
            part,
            field: "notification_id".into(),
            message,
        },
        other => other,
    })
}

fn path(e: ApiError) -> Legacy {
    Legacy::from_api(e, "path")
}

fn query(e: ApiError) -> Legacy {
    Legacy::from_api(e, "query")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(l: Legacy) -> (StatusCode, Value) {
        let resp = l.into_response();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_parameter_that_does_not_validate_is_fastapis_422_naming_it() {
        let e = ApiError::invalid("limit", "must be an integer from 1 to 100, got `0`");
        let (status, body) = body_of(Legacy::from_api(e, "query")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["detail"][0]["loc"], json!(["query", "limit"]));
        assert_eq!(body["detail"][0]["type"], "value_error");
    }

    #[tokio::test]
    async fn a_database_failure_is_a_detail_without_its_cause() {
        let e = ApiError::Storage(crate::storage::StorageError::Database(
            sqlx::Error::Protocol("password authentication failed for host db".into()),
        ));
        let (status, body) = body_of(Legacy::from_api(e, "query")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, json!({"detail": "internal error"}));
    }
}
