#!/usr/bin/env python3
"""bench/run.sh's arithmetic and its report.

  report.py oha FILE
      Reads one oha JSON result; prints `p50_ms<TAB>p99_ms<TAB>responses`, or exits 1 naming
      what was not a 200.
  report.py soak WORK SESSIONS SECONDS REQUESTS BATCHES SMOKE
      Reads WORK/soak.tsv and writes bench/soak.md (not in smoke mode): RSS and descriptor
      slopes; full reports append it.
  report.py report WORK CLK_TCK SMOKE CONNECTIONS DURATION RATE
      Reads WORK/{raw,latency,logins,scale,redis}.tsv and writes bench/results.md (not in smoke
      mode), with bench/optimisations.md appended; prints a short summary.
"""
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from collections import defaultdict

ORDER = ["direct", "nginx", "pingora", "envoy", "traefik", "apache", "portcullis"]
LABEL = {"direct": "backend direct", "nginx": "nginx proxy", "pingora": "plain Pingora proxy",
         "envoy": "Envoy proxy", "traefik": "Traefik proxy", "apache": "Apache + mod_auth_openidc",
         "portcullis": "Portcullis"}
# Portcullis's CPU per signed-in request over each of these, every round: (system, target).
RATIOS = [("pingora", 1.15), ("nginx", 1.5), ("envoy", None), ("traefik", None), ("apache", 0.4)]


def oha(path):
    with open(path, encoding="utf-8") as f:
        result = json.load(f)
    statuses = result.get("statusCodeDistribution", {})
    # Requests still in flight when the run's time is up are cut off by oha, not failed.
    errors = {k: v for k, v in result.get("errorDistribution", {}).items() if k != "aborted due to deadline"}
    others = {k: v for k, v in statuses.items() if k != "200"}
    if others or errors or not statuses:
        print(f"not all 200: statuses {statuses}, errors {errors}")
        sys.exit(1)
    p = result["latencyPercentiles"]
    print(f"{p['p50'] * 1000:.3f}\t{p['p99'] * 1000:.3f}\t{statuses['200']}")


