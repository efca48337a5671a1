//! The service's one error type, mapped to HTTP status codes and JSON bodies.
//!
//! Client errors say exactly what was wrong with the request; server errors say only
//! "internal error" and are logged in full, so no SQL, host or credential ever reaches a client.
use crate::offer::{TransitionError, ValidationError};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// `Result` with the service's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the request is invalid (400).
    #[error("invalid {}", .0.field)]
    Validation(#[from] ValidationError),
    /// The request could not be read: bad JSON, query or path (400, or the extractor's 4xx).
    #[error("bad request: {message}")]
    BadRequest {
        /// HTTP status to answer (400, or 415 for a body without a JSON content type).
        status: StatusCode,
        /// What was wrong, for the client.
        message: String,
    },
    /// The user may not do this to this offer (403).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// The offer's status does not allow this change (400).
    #[error("invalid transition: {0}")]
    InvalidTransition(String),
    /// No such offer (404).
    #[error("trade offer {0} not found")]
    OfferNotFound(i64),
    /// No route matches the request's path (404).
    #[error("no such route")]
    NoRoute,
    /// The catalog refuses the offer's items (404 unknown, 400 inactive, 403 not the side's).
    #[error("{0}")]
    Catalog(#[from] crate::catalog::Refusal),
    /// The catalog did not answer, so a new offer cannot be checked (503).
    #[error("catalog service unavailable")]
    CatalogUnavailable,
    /// The database failed (500, or 503 when it is unreachable; details only in the log).
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Anything else internal (500, details only in the log).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<TransitionError> for Error {
    fn from(e: TransitionError) -> Self {
        match e {
            TransitionError::Forbidden(m) => Error::Forbidden(m),
            TransitionError::Invalid(m) => Error::InvalidTransition(m),
        }
    }
}

impl Error {
    /// A short stable code: the `error` field of the JSON body and a metric label.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Validation(_) => "invalid_field",
            Error::BadRequest { .. } => "bad_request",
            Error::Forbidden(_) => "forbidden",
            Error::InvalidTransition(_) => "invalid_transition",
            Error::OfferNotFound(_) | Error::NoRoute => "not_found",
            Error::Database(_) if self.database_unreachable() => "unavailable",
            Error::Catalog(_) => "catalog_refused",
            Error::CatalogUnavailable => "catalog_unavailable",
            Error::Database(_) | Error::Internal(_) => "internal",
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Validation(_) | Error::InvalidTransition(_) => StatusCode::BAD_REQUEST,
            Error::BadRequest { status, .. } => *status,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::OfferNotFound(_) | Error::NoRoute => StatusCode::NOT_FOUND,
            Error::Database(_) if self.database_unreachable() => StatusCode::SERVICE_UNAVAILABLE,
            Error::Catalog(r) => r.status(),
            Error::CatalogUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Error::Database(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Error::BadRequest {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl Error {
    /// Whether this is the database being unreachable (retry later) rather than a bug.
    fn database_unreachable(&self) -> bool {
        let Error::Database(e) = self else {
            return false;
        };
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::WorkerCrashed => true,
            // Class 08: connection exceptions; 57P01-57P03: the server is shutting down,
            // crashed or starting up.
            sqlx::Error::Database(db) => db.code().is_some_and(|c| {
                c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03")
            }),
            _ => false,
        }
    }

    /// What the client may see.
    pub fn public_message(&self) -> String {
        match self {
            Error::Validation(v) => v.reason.clone(),
            Error::BadRequest { message, .. } => message.clone(),
            Error::Forbidden(m) => (*m).to_string(),
            Error::InvalidTransition(m) => m.clone(),
            Error::OfferNotFound(_) | Error::NoRoute => self.to_string(),
            Error::Catalog(_) | Error::CatalogUnavailable => self.to_string(),
            Error::Database(_) if self.database_unreachable() => {
                "database unavailable, retry later".to_string()
            }
            Error::Database(_) | Error::Internal(_) => "internal error".to_string(),
        }
    }
}

impl IntoResponse for Error {
    /// `{"error": {"code", "message", "field"}}`, the shape the notifications service uses.
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = ?self, "request failed");
        }
        let field = match &self {
            Error::Validation(v) => Some(v.field),
            _ => None,
        };
        let body = json!({"error": {"code": self.code(), "message": self.public_message(), "field": field}});
        let mut resp = (status, Json(body)).into_response();
        // Lets the metrics layer count errors by kind without parsing bodies.
        resp.extensions_mut().insert(ErrorCode(self.code()));
        resp
    }
}

/// The code of the error a response carries, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_database_error_never_reaches_the_client() {
        let err = Error::Database(sqlx::Error::Protocol(
            "password authentication failed for user swappo at 10.0.0.5".into(),
        ));
        let resp = err.into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        assert_eq!(
            text,
            r#"{"error":{"code":"internal","field":null,"message":"internal error"}}"#
        );
    }

    #[test]
    fn an_unreachable_database_is_a_503_to_retry() {
        let err = Error::Database(sqlx::Error::PoolTimedOut);
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.public_message(), "database unavailable, retry later");
    }

    #[test]
    fn transition_errors_map_to_403_and_400() {
        assert_eq!(
            Error::from(TransitionError::Forbidden("x")).status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            Error::from(TransitionError::Invalid("x".into())).status(),
            StatusCode::BAD_REQUEST
        );
    }
}
