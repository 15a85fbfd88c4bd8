#!/usr/bin/env bash
# grayshift vs nginx (split_clients) vs HAProxy, side by side on one machine
# (docs/src/performance.md). One command:
#
#     scripts/bench.sh
#
# - installs nginx-light, haproxy and wrk (and nghttp2-client for h2load and
#   openssl, for the TLS and h2 legs) with apt when missing (as root);
# - builds grayshift and the open-loop generator (benches/load/openloop.rs)
#   in release mode;
# - starts two fast upstreams (nginx answering a fixed 200) on free loopback
#   ports, from configs in a temp dir (never the system service);
# - starts grayshift (server.workers = 1), nginx (split_clients on
#   $http_x_user_id, 1 worker, upstream keepalive) and HAProxy (hash of
#   X-User-ID, nbthread 1), each pinned to CPU $PROXY_CPU with taskset;
# - ROUNDS times, in turn A B C A B C …: a warm-up, then
#   `wrk -t1 -c50 -d10s -s users.lua --latency` pinned to CPU $LOAD_CPU,
#   reading the proxy's utime+stime (all threads; nginx's worker) from
#   /proc/PID/stat before and after;
# - the same again at a fixed rate (half of nginx's median maximum) with
#   the open-loop generator, plus direct to an upstream, for the latency
#   each proxy adds;
# - RSS of each proxy holding 1 000 idle keep-alive client connections;
# - the TLS and HTTP/2 legs (LEGS), grayshift against nginx only: a
#   grayshift with server.tls and an nginx with `listen … ssl http2` and
#   `listen … http2` (benches/load/proxy-h2.nginx.conf: the same
#   certificate, made here with openssl, `ssl_session_cache`, keepalive 256
#   to the upstreams), measured the same way, in turn, every round:
#     tls        keep-alive TLS: wrk -c50 https://
#     handshake  a full TLS handshake per request: wrk -c50 https://, every
#                request with Connection: close (wrk never resumes)
#     resume     a resumed TLS session per request: openssl s_time -reuse
#                (one connection at a time; no latency figures)
#     h2c        h2load -c$H2_CONNS -m$H2_STREAMS, prior knowledge, on
#                grayshift's plain listener and nginx's http2 one
#     h2         the same over TLS, h2 by ALPN
#   and RSS with 1 000 idle TLS keep-alive clients;
# - prints a markdown table and writes it to target/bench/results.md
#   (raw numbers: target/bench/raw.txt).
#
# Environment: ROUNDS (3), DURATION (10s), WARMUP (2s), CONNS (50),
# PROXY_CPU (0), LOAD_CPU (1), UPSTREAM_CPU (1), RATE (default: half of
# nginx's median requests/s), IDLE_CONNS (1000), PROXIES ("grayshift nginx
# haproxy"; add grayshift-ledger for the exposure ledger's row, and
# grayshift-shadow1 and grayshift-shadow10 for shadow reads at sample 1 % and
# 10 %; RATE then sets the fixed rate when nginx is not measured), NICE (0; e.g. -10 on a shared machine: the proxies, upstreams
# and load generators then win the CPU over other work, which cuts the
# noise), BENCH_OUT (target/bench), GRAYSHIFT_BIN (a grayshift binary to measure instead of the
# one built here), SKIP_BUILD (unset), LEGS ("plain shadow tls handshake resume h2c
# h2"; plain is the wrk/open-loop/RSS part above, for every proxy in
# PROXIES; shadow is shadow reads' client p99 against grayshift's, both at
# once, when PROXIES has grayshift-shadow1 or 10; the others compare
# grayshift with nginx), H2_CONNS (10),
# H2_STREAMS (10, concurrent streams per h2 connection), TLS_KEY (ec: a
# P-256 ECDSA certificate; rsa: RSA 2048).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOAD="$ROOT/benches/load"
OUT=${BENCH_OUT:-$ROOT/target/bench}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-50}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
UPSTREAM_CPU=${UPSTREAM_CPU:-1}
IDLE_CONNS=${IDLE_CONNS:-1000}
PROXIES=${PROXIES:-"grayshift nginx haproxy"}
NICE=${NICE:-0}
LEGS=${LEGS:-"plain shadow tls handshake resume h2c h2"}
H2_CONNS=${H2_CONNS:-10}
H2_STREAMS=${H2_STREAMS:-10}
TLS_KEY=${TLS_KEY:-ec}
has_leg() { [[ " $LEGS " == *" $1 "* ]]; }
TLS_LEGS=""
for leg in $LEGS; do
    case $leg in
        plain | shadow) ;;
        tls | handshake | resume | h2c | h2) TLS_LEGS+="$leg " ;;
        *) echo "[bench] error: unknown leg $leg" >&2; exit 1 ;;
    esac
