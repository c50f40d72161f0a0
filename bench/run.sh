#!/usr/bin/env bash
# Service benchmarks of homeserver and its peers, on loopback only:
#   a. HTTP throughput of the "everything" endpoint (wrk)
#   b. cost at 1 s sampling: CPU % of one core and memory, endpoint polled 1/s
#   c. WebSocket fan-out: N subscribers must each receive every snapshot
# Every measurement runs ROUNDS times on a freshly started service; medians
# and homeserver/peer ratios go to bench-results/service.md.
#
#   bench/run.sh                 full run (~25 min on 2 cores)
#   QUICK=1 bench/run.sh         smoke run (~2 min)
#
# Environment (defaults: full / QUICK=1):
#   ROUNDS=3/1  WRK_SECS=10/3  SETTLE_SECS=10/3  COST_SECS=60/10
#   WS_CLIENTS=10000/500  WS_REF_CLIENTS=1000/100  WS_SECS=30/5
#   PEERS="node-exporter glances netdata"  SECTIONS="http cost ws"
#   SKIP_BUILD=1 to reuse target/release, OUT=path of the Markdown file.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

if [[ ${QUICK:-0} == 1 ]]; then
    defaults=(1 3 3 10 500 100 5)
else
    defaults=(3 10 10 60 10000 1000 30)
fi
ROUNDS=${ROUNDS:-${defaults[0]}}
WRK_SECS=${WRK_SECS:-${defaults[1]}}
SETTLE_SECS=${SETTLE_SECS:-${defaults[2]}}
COST_SECS=${COST_SECS:-${defaults[3]}}
WS_CLIENTS=${WS_CLIENTS:-${defaults[4]}}
WS_REF_CLIENTS=${WS_REF_CLIENTS:-${defaults[5]}}
WS_SECS=${WS_SECS:-${defaults[6]}}
PEERS=${PEERS:-"node-exporter glances netdata"}
SECTIONS=${SECTIONS:-"http cost ws"}
OUT=${OUT:-$ROOT/bench-results/service.md}

STAMP=$(date +%Y%m%d-%H%M%S)
LOGS=$ROOT/bench-results/raw-$STAMP
WORK=$(mktemp -d /tmp/homeserver-bench.XXXXXX)
RAW=$LOGS/results.tsv
mkdir -p "$LOGS" "$(dirname "$OUT")"
: >"$RAW"
NOTES=()
FAILED=0
PIDS=()
AUTH=()
TOKEN=

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
note() { log "NOTE: $*"; NOTES+=("$*"); }

# --- processes -------------------------------------------------------------

descendants() { # all descendants of $1
    ps -e -o pid=,ppid= | awk -v root="$1" '
        { parent[$1] = $2 }
        END { for (p in parent) { q = parent[p]; while (q > 1) { if (q == root) { print p; break } q = parent[q] } } }'
}

stop_pid() {
    local pid=$1 kids i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kids=$(descendants "$pid")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for i in $kids; do kill -KILL "$i" 2>/dev/null || true; done
    local keep=()
    for i in "${PIDS[@]}"; do [[ $i == "$pid" ]] || keep+=("$i"); done
    PIDS=("${keep[@]}")
}

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    PIDS=()
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() { # url timeout_secs pid
    local i
    for ((i = 0; i < $2 * 5; i++)); do
        kill -0 "$3" 2>/dev/null || return 1
        [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "${AUTH[@]}" "$1" || true) == 200 ]] && return 0
        sleep 0.2
    done
    return 1
}

GLANCES_API=3
if command -v glances >/dev/null && glances -V 2>/dev/null | grep -q 'Glances v4'; then GLANCES_API=4; fi

available() {
    case $1 in
        homeserver) [[ -x $BIN/homeserver ]] ;;
        node-exporter) command -v prometheus-node-exporter >/dev/null ;;
        glances) command -v glances >/dev/null ;;
        netdata) command -v netdata >/dev/null ;;
        *) return 1 ;;
    esac
}

# The "everything" endpoint(s) of each service; the first one is polled in b.
endpoints() {
    case $1 in
        homeserver) echo "/api/v1/system" ;;
        node-exporter) echo "/metrics" ;;
        glances) echo "/api/$GLANCES_API/all" ;;
        netdata) echo "/api/v1/allmetrics?format=json /api/v1/data?chart=system.cpu" ;;
    esac
}

