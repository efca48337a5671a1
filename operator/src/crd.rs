//! The `SwappoMessaging` custom resource (`swappo.io/v1alpha1`, short name `sm`).
//!
//! What the API server can check is in the schema: OpenAPI ranges, lengths and patterns, and
//! CEL rules (`x-kubernetes-validations`) for what spans fields (`minReplicas <= maxReplicas`,
//! unique queue names, an external broker without managed-broker fields). Each rule carries a
//! message naming the field, so a bad object is refused at `kubectl apply` with that message.
//! What only the operator can judge ends as a `False` condition in [`SwappoMessagingStatus`].
use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Desired state of one messaging environment: the broker, its queues and their consumers.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "swappo.io",
    version = "v1alpha1",
    kind = "SwappoMessaging",
    plural = "swappomessagings",
    namespaced,
    shortname = "sm",
    status = "SwappoMessagingStatus",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Broker", type_ = "string", json_path = ".status.broker.endpoint"),
    printcolumn(name = "Depth", type_ = "integer", json_path = ".status.depth", description = "Messages ready + unacknowledged over all queues"),
    printcolumn(name = "Consumers", type_ = "integer", json_path = ".status.consumerReplicas", description = "Replicas of all consumer Deployments"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // Child objects are named `<name>-rabbitmq-config` and so on: 40 + 16 characters stay
    // within the 63 of a Service name (a DNS-1035 label, so it must start with a letter).
    validation = Rule::new("self.metadata.name.size() <= 40").message("metadata.name must be at most 40 characters: the operator names its objects <name>-rabbitmq-config and such"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name must start with a letter and hold only lowercase letters, digits and '-' (it names a Service)")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.consumers) || self.consumers.all(c, has(self.queues) && self.queues.exists(q, q.name == c.queue))").message("spec.consumers[].queue must name a queue declared in spec.queues"))]
pub struct SwappoMessagingSpec {
    /// The broker: run by the operator (default) or adopted (`external`).
    #[serde(default)]
    pub broker: BrokerSpec,
    /// Queues to declare, each with a dead-letter exchange `<queue>.dlx` and queue `<queue>.dlq`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(q, self.exists_one(p, p.name == q.name))").message("spec.queues[].name must be unique"))]
    pub queues: Vec<QueueSpec>,
    /// Consumer Deployments scaled from the depth of their queue.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(c, self.exists_one(d, d.deployment == c.deployment))").message("spec.consumers[].deployment must be unique: one scaler per Deployment"))]
    pub consumers: Vec<ConsumerSpec>,
    /// Clean-up of stale ReplicaSets.
    #[serde(default)]
    pub cleanup: CleanupSpec,
}

/// The broker. Without `external` the operator runs it (StatefulSet, PVC, ConfigMap, Service,
/// NetworkPolicy); with `external` it adopts a broker it does not run and only the managed
/// fields are refused.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.external) || (!has(self.image) && !has(self.storage) && !has(self.resources) && !has(self.nodeSelector) && !has(self.tolerations) && !has(self.networkPolicy))").message("spec.broker.external adopts a broker the operator does not run: remove spec.broker.image, storage and resources (and nodeSelector, tolerations, networkPolicy), or remove spec.broker.external"))]
#[x_kube(validation = Rule::new("!has(self.external) || has(self.credentialsSecret)").message("spec.broker.external needs spec.broker.credentialsSecret: the operator cannot create users on a broker it does not run"))]
pub struct BrokerSpec {
    /// Broker image (default `rabbitmq:3.13-management-alpine`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub image: Option<String>,
    /// The data volume (default 1Gi, the cluster's default StorageClass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
    /// Container resources (default requests 250m CPU / 256Mi, limit 512Mi memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// An existing Secret in this namespace with keys `username` and `password`; by default
    /// the operator generates random credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub credentials_secret: Option<String>,
    /// Adopt a broker the operator does not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalBroker>,
    /// Node labels the broker pod must match (the pod's `nodeSelector`), such as nodes
    /// dedicated to stateful workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Taints the broker pod tolerates (the pod's `tolerations`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub tolerations: Option<Vec<Toleration>>,
    /// Who may reach the broker: a NetworkPolicy the operator ships (on by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,
}

