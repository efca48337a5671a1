//! The outage drill, as a pure decision: which fault comes next and when a fault counts as
//! recovered, from what the view observed. The faults are real (see `run`): the broker pod
//! deleted, a consumer's container killed (SIGKILL) while it holds unacknowledged messages,
//! the database server restarted in immediate mode (a crash, then crash recovery).
use std::fmt;
use std::time::Duration;

/// The faults, in the order the drill injects them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `kubectl delete pod` of the operator's broker pod.
    BrokerPod,
    /// SIGKILL of a consumer's container while its channel holds unacknowledged messages.
    ConsumerMidBatch,
    /// The database server stopped in immediate mode and started again.
    DatabaseRestart,
}

impl Fault {
    /// Every fault, in drill order.
    pub const ALL: [Fault; 3] = [
        Fault::BrokerPod,
        Fault::ConsumerMidBatch,
        Fault::DatabaseRestart,
    ];

    /// What the view calls it.
    pub fn name(self) -> &'static str {
        match self {
            Fault::BrokerPod => "broker pod killed",
            Fault::ConsumerMidBatch => "consumer killed mid-batch",
            Fault::DatabaseRestart => "database restarted",
        }
    }

    /// What recovered means for it, in words.
    pub fn recovered_when(self) -> &'static str {
        match self {
            Fault::BrokerPod => {
                "a new broker pod Ready, a consumer on the queue, events confirmed and stored again"
            }
            Fault::ConsumerMidBatch => {
                "the killed container restarted, every consumer pod Ready, events stored again"
            }
            Fault::DatabaseRestart => "events confirmed and stored again",
        }
    }
}

/// The first fault comes this long after the load started: 25 s is mid-burst of the load's
/// first cycle (`plan`: steady 0-20 s, burst 20-40 s), when the queue holds a backlog.
pub const FIRST_AT: Duration = Duration::from_secs(25);
/// Pause between one fault's recovery and the next fault, so the view shows the calm between.
pub const GAP: Duration = Duration::from_secs(5);
/// A consumer is killed only while it holds unacknowledged messages; if none does within this
/// long (a quiet phase), it is killed anyway and the drill says so.
pub const MID_BATCH_WAIT: Duration = Duration::from_secs(20);
/// A fault not recovered within this long fails the run: far above the broker's start on a
/// loaded node (its probes alone allow about a minute), so only a real failure trips it.
pub const RECOVERY_GUARD: Duration = Duration::from_secs(240);

/// What the drill sees in one refresh (`None`: could not be read just now).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Since the load started.
    pub elapsed: Duration,
    /// Uids of the broker pods that are Ready.
    pub ready_broker_uids: Vec<String>,
    /// Consumers attached to the queue.
    pub queue_consumers: Option<u64>,
    /// Pod IPs of consumers holding unacknowledged messages, most first.
    pub mid_batch: Vec<String>,
    /// Consumer pods Ready / wanted (the Deployment's replicas).
    pub consumers_ready: Option<(i32, i32)>,
    /// Sum of the consumer pods' container restarts.
    pub consumer_restarts: i32,
    /// Outbox rows confirmed by the broker.
    pub published: Option<u64>,
    /// Rows in the notifications database.
    pub stored: Option<u64>,
}

/// What the fault was done to, remembered to judge the recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injected {
    /// The fault.
    pub fault: Fault,
    /// When (since the load started).
    pub at: Duration,
    /// Which pod or server, in words.
    pub target: String,
    /// The broker pods' uids at injection (a recovered broker is a new one).
    pub broker_uids: Vec<String>,
    /// Consumer restarts at injection.
    pub consumer_restarts: i32,
    /// Confirmed and stored counts at injection (recovery: both moved on).
    pub published: Option<u64>,
    /// See `published`.
    pub stored: Option<u64>,
}

/// One fault's outcome so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// What was done.
    pub injected: Injected,
    /// How long the recovery took, once it did.
    pub recovered_in: Option<Duration>,
    /// When it was judged not recovered within [`RECOVERY_GUARD`].
    pub gave_up: bool,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.injected;
        write!(
            f,
            "t={}s {} ({}): ",
            i.at.as_secs(),
            i.fault.name(),
            i.target
        )?;
        match (self.recovered_in, self.gave_up) {
            (Some(d), _) => write!(f, "recovered in {}s", d.as_secs()),
            (None, true) => write!(
                f,
                "NOT recovered within {}s ({})",
                RECOVERY_GUARD.as_secs(),
                i.fault.recovered_when()
            ),
            (None, false) => write!(f, "recovering ({})", i.fault.recovered_when()),
        }
    }
}

