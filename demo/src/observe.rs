//! Reads everything the live view, the drill and the account use, each from its source of
//! truth: the control plane (pods, the Deployment, the resource, Events), the broker's
//! management API (on the broker pod, found by its labels) and the two services' databases.
use crate::broker::{self, Management, QueueCounts};
use crate::cluster::{self, PodRow};
use crate::view::Snapshot;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::ListParams;
use sqlx::PgPool;
use std::time::Duration;
use swappo_operator::crd::SwappoMessaging;
use tokio::sync::Mutex;

/// The longest one source may take before it shows as `?` in this refresh.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// Characters of one Event line in the view: 4 of indent + 74 fit an 80-column terminal.
const MAX_EVENT_LINE: usize = 74;

/// The management API's port on the broker pod.
const MANAGEMENT_PORT: u16 = 15672;

/// Counts from the databases.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DbCounts {
    /// Outbox rows written.
    pub outbox: u64,
    /// Outbox rows confirmed by the broker.
    pub published: u64,
    /// Notification rows stored.
    pub stored: u64,
}

/// Where to look.
pub struct Observer {
    /// The control plane.
    pub client: kube::Client,
    /// Namespace of the demo.
    pub namespace: String,
    /// SwappoMessaging name.
    pub name: String,
    /// Consumer Deployment name (its pods carry it as `app.kubernetes.io/name`).
    pub deployment: String,
    /// Matchmaking Deployment name (likewise).
    pub matchmaking: String,
    /// The queue.
    pub queue: String,
    /// The broker login from the operator's Secret: user and password.
    pub login: (String, String),
    /// The matchmaking database.
    pub matchmaking_db: PgPool,
    /// The notifications database.
    pub notifications_db: PgPool,
    /// The management client of the broker pod last seen serving, with its IP.
    broker: Mutex<Option<(String, Management)>>,
}

async fn within<T, E>(f: impl Future<Output = Result<T, E>>) -> Option<T> {
    tokio::time::timeout(READ_TIMEOUT, f).await.ok()?.ok()
}

