#!/usr/bin/env bash
# Load test of the release binary over real HTTP on 127.0.0.1, with wrk.
#
#   bash benches/load/run.sh                 # everything, about 8 minutes
#   DURATION=5 BACKENDS=sqlite bash benches/load/run.sh
#   AUTH=off bash benches/load/run.sh        # 'on' without API-key authentication
#   AUTH=none SERVICE_BIN=/path/to/orders-api bash benches/load/run.sh   # a build without auth
#
# What it does:
#   1. installs wrk with apt-get if it is missing; `cargo build --release`.
#   2. start-to-ready on SQLite: spawn → first 200 on the ops port's /readyz, polled every
#      0.5 ms, READY_RUNS times on a fresh database file and on an existing one; median.
#   3. per backend (SQLite in a temp file; PostgreSQL in a fresh database made with psql on
#      PG_ADMIN_URL, skipped with a notice when unreachable; PG_URL_QUERY is appended to its
#      URL, e.g. PG_URL_QUERY=statement-cache-capacity=0) it starts three instances of the
#      service, each on its own database and each pinned to CPU 0 (`taskset -c 0`):
#        on    every optional layer on (access log, HTTP metrics, rate limit, breaker), and
#              API-key authentication (a key generated for the run, as production runs); the
#              rate limits are raised to 1e6/s so the limiter runs on every request but never
#              refuses one wrk connection pool sharing one client IP; the breaker's failure
#              settings are the defaults. Trace export off.
#        off   APP_LOG__ACCESS=false APP_TELEMETRY__HTTP_METRICS=false
#              APP_RATE_LIMIT__ENABLED=false APP_CIRCUIT_BREAKER__ENABLED=false, and no
#              authentication (every request still carries the key, so the bytes are the same)
#        otlp  like `on`, plus trace export (OTLP/HTTP) to a local receiver that decodes
#              nothing (otlp_sink.py; the config is skipped if it does not start). The
#              receiver runs on CPU 1, next to wrk.
#        redis like `on`, with the rate limits in Redis at REDIS_URL (redis://127.0.0.1:6379;
#              skipped with a notice when unreachable). Redis itself is not pinned: it takes its
#              CPU time from whichever of the two cores it runs on.
#      CONFIGS may also name "on" minus one layer, to attribute the cost: no_log, no_metrics,
#      no_limit, no_breaker, no_auth (e.g. CONFIGS="on off no_log no_metrics").
#      Each instance gets SEED orders, then for each scenario the instances are measured one
#      after the other (so the on/off ratio comes from neighbouring runs):
#        get   GET /api/v1/orders/{id}, a random seeded id per request       (get.lua)
#        list  GET /api/v1/orders?limit=20                                   (list.lua)
#        page  GET /api/v2/orders?limit=20, a cursor page                    (page.lua)
#        post  POST /api/v1/orders, JSON body                                (post.lua)
#        mix   90 % get, 10 % post                                           (mix.lua)
#      wrk runs on CPU 1 (`taskset -c 1`), THREADS threads, CONNS connections, DURATION
#      seconds, after a WARMUP-second unmeasured run of the same scenario.
#   4. prints, per run: throughput, p50, p99, errors (non-2xx counted in wrk's response()
#      hook, plus socket errors), the service's peak RSS during the run (VmHWM, reset through
#      /proc/<pid>/clear_refs before each run) and its CPU time (utime+stime from
#      /proc/<pid>/stat, before/after); on SQLite, the mean group-commit size during the run
#      (db_write_batch_size from /metrics, before/after); idle RSS (VmRSS after ready, before
#      seeding); and the layer-cost table: on/off throughput and p99 per scenario.
#
# Every process it starts is stopped on exit (trap). Output and service logs (stdout, one JSON
# line per request) go to OUT (default: a new temp directory, kept and printed at the end).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOAD_DIR="$ROOT/benches/load"
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-32}
THREADS=${THREADS:-1}
SEED=${SEED:-10000}
READY_RUNS=${READY_RUNS:-10}
BACKENDS=${BACKENDS:-"sqlite postgres"}
SCENARIOS=${SCENARIOS:-"get list page post mix"}
CONFIGS=${CONFIGS:-"on off otlp"}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PORT_BASE=${PORT_BASE:-18080}
OUT=${OUT:-$(mktemp -d /tmp/load.XXXXXX)}
BIN="$OUT/svc-under-load"
CLK_TCK=$(getconf CLK_TCK)
mkdir -p "$OUT"
export LOAD_DIR

