#!/usr/bin/env bash
# HTTP/2 abuse (targets.md, "Reliability and security"): rapid reset
# (CVE-2023-44487), stream floods, huge header lists with endless
# CONTINUATION frames, SETTINGS floods, each against a release `fanout serve`
# over h2c while a regular HTTP/1.1 client measures its latency
# (bench/h2_abuse.py says what each attack sends).
#
#   backend   `fanout mock`: GET /slow (200 ms), GET /fast (1 ms)
#   gateway   `fanout serve` with the default limits but write_timeout 5s
#             (written to a temporary file): GET /slow and GET /fast, one
#             required call each
#
# Prints, for each attack: what was sent and answered, the gateway's CPU time
# over it (and as a share of one core), its RSS peak, the regular client's
# p50/p99 beside its p50/p99 alone, and the backend's calls, abandoned calls
# and calls still in flight a second after the attack (must be 0). Writes
# bench/results/h2-abuse.json. The behaviour itself is asserted in cargo test
# (crates/gateway/tests/gateway/hostile.rs); this script gives the figures.
#
# Settings (environment): H2_ABUSE_SECONDS=8 (per attack), BENCH_NO_BUILD=1,
# CARGO_TARGET_DIR. Listens on 127.0.0.1:19404 (mock) and 127.0.0.1:19483
# (gateway); stops everything it started on exit. Needs python's h2.
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=h2-abuse
source bench/reliability.sh
needs_h2
reliability_start 19404 19483
ulimit -n 8192 2>/dev/null || true

cat >"$WORK/mock.yaml" <<EOF
listen: "127.0.0.1:19404"
routes:
  - { path: /slow, latency: 200ms, body: { slow: true } }
  - { path: /fast, latency: 1ms, body: { fast: true } }
EOF
cat >"$WORK/gateway.yaml" <<EOF
server:
  listen: "127.0.0.1:19483"
  write_timeout: 5s
  shutdown_grace: 1s
endpoints:
  - route: GET /slow
    backends: [{ name: slow, url: "http://127.0.0.1:19404/slow", required: true }]
  - route: GET /fast
    backends: [{ name: fast, url: "http://127.0.0.1:19404/fast", required: true }]
EOF

"$FANOUT" mock -c "$WORK/mock.yaml" >/dev/null 2>&1 &
PIDS+=($!)
RUST_LOG=${FANOUT_LOG:-info} "$FANOUT" serve -c "$WORK/gateway.yaml" >/dev/null 2>&1 &
GATEWAY=$!
PIDS+=("$GATEWAY")
wait_ports 19404 19483

log "uptime: $(uptime)"
python3 bench/h2_abuse.py --port 19483 --mock http://127.0.0.1:19404 --gateway-pid "$GATEWAY" \
  --seconds "${H2_ABUSE_SECONDS:-8}" --out "$OUT/h2-abuse.json" >/dev/null
log "uptime: $(uptime)"
python3 - "$OUT/h2-abuse.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
alone = r["regular_alone"]
print(f"regular client alone: p50 {alone['p50_us'] / 1000:.2f} ms, p99 {alone['p99_us'] / 1000:.2f} ms")
print(f"{'attack':<15} {'sent':>22} {'gateway said':>34} {'CPU s':>6} {'of a core':>9} {'RSS peak':>9} "
      f"{'regular p50/p99 ms':>19} {'errors':>6} {'calls/abandoned/left':>21}")
for name, a in r["attacks"].items():
    s = a["sent"]
    sent = f"{s['connections']} conn {s['streams']} str {s['frames']} fr"
    said = f"goaway {s['goaway']} rst {s['stream_resets']} closed {s['closed']}"
    g = a["regular"]
    print(f"{name:<15} {sent:>22} {said:>34} {a['gateway_cpu_s']:>6} {a['gateway_cpu_share']:>9.0%} "
          f"{a['gateway_rss_kb_peak'] / 1024:>7.1f}Mi {g['p50_us'] / 1000:>8.2f} / {g['p99_us'] / 1000:>7.2f} "
          f"{g['errors']:>6} {a['backend_calls']:>8}/{a['backend_abandoned']}/{a['backend_in_flight_after']}")
EOF
log "wrote $OUT/h2-abuse.json"
