//! The final account: every event the broker confirmed must be stored or dead-lettered. Pure.
use std::fmt;

/// Counts read after draining, each from its source of truth.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Offers the driver created through the matchmaking API.
    pub offers: u64,
    /// Outbox rows written (one per event, in the offer's transaction).
    pub outbox: u64,
    /// Outbox rows the relay marked sent: the broker confirmed them.
    pub published: u64,
    /// Rows in the notifications database (one per event id: duplicates cannot exist).
    pub stored: u64,
    /// Messages in the dead-letter queue.
    pub dead_lettered: u64,
    /// Messages still in the queue (ready + unacknowledged) when counted.
    pub in_queue: u64,
    /// Notifications the driver read back through the notifications API.
    pub read_back: u64,
    /// Requests of the driver that failed.
    pub request_errors: u64,
}

/// The verdict on [`Totals`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Confirmed events neither stored nor dead-lettered (negative: more stored than sent,
    /// which would mean rows from elsewhere).
    pub lost: i64,
    /// Outbox rows never published.
    pub unsent: u64,
}

impl Verdict {
    /// Nothing lost, nothing left behind, nothing unexplained.
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.unsent == 0
    }
}

impl Totals {
    /// lost = published - stored - dead-lettered; unsent = outbox - published.
    pub fn verdict(&self) -> Verdict {
        let accounted = self.stored as i128 + self.dead_lettered as i128;
        Verdict {
            lost: (self.published as i128 - accounted) as i64,
            unsent: self.outbox.saturating_sub(self.published),
        }
    }
}

impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.verdict();
        writeln!(f, "== swappo demo summary ==")?;
        writeln!(f, "offers created       {:>9}", self.offers)?;
        writeln!(f, "events in outbox     {:>9}", self.outbox)?;
        writeln!(
            f,
            "events published     {:>9}   (outbox rows confirmed by the broker)",
            self.published
        )?;
        writeln!(
            f,
            "events stored        {:>9}   (rows in the notifications database)",
            self.stored
        )?;
        writeln!(f, "events dead-lettered {:>9}", self.dead_lettered)?;
        writeln!(f, "left in queue        {:>9}", self.in_queue)?;
        writeln!(f, "left unsent          {:>9}", v.unsent)?;
        writeln!(f, "read back via API    {:>9}", self.read_back)?;
        writeln!(f, "request errors       {:>9}", self.request_errors)?;
        writeln!(
            f,
            "lost                 {:>9}   (published - stored - dead-lettered)",
            v.lost
        )?;
        write!(
            f,
            "result: {}",
            if v.ok() {
                "OK, every published event was stored or dead-lettered"
            } else {
                "FAILED"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(outbox: u64, published: u64, stored: u64, dlq: u64) -> Totals {
        Totals {
            outbox,
            published,
            stored,
            dead_lettered: dlq,
            ..Totals::default()
        }
    }

    #[test]
    fn every_published_event_stored_or_dead_lettered_is_nothing_lost() {
        let v = totals(100, 100, 97, 3).verdict();
        assert_eq!(v, Verdict { lost: 0, unsent: 0 });
        assert!(v.ok());
    }

    #[test]
    fn a_published_event_neither_stored_nor_dead_lettered_counts_as_lost() {
        let v = totals(100, 100, 98, 1).verdict();
        assert_eq!(v.lost, 1);
        assert!(!v.ok());
    }

    #[test]
    fn more_stored_than_published_is_not_ok_either() {
        let v = totals(10, 10, 11, 0).verdict();
        assert_eq!(v.lost, -1);
        assert!(!v.ok());
    }

    #[test]
    fn an_outbox_row_never_published_fails_the_run() {
        let v = totals(10, 9, 9, 0).verdict();
        assert_eq!((v.lost, v.unsent), (0, 1));
        assert!(!v.ok());
    }

    #[test]
    fn the_summary_names_lost_and_the_result() {
        let text = totals(5, 5, 5, 0).to_string();
        assert!(text.contains("lost                         0"), "{text}");
        assert!(text.contains("result: OK"), "{text}");
        assert!(totals(5, 5, 4, 0).to_string().contains("result: FAILED"));
    }
}
