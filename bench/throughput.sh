#!/usr/bin/env bash
# Aggregation throughput (targets.md, first row): three loopback backends
# serving ~200-byte JSON (nginx, one worker), an endpoint merging all three,
# closed-loop load from wrk (64 connections, 10 s), measured side by side in
# one run: the backends directly, the Go reference gateway
# (bench/go-reference: errgroup + net/http + encoding/json), and fanout.
#
# Needs Debian's nginx-light, wrk, golang-go, golang-golang-x-sync-dev:
#   apt-get install -y nginx-light wrk golang-go golang-golang-x-sync-dev
# Run: bash bench/throughput.sh [seconds, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-10}
WORK=$(mktemp -d)
cargo build --release --quiet --bin fanout
GO111MODULE=off GOPATH=/usr/share/gocode go build -o "$WORK/go-reference" bench/go-reference/main.go

# Three backends, each a ~200-byte JSON object with its own keys.
body() { python3 -c "import json; print(json.dumps({f'$1_{i}': 'v' * 12 for i in range(8)}))"; }
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:19301; location /data { default_type application/json; return 200 '$(body one)'; } }
  server { listen 127.0.0.1:19302; location /data { default_type application/json; return 200 '$(body two)'; } }
  server { listen 127.0.0.1:19303; location /data { default_type application/json; return 200 '$(body three)'; } }
}
CONF
nginx -c "$WORK/nginx.conf" -p "$WORK" &
NGINX=$!
"$WORK/go-reference" -listen 127.0.0.1:19280 \
  -backends http://127.0.0.1:19301/data,http://127.0.0.1:19302/data,http://127.0.0.1:19303/data &
GO=$!
RUST_LOG=${FANOUT_LOG:-info} target/release/fanout serve -c bench/throughput-gateway.yaml >/dev/null 2>&1 &
FANOUT=$!
trap 'kill $NGINX $GO $FANOUT 2>/dev/null || true; rm -rf "$WORK"' EXIT
for url in http://127.0.0.1:19301/data http://127.0.0.1:19280/merged http://127.0.0.1:19180/merged; do
  for _ in $(seq 100); do curl -sf -o /dev/null "$url" && break; sleep 0.1; done
done

run() { # name url pid -> "name req/s p50 p99 rss_kb"
  wrk -t2 -c64 -d2s "$2" >/dev/null  # warm-up
  local out rps p50 p99 rss
  out=$(wrk -t2 -c64 -d"${SECONDS_PER_RUN}"s --latency "$2")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  rss=$([ -n "$3" ] && ps -o rss= -p "$3" | tr -d ' ' || echo "-")
  echo "$1 $rps $p50 $p99 $rss"
}
{
  run direct http://127.0.0.1:19301/data ""
  run go-reference http://127.0.0.1:19280/merged "$GO"
  run fanout http://127.0.0.1:19180/merged "$FANOUT"
} > "$WORK/results"

python3 - "$WORK/results" <<'PY'
import sys
def ms(v):
    return float(v[:-2]) if v.endswith("ms") else float(v[:-2]) / 1000 if v.endswith("us") else float(v[:-1]) * 1000
rows = [line.split() for line in open(sys.argv[1])]
by = {r[0]: r for r in rows}
print("| target | requests/s | p50 | p99 | RSS |")
print("|---|---:|---:|---:|---:|")
for name, rps, p50, p99, rss in rows:
    rss_text = f"{int(rss) / 1024:.1f} MiB" if rss != "-" else "-"
    print(f"| {name} | {float(rps):,.0f} | {ms(p50):.2f} ms | {ms(p99):.2f} ms | {rss_text} |")
go, fo = by["go-reference"], by["fanout"]
print()
print(f"fanout ÷ Go: requests/s {float(fo[1]) / float(go[1]):.2f}× (target ≥ 2.0×), "
      f"p99 {ms(fo[3]) / ms(go[3]):.2f}× (target ≤ 0.5×), RSS {int(fo[4]) / int(go[4]):.2f}× (target ≤ 1×)")
PY
