//! The stale-ReplicaSet verdict (DESIGN.md §7): a pure function over what the API server
//! reports about the Deployments the operator manages or scales, the ReplicaSets in their
//! namespace, and the readiness of those ReplicaSets' pods.
//!
//! A ReplicaSet is stale when it is
//! - (a) controlled by a managed Deployment, of an older revision, and still holding replicas
//!   after the current revision is fully available;
//! - (b) carrying this instance's labels while its owner Deployment is gone;
//! - (c) a zero-replica old revision beyond the Deployment's `revisionHistoryLimit`.
//!
//! A rollout still in progress is never cut short (no verdict at all for that Deployment's
//! ReplicaSets), and a ReplicaSet that is neither controlled by a managed Deployment nor
//! labelled for this instance is never named.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// The annotation the Deployment controller puts on a Deployment and its ReplicaSets.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

/// Kubernetes' default `revisionHistoryLimit` when the Deployment does not set one.
pub const DEFAULT_HISTORY_LIMIT: i32 = 10;

/// Why a ReplicaSet is stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaleReason {
    /// (a) An old revision still holds replicas although the current one is fully available.
    OldRevisionHoldingReplicas {
        /// The Deployment that controls it.
        deployment: String,
        /// Its revision.
        revision: i64,
        /// The Deployment's current revision.
        current_revision: i64,
        /// Replicas it still holds (the larger of spec and status).
        replicas: i32,
    },
    /// (b) It carries this instance's labels, but the Deployment that owned it is gone.
    OwnerDeploymentGone {
        /// The owner's name as recorded in the owner reference, if there was one.
        deployment: Option<String>,
    },
    /// (c) A zero-replica old revision past the Deployment's history limit.
    BeyondHistoryLimit {
        /// The Deployment that controls it.
        deployment: String,
        /// Its revision.
        revision: i64,
        /// The Deployment's `revisionHistoryLimit`.
        limit: i32,
    },
}

impl StaleReason {
    /// A short CamelCase code, used as the Event reason and a metric label.
    pub fn code(&self) -> &'static str {
        match self {
            Self::OldRevisionHoldingReplicas { .. } => "OldRevisionHoldingReplicas",
            Self::OwnerDeploymentGone { .. } => "OwnerDeploymentGone",
            Self::BeyondHistoryLimit { .. } => "BeyondHistoryLimit",
        }
    }

    /// A sentence for an Event message.
    pub fn message(&self) -> String {
        match self {
            Self::OldRevisionHoldingReplicas {
                deployment,
                revision,
                current_revision,
                replicas,
            } => {
                format!(
                    "revision {revision} of Deployment {deployment} still holds {replicas} \
                     replica(s) although revision {current_revision} is fully available"
                )
            }
            Self::OwnerDeploymentGone {
                deployment: Some(d),
            } => {
                format!("its owner Deployment {d} no longer exists")
            }
            Self::OwnerDeploymentGone { deployment: None } => {
                "it carries this instance's labels but has no owner Deployment".to_string()
            }
            Self::BeyondHistoryLimit {
                deployment,
                revision,
                limit,
            } => format!(
                "revision {revision} of Deployment {deployment} has no replicas and is beyond \
                 the history limit of {limit}"
            ),
        }
    }
}

/// One ReplicaSet to delete and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    /// The ReplicaSet's name.
    pub name: String,
    /// Why it is stale.
    pub reason: StaleReason,
}

/// What the verdict looks at, as observed from the API server.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// The Deployments this instance manages or scales, in the namespace observed.
    pub managed: &'a [Deployment],
    /// UIDs of the Deployments known to exist: the managed ones and the owners named by
    /// [`Needs::owners_to_look_up`] that were found (more are harmless).
    pub existing_deployment_uids: &'a BTreeSet<String>,
    /// The ReplicaSets that may concern this instance: those selected by a managed
    /// Deployment's selector or carrying the instance's labels (more are harmless: a set
    /// neither controlled by a managed Deployment nor labelled is never named).
    pub replica_sets: &'a [ReplicaSet],
    /// The pods of those ReplicaSets.
    pub pods: &'a [Pod],
    /// The labels that mark an object as this instance's (all must match).
    pub instance_labels: &'a BTreeMap<String, String>,
}

