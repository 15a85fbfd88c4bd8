# Sourced by the load scripts (scripts/bench.sh, scripts/soak.sh and
# benches/load/*.sh), which set TAG (their name in log lines) first: what
# each of them needs to run processes side by side on loopback.
#
#   log, die               "[TAG] …" on stderr; die exits 1
#   start_work             WORK, a temp dir, and PIDS: on exit every PID in
#                          PIDS is stopped (TERM, then KILL after 5 s) and
#                          WORK removed (KEEP_WORK=1 keeps it)
#   free_port              a free loopback port
#   wait_port PORT NAME    until PORT accepts (WAIT_SECS, default 10)
#   render TPL OUT k=v...  TPL with every @k@ replaced by v
#   PIN_PROXY PIN_LOAD PIN_UPSTREAM
#                          command prefixes: pinned to PROXY_CPU (0),
#                          LOAD_CPU (1), UPSTREAM_CPU (1) at priority NICE (0);
#                          for simple commands only, so `$!` is the
#                          program's own PID (nice and taskset exec it)
#   cpu_ticks PID          "utime stime" of PID, all threads, in CLK_TCK ticks
#   start_upstreams        two nginx upstreams answering a fixed 200
#                          (upstream.nginx.conf): STABLE_PORT, NEW_PORT
#   build_binaries         the release grayshift and the open-loop generator
#                          unless SKIP_BUILD is set: GRAYSHIFT (GRAYSHIFT_BIN
#                          wins) and OPENLOOP
LOAD=${LOAD:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
ROOT=${ROOT:-$(cd "$LOAD/../.." && pwd)}
export PATH="$PATH:/usr/sbin:/sbin"

log() { printf '[%s] %s\n' "$TAG" "$*" >&2; }
die() { log "error: $*"; exit 1; }

start_work() {
    WORK=$(mktemp -d "/tmp/grayshift-$TAG.XXXXXX")
    PIDS=()
    trap stop_work EXIT
    trap 'exit 130' INT TERM
}

stop_work() {
    local status=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [ -n "${KEEP_WORK:-}" ]; then
        log "work dir kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # port name
    for _ in $(seq $((${WAIT_SECS:-10} * 10))); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "${2:-a server} did not listen on port $1 (KEEP_WORK=1 keeps the logs)"
}

render() { # template output key=value...
    local template=$1 output=$2
    shift 2
    local args=()
    for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
    sed "${args[@]}" "$template" >"$output"
}

PIN_PROXY=(nice -n "${NICE:-0}" taskset -c "${PROXY_CPU:-0}")
PIN_LOAD=(nice -n "${NICE:-0}" taskset -c "${LOAD_CPU:-1}")
PIN_UPSTREAM=(nice -n "${NICE:-0}" taskset -c "${UPSTREAM_CPU:-1}")

cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12, $13}'; }
CLK_TCK=$(getconf CLK_TCK)

start_upstreams() {
    local name port
    STABLE_PORT=$(free_port)
    NEW_PORT=$(free_port)
    for name in stable new; do
        port=$STABLE_PORT; [ "$name" = new ] && port=$NEW_PORT
        render "$LOAD/upstream.nginx.conf" "$WORK/upstream-$name.conf" NAME="$name" PORT="$port" DIR="$WORK"
        "${PIN_UPSTREAM[@]}" nginx -p "$WORK" -c "$WORK/upstream-$name.conf" 2>>"$WORK/upstream-$name.log" &
        PIDS+=($!)
        wait_port "$port" "upstream $name"
    done
}

build_binaries() {
    if [ -z "${SKIP_BUILD:-}" ]; then
        log "building grayshift and the open-loop generator (release)"
        (cd "$ROOT" && cargo build --release --quiet --bin grayshift --example openloop)
    fi
    local target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
    GRAYSHIFT=${GRAYSHIFT_BIN:-$target_dir/release/grayshift}
    OPENLOOP="$target_dir/release/examples/openloop"
    [ -x "$GRAYSHIFT" ] && [ -x "$OPENLOOP" ] || die "release binaries not found in $target_dir/release"
}
