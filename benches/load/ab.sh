#!/usr/bin/env bash
# A/B two grayshift binaries on CPU time per request, the figure
# scripts/bench.sh reports, alternating A B A B … so machine noise hits
# both alike. For checking one optimisation; scripts/bench.sh is the
# benchmark of record.
#
#     benches/load/ab.sh OLD_BINARY NEW_BINARY [ROUNDS]
#
# Environment: DURATION (5s), CONNS (50), PROXY_CPU (0), LOAD_CPU (1),
# UPSTREAM_CPU (1), NICE (0), and:
#   EXTRA_A, EXTRA_B  a file appended to A's or B's config (@DIR@ is its
#                     dir): the same binary twice with EXTRA_B=
#                     benches/load/ledger.toml is what the ledger costs
#   TOGETHER=1        A and B measured at the same time, each under its own
#                     wrk, both proxies sharing PROXY_CPU: a noisy host's
#                     slow moments then hit both alike instead of whichever
#                     ran then (the two share one core's caches, alike too)
# Needs nginx and wrk (scripts/bench.sh installs them).
set -euo pipefail
TAG=ab
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
A=$(realpath "$1") B=$(realpath "$2") ROUNDS=${3:-6}
DURATION=${DURATION:-5s} CONNS=${CONNS:-50}
start_work
start_upstreams
declare -A PORT PID
for side in A B; do
    bin=$A; [ $side = B ] && bin=$B
    PORT[$side]=$(free_port)
    mkdir -p "$WORK/$side"
    render "$LOAD/grayshift.toml" "$WORK/$side/g.toml" DIR="$WORK/$side" LISTEN="${PORT[$side]}" \
        ADMIN="$(free_port)" STABLE="$STABLE_PORT" NEW="$NEW_PORT"
    extra_var=EXTRA_$side
    [ -z "${!extra_var:-}" ] || sed -e "s|@DIR@|$WORK/$side|g" "${!extra_var}" >>"$WORK/$side/g.toml"
    GRAYSHIFT_LOG=warn "${PIN_PROXY[@]}" "$bin" run --config "$WORK/$side/g.toml" 2>>"$WORK/$side/log" &
    PID[$side]=$!
    PIDS+=($!)
    wait_port "${PORT[$side]}"
    "${PIN_LOAD[@]}" wrk -t1 -c"$CONNS" -d2s -s "$LOAD/users.lua" "http://127.0.0.1:${PORT[$side]}/" >/dev/null
done
load() { # side → wrk's RESULT line in $WORK/$side/wrk.txt
    "${PIN_LOAD[@]}" wrk -t1 -c"$CONNS" -d"$DURATION" -s "$LOAD/users.lua" "http://127.0.0.1:${PORT[$1]}/" \
        | grep '^RESULT' >"$WORK/$1/wrk.txt"
}
report() { # side ticks
    echo "$1 $(cat "$WORK/$1/wrk.txt") ticks=$2" | awk -v hz="$CLK_TCK" '{
        for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        printf "%s rps=%.0f cpu_us_per_req=%.2f p50_us=%d p99_us=%d errors=%d\n", $1,
            v["requests"] / v["duration_us"] * 1e6, v["ticks"] / hz * 1e6 / v["requests"], v["p50_us"], v["p99_us"],
            v["status_errors"] + v["socket_errors"] }'
}
ticks() { local u s; read -r u s < <(cpu_ticks "${PID[$1]}"); echo $((u + s)); }
for round in $(seq "$ROUNDS"); do
    if [ -n "${TOGETHER:-}" ]; then
        a0=$(ticks A) b0=$(ticks B)
        load A & la=$!
        load B & lb=$!
        wait $la $lb
        a1=$(ticks A) b1=$(ticks B)
        report A $((a1 - a0))
        report B $((b1 - b0))
    else
        for side in A B; do
            t0=$(ticks $side)
            load $side
            report $side $(($(ticks $side) - t0))
        done
    fi
done | tee "$WORK/ab.txt"
echo "--- median CPU µs/request (and rps); median of the per-round ratios B/A"
python3 - "$WORK/ab.txt" <<'PY'
import re, statistics, sys
rows = [dict(kv.split("=") for kv in line.split()[1:]) | {"side": line.split()[0]} for line in open(sys.argv[1])]
a = [r for r in rows if r["side"] == "A"]
b = [r for r in rows if r["side"] == "B"]
for side, rs in (("A", a), ("B", b)):
    print(f"{side} {statistics.median(float(r['cpu_us_per_req']) for r in rs):.2f}  rps {statistics.median(float(r['rps']) for r in rs):.0f}")
ratios = [float(y["cpu_us_per_req"]) / float(x["cpu_us_per_req"]) for x, y in zip(a, b)]
better = sum(r < 1 for r in ratios)
print(f"B/A {statistics.median(ratios):.3f} (B lower in {better} of {len(ratios)} rounds)")
PY
