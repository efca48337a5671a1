//! Trade offers as pure values: statuses, who may move an offer where, and what a new offer
//! must satisfy. No I/O here; the repository and the HTTP layer call these decisions.
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Longest user id accepted; the event contract allows 100 characters for `user_id`.
pub const MAX_USER_ID_LEN: usize = 100;
/// Most items on one side of an offer. A swap of more than 50 items is not a real use case
/// and the bound keeps one request from writing arbitrarily large arrays.
pub const MAX_ITEMS_PER_SIDE: usize = 50;
/// Longest free-text message on an offer.
pub const MAX_MESSAGE_LEN: usize = 1000;

/// Where a trade offer is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferStatus {
    /// Proposed, waiting for the receiver.
    Pending,
    /// The receiver agreed; the swap still has to happen.
    Accepted,
    /// The receiver declined. Final.
    Rejected,
    /// The proposer withdrew it while pending. Final.
    Cancelled,
    /// The swap happened. Final.
    Completed,
}

impl OfferStatus {
    /// Every status, in life-cycle order.
    pub const ALL: [OfferStatus; 5] = [
        OfferStatus::Pending,
        OfferStatus::Accepted,
        OfferStatus::Rejected,
        OfferStatus::Cancelled,
        OfferStatus::Completed,
    ];

    /// The name stored in the database and used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            OfferStatus::Pending => "pending",
            OfferStatus::Accepted => "accepted",
            OfferStatus::Rejected => "rejected",
            OfferStatus::Cancelled => "cancelled",
            OfferStatus::Completed => "completed",
        }
    }

    /// Parses a stored or wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for OfferStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the acting user relates to an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// Made the offer.
    Proposer,
    /// Received the offer.
    Receiver,
    /// Neither: has no say over the offer.
    Stranger,
}

impl Party {
    /// The role of `user_id` in an offer between `proposer_id` and `receiver_id`.
    pub fn of(user_id: &str, proposer_id: &str, receiver_id: &str) -> Self {
        if user_id == proposer_id {
            Party::Proposer
        } else if user_id == receiver_id {
            Party::Receiver
        } else {
            Party::Stranger
        }
    }
}

/// Why a status change was refused. `Forbidden` is about who asks (HTTP 403), `Invalid`
/// about the offer's state or the target (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The user may not make this change to this offer.
    #[error("{0}")]
    Forbidden(&'static str),
    /// No one may make this change from the offer's current status.
    #[error("{0}")]
    Invalid(String),
}

/// Decides whether `party` may move an offer from `from` to `to`.
///
/// The rules, as the original service enforced them: the proposer may cancel a pending
/// offer and complete an accepted one; the receiver may accept or reject a pending offer and
/// complete an accepted one. Checks run in this order, so the answer names the first problem:
/// 1. a stranger gets `Forbidden` for anything;
/// 2. `pending` is never a target (`Invalid`);
/// 3. a party asking for a change reserved to the other party gets `Forbidden`
///    (accept/reject are the receiver's, cancel is the proposer's);
/// 4. the right party asking from the wrong status gets `Invalid`.
pub fn decide_transition(
    party: Party,
    from: OfferStatus,
    to: OfferStatus,
) -> Result<(), TransitionError> {
    use OfferStatus::*;
    if party == Party::Stranger {
        return Err(TransitionError::Forbidden(
            "only the proposer or the receiver of an offer may change it",
        ));
    }
    let (allowed_party, required_from) = match to {
        Pending => {
            return Err(TransitionError::Invalid(
                "an offer cannot be moved back to pending".into(),
            ));
        }
        Accepted => (Some(Party::Receiver), Pending),
        Rejected => (Some(Party::Receiver), Pending),
        Cancelled => (Some(Party::Proposer), Pending),
        Completed => (None, Accepted),
    };
    if let Some(required) = allowed_party
        && required != party
    {
        return Err(TransitionError::Forbidden(match to {
            Cancelled => "only the proposer may cancel an offer",
            _ => "only the receiver may accept or reject an offer",
        }));
    }
    if from != required_from {
        return Err(TransitionError::Invalid(format!(
            "cannot change an offer from {from} to {to}: only a {required_from} offer can become {to}"
        )));
    }
    Ok(())
}

/// Decides whether `party` may delete (withdraw) an offer that is in status `status`:
/// only the proposer, only while pending.
pub fn decide_withdrawal(party: Party, status: OfferStatus) -> Result<(), TransitionError> {
    if party != Party::Proposer {
        return Err(TransitionError::Forbidden(
            "only the proposer may delete an offer",
        ));
    }
    if status != OfferStatus::Pending {
        return Err(TransitionError::Invalid(format!(
            "only a pending offer can be deleted; this one is {status}"
        )));
    }
    Ok(())
}

