#!/usr/bin/env python3
"""Writes the Grafana dashboard of the chart to stdout:

    python3 charts/swappo-operator/dashboards/generate.py > charts/swappo-operator/dashboards/swappo-messaging.json

Panels name only metrics the code registers (operator/src/metrics.rs, the services'
metrics.rs) or that RabbitMQ's prometheus plugin and kube-state-metrics serve;
tests/tests/helm_chart.rs checks both.
"""
import json
ds = {"type": "prometheus", "uid": "${datasource}"}
panels = []
y = 0
pid = 0
def row(title):
    global y, pid
    pid += 1
    panels.append({"type": "row", "title": title, "id": pid, "collapsed": False,
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
    y += 1
x = 0
def panel(title, desc, targets, w=8, h=8, unit="short", kind="timeseries", extra=None):
    global x, y, pid
    if x + w > 24:
        x = 0; y += h
    pid += 1
    p = {"type": kind, "title": title, "description": desc, "id": pid, "datasource": ds,
         "gridPos": {"h": h, "w": w, "x": x, "y": y},
         "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
         "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                     "tooltip": {"mode": "multi", "sort": "desc"}} if kind == "timeseries" else
                    {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                     "colorMode": "value", "graphMode": "none", "textMode": "auto"},
         "targets": [{"datasource": ds, "refId": chr(65 + i), "expr": e, "legendFormat": l}
                     for i, (e, l) in enumerate(targets)]}
    if extra:
        p.update(extra)
    panels.append(p)
    x += w
def endrow(h=8):
    global x, y
    x = 0; y += h

R = "$__rate_interval"
q = 'queue=~"$queue"'
row("Queues (RabbitMQ prometheus plugin, /metrics/detailed?family=queue_coarse_metrics&family=queue_consumer_count)")
panel("Queue depth (ready + unacked)",
      "The depth the autoscaler sizes consumers from: messages ready plus delivered but not yet acknowledged.",
      [(f'sum by (queue) (rabbitmq_detailed_queue_messages_ready{{{q}}}) + sum by (queue) (rabbitmq_detailed_queue_messages_unacked{{{q}}})', "{{queue}}")])
panel("Ready and unacked",
      "Ready: waiting for a consumer. Unacked: in a consumer's prefetch window, not yet stored.",
      [(f'sum by (queue) (rabbitmq_detailed_queue_messages_ready{{{q}}})', "{{queue}} ready"),
       (f'sum by (queue) (rabbitmq_detailed_queue_messages_unacked{{{q}}})', "{{queue}} unacked")])
panel("Message rates (broker-wide)",
      "Messages published to the broker, delivered to consumers and acknowledged, per second.",
      [(f'sum(rate(rabbitmq_global_messages_received_total[{R}]))', "published"),
       (f'sum(rate(rabbitmq_global_messages_delivered_total[{R}]))', "delivered"),
       (f'sum(rate(rabbitmq_global_messages_acknowledged_total[{R}]))', "acknowledged")],
      unit="ops")
endrow()
panel("Dead-letter queues",
      "Messages in the <queue>.dlq queues: poison messages and contract violations waiting for a person.",
      [('sum by (queue) (rabbitmq_detailed_queue_messages_ready{queue=~".*\\\\.dlq"})', "{{queue}}")])
panel("Dead-lettered per second",
      "Messages the broker dead-lettered because they exceeded the delivery limit, or were rejected.",
      [(f'sum(rate(rabbitmq_global_messages_dead_lettered_delivery_limit_total[{R}]))', "delivery limit"),
       (f'sum(rate(rabbitmq_global_messages_dead_lettered_rejected_total[{R}]))', "rejected")],
      unit="ops")
panel("Consumers per queue",
      "AMQP consumers attached to each queue (one per notifications replica).",
      [(f'sum by (queue) (rabbitmq_detailed_queue_consumers{{{q}}})', "{{queue}}")])
endrow()

d = 'namespace=~"$namespace", deployment=~"$consumer"'
row("Consumer scaling (kube-state-metrics and the operator)")
panel("Consumer replicas: desired and actual",
      "Desired: the Deployment's spec.replicas, which the operator's autoscaler patches through the scale subresource. Actual: available replicas.",
      [(f'sum by (deployment) (kube_deployment_spec_replicas{{{d}}})', "{{deployment}} desired"),
       (f'sum by (deployment) (kube_deployment_status_replicas_available{{{d}}})', "{{deployment}} available")])
panel("Scale decisions",
      "Changes of the consumer Deployments' desired replicas (each is one scale decision applied), and the operator's writes to Deployments.",
      [(f'sum by (deployment) (changes(kube_deployment_spec_replicas{{{d}}}[5m]))', "{{deployment}} changes / 5m"),
       ('sum(increase(swappo_operator_api_writes_total{kind="Deployment/scale"}[5m]))', "operator scale patches / 5m")],
      extra={"fieldConfig": {"defaults": {"unit": "short", "custom": {"drawStyle": "bars", "fillOpacity": 60}}, "overrides": []}})
panel("Backlog per consumer replica",
      "Queue depth divided by available consumers: the autoscaler keeps it near spec.consumers[].messagesPerReplica.",
      [(f'sum(rabbitmq_detailed_queue_messages_ready{{{q}}} + rabbitmq_detailed_queue_messages_unacked{{{q}}}) / clamp_min(sum(kube_deployment_status_replicas_available{{{d}}}), 1)', "messages per replica")])
endrow()

row("Operator")
panel("Reconciles and errors",
      "Reconciles per second, and failed reconciles by error kind (retried with backoff).",
      [(f'sum(rate(swappo_operator_reconciles_total[{R}]))', "reconciles"),
       (f'sum by (kind) (rate(swappo_operator_reconcile_errors_total[{R}]))', "error {{kind}}")],
      unit="ops")
panel("Reconcile duration",
      "Median and 95th percentile of one reconcile (API calls plus at most one AMQP login).",
      [(f'histogram_quantile(0.5, sum by (le) (rate(swappo_operator_reconcile_duration_seconds_bucket[{R}])))', "p50"),
       (f'histogram_quantile(0.95, sum by (le) (rate(swappo_operator_reconcile_duration_seconds_bucket[{R}])))', "p95")],
      unit="s")
panel("API writes by kind",
      "Writes to the Kubernetes API. In a steady state this is 0: nothing is written when nothing changed.",
      [(f'sum by (kind) (rate(swappo_operator_api_writes_total[{R}]))', "{{kind}}")],
      unit="wps", w=5)
panel("Leader", "Replicas holding the leader Lease (exactly 1 when healthy).",
      [("sum(swappo_operator_leader)", "leaders")], kind="stat", w=3)
endrow()
panel("Stale ReplicaSets deleted",
      "ReplicaSets the operator removed, by reason: an old revision still holding replicas after the new one is available, an orphan with this instance's labels, a zero-replica revision beyond the history limit.",
      [('sum by (reason) (increase(swappo_operator_stale_replica_sets_deleted_total[1h]))', "{{reason}} / 1h")],
      extra={"fieldConfig": {"defaults": {"unit": "short", "custom": {"drawStyle": "bars", "fillOpacity": 60}}, "overrides": []}})
endrow()

row("matchmaking (publisher)")
panel("Offer changes",
      "Committed trade offer changes per second, by change. Each writes one outbox event in the same transaction.",
      [(f'sum by (change) (rate(matchmaking_offer_changes_total[{R}]))', "{{change}}")], unit="ops")
panel("Outbox",
      "Events waiting for the broker's confirm, and the age of the oldest. Grows while the broker is down; nothing is lost.",
      [("sum(matchmaking_outbox_pending)", "pending"),
       ("max(matchmaking_outbox_oldest_pending_seconds)", "oldest pending (s)")])
panel("Published and failed",
      "Events confirmed by the broker per second, and failed publish attempts (retried).",
      [(f'sum(rate(matchmaking_outbox_published_total[{R}]))', "confirmed"),
       (f'sum(rate(matchmaking_outbox_publish_failures_total[{R}]))', "failed attempts")], unit="ops")
endrow()
panel("Relay lag",
      "Seconds from an offer change's commit to the broker's confirm.",
      [(f'histogram_quantile(0.5, sum by (le) (rate(matchmaking_outbox_relay_lag_seconds_bucket[{R}])))', "p50"),
       (f'histogram_quantile(0.95, sum by (le) (rate(matchmaking_outbox_relay_lag_seconds_bucket[{R}])))', "p95")],
      unit="s")
panel("HTTP errors", "Error responses per second by error code.",
      [(f'sum by (code) (rate(matchmaking_http_errors_total[{R}]))', "{{code}}")], unit="ops")
panel("Relays connected to the broker", "matchmaking replicas whose outbox relay holds a broker connection.",
      [("sum(matchmaking_broker_connected)", "connected")], kind="stat")
endrow()

row("notifications (consumer)")
panel("Events",
      "Events received by the store (redeliveries included), stored as new rows, and skipped as duplicates (idempotent on id).",
      [(f'sum(rate(notifications_events_received_total[{R}]))', "received"),
       (f'sum(rate(notifications_stored_total[{R}]))', "stored"),
       (f'sum(rate(notifications_duplicates_total[{R}]))', "duplicates")], unit="ops")
panel("Deliveries",
      "Deliveries from the broker, acknowledged after their batch committed, requeued after a failure, and sent to the DLQ.",
      [(f'sum(rate(notifications_consumed_total[{R}]))', "consumed"),
       (f'sum(rate(notifications_acked_total[{R}]))', "acked"),
       (f'sum(rate(notifications_requeued_total[{R}]))', "requeued"),
       (f'sum(rate(notifications_dead_lettered_total[{R}]))', "dead-lettered")], unit="ops")
panel("Batches",
      "Batches per second by outcome (stored, or retry when the database failed), and the 95th percentile batch time.",
      [(f'sum by (outcome) (rate(notifications_batches_total[{R}]))', "{{outcome}}"),
       (f'histogram_quantile(0.95, sum by (le) (rate(notifications_batch_duration_seconds_bucket[{R}])))', "p95 seconds")])
endrow()

def var(name, label, query, multi=True, include_all=True, regex=""):
    return {"name": name, "label": label, "type": "query", "datasource": ds,
            "query": {"query": query, "refId": name}, "definition": query,
            "refresh": 2, "multi": multi, "includeAll": include_all, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "regex": regex, "sort": 1}

dash = {
    "title": "Swappo messaging",
    "uid": "swappo-messaging",
    "description": "Queue depth and rates, consumer replicas desired and actual, scale decisions, the operator, and the matchmaking and notifications services' counters.",
    "tags": ["swappo", "rabbitmq", "operator"],
    "editable": True,
    "schemaVersion": 39,
    "version": 1,
    "graphTooltip": 1,
    "refresh": "30s",
    "time": {"from": "now-1h", "to": "now"},
    "timezone": "",
    "links": [],
    "annotations": {"list": []},
    "templating": {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "refresh": 1, "regex": ""},
        var("namespace", "Namespace", "label_values(kube_deployment_spec_replicas, namespace)"),
        var("consumer", "Consumer Deployment", 'label_values(kube_deployment_spec_replicas{namespace=~"$namespace"}, deployment)'),
        var("queue", "Queue", "label_values(rabbitmq_detailed_queue_messages_ready, queue)"),
    ]},
    "panels": panels,
}
print(json.dumps(dash, indent=2))