PIDS=()
PG_DBS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    local db
    for db in "${PG_DBS[@]}"; do
        psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s\n' "$*" >&2; }

# --- tools and build ------------------------------------------------------------------------
if ! command -v wrk >/dev/null; then
    log "installing wrk"
    apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
# SERVICE_BIN measures a binary built elsewhere (an earlier commit, for before/after figures).
if [[ -n ${SERVICE_BIN:-} ]]; then
    src_bin=$SERVICE_BIN
else
    (cd "$ROOT" && cargo build --release)
    src_bin="$ROOT/target/release/orders-api"
fi
# A copy under its own name: on a shared machine, whatever stops `orders-api` processes by name
# (a test run cleaning up) would otherwise end a measurement half-way.
cp "$src_bin" "$BIN"
if [[ $(nproc) -lt 2 ]]; then
    log "NOTICE: fewer than 2 CPUs: service and wrk share CPU 0"
    WRK_CPU=0
else
    WRK_CPU=1
fi

# The service's environment, common to every instance.
base_env=(
    APP_CONFIG_DIR="$ROOT/config"
    APP_PROFILE=production
    APP_SERVER__HOST=127.0.0.1
    APP_LOG__FORMAT=json
    APP_SHUTDOWN__DRAIN_DELAY=0s
)
# AUTH=on: 'on' and 'otlp' authenticate every request; off: nobody does; none: no auth
# settings at all (for builds that predate them).
AUTH=${AUTH:-on}
[[ $AUTH == none ]] || base_env+=(APP_AUTH__ENABLED=false)
# A key for this run, known to the service by its hash only; curl and wrk send it.
LOAD_KEY="oak_load-$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
export LOAD_KEY
printf '[[keys]]\nid = "load"\nsha256 = "%s"\nscopes = ["orders:read", "orders:write"]\n' \
    "$(printf '%s' "$LOAD_KEY" | sha256sum | cut -d' ' -f1)" >"$OUT/keys.toml"
auth_on=()
[[ $AUTH == on ]] && auth_on=(APP_AUTH__ENABLED=true APP_AUTH__KEYS_FILE="$OUT/keys.toml")
limits_high=()
for policy in GLOBAL PER_CLIENT WRITES; do
    limits_high+=("APP_RATE_LIMIT__${policy}__RATE_PER_SECOND=1000000"
        "APP_RATE_LIMIT__${policy}__BURST=1000000")
done
layers_off=(
    APP_LOG__ACCESS=false
    APP_TELEMETRY__HTTP_METRICS=false
    APP_RATE_LIMIT__ENABLED=false
    APP_CIRCUIT_BREAKER__ENABLED=false
)

# --- /proc readings ---------------------------------------------------------------------------
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

wait_ready() { # ops_port pid
    local i
    for i in $(seq 1 1000); do
        if curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$1/readyz"; then
            return 0
        fi
        kill -0 "$2" 2>/dev/null || { log "service exited before ready"; return 1; }
        sleep 0.01
    done
    log "service not ready within 10 s"
    return 1
}

# --- start-to-ready ----------------------------------------------------------------------------
READY_DIR="$OUT/ready"
mkdir -p "$READY_DIR"
log "== start-to-ready on SQLite ($READY_RUNS runs each; service on CPU 0)"
ready_port=$((PORT_BASE + 90))
ready_lines=()
for mode in FRESH EXISTING; do
    out=$(env "${base_env[@]}" APP_SERVER__PORT=$((PORT_BASE + 91)) APP_SERVER__OPS_PORT=$ready_port \
        taskset -c "$WRK_CPU" python3 "$LOAD_DIR/ready_time.py" "$READY_RUNS" "$ready_port" "$mode" "$READY_DIR" \
        -- taskset -c 0 "$BIN" serve)
    log "$out"
    line=$(grep '^RESULT' <<<"$out")
    ready_lines+=("$mode ${line#RESULT }")
done

# --- the OTLP receiver -------------------------------------------------------------------------
OTLP_PORT=$((PORT_BASE + 80))
otlp_ok=false
if [[ " $CONFIGS " == *" otlp "* ]]; then
    # A receiver that decodes nothing: one that decodes every span (oteltap) starves wrk,
    # which shares its CPU, and the figure then measures the receiver.
    taskset -c "$WRK_CPU" python3 "$LOAD_DIR/otlp_sink.py" --port "$OTLP_PORT" >"$OUT/otlp_sink.out" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$OTLP_PORT") 2>/dev/null; then otlp_ok=true; break; fi
        sleep 0.05
    done
    $otlp_ok || log "NOTICE: the local OTLP receiver did not start: config otlp skipped"
