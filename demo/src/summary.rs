//! The final account: every event id the broker confirmed must be stored exactly once or
//! dead-lettered, by set comparison ([`crate::account`]). Pure.
use crate::account::Reconciliation;
use std::fmt;

/// Counts read after draining, each from its source of truth.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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
    /// The comparison by event id.
    pub ids: Reconciliation,
}

/// The verdict on [`Totals`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Confirmed event ids neither stored nor dead-lettered.
    pub lost: u64,
    /// Outbox rows never published.
    pub unsent: u64,
    /// Ids stored twice or stored without a confirmed outbox row.
    pub unexplained: u64,
}

impl Verdict {
    /// Nothing lost, nothing left behind, nothing unexplained.
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.unsent == 0 && self.unexplained == 0
    }
}

impl Totals {
    /// lost: confirmed ids missing from the stored and dead-lettered sets; unsent = outbox -
    /// published.
    pub fn verdict(&self) -> Verdict {
        Verdict {
            lost: self.ids.missing.len() as u64,
            unsent: self.outbox.saturating_sub(self.published),
            unexplained: (self.ids.stored_twice.len() + self.ids.unexpected.len()) as u64,
        }
    }
}

/// Ids listed in the summary at most (the rest are counted).
const SHOWN_IDS: usize = 10;

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
            "ids stored once      {:>9}   of {} confirmed ids ({} dead-lettered)",
            self.ids.stored_once, self.ids.confirmed, self.ids.dead_lettered
        )?;
        writeln!(f, "ids stored twice     {:>9}", self.ids.stored_twice.len())?;
        writeln!(
            f,
            "ids never confirmed  {:>9}   (stored without a confirmed outbox row)",
            self.ids.unexpected.len()
        )?;
        writeln!(
            f,
            "lost                 {:>9}   (confirmed ids neither stored nor dead-lettered, by set comparison)",
            v.lost
        )?;
        for (what, list) in [
            ("lost", &self.ids.missing),
            ("stored twice", &self.ids.stored_twice),
            ("never confirmed", &self.ids.unexpected),
        ] {
            if !list.is_empty() {
                let shown: Vec<&str> = list.iter().take(SHOWN_IDS).map(String::as_str).collect();
                writeln!(
                    f,
                    "  {what}: {}{}",
                    shown.join(" "),
                    if list.len() > SHOWN_IDS { " ..." } else { "" }
                )?;
            }
        }
        write!(
            f,
            "result: {}",
            if v.ok() {
                "OK, every confirmed event id was stored exactly once or dead-lettered"
            } else {
                "FAILED"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::reconcile;

    fn ids(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    fn totals(outbox: u64, confirmed: &[String], stored: &[String], dlq: &[String]) -> Totals {
        Totals {
            outbox,
            published: confirmed.len() as u64,
            stored: stored.len() as u64,
            dead_lettered: dlq.len() as u64,
            ids: reconcile(confirmed, stored, dlq),
            ..Totals::default()
        }
    }

    #[test]
    fn every_confirmed_id_stored_or_dead_lettered_is_nothing_lost() {
        let sent = ids("e", 100);
        let v = totals(100, &sent, &sent[..97], &sent[97..]).verdict();
        assert_eq!(
            v,
            Verdict {
                lost: 0,
                unsent: 0,
                unexplained: 0
            }
        );
        assert!(v.ok());
    }

    #[test]
    fn a_confirmed_id_neither_stored_nor_dead_lettered_counts_as_lost() {
        let sent = ids("e", 100);
        let v = totals(100, &sent, &sent[..98], &sent[99..]).verdict();
        assert_eq!(v.lost, 1);
        assert!(!v.ok());
    }

    #[test]
    fn a_stored_id_nobody_confirmed_is_not_ok_either() {
        let sent = ids("e", 10);
        let mut stored = sent.clone();
        stored.push("stranger".into());
        let t = totals(10, &sent, &stored, &[]);
        assert_eq!(t.verdict().unexplained, 1);
        assert!(!t.verdict().ok());
        assert!(t.to_string().contains("never confirmed: stranger"), "{t}");
    }

    #[test]
    fn an_outbox_row_never_published_fails_the_run() {
        let sent = ids("e", 9);
        let v = totals(10, &sent, &sent, &[]).verdict();
        assert_eq!((v.lost, v.unsent), (0, 1));
        assert!(!v.ok());
    }

    #[test]
    fn the_summary_names_lost_the_missing_ids_and_the_result() {
        let sent = ids("e", 5);
        let text = totals(5, &sent, &sent, &[]).to_string();
        assert!(text.contains("lost                         0"), "{text}");
        assert!(
            text.contains("ids stored once              5   of 5"),
            "{text}"
        );
        assert!(text.contains("result: OK"), "{text}");
        let failed = totals(5, &sent, &sent[..4], &[]).to_string();
        assert!(failed.contains("result: FAILED"), "{failed}");
        assert!(failed.contains("  lost: e4"), "{failed}");
    }
}