impl Observer {
    /// An observer; the broker is looked up on each refresh.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: kube::Client,
        namespace: String,
        name: String,
        deployment: String,
        matchmaking: String,
        queue: String,
        login: (String, String),
        matchmaking_db: PgPool,
        notifications_db: PgPool,
    ) -> Self {
        Self {
            client,
            namespace,
            name,
            deployment,
            matchmaking,
            queue,
            login,
            matchmaking_db,
            notifications_db,
            broker: Mutex::new(None),
        }
    }

    /// The selector of the consumer pods.
    pub fn consumer_selector(&self) -> [(&str, &str); 1] {
        [(cluster::NAME_LABEL, self.deployment.as_str())]
    }

    /// The selector of the matchmaking pods.
    pub fn matchmaking_selector(&self) -> [(&str, &str); 1] {
        [(cluster::NAME_LABEL, self.matchmaking.as_str())]
    }

    /// The management API of the serving broker pod among `pods`, if any.
    pub async fn management(&self, pods: &[PodRow]) -> Option<Management> {
        let ip = cluster::serving(pods, &cluster::broker_selector(&self.name))?
            .ip
            .clone()?;
        let mut cached = self.broker.lock().await;
        if let Some((known, m)) = cached.as_ref()
            && *known == ip
        {
            return Some(m.clone());
        }
        let m = Management::new(
            &format!("http://{ip}:{MANAGEMENT_PORT}"),
            &self.login.0,
            &self.login.1,
        )
        .ok()?;
        *cached = Some((ip, m.clone()));
        Some(m)
    }

    /// The queue's counts (`None`: unknown), the dead-letter queue's, and the pod IPs of
    /// consumers holding unacknowledged messages.
    pub async fn queues(&self, pods: &[PodRow]) -> (Option<QueueCounts>, Option<u64>, Vec<String>) {
        let Some(m) = self.management(pods).await else {
            return (None, None, vec![]);
        };
        let dlq = format!("{}.dlq", self.queue);
        let (q, d, channels) = tokio::join!(
            within(m.queue(&self.queue)),
            within(m.queue(&dlq)),
            within(m.channels()),
        );
        // A queue that does not exist (yet) holds nothing.
        (
            q.map(Option::unwrap_or_default),
            d.map(|d| d.unwrap_or_default().messages),
            channels
                .map(|c| broker::mid_batch_peers(&c))
                .unwrap_or_default(),
        )
    }

    /// Outbox and notification counts. The tables appear with each service's migrations;
    /// until then nothing is there.
    pub async fn db(&self) -> Option<DbCounts> {
        let outbox = within(
            sqlx::query_as::<_, (i64, i64)>(
                "SELECT CASE WHEN to_regclass('outbox') IS NULL THEN 0 \
                 ELSE (SELECT count(*) FROM outbox) END, \
                 CASE WHEN to_regclass('outbox') IS NULL THEN 0 \
                 ELSE (SELECT count(sent_at) FROM outbox) END",
            )
            .fetch_one(&self.matchmaking_db),
        );
        let stored = within(
            sqlx::query_scalar::<_, i64>(
                "SELECT CASE WHEN to_regclass('notifications') IS NULL THEN 0 \
                 ELSE (SELECT count(*) FROM notifications) END",
            )
            .fetch_one(&self.notifications_db),
        );
        let (outbox, stored) = tokio::join!(outbox, stored);
        let (outbox, published) = outbox?;
        Some(DbCounts {
            outbox: outbox.try_into().unwrap_or(0),
            published: published.try_into().unwrap_or(0),
            stored: stored?.try_into().unwrap_or(0),
        })
    }

    /// The consumer Deployment's `spec.replicas` and ready replicas.
    pub async fn deployment(&self) -> Option<(Option<i32>, Option<i32>)> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        let d = within(api.get(&self.deployment)).await?;
        Some((
            d.spec.replicas,
            d.status.map(|s| s.ready_replicas.unwrap_or(0)),
        ))
    }

    /// Fills `s` from every source; the pods and the mid-batch consumers go to the caller too.
    pub async fn fill(&self, s: &mut Snapshot) -> (Vec<PodRow>, Vec<String>) {
        let pods = within(cluster::pods(&self.client, &self.namespace))
            .await
            .unwrap_or_default();
        let sms: Api<SwappoMessaging> = Api::namespaced(self.client.clone(), &self.namespace);
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = ListParams::default();
        let (queues, db, deployment, sm, events) = tokio::join!(
            self.queues(&pods),
            self.db(),
            self.deployment(),
            within(sms.get(&self.name)),
            within(events.list(&list)),
        );
        let (queue, dlq, mid_batch) = queues;
        s.ready = queue.map(|q| q.messages_ready);
        s.unacked = queue.map(|q| q.messages_unacknowledged);
        s.queue_consumers = queue.map(|q| q.consumers);
        s.dead_lettered = dlq;
        if let Some(db) = db {
            s.outbox = Some(db.outbox);
            s.published = Some(db.published);
            s.stored = Some(db.stored);
        }
        if let Some((replicas, ready)) = deployment {
            s.replicas = replicas;
            s.ready_replicas = ready;
        }
        if let Some(c) = sm.as_ref().and_then(|sm| {
            sm.spec
                .consumers
                .iter()
                .find(|c| c.deployment == self.deployment)
        }) {
            s.policy = Some(crate::view::policy_text(
                c.min_replicas,
                c.max_replicas,
                c.messages_per_replica,
                c.scale_down_delay_seconds,
            ));
        }
        if let Some(status) = sm.and_then(|sm| sm.status) {
            s.conditions = status
                .conditions
                .iter()
                .map(|c| format!("{}={}({})", c.type_, c.status, c.reason))
                .collect();
            if let Some(c) = status
                .consumers
                .iter()
                .find(|c| c.deployment == self.deployment)
            {
                s.desired = Some(c.desired_replicas);
                s.reason = (!c.reason.is_empty()).then(|| c.reason.clone());
                s.last_scale = c.last_scale_time.as_ref().map(|t| t.0.to_string());
            }
        }
        if let Some(list) = events {
            s.events = operator_events(list.items, 4);
        }
        s.pods = pods.clone();
        (pods, mid_batch)
    }

    /// The three id lists of the account: confirmed outbox ids, stored ids (one per row) and
    /// dead-lettered ids (peeked from the DLQ, which keeps them).
    pub async fn ids(&self, dead_lettered: u64) -> anyhow::Result<[Vec<String>; 3]> {
        use anyhow::Context as _;
        let confirmed: Vec<String> =
            sqlx::query_scalar("SELECT event_id::text FROM outbox WHERE sent_at IS NOT NULL")
                .fetch_all(&self.matchmaking_db)
                .await
                .context("reading the confirmed outbox ids")?;
        let stored: Vec<String> = sqlx::query_scalar("SELECT event_id::text FROM notifications")
            .fetch_all(&self.notifications_db)
            .await
            .context("reading the stored ids")?;
        let mut dead = vec![];
        if dead_lettered > 0 {
            let pods = cluster::pods(&self.client, &self.namespace).await?;
            let m = self
                .management(&pods)
                .await
                .context("no serving broker pod to read the dead-letter queue from")?;
            dead = m
                .peek_ids(&format!("{}.dlq", self.queue), dead_lettered)
                .await?;
        }
        Ok([confirmed, stored, dead])
    }
}

