#!/usr/bin/env bash
# scripts/deps.sh: installs what testing grayshift needs, when it is missing
# (Debian/Ubuntu, as root; otherwise it names the packages and stops).
# Idempotent and quick when everything is there. Building needs nothing from
# here: Rust and a C compiler are enough (no protoc: the etcd client's gRPC
# code is committed under vendor/etcd-client, and tests/etcd_generated.rs
# checks it with the protoc inside the protoc-bin-vendored crate).
#
#   bash scripts/deps.sh      # .ci/run's first step
#   . scripts/deps.sh         # scripts/test.sh sources it (and reuses apt_install)
#
#   etcd, etcdctl              etcd-server, etcd-client: the fleet-mode tests start
#                              their own etcd on free loopback ports
#   prometheus, promtool       prometheus: the `prometheus` signal tests, /metrics lint
#   cargo-nextest              the test runner (cargo install)
#   mdbook                     builds the book under docs/ (cargo install, pinned:
#                              tests/docs.rs builds it and checks its links)
#   python3, Werkzeug 3.1.8    tests/paths.rs runs a Werkzeug app as the upstream
#                              that decodes %2F and does not resolve `..`, as
#                              Flask apps do (pip, pinned; python3-pip from apt)
#   openfeature-sdk 0.10.0,    tests/flags.rs evaluates the release flag with the
#   openfeature-provider-ofrep real SDKs a worker uses (pip, pinned)
#   0.3.0, UnleashClient 6.9.1
#   node, npm; tests/flags_js  the OpenFeature JavaScript SDK and its OFREP provider:
#                              `npm ci` from the committed package-lock.json
#
# PostgreSQL is handled by scripts/test.sh: it uses a running server when one
# answers and only installs Debian's postgresql otherwise.
#
# Packages installed here never start their daemons (etcd-server and
# prometheus would otherwise take ports 2379 and 9090): a policy-rc.d that
# refuses service starts is in place for the duration of the install.

MDBOOK_VERSION=0.4.52

deps_log() { printf 'deps.sh: %s\n' "$*" >&2; }

# apt_install PKG...: apt-get install, without recommends and without starting
# services. Exits when not root.
apt_install() {
    if [ "$(id -u)" != 0 ]; then
        deps_log "missing $* and not root: install it (apt-get install $*) and rerun"
        exit 1
    fi
    command -v apt-get >/dev/null || { deps_log "missing $* and no apt-get to install it with"; exit 1; }
    local policy=/usr/sbin/policy-rc.d added_policy=0 rc=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added_policy=1
    fi
    if [ -z "${APT_UPDATED:-}" ]; then
        apt-get update -qq >/dev/null || rc=$?
        APT_UPDATED=1
    fi
    if [ "$rc" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null || rc=$?
    fi
    if [ "$added_policy" = 1 ]; then rm -f "$policy"; fi
    if [ "$rc" != 0 ]; then
        deps_log "apt-get install $* failed (exit $rc)"
        exit 1
    fi
}

deps_main() {
    local want=()
    command -v etcd >/dev/null || want+=(etcd-server)
    command -v etcdctl >/dev/null || want+=(etcd-client)
    if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
        want+=(prometheus)
    fi
    command -v python3 >/dev/null || want+=(python3)
    if ! python3 -c 'import werkzeug' 2>/dev/null && ! python3 -m pip --version >/dev/null 2>&1; then
        want+=(python3-pip)
    fi
    if [ ${#want[@]} -gt 0 ]; then
        deps_log "installing ${want[*]}"
        apt_install "${want[@]}"
    fi
    if ! python3 -c 'import werkzeug' 2>/dev/null; then
        deps_log "installing Werkzeug 3.1.8"
        # Debian's python3 is "externally managed"; the variable lets pip
        # install next to it (older pips ignore it).
        PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet werkzeug==3.1.8 >/dev/null
    fi
    if ! python3 -c 'import openfeature.contrib.provider.ofrep, UnleashClient' 2>/dev/null; then
        deps_log "installing openfeature-sdk, openfeature-provider-ofrep, UnleashClient"
        PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet openfeature-sdk==0.10.0 \
            openfeature-provider-ofrep==0.3.0 UnleashClient==6.9.1 >/dev/null
    fi
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        deps_log "installing nodejs, npm"
        apt_install nodejs npm
    fi
    local flags_js
    flags_js="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/flags_js"
    if [ ! -d "$flags_js/node_modules/@openfeature/ofrep-provider" ]; then
        deps_log "npm ci in tests/flags_js"
        (cd "$flags_js" && npm ci --no-audit --no-fund --silent >/dev/null)
    fi
    if ! cargo nextest --version >/dev/null 2>&1; then
        deps_log "installing cargo-nextest"
        cargo install --locked cargo-nextest >/dev/null
    fi
    if ! command -v mdbook >/dev/null 2>&1; then
        deps_log "installing mdbook $MDBOOK_VERSION"
        cargo install --locked mdbook --version "$MDBOOK_VERSION" >/dev/null
    fi
}

# Run as a script: strict mode here. Sourced: the caller's (scripts/test.sh
# has its own `set -euo pipefail`), and apt_install stays defined for it.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
fi
deps_main
