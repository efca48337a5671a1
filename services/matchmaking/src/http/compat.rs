//! `/api/v1/offers` and `/api/v1/statistics`: the original Python service's routes with its
//! request and response shapes, which the Swappo front end
//! (`services/matchmaking.service.ts`) calls unchanged.
//!
//! What differs from our own API (`/api/v2`, [`super::offers`], [`super::statistics`]) and
//! is kept here as the original had it:
//! - statistics are `total_offers/pending_offers/accepted_offers/rejected_offers/
//!   completed_offers`;
//! - `by-item` returns every offer of the item (no paging);
//! - a party asking for a change that is not theirs gets 400 ("Invalid status transition
//!   for proposer/receiver"); only a user who is neither party gets 403;
//! - `as_proposer`/`as_receiver` filter only when exactly one of them is `true`;
//! - the create rules answer 400 with the original's wording (yourself, duplicates, an item
//!   both offered and requested), and, when a catalog is configured, 404/400/403/503 from
//!   the catalog check ([`crate::catalog`]);
//! - errors are FastAPI's: `{"detail": "..."}`, and 422 with `{"detail": [{"loc", "msg",
//!   "type"}]}` for a parameter or body that does not validate;
//! - unknown query parameters and body fields are ignored, as FastAPI did.
use super::AppState;
use crate::catalog;
use crate::error::Error;
use crate::offer::{NewOffer, OfferStatus, Party, ValidationError, validate_user_id};
use crate::store::{OfferFilter, TradeOffer};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::HashSet;

/// Page size of the original's list routes when the client names none.
const DEFAULT_LIMIT: i64 = 20;
/// The original's largest page.
const MAX_LIMIT: i64 = 100;

/// The original's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/api/v1/offers", get(list).post(create))
        .route(
            "/api/v1/offers/{id}",
            get(get_one).patch(change_status).delete(delete),
        )
        .route("/api/v1/offers/received/{user_id}", get(received))
        .route("/api/v1/offers/sent/{user_id}", get(sent))
        .route("/api/v1/offers/by-item/{item_id}", get(by_item))
        .route("/api/v1/statistics/{user_id}", get(statistics))
}

/// An error in FastAPI's shape.
#[derive(Debug)]
pub enum Legacy {
    /// `{"detail": message}` with this status.
    Detail(StatusCode, String),
    /// 422 `{"detail": [{"loc": [part, field], "msg", "type": "value_error"}]}`.
    Invalid {
        /// `query`, `path` or `body`.
        part: &'static str,
        /// The parameter or field (empty for the body as a whole).
        field: String,
        /// What is wrong.
        message: String,
    },
}

type LegacyResult<T> = Result<T, Legacy>;

impl Legacy {
    fn detail(status: StatusCode, message: impl Into<String>) -> Self {
        Legacy::Detail(status, message.into())
    }

    fn invalid(part: &'static str, v: ValidationError) -> Self {
        Legacy::Invalid {
            part,
            field: v.field.to_string(),
            message: v.reason,
        }
    }

    /// Our error where the route has no wording of its own; `part` is where fields live.
    fn from_error(e: Error, part: &'static str) -> Self {
        match e {
            Error::Validation(v) => Legacy::invalid(part, v),
            Error::BadRequest { message, .. } => Legacy::Invalid {
                part: "body",
                field: String::new(),
                message,
            },
            Error::OfferNotFound(id) => not_found(id),
            other => Legacy::Detail(other.status(), other.public_message()),
        }
    }
}

fn not_found(id: i64) -> Legacy {
    Legacy::detail(
        StatusCode::NOT_FOUND,
        format!("Trade offer with ID {id} not found"),
    )
}

