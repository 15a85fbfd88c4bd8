#!/usr/bin/env bash
# Slowloris check (issue: edge hardening): N connections that send a partial
# request head and then drip, against a release grayshift with
# header_read_timeout = 5s. Reports grayshift's RSS before, with all N open,
# and after the timeout closed them (twice, to show the memory is reused);
# checks that a normal request is served while they hang and that they were
# all closed by the timeout.
#
#   scripts/slowloris.sh [N]      # default 2000; target: <= 35 MiB with N open
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
ulimit -n 65536 2>/dev/null || ulimit -n 8192
BIN=${GRAYSHIFT_BIN:-target/release/grayshift}
[ -x "$BIN" ] || cargo build --release --quiet
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up=$(port); proxy=$(port); admin=$(port)
"$BIN" upstream --name stable --listen 127.0.0.1:$up >/dev/null &
cat > "$work/g.toml" <<TOML
[server]
listen = "127.0.0.1:$proxy"
header_read_timeout = "5s"
[admin]
listen = "127.0.0.1:$admin"
[split]
percent = 0
group = "g"
[pools.stable]
endpoints = ["127.0.0.1:$up"]
[pools.new]
endpoints = ["127.0.0.1:$up"]
[state]
file = "$work/state.json"
TOML
GRAYSHIFT_LOG=error "$BIN" run --config "$work/g.toml" &
pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print int($2/1024)}' /proc/$pid/status; }
curl -sf "http://127.0.0.1:$proxy/" >/dev/null
before=$(rss)
# Two rounds: the second shows whether memory freed by the first is reused
# (glibc keeps freed heap mapped, so RSS does not drop, but must not grow).
for round in $(seq "${ROUNDS:-2}"); do
echo "round $round"
python3 - "$proxy" "$N" "$pid" <<'PY'
import socket, sys, time
port, n, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rss = lambda: int(next(l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")).split()[1]) // 1024
conns = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nX-Drip: ")
    conns.append(s)
time.sleep(0.5)
print(f"open={n} rss_open_mib={rss()}")
t = time.time()
c = socket.create_connection(("127.0.0.1", port)); c.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
ok = c.recv(100).startswith(b"HTTP/1.1 200")
print(f"normal_request_ok={ok} ms={int((time.time()-t)*1000)}")
closed = answered_408 = 0
deadline = time.time() + 15
for s in conns:
    s.settimeout(max(0.1, deadline - time.time()))
    got = b""
    try:
        while chunk := s.recv(4096):
            got += chunk
        closed += 1
    except socket.timeout:
        pass
    except ConnectionResetError:
        closed += 1
    answered_408 += got.startswith(b"HTTP/1.1 408")
print(f"closed_by_timeout={closed}/{n} answered_408={answered_408}")
for s in conns: s.close()
sys.exit(0 if ok and closed == n else 1)
PY
sleep 1
echo "rss_before_mib=$before rss_after_round_${round}_mib=$(rss)"
done
