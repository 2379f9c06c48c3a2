#!/usr/bin/env bash
# Soak (targets.md, "Reliability and security"): a release `fanout serve`
# under steady load for SOAK_SECONDS with 1 % injected faults, its RSS and
# open file descriptors sampled from /proc, every response status counted.
#
#   backends  `fanout mock -c bench/soak-mock.yaml`: users and orders answer
#             500 to 1 % of calls (failure_rate); /faults/* reset mid-body,
#             hang, drip, send invalid JSON or HTML on every call
#   gateway   `fanout serve -c bench/soak-gateway.yaml`: GET /soak/{id} (users
#             required, orders optional), GET /fault/{kind} (one required call,
#             200 ms timeout)
#   load      bench/soak.py: SOAK_RATE requests/s over 8 keep-alive
#             connections, 1 % of them to /fault/{kind}, the five kinds in turn
#
# Expected statuses (anything else, or a failed connection, is unexpected):
#   /soak/{id}                                        200, 502 (users' 500)
#   /fault/reset, /invalid_json, /wrong_content_type  502
#   /fault/hang, /fault/drip                          504 (the 200 ms timeout)
#
# Pass: RSS after warm-up stays within +10 % of its value at the end of
# warm-up, the open fds stay within 8 of theirs, zero unexpected statuses.
# Writes bench/results/soak.json and bench/results/soak.svg; exits 1 on a
# failed criterion.
#
# Settings (environment):
#   SOAK_SECONDS=600   duration of the load
#   SOAK_WARMUP=60     seconds before the reference sample (≤ SOAK_SECONDS / 2)
#   SOAK_RATE=300      requests/s
#   SOAK_EVERY=5       seconds between samples
#   BENCH_NO_BUILD=1   use the release binary already built
#   CARGO_TARGET_DIR   where cargo builds (the binary: $CARGO_TARGET_DIR/release/fanout)
# Listens on 127.0.0.1:19401 (mock) and 127.0.0.1:19480 (gateway); stops
# everything it started on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_TOTAL=${SOAK_SECONDS:-600}
WARMUP=${SOAK_WARMUP:-60}
RATE=${SOAK_RATE:-300}
EVERY=${SOAK_EVERY:-5}
if [ "$WARMUP" -gt $((SECONDS_TOTAL / 2)) ]; then WARMUP=$((SECONDS_TOTAL / 2)); fi
NAME=soak
source bench/reliability.sh
reliability_start 19401 19480

"$FANOUT" mock -c bench/soak-mock.yaml >/dev/null 2>&1 &
MOCK=$!
PIDS+=("$MOCK")
RUST_LOG=${FANOUT_LOG:-info} "$FANOUT" serve -c bench/soak-gateway.yaml >/dev/null 2>&1 &
GATEWAY=$!
PIDS+=("$GATEWAY")
wait_ports 19401 19480

log "load ${RATE}/s for ${SECONDS_TOTAL} s (warm-up ${WARMUP} s), sampling every ${EVERY} s; uptime: $(uptime)"
status=0
python3 bench/soak.py --port 19480 --gateway-pid "$GATEWAY" --mock-pid "$MOCK" \
  --seconds "$SECONDS_TOTAL" --warmup "$WARMUP" --rate "$RATE" --every "$EVERY" \
  --out "$OUT/soak.json" --svg "$OUT/soak.svg" || status=$?
log "uptime: $(uptime)"
log "wrote $OUT/soak.json and $OUT/soak.svg"
if [ "$status" = 0 ]; then log "pass"; else log "FAIL (see \"pass\" above)"; fi
exit "$status"
