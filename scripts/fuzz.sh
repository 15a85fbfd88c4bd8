#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers that face untrusted input
# (fuzz/README.md). Not part of scripts/test.sh: it needs cargo-fuzz and
# minutes of CPU. The property tests in tests/properties.rs are the fast,
# always-run counterpart.
#
#   scripts/fuzz.sh              # every target, 60 s each, one after another
#   scripts/fuzz.sh 300          # 5 minutes each
#   scripts/fuzz.sh 30 framing   # only some targets
#
# Only the stable toolchain is assumed: RUSTC_BOOTSTRAP=1 lets it accept
# the -Z flags cargo-fuzz passes (sanitizer coverage). Each target runs in
# one libFuzzer process (no -jobs: the machine is shared). Exits non-zero if
# any target crashed, hung or broke an invariant; the input that did it is
# in fuzz/artifacts/TARGET/. Environment: FUZZ_SANITIZER (default none;
# `address` adds ASan), FUZZ_ARGS (extra libFuzzer flags).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf 'fuzz.sh: %s\n' "$*" >&2; }

seconds="${1:-60}"
shift || true
all=(config_parse client_ip routing_key framing request_bytes request_head_diff)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
case "$seconds" in '' | *[!0-9]*) log "SECONDS must be a number, got '$seconds'"; exit 2 ;; esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
flags=(--sanitizer "${FUZZ_SANITIZER:-none}" --debug-assertions)

log "building ${#targets[@]} target(s)"
nice cargo fuzz build "${flags[@]}"

failed=()
for target in "${targets[@]}"; do
    seeds=() dict=()
    case "$target" in
        config_parse) seeds=(config deploy/compose) dict=(-dict=fuzz/dict/config.dict) ;;
        framing | request_bytes | request_head_diff) seeds=("fuzz/seeds/$target") dict=(-dict=fuzz/dict/http.dict) ;;
    esac
    mkdir -p "fuzz/corpus/$target"
    log "$target: ${seconds}s"
    # -timeout: one input taking 10 s is a hang; -rss_limit_mb: a leak.
    # shellcheck disable=SC2086
    if ! nice cargo fuzz run "${flags[@]}" "$target" "fuzz/corpus/$target" "${seeds[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" ${FUZZ_ARGS:-}; then
        log "$target FAILED: input in fuzz/artifacts/$target/ (reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run ${flags[*]} $target FILE)"
        failed+=("$target")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    log "failed: ${failed[*]}"
    exit 1
fi
log "ok: ${targets[*]} ran ${seconds}s each without a finding"
