#!/usr/bin/env bash
# Instructions per request in grayshift's user space, counted by callgrind:
# unlike CPU time, the count is the same run after run whatever else the
# machine is doing, so it shows a small change that benches/load/ab.sh
# cannot see through the noise. It does not see the kernel (two thirds of
# the CPU per request; the same system calls as nginx, see benches/runs/2026-12-01-where-the-time-goes.md).
#
#     benches/load/callgrind.sh BINARY|nginx [BINARY|nginx...]
#
# Each binary runs under valgrind with benches/load/grayshift.toml; after a
# warm-up the counters are zeroed, wrk sends DURATION (5s) of load over
# CONNS (10) connections with 100 000 distinct users, and the dump is
# divided by the requests grayshift counted. `nginx` measures the nginx
# that scripts/bench.sh compares with (benches/load/proxy.nginx.conf) the
# same way, in one process (master_process off: the process valgrind runs
# is the one that proxies), divided by the requests wrk counted (nginx has
# no /metrics). The profile stays in target/bench/callgrind.<n>.out for
# callgrind_annotate. EXTRA=FILE appends FILE to every grayshift's config
# (e.g. a [ledger] section, to count what it adds; @DIR@ is the run's dir).
set -euo pipefail
TAG=callgrind
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
OUT=$ROOT/target/bench
DURATION=${DURATION:-5s} CONNS=${CONNS:-10}
command -v valgrind >/dev/null || { echo "needs valgrind" >&2; exit 1; }
command -v nginx >/dev/null && command -v wrk >/dev/null || { echo "needs nginx and wrk (scripts/bench.sh installs them)" >&2; exit 1; }

start_work
WAIT_SECS=60 # valgrind starts slowly
requests() { curl -s "http://127.0.0.1:$1/metrics" | awk '/^grayshift_requests_total/ { n += $2 } END { print n + 0 }'; }

start_upstreams
mkdir -p "$OUT"
i=0
for bin in "$@"; do
    i=$((i + 1))
    port=$(free_port) admin=$(free_port)
    mkdir -p "$WORK/$i"
    if [ "$bin" = nginx ]; then
        render "$LOAD/proxy.nginx.conf" "$WORK/$i/n.conf" DIR="$WORK/$i" LISTEN="$port" STABLE="$STABLE_PORT" NEW="$NEW_PORT"
        # The config already says daemon off; -g may not repeat a directive.
        cmd=(nginx -p "$WORK/$i" -c "$WORK/$i/n.conf" -g "master_process off;")
    else
        render "$LOAD/grayshift.toml" "$WORK/$i/g.toml" DIR="$WORK/$i" LISTEN="$port" ADMIN="$admin" \
            STABLE="$STABLE_PORT" NEW="$NEW_PORT"
        [ -z "${EXTRA:-}" ] || sed -e "s|@DIR@|$WORK/$i|g; s|@ETCD@|${ETCD:-2379}|g" "$EXTRA" >>"$WORK/$i/g.toml"
        cmd=("$(realpath "$bin")" run --config "$WORK/$i/g.toml")
    fi
    rm -f "$OUT/callgrind.$i.out"*
    GRAYSHIFT_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.$i.out" \
        "${cmd[@]}" 2>>"$WORK/$i/log" &
    pid=$!
    PIDS+=($pid)
    wait_port "$port"
    wrk -t1 -c"$CONNS" -d2s -s "$LOAD/users.lua" "http://127.0.0.1:$port/" >/dev/null
    [ "$bin" = nginx ] || before=$(requests "$admin")
    callgrind_control -z "$pid" >/dev/null
    wrk -t1 -c"$CONNS" -d"$DURATION" -s "$LOAD/users.lua" "http://127.0.0.1:$port/" >"$WORK/$i/wrk.txt"
    callgrind_control -d "$pid" >/dev/null
    if [ "$bin" = nginx ]; then
        # The responses wrk got: at most CONNS fewer than nginx handled
        # (those in flight when wrk stopped), under 0.1% of a 5s run.
        before=0 after=$(sed -n 's/^RESULT requests=\([0-9]*\).*/\1/p' "$WORK/$i/wrk.txt")
    else
        after=$(requests "$admin")
    fi
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    dump="$OUT/callgrind.$i.out.1" # the -d dump: the counts since the zeroing
    ir=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
    errors=$(grep -Eo 'status_errors=[0-9]+|socket_errors=[0-9]+' "$WORK/$i/wrk.txt" | awk -F= '{ n += $2 } END { print n + 0 }')
    echo "$bin: $((after - before)) requests, $((ir / (after - before))) instructions per request, errors $errors (profile: $dump)"
done
