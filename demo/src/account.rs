//! The account by event id, independent of the services' own counters: the ids the broker
//! confirmed (the matchmaking outbox's sent rows) against the ids stored (the notifications
//! database) and the ids dead-lettered (the DLQ, peeked). Pure; `run` reads the three lists.
use std::collections::{BTreeMap, BTreeSet};

/// The comparison of the three id lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciliation {
    /// Confirmed ids.
    pub confirmed: usize,
    /// Confirmed ids stored exactly once.
    pub stored_once: usize,
    /// Confirmed ids dead-lettered (and not stored).
    pub dead_lettered: usize,
    /// Confirmed ids neither stored nor dead-lettered: lost.
    pub missing: Vec<String>,
    /// Ids stored more than once.
    pub stored_twice: Vec<String>,
    /// Ids stored that no confirmed outbox row has (would mean rows from elsewhere).
    pub unexpected: Vec<String>,
}

impl Reconciliation {
    /// Every confirmed id stored exactly once or dead-lettered, and nothing else stored.
    pub fn ok(&self) -> bool {
        self.missing.is_empty() && self.stored_twice.is_empty() && self.unexpected.is_empty()
    }
}

/// Compares the lists. Ids are compared as lower-case text (PostgreSQL prints UUIDs in lower
/// case; an AMQP `message_id` is whatever the publisher wrote).
pub fn reconcile(confirmed: &[String], stored: &[String], dead: &[String]) -> Reconciliation {
    let norm = |s: &String| s.trim().to_ascii_lowercase();
    let confirmed: BTreeSet<String> = confirmed.iter().map(norm).collect();
    let dead: BTreeSet<String> = dead.iter().map(norm).collect();
    let mut times: BTreeMap<String, usize> = BTreeMap::new();
    for id in stored {
        *times.entry(norm(id)).or_default() += 1;
    }
    let mut r = Reconciliation {
        confirmed: confirmed.len(),
        ..Reconciliation::default()
    };
    for id in &confirmed {
        match times.get(id) {
            Some(1) => r.stored_once += 1,
            Some(_) => {}
            None if dead.contains(id) => r.dead_lettered += 1,
            None => r.missing.push(id.clone()),
        }
    }
    for (id, n) in &times {
        if *n > 1 {
            r.stored_twice.push(id.clone());
        }
        if !confirmed.contains(id) {
            r.unexpected.push(id.clone());
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_confirmed_id_stored_once_or_dead_lettered_balances() {
        let r = reconcile(&ids(&["a", "b", "c"]), &ids(&["A", "b"]), &ids(&["c"]));
        assert_eq!((r.confirmed, r.stored_once, r.dead_lettered), (3, 2, 1));
        assert!(r.ok(), "{r:?}");
    }

    #[test]
    fn a_confirmed_id_stored_nowhere_is_lost_even_when_the_counts_balance() {
        // Counts: 3 confirmed, 3 stored: a count comparison would call this balanced.
        let r = reconcile(&ids(&["a", "b", "c"]), &ids(&["a", "b", "x"]), &[]);
        assert_eq!(r.missing, ["c"]);
        assert_eq!(r.unexpected, ["x"]);
        assert!(!r.ok());
    }

    #[test]
    fn an_id_stored_twice_is_reported() {
        let r = reconcile(&ids(&["a", "b"]), &ids(&["a", "b", "b"]), &[]);
        assert_eq!(r.stored_twice, ["b"]);
        assert_eq!(r.stored_once, 1);
        assert!(!r.ok());
    }
}