def rows(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [line.split() for line in f if line.strip()]


def latency_ms(text):
    for suffix, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * scale
    return float("nan")


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except Exception as e:  # noqa: BLE001 - a missing tool is reported, not fatal
        return f"unknown ({e})"


def med(values):
    return statistics.median(values) if values else float("nan")


def spread(values):
    return f"{min(values):.2f}–{max(values):.2f}" if values else "n/a"


def report(work, clk_tck, smoke, connections, duration, rate):
    clk_tck = int(clk_tck)
    lines, summary = [], []

    # Saturation: round, system, requests, req/s, ticks, p50, p99, peak RSS KiB.
    sat = defaultdict(dict)
    for rnd, system, requests, rps, ticks, p50, p99, rss in rows(f"{work}/raw.tsv"):
        sat[int(rnd)][system] = {
            "rps": float(rps),
            "cpu_us": int(ticks) * 1e6 / clk_tck / max(int(requests), 1),
            "p50": latency_ms(p50),
            "p99": latency_ms(p99),
            "rss_mb": int(rss) / 1024,
        }

    def sat_median(system, key):
        return med([r[system][key] for r in sat.values() if system in r])

    lines.append("# Load benchmark results\n")
    lines.append(f"Run: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} with `bench/run.sh` "
                 f"({len(sat)} interleaved rounds, {duration} s per system per round, {connections} connections, "
                 "system under test pinned to CPU 0, load generator and backend to CPU 1).\n")
    cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
    lines.append(f"Machine: {cpu_model}, {os.cpu_count()} CPUs, Linux {platform.release()}.\n")
    target_dir = os.environ.get("CARGO_TARGET_DIR", "target")
    lines.append("Versions: " + "; ".join([
        version(["nginx", "-v"]), version(["apache2", "-v"]),
        version([f"{target_dir}/bench-tools/proxies/bin/envoy", "--version"]),
        version([f"{target_dir}/bench-tools/proxies/bin/traefik", "version"]),
        "mod_auth_openidc " + version(["dpkg-query", "-W", "-f=${Version}", "libapache2-mod-auth-openidc"]),
        version(["wrk", "-v"]), version([f"{target_dir}/bench-tools/bin/oha", "--version"]),
        version([f"{target_dir}/release/portcullis", "--version"]),
    ]) + ".\n")
    lines.append("Every response was checked to be the backend's 200 (a redirect to a login page would count "
                 "as a failure and abort the run). CPU is user+system time of the system under test's "
                 "processes, from /proc, divided by the requests served.\n")

    lines.append("## Saturation (wrk, closed loop): medians\n")
    lines.append("| system | req/s | CPU µs/request | p50 ms | p99 ms | peak RSS MiB |")
    lines.append("|---|---:|---:|---:|---:|---:|")
    for s in ORDER:
        lines.append(f"| {LABEL[s]} | {sat_median(s, 'rps'):,.0f} | {sat_median(s, 'cpu_us'):.1f} | "
                     f"{sat_median(s, 'p50'):.2f} | {sat_median(s, 'p99'):.2f} | {sat_median(s, 'rss_mb'):.1f} |")
    ratio_start = len(lines)
    lines.append("\n### Ratios per round (Portcullis's CPU µs per signed-in request over each; lower is better)\n")
    present = [(s, t) for s, t in RATIOS if any(s in r for r in sat.values())]
    lines.append("| round | " + " | ".join(f"/ {LABEL[s]}" for s, _ in present) + " | req/s Portcullis / nginx |")
    lines.append("|---:|" + "---:|" * (len(present) + 1))
    ratios = defaultdict(list)
    for rnd in sorted(sat):
        r = sat[rnd]
        cells = []
        for s, _ in present:
            value = r["portcullis"]["cpu_us"] / r[s]["cpu_us"]
            ratios[s].append(value)
            cells.append(f"{value:.2f}")
        lines.append(f"| {rnd} | " + " | ".join(cells) + f" | {r['portcullis']['rps'] / r['nginx']['rps']:.2f} |")
    parts = []
    for s, t in present:
        goal = f"; target <= {t}" if t else ""
        parts.append(f"{med(ratios[s]):.2f}x {LABEL[s]} (rounds {spread(ratios[s])}{goal})")
    summary.append("CPU per signed-in request: " + ", ".join(parts))
    lines.append(f"\n{summary[-1]}.\n")
    ratio_table = lines[ratio_start:] if sat else []

    # Latency at a fixed rate: round, system, p50 ms, p99 ms, responses.
    lat = defaultdict(dict)
    for rnd, system, p50, p99, _count in rows(f"{work}/latency.tsv"):
        lat[int(rnd)][system] = (float(p50), float(p99))
    if lat:
        lines.append(f"## Latency at {rate} requests/s (oha, coordinated-omission corrected): medians\n")
        lines.append("| system | p50 ms | p99 ms | p99 added over direct, ms |")
        lines.append("|---|---:|---:|---:|")
        for s in ORDER:
            p50s = [r[s][0] for r in lat.values() if s in r]
            p99s = [r[s][1] for r in lat.values() if s in r]
            added = [r[s][1] - r["direct"][1] for r in lat.values() if s in r and "direct" in r]
            lines.append(f"| {LABEL[s]} | {med(p50s):.3f} | {med(p99s):.3f} | {med(added):.3f} |")
        added = [r["portcullis"][1] - r["direct"][1] for r in lat.values()]
        summary.append(f"p99 added over direct at {rate} req/s: {med(added):.3f} ms "
                       f"(rounds {min(added):.3f}–{max(added):.3f}; target <= 0.5)")
        lines.append(f"\nPortcullis per round, p99 added over direct (ms): "
                     + ", ".join(f"{a:.3f}" for a in added) + ".\n")

    # Logins: round, kind, count, CPU µs per login, wall logins/s.
    logins = defaultdict(list)
    for rnd, kind, count, cpu_us, wall in rows(f"{work}/logins.tsv"):
        logins[kind].append((float(cpu_us), float(wall), int(count)))
    if logins:
        lines.append("## Login throughput (single-use inputs made beforehand; Portcullis's CPU only)\n")
        lines.append("| login | logins per round | CPU µs/login (median; rounds) | logins/s per core | wall logins/s with the IdP |")
        lines.append("|---|---:|---:|---:|---:|")
        names = {"oidc": "OIDC callback (code exchange over TLS, ID token RS256)",
                 "saml": "SAML ACS post (signed response + assertion, RSA-SHA256)"}
        for kind in ("oidc", "saml"):
            if kind not in logins:
                continue
            cpu = [c for c, _, _ in logins[kind]]
            wall = [w for _, w, _ in logins[kind]]
            lines.append(f"| {names[kind]} | {logins[kind][0][2]} | {med(cpu):.0f} ({', '.join(f'{c:.0f}' for c in cpu)}) | "
                         f"{1e6 / med(cpu):,.0f} | {med(wall):,.0f} |")
            summary.append(f"{kind} logins: {1e6 / med(cpu):,.0f}/s per core")
        lines.append("\nThe wall rate includes the IdP (for OIDC it answers every code exchange, on the other "
                     "core) and is not the gateway's limit; CPU per login is.\n")

    # Scale: round, sessions, requests, ticks, VmRSS KiB, bytes per session.
    scale = defaultdict(list)
    for rnd, size, requests, ticks, rss, per in rows(f"{work}/scale.tsv"):
        scale[int(size)].append((int(ticks) * 1e6 / clk_tck / max(int(requests), 1), int(rss), int(per),
                                 int(requests) / float(duration)))
    if scale:
        lines.append("## Session scale (requests spread over 20,000 of the live sessions)\n")
        lines.append("| live sessions | bytes per session | process RSS MiB | CPU µs/request (median; rounds) | req/s |")
        lines.append("|---:|---:|---:|---:|---:|")
        for size in sorted(scale):
            cpu = [c for c, _, _, _ in scale[size]]
            lines.append(f"| {size:,} | {scale[size][0][2]:,} | {max(r for _, r, _, _ in scale[size]) / 1024:,.0f} | "
                         f"{med(cpu):.1f} ({', '.join(f'{c:.1f}' for c in cpu)}) | "
                         f"{med([q for _, _, _, q in scale[size]]):,.0f} |")
        sizes = sorted(scale)
        if len(sizes) >= 2:
            small, big = sizes[-2], sizes[-1]
            growth = med([c for c, *_ in scale[big]]) / med([c for c, *_ in scale[small]])
            summary.append(f"{big:,} sessions: {scale[big][0][2]:,} bytes each (target <= 1024); "
                           f"CPU/request {growth:.2f}x that at {small:,}")
            lines.append(f"\nCPU per request at {big:,} sessions is {growth:.2f}x that at {small:,}. Bytes per "
                         "session: resident memory added by loading them, divided by their number. Each is "
                         "shaped like an Okta login (five groups, acr/amr, name, email); its 1,000-byte ID "
                         "token is kept, as a real login's is, in the browser's sealed cookie "
                         "(bench/session_scale.rs). Targets: <= 1,024 bytes per session at 1M, no CPU "
                         "growth from 100k to 1M.\n")

    # Redis: `cpu round variant requests ticks redis_ticks`, `login round kind count cpu_us wall`,
    # `memory sessions bytes_per_session keys load_seconds`.
    redis_cpu, redis_logins, redis_memory = defaultdict(dict), [], None
    for row in rows(f"{work}/redis.tsv"):
        if row[0] == "cpu":
            _, rnd, variant, requests, ticks, redis_ticks = row
            n = max(int(requests), 1)
            redis_cpu[int(rnd)][variant] = (int(ticks) * 1e6 / clk_tck / n, int(redis_ticks) * 1e6 / clk_tck / n, n)
        elif row[0] == "login":
            redis_logins.append((float(row[4]), float(row[5])))
        elif row[0] == "memory":
            redis_memory = (int(row[1]), int(row[2]), int(row[3]), row[4])
    if redis_cpu:
        names = {"memory": "memory store", "l1": "Redis, L1 on (5 s)", "nol1": "Redis, L1 off"}
        lines.append("## Sessions in Redis, beside the memory store (same gateway, same signed-in request)\n")
        lines.append("| store | CPU µs/request, gateway (median) | Redis' own CPU µs/request | req/s |")
        lines.append("|---|---:|---:|---:|")
        for v in ("memory", "l1", "nol1"):
            gw = [r[v][0] for r in redis_cpu.values() if v in r]
            rd = [r[v][1] for r in redis_cpu.values() if v in r]
            reqs = [r[v][2] / float(duration) for r in redis_cpu.values() if v in r]
            lines.append(f"| {names[v]} | {med(gw):.1f} | {med(rd):.1f} | {med(reqs):,.0f} |")
        lines.append("\n| round | Redis L1 / memory | Redis no L1 / memory |")
        lines.append("|---:|---:|---:|")
        l1_ratios, nol1_ratios = [], []
        for rnd in sorted(redis_cpu):
            r = redis_cpu[rnd]
            a, b = r["l1"][0] / r["memory"][0], r["nol1"][0] / r["memory"][0]
            l1_ratios.append(a)
            nol1_ratios.append(b)
            lines.append(f"| {rnd} | {a:.2f} | {b:.2f} |")
        summary.append(f"Redis store, L1 hits: {med(l1_ratios):.2f}x the memory store's CPU per request "
                       f"(rounds {spread(l1_ratios)}; target <= 1.15); L1 off: {med(nol1_ratios):.2f}x "
                       f"(rounds {spread(nol1_ratios)})")
        lines.append(f"\n{summary[-1]}. Gateway CPU only in the ratios; Redis' own CPU is the second column.\n")
    if redis_logins:
        cpu = [c for c, _ in redis_logins]
        lines.append(f"OIDC logins with the Redis store: {med(cpu):.0f} CPU µs per login in the gateway "
                     f"({1e6 / med(cpu):,.0f}/s per core; rounds {', '.join(f'{c:.0f}' for c in cpu)}).\n")
        summary.append(f"OIDC logins with Redis: {1e6 / med(cpu):,.0f}/s per core")
    if redis_memory:
        size, per, keys, took = redis_memory
        lines.append(f"Redis memory per session at {size:,} sessions: {per:,} bytes (Redis' `used_memory` "
                     f"added by loading them through `Auth::sign_in`, divided by their number; {keys:,} keys: "
                     f"one hash per session plus the sign-in and user index sets; loaded in {took} s). "
                     "Target: <= 1,024 bytes at 1M.\n")
        summary.append(f"Redis memory: {per:,} bytes per session at {size:,} (target <= 1024)")

    for appended in ("soak.md", "optimisations.md"):
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), appended)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                lines.append(f.read())

    if not sat:  # a partial run (PHASES) without the saturation phase
        summary = summary[1:]
    print("==> " + "\n==> ".join(summary))
    for s in ORDER if sat else []:
        print(f"    {LABEL[s]:<28} {sat_median(s, 'rps'):>10,.0f} req/s  {sat_median(s, 'cpu_us'):>7.1f} µs CPU/req  "
              f"RSS {sat_median(s, 'rss_mb'):.1f} MiB")
    for line in ratio_table:
        print("    " + line.strip("\n"))
    if smoke != "true":
        with open("bench/results.md", "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        print("==> written bench/results.md")


def slope_per_minute(points):
    """Least-squares slope of (seconds, value) points, per minute."""
    n = len(points)
    if n < 2:
        return float("nan")
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return 60 * sum((x - mx) * (y - my) for x, y in points) / var if var else float("nan")


def soak(work, sessions, seconds, requests, batches, smoke):
    """Writes bench/soak.md from WORK/soak.tsv (seconds, RSS KiB, open fds)."""
    samples = [(int(t), int(rss), int(fds)) for t, rss, fds in rows(f"{work}/soak.tsv")]
    logins = rows(f"{work}/soak-logins.txt")
    # The first minute is warm-up (allocator arenas, caches filling); the slope is what follows.
    settled = [p for p in samples if p[0] >= 60] or samples
    rss = slope_per_minute([(t, r / 1024) for t, r, _ in settled])
    fds = slope_per_minute([(t, f) for t, _, f in settled])
    first, last = settled[0], settled[-1]
    text = [
        "## Soak (issue 20)\n",
        f"Run: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} with `PHASES=soak bench/run.sh`: "
        f"{int(sessions):,} live sessions (bench/session_scale.rs), {int(seconds)} s of mixed traffic: "
        f"{int(requests):,} signed-in requests (wrk, 16 connections, over 80 % of the sessions, every answer the "
        f"backend's 200), {len(logins) * 50:,} real OIDC logins and {int(batches) * 50:,} logouts in {batches} "
        f"batches, one SIGHUP reload per batch. RSS and open descriptors sampled every 5 s "
        f"({len(samples)} samples).\n",
        "| | after warm-up (60 s) | at the end | slope after warm-up |",
        "|---|---:|---:|---:|",
        f"| RSS | {first[1] / 1024:.1f} MiB | {last[1] / 1024:.1f} MiB | {rss:+.3f} MiB/min |",
        f"| open descriptors | {first[2]} | {last[2]} | {fds:+.3f} per minute |",
        "",
        "Target: flat. Samples (seconds, RSS MiB, descriptors): "
        + ", ".join(f"{t}/{r / 1024:.1f}/{f}" for t, r, f in samples[:: max(1, len(samples) // 20)])
        + ".\n",
    ]
    print("==> soak: RSS " + f"{rss:+.3f} MiB/min, descriptors {fds:+.3f}/min after warm-up "
          f"({first[1] / 1024:.1f} -> {last[1] / 1024:.1f} MiB, {first[2]} -> {last[2]} fds)")
    if smoke != "true":
        with open("bench/soak.md", "w", encoding="utf-8") as f:
            f.write("\n".join(text) + "\n")
        print("==> written bench/soak.md")


if __name__ == "__main__":
    if sys.argv[1] == "oha":
        oha(sys.argv[2])
    elif sys.argv[1] == "soak":
        soak(*sys.argv[2:8])
    else:
        report(*sys.argv[2:8])
