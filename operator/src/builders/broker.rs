//! The broker the operator runs (DESIGN §4): ConfigMap, PVC, StatefulSet and Service.
use super::secret::{Credentials, key};
use super::{Names, labels, object_meta, retained_object_meta, selector_labels};
use crate::crd::{AMQP_PORT, MANAGEMENT_PORT, PROMETHEUS_PORT, SwappoMessaging};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapProjection, ConfigMapVolumeSource, Container, ContainerPort,
    EnvVar, HostAlias, KeyToPath, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecretProjection,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, TCPSocketAction,
    Volume, VolumeMount, VolumeProjection, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// Image when `spec.broker.image` is unset.
pub const DEFAULT_IMAGE: &str = "rabbitmq:3.13-management-alpine";
/// Volume size when `spec.broker.storage.size` is unset.
pub const DEFAULT_STORAGE: &str = "1Gi";
/// The uid/gid the broker runs as and the volume is group-owned by: 999, the `rabbitmq`
/// user and group of the official Docker Library images (`rabbitmq:*`, Debian/Ubuntu and
/// Alpine variants alike, which create them with that fixed id) and of the default image
/// [`DEFAULT_IMAGE`]; the real-node test image (`images/build.sh`, Debian's `rabbitmq-server`
/// package laid out like the official image) creates its user with the same id. An image with another uid needs its own
/// security context (not configurable yet).
const RABBITMQ_UID: i64 = 999;
/// Old revisions (ControllerRevisions) of the StatefulSet kept for rollback.
const REVISION_HISTORY_LIMIT: i32 = 3;
/// Seconds RabbitMQ gets to stop: it syncs queue indexes and closes connections cleanly on
/// SIGTERM, which takes a few seconds on a small node and longer with a large backlog.
const TERMINATION_GRACE_SECONDS: i64 = 120;
/// Annotation on the pod template holding a hash of the broker configuration, so a config
/// change rolls the broker (it reads `rabbitmq.conf` only at boot).
pub const CONFIG_HASH_ANNOTATION: &str = "swappo.io/config-hash";
/// Annotation on the pod template holding a keyed hash of the broker's credentials
/// ([`Credentials::fingerprint`], never the credentials), so a re-created Secret restarts the
/// broker, which imports its user at boot (see [`DEFINITIONS_FILE`]).
pub const CREDENTIALS_HASH_ANNOTATION: &str = "swappo.io/credentials-hash";
/// Where the broker reads its definitions (the user from the Secret) at every boot.
pub const DEFINITIONS_FILE: &str = "/etc/rabbitmq/conf.d/definitions.json";

const CONF_DIR: &str = "/etc/rabbitmq/conf.d";
const PLUGINS_DIR: &str = "/etc/rabbitmq/swappo";
const DATA_DIR: &str = "/var/lib/rabbitmq";
const COOKIE_SECRET_DIR: &str = "/tmp/erlang-cookie-secret";

/// `rabbitmq.conf` for `sm`: listeners, and a memory budget from the container's limit
/// (the Erlang VM sees the node's memory, not the cgroup's, and would be OOM-killed).
pub fn rabbitmq_conf(sm: &SwappoMessaging) -> String {
    let mut conf = format!(
        "# Written by swappo-operator from the SwappoMessaging {}; edits are overwritten.\n\
         listeners.tcp.default = {AMQP_PORT}\n\
         management.tcp.port = {MANAGEMENT_PORT}\n\
         prometheus.tcp.port = {PROMETHEUS_PORT}\n\
         # The guest user may only log in from localhost (never over the network).\n\
         loopback_users.guest = true\n\
         log.console = true\n\
         log.console.level = info\n\
         # The user from the credentials Secret, imported at every boot (created, or its\n\
         # password set): a re-created Secret never locks clients out of an existing database.\n\
         load_definitions = {DEFINITIONS_FILE}\n",
        sm.metadata.name.as_deref().unwrap_or_default()
    );
    match memory_limit_bytes(&resources(sm)) {
        Some(Ok(limit)) => conf.push_str(&memory_conf(limit)),
        // Not refused by the CRD (a CEL rule on the limits map exceeds the API server's cost
        // budget: its values have no maximum length). The reconciler does not apply such a
        // spec ([`invalid_resources`]: BrokerReady False naming the field); this branch only
        // keeps the function total.
        Some(Err(e)) => conf.push_str(&format!(
            "# No memory settings: the container's memory limit is not a quantity ({e}).\n"
        )),
        None => {}
    }
    conf
}

/// `enabled_plugins`: management (the API the operator and autoscaler read) and prometheus.
pub const ENABLED_PLUGINS: &str = "[rabbitmq_management,rabbitmq_prometheus].\n";

