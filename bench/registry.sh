#!/usr/bin/env bash
# Device registry and profile store under contention (issue: devices and
# profiles): starts a release homeserver on a fresh database (container
# runtimes off: they play no part), creates an admin token, and runs
# `registry_contention` ROUNDS times 50 conflicting PATCHes / 50 creations,
# plus POST /devices/rescan latencies. Prints the JSON report.
#
#   bench/registry.sh            ROUNDS=20 CONCURRENCY=50
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROUNDS=${ROUNDS:-20}
CONCURRENCY=${CONCURRENCY:-50}
[[ ${SKIP_BUILD:-0} == 1 ]] || cargo build --release -q -p homeserver -p homeserver-bench
BIN=${CARGO_TARGET_DIR:-target}/release
WORK=$(mktemp -d /tmp/homeserver-registry.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export HOMESERVER__SERVER__HOST=127.0.0.1 HOMESERVER__SERVER__PORT=$PORT \
    HOMESERVER__DATABASE__PATH=$WORK/homeserver.db HOMESERVER__LOGGING__LEVEL=warn \
    HOMESERVER__DOCKER__ENABLED=false HOMESERVER__LXC__ENABLED=false \
    HOMESERVER__RATE_LIMIT__PER_SECOND=1000000 HOMESERVER__RATE_LIMIT__BURST=1000000
unset RUST_LOG HOMESERVER_CONFIG
TOKEN=$("$BIN/homeserver" token create --name bench --scope admin 2>/dev/null | tail -n1)
"$BIN/homeserver" serve >"$WORK/homeserver.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$PORT/health/live" >/dev/null 2>&1 && break; sleep 0.1; done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
HOMESERVER_TOKEN=$TOKEN "$BIN/registry_contention" --url "http://127.0.0.1:$PORT" \
    --rounds "$ROUNDS" --concurrency "$CONCURRENCY"