/// What the verdict needs read beyond the managed Deployments and the ReplicaSets, decided
/// from them so the I/O stays proportional to this instance's own objects.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Needs {
    /// Owner Deployments (by name) whose existence decides case (b): the controllers of
    /// labelled ReplicaSets that are not managed Deployments.
    pub owners_to_look_up: BTreeSet<String>,
    /// Whether the pods must be read: only a managed Deployment controlling more than one
    /// ReplicaSet can have an old revision to judge, and only then does the current
    /// revision's pod readiness matter.
    pub pods: bool,
}

/// Whether these ReplicaSets (a watch cache's view of the namespace) could hold anything
/// stale for the instance managing `managed_names` and labelled `instance_labels`: an older
/// revision of a managed Deployment still holding replicas (case (a)), more idle old
/// revisions than the Deployment's history limit (case (c); `history_limits` has the limits
/// known from the cache, an unknown one counts as 0 so any old revision is a reason to look),
/// or a set carrying the instance's labels that no managed Deployment controls (case (b)).
/// When false the clean-up has nothing to judge and reads nothing from the API server: the
/// usual state after a rollout, with its old revisions scaled to 0 within the history
/// limit. Pure: no I/O.
pub fn worth_a_look<'a>(
    managed_names: &BTreeSet<String>,
    history_limits: &BTreeMap<String, i32>,
    replica_sets: impl IntoIterator<Item = &'a ReplicaSet>,
    instance_labels: &BTreeMap<String, String>,
) -> bool {
    // (revision, replicas held) of each set, by managed Deployment.
    let mut per_managed: BTreeMap<String, Vec<(i64, i32)>> = BTreeMap::new();
    for rs in replica_sets {
        if rs.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let owner = controller_deployment(&rs.metadata).map(|o| o.name);
        match owner {
            Some(name) if managed_names.contains(&name) => {
                if let Some(rev) = revision(&rs.metadata) {
                    per_managed
                        .entry(name)
                        .or_default()
                        .push((rev, held_replicas(rs)));
                }
            }
            _ if carries_labels(&rs.metadata, instance_labels) => return true,
            _ => {}
        }
    }
    per_managed.iter().any(|(name, sets)| {
        let newest = sets.iter().map(|(rev, _)| *rev).max().unwrap_or(0);
        let old: Vec<i32> = sets
            .iter()
            .filter(|(rev, _)| *rev < newest)
            .map(|(_, held)| *held)
            .collect();
        let limit = history_limits.get(name).copied().unwrap_or(0).max(0) as usize;
        old.iter().any(|held| *held > 0) || old.len() > limit
    })
}

/// Whether a Deployment's old revisions still hold pods, from its status alone: the pods it
/// counts (every revision's) outnumber its current revision's. A rollout in progress, or a
/// stale ReplicaSet of case (a): worth a look at its ReplicaSets.
pub fn old_revisions_hold_pods(d: &Deployment) -> bool {
    d.status
        .as_ref()
        .is_some_and(|s| s.replicas.unwrap_or(0) > s.updated_replicas.unwrap_or(0))
}

/// [`Needs`] for these observations. Pure: no I/O.
pub fn needs(
    managed: &[Deployment],
    replica_sets: &[ReplicaSet],
    instance_labels: &BTreeMap<String, String>,
) -> Needs {
    let managed_uids: BTreeSet<&str> = managed
        .iter()
        .filter_map(|d| d.metadata.uid.as_deref())
        .collect();
    let mut out = Needs::default();
    let mut per_managed: BTreeMap<String, usize> = BTreeMap::new();
    for rs in replica_sets {
        let Some(owner) = controller_deployment(&rs.metadata) else {
            continue;
        };
        if managed_uids.contains(owner.uid.as_str()) {
            *per_managed.entry(owner.uid).or_default() += 1;
        } else if carries_labels(&rs.metadata, instance_labels) {
            out.owners_to_look_up.insert(owner.name);
        }
    }
    out.pods = per_managed.values().any(|n| *n > 1);
    out
}

