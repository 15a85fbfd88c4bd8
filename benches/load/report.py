#!/usr/bin/env python3
"""Turn scripts/bench.sh's raw results (key=value lines) into the markdown
report: medians over the rounds, the grayshift/nginx CPU ratio, fixed-rate
latency added over direct-to-upstream, RSS with idle connections, and the
TLS and HTTP/2 legs with a grayshift-vs-nginx summary against the targets.

usage: report.py RAW_FILE MACHINE_FILE
"""
import statistics
import sys

PROXIES = ["grayshift", "grayshift-ledger", "grayshift-shadow1", "grayshift-shadow10", "nginx", "haproxy"]

# leg → (title, grayshift/nginx CPU target or None)
LEGS = {
    "plain": ("plain HTTP/1.1 keep-alive", 0.90),
    "tls": ("TLS keep-alive (HTTP/1.1)", 0.90),
    "handshake": ("full TLS handshake per request", None),
    "resume": ("resumed TLS session per request", None),
    "h2c": ("h2c (prior knowledge)", 0.80),
    "h2": ("h2 over TLS (ALPN)", 0.80),
}


def title(leg, rs):
    c = rs[0].get("conns", "50")
    streams = rs[0].get("streams")
    return {
        "plain": f"Closed loop: `wrk -t1 -c{c}`, 100 000 distinct X-User-ID",
        "tls": f"TLS keep-alive: `wrk -t1 -c{c} https://`, 100 000 distinct X-User-ID",
        "handshake": f"Full TLS handshakes: `wrk -t1 -c{c} https://` with `Connection: close` on every request "
        "(a new connection and a full handshake per request; CPU per request = per handshake)",
        "resume": "TLS resumptions: `openssl s_time -reuse`, one connection at a time (a resumed session per "
        "request; it reports no latencies)",
        "h2c": f"h2c: `h2load -t1 -c{c} -m{streams}` (prior knowledge), one X-User-ID",
        "h2": f"h2 over TLS: `h2load -t1 -c{c} -m{streams} https://` (ALPN h2), one X-User-ID",
    }[leg]


def num(value):
    try:
        return float(value)
    except ValueError:
        return None


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                rows.append(dict(kv.split("=", 1) for kv in line.split()))
    return rows


def med(rows, key):
    values = [num(r[key]) for r in rows if key in r]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def fmt_us(us):
    if us != us:  # nan: not measured (openssl s_time)
        return "—"
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def closed_table(out, leg, closed):
    """One leg's closed-loop table; returns {proxy: median CPU per request}."""
    rounds = len({r["round"] for r in closed})
    out.append(f"### {title(leg, closed)}, median of {rounds} rounds\n")
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
        resumed = ""
        if "resumed" in rs[0]:
            resumed = f" ({sum(int(r['resumed']) for r in rs) / max(1, sum(int(r['requests']) for r in rs)):.0%} resumed)"
        out.append(
            f"| {p} | {cpu[p]:.2f} | {split} | {med(rs, 'rps'):,.0f} | {fmt_us(med(rs, 'p50_us'))} | "
            f"{fmt_us(med(rs, 'p99_us'))} | {errors}{resumed} | {each} |"
        )
    return cpu


def ratios(closed):
    out = []
    for rnd in sorted({r["round"] for r in closed}, key=int):
        g = [r for r in closed if r["round"] == rnd and r["proxy"] == "grayshift"]
        n = [r for r in closed if r["round"] == rnd and r["proxy"] == "nginx"]
        if g and n:
            out.append(float(g[0]["cpu_us_per_req"]) / float(n[0]["cpu_us_per_req"]))
    return out


def ledger_paired(paired):
    """Per round, grayshift-ledger's CPU per request over grayshift's, both
    measured at the same time."""
    out = []
    for rnd in sorted({r["round"] for r in paired}, key=int):
        cpu = {r["proxy"]: float(r["cpu_us_per_req"]) for r in paired if r["round"] == rnd}
        if "grayshift" in cpu and "grayshift-ledger" in cpu:
            out.append(cpu["grayshift-ledger"] / cpu["grayshift"])
    return out


