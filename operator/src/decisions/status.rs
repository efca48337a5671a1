//! The status decision: conditions, broker summary and the Events of a transition, as pure
//! functions of what the reconciler observed.
use crate::crd::{BrokerStatus, SwappoMessaging, SwappoMessagingStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types.
pub mod condition {
    /// Everything below is True.
    pub const READY: &str = "Ready";
    /// The broker runs (managed) and accepts an AMQP login with the Secret's credentials.
    pub const BROKER_READY: &str = "BrokerReady";
    /// Every `spec.queues` entry is declared as specified.
    pub const QUEUES_READY: &str = "QueuesReady";
    /// Every consumer Deployment exists and was scaled as decided.
    pub const CONSUMERS_SCALED: &str = "ConsumersScaled";
}

/// What the reconciler found about the credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialsState {
    /// The credentials Secret is in place.
    Ok {
        /// The Secret clients read.
        secret: String,
        /// The broker user (not secret).
        username: String,
    },
    /// `spec.broker.credentialsSecret` names a Secret that does not exist.
    SecretNotFound(String),
    /// The Secret exists but lacks a non-empty `username` or `password`.
    SecretIncomplete {
        /// The Secret.
        secret: String,
        /// The key missing.
        key: String,
    },
}

/// The result of an AMQP login to the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AmqpCheck {
    /// Connection opened and closed.
    Ok,
    /// The broker refused the credentials.
    AuthenticationFailed(String),
    /// No connection (refused, DNS, TLS, protocol).
    Unreachable(String),
    /// No answer within the timeout.
    Timeout(std::time::Duration),
}

/// Everything the status decision needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// `host:port` clients use.
    pub endpoint: String,
    /// `host:port` the operator dialled (differs under the development override).
    pub dialled: String,
    /// What makes the broker's spec unusable, naming the field (it is then not applied).
    pub invalid_spec: Option<String>,
    /// Credentials.
    pub credentials: CredentialsState,
    /// Ready and wanted broker pods; `None` for an external broker.
    pub broker_pods: Option<(i32, i32)>,
    /// The AMQP login, when one was attempted.
    pub amqp: Option<AmqpCheck>,
}

/// A condition as decided, before timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// `True` or `False`.
    pub ok: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// What a user can act on.
    pub message: String,
}

/// The `BrokerReady` verdict.
pub fn broker_ready(obs: &Observed) -> Verdict {
    let no = |reason, message: String| Verdict {
        ok: false,
        reason,
        message,
    };
    if let Some(problem) = &obs.invalid_spec {
        return no(
            "InvalidBrokerSpec",
            format!("{problem}; the broker keeps its last applied settings until it is fixed"),
        );
    }
    let username = match &obs.credentials {
        CredentialsState::SecretNotFound(name) => {
            return no(
                "CredentialsSecretNotFound",
                format!(
                    "Secret {name} named by spec.broker.credentialsSecret does not exist: create it \
                     with keys username and password"
                ),
            );
        }
        CredentialsState::SecretIncomplete { secret, key } => {
            return no(
                "CredentialsSecretIncomplete",
                format!("Secret {secret} has no non-empty key {key}: add username and password"),
            );
        }
        CredentialsState::Ok { username, .. } => username,
    };
    if let Some((ready, wanted)) = obs.broker_pods
        && ready < wanted.max(1)
    {
        return no(
            "BrokerPodsNotReady",
            format!(
                "{ready}/{} broker pods ready; see the broker StatefulSet's pod and events",
                wanted.max(1)
            ),
        );
    }
    let secret = match &obs.credentials {
        CredentialsState::Ok { secret, .. } => secret.as_str(),
        _ => "",
    };
    let at = &obs.dialled;
    match &obs.amqp {
        None => no(
            "BrokerNotChecked",
            format!("no AMQP login to {at} attempted yet"),
        ),
        Some(AmqpCheck::Ok) => Verdict {
            ok: true,
            reason: "BrokerAvailable",
            message: format!("AMQP login to {at} as {username} succeeded"),
        },
        Some(AmqpCheck::AuthenticationFailed(detail)) => no(
            "AuthenticationFailed",
            format!(
                "the broker at {at} refused user {username} from Secret {secret}: make the Secret's \
                 username and password match a broker user with access to vhost / ({detail})"
            ),
        ),
        Some(AmqpCheck::Unreachable(detail)) => no(
            "BrokerUnreachable",
            format!("cannot open an AMQP connection to {at}: {detail}"),
        ),
        Some(AmqpCheck::Timeout(after)) => no(
            "BrokerTimeout",
            format!(
                "the broker at {at} did not complete an AMQP login within {}s",
                after.as_secs()
            ),
        ),
    }
}

