"""Consumer benchmark: events/s from a pre-filled queue to committed rows, the notifications
service (release build) side by side with the seed's Python consumer, in one run, on the same
broker and database server. Run through `make bench-consumer` (bench/consumer.sh).

For each consumer: its own queue, filled with the same N contract-valid events before the
consumer starts, and its own database. The seed consumer (../shared/bench/seed_baseline/
consumer.py: prefetch 1, one transaction per message) reports its own time from the first
message. The service is timed from the moment its process is spawned until all N rows are
committed, polling count(*) every 20 ms; start-up (spawn to the first committed row: process
start, migrations, connection, first batch) is reported apart from the steady rate (rows after
the first seen, over the time from then to the N-th). While it drains, its VmRSS is sampled from
/proc. Afterwards: rows == N, distinct event ids == N, queue empty, nothing dead-lettered.
`--curve` adds classic-queue runs at other PREFETCH/BATCH_SIZE/BATCH_LINGER_MS settings.
"""
import argparse, base64, datetime, json, os, platform, re, signal, socket, statistics
import subprocess, sys, time, urllib.parse, urllib.request, uuid

import pika
import psycopg2

ap = argparse.ArgumentParser()
ap.add_argument("-n", type=int, default=50000, help="events per service run")
ap.add_argument("--seed-n", type=int, default=10000,
                help="events for the seed (its rate is timed from its first message, so fewer suffice)")
ap.add_argument("--curve", default="",
                help="extra classic runs, 'prefetch:batch:linger_ms' comma-separated (e.g. 200:200:20,500:500:20)")
ap.add_argument("--service-bin", help="release build of swappo-notifications")
ap.add_argument("--seed-consumer", required=True, help="path of the seed consumer.py")
ap.add_argument("--out", required=True, help="markdown results file")
ap.add_argument("--consumers", default="seed,classic,quorum",
                help="which to run, comma-separated: seed (the Python baseline), classic, quorum (the service)")
a = ap.parse_args()

AMQP = os.environ["RABBITMQ_URL"]
MGMT = os.environ["RABBITMQ_MANAGEMENT_URL"]
DB = os.environ["DATABASE_URL"]
STAMP = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d%H%M%S")
VHOST = f"bench-consumer-{STAMP}"
RUN = set(a.consumers.split(","))
TYPES = ["trade_offer_received", "trade_offer_accepted", "trade_offer_rejected",
         "trade_offer_cancelled", "trade_completed", "new_message", "item_liked", "system"]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- management API -----------------------------------------------------------------------
_m = urllib.parse.urlsplit(MGMT)
MGMT_BASE = f"{_m.scheme}://{_m.hostname}:{_m.port}"
MGMT_AUTH = "Basic " + base64.b64encode(
    f"{urllib.parse.unquote(_m.username)}:{urllib.parse.unquote(_m.password)}".encode()).decode()


def mgmt(method, path, body=None):
    req = urllib.request.Request(MGMT_BASE + path, method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("Authorization", MGMT_AUTH)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        data = resp.read()
        return json.loads(data) if data else None


# --- URLs for the bench vhost and databases -----------------------------------------------
def amqp_url():
    u = urllib.parse.urlsplit(AMQP)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + urllib.parse.quote(VHOST, safe=""), "", ""))


def db_url(name, driver=""):
    u = urllib.parse.urlsplit(DB)
    scheme = "postgresql+psycopg2" if driver == "psycopg2" else u.scheme
    return urllib.parse.urlunsplit((scheme, u.netloc, "/" + name, "", ""))


def admin():
    conn = psycopg2.connect(DB)
    conn.autocommit = True
    return conn


def count_rows(dbname, distinct_column=None):
    with psycopg2.connect(db_url(dbname)) as conn, conn.cursor() as cur:
        if distinct_column:
            cur.execute(f"SELECT count(*), count(DISTINCT {distinct_column}) FROM notifications")
            return cur.fetchone()
        cur.execute("SELECT count(*) FROM notifications")
        return cur.fetchone()[0]


