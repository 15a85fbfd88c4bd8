#!/usr/bin/env bash
# What an idle fleet costs (docs/src/fleet.md, Cost at scale): one etcd on
# loopback, N real grayshift replicas with the shipped defaults plus
# [fleet], nothing changing. After SETTLE seconds, over SECONDS: each
# replica's CPU (utime + stime from /proc/PID/stat), etcd's, the store's
# writes/s (its revision's growth) and the watch events it delivered/s
# (etcd_debugging_mvcc_events_total).
#
#   GRAYSHIFT_BIN=target/release/grayshift benches/load/fleet_idle.sh 4 48
#
# Options (environment): SECONDS_MEASURED (60), SETTLE (20), GRAYSHIFT_BIN
# (default target/release/grayshift, built if missing), ETCD_BIN (etcd).
# Prints one Markdown table row per N.
set -euo pipefail
TAG=fleet-idle
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/fleet_lib.sh"

MEASURE=${SECONDS_MEASURED:-60}
SETTLE=${SETTLE:-20}
GRAYSHIFT=${GRAYSHIFT_BIN:-$ROOT/target/release/grayshift}
[ -x "$GRAYSHIFT" ] || (cd "$ROOT" && cargo build --release --bin grayshift)
start_work

run_fleet() { # n
    local n=$1 dir="$WORK/n$n" i pids=() t0=() t1=()
    mkdir -p "$dir"
    start_etcd "$dir"
    local etcd_pid=$ETCD_PID
    for i in $(seq 1 "$n"); do
        start_replica "$dir/r$i" "r$i" idle
        pids+=("$REPLICA_PID")
    done
    log "$n replicas started; settling ${SETTLE}s"
    sleep "$SETTLE"
    local rev0 ev0 e0
    rev0=$(etcd_metric etcd_debugging_mvcc_current_revision)
    ev0=$(etcd_metric etcd_debugging_mvcc_events_total)
    e0=$(ticks "$etcd_pid")
    for i in "${!pids[@]}"; do t0[i]=$(ticks "${pids[i]}"); done
    sleep "$MEASURE"
    for i in "${!pids[@]}"; do t1[i]=$(ticks "${pids[i]}"); done
    local rev1 ev1 e1
    rev1=$(etcd_metric etcd_debugging_mvcc_current_revision)
    ev1=$(etcd_metric etcd_debugging_mvcc_events_total)
    e1=$(ticks "$etcd_pid")
    local per=()
    for i in "${!pids[@]}"; do per+=($((t1[i] - t0[i]))); done
    printf '%s\n' "${per[@]}" | awk -v n="$n" -v hz="$CLK_TCK" -v s="$MEASURE" \
        -v etcd=$((e1 - e0)) -v writes=$((rev1 - rev0)) -v events=$((ev1 - ev0)) '
        { sum += $1; if (NR == 1 || $1 > max) max = $1 }
        END {
            pct = 100 / (hz * s)
            printf "| %d | %.2f %% | %.2f %% | %.1f %% | %.1f %% | %.1f | %.1f |\n",
                n, sum / n * pct, max * pct, sum * pct, etcd * pct, writes / s, events / s
        }'
    for pid in "${pids[@]}" "$etcd_pid"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}" "$etcd_pid"; do wait "$pid" 2>/dev/null || true; done
}

echo "| replicas | CPU per replica (mean, of one core) | busiest replica | all replicas | etcd | store writes/s | watch events delivered/s |"
echo "|---|---|---|---|---|---|---|"
[ $# -gt 0 ] || set -- 4 48
for n in "$@"; do
    run_fleet "$n"
done
