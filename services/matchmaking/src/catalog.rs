//! Validation of a new offer's items against the catalog service, as the original
//! matchmaking did before storing an offer: every item exists, is active, and belongs to the
//! side that puts it in the offer.
//!
//! The original asked the catalog's gRPC `ValidateItems`; this client reads the same facts
//! (existence, `status`, `owner_id`) from the catalog's HTTP item route, `GET
//! {CATALOG_URL}/items/{id}` (200 with the item, 404 when there is none), so no gRPC stack is
//! needed. The check is synchronous: it gates the create. A catalog that does not answer
//! makes the create fail with 503, as the original's did, never a guess.
use crate::offer::NewOffer;
use serde::Deserialize;
use std::collections::HashSet;
use std::time::Duration;

/// What the catalog says about one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemCheck {
    /// The item asked about.
    pub item_id: i64,
    /// Whether the catalog has it.
    pub exists: bool,
    /// Whether its status is `active` (false when it does not exist).
    pub is_active: bool,
    /// Its owner (empty when it does not exist).
    pub owner_id: String,
}

/// Why the catalog refuses an offer, in the original's order of checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Some items do not exist (the original's 404).
    #[error("Items not found: {0:?}")]
    NotFound(Vec<i64>),
    /// Some items are not active (400).
    #[error("Items are not active: {0:?}")]
    Inactive(Vec<i64>),
    /// Offered items that are not the proposer's (403).
    #[error("Proposer does not own offered items: {0:?}")]
    ProposerDoesNotOwn(Vec<i64>),
    /// Requested items that are not the receiver's (403).
    #[error("Receiver does not own requested items: {0:?}")]
    ReceiverDoesNotOwn(Vec<i64>),
}

impl Refusal {
    /// The original's status for this refusal: 404 for unknown items, 400 for inactive
    /// ones, 403 for items that are not their side's.
    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            Refusal::NotFound(_) => StatusCode::NOT_FOUND,
            Refusal::Inactive(_) => StatusCode::BAD_REQUEST,
            Refusal::ProposerDoesNotOwn(_) | Refusal::ReceiverDoesNotOwn(_) => {
                StatusCode::FORBIDDEN
            }
        }
    }
}

/// Checks `offer` against `catalog`: `Ok` when it may be stored; a refusal; or
/// [`crate::error::Error::CatalogUnavailable`] when the catalog did not answer.
pub async fn gate(catalog: &Catalog, offer: &NewOffer) -> Result<(), crate::error::Error> {
    let ids: Vec<i64> = offer
        .offered_item_ids
        .iter()
        .chain(&offer.requested_item_ids)
        .copied()
        .collect();
    let checks = catalog.check(&ids).await.map_err(|e| {
        tracing::warn!(error = %e, "catalog check failed");
        crate::error::Error::CatalogUnavailable
    })?;
    verdict(offer, &checks)?;
    Ok(())
}

/// The catalog did not give an answer (down, timed out, or answered something unreadable).
#[derive(Debug, thiserror::Error)]
#[error("catalog service unavailable: {0}")]
pub struct Unavailable(pub String);

/// Decides whether `offer` may be stored given the catalog's `checks` of its items.
pub fn verdict(offer: &NewOffer, checks: &[ItemCheck]) -> Result<(), Refusal> {
    let ids = |f: &dyn Fn(&ItemCheck) -> bool| -> Vec<i64> {
        checks.iter().filter(|c| f(c)).map(|c| c.item_id).collect()
    };
    let missing = ids(&|c| !c.exists);
    if !missing.is_empty() {
        return Err(Refusal::NotFound(missing));
    }
    let inactive = ids(&|c| !c.is_active);
    if !inactive.is_empty() {
        return Err(Refusal::Inactive(inactive));
    }
    let offered: HashSet<i64> = offer.offered_item_ids.iter().copied().collect();
    let requested: HashSet<i64> = offer.requested_item_ids.iter().copied().collect();
    let wrong = ids(&|c| offered.contains(&c.item_id) && c.owner_id != offer.proposer_id);
    if !wrong.is_empty() {
        return Err(Refusal::ProposerDoesNotOwn(wrong));
    }
    let wrong = ids(&|c| requested.contains(&c.item_id) && c.owner_id != offer.receiver_id);
    if !wrong.is_empty() {
        return Err(Refusal::ReceiverDoesNotOwn(wrong));
    }
    Ok(())
}