done
# The TLS and h2 legs compare grayshift with nginx: whichever of the two
# PROXIES names.
H2_PROXIES=""
for proxy in grayshift nginx; do [[ " $PROXIES " == *" $proxy "* ]] && H2_PROXIES+="$proxy "; done
[ -n "$H2_PROXIES" ] || TLS_LEGS=""

TAG=bench
# shellcheck source=../benches/load/lib.sh
source "$LOAD/lib.sh"

# --- tools ------------------------------------------------------------------
missing=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v wrk >/dev/null || missing+=(wrk)
[ -z "$TLS_LEGS" ] || command -v h2load >/dev/null || missing+=(nghttp2-client)
[ -z "$TLS_LEGS" ] || command -v openssl >/dev/null || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing ${missing[*]}: install them (apt-get install ${missing[*]}) or run as root"
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for tool in python3 taskset cargo; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
[ "$(nproc)" -ge 2 ] || log "warning: only $(nproc) CPU; proxy and load generator will share it"

# --- build and processes -------------------------------------------------------
build_binaries
start_work

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
nginx_worker() { # master PID → the worker's PID (the one that proxies)
    local worker=""
    for _ in $(seq 50); do
        worker=$(pgrep -P "$1" | head -1 || true)
        [ -n "$worker" ] && break
        sleep 0.1
    done
    [ -n "$worker" ] || die "no nginx worker under $1"
    echo "$worker"
}

start_upstreams
log "upstreams: stable 127.0.0.1:$STABLE_PORT, new 127.0.0.1:$NEW_PORT (CPU $UPSTREAM_CPU)"