/// A proposed offer as the client sent it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NewOffer {
    /// The user making the offer.
    pub proposer_id: String,
    /// The user the offer is made to.
    pub receiver_id: String,
    /// The proposer's items on offer.
    pub offered_item_ids: Vec<i64>,
    /// The receiver's items asked for.
    pub requested_item_ids: Vec<i64>,
    /// An optional note to the receiver.
    #[serde(default)]
    pub message: Option<String>,
}

/// A field that failed validation, with the reason; the HTTP layer answers 400 with both.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    /// The offending field, as named in the request.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ValidationError {
    /// A validation failure of `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// Checks a user id from a path, query or body: non-empty, no surrounding whitespace,
/// at most [`MAX_USER_ID_LEN`] characters.
pub fn validate_user_id(field: &'static str, id: &str) -> Result<(), ValidationError> {
    if id.trim().is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if id.trim() != id {
        return Err(ValidationError::new(
            field,
            "must not start or end with whitespace",
        ));
    }
    if id.chars().count() > MAX_USER_ID_LEN {
        return Err(ValidationError::new(
            field,
            format!("must be at most {MAX_USER_ID_LEN} characters"),
        ));
    }
    Ok(())
}

fn validate_items(field: &'static str, ids: &[i64]) -> Result<(), ValidationError> {
    if ids.is_empty() {
        return Err(ValidationError::new(field, "must list at least one item"));
    }
    if ids.len() > MAX_ITEMS_PER_SIDE {
        return Err(ValidationError::new(
            field,
            format!("must list at most {MAX_ITEMS_PER_SIDE} items"),
        ));
    }
    if let Some(bad) = ids.iter().find(|id| **id <= 0) {
        return Err(ValidationError::new(
            field,
            format!("item id {bad} is not positive"),
        ));
    }
    let mut seen = HashSet::new();
    if let Some(dup) = ids.iter().find(|id| !seen.insert(**id)) {
        return Err(ValidationError::new(
            field,
            format!("item {dup} is listed twice"),
        ));
    }
    Ok(())
}

impl NewOffer {
    /// Checks everything a new offer must satisfy before it is stored: both user ids valid
    /// and different (no trading with yourself), each item list non-empty, bounded, positive
    /// and free of duplicates, no item both offered and requested, a bounded message.
    /// An empty or blank message is normalised to none.
    pub fn validate(mut self) -> Result<Self, ValidationError> {
        validate_user_id("proposer_id", &self.proposer_id)?;
        validate_user_id("receiver_id", &self.receiver_id)?;
        if self.proposer_id == self.receiver_id {
            return Err(ValidationError::new(
                "receiver_id",
                "you cannot trade with yourself",
            ));
        }
        validate_items("offered_item_ids", &self.offered_item_ids)?;
        validate_items("requested_item_ids", &self.requested_item_ids)?;
        let offered: HashSet<i64> = self.offered_item_ids.iter().copied().collect();
        if let Some(both) = self
            .requested_item_ids
            .iter()
            .find(|id| offered.contains(id))
        {
            return Err(ValidationError::new(
                "requested_item_ids",
                format!("item {both} is both offered and requested"),
            ));
        }
        if let Some(m) = &self.message {
            if m.chars().count() > MAX_MESSAGE_LEN {
                return Err(ValidationError::new(
                    "message",
                    format!("must be at most {MAX_MESSAGE_LEN} characters"),
                ));
            }
            if m.trim().is_empty() {
                self.message = None;
            }
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::OfferStatus::*;
    use super::*;

    /// The complete rule table: (party, from, to) -> expected verdict. "ok", "400" or "403".
    fn expected(party: Party, from: OfferStatus, to: OfferStatus) -> &'static str {
        match (party, from, to) {
            (Party::Stranger, _, _) => "403",
            (_, _, Pending) => "400",
            (Party::Proposer, _, Accepted | Rejected) => "403",
            (Party::Receiver, _, Cancelled) => "403",
            (Party::Receiver, Pending, Accepted | Rejected) => "ok",
            (Party::Proposer, Pending, Cancelled) => "ok",
            (Party::Proposer | Party::Receiver, Accepted, Completed) => "ok",
            _ => "400",
        }
    }

    fn verdict(r: Result<(), TransitionError>) -> &'static str {
        match r {
            Ok(()) => "ok",
            Err(TransitionError::Invalid(_)) => "400",
            Err(TransitionError::Forbidden(_)) => "403",
        }
    }

    #[test]
    fn every_party_status_and_target_gets_the_verdict_of_the_rule_table() {
        let mut allowed = Vec::new();
        for party in [Party::Proposer, Party::Receiver, Party::Stranger] {
            for from in OfferStatus::ALL {
                for to in OfferStatus::ALL {
                    let got = verdict(decide_transition(party, from, to));
                    assert_eq!(got, expected(party, from, to), "{party:?} {from} -> {to}");
                    if got == "ok" {
                        allowed.push((party, from, to));
                    }
                }
            }
        }
        // Exactly the five moves of the original service, nothing more.
        assert_eq!(
            allowed,
            vec![
                (Party::Proposer, Pending, Cancelled),
                (Party::Proposer, Accepted, Completed),
                (Party::Receiver, Pending, Accepted),
                (Party::Receiver, Pending, Rejected),
                (Party::Receiver, Accepted, Completed),
            ]
        );
    }

