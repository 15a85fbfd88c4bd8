#!/usr/bin/env bash
# Soak test (not in CI): SOAK_MINUTES (10) of mixed load on a
# release grayshift with its shipped defaults (bar header_read_timeout = 5s,
# so the slowloris clients are cut off often), while the config changes
# under it:
#
# - keep-alive GETs at a fixed rate (benches/load/openloop.rs, SOAK_RATE
#   requests/s over 20 connections, 100 000 users);
# - pipelined GETs, chunked uploads (answered with their length by a small
#   upstream), WebSocket sessions (echo checked), slowloris connections
#   (benches/load/soak_clients.py; the upstream is soak_upstream.py behind
#   the nginx upstreams);
# - h2c at a low rate with h2load, when h2load is installed;
# - every 10 s a config reload, alternately by rewriting the file (a pool
#   setting toggled, the file replaced by rename, as a ConfigMap update
#   does) and by POST /reload;
# - every 5 s a percent flip, PUT /percent 20 ↔ 80 with the admin token;
# - every 10 s grayshift's RSS, open file descriptors, threads and
#   requests served, printed as a table at the end (and written to
#   $OUT/soak.md).
#
# Passes (exit 0) only with zero failed requests of every kind, every
# admin call answered 200, no reload refused, and grayshift still running.
#
#     SOAK_MINUTES=2 scripts/soak.sh
#
# Environment: SOAK_MINUTES (10), SOAK_RATE (2000), GRAYSHIFT_BIN (a binary
# to soak instead of the one built here), SKIP_BUILD, BENCH_OUT
# (target/bench). Needs nginx (scripts/bench.sh installs it) and python3.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOAD="$ROOT/benches/load"
OUT=${BENCH_OUT:-$ROOT/target/bench}
MINUTES=${SOAK_MINUTES:-10}
RATE=${SOAK_RATE:-2000}
SECS=$(awk -v m="$MINUTES" 'BEGIN { printf "%d", m * 60 }')
TAG=soak
# shellcheck source=../benches/load/lib.sh
source "$LOAD/lib.sh"

for tool in nginx python3 curl; do command -v "$tool" >/dev/null || die "$tool is required"; done
[ "$SECS" -ge 20 ] || die "SOAK_MINUTES must be at least 20 s worth"

build_binaries
start_work

# --- upstreams: nginx for the fast paths, soak_upstream.py for /upload and /ws --
PY_PORT=$(free_port)
python3 "$LOAD/soak_upstream.py" "$PY_PORT" 2>>"$WORK/soak-upstream.log" &
PIDS+=($!)
wait_port "$PY_PORT" soak_upstream.py
declare -A UP
for name in stable new; do
    UP[$name]=$(free_port)
    cat >"$WORK/up-$name.conf" <<NGINX
worker_processes 1;
daemon off;
pid $WORK/up-$name.pid;
error_log $WORK/up-$name.error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/body-$name;
    proxy_temp_path $WORK/proxy-$name;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    server {
        listen 127.0.0.1:${UP[$name]} backlog=4096;
        location / { default_type text/plain; return 200 "hello from $name\n"; }
        location /upload { proxy_pass http://127.0.0.1:$PY_PORT; proxy_http_version 1.1; }
        location /ws {
            proxy_pass http://127.0.0.1:$PY_PORT;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 1h;
        }
    }
}
NGINX
    nginx -p "$WORK" -c "$WORK/up-$name.conf" 2>>"$WORK/up-$name.log" &
    PIDS+=($!)
    wait_port "${UP[$name]}" "upstream $name"
done

