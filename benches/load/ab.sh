#!/usr/bin/env bash
# A/B two grayshift binaries on CPU time per request, the figure
# scripts/bench.sh reports, alternating A B A B … so machine noise hits
# both alike. For checking one optimisation; scripts/bench.sh is the
# benchmark of record.
#
#     benches/load/ab.sh OLD_BINARY NEW_BINARY [ROUNDS]
#
# Environment: DURATION (5s), CONNS (50), PROXY_CPU (0), LOAD_CPU (1),
# UPSTREAM_CPU (1), NICE (0). Needs nginx and wrk (scripts/bench.sh installs them).
set -euo pipefail
LOAD=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
A=$(realpath "$1") B=$(realpath "$2") ROUNDS=${3:-6}
DURATION=${DURATION:-5s} CONNS=${CONNS:-50}
PROXY_CPU=${PROXY_CPU:-0} LOAD_CPU=${LOAD_CPU:-1} UPSTREAM_CPU=${UPSTREAM_CPU:-1} NICE=${NICE:-0}
export PATH="$PATH:/usr/sbin"

WORK=$(mktemp -d /tmp/grayshift-ab.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not up" >&2; exit 1; }
# Prefixes for simple commands only, so `$!` is the program's own PID.
PIN_PROXY=(nice -n "$NICE" taskset -c "$PROXY_CPU")
PIN_LOAD=(nice -n "$NICE" taskset -c "$LOAD_CPU")
PIN_UPSTREAM=(nice -n "$NICE" taskset -c "$UPSTREAM_CPU")
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

S=$(free_port) N=$(free_port)
for name in stable new; do
    port=$S; [ $name = new ] && port=$N
    sed -e "s|@NAME@|$name|g; s|@PORT@|$port|g; s|@DIR@|$WORK|g" "$LOAD/upstream.nginx.conf" >"$WORK/up-$name.conf"
    "${PIN_UPSTREAM[@]}" nginx -p "$WORK" -c "$WORK/up-$name.conf" 2>>"$WORK/up.log" &
    PIDS+=($!)
    wait_port "$port"
done
declare -A PORT PID
for side in A B; do
    bin=$A; [ $side = B ] && bin=$B
    PORT[$side]=$(free_port)
    mkdir -p "$WORK/$side"
    sed -e "s|@DIR@|$WORK/$side|g; s|@LISTEN@|${PORT[$side]}|; s|@ADMIN@|$(free_port)|; s|@STABLE@|$S|; s|@NEW@|$N|" \
        "$LOAD/grayshift.toml" >"$WORK/$side/g.toml"
    GRAYSHIFT_LOG=warn "${PIN_PROXY[@]}" "$bin" run --config "$WORK/$side/g.toml" 2>>"$WORK/$side/log" &
    PID[$side]=$!
    PIDS+=($!)
    wait_port "${PORT[$side]}"
    "${PIN_LOAD[@]}" wrk -t1 -c"$CONNS" -d2s -s "$LOAD/users.lua" "http://127.0.0.1:${PORT[$side]}/" >/dev/null
done
hz=$(getconf CLK_TCK)
for round in $(seq "$ROUNDS"); do
    for side in A B; do
        before=$(cpu_ticks "${PID[$side]}")
        r=$("${PIN_LOAD[@]}" wrk -t1 -c"$CONNS" -d"$DURATION" -s "$LOAD/users.lua" "http://127.0.0.1:${PORT[$side]}/" | grep '^RESULT')
        after=$(cpu_ticks "${PID[$side]}")
        echo "$side $r ticks=$((after - before))" | awk -v hz="$hz" '{
            for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
            printf "%s rps=%.0f cpu_us_per_req=%.2f p50_us=%d p99_us=%d errors=%d\n", $1,
                v["requests"] / v["duration_us"] * 1e6, v["ticks"] / hz * 1e6 / v["requests"], v["p50_us"], v["p99_us"],
                v["status_errors"] + v["socket_errors"] }'
    done
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
