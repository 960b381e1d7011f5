#!/usr/bin/env python3
"""Turns bench/run.sh's raw measurements into bench/results.md and a short summary.

Input: raw.tsv rows (round, system, requests, req/s, cpu ticks, p50, p99, peak RSS KiB).
"""
import datetime
import platform
import statistics
import subprocess
import sys
from collections import defaultdict

raw, clk_tck, smoke, connections, duration = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "true", sys.argv[4], sys.argv[5]
rows = [line.rstrip("\n").split("\t") for line in open(raw, encoding="utf-8") if line.strip()]
ORDER = ["direct", "nginx", "apache", "portcullis"]
LABEL = {"direct": "backend direct", "nginx": "nginx proxy", "apache": "Apache + mod_auth_openidc", "portcullis": "Portcullis"}


def latency_ms(text):
    if text.endswith("us"):
        return float(text[:-2]) / 1000
    if text.endswith("ms"):
        return float(text[:-2])
    if text.endswith("s"):
        return float(text[:-1]) * 1000
    return float("nan")


per = defaultdict(dict)  # round -> system -> figures
for rnd, system, requests, rps, ticks, p50, p99, rss in rows:
    requests = int(requests)
    per[int(rnd)][system] = {
        "rps": float(rps),
        "cpu_us": int(ticks) * 1_000_000 / clk_tck / max(requests, 1),
        "p50": latency_ms(p50),
        "p99": latency_ms(p99),
        "rss_mb": int(rss) / 1024,
    }


def median(system, key):
    values = [r[system][key] for r in per.values() if system in r]
    return statistics.median(values) if values else float("nan")


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except Exception as e:  # noqa: BLE001 - a missing tool is reported, not fatal
        return f"unknown ({e})"


lines = []
lines.append("# Load benchmark results\n")
lines.append(f"Run: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} with `bench/run.sh` "
             f"({len(per)} interleaved rounds, {duration} s per system per round, {connections} connections, "
             "system under test pinned to CPU 0, load generator and backend to CPU 1).\n")
cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
lines.append(f"Machine: {cpu_model}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} CPUs, "
             f"Linux {platform.release()}.\n")
lines.append("Versions: " + "; ".join([
    version(["nginx", "-v"]), version(["apache2", "-v"]),
    version(["dpkg-query", "-W", "-f=${Version}", "libapache2-mod-auth-openidc"]).join(["mod_auth_openidc ", ""]),
    version(["wrk", "-v"]), version(["target/release/portcullis", "--version"]),
]) + ".\n")
lines.append("Every response was checked to be the backend's 200 (a redirect to a login page would count "
             "as a failure and abort the run). CPU is user+system time of the system under test's "
             "processes, from /proc, divided by the requests served. Latency is at saturation "
             "(wrk, closed loop), not at a fixed rate.\n")
lines.append("## Medians\n")
lines.append("| system | req/s | CPU µs/request | p50 ms | p99 ms | peak RSS MiB |")
lines.append("|---|---:|---:|---:|---:|---:|")
for s in ORDER:
    lines.append(f"| {LABEL[s]} | {median(s, 'rps'):,.0f} | {median(s, 'cpu_us'):.1f} | {median(s, 'p50'):.2f} | "
                 f"{median(s, 'p99'):.2f} | {median(s, 'rss_mb'):.1f} |")
lines.append("\n## Ratios per round (CPU µs per request; lower is better)\n")
lines.append("| round | Portcullis / nginx | Portcullis / Apache+mod_auth_openidc | req/s Portcullis / nginx |")
lines.append("|---:|---:|---:|---:|")
ratios_nginx, ratios_apache = [], []
for rnd in sorted(per):
    r = per[rnd]
    a = r["portcullis"]["cpu_us"] / r["nginx"]["cpu_us"]
    b = r["portcullis"]["cpu_us"] / r["apache"]["cpu_us"]
    c = r["portcullis"]["rps"] / r["nginx"]["rps"]
    ratios_nginx.append(a)
    ratios_apache.append(b)
    lines.append(f"| {rnd} | {a:.2f} | {b:.2f} | {c:.2f} |")
spread = lambda xs: f"{min(xs):.2f}–{max(xs):.2f}"
summary = (f"Portcullis CPU per request: {statistics.median(ratios_nginx):.2f}x nginx (rounds {spread(ratios_nginx)}), "
           f"{statistics.median(ratios_apache):.2f}x Apache + mod_auth_openidc (rounds {spread(ratios_apache)}); "
           f"targets: <= 1.5x nginx, <= 0.4x mod_auth_openidc.")
lines.append(f"\n{summary}\n")
lines.append("Not measured yet (see issue 7): latency at a fixed rate, session-scale runs (10k-1M "
             "sessions), login throughput; and the optimisations the issue lists.\n")

print("==> " + summary)
for s in ORDER:
    print(f"    {LABEL[s]:<28} {median(s, 'rps'):>10,.0f} req/s  {median(s, 'cpu_us'):>7.1f} µs CPU/req  "
          f"p99 {median(s, 'p99'):.2f} ms  RSS {median(s, 'rss_mb'):.1f} MiB")
if not smoke:
    with open("bench/results.md", "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("==> written bench/results.md")
