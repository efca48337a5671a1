#!/usr/bin/env python3
"""Gathers the per-benchmark result files (bench/results/<name>.md, written by each benchmark)
into one dated table: the machine, the versions, and every figure with its ratios against its
baselines, one row per measured case. It reads the benchmarks' own markdown tables and never re-runs or re-computes them:
a column whose header starts with "vs " is a ratio against the baseline it names; the first
column whose header names a rate or a time ("/s", "seconds", "ms", "MiB") is the figure.

  python3 bench/aggregate.py --results bench/results --runs runs.tsv --out bench/results/README.md
"""
import argparse
import base64
import datetime
import json
import os
import platform
import re
import subprocess
import urllib.request

FIGURE = re.compile(r"/s|second|\bms\b|MiB|writes|time|\bp\d+ s\b|^value$", re.I)


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:  # noqa: BLE001 - a missing tool only leaves a "?"
        return ""


def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores (nproc {sh('nproc') or '?'}), {mem} RAM, {platform.system()} {platform.release()}"


def rabbitmq_version():
    url = os.environ.get("RABBITMQ_MANAGEMENT_URL", "")
    m = re.match(r"(https?://)([^:@/]+):([^@/]*)@(.*)", url)
    if not m:
        return "?"
    req = urllib.request.Request(f"{m.group(1)}{m.group(4).rstrip('/')}/api/overview")
    token = base64.b64encode(f"{m.group(2)}:{m.group(3)}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            o = json.load(r)
        return f"{o.get('rabbitmq_version', '?')} (Erlang {o.get('erlang_version', '?')})"
    except Exception:  # noqa: BLE001
        return "? (broker not answering)"


def postgres_version():
    url = os.environ.get("DATABASE_URL", "")
    v = sh(f"psql '{url}' -tAc 'show server_version'") if url else ""
    return v.split()[0] if v else "?"


def kubernetes_version():
    kubectl = os.path.join(os.environ.get("SWAPPO_TESTBIN", ""), "kubectl")
    kubeconfig = os.environ.get("SWAPPO_KUBECONFIG", "")
    out = sh(f"'{kubectl}' --kubeconfig '{kubeconfig}' --request-timeout=5s version -o json")
    try:
        return json.loads(out)["serverVersion"]["gitVersion"] + " (local control plane, kwok nodes)"
    except Exception:  # noqa: BLE001
        return f"{os.environ.get('SWAPPO_K8S_VERSION', '?')} (pinned; control plane not running)"


def lock_versions(names):
    try:
        text = open("Cargo.lock").read()
    except OSError:
        return {}
    found = {}
    for name in names:
        m = re.search(rf'name = "{re.escape(name)}"\nversion = "([^"]+)"', text)
        if m:
            found[name] = m.group(1)
    return found


def tables(text):
    """Markdown tables of `text` as lists of rows (lists of cells), header first."""
    out, cur = [], []
    for line in text.splitlines() + [""]:
        s = line.strip()
        if s.startswith("|") and s.endswith("|"):
            cells = [c.strip() for c in s.strip("|").split("|")]
            if all(re.fullmatch(r":?-{2,}:?", c) for c in cells if c):
                continue  # the separator row
            cur.append(cells)
        elif cur:
            out.append(cur)
            cur = []
    return out


def date_of(text, path):
    """The date the file states (`- Date: ...` or a `| date | ... |` row), else its mtime."""
    m = (re.search(r"^- Date: (.+)$", text, re.M)
         or re.search(r"^\| *date *\| *([^|]+)\|", text, re.M | re.I)
         or re.search(r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}(?::\d{2})? UTC)", text))
    if m:
        return m.group(1).strip()
    mtime = datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc)
    return mtime.strftime("%Y-%m-%d %H:%M UTC") + " (file time)"