/// `cond` with `lastTransitionTime` kept from `previous` when its status did not change.
fn with_transition(previous: Option<&Condition>, mut cond: Condition) -> Condition {
    if let Some(prev) = previous
        && prev.status == cond.status
    {
        cond.last_transition_time = prev.last_transition_time.clone();
    }
    cond
}

fn to_condition(type_: &str, v: &Verdict, generation: Option<i64>, now: &Time) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if v.ok { "True" } else { "False" }.to_owned(),
        reason: v.reason.to_owned(),
        message: v.message.clone(),
        observed_generation: generation,
        last_transition_time: now.clone(),
    }
}

/// The status to write for `sm` after observing `obs` at `now`. Fields other reconcilers own
/// (queues, consumers, replicaSetsCleaned, their conditions) are carried over unchanged;
/// `Ready` is True when every other condition is.
pub fn desired_status(sm: &SwappoMessaging, obs: &Observed, now: &Time) -> SwappoMessagingStatus {
    let current = sm.status.clone().unwrap_or_default();
    let generation = sm.metadata.generation;
    let previous = |t: &str| current.conditions.iter().find(|c| c.type_ == t);

    let broker = broker_ready(obs);
    let mut conditions: Vec<Condition> = vec![with_transition(
        previous(condition::BROKER_READY),
        to_condition(condition::BROKER_READY, &broker, generation, now),
    )];
    conditions.extend(
        current
            .conditions
            .iter()
            .filter(|c| c.type_ != condition::READY && c.type_ != condition::BROKER_READY)
            .cloned(),
    );
    let failing = conditions.iter().find(|c| c.status != "True");
    let ready = match failing {
        None => Verdict {
            ok: true,
            reason: "Ready",
            message: "all conditions are True".into(),
        },
        Some(c) => Verdict {
            ok: false,
            reason: if c.type_ == condition::BROKER_READY {
                "BrokerNotReady"
            } else {
                "NotReady"
            },
            message: format!("{} is {}: {}", c.type_, c.status, c.message),
        },
    };
    conditions.insert(
        0,
        with_transition(
            previous(condition::READY),
            to_condition(condition::READY, &ready, generation, now),
        ),
    );

    let secret_name = match &obs.credentials {
        CredentialsState::Ok { secret, .. } => secret.clone(),
        CredentialsState::SecretNotFound(s) => s.clone(),
        CredentialsState::SecretIncomplete { secret, .. } => secret.clone(),
    };
    SwappoMessagingStatus {
        observed_generation: generation,
        conditions,
        broker: Some(BrokerStatus {
            endpoint: obs.endpoint.clone(),
            secret_name,
            ready_replicas: obs.broker_pods.map(|(ready, _)| ready).unwrap_or(0),
        }),
        ..current
    }
}

/// The conditions the reconciler owns; the autoscaler owns `ConsumersScaled`.
pub const RECONCILER_CONDITIONS: [&str; 3] = [
    condition::READY,
    condition::BROKER_READY,
    condition::QUEUES_READY,
];