/// The broker's NetworkPolicy `<name>-rabbitmq`: AMQP (5672) from the pods of this namespace
/// (or those `amqpClients` selects) and from the operator's namespace; management (15672) and
/// Prometheus (15692) from the operator's namespace and `monitoringNamespace`. Nothing else
/// reaches the broker pod. It takes effect only where the cluster's network plugin enforces
/// NetworkPolicies.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Ship the NetworkPolicy (default true). `false` removes the one the operator made.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The pods of this namespace that may use AMQP (default: every pod of the namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amqp_clients: Option<LabelSelector>,
    /// A namespace (its name) whose pods may scrape Prometheus metrics and read the
    /// management API, such as the monitoring stack's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub monitoring_namespace: Option<String>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            amqp_clients: None,
            monitoring_namespace: None,
        }
    }
}

/// The broker's data volume.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size as a Kubernetes quantity, such as `1Gi` or `500Mi` (default `1Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"))]
    #[x_kube(validation = Rule::new("quantity(self).isGreaterThan(quantity('0'))").message("spec.broker.storage.size must be larger than 0"))]
    pub size: Option<String>,
    /// StorageClass of the claim; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
    /// What happens to the data volume and the credentials Secret when the resource is
    /// deleted: `Retain` (default) keeps both, and a resource re-created with the same name
    /// adopts them (same data, same login); `Delete` lets them go with it.
    #[serde(default)]
    pub when_deleted: RetentionPolicy,
}

/// Retention of the broker's data volume and credentials (like a StatefulSet's
/// `persistentVolumeClaimRetentionPolicy`).
#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum RetentionPolicy {
    /// Kept: not owned by the resource, so garbage collection leaves them.
    #[default]
    Retain,
    /// Owned by the resource: deleted with it.
    Delete,
}

/// A broker the operator adopts instead of running one.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalBroker {
    /// Host name or address of the broker.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// AMQP port (default 5672).
    #[serde(default = "default_amqp_port")]
    #[schemars(range(min = 1))]
    pub port: u16,
    /// Management API port (default 15672).
    #[serde(default = "default_management_port")]
    #[schemars(range(min = 1))]
    pub management_port: u16,
    /// Connect with TLS (`amqps`).
    #[serde(default)]
    pub tls: bool,
}

/// Default AMQP port.
pub const AMQP_PORT: u16 = 5672;
/// Default management API port.
pub const MANAGEMENT_PORT: u16 = 15672;
/// Prometheus plugin port.
pub const PROMETHEUS_PORT: u16 = 15692;

fn default_amqp_port() -> u16 {
    AMQP_PORT
}
fn default_management_port() -> u16 {
    MANAGEMENT_PORT
}

/// One queue: durable, with a dead-letter exchange and queue.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.maxPriority) || self.type == 'classic'").message("spec.queues[].maxPriority needs type classic: quorum queues do not take x-max-priority"))]
#[x_kube(validation = Rule::new("!self.legacy || (self.type == 'classic' && !has(self.messageTtlSeconds) && !has(self.maxPriority))").message("spec.queues[].legacy declares the queue as the original services do (classic, no arguments): set type classic and remove messageTtlSeconds and maxPriority"))]
pub struct QueueSpec {
    /// Queue name: letters, digits, `_`, `-`, `.`; not starting with the reserved `amq.`.
    /// At most 200 characters, so `<name>.dlq` fits too.
    #[schemars(
        length(min = 1, max = 200),
        regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
    )]
    #[x_kube(validation = Rule::new("!self.startsWith('amq.')").message("spec.queues[].name must not start with amq. (reserved by RabbitMQ)"))]
    pub name: String,
    /// `quorum` (default, replicated, poison-message limit) or `classic`.
    #[serde(default, rename = "type")]
    pub queue_type: QueueType,
    /// Dead-lettering; `<queue>.dlx` and `<queue>.dlq` are always declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterSpec>,
    /// Message TTL in seconds (`x-message-ttl`); none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 31_536_000))]
    pub message_ttl_seconds: Option<u32>,
    /// Priorities 1..=255 (`x-max-priority`, classic queues only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 255))]
    pub max_priority: Option<u8>,
    /// Declare the queue exactly as the original Python services do (`queue_declare(durable=True)`:
    /// classic, no arguments), so they keep starting during a migration (docs/migrating.md).
    /// `<queue>.dlx` and `<queue>.dlq` are still declared beside it, but without arguments
    /// nothing routes to them: the broker dead-letters nothing, only a consumer that
    /// publishes there itself. Needs `type: classic`, no TTL and no priority.
    #[serde(default)]
    pub legacy: bool,
}