/// The memory RabbitMQ may plan with for a container limit of `limit` bytes: the limit minus
/// a headroom of 20 %, at most 2 GiB (the RabbitMQ cluster-operator's rule): the Erlang VM's
/// own code, atoms and allocator slack live outside what RabbitMQ accounts for.
pub fn memory_budget(limit: u64) -> u64 {
    const MAX_HEADROOM: u64 = 2 << 30;
    limit - (limit / 5).min(MAX_HEADROOM)
}

/// The memory high watermark for a container limit of `limit` bytes, absolute: 60 % of
/// [`memory_budget`] (RabbitMQ 3.13's default relative watermark, 0.6, applied to the budget
/// instead of the host's memory, which the Erlang VM sees instead of the cgroup's limit). The
/// 40 % above it absorbs a garbage collection (which can briefly double a process's heap) and
/// the quorum write-ahead log below, so publishers are blocked before the kernel kills the pod.
/// 512Mi: 257 698 038 bytes (about 246 MiB).
pub fn memory_high_watermark(limit: u64) -> u64 {
    let sixty_percent = u128::from(memory_budget(limit)) * 3 / 5;
    u64::try_from(sixty_percent).unwrap_or(u64::MAX)
}

/// RabbitMQ's default quorum WAL size (`raft.wal_max_size_bytes`): 512 MiB.
const DEFAULT_WAL_MAX_BYTES: u64 = 512 << 20;

/// The quorum queues' write-ahead log size for a container limit of `limit` bytes: a quarter
/// of [`memory_budget`], at most RabbitMQ's default of 512 MiB. The WAL's entries are held in
/// memory until it rolls over, and RabbitMQ's docs ask for a memory limit of at least 3 to 4
/// times the WAL size; the default 512 MiB alone exceeds a 512Mi container.
/// 512Mi: 107 374 182 bytes (about 102 MiB).
pub fn quorum_wal_max_bytes(limit: u64) -> u64 {
    (memory_budget(limit) / 4).min(DEFAULT_WAL_MAX_BYTES)
}

/// The memory lines of `rabbitmq.conf` for a container limit of `limit` bytes.
fn memory_conf(limit: u64) -> String {
    format!(
        "# Container memory limit: {limit} bytes. The Erlang VM sees the host's memory, so\n\
         # every figure is set from the limit (see swappo-operator builders/broker.rs).\n\
         # Budget: the limit minus 20 % headroom (at most 2 GiB) for the VM itself.\n\
         total_memory_available_override_value = {}\n\
         # Publishers are blocked at 60 % of the budget: room above for GC and the WAL.\n\
         vm_memory_high_watermark.absolute = {}\n\
         # Quorum write-ahead log held in memory until flushed: a quarter of the budget,\n\
         # at most RabbitMQ's default 512 MiB.\n\
         raft.wal_max_size_bytes = {}\n",
        memory_budget(limit),
        memory_high_watermark(limit),
        quorum_wal_max_bytes(limit),
    )
}

/// Bytes of a Kubernetes memory quantity, in every form the API server takes (`512Mi`,
/// `0.5Gi`, `1.5Gi`, `1G`, `536870912`, `1e9`, `500M`...), parsed by `kube_quantity`;
/// fractional bytes round up. An error for what is not a non-negative quantity.
///
/// Through `to_bytes_f64`: the crate's integer conversions truncate the number before the
/// suffix is applied (`0.5Gi` would be 0). The crate parses the number as an `f64` anyway,
/// which is exact for every whole byte count below 2^53 (8 PiB).
pub fn parse_memory(q: &str) -> Result<u64, String> {
    /// 2^53: above it an `f64` no longer holds every integer.
    const EXACT_LIMIT: f64 = 9_007_199_254_740_992.0;
    let parsed = kube_quantity::ParsedQuantity::try_from(q.trim())
        .map_err(|e| format!("{q:?} is not a Kubernetes quantity: {e}"))?;
    match parsed.to_bytes_f64().map(f64::ceil) {
        Some(bytes) if (0.0..EXACT_LIMIT).contains(&bytes) => Ok(bytes as u64),
        _ => Err(format!(
            "{q:?} is not a byte count between 0 and 8 PiB this operator can use"
        )),
    }
}

/// What is wrong with `spec.broker.resources`, naming the field: a value that is not a
/// Kubernetes quantity (the API server would refuse the StatefulSet), or a memory limit this
/// operator cannot derive the broker's memory settings from. `None` when the spec is usable.
/// The CRD cannot refuse these itself (see [`rabbitmq_conf`]), so the reconciler reports them
/// as `BrokerReady=False` and leaves the broker as it is.
pub fn invalid_resources(sm: &SwappoMessaging) -> Option<String> {
    let resources = sm.spec.broker.resources.as_ref()?;
    for (kind, map) in [
        ("limits", &resources.limits),
        ("requests", &resources.requests),
    ] {
        for (name, q) in map.iter().flatten() {
            if let Err(e) = kube_quantity::ParsedQuantity::try_from(q.0.trim()) {
                return Some(format!(
                    "spec.broker.resources.{kind}.{name}: {:?} is not a Kubernetes quantity ({e}); \
                     write it like 512Mi, 1.5Gi or 500m",
                    q.0
                ));
            }
        }
    }
    match memory_limit_bytes(resources) {
        Some(Err(e)) => Some(format!("spec.broker.resources.limits.memory: {e}")),
        _ => None,
    }
}

