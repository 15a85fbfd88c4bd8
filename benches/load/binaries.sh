# Sourced by scripts/bench.sh and scripts/soak.sh (which define ROOT, log
# and die): build the release grayshift and the open-loop generator unless
# SKIP_BUILD is set, and set GRAYSHIFT (GRAYSHIFT_BIN wins) and OPENLOOP.
cd "$ROOT"
if [ -z "${SKIP_BUILD:-}" ]; then
    log "building grayshift and the open-loop generator (release)"
    cargo build --release --quiet --bin grayshift --example openloop
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
GRAYSHIFT=${GRAYSHIFT_BIN:-$TARGET_DIR/release/grayshift}
OPENLOOP="$TARGET_DIR/release/examples/openloop"
[ -x "$GRAYSHIFT" ] && [ -x "$OPENLOOP" ] || die "release binaries not found in $TARGET_DIR/release"
