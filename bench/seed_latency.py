"""The seed's publishing design at a fixed rate, for `make bench-latency` (bench/latency_bench.py).

The original matchmaking service committed the offer change, then published the event with
pika's BlockingConnection (persistent, no confirms) inside the request: the request answered
once the publish returned. This does the same at `--rate` events/s: per event one UPDATE +
COMMIT in its own database, then `basic_publish` of the seed publisher's event shape
(../shared/bench/seed_baseline/publisher.py) to `--queue`, drained by the seed's own
consumer.py. A second thread polls the consumer's table every millisecond; latency = row first
seen - publish returned. If the consumer cannot keep up, the rate is still driven and the
latency grows: that is the result. Prints one JSON line.
"""
import argparse, json, threading, time, uuid

import pika
import psycopg2

ap = argparse.ArgumentParser()
ap.add_argument("--url", required=True)
ap.add_argument("--queue", required=True)
ap.add_argument("--db", required=True, help="the seed matchmaking's database (created empty)")
ap.add_argument("--notifications-db", required=True, help="the seed consumer's database")
ap.add_argument("--rate", type=float, required=True)
ap.add_argument("--events", type=int, required=True)
a = ap.parse_args()

db = psycopg2.connect(a.db)
with db.cursor() as cur:
    cur.execute("CREATE TABLE IF NOT EXISTS trade_offers (id INT PRIMARY KEY, status TEXT NOT NULL)")
    cur.execute("INSERT INTO trade_offers SELECT g, 'pending' FROM generate_series(0, %s) g ON CONFLICT DO NOTHING",
                (a.events,))
db.commit()

published = [None] * a.events
seen = [None] * a.events
stop = threading.Event()


def poll():
    conn = psycopg2.connect(a.notifications_db)
    conn.autocommit = True
    cur = conn.cursor()
    last, found = 0, 0
    deadline = None
    while found < a.events:
        cur.execute("SELECT id, user_id FROM notifications WHERE id > %s ORDER BY id", (last,))
        now = time.perf_counter()
        for rid, user in cur.fetchall():
            last = max(last, rid)
            if user.startswith("lat"):
                i = int(user[3:])
                if seen[i] is None:
                    seen[i] = now
                    found += 1
        if stop.is_set():
            deadline = deadline or time.time() + 600
            if time.time() > deadline:
                break
        time.sleep(0.001)


poller = threading.Thread(target=poll, daemon=True)
poller.start()
conn = pika.BlockingConnection(pika.URLParameters(a.url))
ch = conn.channel()
ch.queue_declare(queue=a.queue, durable=True)
props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
interval = 1.0 / a.rate
start = time.perf_counter() + 0.1
late = []
for i in range(a.events):
    due = start + i * interval
    wait = due - time.perf_counter()
    if wait > 0:
        time.sleep(wait)
    late.append(max(0.0, time.perf_counter() - due))
    with db.cursor() as cur:
        cur.execute("UPDATE trade_offers SET status = 'accepted' WHERE id = %s", (i,))
    db.commit()
    body = json.dumps({"user_id": f"lat{i}", "type": "trade_offer_accepted",
                       "title": "Trade Offer Accepted!", "body": "Your trade offer has been accepted.",
                       "related_user_id": "user123", "related_offer_id": i, "id": str(uuid.uuid4())})
    ch.basic_publish(exchange="", routing_key=a.queue, body=body, properties=props)
    published[i] = time.perf_counter()
sent = time.perf_counter() - start
conn.close()
stop.set()
poller.join()

lat = sorted((s - p) * 1000 for s, p in zip(seen, published) if s is not None)


def pct(p):
    if not lat:
        return float("nan")
    k = max(1, int(-(-p / 100 * len(lat) // 1)))
    return lat[min(k, len(lat)) - 1]


late.sort()
print(json.dumps({"rate": a.rate, "events": a.events, "achieved_rate": a.events / sent,
                  "send_late_ms_p99": late[int(0.99 * (len(late) - 1))] * 1000,
                  "missing": sum(1 for s in seen if s is None), "http_failed": 0,
                  "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99), "max_ms": lat[-1] if lat else float("nan")}))
