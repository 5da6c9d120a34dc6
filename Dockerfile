# orders-api container image.
#
#   docker build --build-arg GIT_SHA="$(git rev-parse HEAD)" -t orders-api .
#   docker run -p 8080:8080 -p 9090:9090 orders-api
#
# Three stages: `chef` (toolchain + cargo-chef), `planner` (dependency recipe), `builder`
# (dependencies first, then the crate), and a distroless runtime with the binary and config/
# only. The dependency layer depends on recipe.json alone, so a change under src/ rebuilds
# the crate and nothing else.

# The toolchain the project is developed and tested with (rustc --version). Bump together.
ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-bookworm AS chef
# Pinned so that the recipe format, and so the cache, is stable between builds.
RUN cargo install cargo-chef --version 0.1.78 --locked
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: cached until Cargo.toml or Cargo.lock change.
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin orders-api
COPY . .
# Declared after the dependency layer so that a new revision does not invalidate it.
ARG GIT_SHA=unknown
RUN GIT_SHA="${GIT_SHA}" cargo build --release --locked --bin orders-api \
    && mkdir -p /out/data \
    && cp target/release/orders-api /out/orders-api

# glibc + libgcc, CA certificates, no shell, no package manager; uid/gid 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
ARG GIT_SHA=unknown
LABEL org.opencontainers.image.title="orders-api" \
      org.opencontainers.image.description="Orders REST API with health probes, Prometheus metrics and OTLP traces" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.revision="${GIT_SHA}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
WORKDIR /app
COPY --from=builder /out/orders-api /app/orders-api
# Profile files: APP_PROFILE selects config/<profile>.toml relative to the working directory.
COPY config /app/config
# A writable home for the default SQLite file (sqlite://data/orders.db) so that a plain
# `docker run` works for one replica. Kubernetes runs read-only on PostgreSQL instead.
COPY --from=builder --chown=65532:65532 /out/data /app/data
ENV APP_PROFILE=production \
    APP_CONFIG_DIR=/app/config
# Numeric, so that runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
# 8080: API (/api/v1, /healthz, /readyz); 9090: ops (/healthz, /readyz, /metrics).
EXPOSE 8080 9090
# For docker/podman only; Kubernetes ignores it and uses the probes in deploy/k8s.
# The binary probes the ops port itself: the image has no shell and no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/app/orders-api", "healthcheck"]
# Exec form: the binary is PID 1 and handles SIGTERM (drain, then exit 0) itself.
ENTRYPOINT ["/app/orders-api"]
CMD ["serve"]
