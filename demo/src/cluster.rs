//! The demo's pods as the control plane reports them: one row each for the live view, and
//! which pod plays which part, found by the labels the operator and the charts set (never by
//! the kind of workload that made the pod).
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use std::collections::BTreeMap;

/// `app.kubernetes.io/name`, set by the operator on the broker and by the charts.
pub const NAME_LABEL: &str = swappo_operator::builders::label::NAME;

/// One pod, as the view shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodRow {
    /// Pod name.
    pub name: String,
    /// Its unique id (a replacement pod of the same name differs).
    pub uid: String,
    /// `Pending`, `Running`, ...; `Terminating` once deleted.
    pub phase: String,
    /// The Ready condition.
    pub ready: bool,
    /// Container restarts, summed.
    pub restarts: i32,
    /// The node it runs on.
    pub node: String,
    /// Its IP on the node's bridge.
    pub ip: Option<String>,
    /// The runtime's id of its first container (`containerd://...` stripped).
    pub container_id: Option<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

impl PodRow {
    /// Reads the row of `pod`.
    pub fn of(pod: &Pod) -> Self {
        let meta = &pod.metadata;
        let status = pod.status.clone().unwrap_or_default();
        let containers = status.container_statuses.unwrap_or_default();
        let phase = if meta.deletion_timestamp.is_some() {
            "Terminating".to_string()
        } else {
            status.phase.unwrap_or_else(|| "Unknown".into())
        };
        Self {
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            ready: status
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
            restarts: containers.iter().map(|c| c.restart_count).sum(),
            node: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            ip: status.pod_ip,
            container_id: containers
                .first()
                .and_then(|c| c.container_id.as_deref())
                .map(|id| id.split_once("://").map_or(id, |(_, id)| id).to_string()),
            labels: meta.labels.clone().unwrap_or_default(),
            phase,
        }
    }

    /// Carries every `(key, value)` of `selector` as a label.
    pub fn matches(&self, selector: &[(&str, &str)]) -> bool {
        selector
            .iter()
            .all(|(k, v)| self.labels.get(*k).is_some_and(|l| l == v))
    }

    /// Ready, not being deleted, with an IP.
    pub fn serving(&self) -> bool {
        self.ready && self.phase == "Running" && self.ip.is_some()
    }
}

/// The selector of the operator's broker pods of the resource `name`.
pub fn broker_selector(name: &str) -> [(&'static str, &str); 3] {
    use swappo_operator::builders::{APP_NAME, COMPONENT_BROKER, label};
    [
        (label::NAME, APP_NAME),
        (label::INSTANCE, name),
        (label::COMPONENT, COMPONENT_BROKER),
    ]
}

/// The rows matching `selector`.
pub fn matching<'a>(rows: &'a [PodRow], selector: &[(&str, &str)]) -> Vec<&'a PodRow> {
    rows.iter().filter(|r| r.matches(selector)).collect()
}

/// The first serving pod matching `selector`, by name.
pub fn serving<'a>(rows: &'a [PodRow], selector: &[(&str, &str)]) -> Option<&'a PodRow> {
    matching(rows, selector).into_iter().find(|r| r.serving())
}

/// Every pod of `namespace`, by name.
pub async fn pods(client: &kube::Client, namespace: &str) -> kube::Result<Vec<PodRow>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut rows: Vec<PodRow> = api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(PodRow::of)
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rows)
}

/// Deletes pod `name` with `grace_seconds` of grace, as `kubectl delete pod` does.
pub async fn delete_pod(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    grace_seconds: u32,
) -> kube::Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    api.delete(name, &DeleteParams::default().grace_period(grace_seconds))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_row_shows_phase_readiness_restarts_node_and_the_container() {
        let row = PodRow::of(&pod(json!({
            "metadata": {"name": "swappo-rabbitmq-0", "uid": "u1",
                         "labels": {"app.kubernetes.io/name": "rabbitmq",
                                    "app.kubernetes.io/instance": "swappo",
                                    "app.kubernetes.io/component": "broker"}},
            "spec": {"nodeName": "swappo-node-0", "containers": []},
            "status": {"phase": "Running", "podIP": "10.246.0.9",
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": "rabbitmq", "restartCount": 2, "ready": true,
                           "image": "i", "imageID": "", "containerID": "containerd://abc123"}]}
        })));
        assert_eq!(row.phase, "Running");
        assert!(row.ready && row.serving());
        assert_eq!(row.restarts, 2);
        assert_eq!(row.node, "swappo-node-0");
        assert_eq!(row.container_id.as_deref(), Some("abc123"));
        assert!(row.matches(&broker_selector("swappo")));
        assert!(!row.matches(&broker_selector("other")));
    }

    #[test]
    fn a_deleted_pod_is_terminating_and_serves_no_longer() {
        let row = PodRow::of(&pod(json!({
            "metadata": {"name": "n", "deletionTimestamp": "2026-12-01T00:00:00Z"},
            "status": {"phase": "Running", "podIP": "10.246.0.9",
                       "conditions": [{"type": "Ready", "status": "True"}]}
        })));
        assert_eq!(row.phase, "Terminating");
        assert!(!row.serving());
    }

    #[test]
    fn the_serving_pod_is_the_first_ready_one_of_the_selector() {
        let mut a = PodRow {
            name: "a".into(),
            phase: "Running".into(),
            ip: Some("10.246.0.2".into()),
            labels: BTreeMap::from([(NAME_LABEL.to_string(), "x".to_string())]),
            ..PodRow::default()
        };
        let mut b = a.clone();
        b.name = "b".into();
        b.ready = true;
        a.ready = false;
        let rows = [a, b];
        assert_eq!(serving(&rows, &[(NAME_LABEL, "x")]).unwrap().name, "b");
        assert!(serving(&rows, &[(NAME_LABEL, "y")]).is_none());
    }
}
