"""End-to-end latency and outbox relay rate, for `make bench-latency` (bench/latency.sh).

Latency: for each rate and wake-up mode, a fresh pair of databases and a queue in a private
vhost; the release builds of swappo-notifications (quorum queue, defaults) and
swappo-matchmaking (relay on, defaults, with commit wake-ups or polling only); then
`bench_latency` (services/matchmaking/examples) accepts offers through the HTTP API at the
fixed rate and reports the time from each HTTP 200 to the notification row committed.
Beside it, the seed's design at the same rate (seed_latency.py: commit, then a pika publish
without confirms, and the seed's consumer.py: prefetch 1, one commit per message).

Relay: matchmaking with its relay off writes N offer changes through the API (so N committed
outbox rows), then 1 or 2 instances with the relay on drain them; events/s from the first
batch marked sent to the last (start-up excluded), beside the Publisher's own `publish_all`
rate (bench_publisher, same queue type, same N) as the ceiling.
"""
import argparse, datetime, json, os, platform, signal, socket, statistics, subprocess, sys, time
import urllib.parse, urllib.request, base64

import psycopg2

ap = argparse.ArgumentParser()
ap.add_argument("--matchmaking-bin", required=True)
ap.add_argument("--notifications-bin", required=True)
ap.add_argument("--driver-bin", required=True)
ap.add_argument("--publisher-bin", required=True)
ap.add_argument("--seed-consumer", required=True)
ap.add_argument("--seed-python", required=True)
ap.add_argument("--rates", default="1000,5000")
ap.add_argument("--seconds", type=float, default=10, help="timed phase per case: events = rate x seconds")
ap.add_argument("--poll-ms", type=int, default=100, help="relay poll interval in the polling-only case")
ap.add_argument("--seed-rates", default="200,1000")
ap.add_argument("--seed-seconds", type=float, default=5)
ap.add_argument("--relay-events", type=int, default=20000)
ap.add_argument("--runs", type=int, default=3)
ap.add_argument("--only", default="latency,seed,relay")
ap.add_argument("--out-latency", required=True)
ap.add_argument("--out-relay", required=True)
a = ap.parse_args()

AMQP = os.environ["RABBITMQ_URL"]
MGMT = os.environ["RABBITMQ_MANAGEMENT_URL"]
DB = os.environ["DATABASE_URL"]
STAMP = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d%H%M%S")
VHOST = f"bench-latency-{STAMP}"
ONLY = set(a.only.split(","))
LOGDIR = os.path.join(os.environ.get("SWAPPO_STATE", "/tmp"), "bench", "latency")
os.makedirs(LOGDIR, exist_ok=True)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


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


def amqp_url():
    u = urllib.parse.urlsplit(AMQP)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + urllib.parse.quote(VHOST, safe=""), "", ""))


def db_url(name, driver=""):
    u = urllib.parse.urlsplit(DB)
    scheme = "postgresql+psycopg2" if driver else u.scheme
    return urllib.parse.urlunsplit((scheme, u.netloc, "/" + name, "", ""))


def admin():
    conn = psycopg2.connect(DB)
    conn.autocommit = True
    return conn


DBS = []


def new_db(prefix):
    name = f"bl_{prefix}_{STAMP}_{len(DBS)}"
    c = admin()
    c.cursor().execute(f'CREATE DATABASE "{name}"')
    c.close()
    DBS.append(name)
    return name


