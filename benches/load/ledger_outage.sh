#!/usr/bin/env bash
# The exposure ledger's PostgreSQL going away under load: does a
# request fail, or wait, while the sink is down? Latency is measured here,
# not asserted in a test (tests/ledger.rs asserts that no request fails and
# the rows arrive).
#
#     benches/load/ledger_outage.sh
#
# - a throwaway PostgreSQL (initdb, a free loopback port, pinned with the
#   load), the two nginx upstreams, and two release grayshifts (50 %):
#   `off` without a ledger, `on` with `[ledger] postgres = …, flush = "1s"`;
# - ROUNDS times, three phases, each measured on `off` and on `on` in turn:
#     up     PostgreSQL running
#     down   PostgreSQL stopped just before (pg_ctl stop -m immediate)
#     back   PostgreSQL started again just before
#   each a run of the open-loop generator at RATE requests/s over 50
#   connections, USERS distinct X-User-IDs, DURATION seconds;
# - per run: requests, errors, p50/p99/p99.9/max, and `on`'s
#   grayshift_ledger_{errors,written,dropped}_total and _queued;
# - at the end, once `on` has nothing queued: the table must hold exactly
#   the users `grayshift bucket --sample` puts on `new` (exit 1 otherwise).
#
# Environment: ROUNDS (3), DURATION (10), RATE (5000), USERS (20000),
# NICE, PROXY_CPU, LOAD_CPU, UPSTREAM_CPU (benches/load/lib.sh), SKIP_BUILD,
# GRAYSHIFT_BIN, KEEP_WORK. Needs nginx (scripts/bench.sh installs it) and
# PostgreSQL's server binaries (scripts/test.sh installs them).
set -euo pipefail
TAG=ledger-outage
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-10} RATE=${RATE:-5000} USERS=${USERS:-20000}

initdb=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n1 || true)
[ -n "$initdb" ] || die "PostgreSQL's initdb not found (apt-get install postgresql)"
PG_BIN=$(dirname "$initdb")
command -v nginx >/dev/null || die "nginx is required (scripts/bench.sh installs it)"
command -v psql >/dev/null || die "psql is required"
build_binaries
start_work

# --- PostgreSQL: the sink -------------------------------------------------------
# Run as postgres when root (initdb refuses root).
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$WORK"
PG_PORT=$(free_port)
as_pg "$PG_BIN/initdb" -D "$WORK/pg" -U postgres -A trust >/dev/null
start_pg() {
    as_pg taskset -c "${LOAD_CPU:-1}" "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w \
        -o "-h 127.0.0.1 -p $PG_PORT -k $WORK" start >/dev/null
}
start_pg
stop_pg() { as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true; }
trap 'stop_pg; stop_work' EXIT
PG_URL="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
log "PostgreSQL on 127.0.0.1:$PG_PORT"

# --- upstreams and the two grayshifts ------------------------------------------
start_upstreams
declare -A PORT ADMIN PID
for side in off on; do
    PORT[$side]=$(free_port) ADMIN[$side]=$(free_port)
    render "$LOAD/grayshift.toml" "$WORK/$side.toml" DIR="$WORK" LISTEN="${PORT[$side]}" \
        ADMIN="${ADMIN[$side]}" STABLE="$STABLE_PORT" NEW="$NEW_PORT"
    sed -i "s|grayshift-state.json|$side-state.json|" "$WORK/$side.toml"
    [ $side = off ] || printf '\n[ledger]\npostgres = "%s"\nflush = "1s"\n' "$PG_URL" >>"$WORK/$side.toml"
    GRAYSHIFT_LOG=warn "${PIN_PROXY[@]}" "$GRAYSHIFT" run --config "$WORK/$side.toml" 2>>"$WORK/$side.log" &
    PID[$side]=$!
    PIDS+=($!)
    wait_port "${PORT[$side]}" "grayshift $side"
done

ledger_metrics() { # → "sink_errors=… written=… dropped=… queued=…" of `on`
    curl -s "http://127.0.0.1:${ADMIN[on]}/metrics" | awk '
        /^grayshift_ledger_errors_total/ { e = $2 } /^grayshift_ledger_written_total/ { w = $2 }
        /^grayshift_ledger_dropped_total/ { d = $2 } /^grayshift_ledger_queued/ { q = $2 }
        END { printf "sink_errors=%d written=%d dropped=%d queued=%d", e, w, d, q }'
}

load() { # side → openloop's line
    "${PIN_LOAD[@]}" "$OPENLOOP" --addr "127.0.0.1:${PORT[$1]}" --rate "$RATE" --connections 50 \
        --duration "$DURATION" --warmup 1 --users "$USERS"
}

OUT=$WORK/runs.txt
for round in $(seq "$ROUNDS"); do
    order="off on"; [ $((round % 2)) = 0 ] && order="on off"
    for phase in up down back; do
        case $phase in
            down) stop_pg ;;
            back) start_pg ;;
        esac
        for side in $order; do
            line="round=$round phase=$phase side=$side $(load "$side") $(ledger_metrics)"
            log "$line"
            echo "$line" >>"$OUT"
        done
    done
done

# --- the rows arrive: every user on `new`, nobody else ----------------------------------
for _ in $(seq 120); do
    [[ $(ledger_metrics) == *" queued=0" ]] && break
    sleep 1
done
seq 0 $((USERS - 1)) | sed 's/^/user-/' >"$WORK/users.txt"
expected=$("$GRAYSHIFT" bucket --config "$WORK/on.toml" --percent 50 --sample "$WORK/users.txt" | awk '/stay on new/ { print $1 }')
rows=$(psql "$PG_URL" -tAc "SELECT count(*) FROM grayshift_exposure WHERE key LIKE 'user-%'")
log "after the outage: $(ledger_metrics); rows $rows, users on new $expected"

python3 - "$OUT" "$rows" "$expected" <<'PY'
import statistics as st, sys
runs = [dict(kv.split("=", 1) for kv in line.split()) for line in open(sys.argv[1])]
print("| phase | ledger | requests | errors | p50 | p99 | p99.9 | max | sink errors during |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for phase in ("up", "down", "back"):
    for side in ("off", "on"):
        rs = [r for r in runs if r["phase"] == phase and r["side"] == side]
        med = lambda k: st.median(int(r[k]) for r in rs)
        sink = f"{int(rs[-1]['sink_errors'])}" if side == "on" else ""
        print(f"| {phase} | {side} | {sum(int(r['sent']) for r in rs):,} | {sum(int(r['errors']) for r in rs)} "
              f"| {med('p50_us'):.0f} µs | {med('p99_us'):.0f} µs | {med('p999_us') / 1000:.2f} ms "
              f"| {med('max_us') / 1000:.1f} ms | {sink} |")
bad = sum(int(r["errors"]) for r in runs)
print(f"\nmedians over the rounds; sink errors: grayshift_ledger_errors_total after the phase's last run")
print(f"failed requests in all runs: {bad}; table rows for the load's users: {sys.argv[2]}, users on new: {sys.argv[3]}")
sys.exit(0 if bad == 0 and sys.argv[2] == sys.argv[3] else 1)
PY
