//! What one autoscaler pass reads from the broker: the login from the operator's Secret, and
//! each queue's numbers.
use crate::broker::Broker;
use crate::broker::amqp::{self, Target};
use crate::broker::management::{management_address, management_queue};
use crate::broker::topology::passive_depth;
use crate::builders::Names;
use crate::builders::secret::{Credentials, Endpoint, key, secret_value};
use crate::context::{Context, cached};
use crate::crd::{QueueStatus, SwappoMessaging};
use crate::decisions::autoscale::{DepthSource, QueueMetrics};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use std::collections::HashMap;
use std::sync::Arc;
use tracing::debug;

/// The broker login of `sm` from the operator's Secret, or `None` when it has none yet.
pub(super) async fn broker_of(ctx: &Context, sm: &SwappoMessaging, ns: &str) -> Option<Broker> {
    let name = Names::of(sm).secret;
    let secret = match cached(ctx.caches.get().map(|c| &c.secrets), ns, &name) {
        Some(s) => s,
        None => {
            ctx.metrics.read("Secret");
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
            Arc::new(secrets.get_opt(&name).await.ok()??)
        }
    };
    let credentials = Credentials {
        username: secret_value(&secret, key::USERNAME)?,
        password: secret_value(&secret, key::PASSWORD)?,
        erlang_cookie: None,
    };
    let endpoint = Endpoint::of(sm);
    let s = &ctx.settings;
    let amqp = s.broker_override.clone().unwrap_or(Target {
        host: endpoint.host.clone(),
        port: endpoint.port,
        tls: endpoint.tls,
    });
    Some(Broker {
        management: management_address(
            s.management_override.as_deref(),
            s.broker_override.as_ref(),
            &endpoint,
        ),
        amqp,
        credentials,
        timeout: s.amqp_timeout,
    })
}

/// Each queue's metrics (when any source answered) and status.
///
/// The management API's queue counts are refreshed by the broker every 5 s (its statistics
/// interval), while a passive declare on the broker's kept AMQP connection (shared with the
/// reconciler, [`Context::broker_connection`]) reads the ready count at once: the depth is the
/// larger of management ready + unacked and AMQP ready, so a new backlog is seen at the next
/// poll. Without the management API, the depth is AMQP ready only (no unacked, no rates), and
/// the consumer status says so. A resource without consumers reads the management API alone,
/// and AMQP only while that is down.
pub(super) async fn observe_queues(
    ctx: &Context,
    http: &reqwest::Client,
    broker: &Broker,
    sm: &SwappoMessaging,
) -> (HashMap<String, QueueMetrics>, Vec<QueueStatus>) {
    let mut metrics = HashMap::new();
    let mut statuses = Vec::new();
    let scaling = !sm.spec.consumers.is_empty();
    let connect = || async {
        ctx.broker_connection(&broker.amqp, &broker.credentials)
            .await
            .map_err(|e| debug!(error = %amqp::describe(&e, &broker.amqp), "autoscaler: no AMQP connection"))
            .ok()
    };
    let mut amqp = match scaling {
        true => connect().await,
        false => None,
    };
    for q in &sm.spec.queues {
        let management = management_queue(http, broker, &q.name).await;
        if management.is_err() && amqp.is_none() {
            // The management API is down: the AMQP depth is all there is.
            amqp = connect().await;
        }
        let fresh = match amqp.as_ref() {
            // Bounded like every broker call: a half-open connection must not stall the loop.
            Some(shared) => {
                tokio::time::timeout(broker.timeout, passive_depth(&shared.conn, &q.name))
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            None => None,
        };
        match management {
            Ok(status) => {
                let depth = (status.ready + status.unacked).max(fresh.unwrap_or(0));
                metrics.insert(
                    q.name.clone(),
                    QueueMetrics {
                        depth,
                        publish_rate: Some(status.publish_rate),
                        per_replica_rate: None,
                        source: DepthSource::Management,
                    },
                );
                statuses.push(status);
            }
            Err(e) => {
                debug!(queue = %q.name, error = %e, "management API failed; AMQP depth only");
                if let Some(ready) = fresh {
                    metrics.insert(
                        q.name.clone(),
                        QueueMetrics {
                            depth: ready,
                            publish_rate: None,
                            per_replica_rate: None,
                            source: DepthSource::AmqpPassive,
                        },
                    );
                    statuses.push(QueueStatus {
                        name: q.name.clone(),
                        ready,
                        ..QueueStatus::default()
                    });
                }
            }
        }
    }
    (metrics, statuses)
}