declare -A PORT PID MEASURE
for proxy in $PROXIES; do
    port=$(free_port)
    PORT[$proxy]=$port
    case $proxy in
        grayshift)
            render "$LOAD/grayshift.toml" "$WORK/grayshift.toml" DIR="$WORK" LISTEN="$port" ADMIN="$(free_port)" \
                STABLE="$STABLE_PORT" NEW="$NEW_PORT"
            GRAYSHIFT_LOG=warn "${PIN_PROXY[@]}" "$GRAYSHIFT" run --config "$WORK/grayshift.toml" \
                2>>"$WORK/grayshift.log" &
            PID[$proxy]=$!
            ;;
        grayshift-ledger)
            # The same grayshift with the exposure ledger on (file sink): its
            # row against plain grayshift's is the ledger's cost per request.
            render "$LOAD/grayshift.toml" "$WORK/grayshift-ledger.toml" DIR="$WORK" LISTEN="$port" ADMIN="$(free_port)" \
                STABLE="$STABLE_PORT" NEW="$NEW_PORT"
            sed -i "s|grayshift-state.json|grayshift-ledger-state.json|" "$WORK/grayshift-ledger.toml"
            printf '\n[ledger]\nfile = "%s/exposure.jsonl"\nflush = "5s"\n' "$WORK" >>"$WORK/grayshift-ledger.toml"
            GRAYSHIFT_LOG=warn "${PIN_PROXY[@]}" "$GRAYSHIFT" run --config "$WORK/grayshift-ledger.toml" \
                2>>"$WORK/grayshift-ledger.log" &
            PID[$proxy]=$!
            ;;
        grayshift-shadow1 | grayshift-shadow10)
            # The same grayshift with shadow reads at 1 % or 10 %: its CPU
            # per request includes the mirrored requests (and their
            # comparison); its fixed-rate p99 against plain grayshift's is
            # what a client feels (docs/src/performance.md, Shadow reads).
            render "$LOAD/grayshift.toml" "$WORK/$proxy.toml" DIR="$WORK" LISTEN="$port" ADMIN="$(free_port)" \
                STABLE="$STABLE_PORT" NEW="$NEW_PORT"
            sed -i "s|grayshift-state.json|$proxy-state.json|" "$WORK/$proxy.toml"
            printf '\n[shadow]\nsample = "%s%%"\n' "${proxy#grayshift-shadow}" >>"$WORK/$proxy.toml"
            GRAYSHIFT_LOG=warn "${PIN_PROXY[@]}" "$GRAYSHIFT" run --config "$WORK/$proxy.toml" 2>>"$WORK/$proxy.log" &
            PID[$proxy]=$!
            ;;
        nginx)
            render "$LOAD/proxy.nginx.conf" "$WORK/proxy-nginx.conf" DIR="$WORK" LISTEN="$port" \
                STABLE="$STABLE_PORT" NEW="$NEW_PORT"
            "${PIN_PROXY[@]}" nginx -p "$WORK" -c "$WORK/proxy-nginx.conf" 2>>"$WORK/proxy-nginx.log" &
            PID[$proxy]=$!
            ;;
        haproxy)
            render "$LOAD/haproxy.cfg" "$WORK/haproxy.cfg" LISTEN="$port" STABLE="$STABLE_PORT" NEW="$NEW_PORT"
            "${PIN_PROXY[@]}" haproxy -db -f "$WORK/haproxy.cfg" >>"$WORK/haproxy.log" 2>&1 &
            PID[$proxy]=$!
            ;;
        *) die "unknown proxy $proxy" ;;
    esac
    PIDS+=("${PID[$proxy]}")
    wait_port "$port" "$proxy"
    MEASURE[$proxy]=${PID[$proxy]}
    if [ "$proxy" = nginx ]; then
        # The worker does the proxying; the master only supervises.
        MEASURE[$proxy]=$(nginx_worker "${PID[$proxy]}")
    fi
    log "$proxy: 127.0.0.1:$port, pid ${MEASURE[$proxy]} (CPU $PROXY_CPU)"
done