/// The container's memory limit in bytes: `None` when there is none, an error when it does
/// not parse.
fn memory_limit_bytes(resources: &ResourceRequirements) -> Option<Result<u64, String>> {
    Some(parse_memory(&resources.limits.as_ref()?.get("memory")?.0))
}

/// The broker container's resources: the spec's, or requests 250m CPU / 256Mi and a 512Mi
/// memory limit (enough for a development broker with small queues).
pub fn resources(sm: &SwappoMessaging) -> ResourceRequirements {
    sm.spec
        .broker
        .resources
        .clone()
        .unwrap_or_else(|| ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("250m".into())),
                ("memory".to_owned(), Quantity("256Mi".into())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity("512Mi".into()),
            )])),
            ..ResourceRequirements::default()
        })
}

/// The ConfigMap with `rabbitmq.conf` and `enabled_plugins`.
pub fn config_map(sm: &SwappoMessaging) -> ConfigMap {
    ConfigMap {
        metadata: object_meta(sm, &Names::of(sm).config_map),
        data: Some(BTreeMap::from([
            ("rabbitmq.conf".to_owned(), rabbitmq_conf(sm)),
            ("enabled_plugins".to_owned(), ENABLED_PLUGINS.to_owned()),
        ])),
        ..ConfigMap::default()
    }
}

