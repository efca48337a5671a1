//! What to do after a reconcile: when to look again ([`requeue_after`]) and how long to back
//! off after failures ([`error_policy`]).
use crate::context::{Context, Settings};
use crate::crd::SwappoMessaging;
use crate::error::Error;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// When to look again after a successful reconcile: at the recheck interval while the broker
/// is ready, and also while a managed broker's pods are not ready (the Deployment's watch
/// brings their change; polling at the retry interval would only add load: 1000 brokers
/// starting together would mean 100 reconciles per second for nothing); at the retry interval
/// otherwise (an AMQP login failing has no watch to wake the operator).
pub fn requeue_after(
    broker_ready: bool,
    broker_pods: Option<(i32, i32)>,
    settings: &Settings,
) -> Duration {
    let waiting_for_pods = broker_pods.is_some_and(|(ready, _)| ready < 1);
    if broker_ready || waiting_for_pods {
        settings.recheck
    } else {
        settings.retry
    }
}

/// The delay before retrying after `failures` consecutive failures: 5 s doubling to 5 min.
pub fn backoff_delay(failures: u32) -> Duration {
    Duration::from_secs(5u64.saturating_mul(1 << failures.min(6)).min(300))
}

/// `error_policy`: requeue with a per-object exponential backoff.
pub fn error_policy(sm: Arc<SwappoMessaging>, error: &Error, ctx: Arc<Context>) -> Action {
    let mut failures = ctx
        .failures
        .lock()
        .expect("the failure map is never poisoned");
    let n = failures
        .entry(ObjectRef::from_obj(sm.as_ref()))
        .or_insert(0);
    let delay = backoff_delay(*n);
    *n = n.saturating_add(1);
    warn!(name = %sm.name_any(), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_broker_with_ready_pods_that_does_not_answer_is_polled_at_the_retry_interval() {
        let s = Settings::default();
        assert_eq!(requeue_after(true, Some((1, 1)), &s), s.recheck);
        assert_eq!(requeue_after(true, None, &s), s.recheck);
        assert_eq!(requeue_after(false, Some((0, 1)), &s), s.recheck);
        assert_eq!(requeue_after(false, Some((1, 1)), &s), s.retry);
        assert_eq!(requeue_after(false, None, &s), s.retry);
    }

    #[test]
    fn failures_back_off_from_five_seconds_to_five_minutes() {
        assert_eq!(backoff_delay(0), Duration::from_secs(5));
        assert_eq!(backoff_delay(1), Duration::from_secs(10));
        assert_eq!(backoff_delay(3), Duration::from_secs(40));
        assert_eq!(backoff_delay(6), Duration::from_secs(300));
        assert_eq!(backoff_delay(u32::MAX), Duration::from_secs(300));
    }
}
