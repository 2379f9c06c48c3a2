#!/usr/bin/env bash
# Instructions and allocations per aggregated request, counted exactly: the
# development metric for work on the hot path on a shared, noisy machine
# (this VM has no hardware counters, and wall-clock time drifts with the
# other tenants; valgrind's counts do not).
#
# For each fanout binary given: the throughput scenario of bench/run.sh (3
# nginx backends, GET /merged merges all 3) with `fanout serve --threads 1`
# under `valgrind --tool=callgrind`; wrk -t1 -c$CG_CONNECTIONS makes
# $CG_WARMUP requests, the counters are zeroed (callgrind_control -z), wrk
# makes $CG_REQUESTS more (a wrk script stops at that count), and the counters
# are dumped. Prints, per binary: instructions per request (Ir), calls to
# malloc/realloc/calloc per request, and the functions with the most
# instructions (self), so two builds can be compared function by function.
#
# Usage:
#   bash bench/callgrind.sh BIN [BIN ...]
# Settings (environment):
#   CG_REQUESTS=2000     requests counted
#   CG_WARMUP=300        requests before counting
#   CG_CONNECTIONS=16    wrk connections
#   CG_TOP=25            functions listed per binary (0: none)
#   CG_KEEP=DIR          keep the callgrind files there (for callgrind_annotate)
#   CG_TLS=1             the "TLS to backends" scenario instead: the three
#                        backends behind TLS, bench/tls-gateway.yaml
#   FANOUT_LOG=info      RUST_LOG of fanout (info: one log line per request)
#   BENCH_PORT_OFFSET=0  as in bench/run.sh (ports 19185 and 19301-19303, shifted)
# Needs valgrind, nginx, wrk, python3, curl. Everything listens on 127.0.0.1
# and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$PATH:/usr/sbin:/sbin"
[ $# -ge 1 ] || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
REQUESTS=${CG_REQUESTS:-2000} WARMUP=${CG_WARMUP:-300} CONNECTIONS=${CG_CONNECTIONS:-16}
TOP=${CG_TOP:-25} OFF=${BENCH_PORT_OFFSET:-0} FANOUT_LOG=${FANOUT_LOG:-info}
for v in REQUESTS WARMUP CONNECTIONS TOP OFF; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "callgrind.sh: $v must be a whole number" >&2; exit 2; }
done
for cmd in valgrind callgrind_control nginx wrk python3 curl; do
  command -v "$cmd" >/dev/null || { echo "callgrind.sh: $cmd is needed" >&2; exit 1; }
done
BINS=()
for bin in "$@"; do
  [ -x "$bin" ] || { echo "callgrind.sh: no executable at $bin" >&2; exit 2; }
  BINS+=("$(realpath "$bin")")
done