    #[test]
    fn final_statuses_cannot_be_left_by_anyone() {
        for from in [Rejected, Cancelled, Completed] {
            for to in OfferStatus::ALL {
                for party in [Party::Proposer, Party::Receiver] {
                    assert!(
                        decide_transition(party, from, to).is_err(),
                        "{party:?} {from}->{to}"
                    );
                }
            }
        }
    }

    #[test]
    fn only_the_proposer_may_withdraw_and_only_while_pending() {
        assert_eq!(decide_withdrawal(Party::Proposer, Pending), Ok(()));
        for st in [Accepted, Rejected, Cancelled, Completed] {
            assert!(matches!(
                decide_withdrawal(Party::Proposer, st),
                Err(TransitionError::Invalid(_))
            ));
        }
        for party in [Party::Receiver, Party::Stranger] {
            for st in OfferStatus::ALL {
                assert!(matches!(
                    decide_withdrawal(party, st),
                    Err(TransitionError::Forbidden(_))
                ));
            }
        }
    }

    #[test]
    fn the_party_is_found_from_the_user_id() {
        assert_eq!(Party::of("a", "a", "b"), Party::Proposer);
        assert_eq!(Party::of("b", "a", "b"), Party::Receiver);
        assert_eq!(Party::of("c", "a", "b"), Party::Stranger);
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for st in OfferStatus::ALL {
            assert_eq!(OfferStatus::parse(st.as_str()), Some(st));
            assert_eq!(serde_json::to_value(st).unwrap(), st.as_str());
        }
        assert_eq!(OfferStatus::parse("Pending"), None);
    }

    fn offer() -> NewOffer {
        NewOffer {
            proposer_id: "alice".into(),
            receiver_id: "bob".into(),
            offered_item_ids: vec![1, 2],
            requested_item_ids: vec![3],
            message: Some("hi".into()),
        }
    }

    #[test]
    fn a_well_formed_offer_passes_validation_unchanged() {
        assert_eq!(offer().validate(), Ok(offer()));
    }

    #[test]
    fn each_bad_offer_is_refused_naming_the_field() {
        type Edit = fn(&mut NewOffer);
        let cases: Vec<(&str, Edit, &str)> = vec![
            (
                "self trade",
                |o| o.receiver_id = "alice".into(),
                "receiver_id",
            ),
            (
                "empty proposer",
                |o| o.proposer_id = "".into(),
                "proposer_id",
            ),
            (
                "blank receiver",
                |o| o.receiver_id = "  ".into(),
                "receiver_id",
            ),
            (
                "padded proposer",
                |o| o.proposer_id = " alice".into(),
                "proposer_id",
            ),
            (
                "long receiver",
                |o| o.receiver_id = "x".repeat(101),
                "receiver_id",
            ),
            (
                "no offered items",
                |o| o.offered_item_ids.clear(),
                "offered_item_ids",
            ),
            (
                "no requested items",
                |o| o.requested_item_ids.clear(),
                "requested_item_ids",
            ),
            (
                "duplicate offered",
                |o| o.offered_item_ids = vec![1, 1],
                "offered_item_ids",
            ),
            (
                "duplicate requested",
                |o| o.requested_item_ids = vec![3, 4, 3],
                "requested_item_ids",
            ),
            (
                "both sides",
                |o| o.requested_item_ids = vec![2],
                "requested_item_ids",
            ),
            (
                "zero id",
                |o| o.offered_item_ids = vec![0],
                "offered_item_ids",
            ),
            (
                "negative id",
                |o| o.requested_item_ids = vec![-3],
                "requested_item_ids",
            ),
            (
                "too many",
                |o| o.offered_item_ids = (1..=51).collect(),
                "offered_item_ids",
            ),
            (
                "long message",
                |o| o.message = Some("m".repeat(1001)),
                "message",
            ),
        ];
        for (name, edit, field) in cases {
            let mut o = offer();
            edit(&mut o);
            let err = o.validate().expect_err(name);
            assert_eq!(err.field, field, "{name}: {err}");
        }
    }

    #[test]
    fn limits_are_inclusive() {
        let mut o = offer();
        o.offered_item_ids = (1..=50).collect();
        o.requested_item_ids = vec![100];
        o.receiver_id = "x".repeat(100);
        o.message = Some("m".repeat(1000));
        assert!(o.validate().is_ok());
    }

    #[test]
    fn a_blank_message_is_stored_as_none() {
        let mut o = offer();
        o.message = Some("   ".into());
        assert_eq!(o.validate().unwrap().message, None);
    }
}
