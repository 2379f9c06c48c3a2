#!/usr/bin/env bash
# A/B comparison of fanout builds on the aggregation throughput scenario, for
# work on the hot path: is change B faster than A, beyond the machine's noise?
#
# Starts the 3 nginx backends and the Go reference of bench/run.sh, one
# gateway per binary given, then runs wrk (2 threads, 64 connections) against
# Go and each binary in turn, ROUNDS times, interleaved, so that all of them
# see the same drift of a shared machine. Prints the medians over the rounds
# and each binary's ratios to Go and to the first binary.
#
# Usage:
#   bash bench/ab.sh BIN_A [BIN_B ...]        e.g. target/release/fanout /tmp/b/release/fanout
# Settings (environment):
#   AB_ROUNDS=5        rounds (each: Go, then every binary)
#   AB_SECONDS=5       wrk duration per run (after a 1 s warm-up per target)
#   AB_THREADS=        `fanout serve --threads` (default: the binary's default)
#   AB_OPENRESTY=0     1: the OpenResty-style peer (bench/openresty, one worker)
#                      runs in the rounds too, checked to answer fanout's bytes,
#                      and the table gets each binary's ratios to it
#   FANOUT_LOG=info    RUST_LOG of the gateways
#   BENCH_PORT_OFFSET=0
# Same ports and packages as bench/run.sh (19180-19190, 19280, 19284,
# 19301-19303).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$PATH:/usr/sbin:/sbin"
[ $# -ge 1 ] || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
ROUNDS=${AB_ROUNDS:-5} SECONDS_PER_RUN=${AB_SECONDS:-5} OFF=${BENCH_PORT_OFFSET:-0}
FANOUT_LOG=${FANOUT_LOG:-info}
for cmd in nginx wrk go python3 curl; do
  command -v "$cmd" >/dev/null || { echo "ab.sh: $cmd is needed (see bench/run.sh)" >&2; exit 1; }
done
BINS=()
for bin in "$@"; do
  [ -x "$bin" ] || { echo "ab.sh: no executable at $bin" >&2; exit 2; }
  BINS+=("$(realpath "$bin")")
done
[ ${#BINS[@]} -le 10 ] || { echo "ab.sh: at most 10 binaries" >&2; exit 2; }

WORK=$(mktemp -d /tmp/fanout-ab.XXXXXX)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
lib() { python3 "$ROOT/bench/lib.py" "$@"; }
ready() { # URL
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1" || true)" = 200 ] && return 0
    sleep 0.1
  done
  echo "ab.sh: $1 does not answer 200" >&2
  exit 1
}

NG1=$((19301 + OFF)) NG2=$((19302 + OFF)) NG3=$((19303 + OFF)) GO=$((19280 + OFF))
lib nginx-conf "$WORK" "$OFF" > "$WORK/nginx.conf"
nginx -c "$WORK/nginx.conf" -p "$WORK" -e "$WORK/nginx-error.log" &
PIDS+=($!)
NGINX=$!
GO111MODULE=off GOPATH=/usr/share/gocode go build -o "$WORK/go-reference" bench/go-reference/main.go
"$WORK/go-reference" -listen "127.0.0.1:$GO" \
  -backends "http://127.0.0.1:$NG1/data,http://127.0.0.1:$NG2/data,http://127.0.0.1:$NG3/data" &
PIDS+=($!)
TARGETS=("go=$!=http://127.0.0.1:$GO/merged")
if [ "${AB_OPENRESTY:-0}" = 1 ]; then
  [ -e /usr/lib/nginx/modules/ngx_http_lua_module.so ] ||
    { echo "ab.sh: AB_OPENRESTY=1 needs libnginx-mod-http-lua and lua-cjson (see bench/run.sh)" >&2; exit 1; }
  mkdir -p "$WORK/openresty"
  lib shift-ports bench/openresty/nginx.conf "$OFF" > "$WORK/openresty/nginx.conf"
  cp bench/openresty/merge.lua "$WORK/openresty/"
  nginx -p "$WORK/openresty/" -c nginx.conf -e "$WORK/openresty/error.log" 2>"$WORK/openresty.err" &
  PIDS+=($!)
  # CPU and RSS: the master and its worker.
  TARGETS+=("openresty=$!+=http://127.0.0.1:$((19284 + OFF))/merged")
fi
index=0
for bin in "${BINS[@]}"; do
  port=$((19180 + OFF + index))
  lib shift-ports bench/throughput-gateway.yaml "$OFF" |
    sed "s/127.0.0.1:$((19180 + OFF))\"/127.0.0.1:$port\"/" > "$WORK/gateway-$index.yaml"
  env RUST_LOG="$FANOUT_LOG" "$bin" serve -c "$WORK/gateway-$index.yaml" ${AB_THREADS:+--threads "$AB_THREADS"} \
    >/dev/null 2>"$WORK/fanout-$index.err" &
  PIDS+=($!)
  TARGETS+=("$((index + 1))=$!=http://127.0.0.1:$port/merged")
  index=$((index + 1))
done
for port in "$NG1" "$NG2" "$NG3"; do ready "http://127.0.0.1:$port/data"; done
for target in "${TARGETS[@]}"; do ready "${target##*=}"; done
if [ "${AB_OPENRESTY:-0}" = 1 ]; then
  lib same-body "http://127.0.0.1:$((19180 + OFF))/merged" "http://127.0.0.1:$((19284 + OFF))/merged" openresty >&2 ||
    { echo "ab.sh: the OpenResty-style peer does not merge as fanout does" >&2; exit 1; }
fi
for target in "${TARGETS[@]}"; do timeout 30 wrk -t2 -c64 -d1s "${target##*=}" >/dev/null; done

for round in $(seq "$ROUNDS"); do
  for target in "${TARGETS[@]}"; do
    name=${target%%=*} rest=${target#*=}
    pid=${rest%%=*} url=${rest#*=}
    lib wrk-run "$url" "$SECONDS_PER_RUN" "$pid" "$NGINX" > "$WORK/run-$name-$round.json"
  done
  echo "round $round/$ROUNDS done" >&2
done

python3 - "$WORK" "$ROUNDS" "${AB_OPENRESTY:-0}" "${BINS[@]}" <<'EOF'
import json, statistics, sys
work, rounds, openresty, bins = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4:]
peers = ["go"] + (["openresty"] if openresty else [])
names = peers + [str(i + 1) for i in range(len(bins))]
def runs(name):
    return [json.load(open(f"{work}/run-{name}-{r}.json")) for r in range(1, rounds + 1)]
def med(rows, key):
    values = [row[key] for row in rows if row.get(key) is not None]
    return statistics.median(values) if values else None
table = {name: runs(name) for name in names}
go_rps = med(table["go"], "requests_per_s")
first = None
orr = table.get("openresty")
or_rps, or_p99, or_cpu = (med(orr, k) for k in ("requests_per_s", "p99_ms", "cpu_us_per_request")) if orr else (None,) * 3
extra = f" {'req/s ÷ OR':>10} {'p99 ÷ OR':>8} {'CPU ÷ OR':>8}" if orr else ""
print(f"{'target':<10} {'req/s':>9} {'÷ Go':>6} {'÷ 1':>6} {'p99 ms':>8} {'CPU µs/req':>10} {'RSS MiB':>8}{extra}  binary")
labels = {"go": "Go reference", "openresty": "OpenResty-style (1 worker; CPU, RSS: master + worker)"}
for name in names:
    rows = table[name]
    rps = med(rows, "requests_per_s")
    first = first or (rps if name == "1" else None)
    p99 = med(rows, "p99_ms")
    cpu = med(rows, "cpu_us_per_request")
    rss = rows[-1].get("rss_kb")
    label = labels.get(name) or bins[int(name) - 1]
    vs_first = f"{rps / first:6.3f}" if first and name not in peers else "     -"
    vs_or = ""
    if orr:
        vs_or = f" {rps / or_rps:10.3f} {p99 / or_p99:8.3f} {(cpu or 0) / or_cpu:8.3f}" if name not in peers else f" {'-':>10} {'-':>8} {'-':>8}"
    print(f"{name:<10} {rps:>9,.0f} {rps / go_rps:6.3f} {vs_first} {p99:8.2f} {cpu or 0:10.1f} {(rss or 0) / 1024:8.1f}{vs_or}  {label}")
print(f"medians over {rounds} interleaved rounds; per-round req/s and CPU µs/request:")
for name in names:
    print(f"  {name:<9} " + " ".join(f"{row['requests_per_s']:,.0f}" for row in table[name])
          + "  |  " + " ".join(f"{row.get('cpu_us_per_request') or 0:.1f}" for row in table[name]))
EOF
