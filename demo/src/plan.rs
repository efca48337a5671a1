//! The load the demo drives, as a pure function of the time since it started, and the fate of
//! each offer. Pure: the load driver asks, then acts.
use std::time::Duration;

/// What the load driver does in one phase.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Phase {
    /// Offers at a steady rate (offers per second).
    Steady(f64),
    /// Offers as fast as the workers can make them: the backlog grows, the scaler should act.
    Burst,
    /// A trickle (offers per second): the backlog drains, the scaler waits before scaling down.
    Quiet(f64),
}

impl Phase {
    /// Short name for the live view.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Steady(_) => "steady",
            Phase::Burst => "burst",
            Phase::Quiet(_) => "quiet",
        }
    }

    /// Offers per second, `None` when unlimited.
    pub fn rate(&self) -> Option<f64> {
        match self {
            Phase::Steady(r) | Phase::Quiet(r) => Some(*r),
            Phase::Burst => None,
        }
    }
}

/// One cycle of the load: 20 s steady, 20 s burst, 20 s quiet. A 60-second unattended run sees
/// each phase once; an interactive run repeats the cycle until Ctrl-C.
pub const CYCLE: Duration = Duration::from_secs(60);

/// Offers per second of the steady phase: about 40 events/s (an offer makes two to three
/// events), well within one consumer, so depth stays near zero.
pub const STEADY_RATE: f64 = 20.0;
/// Offers per second of the quiet phase.
pub const QUIET_RATE: f64 = 2.0;

/// The phase at `elapsed` since the load started.
pub fn phase_at(elapsed: Duration) -> Phase {
    let in_cycle = elapsed.as_secs() % CYCLE.as_secs();
    match in_cycle {
        0..20 => Phase::Steady(STEADY_RATE),
        20..40 => Phase::Burst,
        _ => Phase::Quiet(QUIET_RATE),
    }
}

/// What happens to an offer after it is made (DESIGN §6 event types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// The receiver accepts it (`trade_offer_accepted`), then the proposer completes the trade
    /// (`trade_completed`).
    AcceptedAndCompleted,
    /// The receiver accepts it and nothing more happens yet.
    Accepted,
    /// The receiver rejects it (`trade_offer_rejected`).
    Rejected,
    /// The proposer cancels it (`trade_offer_cancelled`).
    Cancelled,
}

impl Fate {
    /// The fate for a uniform roll in `0..100`: 30 % accepted and completed, 25 % accepted,
    /// 30 % rejected, 15 % cancelled.
    pub fn from_roll(roll: u32) -> Fate {
        match roll % 100 {
            0..30 => Fate::AcceptedAndCompleted,
            30..55 => Fate::Accepted,
            55..85 => Fate::Rejected,
            _ => Fate::Cancelled,
        }
    }

    /// Status changes after creation, each as (status, acting party is the receiver).
    pub fn steps(self) -> &'static [(&'static str, bool)] {
        match self {
            Fate::AcceptedAndCompleted => &[("accepted", true), ("completed", false)],
            Fate::Accepted => &[("accepted", true)],
            Fate::Rejected => &[("rejected", true)],
            Fate::Cancelled => &[("cancelled", false)],
        }
    }
}

/// Users of the demo marketplace: `user001` .. `user<n>`.
pub fn user_name(n: u32) -> String {
    format!("user{n:03}")
}

/// A proposer and a different receiver from two rolls among `users` users (at least 2).
pub fn pair(users: u32, a: u32, b: u32) -> (String, String) {
    let users = users.max(2);
    let proposer = a % users;
    // Any user but the proposer: shift by 1..users-1.
    let receiver = (proposer + 1 + b % (users - 1)) % users;
    (user_name(proposer + 1), user_name(receiver + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cycle_goes_steady_then_burst_then_quiet_and_repeats() {
        let at = |s| phase_at(Duration::from_secs(s)).name();
        assert_eq!(
            [
                at(0),
                at(19),
                at(20),
                at(39),
                at(40),
                at(59),
                at(60),
                at(85)
            ],
            [
                "steady", "steady", "burst", "burst", "quiet", "quiet", "steady", "burst"
            ]
        );
        assert_eq!(phase_at(Duration::from_secs(25)).rate(), None);
        assert_eq!(phase_at(Duration::ZERO).rate(), Some(STEADY_RATE));
    }

    #[test]
    fn every_fate_is_reachable_and_each_step_is_made_by_the_party_allowed_to() {
        let fates: Vec<Fate> = (0..100).map(Fate::from_roll).collect();
        for f in [
            Fate::AcceptedAndCompleted,
            Fate::Accepted,
            Fate::Rejected,
            Fate::Cancelled,
        ] {
            assert!(fates.contains(&f), "{f:?} never rolled");
        }
        // Only the receiver accepts or rejects; only the proposer cancels.
        assert_eq!(Fate::Cancelled.steps(), &[("cancelled", false)]);
        assert!(Fate::Rejected.steps()[0].1);
        assert_eq!(Fate::AcceptedAndCompleted.steps()[0], ("accepted", true));
    }

    #[test]
    fn a_pair_never_offers_to_oneself() {
        for a in 0..50 {
            for b in 0..50 {
                let (p, r) = pair(7, a, b);
                assert_ne!(p, r);
            }
        }
        assert_eq!(pair(2, 0, 0), ("user001".into(), "user002".into()));
    }
}