WORK=$(mktemp -d /tmp/fanout-callgrind.XXXXXX)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
lib() { python3 "$ROOT/bench/lib.py" "$@"; }
ready() { # URL SECONDS
  for _ in $(seq $(($2 * 10))); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true)" = 200 ] && return 0
    sleep 0.1
  done
  echo "callgrind.sh: $1 does not answer 200" >&2
  exit 1
}
NG1=$((19301 + OFF)) NG2=$((19302 + OFF)) NG3=$((19303 + OFF)) PORT=$((19185 + OFF))
busy=$(lib ports-busy "$NG1" "$NG2" "$NG3" "$PORT")
[ -z "$busy" ] || { echo "callgrind.sh: ports in use: $busy (set BENCH_PORT_OFFSET)" >&2; exit 1; }
lib nginx-conf "$WORK" "$OFF" > "$WORK/nginx.conf"
nginx -c "$WORK/nginx.conf" -p "$WORK" -e "$WORK/nginx-error.log" &
PIDS+=($!)
for port in "$NG1" "$NG2" "$NG3"; do ready "http://127.0.0.1:$port/data" 10; done
if [ "${CG_TLS:-0}" = 1 ]; then
  # The TLS scenario: the same backends behind TLS (a test CA made by the
  # first binary), bench/tls-gateway.yaml verifying them.
  "${BINS[0]}" mock --make-certs "$WORK/certs" >/dev/null
  lib nginx-tls-conf "$WORK" "$OFF" "$WORK/certs/mock.pem" "$WORK/certs/mock-key.pem" > "$WORK/nginx-tls.conf"
  nginx -c "$WORK/nginx-tls.conf" -p "$WORK" -e "$WORK/nginx-tls-error.log" &
  PIDS+=($!)
  for port in 19311 19312 19313; do
    for _ in $(seq 100); do
      [ "$(curl -sk -o /dev/null -w '%{http_code}' --max-time 1 "https://127.0.0.1:$((port + OFF))/data" || true)" = 200 ] && break
      sleep 0.1
    done
  done
  lib shift-ports bench/tls-gateway.yaml "$OFF" |
    sed "s/127.0.0.1:$((19190 + OFF))\"/127.0.0.1:$PORT\"/" > "$WORK/gateway.yaml"
else
  lib shift-ports bench/throughput-gateway.yaml "$OFF" |
    sed "s/127.0.0.1:$((19180 + OFF))\"/127.0.0.1:$PORT\"/" > "$WORK/gateway.yaml"
fi

stop_at() { # N: a wrk script that stops its one thread after N responses
  cat <<EOF
local done = 0
function response()
  done = done + 1
  if done == $1 then
    wrk.thread:stop()
    io.open("$WORK/wrk-done", "w"):close()
  end
end
EOF
}
count() { # N URL: wrk until N responses
  local pid
  stop_at "$1" > "$WORK/stop.lua"
  rm -f "$WORK/wrk-done"
  wrk -t1 -c"$CONNECTIONS" -d600s -s "$WORK/stop.lua" "$2" > "$WORK/wrk.txt" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null && [ ! -e "$WORK/wrk-done" ]; do sleep 0.05; done
  kill -INT "$pid" 2>/dev/null || true
  wait "$pid" || { echo "callgrind.sh: wrk failed: $(cat "$WORK/wrk.txt")" >&2; exit 1; }
  grep -q 'Non-2xx' "$WORK/wrk.txt" && { echo "callgrind.sh: errors: $(cat "$WORK/wrk.txt")" >&2; exit 1; }
  return 0
}

index=0
for bin in "${BINS[@]}"; do
  index=$((index + 1))
  out=$WORK/callgrind-$index.out
  env RUST_LOG="$FANOUT_LOG" valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$bin" serve -c "$WORK/gateway.yaml" --threads 1 >/dev/null 2>"$WORK/fanout-$index.err" &
  pid=$!
  PIDS+=("$pid")
  ready "http://127.0.0.1:$PORT/merged" 60
  count "$WARMUP" "http://127.0.0.1:$PORT/merged"
  callgrind_control -z "$pid" >/dev/null
  count "$REQUESTS" "http://127.0.0.1:$PORT/merged"
  callgrind_control -d "$pid" >/dev/null
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  # The dump after zeroing is the file with the highest part number.
  dump=$(ls -1 "$out".* 2>/dev/null | sort -t. -k3 -n | tail -1)
  [ -n "$dump" ] || { echo "callgrind.sh: no dump for $bin" >&2; exit 1; }
  cp "$dump" "$WORK/counted-$index.out"
  if [ -n "${CG_KEEP:-}" ]; then mkdir -p "$CG_KEEP" && cp "$dump" "$CG_KEEP/callgrind-$index.out"; fi
done

python3 - "$WORK" "$REQUESTS" "$TOP" "${BINS[@]}" <<'EOF'
import collections, re, sys
work, requests, top, bins = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
ALLOC = {"malloc", "realloc", "calloc"}

def read(path):
    """Total Ir, Ir per function (self), calls to the allocators."""
    names, self_ir, allocs = {}, collections.Counter(), 0
    fn = cfn = None
    total = None
    in_call = False
    def name(kind, rest):
        m = re.match(r"\((\d+)\)(?: (.*))?", rest)
        if not m:
            return rest
        key = (kind, m.group(1))
        if m.group(2):
            names[key] = m.group(2)
        return names.get(key, m.group(1))
    for line in open(path, errors="replace"):
        if line.startswith("fn="):
            fn = name("fn", line[3:].strip()); in_call = False
        elif line.startswith("cfn="):
            cfn = name("fn", line[4:].strip())
        elif line.startswith("cfi=") or line.startswith("cfl="):
            pass
        elif line.startswith("calls="):
            in_call = True
            if cfn in ALLOC:
                allocs += int(line.split()[0][6:])
        elif line.startswith("totals:") or line.startswith("summary:"):
            total = int(line.split()[1])
        elif line and (line[0].isdigit() or line[0] in "+-*"):
            parts = line.split()
            if in_call:
                in_call = False  # the cost line of a call: inclusive, not self
            elif len(parts) >= 2 and fn is not None:
                self_ir[fn] += int(parts[1])
        elif line.startswith("fl=") or line.startswith("fi=") or line.startswith("fe="):
            pass
    return total or sum(self_ir.values()), self_ir, allocs

rows = [read(f"{work}/counted-{i + 1}.out") for i in range(len(bins))]
print(f"{'build':<6} {'Ir / request':>13} {'÷ 1':>6} {'allocs / request':>17}  binary")
for i, (total, _, allocs) in enumerate(rows):
    ratio = total / rows[0][0]
    print(f"{i + 1:<6} {total / requests:>13,.0f} {ratio:6.3f} {allocs / requests:>17.1f}  {bins[i]}")
print(f"{requests} requests counted after a warm-up, wrk -t1; Ir: instructions executed by the gateway (all threads).")
for i, (total, self_ir, _) in enumerate(rows):
    if not top:
        break
    print(f"\nbuild {i + 1}: the {top} functions with the most instructions (self), per request")
    for fn, ir in self_ir.most_common(top):
        short = re.sub(r"::h[0-9a-f]{16}$", "", fn)
        print(f"  {ir / requests:>9,.0f} {100 * ir / total:5.1f} %  {short[:150]}")
EOF
