#!/usr/bin/env bash
# A/B two grayshift binaries on scripts/bench.sh's TLS legs, both serving
# the same certificate at once, alternating A B B A … each round so machine
# noise hits both alike. Made for ring vs aws-lc-rs (benches/runs/2026-12-02-rustls-ring-vs-aws-lc-rs.md);
# works for any two builds that differ in their TLS side.
#
#     benches/load/tls_ab.sh A_BINARY B_BINARY [ROUNDS]
#
# Legs (LEGS, default "tls handshake resume h2"), as in scripts/bench.sh:
#   tls        keep-alive TLS: wrk -c$CONNS https://
#   handshake  a full TLS handshake per request: wrk -c$CONNS, Connection: close
#   resume     a resumed TLS session per connection: openssl s_time -reuse
#   h2         h2load -c$H2_CONNS -m$H2_STREAMS https:// (h2 by ALPN)
# Environment: DURATION (5s), WARMUP (1s), CONNS (50), H2_CONNS (10),
# H2_STREAMS (10), TLS_KEY (ec: P-256 ECDSA; rsa: RSA 2048), PROXY_CPU (0),
# LOAD_CPU (1), UPSTREAM_CPU (1), NICE (0), OUT (raw lines; default a temp
# file). Needs nginx, wrk, h2load, openssl (scripts/bench.sh installs them).
set -euo pipefail
TAG=tls_ab
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
A=$(realpath "$1") B=$(realpath "$2") ROUNDS=${3:-4}
DURATION=${DURATION:-5s} WARMUP=${WARMUP:-1s} CONNS=${CONNS:-50}
H2_CONNS=${H2_CONNS:-10} H2_STREAMS=${H2_STREAMS:-10} TLS_KEY=${TLS_KEY:-ec}
LEGS=${LEGS:-"tls handshake resume h2"}
start_work
OUT=${OUT:-$WORK/raw.txt}
start_upstreams

case $TLS_KEY in
    ec) key_args=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
    rsa) key_args=(-newkey rsa:2048) ;;
    *) die "TLS_KEY is ec or rsa, not $TLS_KEY" ;;
esac
openssl req -x509 "${key_args[@]}" -nodes -days 7 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>>"$WORK/openssl.log" || die "openssl req failed"

declare -A PORT PID
for side in A B; do
    bin=$A; [ $side = B ] && bin=$B
    PORT[$side]=$(free_port)
    mkdir -p "$WORK/$side"
    render "$LOAD/grayshift.toml" "$WORK/$side/g.toml" DIR="$WORK/$side" LISTEN="${PORT[$side]}" \
        ADMIN="$(free_port)" STABLE="$STABLE_PORT" NEW="$NEW_PORT"
    sed -i "/^workers = 1/a tls = { cert = \"$WORK/tls.crt\", key = \"$WORK/tls.key\" }" "$WORK/$side/g.toml"
    GRAYSHIFT_LOG=warn "${PIN_PROXY[@]}" "$bin" run --config "$WORK/$side/g.toml" 2>>"$WORK/$side/log" &
    PID[$side]=$!
    PIDS+=($!)
    wait_port "${PORT[$side]}"
    negotiated=$(openssl s_client -connect "127.0.0.1:${PORT[$side]}" -servername localhost </dev/null 2>/dev/null \
        | awk '/^New, / { sub(/^New, /, ""); c = $0 } /^Server Temp Key:/ { sub(/^Server Temp Key: /, ""); k = $0 }
               END { print c ", key exchange " k }')
    echo "# $side $bin: $TLS_KEY certificate; $negotiated" | tee -a "$OUT"
done

leg_run() { # leg side duration → RESULT line
    local leg=$1 url="https://127.0.0.1:${PORT[$2]}/" secs=${3%s} out
    case $leg in
        tls)
            "${PIN_LOAD[@]}" wrk -t1 -c"$CONNS" -d"$3" -s "$LOAD/users.lua" --latency "$url" | grep '^RESULT' ;;
        handshake)
            USERS_CLOSE=1 "${PIN_LOAD[@]}" wrk -t1 -c"$CONNS" -d"$3" -s "$LOAD/users.lua" --latency "$url" | grep '^RESULT' ;;
        resume)
            out=$("${PIN_LOAD[@]}" openssl s_time -connect "127.0.0.1:${PORT[$2]}" -www / -reuse -time "$secs" 2>&1) \
                || die "openssl s_time failed: $out"
            awk '/connections in .* real seconds/ { n = $1; t = $4 }
                 /^[r*]+$/ { resumed += gsub(/r/, "r") }
                 END { if (!n) exit 1
                       printf "RESULT requests=%d duration_us=%d p50_us=0 p99_us=0 status_errors=0 socket_errors=0 resumed=%d\n", n, t * 1e6, resumed }' \
                <<<"$out" ;;
        h2)
            local log_file="$WORK/h2load.log"
            out=$("${PIN_LOAD[@]}" h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D "$secs" -H "X-User-ID: user-42" \
                --log-file="$log_file" "$url" 2>&1) || die "h2load failed: $out"
            read -r p50 p99 < <(cut -f3 "$log_file" | sort -n \
                | awk 'function at(q, i) { i = int(NR * q + 0.5); if (i < 1) i = 1; return a[i] }
                       { a[NR] = $1 } END { if (NR) print at(0.5), at(0.99); else print 0, 0 }')
            awk -v p50="$p50" -v p99="$p99" '
                /^finished in/ { d = $3; sub(/,$/, "", d); us = d + 0; if (d ~ /ms$/) us *= 1e3; else us *= 1e6 }
                /^requests:/ { done = $6; errored = $12; timeout = $14 }
                /^status codes:/ { bad = $9 + $11 }
                END { if (!done) exit 1
                      printf "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d status_errors=%d socket_errors=%d\n", done, us, p50, p99, bad, errored + timeout }' \
                <<<"$out" ;;
        *) die "unknown leg $leg" ;;
    esac
}

