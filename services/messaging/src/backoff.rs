//! Capped exponential backoff for reconnects and retries (pure).
use std::time::Duration;

/// `initial * 2^attempt`, capped at `max`, with "equal jitter": the delay is drawn from
/// `[d/2, d]`, so a fleet of consumers that lost the broker together does not reconnect in
/// lockstep, while each still waits at least half the nominal delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
}

impl Default for Backoff {
    /// 100 ms doubling to 10 s: a restarted broker is back within a second or two, and a
    /// broker that stays down costs one connection attempt every 5-10 s per client.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The nominal (un-jittered) delay before retry number `attempt` (0-based).
    pub fn nominal(&self, attempt: u32) -> Duration {
        // 2^20 * 100 ms is already ~29 h: clamp the exponent so the multiply cannot overflow.
        let factor = 1u32 << attempt.min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay to wait before retry number `attempt`, jittered into `[nominal/2, nominal]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let nominal = self.nominal(attempt);
        let half = nominal / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_from_the_initial_value_up_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let ms: Vec<u128> = (0..6).map(|a| b.nominal(a).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.nominal(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_between_half_and_the_full_nominal_delay() {
        let b = Backoff::default();
        for attempt in 0..12 {
            let (d, n) = (b.delay(attempt), b.nominal(attempt));
            assert!(d >= n / 2 && d <= n, "attempt {attempt}: {d:?} vs {n:?}");
        }
    }
}