/// Queue types.
#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// Replicated (Raft) queue; counts deliveries (`x-delivery-limit`).
    #[default]
    Quorum,
    /// Classic queue; the consumer counts deliveries.
    Classic,
}

/// Dead-lettering of a queue.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterSpec {
    /// Deliveries before a message goes to `<queue>.dlq` (default 5).
    #[serde(default = "default_max_deliveries")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_deliveries: u32,
}

fn default_max_deliveries() -> u32 {
    5
}

/// A consumer Deployment scaled from the depth of its queue.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("spec.consumers[].minReplicas must be <= maxReplicas"))]
pub struct ConsumerSpec {
    /// Name of the Deployment in this namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub deployment: String,
    /// The queue it consumes (one of `spec.queues`).
    #[schemars(length(min = 1, max = 200))]
    pub queue: String,
    /// Fewest replicas (default 1; 0 allows scaling to zero).
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_replicas: i32,
    /// Most replicas (default 10).
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Target backlog per replica (default 100).
    #[serde(default = "default_messages_per_replica")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub messages_per_replica: u32,
    /// Optional latency target: size for draining the backlog within this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86_400))]
    pub drain_within_seconds: Option<u32>,
    /// Scale down only to the highest desired value seen over this window (default 300 s,
    /// the HPA's default down-stabilization).
    #[serde(default = "default_scale_down_delay")]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_down_delay_seconds: u32,
}

fn default_min_replicas() -> i32 {
    1
}
fn default_max_replicas() -> i32 {
    10
}
fn default_messages_per_replica() -> u32 {
    100
}
fn default_scale_down_delay() -> u32 {
    300
}

/// Clean-up policy.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CleanupSpec {
    /// Remove stale ReplicaSets of the Deployments the operator manages or scales (default on).
    #[serde(default = "default_true")]
    pub stale_replica_sets: bool,
}

impl Default for CleanupSpec {
    fn default() -> Self {
        Self {
            stale_replica_sets: true,
        }
    }
}

fn default_true() -> bool {
    true
}

/// Observed state. Two writers, each by server-side apply under its own field manager: the
/// reconciler (swappo-operator: observedGeneration, broker, queuesDeclared, conditions Ready, BrokerReady,
/// QueuesReady) and the autoscaler (swappo-operator-autoscaler: queues, consumers, depth,
/// consumerReplicas, condition ConsumersScaled); the ReplicaSet clean-up counts
/// replicaSetsCleaned.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwappoMessagingStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `BrokerReady`, `QueuesReady`, `ConsumersScaled`: a map keyed by `type`, so
    /// each writer owns its conditions and neither can undo the other's.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Where the broker is and which Secret holds its credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<BrokerStatus>,
    /// Per-queue counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<QueueStatus>,
    /// Per-consumer scaling state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<ConsumerStatus>,
    /// Messages ready + unacknowledged over all queues (the Depth column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u64>,
    /// Replicas of all consumer Deployments (the Consumers column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_replicas: Option<i32>,
    /// Stale ReplicaSets removed so far.
    #[serde(default)]
    pub replica_sets_cleaned: u64,
    /// What the queues were last declared for: a hash of `spec.queues` and of the broker
    /// connection they were declared on. The queues are declared again only when it changes
    /// (a spec change, or a new connection: the broker may have restarted), not at every
    /// recheck.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues_declared: Option<String>,
}

/// Broker endpoint and credentials reference.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerStatus {
    /// `host:port` clients use (the in-cluster Service, or the external broker).
    pub endpoint: String,
    /// The Secret with `username`, `password`, `uri` and friends.
    pub secret_name: String,
    /// Ready broker pods (0 for an external broker).
    #[serde(default)]
    pub ready_replicas: i32,
}

