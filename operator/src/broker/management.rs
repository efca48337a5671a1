//! The RabbitMQ management HTTP API: where it is, and a queue's numbers.
use super::Broker;
use super::amqp::Target;
use crate::builders::secret::Endpoint;
use crate::crd::{self, QueueStatus};
use serde::Deserialize;

/// The management API address: `management_override` when set; else the AMQP override's host
/// with the management port 15672; else the broker endpoint's host and management port.
pub fn management_address(
    management_override: Option<&str>,
    broker_override: Option<&Target>,
    endpoint: &Endpoint,
) -> String {
    match (management_override, broker_override) {
        (Some(addr), _) => addr.to_owned(),
        (None, Some(target)) => format!("{}:{}", target.host, crd::MANAGEMENT_PORT),
        (None, None) => format!("{}:{}", endpoint.host, endpoint.management_port),
    }
}

#[derive(Deserialize, Default)]
struct ManagementQueue {
    #[serde(default)]
    messages_ready: u64,
    #[serde(default)]
    messages_unacknowledged: u64,
    #[serde(default)]
    consumers: u32,
    #[serde(default)]
    message_stats: Option<MessageStats>,
}

#[derive(Deserialize, Default)]
struct MessageStats {
    #[serde(default)]
    publish_details: Option<Rate>,
    #[serde(default)]
    deliver_get_details: Option<Rate>,
}

#[derive(Deserialize, Default)]
struct Rate {
    #[serde(default)]
    rate: f64,
}

/// A queue's numbers from `GET /api/queues/%2F/<name>`; `Err` with a message (never the
/// password) when the API does not answer or the queue is not there.
pub async fn management_queue(
    http: &reqwest::Client,
    broker: &Broker,
    name: &str,
) -> Result<QueueStatus, String> {
    let url = format!("http://{}/api/queues/%2F/{name}", broker.management);
    let response = http
        .get(&url)
        .basic_auth(
            &broker.credentials.username,
            Some(&broker.credentials.password),
        )
        .timeout(broker.timeout)
        .send()
        .await
        .map_err(|e| format!("management API {}: {e}", broker.management))?;
    if !response.status().is_success() {
        return Err(format!(
            "management API {} answered {} for queue {name}",
            broker.management,
            response.status()
        ));
    }
    let q: ManagementQueue = response
        .json()
        .await
        .map_err(|e| format!("management API {}: {e}", broker.management))?;
    let stats = q.message_stats.unwrap_or_default();
    // Rates rounded to 0.1/s: finer digits are noise and would rewrite the status.
    let round = |r: Option<Rate>| (r.map_or(0.0, |r| r.rate) * 10.0).round() / 10.0;
    Ok(QueueStatus {
        name: name.to_owned(),
        ready: q.messages_ready,
        unacked: q.messages_unacknowledged,
        consumers: q.consumers,
        publish_rate: round(stats.publish_details),
        deliver_rate: round(stats.deliver_get_details),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_management_address_follows_the_overrides_then_the_endpoint() {
        let endpoint = Endpoint {
            host: "b.ns.svc".into(),
            port: 5672,
            management_port: 15673,
            tls: false,
        };
        let amqp = Target::parse("127.0.0.1:5672", false).unwrap();
        assert_eq!(
            management_address(Some("h:1"), Some(&amqp), &endpoint),
            "h:1"
        );
        assert_eq!(
            management_address(None, Some(&amqp), &endpoint),
            "127.0.0.1:15672"
        );
        assert_eq!(management_address(None, None, &endpoint), "b.ns.svc:15673");
    }
}