# --- TLS and HTTP/2 legs: their own grayshift and nginx ----------------------------
# URL[leg:proxy] and LPID[leg:proxy]: where each leg sends its load, and
# whose CPU time it reads.
declare -A URL LPID
if [ -n "$TLS_LEGS" ]; then
    case $TLS_KEY in
        ec) key_args=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
        rsa) key_args=(-newkey rsa:2048) ;;
        *) die "TLS_KEY is ec or rsa, not $TLS_KEY" ;;
    esac
    openssl req -x509 "${key_args[@]}" -nodes -days 7 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>>"$WORK/openssl.log" || die "openssl req failed"
    for proxy in $H2_PROXIES; do
        case $proxy in
            grayshift)
                tls_port=$(free_port)
                render "$LOAD/grayshift.toml" "$WORK/grayshift-tls.toml" DIR="$WORK" LISTEN="$tls_port" \
                    ADMIN="$(free_port)" STABLE="$STABLE_PORT" NEW="$NEW_PORT"
                sed -i -e "s|grayshift-state.json|grayshift-tls-state.json|" \
                    -e "/^workers = 1/a tls = { cert = \"$WORK/tls.crt\", key = \"$WORK/tls.key\" }" \
                    "$WORK/grayshift-tls.toml"
                GRAYSHIFT_LOG=warn "${PIN_PROXY[@]}" "$GRAYSHIFT" run --config "$WORK/grayshift-tls.toml" \
                    2>>"$WORK/grayshift-tls.log" &
                tls_pid=$!
                PIDS+=("$tls_pid")
                wait_port "$tls_port" grayshift-tls
                h2c_url="http://127.0.0.1:${PORT[grayshift]}/" h2c_pid=${MEASURE[grayshift]}
                ;;
            nginx)
                tls_port=$(free_port) h2c_port=$(free_port)
                render "$LOAD/proxy-h2.nginx.conf" "$WORK/proxy-h2-nginx.conf" DIR="$WORK" TLS="$tls_port" \
                    H2C="$h2c_port" CERT="$WORK/tls.crt" KEY="$WORK/tls.key" STABLE="$STABLE_PORT" NEW="$NEW_PORT"
                "${PIN_PROXY[@]}" nginx -p "$WORK" -c "$WORK/proxy-h2-nginx.conf" 2>>"$WORK/proxy-h2-nginx.log" &
                PIDS+=($!)
                wait_port "$tls_port" nginx-tls
                wait_port "$h2c_port" nginx-h2c
                tls_pid=$(nginx_worker "${PIDS[-1]}")
                h2c_url="http://127.0.0.1:$h2c_port/" h2c_pid=$tls_pid
                ;;
        esac
        for leg in tls handshake resume h2; do
            URL[$leg:$proxy]="https://127.0.0.1:$tls_port/" LPID[$leg:$proxy]=$tls_pid
        done
        URL[h2c:$proxy]=$h2c_url LPID[h2c:$proxy]=$h2c_pid
        # What the handshake settled on, for the report.
        negotiated=$(openssl s_client -connect "127.0.0.1:$tls_port" -servername localhost </dev/null 2>/dev/null \
            | awk '/^New, / { sub(/^New, /, ""); c = $0 } /^Server Temp Key:/ { sub(/^Server Temp Key: /, ""); k = $0 }
                   END { print c ", key exchange " k }')
        log "$proxy (TLS, h2c): $tls_port, ${h2c_url#http://}, pid $tls_pid; $negotiated"
        echo "$proxy: ${negotiated:-?}" >>"$WORK/negotiated.txt"
    done
fi

mkdir -p "$OUT"
RAW="$OUT/raw.txt"
: >"$RAW"

wrk_run() { # port duration → RESULT line
    "${PIN_LOAD[@]}" wrk -t1 -c"$CONNS" -d"$2" -s "$LOAD/users.lua" --latency "http://127.0.0.1:$1/" \
        | grep '^RESULT' || die "wrk failed against port $1"
}

# One closed-loop measurement as a raw line: RESULT (requests=… duration_us=…
# p50_us=… p99_us=… status_errors=… socket_errors=…, as users.lua prints
# it) and the proxy's CPU ticks over the run.
record() { # "fields…" result user_ticks sys_ticks
    awk -v head="$1" -v r="$2" -v user="$3" -v sys="$4" -v hz="$CLK_TCK" '
        BEGIN {
            n = split(r, kv, /[ =]/)
            for (i = 2; i < n; i += 2) v[kv[i]] = kv[i + 1]
            rps = v["requests"] / (v["duration_us"] / 1e6)
            per = 1e6 / hz / v["requests"]
            p50 = ("p50_us" in v) ? v["p50_us"] : "na"
            p99 = ("p99_us" in v) ? v["p99_us"] : "na"
            extra = ("resumed" in v) ? sprintf(" resumed=%d", v["resumed"]) : ""
            printf "%s rps=%.0f p50_us=%s p99_us=%s status_errors=%d socket_errors=%d requests=%d cpu_ticks=%d cpu_us_per_req=%.3f user_us_per_req=%.3f sys_us_per_req=%.3f%s\n",
                head, rps, p50, p99, v["status_errors"], v["socket_errors"], v["requests"], user + sys, (user + sys) * per, user * per, sys * per, extra
        }'
}

measure() { # pid "fields…" command… → appends the raw line to $RAW
    local pid=$1 head=$2 before
    shift 2
    before=$(cpu_ticks "$pid")
    record_since "$pid" "$before" "$head" "$("$@")"
}

record_since() { # pid "utime stime" before "fields…" result → appends the raw line to $RAW
    local u0 s0 u1 s1 line
    read -r u0 s0 <<<"$2"
    read -r u1 s1 < <(cpu_ticks "$1")
    line=$(record "$3" "$4" $((u1 - u0)) $((s1 - s0)))
    echo "$line" >>"$RAW"
    log "$line"
}

# --- closed loop: wrk ------------------------------------------------------------
if has_leg plain; then
    for round in $(seq "$ROUNDS"); do
        for proxy in $PROXIES; do
            port=${PORT[$proxy]}
            wrk_run "$port" "$WARMUP" >/dev/null
            measure "${MEASURE[$proxy]}" "kind=closed leg=plain round=$round proxy=$proxy conns=$CONNS" \
                wrk_run "$port" "$DURATION"
        done
    done
fi

# --- the ledger's cost: both at once ---------------------------------------------
# One after the other (above), the ledger's per cent or two drowns in a
# shared host's swings from one run to the next (±15 % seen). Run at the
# same time, each under its own wrk and both on PROXY_CPU, every moment's
# noise hits both alike; which one starts first alternates by round.
if has_leg plain && [[ " $PROXIES " == *" grayshift "* && " $PROXIES " == *" grayshift-ledger "* ]]; then
    declare -A TICKS
    for round in $(seq "$ROUNDS"); do
        order="grayshift grayshift-ledger"
        [ $((round % 2)) = 0 ] && order="grayshift-ledger grayshift"
        for proxy in $order; do TICKS[$proxy]=$(cpu_ticks "${MEASURE[$proxy]}"); done
        loads=()
        for proxy in $order; do
            wrk_run "${PORT[$proxy]}" "$DURATION" >"$WORK/paired-$proxy.txt" &
            loads+=($!)
        done
        wait "${loads[@]}"
        for proxy in $order; do
            record_since "${MEASURE[$proxy]}" "${TICKS[$proxy]}" \
                "kind=paired leg=plain round=$round proxy=$proxy conns=$CONNS" "$(cat "$WORK/paired-$proxy.txt")"
        done
    done
fi

# --- TLS and HTTP/2 legs -----------------------------------------------------------
# A leg's load against one proxy for a duration, printing a RESULT line.
leg_run() { # leg proxy duration
    local leg=$1 url=${URL[$1:$2]} secs=${3%s} out
    case $leg in
        tls)
            "${PIN_LOAD[@]}" wrk -t1 -c"$CONNS" -d"$3" -s "$LOAD/users.lua" --latency "$url" \
                | grep '^RESULT' || die "wrk failed against $url"
            ;;
        handshake)
            USERS_CLOSE=1 "${PIN_LOAD[@]}" wrk -t1 -c"$CONNS" -d"$3" -s "$LOAD/users.lua" --latency "$url" \
                | grep '^RESULT' || die "wrk failed against $url"
            ;;
        resume)
            # "N connections in T real seconds"; one character per
            # connection on the line above: r resumed, * full handshake.
            local hostport=${url#https://}
            out=$("${PIN_LOAD[@]}" openssl s_time -connect "${hostport%/}" -www / -reuse -time "$secs" 2>&1) \
                || die "openssl s_time failed against $url: $out"
            awk '/connections in .* real seconds/ { n = $1; t = $4 }
                 /^[r*]+$/ { resumed += gsub(/r/, "r"); full += gsub(/[*]/, "*") }
                 END { if (!n) exit 1
                       printf "RESULT requests=%d duration_us=%d status_errors=0 socket_errors=0 resumed=%d\n", n, t * 1e6, resumed }' \
                <<<"$out" || die "no result from openssl s_time against $url: $out"
            ;;
        h2 | h2c)
            # h2load prints no percentiles; its per-request log has them.
            local log_file="$WORK/h2load.log"
            out=$("${PIN_LOAD[@]}" h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D "$secs" -H "X-User-ID: user-42" \
                --log-file="$log_file" "$url" 2>&1) || die "h2load failed against $url: $out"
            read -r p50 p99 < <(cut -f3 "$log_file" | sort -n \
                | awk 'function at(q, i) { i = int(NR * q + 0.5); if (i < 1) i = 1; return a[i] }
                       { a[NR] = $1 } END { if (NR) print at(0.5), at(0.99); else print 0, 0 }')
            awk -v p50="$p50" -v p99="$p99" '
                /^finished in/ { d = $3; sub(/,$/, "", d); us = d + 0; if (d ~ /ms$/) us *= 1e3; else us *= 1e6 }
                /^requests:/ { done = $6; failed = $10; errored = $12; timeout = $14 }
                /^status codes:/ { bad = $9 + $11 }
                END { if (!done) exit 1
                      printf "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d status_errors=%d socket_errors=%d\n", done, us, p50, p99, bad, errored + timeout }' \
                <<<"$out" || die "no result from h2load against $url: $out"
            ;;
    esac
}