/// The fields of the catalog's item that the check reads.
#[derive(Deserialize)]
struct Item {
    owner_id: String,
    status: String,
}

/// An HTTP client of the catalog service.
#[derive(Clone, Debug)]
pub struct Catalog {
    base: String,
    http: reqwest::Client,
}

impl Catalog {
    /// A client of the catalog at `base_url` (`http://catalog-service:8000`); each item
    /// lookup gives up after `timeout`.
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, Unavailable> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| Unavailable(e.to_string()))?;
        Ok(Self {
            base: base_url.trim_end_matches('/').to_string(),
            http,
        })
    }

    /// Looks every item up, concurrently; the checks come back in the order of `ids`.
    pub async fn check(&self, ids: &[i64]) -> Result<Vec<ItemCheck>, Unavailable> {
        futures::future::try_join_all(ids.iter().map(|id| self.check_one(*id))).await
    }

    async fn check_one(&self, item_id: i64) -> Result<ItemCheck, Unavailable> {
        let url = format!("{}/items/{item_id}", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| Unavailable(format!("GET /items/{item_id}: {}", e.without_url())))?;
        match resp.status() {
            reqwest::StatusCode::NOT_FOUND => Ok(ItemCheck {
                item_id,
                exists: false,
                is_active: false,
                owner_id: String::new(),
            }),
            s if s.is_success() => {
                let item: Item = resp.json().await.map_err(|e| {
                    Unavailable(format!("GET /items/{item_id}: unreadable item: {e}"))
                })?;
                Ok(ItemCheck {
                    item_id,
                    exists: true,
                    is_active: item.status == "active",
                    owner_id: item.owner_id,
                })
            }
            s => Err(Unavailable(format!("GET /items/{item_id}: HTTP {s}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer() -> NewOffer {
        NewOffer {
            proposer_id: "alice".into(),
            receiver_id: "bob".into(),
            offered_item_ids: vec![1, 2],
            requested_item_ids: vec![3],
            message: None,
        }
    }

    fn item(item_id: i64, owner: &str, active: bool) -> ItemCheck {
        ItemCheck {
            item_id,
            exists: true,
            is_active: active,
            owner_id: owner.into(),
        }
    }

    #[test]
    fn items_that_exist_are_active_and_belong_to_their_side_pass() {
        let checks = [
            item(1, "alice", true),
            item(2, "alice", true),
            item(3, "bob", true),
        ];
        assert_eq!(verdict(&offer(), &checks), Ok(()));
    }

    #[test]
    fn the_first_failed_rule_in_the_originals_order_is_reported_with_its_items() {
        let gone = ItemCheck {
            item_id: 2,
            exists: false,
            is_active: false,
            owner_id: String::new(),
        };
        let checks = [item(1, "bob", false), gone, item(3, "alice", true)];
        assert_eq!(verdict(&offer(), &checks), Err(Refusal::NotFound(vec![2])));
        let checks = [
            item(1, "bob", false),
            item(2, "alice", true),
            item(3, "x", true),
        ];
        assert_eq!(verdict(&offer(), &checks), Err(Refusal::Inactive(vec![1])));
        let checks = [
            item(1, "bob", true),
            item(2, "alice", true),
            item(3, "x", true),
        ];
        assert_eq!(
            verdict(&offer(), &checks),
            Err(Refusal::ProposerDoesNotOwn(vec![1]))
        );
        let checks = [
            item(1, "alice", true),
            item(2, "alice", true),
            item(3, "x", true),
        ];
        let refusal = verdict(&offer(), &checks).unwrap_err();
        assert_eq!(refusal, Refusal::ReceiverDoesNotOwn(vec![3]));
        assert_eq!(
            refusal.to_string(),
            "Receiver does not own requested items: [3]"
        );
    }
}