/// Counts of one queue as the management API reports them.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    /// Queue name.
    pub name: String,
    /// Messages ready for delivery.
    #[serde(default)]
    pub ready: u64,
    /// Delivered, not yet acknowledged.
    #[serde(default)]
    pub unacked: u64,
    /// Consumers attached.
    #[serde(default)]
    pub consumers: u32,
    /// Messages published per second.
    #[serde(default)]
    pub publish_rate: f64,
    /// Messages delivered per second.
    #[serde(default)]
    pub deliver_rate: f64,
}

/// Scaling state of one consumer Deployment.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerStatus {
    /// Deployment name.
    pub deployment: String,
    /// Replicas now.
    #[serde(default)]
    pub replicas: i32,
    /// Replicas the last decision asked for.
    #[serde(default)]
    pub desired_replicas: i32,
    /// When the operator last changed the replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// Why the last decision was taken.
    #[serde(default)]
    pub reason: String,
}

impl SwappoMessaging {
    /// Whether the operator runs the broker (no `spec.broker.external`).
    pub fn is_managed(&self) -> bool {
        self.spec.broker.external.is_none()
    }

    /// Whether the broker's volume and credentials Secret outlive the resource: a managed
    /// broker with `spec.broker.storage.whenDeleted: Retain` (the default). An external
    /// broker's Secret only copies the user's, so it goes with the resource.
    pub fn retains_data(&self) -> bool {
        let policy = self
            .spec
            .broker
            .storage
            .as_ref()
            .map(|s| s.when_deleted)
            .unwrap_or_default();
        self.is_managed() && policy == RetentionPolicy::Retain
    }

    /// The condition `type_` of the current status, if any.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
    }
}

/// The CRD to install: the derived one, without the integer formats schemars writes for
/// unsigned Rust types (`uint16`...), which the API server does not know and warns about
/// (their `minimum: 0` stays).
pub fn crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use kube::CustomResourceExt;
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                if map
                    .get("format")
                    .and_then(|f| f.as_str())
                    .is_some_and(|f| f.starts_with("uint"))
                {
                    map.remove("format");
                }
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(SwappoMessaging::crd()).expect("the CRD serializes");
    strip(&mut value);
    serde_json::from_value(value).expect("the CRD deserializes")
}

/// The CRD as YAML, as `crdgen` prints it and `crds/swappo.io_swappomessagings.yaml` holds it.
pub fn crd_yaml() -> String {
    let yaml = serde_yaml::to_string(&crd()).expect("the CRD serializes");
    format!(
        "# Generated by `make crds` (cargo run -p swappo-operator --bin crdgen); do not edit.\n{yaml}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::TestExt;

    #[test]
    fn the_committed_crd_matches_the_rust_types() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../crds/swappo.io_swappomessagings.yaml"
        );
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == crd_yaml(),
            "{path} is stale: run `make crds` and commit the result"
        );
    }

    #[test]
    fn the_crd_is_namespaced_with_short_name_status_and_printer_columns() {
        let crd = crd();
        assert!(!crd_yaml().contains("format: uint"));
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names, Some(vec!["sm".to_owned()]));
        let version = &crd.spec.versions[0];
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let columns: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["Ready", "Broker", "Depth", "Consumers", "Age"]);
    }

    #[test]
    fn an_empty_spec_means_a_managed_broker_with_defaults() {
        let sm: SwappoMessaging = serde_json::from_value(serde_json::json!({
            "apiVersion": "swappo.io/v1alpha1", "kind": "SwappoMessaging",
            "metadata": {"name": "a"}, "spec": {}
        }))
        .unwrap();
        assert!(sm.is_managed());
        assert!(sm.spec.cleanup.stale_replica_sets);
        let consumer: ConsumerSpec =
            serde_json::from_value(serde_json::json!({"deployment": "d", "queue": "q"})).unwrap();
        assert_eq!((consumer.min_replicas, consumer.max_replicas), (1, 10));
        assert_eq!(consumer.messages_per_replica, 100);
        assert_eq!(consumer.scale_down_delay_seconds, 300);
        assert!(
            !SwappoMessaging::test()
                .with_external("h", false)
                .is_managed()
        );
    }
}