def main():
    rows = load(sys.argv[1])
    machine = open(sys.argv[2]).read().strip()
    out = []
    closed_all = [r for r in rows if r["kind"] == "closed"]
    summary = []
    for leg in LEGS:
        closed = [r for r in closed_all if r.get("leg", "plain") == leg]
        if not closed:
            continue
        if out:
            out.append("")
        cpu = closed_table(out, leg, closed)
        if "grayshift" in cpu and "nginx" in cpu:
            per_round = ratios(closed)
            ratio = cpu["grayshift"] / cpu["nginx"]
            out.append("")
            out.append(
                f"**grayshift / nginx CPU per request: {ratio:.2f}** "
                f"(ratio of medians; per round: {', '.join(f'{x:.2f}' for x in per_round)})"
            )
            p99 = {p: med([r for r in closed if r["proxy"] == p], "p99_us") for p in ("grayshift", "nginx")}
            summary.append((leg, cpu, ratio, per_round, p99))
        if leg == "plain" and "grayshift" in cpu and "grayshift-ledger" in cpu:
            out.append("")
            out.append(
                f"Exposure ledger on / off, CPU per request, one after the other: "
                f"{cpu['grayshift-ledger'] / cpu['grayshift']:.3f} (ratio of medians)"
            )
            paired = ledger_paired([r for r in rows if r["kind"] == "paired"])
            if paired:
                out.append("")
                out.append(
                    f"**exposure ledger on / off, CPU per request, both at once: {statistics.median(paired):.3f}** "
                    f"(target ≤ 1.03; median of the per-round ratios: {', '.join(f'{x:.3f}' for x in paired)})"
                )
        if leg == "plain" and "grayshift" in cpu:
            for p, share in (("grayshift-shadow1", "1 %"), ("grayshift-shadow10", "10 %")):
                if p in cpu:
                    out.append("")
                    out.append(
                        f"Shadow reads at {share} / off, CPU per request (mirrored requests included): "
                        f"{cpu[p] / cpu['grayshift']:.3f} (ratio of medians)"
                    )
    if len(summary) > 1:
        out.append("")
        out.append("### grayshift vs nginx, every leg (medians)\n")
        out.append(
            "| leg | grayshift CPU µs / req | nginx CPU µs / req | grayshift / nginx | target | per round | p99 grayshift | p99 nginx |"
        )
        out.append("|---|---:|---:|---:|---|---|---:|---:|")
        for leg, cpu, ratio, per_round, p99 in summary:
            name, target = LEGS[leg]
            if target is None:
                verdict = "below 1.0 (kept)" if ratio < 1 else "**above 1.0**"
                target_text = f"< 1 ({verdict})"
            else:
                # judged on the ratio as printed (0.804 shows as 0.80: met)
                target_text = f"≤ {target:.2f} ({'met' if round(ratio, 2) <= target else '**not met**'})"
            out.append(
                f"| {name} | {cpu['grayshift']:.2f} | {cpu['nginx']:.2f} | **{ratio:.2f}** | {target_text} | "
                f"{', '.join(f'{x:.2f}' for x in per_round)} | {fmt_us(p99['grayshift'])} | {fmt_us(p99['nginx'])} |"
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
        # Shadow reads: the client's p99 at this rate against shadow off
        # (target: within 5 % at 1 %), per round and of the medians.
        off = [r for r in opened if r["target"] == "grayshift"]
        for p, share in (("grayshift-shadow1", "1 %"), ("grayshift-shadow10", "10 %")):
            on = [r for r in opened if r["target"] == p]
            if off and on:
                per_round = [
                    float(a["p99_us"]) / float(b["p99_us"])
                    for a in on
                    for b in off
                    if a["round"] == b["round"] and float(b["p99_us"]) > 0
                ]
                out.append("")
                out.append(
                    f"**shadow reads at {share} / off, client p99 at this rate: {med(on, 'p99_us') / med(off, 'p99_us'):.3f}** "
                    f"(ratio of medians; per round: {', '.join(f'{x:.3f}' for x in per_round)})"
                )
    paired_open = [r for r in rows if r["kind"] == "open-paired"]
    for pair, share in (("grayshift-shadow1", "1 %"), ("grayshift-shadow10", "10 %")):
        rs = [r for r in paired_open if r["pair"] == pair]
        if not rs:
            continue
        per_round = []
        for rnd in sorted({r["round"] for r in rs}, key=int):
            on = [r for r in rs if r["round"] == rnd and r["target"] == pair]
            off = [r for r in rs if r["round"] == rnd and r["target"] == "grayshift"]
            if on and off and float(off[0]["p99_us"]) > 0:
                per_round.append(float(on[0]["p99_us"]) / float(off[0]["p99_us"]))
        on_all = [r for r in rs if r["target"] == pair]
        off_all = [r for r in rs if r["target"] == "grayshift"]
        out.append("")
        out.append(
            f"**shadow reads at {share} / off, client p99 at {float(rs[0]['rate']):,.0f} requests/s each, both at once: "
            f"{statistics.median(per_round):.3f}** (median of the per-round ratios, target ≤ 1.05 at 1 %; "
            f"per round: {', '.join(f'{x:.3f}' for x in per_round)}; p99 medians {fmt_us(med(off_all, 'p99_us'))} off, "
            f"{fmt_us(med(on_all, 'p99_us'))} on; p50 {fmt_us(med(off_all, 'p50_us'))} off, {fmt_us(med(on_all, 'p50_us'))} on; "
            f"errors {sum(int(r['errors']) for r in rs)})"
        )
    rss = [r for r in rows if r["kind"] == "rss"]
    if rss:
        out.append("")
        out.append("### Memory: 1 000 idle keep-alive client connections (each served one request)\n")
        out.append("| proxy | connections | RSS before | RSS with the idle connections | target | connections open |")
        out.append("|---|---|---:|---:|---:|---:|")
        for r in rss:
            tls = r.get("leg", "plain") == "tls"
            target = "" if r["proxy"] != "grayshift" else ("≤ 26 MiB" if tls else "≤ 15 MiB")
            out.append(
                f"| {r['proxy']} | {'TLS (HTTP/1.1)' if tls else 'plain'} | {int(r['before_kib']) / 1024:.1f} MiB | "
                f"{int(r['with_kib']) / 1024:.1f} MiB | {target} | {r['open']} |"
            )
    out.append("")
    out.append(machine)
    print("\n".join(out))


if __name__ == "__main__":
    main()