fi

# --- Redis, for the redis config ------------------------------------------------------------------
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
redis_ok=false
if [[ " $CONFIGS " == *" redis "* ]]; then
    redis_hostport=${REDIS_URL#redis://}
    redis_hostport=${redis_hostport##*@}
    redis_hostport=${redis_hostport%%/*}
    if (exec 3<>"/dev/tcp/${redis_hostport%:*}/${redis_hostport##*:}") 2>/dev/null; then
        redis_ok=true
    else
        log "NOTICE: Redis unreachable at $REDIS_URL: config redis skipped"
    fi
fi

# --- instances -----------------------------------------------------------------------------------
declare -A API_PORT OPS_PORT SPID IDLE_RSS
start_instance() { # backend config index db_url
    local backend=$1 cfg=$2 idx=$3 url=$4
    local api=$((PORT_BASE + idx * 2)) ops=$((PORT_BASE + idx * 2 + 1))
    local extra=()
    case $cfg in
        on) extra=("${limits_high[@]}" "${auth_on[@]}") ;;
        off) extra=("${layers_off[@]}") ;;
        no_log) extra=("${limits_high[@]}" "${auth_on[@]}" APP_LOG__ACCESS=false) ;;
        no_metrics) extra=("${limits_high[@]}" "${auth_on[@]}" APP_TELEMETRY__HTTP_METRICS=false) ;;
        no_limit) extra=("${auth_on[@]}" APP_RATE_LIMIT__ENABLED=false) ;;
        no_breaker) extra=("${limits_high[@]}" "${auth_on[@]}" APP_CIRCUIT_BREAKER__ENABLED=false) ;;
        no_auth) extra=("${limits_high[@]}") ;;
        otlp) extra=("${limits_high[@]}" "${auth_on[@]}"
            OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$OTLP_PORT") ;;
        redis) extra=("${limits_high[@]}" "${auth_on[@]}" APP_RATE_LIMIT__BACKEND=redis
            APP_RATE_LIMIT__REDIS__URL="$REDIS_URL" APP_RATE_LIMIT__REDIS__KEY_PREFIX="load:$$:$idx:") ;;
    esac
    env "${base_env[@]}" "${extra[@]}" APP_SERVER__PORT=$api APP_SERVER__OPS_PORT=$ops \
        APP_DATABASE__URL="$url" taskset -c 0 "$BIN" serve \
        >"$OUT/$backend-$cfg.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_ready "$ops" "$pid"
    API_PORT[$cfg]=$api
    OPS_PORT[$cfg]=$ops
    SPID[$cfg]=$pid
    IDLE_RSS[$backend-$cfg]=$(status_kib "$pid" VmRSS)
}

seed() { # cfg
    local port=${API_PORT[$1]} ids="$OUT/ids-$1.txt"
    local body='{"customer_id":"seed-1","currency":"EUR","items":[{"sku":"BOOK-1","quantity":2,"unit_price":"9.99"}]}'
    # One curl, one connection, SEED requests (the glob is in the fragment, which is not sent).
    local created
    created=$(taskset -c "$WRK_CPU" curl -s -o /dev/null -w '%{http_code}\n' \
        -H 'content-type: application/json' -H "authorization: Bearer $LOAD_KEY" -d "$body" \
        "http://127.0.0.1:$port/api/v1/orders#[1-$SEED]" | grep -c '^201$' || true)
    [[ $created -eq $SEED ]] || { log "seeding $1: $created of $SEED created"; return 1; }
    # The ids, a cursor page at a time (v1's offset stops at 10000).
    : >"$ids"
    local page next="/api/v2/orders?limit=100"
    while [[ -n $next ]]; do
        page=$(curl -sf -H "authorization: Bearer $LOAD_KEY" "http://127.0.0.1:$port$next")
        grep -o '"id":"[^"]*"' <<<"$page" | cut -d'"' -f4 >>"$ids"
        next=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["links"]["next"] or "")' <<<"$page")
    done
    [[ $(wc -l <"$ids") -eq $SEED ]] || { log "seeding $1: listed $(wc -l <"$ids") of $SEED ids"; return 1; }
}

FAILED_RUNS=()
RESULTS="$OUT/results.tsv"
printf 'backend\tconfig\tscenario\trps\tp50_ms\tp99_ms\terrors\tpeak_rss_mib\tcpu_s\tcpu_us_per_req\twrite_batch\n' >"$RESULTS"

# The sum and count of db_write_batch_size (SQLite's group commits), "0 0" without any.
batches() { # ops_port
    curl -sf --max-time 2 "http://127.0.0.1:$1/metrics" | awk '
        $1 == "db_write_batch_size_sum" { s = $2 } $1 == "db_write_batch_size_count" { c = $2 }
        END { printf "%s %s\n", s + 0, c + 0 }' || echo "0 0"
}

measure() { # backend cfg scenario
    local backend=$1 cfg=$2 scenario=$3
    local pid=${SPID[$cfg]} url="http://127.0.0.1:${API_PORT[$cfg]}"
    export LOAD_IDS="$OUT/ids-$cfg.txt"
    taskset -c "$WRK_CPU" wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" -s "$LOAD_DIR/$scenario.lua" "$url" >/dev/null
    echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true
    local t0 t1 out r b0 b1
    b0=$(batches "${OPS_PORT[$cfg]}")
    t0=$(cpu_ticks "$pid")
    out=$(taskset -c "$WRK_CPU" wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 5s \
        -s "$LOAD_DIR/$scenario.lua" "$url")
    t1=$(cpu_ticks "$pid")
    b1=$(batches "${OPS_PORT[$cfg]}")
    printf '%s\n' "$out" >"$OUT/wrk-$backend-$cfg-$scenario.txt"
    r=$(grep '^RESULT' <<<"$out")
    # A run with any non-2xx answer or socket error measured something else than it claims
    # (401s from a missing key, 429s, 503s): it fails, and so does the script at the end.
    local bad
    bad=$(awk -v r="$r" 'BEGIN { n = split(r, kv, /[ =]/); for (i = 2; i < n; i += 2) v[kv[i]] = kv[i + 1]
        print v["non2xx"] + v["socket_errors"] }')
    if [[ $bad != 0 ]]; then
        FAILED_RUNS+=("$backend/$cfg/$scenario: $bad non-2xx answers or socket errors")
    fi
    awk -v r="$r" -v b="$backend" -v c="$cfg" -v s="$scenario" -v hwm="$(status_kib "$pid" VmHWM)" \
        -v cpu="$((t1 - t0))" -v tck="$CLK_TCK" -v b0="$b0" -v b1="$b1" 'BEGIN {
            n = split(r, kv, /[ =]/); for (i = 2; i < n; i += 2) v[kv[i]] = kv[i + 1]
            cs = cpu / tck
            split(b0, x, " "); split(b1, y, " ")
            wb = (y[2] > x[2]) ? sprintf("%.1f", (y[1] - x[1]) / (y[2] - x[2])) : "-"
            printf "%s\t%s\t%s\t%.0f\t%.2f\t%.2f\t%d\t%.1f\t%.2f\t%.1f\t%s\n", b, c, s, v["rps"],
                v["p50_us"] / 1000, v["p99_us"] / 1000, v["non2xx"] + v["socket_errors"],
                hwm / 1024, cs, (v["requests"] > 0 ? cs * 1e6 / v["requests"] : 0), wb
        }' | tee -a "$RESULTS" >&2
}

stop_instances() {
    local cfg
    for cfg in "${!SPID[@]}"; do
        kill -TERM "${SPID[$cfg]}" 2>/dev/null || true
        wait "${SPID[$cfg]}" 2>/dev/null || true
    done
    SPID=()
}

idx=0
for backend in $BACKENDS; do
    configs=()
    for cfg in $CONFIGS; do
        [[ $cfg == otlp && $otlp_ok == false ]] && continue
        [[ $cfg == redis && $redis_ok == false ]] && continue
        configs+=("$cfg")
    done
    urls=()
    case $backend in
        sqlite)
            for cfg in "${configs[@]}"; do
                mkdir -p "$OUT/db"
                urls+=("sqlite://$OUT/db/$cfg.db")
            done
            ;;
        postgres)
            if ! psql -q "$PG_ADMIN_URL" -c 'SELECT 1' >/dev/null 2>&1; then
                log "NOTICE: PostgreSQL unreachable at $PG_ADMIN_URL: PostgreSQL runs skipped"
                continue
            fi
            for cfg in "${configs[@]}"; do
                db="orders_load_${cfg}_$$"
                psql -q "$PG_ADMIN_URL" -c "CREATE DATABASE \"$db\"" >/dev/null
                PG_DBS+=("$db")
                urls+=("${PG_ADMIN_URL%/*}/$db${PG_URL_QUERY:+?$PG_URL_QUERY}")
            done
            ;;
        *) log "unknown backend $backend"; exit 2 ;;
    esac
    log "== $backend: starting ${configs[*]} (service on CPU 0, wrk on CPU $WRK_CPU)"
    for i in "${!configs[@]}"; do
        start_instance "$backend" "${configs[$i]}" "$idx" "${urls[$i]}"
        idx=$((idx + 1))
        seed "${configs[$i]}"
    done
    for scenario in $SCENARIOS; do
        for cfg in "${configs[@]}"; do
            measure "$backend" "$cfg" "$scenario"
        done
    done
    if [[ " ${configs[*]} " == *" otlp "* ]]; then
        dropped=$(curl -sf "http://127.0.0.1:${OPS_PORT[otlp]}/metrics" |
            awk '$1 == "otel_spans_dropped_total" { print $2 }')
        log "otlp: spans dropped by the exporter: ${dropped:-?}"
        printf '%s\n' "$backend ${dropped:-?}" >>"$OUT/spans_dropped.txt"
    fi
    stop_instances
done

# --- report --------------------------------------------------------------------------------------
echo
echo "orders-api load test: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')),"
echo "service on CPU 0, wrk -t$THREADS -c$CONNS -d${DURATION}s on CPU $WRK_CPU, $SEED seeded orders per instance."
echo "'on': all optional layers, API-key auth $AUTH; rate limits raised to 1e6/s (limiter runs, never refuses); breaker at its defaults; trace export off."
echo "'off': ${layers_off[*]}, no auth."
$otlp_ok && echo "'otlp': 'on' plus OTLP/HTTP trace export to a local receiver (otlp_sink.py on CPU $WRK_CPU)."
echo
echo "Start to ready (SQLite, spawn → first 200 on /readyz):"
for l in "${ready_lines[@]}"; do echo "  $l"; done
echo
echo "Idle RSS (VmRSS after ready, before seeding):"
for k in "${!IDLE_RSS[@]}"; do echo "  $k $(mib "${IDLE_RSS[$k]}") MiB"; done | sort
echo
echo "Runs (peak RSS = VmHWM during the run; CPU = service utime+stime; write_batch = mean writes per SQLite commit):"
column -t -s $'\t' "$RESULTS"
echo
echo "Layer cost (same backend and scenario): 'on' / 'off', and trace export on / off ('otlp' / 'on'):"
awk -F'\t' 'NR > 1 { rps[$1 FS $3 FS $2] = $4; p99[$1 FS $3 FS $2] = $6; cpu[$1 FS $3 FS $2] = $10; key[$1 FS $3] = 1 }
    function ratio(a, b, t) { return (a in t) && (b in t) && t[b] > 0 ? sprintf("%.3f", t[a] / t[b]) : "-" }
    END {
        printf "%-9s %-6s %12s %12s %14s %12s %12s\n", "backend", "scen.", "rps on/off", "p99 on/off", "cpu/req on/off", "rps otlp/on", "cpu otlp/on"
        for (k in key) {
            on = k FS "on"; off = k FS "off"; ot = k FS "otlp"
            if (!(on in rps)) continue
            split(k, f, FS)
            printf "%-9s %-6s %12s %12s %14s %12s %12s\n", f[1], f[2], ratio(on, off, rps),
                ratio(on, off, p99), ratio(on, off, cpu), ratio(ot, on, rps), ratio(ot, on, cpu)
        }
    }' FS='\t' "$RESULTS" | { read -r header; echo "$header"; sort; }
if awk -F'\t' 'NR > 1 && $2 ~ /^no_/ { found = 1 } END { exit !found }' "$RESULTS"; then
    echo
    echo "Per layer: CPU per request saved by switching one layer off ('on' minus no_X), in µs:"
    awk -F'\t' 'NR > 1 { cpu[$1 FS $3 FS $2] = $10; if ($2 ~ /^no_/) key[$1 FS $3 FS $2] = 1 }
        END {
            for (k in key) {
                split(k, f, FS); on = f[1] FS f[2] FS "on"
                if (on in cpu) printf "%-9s %-6s %-11s %8.1f\n", f[1], f[2], f[3], cpu[on] - cpu[k]
            }
        }' "$RESULTS" | sort
fi
echo
echo "Raw output and service logs: $OUT"
if [[ ${#FAILED_RUNS[@]} -gt 0 ]]; then
    echo
    echo "FAIL: runs with answers that were not 2xx (their figures do not measure what they claim):"
    printf '  %s\n' "${FAILED_RUNS[@]}"
    exit 1
fi
