//! Cross-origin requests from a browser front end.
//!
//! The original services allowed every origin with credentials (FastAPI's `CORSMiddleware`
//! with `allow_origins=["*"]`, `allow_credentials=True`, every method and header), so a
//! front end served from any host could call them. That stays the default (`*`); an
//! operator can name the allowed origins instead. With credentials a browser refuses a
//! literal `*`, so "every origin" is answered by echoing the request's `Origin`, as
//! Starlette does.
use axum::http::HeaderValue;
use std::time::Duration;
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};

/// How long a browser may cache a preflight answer: Starlette's default, 10 minutes.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// An origin that is not a valid header value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a valid origin: `{0}`")]
pub struct BadOrigin(pub String);

/// The CORS layer for `origins`: `*` (alone or among others) allows every origin,
/// otherwise exactly the listed ones (`https://app.example.com`).
pub fn layer(origins: &[String]) -> Result<CorsLayer, BadOrigin> {
    let allow = if origins.is_empty() || origins.iter().any(|o| o.trim() == "*") {
        AllowOrigin::mirror_request()
    } else {
        let list = origins
            .iter()
            .map(|o| HeaderValue::from_str(o.trim()).map_err(|_| BadOrigin(o.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(list)
    };
    Ok(CorsLayer::new()
        .allow_origin(allow)
        .allow_methods(AllowMethods::mirror_request())
        .allow_headers(AllowHeaders::mirror_request())
        .allow_credentials(true)
        .max_age(PREFLIGHT_MAX_AGE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_that_is_no_header_value_is_refused_by_name() {
        let err = layer(&["https://ok.example".into(), "bad\norigin".into()]).unwrap_err();
        assert_eq!(err, BadOrigin("bad\norigin".into()));
    }
}