# homeserver with defaults except: loopback, a free port, a fresh database,
# warn logs, and rate limit / WebSocket cap per token raised to their maxima
# (one token drives wrk's 64 connections and all ws_fanout subscribers).
hs_cmd() { # port -> HS_CMD, the homeserver command line with its environment
    HS_CMD=(env -u RUST_LOG -u HOMESERVER_CONFIG
        HOMESERVER__SERVER__HOST=127.0.0.1 HOMESERVER__SERVER__PORT="$1"
        HOMESERVER__DATABASE__PATH="$WORK/homeserver-$1.db" HOMESERVER__LOGGING__LEVEL=warn
        HOMESERVER__SAMPLING__INTERVAL_MS=1000 HOMESERVER__HISTORY__ENABLED=true
        HOMESERVER__RATE_LIMIT__PER_SECOND=1000000 HOMESERVER__RATE_LIMIT__BURST=1000000
        HOMESERVER__WEBSOCKET__MAX_CONNECTIONS_PER_TOKEN=100000
        "$BIN/homeserver")
}

# start_service NAME: sets SVC_PID, SVC_BASE (http://127.0.0.1:PORT), SVC_PORT,
# AUTH (curl/wrk header arguments) and, for homeserver, TOKEN.
start_service() {
    local name=$1 port log
    port=$(free_port)
    AUTH=()
    TOKEN=
    log=$LOGS/$name.log
    case $name in
        homeserver)
            # A read-scoped token, created in the fresh database before start.
            hs_cmd "$port"
            TOKEN=$("${HS_CMD[@]}" token create --name bench --scope read 2>>"$log" | tail -n1)
            AUTH=(-H "Authorization: Bearer $TOKEN")
            # Started directly (not from a function) so that $! is homeserver itself.
            "${HS_CMD[@]}" serve >>"$log" 2>&1 &
            ;;
        node-exporter)
            # --web.max-requests=0: the default (40 parallel scrapes) answers
            # 503 to wrk's 64 connections; 1 scrape/s never hits it anyway.
            prometheus-node-exporter --web.listen-address="127.0.0.1:$port" --web.max-requests=0 >>"$log" 2>&1 &
            ;;
        glances) glances -w --disable-webui -B 127.0.0.1 -p "$port" >>"$log" 2>&1 & ;;
        netdata) netdata -D -p "$port" -i 127.0.0.1 >>"$log" 2>&1 & ;;
    esac
    SVC_PID=$!
    SVC_PORT=$port
    SVC_BASE=http://127.0.0.1:$port
    PIDS+=("$SVC_PID")
    local first
    first=$(endpoints "$name" | cut -d' ' -f1)
    if ! wait_http "$SVC_BASE$first" 30 "$SVC_PID"; then
        stop_pid "$SVC_PID"
        note "$name did not answer $first within 30 s (log: ${log#"$ROOT"/})"
        return 1
    fi
    log "$name: pid $SVC_PID ($(cat "/proc/$SVC_PID/comm")), port $port"
}

stop_service() { stop_pid "$SVC_PID"; }

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

record() { # section key metric round value
    printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RAW"
}