/// Names each stale ReplicaSet and why, in name order. Pure: no I/O.
pub fn stale_replica_sets(obs: &Observation<'_>) -> Vec<Stale> {
    let mut out = Vec::new();
    for rs in obs.replica_sets {
        if rs.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let owner = controller_deployment(&rs.metadata);
        let managed = owner.as_ref().and_then(|o| {
            obs.managed
                .iter()
                .find(|d| d.metadata.uid.as_deref() == Some(&o.uid))
        });
        if managed.is_some() {
            continue; // judged per Deployment below, where revisions can be compared
        }
        let owner_gone = match &owner {
            Some(o) => !obs.existing_deployment_uids.contains(&o.uid),
            None => true,
        };
        if owner_gone && carries_labels(&rs.metadata, obs.instance_labels) {
            out.push(Stale {
                name: name_of(&rs.metadata),
                reason: StaleReason::OwnerDeploymentGone {
                    deployment: owner.map(|o| o.name),
                },
            });
        }
    }
    for deployment in obs.managed {
        out.extend(stale_revisions_of(deployment, obs.replica_sets, obs.pods));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Cases (a) and (c) for one managed Deployment; nothing while its rollout is in progress.
fn stale_revisions_of(
    deployment: &Deployment,
    replica_sets: &[ReplicaSet],
    pods: &[Pod],
) -> Vec<Stale> {
    let Some(uid) = deployment.metadata.uid.as_deref() else {
        return Vec::new();
    };
    let Some(current_revision) = revision(&deployment.metadata) else {
        return Vec::new();
    };
    let owned: Vec<&ReplicaSet> = replica_sets
        .iter()
        .filter(|rs| rs.metadata.deletion_timestamp.is_none())
        .filter(|rs| controller_deployment(&rs.metadata).is_some_and(|o| o.uid == uid))
        .collect();
    let Some(current) = owned
        .iter()
        .find(|rs| revision(&rs.metadata) == Some(current_revision))
    else {
        return Vec::new(); // the controller has not created the new revision yet
    };
    if !rollout_complete(deployment, current, pods) {
        return Vec::new();
    }
    let name = name_of(&deployment.metadata);
    let mut stale = Vec::new();
    let mut idle_old: Vec<(i64, &ReplicaSet)> = Vec::new();
    for rs in &owned {
        let Some(rev) = revision(&rs.metadata) else {
            continue;
        };
        if rev >= current_revision {
            continue;
        }
        let replicas = held_replicas(rs);
        if replicas > 0 {
            stale.push(Stale {
                name: name_of(&rs.metadata),
                reason: StaleReason::OldRevisionHoldingReplicas {
                    deployment: name.clone(),
                    revision: rev,
                    current_revision,
                    replicas,
                },
            });
        } else {
            idle_old.push((rev, rs));
        }
    }
    let limit = deployment
        .spec
        .revision_history_limit
        .unwrap_or(DEFAULT_HISTORY_LIMIT)
        .max(0);
    idle_old.sort_by_key(|(rev, _)| std::cmp::Reverse(*rev)); // newest first: those are kept
    for (rev, rs) in idle_old.into_iter().skip(limit as usize) {
        stale.push(Stale {
            name: name_of(&rs.metadata),
            reason: StaleReason::BeyondHistoryLimit {
                deployment: name.clone(),
                revision: rev,
                limit,
            },
        });
    }
    stale
}

/// The Deployment has seen its latest spec, every replica runs the current revision, and
/// that many of the current revision's pods are Ready (and available to the ReplicaSet).
fn rollout_complete(deployment: &Deployment, current: &ReplicaSet, pods: &[Pod]) -> bool {
    let desired = deployment.spec.replicas.unwrap_or(1);
    let Some(status) = deployment.status.as_ref() else {
        return false;
    };
    let observed =
        status.observed_generation.unwrap_or(0) >= deployment.metadata.generation.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0) >= desired;
    let available = current
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
        >= desired;
    let current_uid = current.metadata.uid.as_deref();
    let ready_pods = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| controller_of(&p.metadata).is_some_and(|o| Some(o.uid.as_str()) == current_uid))
        .filter(|p| pod_ready(p))
        .count();
    observed && updated && available && ready_pods as i64 >= i64::from(desired)
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn held_replicas(rs: &ReplicaSet) -> i32 {
    let spec = rs.spec.replicas.unwrap_or(1);
    let status = rs.status.as_ref().map(|s| s.replicas).unwrap_or(0);
    spec.max(status)
}

fn revision(meta: &ObjectMeta) -> Option<i64> {
    meta.annotations
        .as_ref()?
        .get(REVISION_ANNOTATION)?
        .parse()
        .ok()
}

fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
}