def summarize(name, text):
    """(benchmark, rows) of one result file; a row is (case, figure, ratios), where ratios is
    "6.7x vs seed; 0.62x vs PerfTest" or "reference" for a row that is itself a baseline."""
    title = next((l[2:].strip() for l in text.splitlines() if l.startswith("# ")), name)
    bench = title.split(":")[0].strip()
    # A report's "## Details" section holds the method's tables, not figures to gather.
    text = text.split("\n## Details", 1)[0]
    rows = []
    for table in tables(text):
        header, body = table[0], table[1:]
        # "vs <baseline>" columns hold bare ratios; a "ratio" column holds whole phrases.
        ratio_cols = [i for i, h in enumerate(header)
                      if h.lower().startswith("vs ") or h.lower() == "ratio"]
        phrase = any(header[i].lower() == "ratio" for i in ratio_cols)
        fig_col = next((i for i, h in enumerate(header) if FIGURE.search(h)), None)
        if fig_col is None or not body:
            continue  # a settings table, not results
        for r in body:
            if len(r) < len(header):
                continue
            case = " / ".join(r[i] for i in range(fig_col) if r[i]) or "-"
            figure = r[fig_col] if header[fig_col].lower() == "value" else f"{r[fig_col]} {header[fig_col]}"
            ratios = "; ".join(r[i] if header[i].lower() == "ratio" else f"{r[i]} {header[i]}"
                               for i in ratio_cols if r[i])
            if not ratio_cols:
                ratios = "(no baseline in this table)"
            rows.append((case, figure, ratios or ("(no baseline)" if phrase else "reference")))
    return bench, rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--results", default="bench/results")
    p.add_argument("--runs", default="")
    p.add_argument("--out", default="bench/results/README.md")
    a = p.parse_args()

    runs = []
    if a.runs and os.path.exists(a.runs):
        for line in open(a.runs):
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 3:
                runs.append(parts)

    files = sorted(f for f in os.listdir(a.results)
                   if f.endswith(".md") and f.lower() not in ("readme.md", "summary.md"))
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    crates = lock_versions(["kube", "k8s-openapi", "lapin", "sqlx", "axum", "tokio"])
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` on {now} from the result files of each benchmark in this",
        "directory (each has its settings and method; this page only gathers their figures).",
        "",
        "| | |",
        "|---|---|",
        f"| machine | {machine()} |",
        f"| Rust | {sh('rustc --version') or '?'} |",
        f"| RabbitMQ | {rabbitmq_version()} |",
        f"| PostgreSQL | {postgres_version()} |",
        f"| Kubernetes | {kubernetes_version()} |",
        "| crates | " + ", ".join(f"{k} {v}" for k, v in crates.items()) + " |",
        "",
    ]
    if runs:
        lines += ["## This run", "", "| target | result | seconds |", "|---|---|---:|"]
        for target, rc, secs in runs:
            lines.append(f"| `make {target}` | {'ok' if rc == '0' else f'FAILED (exit {rc})'} | {secs} |")
        lines.append("")
    lines += [
        "## Figures and ratios against their baselines",
        "",
        "| benchmark | case | figure | ratio against each baseline | measured |",
        "|---|---|---:|---|---|",
    ]
    details = []
    for f in files:
        path = os.path.join(a.results, f)
        text = open(path).read()
        bench, rows = summarize(f, text)
        when = date_of(text, path)
        if not rows:
            lines.append(f"| {bench} | (no result table found) | | | {when} |")
        for case, figure, ratios in rows:
            lines.append(f"| {bench} | {case} | {figure} | {ratios} | {when} |")
        demoted = re.sub(r"(?m)^(#+) ", r"#\1 ", text.strip())
        details += ["", f"<!-- from {f} -->", demoted, ""]
    if not files:
        lines.append("| (no result files yet: run `make bench`) | | | | |")
    lines += ["", "## Each benchmark's own report", ""] + details
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as out:
        out.write("\n".join(lines).rstrip() + "\n")


if __name__ == "__main__":
    main()
