#!/usr/bin/env bash
# Slow and idle clients (targets.md, "Reliability and security"): a regular
# client's latency, alone and then while hostile clients hold connections.
#
#   backend   `fanout mock`: GET /small (1 ms), GET /big (a 1 MiB JSON answer),
#             GET /huge (6 MiB)
#   gateway   `fanout serve` with max_connections 1500, header_read_timeout 5s,
#             idle_timeout 10s, write_timeout 5s, response_buffer
#             { per_connection: 8MiB, total: 64MiB } (written to a temporary file)
#   regular   bench/loadgen.py: 100 GET /small a second over one keep-alive
#             connection; SLOW_BASELINE seconds alone, then during each attack
#   hostile   bench/slow_clients.py, opened 1 s into the regular client's run:
#             20 HTTP/1.1 slow readers (GET /huge, never read), 4 HTTP/2
#             connections with a zero window and 10 GET /big streams each,
#             200 slowloris (headers at 1 byte/s), 2 000 idle keep-alive
#             connections (one request, then silence): 2 224 in all, over the cap.
#             SLOW_ROUNDS attacks one after the other: memory that a second
#             attack does not grow past the first's peak is bounded, not leaked
#
# Prints the regular client's p50/p99 with and without the hostile ones, and
# for each hostile kind how many were refused (503 too many connections),
# served, closed by the gateway and how long after they opened, still open;
# the gateway's RSS peak and its fds over time. Writes
# bench/results/slow-clients.json.
#
# Settings (environment): SLOW_BASELINE=10, SLOW_SECONDS=30 (each attack),
# SLOW_ROUNDS=2, SLOW_IDLE=2000, BENCH_NO_BUILD=1, CARGO_TARGET_DIR.
# Listens on 127.0.0.1:19403 (mock) and 127.0.0.1:19482 (gateway); stops
# everything it started on exit. Needs python's h2 (pip install h2).
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=slow-clients
source bench/reliability.sh
BASELINE=${SLOW_BASELINE:-10}
ATTACK=${SLOW_SECONDS:-30}
IDLE=${SLOW_IDLE:-2000}
ROUNDS=${SLOW_ROUNDS:-2}
BIG=$((1 << 20))
HUGE=$((6 << 20))
needs_h2
reliability_start 19403 19482
# 2 224 hostile connections, on both ends of loopback.
ulimit -n 16384

python3 -c "import json,sys; json.dump({'blob': 'x' * ($BIG - 12)}, open(sys.argv[1], 'w'))" "$WORK/big.json"
python3 -c "import json,sys; json.dump({'blob': 'x' * ($HUGE - 12)}, open(sys.argv[1], 'w'))" "$WORK/huge.json"
cat >"$WORK/mock.yaml" <<EOF
listen: "127.0.0.1:19403"
routes:
  - { path: /small, latency: 1ms, body: { ok: true } }
  - { path: /big, body_file: big.json }
  - { path: /huge, body_file: huge.json }
EOF
cat >"$WORK/gateway.yaml" <<EOF
server:
  listen: "127.0.0.1:19482"
  max_connections: 1500
  header_read_timeout: 5s
  idle_timeout: 10s
  write_timeout: 5s
  response_buffer: { per_connection: 8MiB, total: 64MiB }
  shutdown_grace: 1s
endpoints:
  - route: GET /small
    backends: [{ name: small, url: "http://127.0.0.1:19403/small", required: true }]
  - route: GET /big
    backends: [{ name: big, url: "http://127.0.0.1:19403/big", required: true }]
  - route: GET /huge
    backends: [{ name: huge, url: "http://127.0.0.1:19403/huge", required: true }]
EOF

"$FANOUT" mock -c "$WORK/mock.yaml" >/dev/null 2>&1 &
PIDS+=($!)
RUST_LOG=${FANOUT_LOG:-info} "$FANOUT" serve -c "$WORK/gateway.yaml" >/dev/null 2>&1 &
GATEWAY=$!
PIDS+=("$GATEWAY")
wait_ports 19403 19482

log "uptime: $(uptime)"
log "regular client alone, ${BASELINE} s"
python3 bench/loadgen.py --rate 100 --seconds "$BASELINE" --warmup 1 regular=http://127.0.0.1:19482/small >"$WORK/alone.json"

for round in $(seq 1 "$ROUNDS"); do
  log "attack $round: regular client with ${IDLE} idle + 200 slowloris + 24 slow readers, ${ATTACK} s"
  python3 bench/loadgen.py --rate 100 --seconds "$((ATTACK - 2))" --warmup 1 regular=http://127.0.0.1:19482/small >"$WORK/attacked-$round.json" &
  LOADGEN=$!
  PIDS+=("$LOADGEN")
  sleep 1
  python3 bench/slow_clients.py --port 19482 --gateway-pid "$GATEWAY" --idle "$IDLE" \
    --big-bytes "$HUGE" --seconds "$ATTACK" --out "$WORK/hostile-$round.json" >/dev/null
  wait "$LOADGEN"
  python3 -c 'import json, sys; sys.path.insert(0, "bench"); from reliability import sample; json.dump(sample(int(sys.argv[1])), open(sys.argv[2], "w"))' "$GATEWAY" "$WORK/after-$round.json"
done
# After the attack: is the cap free again?
after=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:19482/small || true)
log "uptime: $(uptime)"

python3 - "$WORK" "$OUT/slow-clients.json" "$after" "$GATEWAY" "$ROUNDS" <<'EOF'
import json, sys
sys.path.insert(0, "bench")
from reliability import machine_load, sample
work, out, after, pid, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
alone = json.load(open(f"{work}/alone.json"))["targets"]["regular"]
pick = lambda r: {k: r[k] for k in ("count", "errors", "statuses", "p50_us", "p99_us", "max_us")}
report = {"regular_alone": pick(alone), "rounds": []}
for n in range(1, rounds + 1):
    attacked = json.load(open(f"{work}/attacked-{n}.json"))["targets"]["regular"]
    hostile = json.load(open(f"{work}/hostile-{n}.json"))
    report["rounds"].append({
        "regular_attacked": pick(attacked),
        "p50_ratio": round(attacked["p50_us"] / alone["p50_us"], 2),
        "p99_ratio": round(attacked["p99_us"] / alone["p99_us"], 2),
        "hostile": hostile["kinds"],
        "hostile_opened_in_s": hostile["opened_in_s"],
        "gateway_rss_peak_kb": hostile["gateway_rss_peak_kb"],
        "gateway_after": json.load(open(f"{work}/after-{n}.json")),
        "series": hostile["series"],
    })
report["gateway_at_end"] = sample(pid)
report["new_request_after_attacks"] = after
report["machine"] = machine_load()
json.dump(report, open(out, "w"), indent=1)
json.dump({k: v if k != "rounds" else [{a: b for a, b in r.items() if a != "series"} for r in v]
           for k, v in report.items()}, sys.stdout, indent=1)
print()
EOF
log "wrote $OUT/slow-clients.json"