/// The data volume claim (ReadWriteOnce: one broker pod at a time); not owned by `sm` unless
/// `whenDeleted: Delete` (see [`retained_object_meta`]).
pub fn pvc(sm: &SwappoMessaging) -> PersistentVolumeClaim {
    let storage = sm.spec.broker.storage.clone().unwrap_or_default();
    PersistentVolumeClaim {
        metadata: retained_object_meta(sm, &Names::of(sm).pvc),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage.storage_class_name,
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(storage.size.unwrap_or_else(|| DEFAULT_STORAGE.into())),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// The ClusterIP Service: amqp, management, prometheus.
pub fn service(sm: &SwappoMessaging) -> Service {
    let port = |name: &str, port: u16| ServicePort {
        name: Some(name.to_owned()),
        port: port.into(),
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    };
    Service {
        metadata: object_meta(sm, &Names::of(sm).service),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(sm)),
            ports: Some(vec![
                port("amqp", AMQP_PORT),
                port("management", MANAGEMENT_PORT),
                port("prometheus", PROMETHEUS_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Readiness: a TCP check of the AMQP port, 10/5/10/3. It costs nothing on the broker, and
/// unlike `rabbitmq-diagnostics` (an Erlang VM per call: 0.7 to 1.0 s measured on an idle
/// 2-core machine) it cannot time out under load; 5 s covers a busy node's accept queue.
pub fn readiness_probe() -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String("amqp".into()),
            ..TCPSocketAction::default()
        }),
        initial_delay_seconds: Some(10),
        timeout_seconds: Some(5),
        period_seconds: Some(10),
        success_threshold: Some(1),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// Startup: the same TCP check with 30 failures of 10 s allowed, so a broker recovering a
/// large message store gets 5 minutes to open its port before Kubernetes gives up on it.
/// There is deliberately no liveness probe: restarting a slow broker under load loses
/// more than it heals (the RabbitMQ cluster-operator sets none either).
pub fn startup_probe() -> Probe {
    Probe {
        initial_delay_seconds: Some(10),
        failure_threshold: Some(30),
        ..readiness_probe()
    }
}

/// The restricted container security context (Pod Security Standards `restricted`).
fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}

/// The restricted pod security context: the image's `rabbitmq` user, which owns the volume.
fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RABBITMQ_UID),
        run_as_group: Some(RABBITMQ_UID),
        fs_group: Some(RABBITMQ_UID),
        // The default (`Always`) re-chowns every file of the volume at each pod start, which
        // grows with the message store; `OnRootMismatch` only when the volume root's owner
        // or mode is not already right (a fresh volume).
        fs_group_change_policy: Some("OnRootMismatch".into()),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// The broker's fixed host name: `<name>-rabbitmq` (at most 49 characters, a DNS label).
///
/// RabbitMQ names its node `rabbit@<host>` and keeps its database in
/// `/var/lib/rabbitmq/mnesia/rabbit@<host>`. Left to the pod, the host is the pod's name:
/// random for a Deployment's pod, so every new pod (rollout, eviction, drain, `kubectl delete
/// pod`) started an empty database beside the old one and its queues and messages were gone
/// (issue 19, measured: 200 of 200 persistent messages lost); `<sts>-0` for a StatefulSet's,
/// stable but tied to the workload's name and kind. `RABBITMQ_NODENAME` pins the node name
/// instead, so the database directory depends on the resource's name only (the same as the
/// earlier Deployment-based broker's, whose pod `hostname` was this name: an upgrade opens
/// the same directory). The name resolves to 127.0.0.1 through a `hostAliases` entry in the
/// pod's `/etc/hosts`, which is all a single node needs: epmd and the CLI tools dial
/// `rabbit@<host>` locally, and no other node ever dials it (hence no headless Service).
pub fn node_hostname(sm: &SwappoMessaging) -> String {
    Names::of(sm).stateful_set
}

/// `RABBITMQ_NODENAME` of the broker: `rabbit@` + [`node_hostname`].
pub fn node_name(sm: &SwappoMessaging) -> String {
    format!("rabbit@{}", node_hostname(sm))
}

/// FNV-1a, 64 bits: a stable hash for the config annotation (not for security).
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The broker StatefulSet: one replica of [`pod_template`], on the operator's own claim.
///
/// A StatefulSet, not a Deployment, because it guarantees at most one broker process per
/// volume whatever removes the pod: its pod has a fixed name (`<name>-rabbitmq-0`), and the
/// controller creates the replacement only once the old pod object is gone, which the kubelet
/// allows only after the old containers have stopped. A Deployment's ReplicaSet starts the
/// replacement of a deleted or evicted pod at once (measured: about 1 s later, both brokers
/// on one volume for about 5 s; `strategy: Recreate` covers rollouts only). This is why the
/// RabbitMQ cluster-operator uses one even for a single node. The guarantee ends where
/// Kubernetes' does: `kubectl delete pod --force --grace-period=0` removes the object before
/// the containers stop.
///
/// The claim is the operator's (see [`pvc`]) and referenced from the pod template rather than
/// made from `volumeClaimTemplates`: those are immutable (a new size or class would mean
/// deleting the StatefulSet), their claims are named `<template>-<pod>`, so a broker upgraded
/// from the Deployment would not find its data, and `persistentVolumeClaimRetentionPolicy`
/// keeps only the claim, while a retained volume needs its credentials Secret too
/// (`spec.broker.storage.whenDeleted`). `credentials` (the operator's Secret's) set the
/// pod template's [`CREDENTIALS_HASH_ANNOTATION`], so new credentials restart the broker,
/// which imports its user at boot.
pub fn stateful_set(sm: &SwappoMessaging, credentials: Option<&Credentials>) -> StatefulSet {
    let names = Names::of(sm);
    StatefulSet {
        metadata: object_meta(sm, &names.stateful_set),
        spec: StatefulSetSpec {
            replicas: Some(1),
            revision_history_limit: Some(REVISION_HISTORY_LIMIT),
            selector: LabelSelector {
                match_labels: Some(selector_labels(sm)),
                ..LabelSelector::default()
            },
            // Replaces the pod only after the old one is gone (one replica: no partition).
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            pod_management_policy: Some("OrderedReady".into()),
            template: pod_template(sm, credentials),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

/// The broker's pod template: the RabbitMQ container with the probes above, the config,
/// the credentials and the cookie mounted, a restricted security context, the pinned node
/// name ([`node_hostname`]) and the spec's placement (`nodeSelector`, `tolerations`).
pub fn pod_template(sm: &SwappoMessaging, credentials: Option<&Credentials>) -> PodTemplateSpec {
    let names = Names::of(sm);
    let image = sm
        .spec
        .broker
        .image
        .clone()
        .unwrap_or_else(|| DEFAULT_IMAGE.into());
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        ..VolumeMount::default()
    };
    let port = |name: &str, port: u16| ContainerPort {
        name: Some(name.to_owned()),
        container_port: port.into(),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    };
    let item = |key: &str, path: &str| KeyToPath {
        key: key.to_owned(),
        path: path.to_owned(),
        ..KeyToPath::default()
    };
    let config_hash = fnv1a(rabbitmq_conf(sm).as_bytes()) ^ fnv1a(ENABLED_PLUGINS.as_bytes());

    // Erlang refuses a cookie file not owned by its user with mode 600; a Secret volume is
    // root-owned, so an init container copies it onto the data volume (as the
    // cluster-operator does).
    let cookie_init = Container {
        name: "erlang-cookie".into(),
        image: Some(image.clone()),
        command: Some(vec!["sh".into(), "-c".into()]),
        args: Some(vec![format!(
            "cp {COOKIE_SECRET_DIR}/.erlang.cookie {DATA_DIR}/.erlang.cookie && \
             chmod 600 {DATA_DIR}/.erlang.cookie"
        )]),
        volume_mounts: Some(vec![
            mount("data", DATA_DIR),
            mount("erlang-cookie", COOKIE_SECRET_DIR),
        ]),
        security_context: Some(container_security_context()),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("10m".into())),
                ("memory".to_owned(), Quantity("16Mi".into())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity("64Mi".into()),
            )])),
            ..ResourceRequirements::default()
        }),
        ..Container::default()
    };
    let broker = Container {
        name: "rabbitmq".into(),
        image: Some(image),
        ports: Some(vec![
            port("amqp", AMQP_PORT),
            port("management", MANAGEMENT_PORT),
            port("prometheus", PROMETHEUS_PORT),
        ]),
        env: Some(vec![
            EnvVar {
                name: "RABBITMQ_ENABLED_PLUGINS_FILE".into(),
                value: Some(format!("{PLUGINS_DIR}/enabled_plugins")),
                ..EnvVar::default()
            },
            // The default user (Secret key `advanced.config`, see builders::secret).
            EnvVar {
                name: "RABBITMQ_ADVANCED_CONFIG_FILE".into(),
                value: Some(format!("{CONF_DIR}/advanced.config")),
                ..EnvVar::default()
            },
            // The node name, hence the database directory: see `node_hostname`.
            EnvVar {
                name: "RABBITMQ_NODENAME".into(),
                value: Some(node_name(sm)),
                ..EnvVar::default()
            },
        ]),
        readiness_probe: Some(readiness_probe()),
        startup_probe: Some(startup_probe()),
        resources: Some(resources(sm)),
        security_context: Some(container_security_context()),
        volume_mounts: Some(vec![
            mount("data", DATA_DIR),
            mount("config", CONF_DIR),
            mount("plugins", PLUGINS_DIR),
        ]),
        ..Container::default()
    };
    let volumes = vec![
        Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: names.pvc.clone(),
                ..PersistentVolumeClaimVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "config".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![
                    VolumeProjection {
                        config_map: Some(ConfigMapProjection {
                            name: names.config_map.clone(),
                            items: Some(vec![item("rabbitmq.conf", "10-swappo.conf")]),
                            ..ConfigMapProjection::default()
                        }),
                        ..VolumeProjection::default()
                    },
                    VolumeProjection {
                        secret: Some(SecretProjection {
                            name: names.secret.clone(),
                            // Not a `*.conf`: conf.d loads only those; the path is
                            // given by RABBITMQ_ADVANCED_CONFIG_FILE below.
                            items: Some(vec![
                                item(key::ADVANCED_CONFIG, "advanced.config"),
                                item(key::DEFINITIONS, "definitions.json"),
                            ]),
                            ..SecretProjection::default()
                        }),
                        ..VolumeProjection::default()
                    },
                ]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "plugins".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names.config_map.clone(),
                items: Some(vec![item("enabled_plugins", "enabled_plugins")]),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "erlang-cookie".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names.secret.clone()),
                items: Some(vec![item(key::ERLANG_COOKIE, ".erlang.cookie")]),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    let mut annotations = BTreeMap::from([(
        CONFIG_HASH_ANNOTATION.to_owned(),
        format!("{config_hash:016x}"),
    )]);
    if let Some(fingerprint) = credentials.and_then(Credentials::fingerprint) {
        annotations.insert(CREDENTIALS_HASH_ANNOTATION.to_owned(), fingerprint);
    }
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(sm)),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            host_aliases: Some(vec![HostAlias {
                ip: "127.0.0.1".into(),
                hostnames: Some(vec![node_hostname(sm)]),
            }]),
            init_containers: Some(vec![cookie_init]),
            containers: vec![broker],
            volumes: Some(volumes),
            security_context: Some(pod_security_context()),
            termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
            automount_service_account_token: Some(false),
            node_selector: sm.spec.broker.node_selector.clone(),
            tolerations: sm.spec.broker.tolerations.clone(),
            ..PodSpec::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::TestExt;

    fn deployment(sm: &SwappoMessaging) -> StatefulSet {
        stateful_set(sm, None)
    }

    fn pod_spec(d: &StatefulSet) -> &PodSpec {
        d.spec.template.spec.as_ref().unwrap()
    }

    fn annotations(d: &StatefulSet) -> BTreeMap<String, String> {
        let template = &d.spec.template;
        template.metadata.clone().unwrap().annotations.unwrap()
    }

    #[test]
    fn the_broker_is_one_stateful_set_pod_on_the_operators_own_claim() {
        let sm = SwappoMessaging::test();
        let set = deployment(&sm);
        assert_eq!(set.metadata.name.as_deref(), Some("test-rabbitmq"));
        let spec = &set.spec;
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(
            spec.update_strategy.as_ref().unwrap().type_.as_deref(),
            Some("RollingUpdate")
        );
        assert_eq!(spec.pod_management_policy.as_deref(), Some("OrderedReady"));
        assert!(spec.revision_history_limit.unwrap() <= 3);
        assert_eq!(
            spec.selector.match_labels.as_ref(),
            Some(&selector_labels(&sm))
        );
        // The operator's claim (kept by its retention policy), not a claim template.
        assert!(spec.volume_claim_templates.is_none());
        assert!(spec.persistent_volume_claim_retention_policy.is_none());
        let claim = pod_spec(&set)
            .volumes
            .iter()
            .flatten()
            .find_map(|v| v.persistent_volume_claim.as_ref())
            .unwrap();
        assert_eq!(claim.claim_name, pvc(&sm).metadata.name.unwrap());
    }

    #[test]
    fn placement_comes_from_the_spec() {
        use k8s_openapi::api::core::v1::Toleration;
        let mut sm = SwappoMessaging::test();
        assert!(pod_spec(&deployment(&sm)).node_selector.is_none());
        let selector = BTreeMap::from([("disk".to_owned(), "ssd".to_owned())]);
        let toleration = Toleration {
            key: Some("dedicated".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        };
        sm.spec.broker.node_selector = Some(selector.clone());
        sm.spec.broker.tolerations = Some(vec![toleration.clone()]);
        let set = deployment(&sm);
        let pod = pod_spec(&set);
        assert_eq!(pod.node_selector, Some(selector));
        assert_eq!(pod.tolerations, Some(vec![toleration]));
    }

    #[test]
    fn new_credentials_change_the_pod_template_but_the_template_holds_no_secret() {
        use rand::SeedableRng;
        let sm = SwappoMessaging::test();
        let rng = |seed| Credentials::generate(&mut rand::rngs::StdRng::seed_from_u64(seed), true);
        let (a, b) = (rng(1), rng(2));
        let with_a = stateful_set(&sm, Some(&a));
        assert_eq!(
            annotations(&with_a)[CREDENTIALS_HASH_ANNOTATION],
            a.fingerprint().unwrap()
        );
        assert_eq!(
            annotations(&stateful_set(&sm, Some(&a))),
            annotations(&with_a)
        );
        assert_ne!(
            annotations(&stateful_set(&sm, Some(&b)))[CREDENTIALS_HASH_ANNOTATION],
            annotations(&with_a)[CREDENTIALS_HASH_ANNOTATION]
        );
        let text = serde_json::to_string(&with_a).unwrap();
        assert!(!text.contains(&a.password) && !text.contains(a.erlang_cookie.as_deref().unwrap()));
    }

    #[test]
    fn the_broker_imports_its_user_from_the_secret_at_every_boot() {
        let sm = SwappoMessaging::test();
        let conf = rabbitmq_conf(&sm);
        assert!(
            conf.contains(&format!("\nload_definitions = {DEFINITIONS_FILE}\n")),
            "{conf}"
        );
        let set = deployment(&sm);
        let projected = pod_spec(&set)
            .volumes
            .iter()
            .flatten()
            .find_map(|v| v.projected.as_ref())
            .unwrap();
        let secret = projected.sources.as_ref().unwrap()[1]
            .secret
            .as_ref()
            .unwrap();
        let items: Vec<(&str, &str)> = secret
            .items
            .iter()
            .flatten()
            .map(|i| (i.key.as_str(), i.path.as_str()))
            .collect();
        assert!(items.contains(&(key::DEFINITIONS, "definitions.json")));
        let mount = &pod_spec(&set).containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "config")
            .unwrap()
            .mount_path;
        assert_eq!(format!("{mount}/definitions.json"), DEFINITIONS_FILE);
    }

    #[test]
    fn the_broker_node_name_is_fixed_and_resolves_locally_so_a_new_pod_opens_the_same_database() {
        let sm = SwappoMessaging::test();
        let d = deployment(&sm);
        let pod = pod_spec(&d);
        // Not the pod's name (`test-rabbitmq-0`, set by the StatefulSet): the name of the
        // resource, as the earlier Deployment-based broker's hostname was.
        let aliases = pod.host_aliases.as_ref().unwrap();
        assert_eq!(aliases[0].ip, "127.0.0.1");
        assert_eq!(aliases[0].hostnames, Some(vec!["test-rabbitmq".to_owned()]));
        assert!(
            pod.hostname.is_none() && pod.subdomain.is_none() && pod.host_network != Some(true)
        );
        let env = pod.containers[0].env.as_ref().unwrap();
        let nodename = env
            .iter()
            .find(|e| e.name == "RABBITMQ_NODENAME")
            .and_then(|e| e.value.as_deref());
        assert_eq!(nodename, Some("rabbit@test-rabbitmq"));
        assert!(!env.iter().any(|e| e.name == "RABBITMQ_USE_LONGNAME"));
        let mut other = SwappoMessaging::test();
        other.spec.broker.image = Some("rabbitmq:4.0-management".into());
        assert_eq!(pod_spec(&deployment(&other)).hostname, pod.hostname);
    }

    #[test]
    fn the_volume_is_rechowned_only_on_a_root_mismatch_for_the_images_uid_999() {
        let d = deployment(&SwappoMessaging::test());
        let psc = pod_spec(&d).security_context.clone().unwrap();
        assert_eq!(
            psc.fs_group_change_policy.as_deref(),
            Some("OnRootMismatch")
        );
        assert_eq!(
            (psc.run_as_user, psc.run_as_group, psc.fs_group),
            (Some(999), Some(999), Some(999))
        );
    }

    #[test]
    fn readiness_is_a_tcp_check_with_five_second_timeout_and_no_exec_probe_exists() {
        let d = deployment(&SwappoMessaging::test());
        let c = &pod_spec(&d).containers[0];
        let r = c.readiness_probe.as_ref().unwrap();
        assert_eq!(
            r.tcp_socket.as_ref().unwrap().port,
            IntOrString::String("amqp".into())
        );
        assert_eq!(
            (
                r.initial_delay_seconds,
                r.timeout_seconds,
                r.period_seconds,
                r.failure_threshold
            ),
            (Some(10), Some(5), Some(10), Some(3))
        );
        let s = c.startup_probe.as_ref().unwrap();
        assert!(s.tcp_socket.is_some() && s.failure_threshold >= Some(30));
        for probe in [&c.readiness_probe, &c.startup_probe, &c.liveness_probe]
            .into_iter()
            .flatten()
        {
            assert!(probe.exec.is_none() || probe.timeout_seconds >= Some(10));
        }
    }

    #[test]
    fn every_container_meets_the_restricted_pod_security_standard() {
        let d = deployment(&SwappoMessaging::test());
        let pod = pod_spec(&d);
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        let containers = pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten());
        for c in containers {
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(
                sc.capabilities.as_ref().unwrap().drop,
                Some(vec!["ALL".to_owned()])
            );
            assert_eq!(sc.run_as_non_root, Some(true));
        }
        assert!(pod.volumes.iter().flatten().all(|v| v.host_path.is_none()));
    }

    #[test]
    fn the_broker_mounts_its_volume_config_credentials_and_cookie() {
        let d = deployment(&SwappoMessaging::test());
        let pod = pod_spec(&d);
        let volumes = pod.volumes.as_ref().unwrap();
        let claim = volumes
            .iter()
            .find_map(|v| v.persistent_volume_claim.as_ref())
            .unwrap();
        assert_eq!(claim.claim_name, "test-rabbitmq-data");
        let projected = volumes.iter().find_map(|v| v.projected.as_ref()).unwrap();
        let sources = projected.sources.as_ref().unwrap();
        assert_eq!(
            sources[0].config_map.as_ref().unwrap().name,
            "test-rabbitmq-config"
        );
        assert_eq!(sources[1].secret.as_ref().unwrap().name, "test-rabbitmq");
        let env = pod.containers[0].env.as_ref().unwrap();
        assert!(
            env.iter()
                .all(|e| e.value_from.is_none() && !e.name.contains("PASS"))
        );
    }

    #[test]
    fn a_config_change_changes_the_pod_template_hash() {
        let a = deployment(&SwappoMessaging::test());
        let mut sm = SwappoMessaging::test();
        sm.spec.broker.resources = Some(ResourceRequirements {
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity("1Gi".into()),
            )])),
            ..ResourceRequirements::default()
        });
        let b = deployment(&sm);
        let hash = |d: &StatefulSet| annotations(d)[CONFIG_HASH_ANNOTATION].clone();
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(hash(&a), hash(&deployment(&SwappoMessaging::test())));
    }

    #[test]
    fn the_service_exposes_amqp_management_and_prometheus() {
        let s = service(&SwappoMessaging::test());
        let spec = s.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        let ports: Vec<(String, i32)> = spec
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port))
            .collect();
        assert_eq!(
            ports,
            [
                ("amqp".into(), 5672),
                ("management".into(), 15672),
                ("prometheus".into(), 15692)
            ]
        );
    }

    #[test]
    fn the_claim_defaults_to_one_gibibyte_read_write_once() {
        let claim = pvc(&SwappoMessaging::test());
        let spec = claim.spec.unwrap();
        assert_eq!(spec.access_modes, Some(vec!["ReadWriteOnce".to_owned()]));
        assert_eq!(
            spec.resources.unwrap().requests.unwrap()["storage"].0,
            "1Gi"
        );
        assert_eq!(spec.storage_class_name, None);
    }

    #[test]
    fn the_config_enables_management_and_prometheus_and_budgets_memory() {
        let cm = config_map(&SwappoMessaging::test());
        let data = cm.data.unwrap();
        assert!(data["enabled_plugins"].contains("rabbitmq_management"));
        assert!(data["enabled_plugins"].contains("rabbitmq_prometheus"));
        let conf = &data["rabbitmq.conf"];
        assert!(conf.contains("listeners.tcp.default = 5672"));
        // 512Mi limit minus 20 %, 60 % of that, a quarter of that.
        assert!(conf.contains("total_memory_available_override_value = 429496730\n"));
        assert!(conf.contains("vm_memory_high_watermark.absolute = 257698038\n"));
        assert!(conf.contains("raft.wal_max_size_bytes = 107374182\n"));
        assert!(!conf.contains("default_pass"));
    }

    #[test]
    fn memory_quantities_parse_in_every_kubernetes_form() {
        let table: &[(&str, u64)] = &[
            ("512Mi", 512 << 20),
            ("0.5Gi", 512 << 20),
            ("1.5Gi", 3 << 29),
            ("1Gi", 1 << 30),
            ("1G", 1_000_000_000),
            ("500M", 500_000_000),
            ("128k", 128_000),
            ("64Ki", 64 << 10),
            ("536870912", 536_870_912),
            ("1e9", 1_000_000_000),
            ("1E3", 1000),
            (" 2Gi ", 2 << 30),
        ];
        for (q, bytes) in table {
            assert_eq!(parse_memory(q), Ok(*bytes), "{q}");
        }
        for bad in ["lots", "", "12Qi", "1.5.5Gi", "-1Gi"] {
            let e = parse_memory(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }

    #[test]
    fn resources_that_are_not_quantities_are_named_and_usable_ones_pass() {
        let with = |kind: &str, name: &str, value: &str| {
            let mut sm = SwappoMessaging::test();
            let map = BTreeMap::from([(name.to_owned(), Quantity(value.into()))]);
            sm.spec.broker.resources = Some(match kind {
                "limits" => ResourceRequirements {
                    limits: Some(map),
                    ..ResourceRequirements::default()
                },
                _ => ResourceRequirements {
                    requests: Some(map),
                    ..ResourceRequirements::default()
                },
            });
            invalid_resources(&sm)
        };
        assert_eq!(invalid_resources(&SwappoMessaging::test()), None);
        for ok in ["512Mi", "1.5Gi", "0.5Gi", "1e9", "1G"] {
            assert_eq!(with("limits", "memory", ok), None, "{ok}");
        }
        assert_eq!(with("requests", "cpu", "500m"), None);
        let bad = with("limits", "memory", "1.5 Gigs").expect("refused");
        assert!(
            bad.starts_with("spec.broker.resources.limits.memory: \"1.5 Gigs\""),
            "{bad}"
        );
        let bad = with("requests", "cpu", "half").expect("refused");
        assert!(
            bad.starts_with("spec.broker.resources.requests.cpu: \"half\""),
            "{bad}"
        );
        let bad = with("limits", "memory", "9000Ti").expect("refused");
        assert!(bad.contains("between 0 and 8 PiB"), "{bad}");
    }

    #[test]
    fn the_watermark_and_quorum_wal_derive_from_the_limit() {
        // limit, budget, watermark (absolute), WAL
        let table: &[(u64, u64, u64, u64)] = &[
            (512 << 20, 429_496_730, 257_698_038, 107_374_182),
            (3 << 29, 1_288_490_189, 773_094_113, 322_122_547),
            (4 << 30, 3_435_973_837, 2_061_584_302, 512 << 20),
            (64 << 30, 62 << 30, 39_943_195_852, 512 << 20),
            (1000, 800, 480, 200),
        ];
        for &(limit, budget, watermark, wal) in table {
            assert_eq!(memory_budget(limit), budget, "{limit}");
            assert_eq!(memory_high_watermark(limit), watermark, "{limit}");
            assert_eq!(quorum_wal_max_bytes(limit), wal, "{limit}");
            assert!(watermark + wal <= budget, "{limit}");
        }
    }

    #[test]
    fn a_fractional_limit_is_configured_not_dropped() {
        let mut sm = SwappoMessaging::test();
        sm.spec.broker.resources = Some(ResourceRequirements {
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity("1.5Gi".into()),
            )])),
            ..ResourceRequirements::default()
        });
        let conf = rabbitmq_conf(&sm);
        assert!(
            conf.contains("vm_memory_high_watermark.absolute = 773094113\n"),
            "{conf}"
        );
        assert!(
            conf.contains("raft.wal_max_size_bytes = 322122547\n"),
            "{conf}"
        );
        sm.spec.broker.resources.as_mut().unwrap().limits = Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity("lots".into()),
        )]));
        let conf = rabbitmq_conf(&sm);
        assert!(!conf.contains("watermark"), "{conf}");
        assert!(conf.contains("not a quantity (\"lots\""), "{conf}");
    }
}