/// What to do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    Wait,
    /// Inject `fault`; for a consumer, into the pod with this IP (`None`: any consumer, no
    /// batch in hand was seen).
    Inject(Fault, Option<String>),
}

/// The drill's progress.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drill {
    /// Faults injected so far, in order.
    pub steps: Vec<Step>,
    /// Since when the next consumer kill waits for a batch in hand.
    waiting_for_batch_since: Option<Duration>,
}

fn moved_on(now: Option<u64>, then: Option<u64>) -> bool {
    match (now, then) {
        (Some(n), Some(t)) => n > t,
        // Unknown at injection (the source was down): any reading now counts.
        (Some(_), None) => true,
        _ => false,
    }
}

/// Whether `i` has recovered given `o`.
pub fn recovered(i: &Injected, o: &Observed) -> bool {
    let flowing = moved_on(o.published, i.published) && moved_on(o.stored, i.stored);
    match i.fault {
        Fault::BrokerPod => {
            o.ready_broker_uids
                .iter()
                .any(|u| !i.broker_uids.contains(u))
                && o.queue_consumers.unwrap_or(0) >= 1
                && flowing
        }
        Fault::ConsumerMidBatch => {
            o.consumer_restarts > i.consumer_restarts
                && o.consumers_ready
                    .is_some_and(|(ready, wanted)| ready >= wanted && ready > 0)
                && moved_on(o.stored, i.stored)
        }
        Fault::DatabaseRestart => flowing,
    }
}

impl Drill {
    /// Whether every fault was injected and judged (recovered or given up).
    pub fn finished(&self) -> bool {
        self.steps.len() == Fault::ALL.len() && self.steps.iter().all(Step::judged)
    }

    /// Whether every fault recovered.
    pub fn all_recovered(&self) -> bool {
        self.steps.len() == Fault::ALL.len() && self.steps.iter().all(|s| s.recovered_in.is_some())
    }

    /// Judges the fault in progress with `o`, then says what to do next.
    pub fn decide(&mut self, o: &Observed) -> Action {
        if let Some(step) = self.steps.last_mut()
            && !step.judged()
        {
            let since = o.elapsed.saturating_sub(step.injected.at);
            if recovered(&step.injected, o) {
                step.recovered_in = Some(since);
            } else if since > RECOVERY_GUARD {
                step.gave_up = true;
            }
            return Action::Wait;
        }
        let Some(&next) = Fault::ALL.get(self.steps.len()) else {
            return Action::Wait;
        };
        let due = match self.steps.last() {
            None => FIRST_AT,
            Some(s) => s.injected.at + s.recovered_in.unwrap_or(RECOVERY_GUARD) + GAP,
        };
        if o.elapsed < due {
            return Action::Wait;
        }
        if next != Fault::ConsumerMidBatch {
            return Action::Inject(next, None);
        }
        if let Some(peer) = o.mid_batch.first() {
            self.waiting_for_batch_since = None;
            return Action::Inject(next, Some(peer.clone()));
        }
        let since = *self.waiting_for_batch_since.get_or_insert(o.elapsed);
        if o.elapsed.saturating_sub(since) >= MID_BATCH_WAIT {
            self.waiting_for_batch_since = None;
            return Action::Inject(next, None);
        }
        Action::Wait
    }

    /// Records a fault the caller injected.
    pub fn record(&mut self, injected: Injected) {
        self.steps.push(Step {
            injected,
            recovered_in: None,
            gave_up: false,
        });
    }
}