/// The value of the unlabelled sample `name` in a Prometheus text exposition.
pub fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (metric, value) = l.split_once(' ')?;
            (metric == name).then(|| value.trim().parse::<f64>().ok())?
        })
        .map(|v| v as u64)
}

/// Sum of the `notifications_duplicates_total` of the consumers at `urls` (`http://host:port`):
/// redelivered events whose row already existed. Counters live in each process, so a consumer
/// that stopped takes its count with it.
pub async fn duplicates(http: &reqwest::Client, urls: &[String]) -> Option<u64> {
    let mut total = 0;
    for url in urls {
        let text = within(async {
            http.get(format!("{url}/metrics"))
                .send()
                .await?
                .text()
                .await
        })
        .await?;
        total += sample(&text, "notifications_duplicates_total").unwrap_or(0);
    }
    Some(total)
}

/// The operator's `n` latest Events as `HH:MM:SS Reason kind/name: note`, oldest first.
pub fn operator_events(items: Vec<Event>, n: usize) -> Vec<String> {
    let mut ours: Vec<(String, String)> = items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some(swappo_operator::builders::MANAGER))
        .map(|e| {
            let when = e
                .series
                .as_ref()
                .map(|s| s.last_observed_time.0.to_string())
                .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
                .or_else(|| {
                    e.deprecated_last_timestamp
                        .as_ref()
                        .map(|t| t.0.to_string())
                })
                .unwrap_or_default();
            let hms = when.get(11..19).unwrap_or("--:--:--").to_string();
            let what = e
                .regarding
                .as_ref()
                .map(|r| {
                    format!(
                        "{}/{}",
                        r.kind.as_deref().unwrap_or("?"),
                        r.name.as_deref().unwrap_or("?")
                    )
                })
                .unwrap_or_default();
            let line = format!(
                "{hms} {} {what}: {}",
                e.reason.as_deref().unwrap_or("-"),
                e.note.unwrap_or_default()
            );
            // One screen line each.
            let line: String = line.chars().take(MAX_EVENT_LINE).collect();
            (when, line)
        })
        .collect();
    ours.sort();
    let skip = ours.len().saturating_sub(n);
    ours.into_iter().skip(skip).map(|(_, l)| l).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn event(controller: &str, at: &str, reason: &str, note: &str) -> Event {
        Event {
            reporting_controller: Some(controller.into()),
            event_time: Some(MicroTime(at.parse().unwrap())),
            reason: Some(reason.into()),
            note: Some(note.into()),
            regarding: Some(ObjectReference {
                kind: Some("SwappoMessaging".into()),
                name: Some("swappo".into()),
                ..ObjectReference::default()
            }),
            ..Event::default()
        }
    }

    #[test]
    fn only_the_operators_latest_events_are_shown_oldest_first_one_line_each() {
        let ours = swappo_operator::builders::MANAGER;
        let lines = operator_events(
            vec![
                event(ours, "2026-11-27T07:00:03Z", "ScaledUp", "1 -> 3"),
                event(
                    "deployment-controller",
                    "2026-11-27T07:00:04Z",
                    "ScalingReplicaSet",
                    "x",
                ),
                event(ours, "2026-11-27T07:00:01Z", "Created", "created Service"),
                event(
                    ours,
                    "2026-11-27T07:00:02Z",
                    "BrokerReady",
                    &"long ".repeat(40),
                ),
            ],
            2,
        );
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("07:00:02 BrokerReady SwappoMessaging/swappo: long"));
        assert!(lines[0].chars().count() <= MAX_EVENT_LINE);
        assert_eq!(lines[1], "07:00:03 ScaledUp SwappoMessaging/swappo: 1 -> 3");
    }

    #[test]
    fn a_sample_is_read_by_its_exact_name() {
        let text = "# HELP notifications_duplicates Events skipped\n\
                    # TYPE notifications_duplicates counter\n\
                    notifications_duplicates_total 7\n\
                    notifications_duplicates_total_other 9\n";
        assert_eq!(sample(text, "notifications_duplicates_total"), Some(7));
        assert_eq!(sample(text, "notifications_stored_total"), None);
    }
}