median() { # section key metric -> median over rounds ("-" if none)
    awk -F'\t' -v s="$1" -v k="$2" -v m="$3" '$1 == s && $2 == k && $3 == m && $5 != "" { print $5 }' "$RAW" |
        sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

values() { # section key metric -> all rounds, comma separated
    awk -F'\t' -v s="$1" -v k="$2" -v m="$3" '$1 == s && $2 == k && $3 == m { printf "%s%s", sep, $5; sep = ", " }' "$RAW"
}

fmt() { # printf format value: leaves "-" alone
    if [[ $2 == - ]]; then echo -; else printf "$1" "$2"; fi
}

round3() { tr ',' '\n' | awk 'NF { printf "%s%.3f", sep, $1; sep = ", " }'; }

ratio() { # a b -> a/b with 2 decimals
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'
}

to_ms() { # wrk latency like 812.00us / 1.23ms / 1.01s
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}

# --- build -----------------------------------------------------------------

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if ((WS_CLIENTS + 200 > $(ulimit -n))); then note "open-file limit $(ulimit -n) is below WS_CLIENTS=$WS_CLIENTS + 200"; fi
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "building (release)"
    cargo build --release -p homeserver -p homeserver-bench
fi
# Private copies: other builds may replace target/release during the run.
BIN=$WORK/bin
mkdir -p "$BIN"
cp "$ROOT/target/release/homeserver" "$ROOT/target/release/proc_meter" "$ROOT/target/release/ws_fanout" "$BIN/"
SERVICES=()
for svc in homeserver $PEERS; do
    if available "$svc"; then SERVICES+=("$svc"); else note "$svc is not installed: skipped"; fi
done
log "services: ${SERVICES[*]}; rounds: $ROUNDS; logs: ${LOGS#"$ROOT"/}"

# --- a. HTTP throughput ------------------------------------------------------

bench_http() {
    local svc path round out rps p99 key
    command -v wrk >/dev/null || { note "wrk is not installed: HTTP throughput skipped"; return 0; }
    for svc in "${SERVICES[@]}"; do
        for ((round = 1; round <= ROUNDS; round++)); do
            start_service "$svc" || continue
            sleep 2
            for path in $(endpoints "$svc"); do
                key="$svc $path"
                record http "$key" bytes "$round" "$(curl -s -o /dev/null -w '%{size_download}' "${AUTH[@]}" "$SVC_BASE$path")"
                record http "$key" load "$round" "$(loadavg)"
                log "a. $key round $round: wrk -t2 -c64 -d${WRK_SECS}s (load $(loadavg))"
                out=$LOGS/wrk-$svc-${path//[^a-z0-9]/_}-$round.txt
                wrk -t2 -c64 -d"${WRK_SECS}s" --latency "${AUTH[@]}" "$SVC_BASE$path" >"$out" 2>&1 || note "wrk failed for $key (see $out)"
                rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
                # Only 2xx/3xx answers count: (requests - non-2xx) / duration.
                record http "$key" ok_rps "$round" "$(awk '/ requests in / { n = $1; d = $4 + 0; if ($4 ~ /m,$/) d *= 60 } /Non-2xx/ { bad = $NF }
                    END { if (d > 0) printf "%.1f", (n - bad) / d }' "$out")"
                p99=$(awk '$1 == "99%" { print $2 }' "$out")
                record http "$key" rps "$round" "$rps"
                record http "$key" p99_ms "$round" "$([[ -n $p99 ]] && to_ms "$p99")"
                record http "$key" non2xx "$round" "$(awk '/Non-2xx/ { bad = $NF } END { print bad + 0 }' "$out")"
                log "   ${rps:-?} req/s, p99 ${p99:-?}"
            done
            stop_service
        done
    done
}

# --- b. cost at 1 s sampling ---------------------------------------------------

bench_cost() {
    local svc round path out args
    for svc in "${SERVICES[@]}"; do
        path=$(endpoints "$svc" | cut -d' ' -f1)
        for ((round = 1; round <= ROUNDS; round++)); do
            start_service "$svc" || continue
            sleep "$SETTLE_SECS"
            args=(--pid "$SVC_PID" --secs "$COST_SECS" --tree --poll-url "$SVC_BASE$path")
            [[ $svc == homeserver ]] && args+=(--ws-url "ws://127.0.0.1:$SVC_PORT/api/v1/ws")
            record cost "$svc" load "$round" "$(loadavg)"
            log "b. $svc round $round: proc_meter ${COST_SECS}s polling $path (load $(loadavg))"
            out=$LOGS/cost-$svc-$round.json
            env ${TOKEN:+HOMESERVER_TOKEN=$TOKEN} "$BIN/proc_meter" "${args[@]}" >"$out" || note "proc_meter reported a failure for $svc round $round: $(cat "$out")"
            if [[ -s $out ]]; then
                for m in cpu_pct rss_avg_mib rss_max_mib pss_avg_mib hwm_mib procs; do
                    record cost "$svc" "$m" "$round" "$(jq -r ".meter.$m" "$out")"
                done
                record cost "$svc" poll_bytes "$round" "$(jq -r '.poll.avg_bytes' "$out")"
                record cost "$svc" poll_ms "$round" "$(jq -r '.poll.avg_ms' "$out")"
                log "   $(jq -c '{cpu: .meter.cpu_pct, rss: .meter.rss_avg_mib, polls: .poll.ok, ws: .ws.frames}' "$out")"
            fi
            if [[ $svc == homeserver ]]; then
                cp "/proc/$SVC_PID/smaps_rollup" "$LOGS/homeserver-smaps_rollup-$round.txt" || true
                cp "/proc/$SVC_PID/status" "$LOGS/homeserver-status-$round.txt" || true
            fi
            stop_service
        done
    done
}

# --- c. WebSocket fan-out ------------------------------------------------------

bench_ws() {
    local clients round out rc m
    for clients in $WS_REF_CLIENTS $WS_CLIENTS; do
        for ((round = 1; round <= ROUNDS; round++)); do
            start_service homeserver || continue
            sleep 3
            record ws "$clients" load "$round" "$(loadavg)"
            log "c. $clients subscribers round $round: ws_fanout ${WS_SECS}s (load $(loadavg))"
            out=$LOGS/ws-$clients-$round.json
            rc=0
            HOMESERVER_TOKEN=$TOKEN "$BIN/ws_fanout" --url "ws://127.0.0.1:$SVC_PORT/api/v1/ws" --clients "$clients" --secs "$WS_SECS" \
                --pid "$SVC_PID" >"$out" 2>"$LOGS/ws-$clients-$round.txt" || rc=$?
            cat "$LOGS/ws-$clients-$round.txt" >&2
            if ((rc != 0)); then
                FAILED=1
                note "ws_fanout FAILED with $clients clients, round $round (exit $rc; see ${out#"$ROOT"/})"
            fi
            if [[ -s $out ]]; then
                record ws "$clients" ok "$round" "$(jq -r 'if .ok then 1 else 0 end' "$out")"
                for m in connected ticks frames frames_expected clients_with_gaps missing_frames clients_incomplete \
                    ramp_secs fanout_spread_ms_p50 fanout_spread_ms_max; do
                    record ws "$clients" "$m" "$round" "$(jq -r ".$m" "$out")"
                done
                for m in cpu_pct rss_avg_mib rss_max_mib hwm_mib; do
                    record ws "$clients" "server_$m" "$round" "$(jq -r ".server.$m" "$out")"
                    record ws "$clients" "client_$m" "$round" "$(jq -r ".client.$m" "$out")"
                done
            fi
            stop_service
        done
    done
}

for section in $SECTIONS; do "bench_$section"; done

# --- report --------------------------------------------------------------------

verdict() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN { if (v == "-") print "n/a"; else if ((op == "<=" && v <= t) || (op == "<" && v < t)) print "met"; else print "**MISSED**" }'; }

report() {
    local svc path key hs m
    echo "## Service benchmarks ($(date '+%Y-%m-%d %H:%M'))"
    echo
    echo "Host: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))," \
        "$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r)." \
        "Commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' + uncommitted changes of the working tree')."
    echo "Rounds: $ROUNDS (values are medians over rounds; each round starts the service afresh)." \
        "Everything runs on 127.0.0.1; the load generators share the 2 cores with the service, and other jobs" \
        "(compilers) may run at the same time: see the load averages (1/5/15 min) recorded before each measurement."
    echo "homeserver runs with its defaults (1 s sampling, history on) plus a read-scoped bearer token;" \
        "the per-token rate limit and WebSocket cap are raised to their maxima (1,000,000/s, 100,000)" \
        "because one token drives all of wrk's connections and all ws_fanout subscribers."
    echo "Raw data: \`${LOGS#"$ROOT"/}/\`."
    echo
    if [[ " $SECTIONS " == *" http "* ]]; then
        echo "### a. HTTP throughput: \`wrk -t2 -c64 -d${WRK_SECS}s --latency\`"
        echo
        echo "req/s counts only 2xx answers. The service and wrk share the 2 cores."
        echo
        echo "| Service | Endpoint | Body bytes | req/s | p99 ms | homeserver ÷ peer req/s | peer p99 ÷ homeserver p99 | non-2xx (per round) | load before (per round) |"
        echo "|---|---|---:|---:|---:|---:|---:|---:|---|"
        hs="homeserver /api/v1/system"
        for svc in "${SERVICES[@]}"; do
            for path in $(endpoints "$svc"); do
                key="$svc $path"
                echo "| $svc | \`$path\` | $(median http "$key" bytes) | $(fmt %.0f "$(median http "$key" ok_rps)")" \
                    "| $(fmt %.2f "$(median http "$key" p99_ms)")" \
                    "| $([[ $svc == homeserver ]] && echo - || ratio "$(median http "$hs" ok_rps)" "$(median http "$key" ok_rps)")" \
                    "| $([[ $svc == homeserver ]] && echo - || ratio "$(median http "$key" p99_ms)" "$(median http "$hs" p99_ms)")" \
                    "| $(values http "$key" non2xx) | $(values http "$key" load | sed 's/, / · /g') |"
            done
        done
        echo
    fi
    if [[ " $SECTIONS " == *" cost "* ]]; then
        echo "### b. Cost at 1 s sampling, endpoint polled once a second (${COST_SECS} s window after ${SETTLE_SECS} s settle)"
        echo
        echo "homeserver: default 1000 ms sampling, history on (SQLite), one live \`/api/v1/ws\` subscriber plus the poll."
        echo "Peers: default settings, their everything-endpoint polled (node-exporter collects on each scrape;"
        echo "glances refreshes on request at most once per \`--cached-time\` 1 s; netdata samples every 1 s on its own)."
        echo "CPU and memory cover the process and all its descendants (netdata runs plugins as child processes)."
        echo
        echo "| Service | Polled | CPU % of one core | RSS avg MiB | RSS max MiB | PSS avg MiB | Procs | Poll body bytes | Poll ms | homeserver ÷ peer CPU | homeserver ÷ peer RSS | load before (per round) |"
        echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        for svc in "${SERVICES[@]}"; do
            path=$(endpoints "$svc" | cut -d' ' -f1)
            echo "| $svc | \`$path\` | $(fmt %.3f "$(median cost "$svc" cpu_pct)") | $(fmt %.1f "$(median cost "$svc" rss_avg_mib)")" \
                "| $(fmt %.1f "$(median cost "$svc" rss_max_mib)") | $(fmt %.1f "$(median cost "$svc" pss_avg_mib)") | $(median cost "$svc" procs)" \
                "| $(fmt %.0f "$(median cost "$svc" poll_bytes)") | $(fmt %.1f "$(median cost "$svc" poll_ms)")" \
                "| $([[ $svc == homeserver ]] && echo - || ratio "$(median cost homeserver cpu_pct)" "$(median cost "$svc" cpu_pct)")" \
                "| $([[ $svc == homeserver ]] && echo - || ratio "$(median cost homeserver rss_avg_mib)" "$(median cost "$svc" rss_avg_mib)")" \
                "| $(values cost "$svc" load | sed 's/, / · /g') |"
        done
        echo
        echo "homeserver per round: CPU % $(values cost homeserver cpu_pct | round3); RSS max MiB $(values cost homeserver rss_max_mib | round3)."
        echo "Targets: CPU ≤ 0.25 % of one core: $(verdict "$(median cost homeserver cpu_pct)" 0.25 '<=');" \
            "RSS ≤ 12 MiB (max): $(verdict "$(median cost homeserver rss_max_mib)" 12 '<=')."
        echo
    fi
    if [[ " $SECTIONS " == *" ws "* ]]; then
        echo "### c. WebSocket fan-out at 1 Hz: \`ws_fanout --secs $WS_SECS\`"
        echo
        echo "| Subscribers | Rounds passed | Connected | Ticks | Frames / expected | Clients with gaps | Incomplete | Server CPU % of one core | Server RSS avg / max MiB | Server HWM MiB | Fan-out spread p50 / max ms | Ramp s | Client CPU % / RSS MiB | load before (per round) |"
        echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        for m in $WS_REF_CLIENTS $WS_CLIENTS; do
            echo "| $m | $(awk -F'\t' -v k="$m" '$1 == "ws" && $2 == k && $3 == "ok" { n++; p += $5 } END { printf "%d/%d", p, n }' "$RAW")" \
                "| $(median ws "$m" connected) | $(median ws "$m" ticks) | $(median ws "$m" frames) / $(median ws "$m" frames_expected)" \
                "| $(values ws "$m" clients_with_gaps) | $(values ws "$m" clients_incomplete)" \
                "| $(fmt %.1f "$(median ws "$m" server_cpu_pct)")" \
                "| $(fmt %.1f "$(median ws "$m" server_rss_avg_mib)") / $(fmt %.1f "$(median ws "$m" server_rss_max_mib)")" \
                "| $(fmt %.1f "$(median ws "$m" server_hwm_mib)")" \
                "| $(fmt %.0f "$(median ws "$m" fanout_spread_ms_p50)") / $(fmt %.0f "$(median ws "$m" fanout_spread_ms_max)")" \
                "| $(fmt %.1f "$(median ws "$m" ramp_secs)")" \
                "| $(fmt %.1f "$(median ws "$m" client_cpu_pct)") / $(fmt %.0f "$(median ws "$m" client_rss_max_mib)")" \
                "| $(values ws "$m" load | sed 's/, / · /g') |"
        done
        echo
        echo "Targets at $WS_CLIENTS subscribers: every client receives every snapshot:" \
            "$(awk -F'\t' -v k="$WS_CLIENTS" '$1 == "ws" && $2 == k && $3 == "ok" { n++; p += $5 } END { print (n > 0 && p == n) ? "met" : "**MISSED**" }' "$RAW");" \
            "server CPU < 50 %: $(verdict "$(median ws "$WS_CLIENTS" server_cpu_pct)" 50 '<');" \
            "server RSS < 256 MiB (max): $(verdict "$(median ws "$WS_CLIENTS" server_rss_max_mib)" 256 '<')."
        echo
    fi
    if ((${#NOTES[@]} > 0)); then
        echo "Notes:"
        printf -- '- %s\n' "${NOTES[@]}"
        echo
    fi
}

report | tee "$OUT"
log "wrote ${OUT#"$ROOT"/}"
exit "$FAILED"
