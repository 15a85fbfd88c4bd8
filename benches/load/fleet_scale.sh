#!/usr/bin/env bash
# Fleet mode at scale (docs/src/fleet.md, Cost at scale): one etcd on
# loopback, 3 real grayshift replicas (shipped defaults plus [fleet]) and
# simulated members (benches/load/fleet_members.rs: the real key layout and
# cadence, no proxy), in steps of STEPS simulated members. Per step, after
# SETTLE seconds, over SECONDS_MEASURED: etcd's CPU, the store's writes/s
# and watch events delivered/s, each real replica's CPU; then the time of
# `ctl set-percent --wait` (every member applied it) and of a rollback's
# propagation (POST /rollback on replica 1 until replicas 2 and 3 report
# grayshift_rollback_level 1 on /metrics).
#
#   benches/load/fleet_scale.sh                 # STEPS="10 100 1000"
#   BUSY=1 benches/load/fleet_scale.sh          # members' counters grow every interval
#
# Options (environment): STEPS, BUSY (0), SETTLE (30), SECONDS_MEASURED (60),
# GRAYSHIFT_BIN, MEMBERS_BIN, ETCD_BIN. Prints one Markdown table row per step.
set -euo pipefail
TAG=fleet-scale
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/fleet_lib.sh"

STEPS=${STEPS:-10 100 1000}
SETTLE=${SETTLE:-30}
MEASURE=${SECONDS_MEASURED:-60}
GRAYSHIFT=${GRAYSHIFT_BIN:-$ROOT/target/release/grayshift}
MEMBERS=${MEMBERS_BIN:-$ROOT/target/release/examples/fleet_members}
[ -x "$GRAYSHIFT" ] || (cd "$ROOT" && cargo build --release --bin grayshift)
[ -x "$MEMBERS" ] || (cd "$ROOT" && cargo build --release --example fleet_members)
start_work

now_ms() { echo $(($(date +%s%N) / 1000000)); }
level_is() { # admin level
    curl -s "$1/metrics" | grep -q "^grayshift_rollback_level $2\$"
}

start_etcd "$WORK"
REPLICAS=()
ADMINS=()
for i in 1 2 3; do
    start_replica "$WORK/r$i" "real-$i" scale
    REPLICAS+=("$REPLICA_PID")
    ADMINS+=("$REPLICA_ADMIN")
    wait_port "${REPLICA_ADMIN##*:}" "replica $i"
done

echo "| simulated members | etcd CPU | store writes/s | watch events/s | real replicas' CPU (each) | set-percent --wait | rollback propagation |"
echo "|---|---|---|---|---|---|---|"
prev=0
percent=10
for step in $STEPS; do
    busy=()
    [ "${BUSY:-0}" = 1 ] && busy=(--busy)
    "$MEMBERS" --etcd "$ETCD_URL" --name scale --from "$prev" --count $((step - prev)) "${busy[@]}" \
        >"$WORK/members-$step.log" 2>&1 &
    PIDS+=($!)
    prev=$step
    log "$step simulated members; settling ${SETTLE}s"
    sleep "$SETTLE"
    rev0=$(etcd_metric etcd_debugging_mvcc_current_revision)
    ev0=$(etcd_metric etcd_debugging_mvcc_events_total)
    e0=$(ticks "$ETCD_PID")
    t0=()
    for pid in "${REPLICAS[@]}"; do t0+=("$(ticks "$pid")"); done
    sleep "$MEASURE"
    t1=()
    for pid in "${REPLICAS[@]}"; do t1+=("$(ticks "$pid")"); done
    e1=$(ticks "$ETCD_PID")
    rev1=$(etcd_metric etcd_debugging_mvcc_current_revision)
    ev1=$(etcd_metric etcd_debugging_mvcc_events_total)
    pct() { awk -v t="$1" -v hz="$CLK_TCK" -v s="$MEASURE" 'BEGIN { printf "%.2f %%", t * 100 / (hz * s) }'; }
    each=""
    for i in 0 1 2; do each+="$(pct $((t1[i] - t0[i]))) "; done

    # set-percent --wait: until every live member (real and simulated) applied it.
    percent=$((percent == 10 ? 20 : 10))
    s0=$(now_ms)
    "$GRAYSHIFT" ctl --admin "${ADMINS[0]}" set-percent "$percent" --wait --timeout 30s >"$WORK/wait-$step.log" 2>&1 ||
        log "set-percent --wait did not finish: $(tail -1 "$WORK/wait-$step.log")"
    wait_ms=$(($(now_ms) - s0))

    # A rollback on replica 1 until replicas 2 and 3 apply it.
    r0=$(now_ms)
    curl -s -X POST -H 'content-type: application/json' -d '{"level":"L1","reason":"bench"}' "${ADMINS[0]}/rollback" >/dev/null
    until level_is "${ADMINS[1]}" 1 && level_is "${ADMINS[2]}" 1; do sleep 0.01; done
    rollback_ms=$(($(now_ms) - r0))
    curl -s -X POST -H 'content-type: application/json' -d '{"level":"L1"}' "${ADMINS[0]}/resume" >/dev/null
    until level_is "${ADMINS[1]}" 0 && level_is "${ADMINS[2]}" 0; do sleep 0.05; done

    awk -v n="$step" -v etcd=$((e1 - e0)) -v hz="$CLK_TCK" -v s="$MEASURE" -v w=$((rev1 - rev0)) -v ev=$((ev1 - ev0)) \
        -v each="$each" -v wait_ms="$wait_ms" -v rb="$rollback_ms" 'BEGIN {
        printf "| %d | %.1f %% | %.1f | %.1f | %s| %d ms | %d ms |\n", n, etcd * 100 / (hz * s), w / s, ev / s, each, wait_ms, rb
    }'
done