if [ -n "$TLS_LEGS" ]; then
    for round in $(seq "$ROUNDS"); do
        for leg in $TLS_LEGS; do
            conns=$CONNS
            case $leg in h2 | h2c) conns="$H2_CONNS streams=$H2_STREAMS" ;; resume) conns=1 ;; esac
            for proxy in $H2_PROXIES; do
                leg_run "$leg" "$proxy" "$WARMUP" >/dev/null
                measure "${LPID[$leg:$proxy]}" "kind=closed leg=$leg round=$round proxy=$proxy conns=$conns" \
                    leg_run "$leg" "$proxy" "$DURATION"
            done
        done
    done
fi

if has_leg plain; then
    # --- open loop at a fixed rate ---------------------------------------------------
    if [ -z "${RATE:-}" ]; then
        RATE=$(awk '/kind=closed/ && /leg=plain/ && /proxy=nginx / { for (i = 1; i <= NF; i++) if ($i ~ /^rps=/) { sub("rps=", "", $i); print $i } }' "$RAW" \
            | sort -n | awk '{ a[NR] = $1 } END { if (NR) printf "%d\n", a[int((NR + 1) / 2)] / 2; else print 10000 }')
    fi
    log "fixed-rate latency at $RATE requests/s"
    open_secs=${DURATION%s}
    warm_secs=${WARMUP%s}
    for round in $(seq "$ROUNDS"); do
        for target in direct $PROXIES; do
            port=${PORT[$target]:-$STABLE_PORT}
            result=$("${PIN_LOAD[@]}" "$OPENLOOP" --addr "127.0.0.1:$port" --rate "$RATE" --connections "$CONNS" \
                --duration "$open_secs" --warmup "$warm_secs")
            line="kind=open round=$round target=$target $result"
            echo "$line" >>"$RAW"
            log "$line"
        done
    done

    # --- memory with idle keep-alive client connections ------------------------------
    for proxy in $PROXIES; do
        pid=${MEASURE[$proxy]}
        before=$(rss_kib "$pid")
        ready="$WORK/idle-$proxy.ready"
        "${PIN_LOAD[@]}" python3 "$LOAD/idle_conns.py" "127.0.0.1:${PORT[$proxy]}" "$IDLE_CONNS" "$ready" 120 &
        idle_pid=$!
        PIDS+=("$idle_pid")
        for _ in $(seq 600); do [ -s "$ready" ] && break; sleep 0.1; done
        [ -s "$ready" ] || die "idle connections to $proxy not ready"
        sleep 1
        with=$(rss_kib "$pid")
        open=$(sed -n 's/.*open=\([0-9]*\).*/\1/p' "$ready")
        kill -TERM "$idle_pid" 2>/dev/null || true
        wait "$idle_pid" 2>/dev/null || true
        line="kind=rss leg=plain proxy=$proxy before_kib=$before with_kib=$with open=$open"
        echo "$line" >>"$RAW"
        log "$line"
    done
