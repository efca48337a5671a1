//! Axum extractors whose rejections are the service's JSON [`Error`], so a malformed body,
//! query or path gets the same error shape as every other bad input.
use crate::error::Error;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;

fn client_error(status: StatusCode, message: String) -> Error {
    if status.is_server_error() {
        // An extractor misconfiguration is our bug, not the client's.
        Error::Internal(message)
    } else {
        Error::BadRequest { status, message }
    }
}

/// A JSON body; bad JSON or a wrong shape answers 400, a missing content type 415.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            // serde's classification of "syntax" (400) versus "data" (422) errors is not
            // stable across input shapes, so every unreadable body is a 400; only a missing
            // content type keeps its 415.
            Err(r) if r.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                Err(client_error(r.status(), r.body_text()))
            }
            Err(r) if r.status().is_server_error() => Err(client_error(r.status(), r.body_text())),
            Err(r) => Err(client_error(StatusCode::BAD_REQUEST, r.body_text())),
        }
    }
}

/// A query string; a malformed one answers 400.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    axum::extract::Query<T>: FromRequestParts<S, Rejection = QueryRejection>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(r) => Err(client_error(r.status(), r.body_text())),
        }
    }
}

/// Path parameters; one that does not parse (`/offers/abc`) answers 400.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    axum::extract::Path<T>: FromRequestParts<S, Rejection = PathRejection>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(r) => Err(client_error(r.status(), r.body_text())),
        }
    }
}
