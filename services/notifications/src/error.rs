//! The HTTP API's one error type, mapped to status codes and JSON bodies.
//!
//! Client errors say exactly what was wrong and which field (`{"error": {"code", "message",
//! "field"}}`); server errors say only "internal error" or "database unavailable" and are
//! logged in full, so no SQL, host name or credential ever reaches a client.
use crate::storage::StorageError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// `Result` with the API's error.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field of the request is invalid (400).
    #[error("invalid `{field}`: {message}")]
    InvalidField {
        /// The query parameter, path segment or JSON field at fault.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The request could not be read (bad JSON, wrong content type, bad query string):
    /// the extractor's 4xx status with its explanation.
    #[error("bad request: {message}")]
    Unreadable {
        /// 400, 413, 415 or 422, as the extractor decided.
        status: StatusCode,
        /// What was wrong, for the client.
        message: String,
    },
    /// No such notification for this user (404). Someone else's notification is reported
    /// the same way, so ids of other users' notifications cannot be probed.
    #[error("{0}")]
    NotFound(String),
    /// A notification with this event id already exists (409).
    #[error("{0}")]
    Conflict(String),
    /// The database failed (500, or 503 when it is unreachable; details only in the log).
    #[error("storage failed: {0}")]
    Storage(#[from] StorageError),
}

impl ApiError {
    /// A 400 naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A short stable code: the `code` field of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidField { .. } => "invalid_field",
            ApiError::Unreadable { .. } => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Storage(_) if self.database_unreachable() => "unavailable",
            ApiError::Storage(_) => "internal",
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidField { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unreadable { status, .. } => *status,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Storage(_) if self.database_unreachable() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether this is the database being down (retry later) rather than a bug.
    fn database_unreachable(&self) -> bool {
        matches!(
            self,
            ApiError::Storage(StorageError::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed
            ))
        )
    }

    /// What the client may see.
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Storage(_) if self.database_unreachable() => {
                "database unavailable, retry later".to_string()
            }
            ApiError::Storage(_) => "internal error".to_string(),
            ApiError::InvalidField { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let field = match &self {
            ApiError::InvalidField { field, .. } => Some(field.as_str()),
            _ => None,
        };
        let body = json!({"error": {"code": self.code(), "message": self.public_message(), "field": field}});
        (status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_failure_never_shows_its_details_to_the_client() {
        let e = ApiError::Storage(StorageError::Database(sqlx::Error::Protocol(
            "password authentication failed for host db.internal".into(),
        )));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.public_message(), "internal error");
    }

    #[test]
    fn an_unreachable_database_is_a_503_that_says_retry() {
        let e = ApiError::Storage(StorageError::Database(sqlx::Error::PoolTimedOut));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.code(), "unavailable");
    }

    #[test]
    fn an_invalid_field_names_the_field() {
        let e = ApiError::invalid("limit", "must be between 1 and 100, got 0");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.public_message(), "must be between 1 and 100, got 0");
    }
}
