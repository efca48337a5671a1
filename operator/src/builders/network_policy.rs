//! The broker's NetworkPolicy `<name>-rabbitmq` (DESIGN §4): who may reach the broker pod.
//!
//! - AMQP (5672): the pods of the resource's namespace, or those `amqpClients` selects, and
//!   the operator's namespace (the operator logs in and declares the queues over AMQP).
//! - Management (15672) and Prometheus (15692): the operator's namespace (the autoscaler
//!   reads queue depths there) and `monitoringNamespace`.
//!
//! Nothing else reaches the pod: a NetworkPolicy selecting a pod for `Ingress` denies what no
//! rule allows. Only enforced where the cluster's network plugin implements NetworkPolicies.
use super::{Names, object_meta, selector_labels};
use crate::crd::{AMQP_PORT, MANAGEMENT_PORT, NetworkPolicySpec, PROMETHEUS_PORT, SwappoMessaging};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec as PolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// The label every namespace carries with its own name (set by the API server since
/// Kubernetes 1.22), which a `namespaceSelector` can match.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The spec's policy settings (defaults when unset).
pub fn settings(sm: &SwappoMessaging) -> NetworkPolicySpec {
    sm.spec.broker.network_policy.clone().unwrap_or_default()
}

/// Whether the operator ships the NetworkPolicy for `sm` (a managed broker, not opted out).
pub fn enabled(sm: &SwappoMessaging) -> bool {
    sm.is_managed() && settings(sm).enabled
}

/// A peer: every pod of the namespace `name`.
fn namespace(name: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_owned(),
                name.to_owned(),
            )])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

fn tcp(port: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port.into())),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    }
}

/// The NetworkPolicy for `sm`; `operator_namespace` is where the operator runs (`None`: not
/// in a cluster, as in development: no rule names it).
pub fn network_policy(sm: &SwappoMessaging, operator_namespace: Option<&str>) -> NetworkPolicy {
    let settings = settings(sm);
    // A podSelector alone selects pods of the policy's own namespace; `{}` selects them all.
    let clients = NetworkPolicyPeer {
        pod_selector: Some(settings.amqp_clients.clone().unwrap_or_default()),
        ..NetworkPolicyPeer::default()
    };
    let mut amqp_from = vec![clients];
    amqp_from.extend(operator_namespace.map(namespace));
    let mut http_from: Vec<NetworkPolicyPeer> = operator_namespace
        .into_iter()
        .chain(settings.monitoring_namespace.as_deref())
        .map(namespace)
        .collect();
    http_from.dedup();
    let mut ingress = vec![NetworkPolicyIngressRule {
        from: Some(amqp_from),
        ports: Some(vec![tcp(AMQP_PORT)]),
    }];
    // An empty `from` would allow every source: the rule is left out instead.
    if !http_from.is_empty() {
        ingress.push(NetworkPolicyIngressRule {
            from: Some(http_from),
            ports: Some(vec![tcp(MANAGEMENT_PORT), tcp(PROMETHEUS_PORT)]),
        });
    }
    NetworkPolicy {
        metadata: object_meta(sm, &Names::of(sm).network_policy),
        spec: Some(PolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(sm)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress),
            ..PolicySpec::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::TestExt;

    fn ports(rule: &NetworkPolicyIngressRule) -> Vec<i32> {
        rule.ports
            .iter()
            .flatten()
            .map(|p| match p.port {
                Some(IntOrString::Int(n)) => n,
                _ => panic!("numeric ports"),
            })
            .collect()
    }

    fn namespaces(rule: &NetworkPolicyIngressRule) -> Vec<String> {
        rule.from
            .iter()
            .flatten()
            .filter_map(|p| p.namespace_selector.as_ref())
            .map(|s| s.match_labels.as_ref().unwrap()[NAMESPACE_NAME_LABEL].clone())
            .collect()
    }

    #[test]
    fn amqp_is_open_to_the_namespace_and_the_operator_and_http_to_operator_and_monitoring() {
        let mut sm = SwappoMessaging::test();
        sm.spec.broker.network_policy = Some(NetworkPolicySpec {
            monitoring_namespace: Some("monitoring".into()),
            ..NetworkPolicySpec::default()
        });
        let np = network_policy(&sm, Some("swappo-system"));
        assert_eq!(np.metadata.name.as_deref(), Some("test-rabbitmq"));
        let spec = np.spec.unwrap();
        assert_eq!(
            spec.pod_selector.unwrap().match_labels,
            Some(selector_labels(&sm))
        );
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_owned()]));
        let rules = spec.ingress.unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(ports(&rules[0]), [5672]);
        let from = rules[0].from.as_ref().unwrap();
        // Every pod of the resource's own namespace (an empty pod selector, no namespace one).
        assert_eq!(from[0].pod_selector, Some(LabelSelector::default()));
        assert!(from[0].namespace_selector.is_none());
        assert_eq!(namespaces(&rules[0]), ["swappo-system"]);
        assert_eq!(ports(&rules[1]), [15672, 15692]);
        assert_eq!(namespaces(&rules[1]), ["swappo-system", "monitoring"]);
        assert!(
            rules[1]
                .from
                .as_ref()
                .unwrap()
                .iter()
                .all(|p| p.pod_selector.is_none())
        );
    }

    #[test]
    fn a_client_selector_narrows_amqp_and_no_known_peer_leaves_http_closed_not_open() {
        let mut sm = SwappoMessaging::test();
        let selector = LabelSelector {
            match_labels: Some(BTreeMap::from([("rabbitmq-client".into(), "true".into())])),
            ..LabelSelector::default()
        };
        sm.spec.broker.network_policy = Some(NetworkPolicySpec {
            amqp_clients: Some(selector.clone()),
            ..NetworkPolicySpec::default()
        });
        let rules = network_policy(&sm, None).spec.unwrap().ingress.unwrap();
        assert_eq!(
            rules.len(),
            1,
            "no rule with an empty `from` (that allows all)"
        );
        let from = rules[0].from.as_ref().unwrap();
        assert_eq!(from.len(), 1);
        assert_eq!(from[0].pod_selector, Some(selector));
    }

    #[test]
    fn the_policy_is_on_by_default_off_when_opted_out_and_never_for_an_external_broker() {
        let mut sm = SwappoMessaging::test();
        assert!(enabled(&sm));
        sm.spec.broker.network_policy = Some(NetworkPolicySpec {
            enabled: false,
            ..NetworkPolicySpec::default()
        });
        assert!(!enabled(&sm));
        assert!(!enabled(&SwappoMessaging::test().with_external("h", false)));
    }
}
