#!/usr/bin/env bash
# CPU profile of the release binary under the GET-one-order load on SQLite, with perf.
#
#   bash benches/load/profile.sh on     # every optional layer (limits raised, as in run.sh)
#   bash benches/load/profile.sh off    # optional layers switched off
#   bash benches/load/profile.sh otlp   # `on` plus trace export to otlp_sink.py on CPU 1
#
#   SCRIPT=mix bash benches/load/profile.sh otlp   # another wrk script of this directory
#
# Service on CPU 0, wrk on CPU 1, `perf record -e cpu-clock` (a software clock: works in VMs
# without hardware counters) on the service for DURATION seconds; prints the top symbols by
# self time. Output in OUT (default: a new temp directory).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MODE=${1:-on}
SCRIPT=${SCRIPT:-get}
DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
PORT=${PORT:-18280}
OUT=${OUT:-$(mktemp -d /tmp/profile.XXXXXX)}
mkdir -p "$OUT"
export LOAD_DIR="$ROOT/benches/load" LOAD_IDS="$OUT/ids.txt"
command -v perf >/dev/null || apt-get install -y linux-perf >/dev/null
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
(cd "$ROOT" && cargo build --release)
cp "$ROOT/target/release/orders-api" "$OUT/svc-under-load" # see run.sh

extra=()
case $MODE in
    on) for p in GLOBAL PER_CLIENT WRITES; do
            extra+=("APP_RATE_LIMIT__${p}__RATE_PER_SECOND=1000000" "APP_RATE_LIMIT__${p}__BURST=1000000")
        done ;;
    off) extra=(APP_LOG__ACCESS=false APP_TELEMETRY__HTTP_METRICS=false
            APP_RATE_LIMIT__ENABLED=false APP_CIRCUIT_BREAKER__ENABLED=false) ;;
    otlp) for p in GLOBAL PER_CLIENT WRITES; do
            extra+=("APP_RATE_LIMIT__${p}__RATE_PER_SECOND=1000000" "APP_RATE_LIMIT__${p}__BURST=1000000")
        done
        extra+=("OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$((PORT + 2))")
        taskset -c 1 python3 "$ROOT/benches/load/otlp_sink.py" --port $((PORT + 2)) >"$OUT/otlp_sink.out" 2>&1 &
        SINK=$! ;;
    *) echo "usage: $0 on|off|otlp" >&2; exit 2 ;;
esac
# The wrk scripts send no API key.
env APP_CONFIG_DIR="$ROOT/config" APP_PROFILE=production APP_AUTH__ENABLED=false APP_SERVER__HOST=127.0.0.1 \
    APP_LOG__FORMAT=json APP_SHUTDOWN__DRAIN_DELAY=0s APP_SERVER__PORT="$PORT" \
    APP_SERVER__OPS_PORT=$((PORT + 1)) APP_DATABASE__URL="sqlite://$OUT/orders.db" "${extra[@]}" \
    taskset -c 0 "$OUT/svc-under-load" serve >"$OUT/service.log" 2>&1 &
PID=$!
trap 'kill -TERM $PID ${SINK:-} 2>/dev/null || true; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 500); do
    curl -sf -o /dev/null "http://127.0.0.1:$((PORT + 1))/readyz" && break
    sleep 0.02
done
curl -s -o /dev/null -H 'content-type: application/json' \
    -d '{"customer_id":"seed-1","currency":"EUR","items":[{"sku":"BOOK-1","quantity":2,"unit_price":"9.99"}]}' \
    "http://127.0.0.1:$PORT/api/v1/orders#[1-1000]"
for ((o = 0; o < 1000; o += 100)); do
    curl -sf "http://127.0.0.1:$PORT/api/v1/orders?limit=100&offset=$o" | grep -o '"id":"[^"]*"' | cut -d'"' -f4
done >"$LOAD_IDS"
taskset -c 1 wrk -t1 -c"$CONNS" -d2s -s "$LOAD_DIR/get.lua" "http://127.0.0.1:$PORT" >/dev/null
perf record -q -e cpu-clock -F 2000 -p "$PID" -o "$OUT/perf.data" -- sleep "$DURATION" &
PERF=$!
taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$LOAD_DIR/$SCRIPT.lua" "http://127.0.0.1:$PORT" | grep '^RESULT'
wait $PERF
perf report -i "$OUT/perf.data" --no-children --sort symbol --percent-limit 0.7 --stdio 2>/dev/null |
    grep -v "^#" | sed -E "s/ +(- +)*$//" | grep -v "^$" | head -60
echo "perf data: $OUT/perf.data"