def table_exists(dbname):
    with psycopg2.connect(db_url(dbname)) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('public.notifications') IS NOT NULL")
        return cur.fetchone()[0]


# --- filling a queue ----------------------------------------------------------------------
def events(n):
    now = datetime.datetime.now(datetime.timezone.utc).isoformat()
    for i in range(n):
        eid = str(uuid.uuid4())
        yield eid, TYPES[i % len(TYPES)], json.dumps({
            "id": eid, "schema": 1, "occurred_at": now, "user_id": f"user{i % 1000}",
            "type": TYPES[i % len(TYPES)], "title": "Trade Offer Accepted!",
            "body": "Your trade offer has been accepted.", "related_user_id": "user123",
            "related_offer_id": i + 1}).encode()


def declare(ch, queue, kind):
    """The queue with the dead-letter exchange and queue the service expects."""
    ch.exchange_declare(exchange=f"{queue}.dlx", exchange_type="fanout", durable=True)
    ch.queue_declare(queue=f"{queue}.dlq", durable=True)
    ch.queue_bind(queue=f"{queue}.dlq", exchange=f"{queue}.dlx")
    args = {"x-queue-type": kind, "x-dead-letter-exchange": f"{queue}.dlx"}
    if kind == "quorum":
        args["x-delivery-limit"] = 5
    ch.queue_declare(queue=queue, durable=True, arguments=args)


def fill(queues, n):
    """Publishes the same n persistent events to each queue, then waits until the broker
    reports all n in each (publisher confirms would only slow the filling down)."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url()))
    ch = conn.channel()
    for q, kind in queues:
        if kind is not None:
            declare(ch, q, kind)
    for eid, etype, body in events(n):
        for q, _ in queues:
            props = pika.BasicProperties(delivery_mode=2, content_type="application/json",
                                         message_id=eid, type=etype)
            ch.basic_publish(exchange="", routing_key=q, body=body, properties=props)
    deadline = time.time() + 120
    for q, _ in queues:
        while True:
            depth = ch.queue_declare(queue=q, passive=True).method.message_count
            if depth == n:
                break
            if time.time() > deadline:
                raise SystemExit(f"queue {q} holds {depth} messages, expected {n}")
            time.sleep(0.2)
    conn.close()


def queue_depth(q):
    """Messages ready in q, exact (AMQP passive declare; the management API's counts are
    sampled every few seconds). Call it with no consumer attached: unacked ones are back."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url()))
    depth = conn.channel().queue_declare(queue=q, passive=True).method.message_count
    conn.close()
    return depth


# --- the consumers ------------------------------------------------------------------------
def run_seed(queue, dbname, n):
    out = subprocess.run(
        [sys.executable, a.seed_consumer, "-n", str(n), "--queue", queue, "--url", amqp_url(),
         "--db", db_url(dbname, "psycopg2")],
        check=True, capture_output=True, text=True, timeout=1800)
    line = out.stdout.strip().splitlines()[-1]
    m = re.search(r"in ([0-9.]+) s = ([0-9]+) msg/s", line)
    log(f"seed: {line}")
    return {"seconds": float(m.group(1)), "rate": float(m.group(2)), "line": line}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