fi

# --- shadow reads' client p99: both at once (leg "shadow") ---------------------------
# One after the other, a shared host's swings move a p99 by more than the
# 5 % the target allows. Here grayshift and a grayshift with shadow reads
# each get their own open-loop generator at half of RATE at the same time
# (together the rate one proxy gets above), on the same CPUs, so every
# moment's noise hits both; which one starts first alternates by round. The
# report gives the median of the per-round p99 ratios.
if has_leg shadow; then
    PAIR_RATE=$((${RATE:-10000} / 2))
    open_secs=${DURATION%s} warm_secs=${WARMUP%s}
    log "shadow reads, both at once: $PAIR_RATE requests/s each"
    for shadow in grayshift-shadow1 grayshift-shadow10; do
        [[ " $PROXIES " == *" grayshift "* && " $PROXIES " == *" $shadow "* ]] || continue
        for round in $(seq "$ROUNDS"); do
            order="grayshift $shadow"
            [ $((round % 2)) = 0 ] && order="$shadow grayshift"
            loads=()
            for target in $order; do
                "${PIN_LOAD[@]}" "$OPENLOOP" --addr "127.0.0.1:${PORT[$target]}" --rate "$PAIR_RATE" \
                    --connections "$CONNS" --duration "$open_secs" --warmup "$warm_secs" >"$WORK/open-paired-$target.txt" &
                loads+=($!)
            done
            wait "${loads[@]}"
            for target in $order; do
                line="kind=open-paired pair=$shadow round=$round target=$target $(cat "$WORK/open-paired-$target.txt")"
                echo "$line" >>"$RAW"
                log "$line"
            done
        done
    done