/// The fields of `status` whose conditions `owned` keeps, and the `fields` given, as a
/// server-side apply body's `status` (conditions sorted by type, absent fields left out).
fn owned_part(
    status: &SwappoMessagingStatus,
    owned: impl Fn(&str) -> bool,
    fields: serde_json::Value,
) -> serde_json::Value {
    let mut conditions: Vec<&Condition> = status
        .conditions
        .iter()
        .filter(|c| owned(&c.type_))
        .collect();
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    let mut part = fields;
    if let Some(map) = part.as_object_mut() {
        map.insert("conditions".into(), serde_json::json!(conditions));
        map.retain(|_, v| !v.is_null());
    }
    part
}

/// What the reconciler writes of `status` (under its own field manager): `observedGeneration`,
/// `broker`, `queuesDeclared` and its conditions ([`RECONCILER_CONDITIONS`]).
pub fn reconciler_part(status: &SwappoMessagingStatus) -> serde_json::Value {
    owned_part(
        status,
        |t| RECONCILER_CONDITIONS.contains(&t),
        serde_json::json!({
            "observedGeneration": status.observed_generation,
            "broker": status.broker,
            "queuesDeclared": status.queues_declared,
        }),
    )
}

/// What the autoscaler writes of `status` (under its own field manager): `queues`, `depth`,
/// `consumers`, `consumerReplicas` and `ConsumersScaled`.
pub fn scaler_part(status: &SwappoMessagingStatus) -> serde_json::Value {
    owned_part(
        status,
        |t| t == condition::CONSUMERS_SCALED,
        serde_json::json!({
            "queues": status.queues,
            "depth": status.depth,
            "consumers": status.consumers,
            "consumerReplicas": status.consumer_replicas,
        }),
    )
}

/// An Event to publish for a condition change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Warning when the condition went False.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: String,
    /// The condition's message.
    pub note: String,
}

/// The Events for the difference between the old and new status: one per condition whose
/// status or reason changed (so a broker going down and up again is visible in `kubectl
/// describe`), none when nothing did.
pub fn transitions(
    old: Option<&SwappoMessagingStatus>,
    new: &SwappoMessagingStatus,
) -> Vec<Transition> {
    new.conditions
        .iter()
        .filter(|c| c.type_ != condition::READY)
        .filter(|c| {
            let before = old.and_then(|o| o.conditions.iter().find(|p| p.type_ == c.type_));
            before.is_none_or(|p| p.status != c.status || p.reason != c.reason)
        })
        .map(|c| Transition {
            warning: c.status != "True",
            reason: if c.status == "True" {
                c.type_.clone()
            } else {
                c.reason.clone()
            },
            note: c.message.clone(),
        })
        .collect()
}