def run_service(queue, kind, dbname, n, setting=None):
    env = dict(os.environ, DATABASE_URL=db_url(dbname), RABBITMQ_URL=amqp_url(), QUEUE_NAME=queue,
               QUEUE_TYPE=kind, DECLARE_QUEUE="false", BIND_ADDR=f"127.0.0.1:{free_port()}", RUST_LOG="warn")
    if setting:
        env.update(PREFETCH=str(setting[0]), BATCH_SIZE=str(setting[1]), BATCH_LINGER_MS=str(setting[2]))
    t0 = time.perf_counter()
    t_first, first_rows = None, 0
    proc = subprocess.Popen([a.service_bin], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(f"/tmp/{VHOST}-{queue}.log", "w"))
    samples, rows, deadline = [], 0, time.time() + 600
    try:
        while rows < n:
            if proc.poll() is not None:
                raise SystemExit(f"service exited with {proc.returncode}; see /tmp/{VHOST}-{queue}.log")
            if time.time() > deadline:
                raise SystemExit(f"service stored only {rows} of {n} in 600 s")
            r = rss_kib(proc.pid)
            if r:
                samples.append(r)
            if table_exists(dbname):
                rows = count_rows(dbname)
                if rows and t_first is None:
                    t_first, first_rows = time.perf_counter(), rows
            if rows < n:
                time.sleep(0.02)
        seconds = time.perf_counter() - t0
        time.sleep(1.0)  # anything extra (a duplicate would show here) has time to land
        total, distinct = count_rows(dbname, "event_id")
        idle = rss_kib(proc.pid)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    left = queue_depth(queue)
    dlq = queue_depth(f"{queue}.dlq")
    steady = (n - first_rows) / (t0 + seconds - t_first) if t_first and t0 + seconds > t_first else n / seconds
    result = {"seconds": seconds, "rate": steady, "overall": n / seconds, "startup": t_first - t0,
              "setting": setting, "rows": total, "distinct": distinct,
              "rss_peak_mib": max(samples) / 1024, "rss_median_mib": statistics.median(samples) / 1024,
              "rss_idle_mib": (idle or 0) / 1024, "left_in_queue": left, "dlq": dlq,
              "exit": code, "samples": len(samples)}
    log(f"service ({kind}, {setting or 'defaults'}): {n} events in {seconds:.2f} s, start-up {result['startup']:.2f} s, "
        f"steady {steady:.0f}/s, rows {total}, "
        f"peak RSS {result['rss_peak_mib']:.1f} MiB, exit {code}")
    return result


# --- versions and machine -----------------------------------------------------------------
def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_gib = int(f.readline().split()[1]) / 1024 / 1024
    load = open("/proc/loadavg").read().split()[0]
    return (f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB RAM, {platform.system()} "
            f"{platform.release()}, 1-min load average {load} at the end of the run")


def versions():
    rabbit = mgmt("GET", "/api/overview").get("rabbitmq_version", "?")
    with admin() as conn, conn.cursor() as cur:
        cur.execute("SHOW server_version")
        pg = cur.fetchone()[0]
    rustc = subprocess.run(["rustc", "-V"], capture_output=True, text=True).stdout.strip()
    return {"rabbitmq": rabbit, "postgresql": pg, "rustc": rustc,
            "python": platform.python_version(), "pika": pika.__version__}


# --- main ---------------------------------------------------------------------------------
def main():
    n = a.n
    curve = [tuple(int(x) for x in c.split(":")) for c in a.curve.split(",") if c]
    mgmt("PUT", f"/api/vhosts/{urllib.parse.quote(VHOST, safe='')}")
    user = urllib.parse.unquote(_m.username)
    mgmt("PUT", f"/api/permissions/{urllib.parse.quote(VHOST, safe='')}/{urllib.parse.quote(user, safe='')}",
         {"configure": ".*", "write": ".*", "read": ".*"})
    runs = [(k, k, None) for k in ("classic", "quorum") if k in RUN]
    runs += [(f"c{i}", "classic", c) for i, c in enumerate(curve)]
    dbs = {name: f"bench_{name}_{STAMP}" for name, _, _ in runs}
    if "seed" in RUN:
        dbs["seed"] = f"bench_seed_{STAMP}"
    conn = admin()
    for name in dbs.values():
        conn.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        queues = [(f"svc_{name}", kind) for name, kind, _ in runs]
        log(f"filling {len(queues)} queues with the same {n} events each")
        fill(queues, n)
        results = {}
        if "seed" in RUN:
            # The seed declares its own queue (durable classic, no arguments), so it gets none here.
            seed_ch = pika.BlockingConnection(pika.URLParameters(amqp_url()))
            seed_ch.channel().queue_declare(queue="seed_classic", durable=True)
            seed_ch.close()
            fill([("seed_classic", None)], a.seed_n)
            log(f"seed consumer draining seed_classic ({a.seed_n} events, prefetch 1, one commit per message)")
            results["seed"] = run_seed("seed_classic", dbs["seed"], a.seed_n)
            results["seed"]["rows"] = count_rows(dbs["seed"])
            results["seed"]["left_in_queue"] = queue_depth("seed_classic")
        for name, kind, setting in runs:
            log(f"service draining svc_{name} ({kind}, {setting or 'defaults'})")
            results[name] = run_service(f"svc_{name}", kind, dbs[name], n, setting)
        write_report(n, results, runs)
    finally:
        for name in dbs.values():
            conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
        mgmt("DELETE", f"/api/vhosts/{urllib.parse.quote(VHOST, safe='')}")