fi

# --- memory with idle TLS keep-alive client connections ---------------------------
if [ -n "$TLS_LEGS" ]; then
    for proxy in $H2_PROXIES; do
        pid=${LPID[tls:$proxy]} hostport=${URL[tls:$proxy]#https://}
        before=$(rss_kib "$pid")
        ready="$WORK/idle-tls-$proxy.ready"
        "${PIN_LOAD[@]}" python3 "$LOAD/idle_conns.py" --tls "${hostport%/}" "$IDLE_CONNS" "$ready" 120 &
        idle_pid=$!
        PIDS+=("$idle_pid")
        for _ in $(seq 1200); do [ -s "$ready" ] && break; sleep 0.1; done
        [ -s "$ready" ] || die "idle TLS connections to $proxy not ready"
        sleep 1
        with=$(rss_kib "$pid")
        open=$(sed -n 's/.*open=\([0-9]*\).*/\1/p' "$ready")
        kill -TERM "$idle_pid" 2>/dev/null || true
        wait "$idle_pid" 2>/dev/null || true
        line="kind=rss leg=tls proxy=$proxy before_kib=$before with_kib=$with open=$open"
        echo "$line" >>"$RAW"
        log "$line"
    done
fi

# --- report ------------------------------------------------------------------------
{
    echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), Linux $(uname -r);"
    echo "proxy on CPU $PROXY_CPU, wrk and the open-loop generator on CPU $LOAD_CPU, upstreams (2 × nginx, 1 worker, fixed 200) on CPU $UPSTREAM_CPU; nice $NICE."
    echo "grayshift ${GRAYSHIFT_BIN:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+dirty')},"\
        "$(nginx -v 2>&1 | sed 's/.*: //'), HAProxy $(haproxy -v | awk 'NR==1 {print $3}'), $(wrk -v 2>&1 | awk 'NR==1 {print $1, $2}'); $(date -u +%Y-%m-%dT%H:%MZ)."
    [ ! -s "$WORK/negotiated.txt" ] || echo "TLS ($TLS_KEY certificate, made by openssl for the run): $(paste -sd';' "$WORK/negotiated.txt" | sed 's/;/; /g')."
    echo "CPU per request = Δ(utime+stime) of the proxy process (all threads; nginx: its worker) from /proc/PID/stat over the wrk run ÷ requests; user + kernel: utime and stime apart (medians each, so they need not add up exactly)."
} >"$WORK/machine.txt"
python3 "$LOAD/report.py" "$RAW" "$WORK/machine.txt" >"$OUT/results.md"
echo
cat "$OUT/results.md"
log "written to $OUT/results.md (raw: $RAW)"