impl Step {
    /// Recovered or given up.
    pub fn judged(&self) -> bool {
        self.recovered_in.is_some() || self.gave_up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Observed {
        Observed {
            elapsed: Duration::from_secs(secs),
            ready_broker_uids: vec!["old".into()],
            queue_consumers: Some(1),
            consumers_ready: Some((2, 2)),
            published: Some(100),
            stored: Some(90),
            ..Observed::default()
        }
    }

    fn injected(fault: Fault, secs: u64, o: &Observed) -> Injected {
        Injected {
            fault,
            at: Duration::from_secs(secs),
            target: "x".into(),
            broker_uids: o.ready_broker_uids.clone(),
            consumer_restarts: o.consumer_restarts,
            published: o.published,
            stored: o.stored,
        }
    }

    #[test]
    fn nothing_happens_before_the_first_fault_is_due() {
        let mut d = Drill::default();
        assert_eq!(d.decide(&at(10)), Action::Wait);
        assert_eq!(d.decide(&at(25)), Action::Inject(Fault::BrokerPod, None));
    }

    #[test]
    fn the_broker_recovers_only_with_a_new_ready_pod_a_consumer_and_events_flowing() {
        let before = at(25);
        let i = injected(Fault::BrokerPod, 25, &before);
        let mut o = at(40);
        assert!(!recovered(&i, &o), "the old pod does not count");
        o.ready_broker_uids = vec!["new".into()];
        o.queue_consumers = Some(0);
        o.published = Some(120);
        o.stored = Some(95);
        assert!(!recovered(&i, &o), "no consumer on the queue yet");
        o.queue_consumers = Some(2);
        o.stored = Some(90);
        assert!(!recovered(&i, &o), "nothing stored since");
        o.stored = Some(91);
        assert!(recovered(&i, &o));
    }

    #[test]
    fn the_next_fault_waits_for_the_recovery_and_a_gap() {
        let mut d = Drill::default();
        let o = at(25);
        d.record(injected(Fault::BrokerPod, 25, &o));
        let mut later = at(55);
        later.ready_broker_uids = vec!["new".into()];
        later.published = Some(150);
        later.stored = Some(140);
        assert_eq!(
            d.decide(&later),
            Action::Wait,
            "judged recovered this refresh"
        );
        assert_eq!(d.steps[0].recovered_in, Some(Duration::from_secs(30)));
        later.elapsed = Duration::from_secs(58);
        assert_eq!(d.decide(&later), Action::Wait, "within the gap");
        later.elapsed = Duration::from_secs(60);
        later.mid_batch = vec!["10.246.0.8".into()];
        assert_eq!(
            d.decide(&later),
            Action::Inject(Fault::ConsumerMidBatch, Some("10.246.0.8".into()))
        );
    }

    #[test]
    fn a_consumer_is_killed_mid_batch_or_after_waiting_for_one_in_vain() {
        let mut d = Drill::default();
        let o = at(25);
        d.record(injected(Fault::BrokerPod, 25, &o));
        d.steps[0].recovered_in = Some(Duration::from_secs(5));
        assert_eq!(d.decide(&at(35)), Action::Wait, "no batch in hand");
        assert_eq!(d.decide(&at(54)), Action::Wait);
        assert_eq!(
            d.decide(&at(55)),
            Action::Inject(Fault::ConsumerMidBatch, None)
        );
    }

    #[test]
    fn a_fault_that_never_recovers_is_given_up_after_the_guard_and_fails_the_drill() {
        let mut d = Drill::default();
        for (k, fault) in Fault::ALL.into_iter().enumerate() {
            let t = 25 + k as u64 * 300;
            d.record(injected(fault, t, &at(t)));
            let stuck = at(t + RECOVERY_GUARD.as_secs() + 1);
            assert_eq!(d.decide(&stuck), Action::Wait);
            assert!(d.steps[k].gave_up);
        }
        assert!(d.finished());
        assert!(!d.all_recovered());
        assert!(d.steps[0].to_string().contains("NOT recovered"));
    }

    #[test]
    fn a_killed_consumer_recovers_once_its_container_restarted_and_every_pod_is_ready() {
        let i = injected(Fault::ConsumerMidBatch, 60, &at(60));
        let mut o = at(61);
        o.stored = Some(95);
        assert!(!recovered(&i, &o), "the kubelet has not seen the kill yet");
        o.consumer_restarts = 1;
        o.consumers_ready = Some((1, 2));
        assert!(!recovered(&i, &o), "the restarted pod is not Ready yet");
        o.consumers_ready = Some((2, 2));
        assert!(recovered(&i, &o));
    }

    #[test]
    fn the_database_recovers_once_events_are_confirmed_and_stored_again() {
        let i = injected(Fault::DatabaseRestart, 100, &at(100));
        let mut o = at(103);
        o.published = None;
        o.stored = None;
        assert!(!recovered(&i, &o), "unreadable while it restarts");
        o.published = Some(101);
        o.stored = Some(91);
        assert!(recovered(&i, &o));
        let step = Step {
            injected: i,
            recovered_in: Some(Duration::from_secs(3)),
            gave_up: false,
        };
        assert_eq!(
            step.to_string(),
            "t=100s database restarted (x): recovered in 3s"
        );
    }
}
