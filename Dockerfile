# syntax=docker/dockerfile:1
#
# grayshift container image: multi-stage, non-root, small.
#
#   docker build -t grayshift:dev .
#   docker run --rm -p 8080:8080 -p 9090:9090 \
#     -e GRAYSHIFT_ADMIN_TOKEN=change-me \
#     -v "$PWD/deploy/compose:/etc/grayshift:ro" grayshift:dev
#
# Runtime base: gcr.io/distroless/cc-debian12:nonroot.
#   Why distroless rather than debian:bookworm-slim + useradd:
#   - the binary only needs glibc and libgcc_s, which "cc" ships; it is built
#     on rust:1-bookworm, so the glibc versions match (Debian 12 on both sides);
#   - no shell, no package manager, no coreutils: a far smaller attack surface
#     and nothing for a vulnerability scanner to flag;
#   - ":nonroot" already runs as uid/gid 65532, which is what the Kubernetes
#     manifests in deploy/kubernetes/ pin with runAsUser.
#   The price: `kubectl exec -- sh` does not work. Everything an operator needs
#   is in the binary itself (`grayshift ctl status`, `grayshift check`,
#   `grayshift bucket`). It also means a rollback hook (`rollback.hook.exec`)
#   cannot be a shell script in this image: use `rollback.hook.webhook`, a
#   static binary, or build FROM gcr.io/distroless/cc-debian12:debug-nonroot
#   (busybox shell) if you really need one.

ARG RUST_VERSION=1

############################################################################
# Build stage
############################################################################
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src

# No protoc and no system packages: the etcd client's gRPC code is generated
# once and committed (vendor/etcd-client), so rust:*-bookworm (Rust and gcc)
# is all the build needs.

# 1) Dependencies only, in their own layer: this layer is rebuilt only when
#    Cargo.toml / Cargo.lock (or the bench sources, which Cargo.toml names
#    with [[bench]] and which cargo needs to exist to load the manifest, or
#    vendor/, the patched etcd-client it names with [patch.crates-io])
#    change, not on every edit under src/.
#    The cache mounts keep the crates.io index and downloads between builds
#    (BuildKit, the default builder of current Docker).
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
COPY vendor ./vendor
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    mkdir -p src \
 && echo 'fn main() {}' > src/main.rs \
 && cargo build --release --locked \
 && rm -rf src \
           target/release/grayshift \
           target/release/grayshift.d \
           target/release/deps/grayshift-* \
           target/release/deps/libgrayshift-* \
           target/release/.fingerprint/grayshift-*

# 2) The real sources. (A build.rs at the repository root would have to be
#    copied here too, and a new top-level directory named in Cargo.toml
#    would have to be added to this COPY list and to .dockerignore.)
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    cargo build --release --locked \
 && install -D -m 0755 target/release/grayshift /out/grayshift \
 && mkdir -p /out/state

############################################################################
# Runtime stage
############################################################################
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="grayshift" \
      org.opencontainers.image.description="Gray-release (canary) reverse proxy with automatic L1/L2/L3 rollback" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=build /out/grayshift /usr/local/bin/grayshift

# Default config. Deployments replace it by mounting a directory at
# /etc/grayshift (a Kubernetes ConfigMap volume WITHOUT subPath, or a compose
# bind mount of a directory): grayshift watches the file and reloads when it
# is replaced by a rename, which only works on a directory mount.
# Note: config/grayshift.toml binds the admin API to loopback, so the image
# run with this default config answers probes only from inside the
# container; the configs under deploy/ bind it to 0.0.0.0:9090 (a token is
# then required: GRAYSHIFT_ADMIN_TOKEN).
COPY config/grayshift.toml /etc/grayshift/grayshift.toml

# State (admin-set percent, active rollback level, L3 hook outcome) and the
# audit log. Owned by the nonroot user so a fresh named volume (which copies
# the image directory's ownership) is writable. WORKDIR here makes a relative
# `state.file` in the default config land on this volume as well.
COPY --from=build --chown=65532:65532 /out/state /var/lib/grayshift
WORKDIR /var/lib/grayshift
VOLUME ["/var/lib/grayshift"]

USER 65532:65532

# 8080: proxy traffic ([server] listen)
# 9090: admin API ([admin] listen): /healthz (liveness), /readyz (readiness),
#       /metrics (Prometheus), /status, and the token-protected changes.
EXPOSE 8080 9090

# No HEALTHCHECK: distroless has no shell and no curl. Probe from outside:
#   Kubernetes: httpGet /readyz and /healthz on port 9090 (deploy/kubernetes/);
#   compose:    healthcheck test ["CMD", "grayshift", "ctl", "--admin",
#               "http://127.0.0.1:9090", "status"] (deploy/docker-compose.yml),
#               which works because ctl is part of the binary.
ENTRYPOINT ["grayshift"]
CMD ["run", "--config", "/etc/grayshift/grayshift.toml", "--log-format", "json"]