/// Sets condition `type_` in `status` from `verdict`, keeping `lastTransitionTime` when the
/// status did not change.
pub fn set_condition(
    status: &mut SwappoMessagingStatus,
    type_: &str,
    verdict: &Verdict,
    generation: Option<i64>,
    now: &Time,
) {
    let value = if verdict.ok { "True" } else { "False" };
    let previous = status.conditions.iter().position(|c| c.type_ == type_);
    let last_transition_time = previous
        .map(|i| &status.conditions[i])
        .filter(|c| c.status == value)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    let cond = Condition {
        type_: type_.to_owned(),
        status: value.to_owned(),
        reason: verdict.reason.to_owned(),
        message: verdict.message.clone(),
        observed_generation: generation,
        last_transition_time,
    };
    match previous {
        Some(i) => status.conditions[i] = cond,
        None => status.conditions.push(cond),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::TestExt;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(1_800_000_000 + secs).unwrap())
    }

    fn observed(amqp: Option<AmqpCheck>) -> Observed {
        Observed {
            endpoint: "test-rabbitmq.test-ns.svc:5672".into(),
            dialled: "test-rabbitmq.test-ns.svc:5672".into(),
            invalid_spec: None,
            credentials: CredentialsState::Ok {
                secret: "test-rabbitmq".into(),
                username: "swappo-x".into(),
            },
            broker_pods: Some((1, 1)),
            amqp,
        }
    }

    fn cond<'a>(s: &'a SwappoMessagingStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn a_successful_login_makes_broker_ready_and_ready_true() {
        let s = desired_status(
            &SwappoMessaging::test(),
            &observed(Some(AmqpCheck::Ok)),
            &at(0),
        );
        assert_eq!(cond(&s, "BrokerReady").status, "True");
        assert_eq!(cond(&s, "BrokerReady").reason, "BrokerAvailable");
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(s.observed_generation, Some(1));
        let broker = s.broker.unwrap();
        assert_eq!(broker.secret_name, "test-rabbitmq");
        assert_eq!(broker.endpoint, "test-rabbitmq.test-ns.svc:5672");
    }

    #[test]
    fn an_unusable_broker_spec_makes_broker_ready_false_naming_the_field() {
        let mut obs = observed(Some(AmqpCheck::Ok));
        obs.invalid_spec = Some("spec.broker.resources.limits.memory: \"x\" is bad".into());
        let v = broker_ready(&obs);
        assert_eq!((v.ok, v.reason), (false, "InvalidBrokerSpec"));
        assert!(
            v.message.starts_with("spec.broker.resources.limits.memory"),
            "{}",
            v.message
        );
        let s = desired_status(&SwappoMessaging::test(), &obs, &at(0));
        assert_eq!(cond(&s, "Ready").status, "False");
    }

    #[test]
    fn refused_credentials_say_which_secret_and_user_to_fix() {
        let obs = observed(Some(AmqpCheck::AuthenticationFailed(
            "ACCESS_REFUSED".into(),
        )));
        let s = desired_status(&SwappoMessaging::test(), &obs, &at(0));
        let c = cond(&s, "BrokerReady");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "AuthenticationFailed")
        );
        assert!(
            c.message.contains("Secret test-rabbitmq") && c.message.contains("swappo-x"),
            "{}",
            c.message
        );
        assert_eq!(cond(&s, "Ready").reason, "BrokerNotReady");
    }

    #[test]
    fn pods_not_ready_come_before_any_login_verdict() {
        let mut obs = observed(None);
        obs.broker_pods = Some((0, 1));
        let v = broker_ready(&obs);
        assert_eq!((v.ok, v.reason), (false, "BrokerPodsNotReady"));
        assert!(v.message.starts_with("0/1 broker pods ready"));
    }

    #[test]
    fn a_missing_or_incomplete_credentials_secret_is_named() {
        let mut obs = observed(None);
        obs.credentials = CredentialsState::SecretNotFound("mine".into());
        let v = broker_ready(&obs);
        assert_eq!(v.reason, "CredentialsSecretNotFound");
        assert!(v.message.contains("Secret mine"));
        obs.credentials = CredentialsState::SecretIncomplete {
            secret: "mine".into(),
            key: "password".into(),
        };
        let v = broker_ready(&obs);
        assert_eq!(v.reason, "CredentialsSecretIncomplete");
        assert!(v.message.contains("key password"));
    }

    #[test]
    fn unreachable_and_timeout_have_their_own_reasons() {
        let v = broker_ready(&observed(Some(AmqpCheck::Unreachable(
            "connection refused".into(),
        ))));
        assert_eq!(v.reason, "BrokerUnreachable");
        let v = broker_ready(&observed(Some(AmqpCheck::Timeout(
            std::time::Duration::from_secs(5),
        ))));
        assert_eq!(v.reason, "BrokerTimeout");
    }

    #[test]
    fn an_unchanged_observation_gives_an_identical_status() {
        let mut sm = SwappoMessaging::test();
        let obs = observed(Some(AmqpCheck::Ok));
        sm.status = Some(desired_status(&sm, &obs, &at(0)));
        let again = desired_status(&sm, &obs, &at(60));
        assert_eq!(
            sm.status.as_ref(),
            Some(&again),
            "a later reconcile must not write"
        );
        assert!(transitions(sm.status.as_ref(), &again).is_empty());
    }

    #[test]
    fn the_transition_time_moves_only_when_the_status_flips() {
        let mut sm = SwappoMessaging::test();
        sm.status = Some(desired_status(&sm, &observed(Some(AmqpCheck::Ok)), &at(0)));
        let down = desired_status(
            &sm,
            &observed(Some(AmqpCheck::Unreachable("x".into()))),
            &at(30),
        );
        assert_eq!(cond(&down, "BrokerReady").last_transition_time, at(30));
        let events = transitions(sm.status.as_ref(), &down);
        assert_eq!(events.len(), 1);
        assert!(events[0].warning);
        assert_eq!(events[0].reason, "BrokerUnreachable");
        sm.status = Some(down);
        let still_down = desired_status(
            &sm,
            &observed(Some(AmqpCheck::Timeout(Default::default()))),
            &at(60),
        );
        assert_eq!(
            cond(&still_down, "BrokerReady").last_transition_time,
            at(30)
        );
    }

    #[test]
    fn fields_and_conditions_of_other_reconcilers_are_kept_and_gate_ready() {
        let mut sm = SwappoMessaging::test();
        let mut status = desired_status(&sm, &observed(Some(AmqpCheck::Ok)), &at(0));
        status.replica_sets_cleaned = 3;
        status.conditions.push(Condition {
            type_: "QueuesReady".into(),
            status: "False".into(),
            reason: "DeclareFailed".into(),
            message: "queue x: PRECONDITION_FAILED".into(),
            observed_generation: Some(1),
            last_transition_time: at(0),
        });
        sm.status = Some(status);
        let s = desired_status(&sm, &observed(Some(AmqpCheck::Ok)), &at(10));
        assert_eq!(s.replica_sets_cleaned, 3);
        assert_eq!(cond(&s, "QueuesReady").reason, "DeclareFailed");
        assert_eq!(cond(&s, "Ready").status, "False");
        assert!(
            cond(&s, "Ready")
                .message
                .starts_with("QueuesReady is False")
        );
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let t0 = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let t1 = Time(k8s_openapi::jiff::Timestamp::from_second(100).unwrap());
        let mut status = SwappoMessagingStatus::default();
        let v = |ok, reason| Verdict {
            ok,
            reason,
            message: String::new(),
        };
        set_condition(&mut status, "X", &v(false, "A"), None, &t0);
        set_condition(&mut status, "X", &v(false, "B"), None, &t1);
        assert_eq!(status.conditions.len(), 1);
        assert_eq!(status.conditions[0].reason, "B");
        assert_eq!(status.conditions[0].last_transition_time, t0);
        set_condition(&mut status, "X", &v(true, "C"), None, &t1);
        assert_eq!(status.conditions[0].last_transition_time, t1);
    }

    #[test]
    fn the_reconciler_and_the_autoscaler_write_disjoint_parts_of_the_status() {
        let mut sm = SwappoMessaging::test();
        let mut status = desired_status(&sm, &observed(Some(AmqpCheck::Ok)), &at(0));
        let scaled = Verdict {
            ok: true,
            reason: "Scaled",
            message: String::new(),
        };
        set_condition(
            &mut status,
            condition::CONSUMERS_SCALED,
            &scaled,
            Some(1),
            &at(0),
        );
        status.depth = Some(7);
        status.replica_sets_cleaned = 2;
        sm.status = Some(status.clone());
        let ours = reconciler_part(&status);
        let theirs = scaler_part(&status);
        let types = |v: &serde_json::Value| -> Vec<String> {
            v["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["type"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(types(&ours), ["BrokerReady", "Ready"]);
        assert_eq!(types(&theirs), ["ConsumersScaled"]);
        assert!(ours.get("depth").is_none() && ours.get("queues").is_none());
        assert_eq!(theirs["depth"], 7);
        assert!(theirs.get("broker").is_none());
        // Nobody writes the clean-up count but the clean-up.
        assert!(ours.get("replicaSetsCleaned").is_none());
        assert!(theirs.get("replicaSetsCleaned").is_none());
    }
}
