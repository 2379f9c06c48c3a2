#!/usr/bin/env bash
# Overload (targets.md, "Reliability and security"): ten times the bulkhead.
#
#   upstream  `fanout mock -c bench/overload-mock.yaml`: every call takes 50 ms
#   gateway   `fanout serve -c bench/overload-gateway.yaml`: GET /work, one
#             required call through an upstream with `max_in_flight: 20`
#   load      `fanout fetch --limit N` (closed loop, N requests in flight):
#             N = 20 (1x, before), N = 200 (10x), N = 20 (1x, after)
#
# Prints, for each run, the statuses, the latency of admitted (200) and shed
# (503) requests as the client saw them and as the gateway logged them (its
# JSON log's `ms`: the gateway's own time, without the client's scheduling),
# the gateway's CPU time, and the ratios of the admitted
# requests' p50/p99 at 10x to the mean of the two 1x runs, the most calls the
# upstream ever had at once (the bulkhead held if it is 20); the body of one
# 503 taken during the 10x run shows its error kind. Writes
# bench/results/overload.json.
#
# Settings (environment):
#   OVERLOAD_REQUESTS_1X=3000    requests of each 1x run (≈ 8 s)
#   OVERLOAD_REQUESTS_10X=20000  requests of the 10x run (mostly shed)
#   BENCH_NO_BUILD=1             use the release binary already built
#   CARGO_TARGET_DIR             where cargo builds
# Listens on 127.0.0.1:19402 (mock) and 127.0.0.1:19481 (gateway); stops
# everything it started on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=overload
source bench/reliability.sh
reliability_start 19402 19481
# 200 client connections, 200 gateway connections, and the pools behind them.
ulimit -n 8192 2>/dev/null || true

"$FANOUT" mock -c bench/overload-mock.yaml >/dev/null 2>&1 &
PIDS+=($!)
LOG=$WORK/gateway.log
RUST_LOG=info "$FANOUT" serve --log-format json -c bench/overload-gateway.yaml >"$LOG" 2>&1 &
GATEWAY=$!
PIDS+=("$GATEWAY")
wait_ports 19402 19481

log "uptime: $(uptime)"
python3 bench/overload.py --fanout "$FANOUT" --url http://127.0.0.1:19481/work \
  --gateway-pid "$GATEWAY" --mock http://127.0.0.1:19402 --log "$LOG" --bulkhead 20 \
  --requests-1x "${OVERLOAD_REQUESTS_1X:-3000}" --requests-10x "${OVERLOAD_REQUESTS_10X:-20000}" \
  --out "$OUT/overload.json"
log "uptime: $(uptime)"
log "wrote $OUT/overload.json"