def drop_dbs():
    c = admin()
    for name in DBS:
        c.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    c.close()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http_json(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None
    except Exception:  # noqa: BLE001 - not up yet
        return 0, None


class Proc:
    def __init__(self, name, argv, env, ready_url, ready=lambda code, body: code == 200):
        self.name = name
        self.log = os.path.join(LOGDIR, f"{STAMP}-{name}.log")
        self.p = subprocess.Popen(argv, env=dict(os.environ, RUST_LOG="warn", **env),
                                  stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        deadline = time.time() + 60
        while True:
            if self.p.poll() is not None:
                raise SystemExit(f"{name} exited with {self.p.returncode}; see {self.log}")
            code, body = http_json(ready_url)
            if ready(code, body):
                return
            if time.time() > deadline:
                raise SystemExit(f"{name} not ready within 60 s; see {self.log}")
            time.sleep(0.1)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.p.kill()


def notifications(queue, dbname):
    port = free_port()
    return Proc(f"notifications-{queue}", [a.notifications_bin],
                {"DATABASE_URL": db_url(dbname), "RABBITMQ_URL": amqp_url(), "QUEUE_NAME": queue,
                 "QUEUE_TYPE": "quorum", "DECLARE_QUEUE": "true", "BIND_ADDR": f"127.0.0.1:{port}"},
                f"http://127.0.0.1:{port}/ready",
                lambda code, body: code == 200 and isinstance(body, dict) and body.get("consumer") == "consuming")


def matchmaking(queue, dbname, name, relay=True, wake=True, poll_ms=None):
    port = free_port()
    env = {"DATABASE_URL": db_url(dbname), "RABBITMQ_URL": amqp_url(), "NOTIFICATIONS_QUEUE": queue,
           "LISTEN_ADDR": f"127.0.0.1:{port}", "OUTBOX_RELAY": str(relay).lower(),
           "OUTBOX_WAKE_ON_COMMIT": str(wake).lower()}
    if poll_ms is not None:
        env["OUTBOX_POLL_INTERVAL_MS"] = str(poll_ms)
    p = Proc(name, [a.matchmaking_bin], env, f"http://127.0.0.1:{port}/health")
    p.base = f"http://127.0.0.1:{port}"
    return p


def driver(apis, notif_db, rate, events, tag, prepare_only=False):
    argv = [a.driver_bin, "--api", ",".join(apis), "--notifications-db", db_url(notif_db),
            "--rate", str(rate), "--events", str(events), "--tag", tag]
    if prepare_only:
        argv.append("--prepare-only")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"bench_latency failed ({out.returncode}): {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def declare_quorum(queue):
    """The queue as the services expect it, declared by the library (bench_publisher)."""
    subprocess.run([a.publisher_bin, "--url", amqp_url(), "--queue", queue, "--kind", "quorum", "--declare-only"],
                   check=True, capture_output=True, timeout=60)


# --- end-to-end latency, ours -------------------------------------------------------------------
def latency_case(rate, wake, run):
    case = f"{'notify' if wake else 'poll'}{rate}r{run}"
    queue = f"lat_{case}"
    mm_db, nt_db = new_db("mm"), new_db("nt")
    procs = []
    try:
        procs.append(notifications(queue, nt_db))
        procs.append(matchmaking(queue, mm_db, f"matchmaking-{case}", wake=wake,
                                 poll_ms=None if wake else a.poll_ms))
        events = int(rate * a.seconds)
        r = driver([procs[-1].base], nt_db, rate, events, case)
        log(f"ours {'LISTEN/NOTIFY' if wake else f'polling {a.poll_ms} ms'} at {rate}/s: "
            f"achieved {r['achieved_rate']:.0f}/s, p50 {r['p50_ms']:.1f} p95 {r['p95_ms']:.1f} "
            f"p99 {r['p99_ms']:.1f} max {r['max_ms']:.1f} ms, missing {r['missing']}, failed {r['http_failed']}")
        return r
    finally:
        for p in reversed(procs):
            p.stop()


# --- the seed's design at the same rate -----------------------------------------------------------
def seed_case(rate, run):
    queue = f"seed_{rate}_r{run}"
    nt_db, mm_db = new_db("seednt"), new_db("seedmm")
    events = int(rate * a.seed_seconds)
    # The seed consumer declares its plain queue itself; declare it first so nothing is dropped.
    consumer = subprocess.Popen([a.seed_python, a.seed_consumer, "-n", str(events), "--queue", queue,
                                 "--url", amqp_url(), "--db", db_url(nt_db, "psycopg2")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # consumer.py creates its table before consuming: wait for it.
        deadline = time.time() + 60
        while True:
            with psycopg2.connect(db_url(nt_db)) as c, c.cursor() as cur:
                cur.execute("SELECT to_regclass('public.notifications') IS NOT NULL")
                if cur.fetchone()[0]:
                    break
            if consumer.poll() is not None or time.time() > deadline:
                raise SystemExit(f"seed consumer did not start: {consumer.stderr.read()[-2000:]}")
            time.sleep(0.1)
        time.sleep(0.5)  # its basic_consume follows the table creation
        out = subprocess.run([a.seed_python, os.path.join(os.path.dirname(__file__), "seed_latency.py"),
                              "--url", amqp_url(), "--queue", queue, "--db", db_url(mm_db),
                              "--notifications-db", db_url(nt_db), "--rate", str(rate), "--events", str(events)],
                             capture_output=True, text=True, timeout=3600)
        if out.returncode != 0:
            raise SystemExit(f"seed_latency.py failed: {out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        log(f"seed design at {rate}/s: achieved {r['achieved_rate']:.0f}/s, p50 {r['p50_ms']:.1f} "
            f"p95 {r['p95_ms']:.1f} p99 {r['p99_ms']:.1f} max {r['max_ms']:.1f} ms, missing {r['missing']}")
        return r
    finally:
        consumer.wait(timeout=600) if consumer.poll() is None else None


# --- relay rate ---------------------------------------------------------------------------------
def pending(dbname):
    with psycopg2.connect(db_url(dbname)) as c, c.cursor() as cur:
        cur.execute("SELECT count(*) FILTER (WHERE sent_at IS NULL), count(*) FROM outbox")
        return cur.fetchone()


def relay_case(replicas, run):
    queue = f"relay_{replicas}r{run}"
    declare_quorum(queue)
    mm_db, nt_db = new_db("rmm"), new_db("rnt")
    n = a.relay_events
    writer = matchmaking(queue, mm_db, f"matchmaking-writer-{queue}", relay=False)
    try:
        # --prepare-only creates n offers = n committed outbox rows; the notifications DB is
        # not read (no consumer runs here: the broker's queue is the end of this pipeline).
        driver([writer.base], nt_db, 1000, n, f"rl{replicas}r{run}", prepare_only=True)
    finally:
        writer.stop()
    left, total = pending(mm_db)
    assert left == total == n, (left, total, n)
    relays = [matchmaking(queue, mm_db, f"matchmaking-relay{i}-{queue}") for i in range(replicas)]
    try:
        t_first = None
        deadline = time.time() + 600
        while True:
            left, _ = pending(mm_db)
            now = time.perf_counter()
            if t_first is None and left < n:
                t_first, first_left = now, left
            if left == 0:
                t_end = now
                break
            if time.time() > deadline:
                raise SystemExit(f"relay left {left} of {n} pending after 600 s")
            time.sleep(0.02)
    finally:
        for p in relays:
            p.stop()
    rate = first_left / (t_end - t_first)
    log(f"relay x{replicas}: {first_left} events in {t_end - t_first:.2f} s = {rate:.0f}/s")
    mgmt("DELETE", f"/api/queues/{urllib.parse.quote(VHOST, safe='')}/{queue}")
    return {"rate": rate, "seconds": t_end - t_first, "events": first_left}


def publisher_ceiling(run):
    queue = f"ceiling_r{run}"
    out = subprocess.run([a.publisher_bin, "--url", amqp_url(), "--queue", queue, "--kind", "quorum",
                          "-n", str(a.relay_events)], capture_output=True, text=True, timeout=600, check=True)
    import re
    rate = float(re.search(r"= (\d+) msg/s", out.stdout).group(1))
    mgmt("DELETE", f"/api/queues/{urllib.parse.quote(VHOST, safe='')}/{queue}")
    mgmt("DELETE", f"/api/queues/{urllib.parse.quote(VHOST, safe='')}/{queue}.dlq")
    log(f"publisher ceiling: {rate:.0f}/s")
    return rate


def med(rs, key):
    return statistics.median(r[key] for r in rs)


def machine():
    cpu = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}"


def main():
    load0 = os.getloadavg()[0]
    mgmt("PUT", f"/api/vhosts/{urllib.parse.quote(VHOST, safe='')}")
    user = urllib.parse.unquote(_m.username)
    mgmt("PUT", f"/api/permissions/{urllib.parse.quote(VHOST, safe='')}/{urllib.parse.quote(user, safe='')}",
         {"configure": ".*", "write": ".*", "read": ".*"})
    rates = [int(x) for x in a.rates.split(",")]
    lat, seed, relay = {}, {}, {}
    try:
        for run in range(a.runs):
            # Interleaved: each run measures every case once, so load drifts hit all alike.
            if "latency" in ONLY:
                for rate in rates:
                    for wake in (True, False):
                        lat.setdefault((rate, wake), []).append(latency_case(rate, wake, run))
            if "seed" in ONLY:
                for rate in [int(x) for x in a.seed_rates.split(",")]:
                    seed.setdefault(rate, []).append(seed_case(rate, run))
            if "relay" in ONLY:
                relay.setdefault("ceiling", []).append({"rate": publisher_ceiling(run)})
                for replicas in (1, 2):
                    relay.setdefault(replicas, []).append(relay_case(replicas, run))
    finally:
        drop_dbs()
        mgmt("DELETE", f"/api/vhosts/{urllib.parse.quote(VHOST, safe='')}")
    load1 = os.getloadavg()[0]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cond = (f"Machine: {machine()}, shared with four other engineers compiling (1-min load average "
            f"{load0:.1f} before, {load1:.1f} after). Medians of {a.runs} runs, cases interleaved run by run.")
    if lat or seed:
        write_latency(now, cond, rates, lat, seed)
    if relay:
        write_relay(now, cond, relay)


def fmt(x):
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def write_latency(now, cond, rates, lat, seed):
    lines = [
        "# End-to-end latency: offer change accepted (HTTP 200) to notification stored",
        "",
        f"Run by `make bench-latency` on {now}. {cond}",
        "",
        "- Ours: release builds of swappo-matchmaking (outbox relay, batch 100, publisher window 256) and "
        "swappo-notifications (quorum queue, prefetch 100, batch 100, linger 20 ms), defaults otherwise; "
        "fresh databases and queue per case. `bench_latency` (services/matchmaking/examples) creates "
        "the offers untimed, waits for their notifications, then accepts them through "
        "`PATCH /api/v2/offers/{id}` at a fixed rate, open loop, and polls the notifications table every "
        "millisecond: latency = row first seen committed (readable by the API from then on) - HTTP 200.",
        f"- Wake-up: `LISTEN/NOTIFY` = the default (in-process wake-up + PostgreSQL NOTIFY); polling = "
        f"`OUTBOX_WAKE_ON_COMMIT=false`, `OUTBOX_POLL_INTERVAL_MS={a.poll_ms}` (the default poll, 5 s, "
        "is a safety net only).",
        "- Seed design: `bench/seed_latency.py` (one commit, then a pika publish without confirms, as "
        "the original did after its commit) at the rate, into a classic queue drained by the seed's own "
        "`consumer.py` (prefetch 1, one commit per message); latency = row seen - publish returned.",
        "",
        "| design | wake-up | rate asked /s | rate achieved /s | events | p50 ms | p95 ms | p99 ms | max ms | missing | runs (p99 ms) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for rate in rates:
        for wake in (True, False):
            rs = lat.get((rate, wake))
            if not rs:
                continue
            lines.append(
                f"| ours | {'LISTEN/NOTIFY' if wake else f'polling {a.poll_ms} ms'} | {rate:,} | {fmt(med(rs, 'achieved_rate'))} | "
                f"{rs[0]['events']:,} | {fmt(med(rs, 'p50_ms'))} | {fmt(med(rs, 'p95_ms'))} | {fmt(med(rs, 'p99_ms'))} | "
                f"{fmt(med(rs, 'max_ms'))} | {sum(r['missing'] + r['http_failed'] for r in rs)} | "
                f"{', '.join(fmt(r['p99_ms']) for r in rs)} |")
    for rate, rs in sorted(seed.items()):
        lines.append(
            f"| seed | publish after commit | {rate:,} | {fmt(med(rs, 'achieved_rate'))} | {rs[0]['events']:,} | "
            f"{fmt(med(rs, 'p50_ms'))} | {fmt(med(rs, 'p95_ms'))} | {fmt(med(rs, 'p99_ms'))} | {fmt(med(rs, 'max_ms'))} | "
            f"{sum(r['missing'] for r in rs)} | {', '.join(fmt(r['p99_ms']) for r in rs)} |")
    lines += ["", "Goal (issue 21): p99 under 100 ms at 1,000 events/s.", ""]
    with open(a.out_latency, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


def write_relay(now, cond, relay):
    ceiling = med(relay["ceiling"], "rate")
    lines = [
        "# Outbox relay: committed offer changes to broker-confirmed outbox rows",
        "",
        f"Run by `make bench-latency` on {now}. {cond}",
        "",
        f"- {a.relay_events:,} offers created through the API of a matchmaking instance with its relay off "
        "(so as many committed outbox rows), then 1 or 2 release instances with the relay on (defaults: "
        "batch 100, `FOR UPDATE SKIP LOCKED`) drain them into a quorum queue with confirms; events/s "
        "from the first round marked sent to the last (process start-up excluded; outbox polled every 20 ms).",
        f"- Ceiling: `bench_publisher` (the Publisher's `publish_all`, window 256, same queue type, "
        f"{a.relay_events:,} events) in the same run.",
        "",
        "| case | events/s (median) | runs | vs publisher |",
        "|---|---:|---|---:|",
        f"| Publisher `publish_all` (ceiling) | {ceiling:,.0f} | {', '.join(str(round(r['rate'])) for r in relay['ceiling'])} | 1.00x |",
    ]
    for replicas in (1, 2):
        rs = relay.get(replicas)
        if rs:
            m = med(rs, "rate")
            lines.append(f"| relay, {replicas} matchmaking replica{'s' if replicas > 1 else ''} | {m:,.0f} | "
                         f"{', '.join(str(round(r['rate'])) for r in rs)} | {m / ceiling:.2f}x |")
    lines += ["", "Goal (issue 21): the relay at >= 0.7x the publisher's rate.", ""]
    with open(a.out_relay, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


main()