# --- grayshift -----------------------------------------------------------------------
PROXY_PORT=$(free_port)
ADMIN_PORT=$(free_port)
ADMIN="http://127.0.0.1:$ADMIN_PORT"
export GRAYSHIFT_ADMIN_TOKEN="soak-$$-$RANDOM"
write_config() { # idle_timeout of the new pool: what the file-rewrite reloads toggle
    cat >"$WORK/g.toml.tmp" <<TOML
[server]
listen = "127.0.0.1:$PROXY_PORT"
header_read_timeout = "5s"

[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[split]
percent = 50
group = "soak"
key = ["header:X-User-ID", "client_ip"]

[pools.stable]
endpoints = ["127.0.0.1:${UP[stable]}"]

[pools.new]
endpoints = ["127.0.0.1:${UP[new]}"]
idle_timeout = "$1"

[state]
file = "$WORK/state.json"
TOML
    mv "$WORK/g.toml.tmp" "$WORK/g.toml"
}
write_config 30s
GRAYSHIFT_LOG=warn "$GRAYSHIFT" run --config "$WORK/g.toml" 2>>"$WORK/grayshift.log" &
GS=$!
PIDS+=("$GS")
for _ in $(seq 100); do curl -sf "$ADMIN/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "$ADMIN/readyz" >/dev/null || die "grayshift not ready (log: $(tail -5 "$WORK/grayshift.log"))"
log "grayshift pid $GS on 127.0.0.1:$PROXY_PORT (admin $ADMIN), $SECS s of mixed load"

metric() { # name{labels} → value (0 if absent)
    curl -s "$ADMIN/metrics" | awk -v m="$1" 'index($0, m) == 1 { n += $NF } END { print n + 0 }'
}

# --- the load ------------------------------------------------------------------------
"$OPENLOOP" --addr "127.0.0.1:$PROXY_PORT" --rate "$RATE" --connections 20 --duration "$SECS" --warmup 0 \
    >"$WORK/openloop.out" 2>"$WORK/openloop.err" &
LOADS=($!)
python3 "$LOAD/soak_clients.py" "127.0.0.1:$PROXY_PORT" "$SECS" >"$WORK/clients.out" 2>"$WORK/clients.err" &
LOADS+=($!)
if command -v h2load >/dev/null; then
    h2load -c2 -m4 --rps 50 -D "$SECS" -H "X-User-ID: h2-soak" "http://127.0.0.1:$PROXY_PORT/" \
        >"$WORK/h2load.out" 2>&1 &
    LOADS+=($!)
fi
PIDS+=("${LOADS[@]}")

# --- the changes, and the samples ----------------------------------------------------
admin_calls=0 admin_failures=0
admin() { # method path [body]
    local code
    code=$(curl -s -o "$WORK/admin.out" -w '%{http_code}' -X "$1" -H "Authorization: Bearer $GRAYSHIFT_ADMIN_TOKEN" \
        ${3:+-H 'Content-Type: application/json' --data "$3"} "$ADMIN$2" || echo 000)
    admin_calls=$((admin_calls + 1))
    if [ "$code" != 200 ]; then
        admin_failures=$((admin_failures + 1))
        log "$1 $2 answered $code: $(head -c 200 "$WORK/admin.out" 2>/dev/null)"
    fi
}
fds() { find "/proc/$GS/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
sample() { # seconds since start
    printf '%d %d %d %d %d\n' "$1" "$(awk '/^VmRSS:/ {print $2}' "/proc/$GS/status")" "$(fds)" \
        "$(awk '/^Threads:/ {print $2}' "/proc/$GS/status")" "$(metric grayshift_requests_total)" >>"$WORK/samples.txt"
}
: >"$WORK/samples.txt"
sample 0
start=$(date +%s)
file_reloads=0 api_reloads=0 flips=0 percent=20 idle=30s
next=5
while :; do
    now=$(($(date +%s) - start))
    [ "$now" -lt "$SECS" ] || break
    kill -0 "$GS" 2>/dev/null || die "grayshift exited (log: $(tail -5 "$WORK/grayshift.log"))"
    if [ "$now" -ge "$next" ]; then
        admin PUT /percent "{\"percent\": $percent}"
        flips=$((flips + 1))
        percent=$((100 - percent))
        if [ $((next % 10)) -eq 0 ]; then
            if [ $(((next / 10) % 2)) -eq 1 ]; then
                idle=$([ "$idle" = 30s ] && echo 29s || echo 30s)
                write_config "$idle"
                file_reloads=$((file_reloads + 1))
            else
                admin POST /reload
                api_reloads=$((api_reloads + 1))
            fi
            sample "$next"
        fi
        next=$((next + 5))
    fi
    sleep 0.2
done
for pid in "${LOADS[@]}"; do wait "$pid" || true; done
sleep 1
sample "$SECS"
kill -0 "$GS" 2>/dev/null || die "grayshift exited"

# --- verdict --------------------------------------------------------------------------
openloop=$(cat "$WORK/openloop.out")
clients=$(tail -1 "$WORK/clients.out")
field() { sed -n "s/.*\\b$1=\\([0-9]*\\).*/\\1/p" <<<"$2"; }
ol_errors=$(field errors "$openloop") ol_ok=$(field ok "$openloop")
cl_failures=$(field failures "$clients")
h2_line="not run (no h2load)" h2_failed=0
if [ -s "$WORK/h2load.out" ]; then
    read -r h2_done h2_ok h2_failed < <(awk '/^requests:/ { print $6, $8, $10 + $12 + $14 }' "$WORK/h2load.out")
    h2_line="$h2_done done, $h2_ok succeeded, $h2_failed failed/errored/timed out"
fi
reload_errors=$(metric 'grayshift_config_reloads_total{result="error"}')
reload_ok=$(metric 'grayshift_config_reloads_total{result="ok"}')
[ -n "$ol_errors" ] && [ -n "$cl_failures" ] || die "a load generator gave no result: openloop '$openloop' clients '$clients' $(head -5 "$WORK/clients.err")"

{
    echo "grayshift $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+dirty'), $SECS s ($MINUTES min), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs"
    echo
    echo "| t (s) | RSS (MiB) | open fds | threads | requests served (total) |"
    echo "|---:|---:|---:|---:|---:|"
    awk '{ printf "| %d | %.1f | %d | %d | %d |\n", $1, $2 / 1024, $3, $4, $5 }' "$WORK/samples.txt"
    echo
    echo "- keep-alive (openloop, $RATE/s, 20 connections): $ol_ok ok, $ol_errors errors"
    echo "- mixed clients: $clients"
    echo "- h2c (h2load, 2 connections × 4 streams): $h2_line"
    echo "- percent flips: $flips; reloads: $file_reloads by file rewrite, $api_reloads by POST /reload; admin calls $admin_calls, failed $admin_failures"
    echo "- grayshift_config_reloads_total: ok $reload_ok, error $reload_errors"
} >"$WORK/soak.md"
mkdir -p "$OUT"
cp "$WORK/soak.md" "$OUT/soak.md"
cat "$OUT/soak.md"
[ -s "$WORK/clients.err" ] && { log "client failures (first lines):"; head -20 "$WORK/clients.err" >&2; }

failed=$((ol_errors + cl_failures + h2_failed + admin_failures + reload_errors))
if [ "$failed" -ne 0 ]; then
    log "FAILED: $failed failures (see above)"
    exit 1
fi
log "passed: zero failed requests (written to $OUT/soak.md)"
