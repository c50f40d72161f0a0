# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run as a non-root user in a
# slim Debian image. Build: docker build -t homeserver .
# Run (monitoring the host needs its /proc and /sys):
#   docker run -d -p 8080:8080 -v /proc:/host/proc:ro -v /sys:/host/sys:ro \
#     -e HOMESERVER__HOST__PROC_ROOT=/host/proc -e HOMESERVER__HOST__SYS_ROOT=/host/sys \
#     -v homeserver-data:/var/lib/homeserver homeserver

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p homeserver --bin homeserver \
    && cp target/release/homeserver /homeserver

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/homeserver --create-home homeserver
COPY --from=build /homeserver /usr/local/bin/homeserver
USER homeserver
WORKDIR /var/lib/homeserver
ENV HOMESERVER__SERVER__HOST=0.0.0.0 \
    HOMESERVER__DATABASE__PATH=/var/lib/homeserver/homeserver.db \
    HOMESERVER__LOGGING__FORMAT=json \
    MALLOC_ARENA_MAX=2
EXPOSE 8080
VOLUME ["/var/lib/homeserver"]
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/health/live || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/homeserver"]
CMD ["serve"]