for leg in $LEGS; do for side in A B; do leg_run "$leg" "$side" "$WARMUP" >/dev/null; done; done
for round in $(seq "$ROUNDS"); do
    order="A B"; [ $((round % 2)) = 0 ] && order="B A"
    for leg in $LEGS; do
        for side in $order; do
            leg_run "$leg" "$side" "$WARMUP" >/dev/null
            read -r u0 s0 < <(cpu_ticks "${PID[$side]}")
            r=$(leg_run "$leg" "$side" "$DURATION") || die "$leg against $side failed"
            read -r u1 s1 < <(cpu_ticks "${PID[$side]}")
            echo "$side leg=$leg round=$round $r user=$((u1 - u0)) sys=$((s1 - s0))" | awk -v hz="$CLK_TCK" '{
                for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
                per = 1e6 / hz / v["requests"]
                printf "%s leg=%s round=%d rps=%.0f cpu_us_per_req=%.2f user_us=%.2f sys_us=%.2f p50_us=%d p99_us=%d errors=%d requests=%d%s\n",
                    $1, v["leg"], v["round"], v["requests"] / v["duration_us"] * 1e6, (v["user"] + v["sys"]) * per,
                    v["user"] * per, v["sys"] * per, v["p50_us"], v["p99_us"], v["status_errors"] + v["socket_errors"],
                    v["requests"], ("resumed" in v) ? " resumed=" v["resumed"] : "" }' | tee -a "$OUT"
        done
    done
done
echo "--- per leg: medians over the rounds; B/A = median of the per-round CPU ratios"
python3 - "$OUT" <<'PY'
import statistics as st, sys
rows = []
for line in open(sys.argv[1]):
    if line.startswith(("A ", "B ")):
        f = line.split()
        rows.append({"side": f[0], **dict(kv.split("=") for kv in f[1:])})
med = lambda rs, k: st.median(float(r[k]) for r in rs)
print("| leg | side | CPU µs/req | user | kernel | req/s | p99 | errors | CPU µs/req per round |")
print("|---|---|---:|---:|---:|---:|---:|---:|---|")
for leg in dict.fromkeys(r["leg"] for r in rows):
    by = {s: sorted((r for r in rows if r["leg"] == leg and r["side"] == s), key=lambda r: int(r["round"])) for s in "AB"}
    for s in "AB":
        rs = by[s]
        p99 = "—" if leg == "resume" else f"{med(rs, 'p99_us') / 1000:.2f} ms"
        print(f"| {leg} | {s} | {med(rs, 'cpu_us_per_req'):.1f} | {med(rs, 'user_us'):.1f} | {med(rs, 'sys_us'):.1f} | "
              f"{med(rs, 'rps'):.0f} | {p99} | {sum(int(r['errors']) for r in rs)} | {', '.join(r['cpu_us_per_req'] for r in rs)} |")
    ratios = [float(b["cpu_us_per_req"]) / float(a["cpu_us_per_req"]) for a, b in zip(by["A"], by["B"])]
    print(f"| {leg} | **B/A** | **{st.median(ratios):.3f}** | | | | | | {', '.join(f'{x:.2f}' for x in ratios)} (B lower in {sum(x < 1 for x in ratios)} of {len(ratios)}) |")
PY
