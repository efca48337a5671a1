//! Who may scale a consumer Deployment: one writer per Deployment's replicas. A Deployment
//! that a HorizontalPodAutoscaler or a KEDA ScaledObject already targets is refused (as KEDA
//! refuses a Deployment an HPA it did not create targets); a Deployment that several
//! `SwappoMessaging` in its namespace name is scaled by the oldest of them only.
use crate::crd::SwappoMessaging;
use kube::ResourceExt;
use std::sync::Arc;

/// Another autoscaler that targets a Deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Autoscaler {
    /// `HorizontalPodAutoscaler` or `ScaledObject`.
    pub kind: &'static str,
    /// Its name (in the Deployment's namespace).
    pub name: String,
    /// The Deployment it scales.
    pub target: String,
}

/// Why a consumer Deployment is not this resource's to scale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Another autoscaler targets it.
    TargetedBy {
        /// `HorizontalPodAutoscaler` or `ScaledObject`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// An older `SwappoMessaging` in the namespace names it in its `spec.consumers`.
    ClaimedBy {
        /// That resource's name.
        resource: String,
    },
}

impl Refusal {
    /// The CamelCase reason, for the consumer's status and `ConsumersScaled`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::TargetedBy { kind, .. } if *kind == "ScaledObject" => "TargetedByScaledObject",
            Refusal::TargetedBy { .. } => "TargetedByHorizontalPodAutoscaler",
            Refusal::ClaimedBy { .. } => "DeploymentClaimed",
        }
    }

    /// What a user reads in the condition: who scales `deployment` instead, and what to do.
    pub fn message(&self, deployment: &str) -> String {
        match self {
            Refusal::TargetedBy { kind, name } => format!(
                "Deployment {deployment} is already scaled by {kind} {name}: not scaled here \
                 (two autoscalers would fight); remove it from spec.consumers or delete the \
                 {kind}"
            ),
            Refusal::ClaimedBy { resource } => format!(
                "Deployment {deployment} is scaled by SwappoMessaging {resource}, the oldest \
                 resource naming it: not scaled here; remove it from the spec.consumers of one \
                 of them"
            ),
        }
    }
}

/// Orders claimants: the oldest first (by `creationTimestamp`), then by name (two created in
/// the same second).
fn age_key(sm: &SwappoMessaging) -> (i64, String) {
    let created = sm
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second());
    // A resource not yet created (no timestamp) is the youngest.
    (created.unwrap_or(i64::MAX), sm.name_any())
}

/// Whether `sm` may scale its consumer `deployment`: `None` when it may, else why not.
/// `others` are the `SwappoMessaging` the operator knows (any namespace; `sm` may be among
/// them), `autoscalers` the HPAs and ScaledObjects in `sm`'s namespace.
pub fn refusal(
    sm: &SwappoMessaging,
    deployment: &str,
    others: &[Arc<SwappoMessaging>],
    autoscalers: &[Autoscaler],
) -> Option<Refusal> {
    if let Some(a) = autoscalers.iter().find(|a| a.target == deployment) {
        return Some(Refusal::TargetedBy {
            kind: a.kind,
            name: a.name.clone(),
        });
    }
    let ns = sm.namespace();
    let mine = age_key(sm);
    others
        .iter()
        .filter(|o| o.namespace() == ns && o.name_any() != sm.name_any())
        .filter(|o| o.metadata.deletion_timestamp.is_none())
        .filter(|o| o.spec.consumers.iter().any(|c| c.deployment == deployment))
        .map(|o| age_key(o))
        .filter(|theirs| *theirs < mine)
        .min()
        .map(|(_, resource)| Refusal::ClaimedBy { resource })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::TestExt;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn created(name: &str, ns: &str, second: i64) -> SwappoMessaging {
        let mut sm = SwappoMessaging::new_in(name, ns)
            .with_queue("q")
            .with_consumer("worker", "q");
        sm.metadata.creation_timestamp = Some(Time(Timestamp::from_second(second).unwrap()));
        sm
    }

    #[test]
    fn the_oldest_resource_naming_a_deployment_scales_it_and_the_others_are_refused_naming_it() {
        let old = created("old", "ns", 100);
        let young = created("young", "ns", 200);
        let younger = created("younger", "ns", 300);
        let all: Vec<_> = [&old, &young, &younger]
            .into_iter()
            .cloned()
            .map(Arc::new)
            .collect();
        assert_eq!(refusal(&old, "worker", &all, &[]), None);
        let claimed = Refusal::ClaimedBy {
            resource: "old".into(),
        };
        assert_eq!(refusal(&young, "worker", &all, &[]), Some(claimed.clone()));
        assert_eq!(
            refusal(&younger, "worker", &all, &[]),
            Some(claimed.clone())
        );
        assert_eq!(claimed.reason(), "DeploymentClaimed");
        assert!(claimed.message("worker").contains("SwappoMessaging old"));
        // Another Deployment, or the same name in another namespace, is no conflict.
        assert_eq!(refusal(&young, "other", &all, &[]), None);
        let elsewhere = created("elsewhere", "other-ns", 50);
        let with_elsewhere = vec![Arc::new(elsewhere), Arc::new(young.clone())];
        assert_eq!(refusal(&young, "worker", &with_elsewhere, &[]), None);
    }

    #[test]
    fn two_resources_created_in_the_same_second_are_ordered_by_name() {
        let a = created("a", "ns", 100);
        let b = created("b", "ns", 100);
        let all = vec![Arc::new(a.clone()), Arc::new(b.clone())];
        assert_eq!(refusal(&a, "worker", &all, &[]), None);
        assert!(refusal(&b, "worker", &all, &[]).is_some());
    }

    #[test]
    fn a_resource_being_deleted_gives_the_deployment_up() {
        let mut old = created("old", "ns", 100);
        old.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(500).unwrap()));
        let young = created("young", "ns", 200);
        let all = vec![Arc::new(old), Arc::new(young.clone())];
        assert_eq!(refusal(&young, "worker", &all, &[]), None);
    }

    #[test]
    fn a_deployment_targeted_by_an_hpa_or_a_scaled_object_is_refused_whoever_is_oldest() {
        let old = created("old", "ns", 100);
        let all = vec![Arc::new(old.clone())];
        let hpa = Autoscaler {
            kind: "HorizontalPodAutoscaler",
            name: "worker-hpa".into(),
            target: "worker".into(),
        };
        let r = refusal(&old, "worker", &all, std::slice::from_ref(&hpa)).unwrap();
        assert_eq!(r.reason(), "TargetedByHorizontalPodAutoscaler");
        assert!(
            r.message("worker")
                .contains("HorizontalPodAutoscaler worker-hpa")
        );
        let keda = Autoscaler {
            kind: "ScaledObject",
            name: "worker-so".into(),
            target: "worker".into(),
        };
        let r = refusal(&old, "worker", &all, &[keda]).unwrap();
        assert_eq!(r.reason(), "TargetedByScaledObject");
        assert_eq!(refusal(&old, "other", &all, &[hpa]), None);
    }
}
