//! `/api/v2/offers`: create, read, list, change status, withdraw.
use super::AppState;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use crate::error::{Error, Result};
use crate::offer::{NewOffer, OfferStatus, ValidationError, validate_user_id};
use crate::store::{OfferFilter, TradeOffer};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

/// Page size when the client names none.
pub const DEFAULT_LIMIT: i64 = 20;
/// Largest page a client may ask for: bounds the work and the response of one request.
pub const MAX_LIMIT: i64 = 100;

/// The offer routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v2/offers", get(list).post(create))
        .route(
            "/api/v2/offers/{id}",
            get(get_one).patch(change_status).delete(withdraw),
        )
        .route("/api/v2/offers/received/{user_id}", get(received))
        .route("/api/v2/offers/sent/{user_id}", get(sent))
        .route("/api/v2/offers/by-item/{item_id}", get(by_item))
}

/// Paging and status filter shared by the list routes.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Only offers in this status.
    pub status: Option<OfferStatus>,
    /// Page size, 1..=100, default 20.
    pub limit: Option<i64>,
    /// Offers to skip, >= 0.
    pub offset: Option<i64>,
}

impl PageQuery {
    /// `(limit, offset)` after checking their ranges.
    pub fn page(&self) -> Result<(i64, i64), ValidationError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ValidationError::new(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let offset = self.offset.unwrap_or(0);
        if offset < 0 {
            return Err(ValidationError::new("offset", "must not be negative"));
        }
        Ok((limit, offset))
    }
}

/// `GET /api/v2/offers` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Whose offers (required).
    pub user_id: Option<String>,
    /// Include offers the user made (default true).
    pub as_proposer: Option<bool>,
    /// Include offers the user received (default true).
    pub as_receiver: Option<bool>,
    /// Only offers in this status.
    pub status: Option<OfferStatus>,
    /// Page size.
    pub limit: Option<i64>,
    /// Offers to skip.
    pub offset: Option<i64>,
}

/// The acting user of a PATCH or DELETE.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorQuery {
    /// Who asks (required).
    pub user_id: Option<String>,
}

impl ActorQuery {
    fn user_id(&self) -> Result<&str, ValidationError> {
        let id = self
            .user_id
            .as_deref()
            .ok_or_else(|| ValidationError::new("user_id", "is required"))?;
        validate_user_id("user_id", id)?;
        Ok(id)
    }
}

/// `PATCH` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    /// The status to move to.
    pub status: OfferStatus,
}

async fn create(
    State(s): State<AppState>,
    ApiJson(offer): ApiJson<NewOffer>,
) -> Result<(StatusCode, Json<TradeOffer>)> {
    let offer = offer.validate()?;
    if let Some(catalog) = &s.catalog {
        crate::catalog::gate(catalog, &offer).await?;
    }
    Ok((StatusCode::CREATED, Json(s.store.create(&offer).await?)))
}

async fn get_one(State(s): State<AppState>, ApiPath(id): ApiPath<i64>) -> Result<Json<TradeOffer>> {
    Ok(Json(s.store.get(id).await?))
}

async fn list(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Vec<TradeOffer>>> {
    let user_id = q
        .user_id
        .ok_or_else(|| ValidationError::new("user_id", "is required"))?;
    validate_user_id("user_id", &user_id)?;
    let (as_proposer, as_receiver) = (q.as_proposer.unwrap_or(true), q.as_receiver.unwrap_or(true));
    if !as_proposer && !as_receiver {
        return Err(Error::Validation(ValidationError::new(
            "as_receiver",
            "as_proposer and as_receiver cannot both be false",
        )));
    }
    let (limit, offset) = PageQuery {
        status: q.status,
        limit: q.limit,
        offset: q.offset,
    }
    .page()?;
    let filter = OfferFilter {
        user_id,
        as_proposer,
        as_receiver,
        status: q.status,
        limit,
        offset,
    };
    Ok(Json(s.store.list(&filter).await?))
}

async fn one_side(
    s: &AppState,
    user_id: String,
    q: PageQuery,
    as_proposer: bool,
) -> Result<Json<Vec<TradeOffer>>> {
    validate_user_id("user_id", &user_id)?;
    let (limit, offset) = q.page()?;
    let filter = OfferFilter {
        user_id,
        as_proposer,
        as_receiver: !as_proposer,
        status: q.status,
        limit,
        offset,
    };
    Ok(Json(s.store.list(&filter).await?))
}

async fn received(
    State(s): State<AppState>,
    ApiPath(user_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Vec<TradeOffer>>> {
    one_side(&s, user_id, q, false).await
}

async fn sent(
    State(s): State<AppState>,
    ApiPath(user_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Vec<TradeOffer>>> {
    one_side(&s, user_id, q, true).await
}

async fn by_item(
    State(s): State<AppState>,
    ApiPath(item_id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Vec<TradeOffer>>> {
    if item_id <= 0 {
        return Err(ValidationError::new("item_id", "must be positive").into());
    }
    let (limit, offset) = q.page()?;
    Ok(Json(
        s.store.by_item(item_id, q.status, limit, offset).await?,
    ))
}

async fn change_status(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(actor): ApiQuery<ActorQuery>,
    ApiJson(change): ApiJson<StatusChange>,
) -> Result<Json<TradeOffer>> {
    let user_id = actor.user_id()?;
    Ok(Json(
        s.store.change_status(id, user_id, change.status).await?,
    ))
}

async fn withdraw(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(actor): ApiQuery<ActorQuery>,
) -> Result<StatusCode> {
    let user_id = actor.user_id()?;
    s.store.withdraw(id, user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_defaults_and_bounds() {
        assert_eq!(PageQuery::default().page(), Ok((20, 0)));
        let q = |limit, offset| {
            PageQuery {
                status: None,
                limit,
                offset,
            }
            .page()
        };
        assert_eq!(q(Some(100), Some(5)), Ok((100, 5)));
        assert_eq!(q(Some(0), None).unwrap_err().field, "limit");
        assert_eq!(q(Some(101), None).unwrap_err().field, "limit");
        assert_eq!(q(None, Some(-1)).unwrap_err().field, "offset");
    }
}
