#!/usr/bin/env bash
# Tail latency with and without hedging (targets.md): one backend whose calls
# take 1 ms 97 % of the time and 100 ms 3 % of the time; the same endpoint
# without and with `hedge: { percentile: 95, max_extra: 10% }`.
#
# Run: bash bench/tail-latency.sh [requests per round, default 3000]
# Prints a markdown table: p50 and p99 of the endpoint, and the extra calls.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-3000}
cargo build --release --quiet --bin fanout
BIN=target/release/fanout
export GATEWAY_PORT=19180

$BIN mock -c bench/tail-mock.yaml >/dev/null &
MOCK=$!
$BIN serve -c bench/tail-gateway.yaml >/dev/null 2>&1 &
GATEWAY=$!
trap 'kill $MOCK $GATEWAY 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$GATEWAY_PORT/plain" && break
  sleep 0.1
done

stats() { curl -s http://127.0.0.1:19101/__mock/stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])'; }
urls() { python3 -c "import sys; [print('http://127.0.0.1:$GATEWAY_PORT/$1') for _ in range($2)]"; }

run() { # endpoint -> JSON report; the backend calls it caused are in $CALLS
  local before after
  before=$(stats)
  urls "$1" "$N" | $BIN fetch --limit 16 --timeout 5s --json -f - > "/tmp/fanout-tail-$1.json" || true
  after=$(stats)
  echo $((after - before)) > "/tmp/fanout-tail-$1.calls"
}

# Warm up both (the hedged upstream learns its p95), then measure one after
# the other, within seconds of each other on the same machine.
urls plain 300 | $BIN fetch --limit 16 --json -f - >/dev/null || true
urls hedged 300 | $BIN fetch --limit 16 --json -f - >/dev/null || true
for endpoint in plain hedged; do run "$endpoint"; done

python3 - "$N" <<'PY'
import json, sys
n = int(sys.argv[1])
print("| endpoint | requests | p50 | p99 | failed | backend calls | extra calls |")
print("|---|---:|---:|---:|---:|---:|---:|")
for name in ("plain", "hedged"):
    report = json.load(open(f"/tmp/fanout-tail-{name}.json"))
    lat = sorted(r["latency_ms"] for r in report["requests"])
    pct = lambda p: lat[min(len(lat) - 1, round(p / 100 * (len(lat) - 1)))]
    calls = int(open(f"/tmp/fanout-tail-{name}.calls").read())
    extra = (calls - n) / n * 100
    print(f"| {name} | {n} | {pct(50):.1f} ms | {pct(99):.1f} ms | {report['failed']} | {calls} | {extra:.1f} % |")
PY
