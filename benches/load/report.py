#!/usr/bin/env python3
"""Turn scripts/bench.sh's raw results (key=value lines) into the markdown
report: medians over the rounds, the grayshift/nginx CPU ratio, fixed-rate
latency added over direct-to-upstream, and RSS with idle connections.

usage: report.py RAW_FILE MACHINE_FILE
"""
import statistics
import sys

PROXIES = ["grayshift", "grayshift-ledger", "nginx", "haproxy"]


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                rows.append(dict(kv.split("=", 1) for kv in line.split()))
    return rows


def med(rows, key):
    values = [float(r[key]) for r in rows if key in r]
    return statistics.median(values) if values else float("nan")


def fmt_us(us):
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def main():
    rows = load(sys.argv[1])
    machine = open(sys.argv[2]).read().strip()
    out = []
    closed = [r for r in rows if r["kind"] == "closed"]
    rounds = len({r["round"] for r in closed})
    out.append(f"### Closed loop: `wrk -t1 -c50`, 100 000 distinct X-User-ID, median of {rounds} rounds\n")
    out.append(
        "| proxy (1 core) | CPU µs / request | user + kernel | requests/s | p50 | p99 | errors | CPU µs / request, each round |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---:|---|")
    cpu = {}
    for p in PROXIES:
        rs = [r for r in closed if r["proxy"] == p]
        if not rs:
            continue
        cpu[p] = med(rs, "cpu_us_per_req")
        errors = sum(int(r["status_errors"]) + int(r["socket_errors"]) for r in rs)
        each = ", ".join(f"{float(r['cpu_us_per_req']):.1f}" for r in rs)
        split = f"{med(rs, 'user_us_per_req'):.2f} + {med(rs, 'sys_us_per_req'):.2f}"
        out.append(
            f"| {p} | {cpu[p]:.2f} | {split} | {med(rs, 'rps'):,.0f} | {fmt_us(med(rs, 'p50_us'))} | "
            f"{fmt_us(med(rs, 'p99_us'))} | {errors} | {each} |"
        )
    if "grayshift" in cpu and "nginx" in cpu:
        ratios = []
        for rnd in sorted({r["round"] for r in closed}):
            g = [r for r in closed if r["round"] == rnd and r["proxy"] == "grayshift"]
            n = [r for r in closed if r["round"] == rnd and r["proxy"] == "nginx"]
            if g and n:
                ratios.append(float(g[0]["cpu_us_per_req"]) / float(n[0]["cpu_us_per_req"]))
        out.append("")
        out.append(
            f"**grayshift / nginx CPU per request: {cpu['grayshift'] / cpu['nginx']:.2f}** "
            f"(ratio of medians; per round: {', '.join(f'{x:.2f}' for x in ratios)})"
        )
    if "grayshift" in cpu and "grayshift-ledger" in cpu:
        out.append("")
        out.append(
            f"**exposure ledger on / off, CPU per request: {cpu['grayshift-ledger'] / cpu['grayshift']:.3f}** "
            f"(target ≤ 1.03)"
        )
    opened = [r for r in rows if r["kind"] == "open"]
    if opened:
        rate = opened[0]["rate"]
        out.append("")
        out.append(
            f"### Fixed rate: {float(rate):,.0f} requests/s (about half of nginx's maximum), open loop, "
            f"50 connections, median of {len({r['round'] for r in opened})} rounds\n"
        )
        out.append("| target | p50 | p99 | p50 added | p99 added | errors |")
        out.append("|---|---:|---:|---:|---:|---:|")
        direct = [r for r in opened if r["target"] == "direct"]
        d50, d99 = med(direct, "p50_us"), med(direct, "p99_us")
        for t in ["direct"] + PROXIES:
            rs = [r for r in opened if r["target"] == t]
            if not rs:
                continue
            p50, p99 = med(rs, "p50_us"), med(rs, "p99_us")
            errors = sum(int(r["errors"]) for r in rs)
            added = ("—", "—") if t == "direct" else (f"+{fmt_us(p50 - d50)}", f"+{fmt_us(p99 - d99)}")
            name = "direct to upstream" if t == "direct" else t
            out.append(f"| {name} | {fmt_us(p50)} | {fmt_us(p99)} | {added[0]} | {added[1]} | {errors} |")
    rss = [r for r in rows if r["kind"] == "rss"]
    if rss:
        out.append("")
        out.append("### Memory: 1 000 idle keep-alive client connections (each served one request)\n")
        out.append("| proxy | RSS before | RSS with 1 000 connections | connections open |")
        out.append("|---|---:|---:|---:|")
        for r in rss:
            out.append(
                f"| {r['proxy']} | {int(r['before_kib']) / 1024:.1f} MiB | "
                f"{int(r['with_kib']) / 1024:.1f} MiB | {r['open']} |"
            )
    out.append("")
    out.append(machine)
    print("\n".join(out))


if __name__ == "__main__":
    main()