fn controller_deployment(meta: &ObjectMeta) -> Option<OwnerReference> {
    controller_of(meta)
        .filter(|o| o.kind == "Deployment" && o.api_version == "apps/v1")
        .cloned()
}

fn carries_labels(meta: &ObjectMeta, wanted: &BTreeMap<String, String>) -> bool {
    !wanted.is_empty()
        && meta
            .labels
            .as_ref()
            .is_some_and(|labels| wanted.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

fn name_of(meta: &ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_revisions_hold_pods_when_the_deployment_counts_more_pods_than_its_current_revision() {
        let with = |replicas: Option<i32>, updated: Option<i32>| Deployment {
            status: Some(k8s_openapi::api::apps::v1::DeploymentStatus {
                replicas,
                updated_replicas: updated,
                ..Default::default()
            }),
            ..Deployment::default()
        };
        assert!(old_revisions_hold_pods(&with(Some(3), Some(2))));
        assert!(old_revisions_hold_pods(&with(Some(1), None)));
        assert!(!old_revisions_hold_pods(&with(Some(2), Some(2))));
        assert!(!old_revisions_hold_pods(&with(None, None)));
        assert!(!old_revisions_hold_pods(&Deployment::default()));
    }
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStatus, ReplicaSetSpec, ReplicaSetStatus,
    };
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn instance_labels() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/instance".to_string(), "demo".to_string()),
            (
                "app.kubernetes.io/managed-by".to_string(),
                "swappo-operator".to_string(),
            ),
        ])
    }

    fn owner(kind: &str, name: &str, uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: if kind == "Deployment" {
                "apps/v1"
            } else {
                "v1"
            }
            .to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
            uid: uid.to_string(),
            controller: Some(true),
            ..Default::default()
        }
    }

    /// A Deployment at `revision` wanting `replicas`, whose status says every replica is
    /// updated (the controller has caught up) unless `updated` is lower.
    fn deployment(name: &str, revision: i64, replicas: i32, updated: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                uid: Some(format!("uid-{name}")),
                generation: Some(revision),
                annotations: Some(BTreeMap::from([(
                    REVISION_ANNOTATION.to_string(),
                    revision.to_string(),
                )])),
                labels: Some(instance_labels()),
                ..Default::default()
            },
            spec: DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            },
            status: Some(DeploymentStatus {
                observed_generation: Some(revision),
                updated_replicas: Some(updated),
                ..Default::default()
            }),
        }
    }

    fn with_history_limit(mut d: Deployment, limit: i32) -> Deployment {
        d.spec.revision_history_limit = Some(limit);
        d
    }

    fn replica_set(
        name: &str,
        owner_ref: Option<OwnerReference>,
        revision: i64,
        replicas: i32,
        available: i32,
    ) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                uid: Some(format!("uid-{name}")),
                annotations: Some(BTreeMap::from([(
                    REVISION_ANNOTATION.to_string(),
                    revision.to_string(),
                )])),
                labels: Some(instance_labels()),
                owner_references: owner_ref.map(|o| vec![o]),
                ..Default::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(replicas),
                ..Default::default()
            },
            status: Some(ReplicaSetStatus {
                replicas,
                available_replicas: Some(available),
                ..Default::default()
            }),
        }
    }

    fn unlabelled(mut rs: ReplicaSet) -> ReplicaSet {
        rs.metadata.labels = Some(BTreeMap::from([("app".to_string(), "other".to_string())]));
        rs
    }

    fn pods(rs_name: &str, n: usize, ready: bool) -> Vec<Pod> {
        (0..n)
            .map(|i| Pod {
                metadata: ObjectMeta {
                    name: Some(format!("{rs_name}-{i}")),
                    owner_references: Some(vec![owner(
                        "ReplicaSet",
                        rs_name,
                        &format!("uid-{rs_name}"),
                    )]),
                    ..Default::default()
                },
                status: Some(PodStatus {
                    conditions: Some(vec![PodCondition {
                        type_: "Ready".to_string(),
                        status: if ready { "True" } else { "False" }.to_string(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect()
    }

    fn judge(
        managed: &[Deployment],
        others: &[&str],
        rss: &[ReplicaSet],
        pods: &[Pod],
    ) -> Vec<(String, &'static str)> {
        let mut existing: BTreeSet<String> = managed
            .iter()
            .filter_map(|d| d.metadata.uid.clone())
            .collect();
        existing.extend(others.iter().map(|o| format!("uid-{o}")));
        let labels = instance_labels();
        let obs = Observation {
            managed,
            existing_deployment_uids: &existing,
            replica_sets: rss,
            pods,
            instance_labels: &labels,
        };
        stale_replica_sets(&obs)
            .into_iter()
            .map(|s| (s.name, s.reason.code()))
            .collect()
    }

    fn by(d: &str) -> Option<OwnerReference> {
        Some(owner("Deployment", d, &format!("uid-{d}")))
    }

    #[test]
    fn an_old_revision_holding_a_pod_after_the_new_one_is_available_is_stale() {
        let d = deployment("broker", 2, 1, 1);
        let rss = [
            replica_set("broker-old", by("broker"), 1, 1, 1),
            replica_set("broker-new", by("broker"), 2, 1, 1),
        ];
        let pods = [pods("broker-old", 1, true), pods("broker-new", 1, true)].concat();
        assert_eq!(
            judge(&[d], &[], &rss, &pods),
            vec![("broker-old".to_string(), "OldRevisionHoldingReplicas")]
        );
    }

    #[test]
    fn a_rollout_whose_new_pods_are_not_ready_is_never_cut_short() {
        // The two-broker-pods failure: the new revision's pod never becomes ready.
        let d = deployment("broker", 2, 1, 1);
        let rss = [
            replica_set("broker-old", by("broker"), 1, 1, 1),
            replica_set("broker-new", by("broker"), 2, 1, 0),
        ];
        let pods = [pods("broker-old", 1, true), pods("broker-new", 1, false)].concat();
        assert!(judge(&[d], &[], &rss, &pods).is_empty());
    }

    #[test]
    fn a_rollout_the_controller_has_not_observed_yet_is_left_alone() {
        let mut d = deployment("broker", 2, 1, 1);
        d.metadata.generation = Some(3); // spec changed, status still for generation 2
        let rss = [
            replica_set("broker-old", by("broker"), 1, 1, 1),
            replica_set("broker-new", by("broker"), 2, 1, 1),
        ];
        let pods = [pods("broker-old", 1, true), pods("broker-new", 1, true)].concat();
        assert!(judge(&[d], &[], &rss, &pods).is_empty());
    }

    #[test]
    fn a_rollout_with_too_few_ready_pods_is_left_alone_even_if_the_status_says_available() {
        let d = deployment("consumer", 2, 3, 3);
        let rss = [
            replica_set("c-old", by("consumer"), 1, 1, 1),
            replica_set("c-new", by("consumer"), 2, 3, 3),
        ];
        let pods = [pods("c-new", 2, true), pods("c-old", 1, true)].concat();
        assert!(judge(&[d], &[], &rss, &pods).is_empty());
    }

    #[test]
    fn a_missing_current_revision_means_no_verdict() {
        let d = deployment("broker", 3, 1, 1);
        let rss = [
            replica_set("broker-old", by("broker"), 1, 1, 1),
            replica_set("broker-mid", by("broker"), 2, 1, 1),
        ];
        assert!(judge(&[d], &[], &rss, &pods("broker-mid", 1, true)).is_empty());
    }

    #[test]
    fn a_labelled_replica_set_whose_deployment_is_gone_is_stale() {
        let rss = [replica_set("gone-abc", by("gone"), 1, 1, 1)];
        assert_eq!(
            judge(&[], &[], &rss, &[]),
            vec![("gone-abc".to_string(), "OwnerDeploymentGone")]
        );
    }

    #[test]
    fn a_labelled_replica_set_with_no_owner_at_all_is_stale() {
        let rss = [replica_set("orphan", None, 1, 1, 1)];
        assert_eq!(
            judge(&[], &[], &rss, &[]),
            vec![("orphan".to_string(), "OwnerDeploymentGone")]
        );
    }

    #[test]
    fn a_replica_set_of_an_existing_unmanaged_deployment_is_never_touched_even_with_our_labels() {
        let rss = [
            replica_set("theirs-1", by("theirs"), 1, 1, 1),
            replica_set("theirs-0", by("theirs"), 0, 0, 0),
        ];
        assert!(judge(&[], &["theirs"], &rss, &[]).is_empty());
    }

    #[test]
    fn an_unlabelled_orphan_is_never_touched() {
        let rss = [unlabelled(replica_set("stranger", by("gone"), 1, 1, 1))];
        assert!(judge(&[], &[], &rss, &[]).is_empty());
    }

    #[test]
    fn zero_replica_old_revisions_beyond_the_history_limit_are_stale_newest_kept() {
        let d = with_history_limit(deployment("app", 5, 1, 1), 2);
        let rss = [
            replica_set("app-r1", by("app"), 1, 0, 0),
            replica_set("app-r2", by("app"), 2, 0, 0),
            replica_set("app-r3", by("app"), 3, 0, 0),
            replica_set("app-r4", by("app"), 4, 0, 0),
            replica_set("app-r5", by("app"), 5, 1, 1),
        ];
        assert_eq!(
            judge(&[d], &[], &rss, &pods("app-r5", 1, true)),
            vec![
                ("app-r1".to_string(), "BeyondHistoryLimit"),
                ("app-r2".to_string(), "BeyondHistoryLimit")
            ]
        );
    }

    #[test]
    fn the_default_history_limit_is_ten() {
        let d = deployment("app", 12, 1, 1);
        let mut rss: Vec<ReplicaSet> = (1..12)
            .map(|r| replica_set(&format!("app-r{r:02}"), by("app"), r, 0, 0))
            .collect();
        rss.push(replica_set("app-r12", by("app"), 12, 1, 1));
        assert_eq!(
            judge(&[d], &[], &rss, &pods("app-r12", 1, true)),
            vec![("app-r01".to_string(), "BeyondHistoryLimit")]
        );
    }

    #[test]
    fn replica_sets_already_being_deleted_are_not_named_again() {
        let mut rs = replica_set("gone-abc", by("gone"), 1, 1, 1);
        rs.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert!(judge(&[], &[], &[rs], &[]).is_empty());
    }

    #[test]
    fn pods_are_needed_only_when_a_managed_deployment_has_an_old_revision() {
        let d = deployment("broker", 2, 1, 1);
        let one = [replica_set("broker-new", by("broker"), 2, 1, 1)];
        let labels = instance_labels();
        assert_eq!(
            needs(std::slice::from_ref(&d), &one, &labels),
            Needs::default()
        );
        let two = [
            replica_set("broker-old", by("broker"), 1, 0, 0),
            replica_set("broker-new", by("broker"), 2, 1, 1),
        ];
        assert!(needs(std::slice::from_ref(&d), &two, &labels).pods);
        // Two sets of a Deployment that is not managed: no revision of ours to judge.
        let foreign = [
            unlabelled(replica_set("web-1", by("web"), 1, 0, 0)),
            unlabelled(replica_set("web-2", by("web"), 2, 1, 1)),
        ];
        assert_eq!(needs(&[d], &foreign, &labels), Needs::default());
    }

    #[test]
    fn the_owners_of_labelled_sets_outside_the_managed_deployments_are_looked_up() {
        let d = deployment("broker", 1, 1, 1);
        let rss = [
            replica_set("broker-1", by("broker"), 1, 1, 1),
            replica_set("old-broker-1", by("old-broker"), 1, 1, 1),
            unlabelled(replica_set("web-1", by("web"), 1, 1, 1)),
            replica_set("orphan", None, 1, 1, 1),
        ];
        let n = needs(&[d], &rss, &instance_labels());
        assert_eq!(
            n.owners_to_look_up.into_iter().collect::<Vec<_>>(),
            ["old-broker"]
        );
        assert!(!n.pods);
    }

    #[test]
    fn a_first_look_in_the_cache_finds_old_revisions_and_orphans_only() {
        let labels = instance_labels();
        let managed: BTreeSet<String> = ["broker".to_string()].into();
        let known = BTreeMap::from([("broker".to_string(), 10)]);
        let unknown = BTreeMap::new();
        let current = replica_set("broker-2", by("broker"), 2, 1, 1);
        let idle_old = replica_set("broker-1", by("broker"), 1, 0, 0);
        let holding_old = replica_set("broker-1", by("broker"), 1, 1, 1);
        let foreign = unlabelled(replica_set("web-1", by("web"), 1, 1, 1));
        let foreign_old = unlabelled(replica_set("web-0", by("web"), 0, 1, 1));
        let look = |limits: &BTreeMap<String, i32>, sets: &[&ReplicaSet]| {
            worth_a_look(&managed, limits, sets.iter().copied(), &labels)
        };
        assert!(!look(&known, &[&current, &foreign, &foreign_old]));
        // The usual state after a rollout: the old revision idle, within the history limit.
        assert!(!look(&known, &[&current, &idle_old]));
        // (c) with an unknown limit: it might be 0, so look.
        assert!(look(&unknown, &[&current, &idle_old]));
        // (a) an old revision still holding a pod.
        assert!(look(&known, &[&current, &holding_old]));
        // (c) more idle old revisions than the limit.
        let tight = BTreeMap::from([("broker".to_string(), 0)]);
        assert!(look(&tight, &[&current, &idle_old]));
        // (b) labelled, but its owner is not (or no longer) a managed Deployment.
        let orphan = replica_set("gone-1", by("gone"), 1, 1, 1);
        assert!(look(&known, &[&current, &orphan]));
        let mut leaving = holding_old.clone();
        leaving.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert!(!look(&known, &[&current, &leaving]));
    }

    #[test]
    fn reasons_read_as_sentences() {
        let r = StaleReason::OldRevisionHoldingReplicas {
            deployment: "broker".into(),
            revision: 1,
            current_revision: 2,
            replicas: 1,
        };
        assert_eq!(
            r.message(),
            "revision 1 of Deployment broker still holds 1 replica(s) although revision 2 is fully available"
        );
    }
}