impl IntoResponse for Legacy {
    fn into_response(self) -> Response {
        match self {
            Legacy::Detail(status, detail) => {
                if status.is_server_error() {
                    tracing::error!(%status, %detail, "request failed");
                }
                (status, Json(json!({ "detail": detail }))).into_response()
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
                (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
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

/// Query parameters of the original's routes, as text: parsed by the functions below so a
/// bad value is a 422 naming it. Unknown parameters are ignored.
#[derive(Debug, Default, Deserialize)]
pub struct RawQuery {
    user_id: Option<String>,
    status: Option<String>,
    as_proposer: Option<String>,
    as_receiver: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

fn status_param(raw: Option<&str>) -> Result<Option<OfferStatus>, ValidationError> {
    raw.map(|s| {
        OfferStatus::parse(s).ok_or_else(|| {
            let known: Vec<&str> = OfferStatus::ALL.iter().map(|s| s.as_str()).collect();
            ValidationError::new("status", format!("must be one of {known:?}"))
        })
    })
    .transpose()
}

/// FastAPI's reading of a boolean query parameter.
fn bool_param(field: &'static str, raw: Option<&str>) -> Result<Option<bool>, ValidationError> {
    raw.map(|s| match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" | "t" | "y" => Ok(true),
        "false" | "0" | "no" | "off" | "f" | "n" => Ok(false),
        _ => Err(ValidationError::new(field, "must be a boolean")),
    })
    .transpose()
}

fn page_params(q: &RawQuery) -> Result<(i64, i64), ValidationError> {
    let limit = match q.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ValidationError::new("limit", format!("must be an integer from 1 to {MAX_LIMIT}"))
            })?,
    };
    let offset = match q.offset.as_deref() {
        None => 0,
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| ValidationError::new("offset", "must be a non-negative integer"))?,
    };
    Ok((limit, offset))
}

fn int_path(field: &'static str, raw: &str) -> Result<i64, Legacy> {
    raw.parse::<i64>().map_err(|_| {
        Legacy::invalid(
            "path",
            ValidationError::new(field, "must be a valid integer"),
        )
    })
}

/// The sides a list covers, as the original read its flags: exactly one flag `true` selects
/// that side; anything else (none, both, `false`) means both.
pub fn sides(as_proposer: Option<bool>, as_receiver: Option<bool>) -> (bool, bool) {
    match (as_proposer == Some(true), as_receiver == Some(true)) {
        (true, false) => (true, false),
        (false, true) => (false, true),
        _ => (true, true),
    }
}

/// The original's own create rules, checked after the field constraints and in its order,
/// with its wording (all 400).
pub fn original_rules(offer: &NewOffer) -> Result<(), String> {
    if offer.proposer_id == offer.receiver_id {
        return Err("Cannot create trade offer with yourself".into());
    }
    let unique = |ids: &[i64]| ids.iter().collect::<HashSet<_>>().len() == ids.len();
    if !unique(&offer.offered_item_ids) {
        return Err("Duplicate item IDs in offered items".into());
    }
    if !unique(&offer.requested_item_ids) {
        return Err("Duplicate item IDs in requested items".into());
    }
    let offered: HashSet<_> = offer.offered_item_ids.iter().collect();
    if offer.requested_item_ids.iter().any(|i| offered.contains(i)) {
        return Err("Same item cannot be both offered and requested".into());
    }
    Ok(())
}

/// The field constraints of the original's `TradeOfferCreate` (pydantic's 422).
fn original_fields(offer: &NewOffer) -> Result<(), ValidationError> {
    for (field, id) in [
        ("proposer_id", &offer.proposer_id),
        ("receiver_id", &offer.receiver_id),
    ] {
        let n = id.chars().count();
        if !(1..=100).contains(&n) {
            return Err(ValidationError::new(field, "must be 1 to 100 characters"));
        }
    }
    if offer.offered_item_ids.is_empty() {
        return Err(ValidationError::new(
            "offered_item_ids",
            "must list at least one item",
        ));
    }
    if offer.requested_item_ids.is_empty() {
        return Err(ValidationError::new(
            "requested_item_ids",
            "must list at least one item",
        ));
    }
    if offer
        .message
        .as_ref()
        .is_some_and(|m| m.chars().count() > 1000)
    {
        return Err(ValidationError::new(
            "message",
            "must be at most 1000 characters",
        ));
    }
    Ok(())
}

/// The original's `TradeOfferCreate`; unknown fields are ignored, as pydantic did.
#[derive(Debug, Deserialize)]
struct CreateLegacy {
    proposer_id: String,
    receiver_id: String,
    offered_item_ids: Vec<i64>,
    requested_item_ids: Vec<i64>,
    #[serde(default)]
    message: Option<String>,
}

/// `GET /`: the original's service banner.
async fn root() -> Json<Value> {
    Json(json!({
        "service": "Swappo Matchmaking Service",
        "status": "running",
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// `POST /api/v1/offers`: 201 with the offer.
async fn create(
    State(s): State<AppState>,
    LegacyJson(body): LegacyJson<CreateLegacy>,
) -> LegacyResult<(StatusCode, Json<TradeOffer>)> {
    let offer = NewOffer {
        proposer_id: body.proposer_id,
        receiver_id: body.receiver_id,
        offered_item_ids: body.offered_item_ids,
        requested_item_ids: body.requested_item_ids,
        message: body.message,
    };
    original_fields(&offer).map_err(|v| Legacy::invalid("body", v))?;
    original_rules(&offer).map_err(|m| Legacy::detail(StatusCode::BAD_REQUEST, m))?;
    // Our stricter bounds (positive ids, at most 50 items a side, no padded user ids).
    let offer = offer.validate().map_err(|v| Legacy::invalid("body", v))?;
    if let Some(catalog) = &s.catalog {
        catalog::gate(catalog, &offer).await.map_err(|e| match e {
            Error::CatalogUnavailable => Legacy::detail(
                StatusCode::SERVICE_UNAVAILABLE,
                "Catalog service unavailable",
            ),
            other => Legacy::detail(other.status(), other.public_message()),
        })?;
    }
    let stored = s
        .store
        .create(&offer)
        .await
        .map_err(|e| Legacy::from_error(e, "body"))?;
    Ok((StatusCode::CREATED, Json(stored)))
}

/// `GET /api/v1/offers/{id}`.
async fn get_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> LegacyResult<Json<TradeOffer>> {
    let id = int_path("offer_id", &id)?;
    s.store
        .get(id)
        .await
        .map(Json)
        .map_err(|e| Legacy::from_error(e, "path"))
}

/// `GET /api/v1/offers?user_id&status&as_proposer&as_receiver&limit&offset`.
async fn list(
    State(s): State<AppState>,
    Query(q): Query<RawQuery>,
) -> LegacyResult<Json<Vec<TradeOffer>>> {
    let query = |v| Legacy::invalid("query", v);
    let user_id = q
        .user_id
        .clone()
        .ok_or_else(|| query(ValidationError::new("user_id", "Field required")))?;
    let status = status_param(q.status.as_deref()).map_err(query)?;
    let as_proposer = bool_param("as_proposer", q.as_proposer.as_deref()).map_err(query)?;
    let as_receiver = bool_param("as_receiver", q.as_receiver.as_deref()).map_err(query)?;
    let (limit, offset) = page_params(&q).map_err(query)?;
    let (as_proposer, as_receiver) = sides(as_proposer, as_receiver);
    let filter = OfferFilter {
        user_id,
        as_proposer,
        as_receiver,
        status,
        limit,
        offset,
    };
    s.store
        .list(&filter)
        .await
        .map(Json)
        .map_err(|e| Legacy::from_error(e, "query"))
}

async fn one_side(
    s: &AppState,
    user_id: String,
    q: RawQuery,
    as_proposer: bool,
) -> LegacyResult<Json<Vec<TradeOffer>>> {
    let status = status_param(q.status.as_deref()).map_err(|v| Legacy::invalid("query", v))?;
    let (limit, offset) = page_params(&q).map_err(|v| Legacy::invalid("query", v))?;
    let filter = OfferFilter {
        user_id,
        as_proposer,
        as_receiver: !as_proposer,
        status,
        limit,
        offset,
    };
    s.store
        .list(&filter)
        .await
        .map(Json)
        .map_err(|e| Legacy::from_error(e, "query"))
}

/// `GET /api/v1/offers/received/{user_id}?status&limit&offset`.
async fn received(
    State(s): State<AppState>,
    Path(user_id): Path<String>,
    Query(q): Query<RawQuery>,
) -> LegacyResult<Json<Vec<TradeOffer>>> {
    one_side(&s, user_id, q, false).await
}

/// `GET /api/v1/offers/sent/{user_id}?status&limit&offset`.
async fn sent(
    State(s): State<AppState>,
    Path(user_id): Path<String>,
    Query(q): Query<RawQuery>,
) -> LegacyResult<Json<Vec<TradeOffer>>> {
    one_side(&s, user_id, q, true).await
}

/// `GET /api/v1/offers/by-item/{item_id}?status`: every offer of the item, newest first.
async fn by_item(
    State(s): State<AppState>,
    Path(item_id): Path<String>,
    Query(q): Query<RawQuery>,
) -> LegacyResult<Json<Vec<TradeOffer>>> {
    let item_id = int_path("item_id", &item_id)?;
    let status = status_param(q.status.as_deref()).map_err(|v| Legacy::invalid("query", v))?;
    // No page: the original returned them all (`LIMIT ALL`).
    s.store
        .by_item(item_id, status, i64::MAX, 0)
        .await
        .map(Json)
        .map_err(|e| Legacy::from_error(e, "path"))
}

/// The original's `TradeOfferUpdate`.
#[derive(Debug, Deserialize)]
struct StatusLegacy {
    status: String,
}

/// `PATCH /api/v1/offers/{id}?user_id=` with `{"status"}`: the updated offer.
async fn change_status(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<RawQuery>,
    LegacyJson(body): LegacyJson<StatusLegacy>,
) -> LegacyResult<Json<TradeOffer>> {
    let id = int_path("offer_id", &id)?;
    let to = status_param(Some(&body.status))
        .map_err(|v| Legacy::invalid("body", v))?
        .expect("a status was given");
    let user_id = actor(&q)?;
    // The parties of an offer never change, so reading them before the locked change is
    // safe; they decide the original's wording of a refusal.
    let offer = s
        .store
        .get(id)
        .await
        .map_err(|e| Legacy::from_error(e, "path"))?;
    let party = Party::of(&user_id, &offer.proposer_id, &offer.receiver_id);
    match s.store.change_status(id, &user_id, to).await {
        Ok(updated) => Ok(Json(updated)),
        Err(Error::Forbidden(_) | Error::InvalidTransition(_)) => Err(match party {
            Party::Proposer => Legacy::detail(
                StatusCode::BAD_REQUEST,
                "Invalid status transition for proposer",
            ),
            Party::Receiver => Legacy::detail(
                StatusCode::BAD_REQUEST,
                "Invalid status transition for receiver",
            ),
            Party::Stranger => Legacy::detail(
                StatusCode::FORBIDDEN,
                "User not authorized to modify this trade offer",
            ),
        }),
        Err(e) => Err(Legacy::from_error(e, "path")),
    }
}

/// `DELETE /api/v1/offers/{id}?user_id=`: 204.
async fn delete(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<RawQuery>,
) -> LegacyResult<StatusCode> {
    let id = int_path("offer_id", &id)?;
    let user_id = actor(&q)?;
    match s.store.withdraw(id, &user_id).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(Error::Forbidden(_)) => Err(Legacy::detail(
            StatusCode::FORBIDDEN,
            "Only the proposer can delete a trade offer",
        )),
        Err(Error::InvalidTransition(_)) => Err(Legacy::detail(
            StatusCode::BAD_REQUEST,
            "Can only delete pending trade offers",
        )),
        Err(e) => Err(Legacy::from_error(e, "path")),
    }
}

/// `GET /api/v1/statistics/{user_id}`.
async fn statistics(
    State(s): State<AppState>,
    Path(user_id): Path<String>,
) -> LegacyResult<Json<Value>> {
    let st = s
        .store
        .statistics(&user_id)
        .await
        .map_err(|e| Legacy::from_error(e, "path"))?;
    // Proposer and receiver always differ, so the sent and received offers are disjoint.
    Ok(Json(json!({
        "total_offers": st.total_sent + st.total_received,
        "pending_offers": st.pending_sent + st.pending_received,
        "accepted_offers": st.accepted,
        "rejected_offers": st.rejected,
        "completed_offers": st.completed,
    })))
}

fn actor(q: &RawQuery) -> Result<String, Legacy> {
    let id = q.user_id.clone().ok_or_else(|| {
        Legacy::invalid("query", ValidationError::new("user_id", "Field required"))
    })?;
    validate_user_id("user_id", &id).map_err(|v| Legacy::invalid("query", v))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(p: &str, r: &str, offered: &[i64], requested: &[i64]) -> NewOffer {
        NewOffer {
            proposer_id: p.into(),
            receiver_id: r.into(),
            offered_item_ids: offered.to_vec(),
            requested_item_ids: requested.to_vec(),
            message: None,
        }
    }

    #[test]
    fn only_exactly_one_true_flag_narrows_a_list_to_one_side() {
        assert_eq!(sides(None, None), (true, true));
        assert_eq!(sides(Some(true), None), (true, false));
        assert_eq!(sides(None, Some(true)), (false, true));
        assert_eq!(sides(Some(true), Some(true)), (true, true));
        assert_eq!(sides(Some(false), None), (true, true));
        assert_eq!(sides(Some(false), Some(false)), (true, true));
        assert_eq!(sides(Some(false), Some(true)), (false, true));
    }

    #[test]
    fn the_original_create_rules_answer_in_its_order_and_wording() {
        let r = |o: NewOffer| original_rules(&o).unwrap_err();
        assert_eq!(
            r(offer("a", "a", &[1, 1], &[2])),
            "Cannot create trade offer with yourself"
        );
        assert_eq!(
            r(offer("a", "b", &[1, 1], &[1])),
            "Duplicate item IDs in offered items"
        );
        assert_eq!(
            r(offer("a", "b", &[1], &[2, 2])),
            "Duplicate item IDs in requested items"
        );
        assert_eq!(
            r(offer("a", "b", &[1, 2], &[2])),
            "Same item cannot be both offered and requested"
        );
        assert_eq!(original_rules(&offer("a", "b", &[1], &[2])), Ok(()));
    }

    #[test]
    fn booleans_are_read_as_fastapi_reads_them_and_anything_else_is_named() {
        assert_eq!(bool_param("x", Some("True")), Ok(Some(true)));
        assert_eq!(bool_param("x", Some("0")), Ok(Some(false)));
        assert_eq!(bool_param("x", None), Ok(None));
        assert_eq!(bool_param("x", Some("maybe")).unwrap_err().field, "x");
    }
}
