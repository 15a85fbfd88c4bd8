#!/usr/bin/env bash
# The test command (README): makes sure what the tests need is there, then
# runs the whole suite. On a fresh Debian machine it installs what is
# missing (as root: etcd, Prometheus, cargo-nextest, mdbook, Werkzeug through
# scripts/deps.sh, PostgreSQL here) and starts a throwaway PostgreSQL when
# none answers. The fleet-mode tests start their own etcd servers (on free
# loopback ports) from $GRAYSHIFT_TEST_ETCD.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -E 'test(l3)'   # extra arguments go to cargo nextest
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
log() { printf 'test.sh: %s\n' "$*" >&2; }

# etcd, Prometheus, cargo-nextest (and the apt_install helper used
# below for PostgreSQL): scripts/deps.sh, which .ci/run also runs first.
. scripts/deps.sh

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# --- PostgreSQL (the `postgres` signal tests) --------------------------------
pg_cleanup() { :; }
if [ -z "${GRAYSHIFT_TEST_PG_URL:-}" ]; then
    if command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432 -U postgres; then
        export GRAYSHIFT_TEST_PG_URL="postgresql://postgres@127.0.0.1:5432/postgres"
        log "using the PostgreSQL on 127.0.0.1:5432"
    else
        initdb=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n1 || true)
        if [ -z "$initdb" ]; then
            log "installing PostgreSQL"
            apt_install postgresql
            initdb=$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n1)
        fi
        bin=$(dirname "$initdb")
        port=$(free_port)
        pgdir=$(mktemp -d /tmp/grayshift-pg.XXXXXX)
        run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
        [ "$(id -u)" = 0 ] && chown postgres "$pgdir"
        log "starting a throwaway PostgreSQL on 127.0.0.1:$port ($pgdir)"
        run_pg "$bin/initdb" -D "$pgdir/data" -U postgres -A trust >/dev/null
        run_pg "$bin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
            -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$pgdir" start >/dev/null
        pg_cleanup() { run_pg "$bin/pg_ctl" -D "$pgdir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$pgdir"; }
        export GRAYSHIFT_TEST_PG_URL="postgresql://postgres@127.0.0.1:$port/postgres"
    fi
fi
trap 'pg_cleanup' EXIT
# The TLS tests (tests/pg_tls.rs) start a PostgreSQL of their own with
# initdb, even where one already answers on 5432.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    log "installing PostgreSQL's server binaries (initdb)"
    apt_install postgresql
fi

# --- Prometheus and promtool (the `prometheus` signal, /metrics lint) --------
# (installed by scripts/deps.sh)
export GRAYSHIFT_TEST_PROMETHEUS=${GRAYSHIFT_TEST_PROMETHEUS:-$(command -v prometheus)}
export GRAYSHIFT_TEST_PROMTOOL=${GRAYSHIFT_TEST_PROMTOOL:-$(command -v promtool)}

# --- Chromium and chromedriver (the operator console's browser tests) --------
if [ -z "${GRAYSHIFT_TEST_CHROMEDRIVER:-}" ] && ! command -v chromedriver >/dev/null; then
    log "installing chromium and chromium-driver"
    apt_install chromium chromium-driver fonts-liberation
fi

# --- etcd (fleet mode) ---------------------------------------------------------
# Debian's etcd-server and etcd-client (installed by scripts/deps.sh). The
# tests start and stop their own servers; nothing listens on 2379 for them.
export GRAYSHIFT_TEST_ETCD=${GRAYSHIFT_TEST_ETCD:-$(command -v etcd)}
export GRAYSHIFT_TEST_ETCDCTL=${GRAYSHIFT_TEST_ETCDCTL:-$(command -v etcdctl)}

# --- mdBook (tests/docs.rs builds the book under docs/) ----------------------
# (installed by scripts/deps.sh)
export GRAYSHIFT_TEST_MDBOOK=${GRAYSHIFT_TEST_MDBOOK:-$(command -v mdbook)}

# --- The suite ----------------------------------------------------------------
cargo nextest run --no-fail-fast "$@"

# --- Deployment artefacts (manifests, alert rules, dashboard) -----------------
if [ -x scripts/check-deploy.sh ] && [ $# -eq 0 ]; then
    bash scripts/check-deploy.sh
fi

# --- Fuzz targets still build (they are run by scripts/fuzz.sh, not here) -----
# A refactor once left one calling a function that no longer existed.
if [ $# -eq 0 ]; then
    log "checking that the fuzz targets compile"
    cargo check --quiet --manifest-path fuzz/Cargo.toml --bins
fi
