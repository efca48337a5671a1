//! Which notification an offer change produces, for whom, with which words. Pure.
use crate::offer::OfferStatus;
use swappo_messaging::{EventType, NotificationEvent};

/// A change to an offer that someone must hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferChange {
    /// The proposer made the offer.
    Created,
    /// The offer moved to this status (by PATCH).
    StatusChanged(OfferStatus),
    /// The proposer deleted the pending offer.
    Withdrawn,
}

impl OfferChange {
    /// The metric label for this change.
    pub fn label(self) -> &'static str {
        match self {
            OfferChange::Created => "created",
            OfferChange::StatusChanged(s) => s.as_str(),
            OfferChange::Withdrawn => "withdrawn",
        }
    }
}

/// The parties of an offer and who acted: enough to address the event.
#[derive(Debug, Clone, Copy)]
pub struct Parties<'a> {
    /// The offer's id.
    pub offer_id: i64,
    /// Who made the offer.
    pub proposer_id: &'a str,
    /// Who received it.
    pub receiver_id: &'a str,
    /// Who made this change (always one of the two).
    pub actor_id: &'a str,
}

impl Parties<'_> {
    /// The party who did not act: the one to notify.
    fn other(&self) -> &str {
        if self.actor_id == self.proposer_id {
            self.receiver_id
        } else {
            self.proposer_id
        }
    }
}

/// The event type, title and body for a change (DESIGN.md §6). The four status changes keep
/// the original Python service's wording, which the front end shows as it is; the original
/// sent nothing on creation, so that one is ours.
pub fn wording(change: OfferChange) -> Option<(EventType, &'static str, &'static str)> {
    use OfferStatus::*;
    Some(match change {
        OfferChange::Created => (
            EventType::TradeOfferReceived,
            "New Trade Offer",
            "You received a new trade offer.",
        ),
        OfferChange::StatusChanged(Accepted) => (
            EventType::TradeOfferAccepted,
            "Trade Offer Accepted! 🎉",
            "Great news! Your trade offer has been accepted.",
        ),
        OfferChange::StatusChanged(Rejected) => (
            EventType::TradeOfferRejected,
            "Trade Offer Declined",
            "Your trade offer was declined. Keep exploring!",
        ),
        OfferChange::StatusChanged(Cancelled) | OfferChange::Withdrawn => (
            EventType::TradeOfferCancelled,
            "Trade Offer Cancelled",
            "A trade offer you received has been cancelled.",
        ),
        OfferChange::StatusChanged(Completed) => (
            EventType::TradeCompleted,
            "Trade Completed! ✅",
            "Congratulations! Your trade has been completed.",
        ),
        OfferChange::StatusChanged(Pending) => return None,
    })
}

/// The notification for `change`, addressed to the party who did not act, with the actor as
/// the related user and the offer as the related offer. `None` for a change nobody is told
/// about (there is none today: moving back to pending is refused earlier).
pub fn event_for(change: OfferChange, parties: Parties<'_>) -> Option<NotificationEvent> {
    let (event_type, title, body) = wording(change)?;
    Some(
        NotificationEvent::new(parties.other(), event_type, title, body)
            .with_related_user(parties.actor_id)
            .with_related_offer(parties.offer_id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parties(actor: &'static str) -> Parties<'static> {
        Parties {
            offer_id: 42,
            proposer_id: "user123",
            receiver_id: "user456",
            actor_id: actor,
        }
    }

    #[test]
    fn each_change_notifies_the_other_party_with_its_own_type() {
        use OfferStatus::*;
        let cases = [
            (
                OfferChange::Created,
                "user123",
                EventType::TradeOfferReceived,
                "user456",
            ),
            (
                OfferChange::StatusChanged(Accepted),
                "user456",
                EventType::TradeOfferAccepted,
                "user123",
            ),
            (
                OfferChange::StatusChanged(Rejected),
                "user456",
                EventType::TradeOfferRejected,
                "user123",
            ),
            (
                OfferChange::StatusChanged(Cancelled),
                "user123",
                EventType::TradeOfferCancelled,
                "user456",
            ),
            (
                OfferChange::Withdrawn,
                "user123",
                EventType::TradeOfferCancelled,
                "user456",
            ),
            (
                OfferChange::StatusChanged(Completed),
                "user123",
                EventType::TradeCompleted,
                "user456",
            ),
            (
                OfferChange::StatusChanged(Completed),
                "user456",
                EventType::TradeCompleted,
                "user123",
            ),
        ];
        for (change, actor, ty, to) in cases {
            let e = event_for(change, parties(actor)).expect("an event");
            assert_eq!(e.event_type, ty, "{change:?}");
            assert_eq!(e.user_id, to, "{change:?}");
            assert_eq!(e.related_user_id.as_deref(), Some(actor));
            assert_eq!(e.related_offer_id, Some(42));
            e.validate().expect("the event meets the contract");
        }
    }

    #[test]
    fn status_changes_keep_the_original_services_words_which_the_front_end_shows() {
        let words = |to| {
            let e = event_for(OfferChange::StatusChanged(to), parties("user456")).unwrap();
            (e.title, e.body)
        };
        let expect = |t: &str, b: &str| (t.to_string(), b.to_string());
        assert_eq!(
            words(OfferStatus::Accepted),
            expect(
                "Trade Offer Accepted! 🎉",
                "Great news! Your trade offer has been accepted."
            )
        );
        assert_eq!(
            words(OfferStatus::Rejected),
            expect(
                "Trade Offer Declined",
                "Your trade offer was declined. Keep exploring!"
            )
        );
        assert_eq!(
            words(OfferStatus::Cancelled),
            expect(
                "Trade Offer Cancelled",
                "A trade offer you received has been cancelled."
            )
        );
        assert_eq!(
            words(OfferStatus::Completed),
            expect(
                "Trade Completed! ✅",
                "Congratulations! Your trade has been completed."
            )
        );
    }

    #[test]
    fn events_get_distinct_ids() {
        let a = event_for(OfferChange::Created, parties("user123")).unwrap();
        let b = event_for(OfferChange::Created, parties("user123")).unwrap();
        assert_ne!(a.id, b.id);
    }
}