def write_report(n, r, runs):
    v = versions()
    seed = r.get("seed")
    lines = [
        "# Consumer benchmark: queue to committed rows",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {machine()}; shared with four other engineers compiling: compare rows of one run only",
        f"- RabbitMQ {v['rabbitmq']}, PostgreSQL {v['postgresql']} (one local server each, shared "
        f"by all rows), {v['rustc']}, Python {v['python']} + pika {v['pika']}",
        f"- {n} persistent events per service run, pre-filled before the consumer starts; each run "
        "has its own queue and its own database on the same servers.",
        "- Service: `swappo-notifications` release build; defaults prefetch 100, batch 100, linger 20 ms "
        "(other settings through PREFETCH / BATCH_SIZE / BATCH_LINGER_MS). Start-up = process spawn to "
        "the first committed row (start, migrations, connection, first batch); events/s = the steady "
        "rate after it (rows from the first seen to the N-th, count(*) polled every 20 ms).",
        f"- Seed: `../shared/bench/seed_baseline/consumer.py` (pika, prefetch 1, one SQLAlchemy "
        f"session and commit per message), {a.seed_n} events, its own timer from the first message.",
        "",
        "| consumer | queue | prefetch / batch / linger ms | events/s | start-up s | whole run s | rows stored | left in queue | vs seed | RSS peak |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    if seed:
        lines.append(f"| seed consumer.py | classic | 1 / 1 / - | {seed['rate']:.0f} | - | {seed['seconds']:.2f} | "
                     f"{seed['rows']} | {seed['left_in_queue']} | 1.0x | (Python, not sampled) |")
    for name, kind, setting in runs:
        s = r[name]
        ratio = f"{s['rate'] / seed['rate']:.1f}x" if seed else "n/a"
        st = " / ".join(str(x) for x in (setting or (100, 100, 20))) + ("" if setting else " (defaults)")
        lines.append(
            f"| swappo-notifications | {kind} | {st} | {s['rate']:.0f} | {s['startup']:.2f} | {s['seconds']:.2f} | "
            f"{s['rows']} ({s['distinct']} distinct ids) | {s['left_in_queue']} | {ratio} | "
            f"{s['rss_peak_mib']:.1f} MiB |")
    names = [name for name, _, _ in runs]
    lines += [
        "",
        "The like-for-like comparison is a classic-queue row (the seed declares a plain classic "
        "queue). Dead-lettered during the run: "
        + ", ".join(f"{k} {r[k]['dlq']}" for k in names)
        + "; service exit codes after SIGTERM: " + ", ".join(str(r[k]["exit"]) for k in names) + ".",
        "",
    ]
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
    bad = [k for k in names if r[k]["rows"] != n or r[k]["distinct"] != n or r[k]["left_in_queue"] != 0]
    if seed and seed["rows"] != a.seed_n:
        bad.append("seed")
    if bad:
        raise SystemExit(f"events lost or duplicated for: {bad}")


main()
