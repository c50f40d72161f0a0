#!/usr/bin/env bash
# Containers at scale (issue: containers): the stats cost of N running
# Docker containers (homeserver + dockerd against `docker stats` + dockerd),
# GET /api/v1/containers latency with 100 Docker containers (and with LXC
# containers too), create-and-start through the API against `docker run -d`.
# Needs the engines (as root: eval "$(scripts/engines-up)"). Every container
# it makes is labelled homeserver-bench=1 / named hs-bench-*, and removed at
# the end, also when interrupted. Markdown goes to stdout and to
# bench-results/containers-<time>.md.
#
#   bench/containers.sh                       all figures (~20 min)
#   SECTIONS=create CREATE_ROUNDS=20 bench/containers.sh
#
# Environment: ROUNDS=3 COST_SECS=30 SETTLE_SECS=8 RUNNING=50 LISTED=100
#   LXC=4 LIST_ROUNDS=3 LIST_REQUESTS=200 CREATE_ROUNDS=12
#   SECTIONS=cost,list,create  SKIP_BUILD=1 (reuse the release build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ ${SKIP_BUILD:-0} == 1 ]] || cargo build --release -q -p homeserver -p homeserver-bench
BIN=${CARGO_TARGET_DIR:-target}/release
DOCKER=${DOCKER:-/usr/bin/docker}
[[ -x $DOCKER ]] || DOCKER=$(command -v docker)
OUT=bench-results/containers-$(date +%Y%m%d-%H%M%S).md
mkdir -p bench-results

# Belt and braces: whatever happens to the bench, its containers go.
cleanup() {
    "$DOCKER" ps -aq --filter label=homeserver-bench=1 | xargs -r "$DOCKER" rm -f >/dev/null 2>&1 || true
    for n in $(lxc-ls -1 2>/dev/null | grep '^hs-bench-' || true); do
        lxc-stop -n "$n" -k >/dev/null 2>&1 || true
        lxc-destroy -n "$n" -f >/dev/null 2>&1 || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT; trap 'exit 143' TERM

"$BIN/container_bench" --bin "$BIN/homeserver" --docker "$DOCKER" \
    --rounds "${ROUNDS:-3}" --cost-secs "${COST_SECS:-30}" --settle-secs "${SETTLE_SECS:-8}" \
    --running "${RUNNING:-50}" --listed "${LISTED:-100}" --lxc "${LXC:-4}" \
    --list-rounds "${LIST_ROUNDS:-3}" --list-requests "${LIST_REQUESTS:-200}" \
    --create-rounds "${CREATE_ROUNDS:-12}" --sections "${SECTIONS:-cost,list,create}" | tee "$OUT"
