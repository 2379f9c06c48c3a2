#!/usr/bin/env bash
# Every row of the performance table in targets.md, with one command, side by
# side with the Go reference gateway (bench/go-reference) in the same run:
#
#   throughput  aggregation throughput: 3 nginx backends, GET /merged merges all
#               3; wrk -t2 -c64; direct (one backend) once, then in alternating
#               rounds: go-reference, the two peers (bench/openresty: nginx + Lua,
#               one worker; bench/node-gateway: node:http + undici), fanout with
#               its default threads (one per CPU) and fanout --threads 1. Each
#               peer must answer the very bytes fanout answers, or the run stops
#   memory      RSS of each gateway during and after its throughput run, and its
#               CPU time per request over that run (measured with throughput;
#               for nginx, master + worker)
#   overhead    fixed-rate open-loop load (bench/loadgen.py): gateway p50 minus
#               the slowest backend's p50, all measured at the same moments; and
#               the floor of one more hop: nginx proxy_pass to one backend, beside
#               fanout making that one call
#   width       1, 3, 10, 30 backend calls per request: requests/s × width
#   tail        one backend, 97 % in 1 ms, 3 % in 100 ms: plain vs hedged
#   failfast    a required call fails at 50 ms, another would take 2 s
#   group       cargo bench -p fanout-group --bench group (divan)
#   tls         the throughput scenario with the 3 nginx backends behind TLS
#               (a test CA made by `fanout mock --make-certs`), fanout and the
#               Go reference both verifying with it, in alternating rounds,
#               with a variant of the Go reference beside them (-detached:
#               its connections are not lost to a cancelled context); the
#               backends' new connections (TLS handshakes) are counted over
#               each measured run (nginx stub_status)
#   h2          the same backends speaking HTTP/2 (nginx `ssl http2`): fanout
#               with `http2: auto` against fanout with `http2: never`, in
#               alternating rounds; connections to the backends counted
#   hosts       4 replicas under steady load (bench/failover.py, an open-loop
#               client); the 4th starts answering 500 after 3 s (nginx
#               reloaded), refuses connections after 6 s (stopped): errors
#               that reach clients within 1 s of the failure, the failing
#               replica's share of attempts while ejected; fanout with retries
#               and ejection, then a control without
#
# Usage:
#   bash bench/run.sh            # everything (≈ 10 minutes), writes BENCHMARKS.md
#   bash bench/run.sh --quick    # BENCH_SECONDS=2 and shorter rounds (≈ 2 minutes)
#
# Settings (environment):
#   BENCH_SECONDS=10      wrk and fixed-rate durations (width rounds: half, ≥ 2 s)
#   BENCH_ONLY=a,b        only these scenarios (names above); results go to
#                         bench/results/partial.json and BENCHMARKS.md is left alone
#   BENCH_SKIP_GROUP=1    skip the task-group benchmark (its rows say "skipped")
#   TAIL_REQUESTS=3000    requests per endpoint in the tail scenario
#   FAILFAST_REQUESTS=20  sequential requests per gateway in the fail-fast scenario
#   THROUGHPUT_ROUNDS=3   rounds of the throughput scenario (every gateway in turn,
#                         each round starting one further along the list; the
#                         figures are medians over the rounds)
#   OVERHEAD_RATE=200     requests/s per target in the overhead scenario
#   GROUP_MAX_TIME=3      divan's --max-time per benchmark, in seconds
#   FANOUT_LOG=info       RUST_LOG of the fanout gateways (info: its default, one
#                         line per request, written to /dev/null)
#   HOSTS_RATE=1000       requests/s of the hosts scenario
#   HOSTS_SECONDS=10      length of each hosts run (8-300; the failure comes at 3 s, refusals at 6 s)
#   BENCH_PORT_OFFSET=0   added to every port (e.g. 300 while something else uses the defaults)
#   BENCH_NO_BUILD=1      use the fanout binary already built (no cargo build)
#   CARGO_TARGET_DIR      where cargo builds (the binary: $CARGO_TARGET_DIR/release/fanout)
#
# Syscalls and context switches per request, fanout against the OpenResty-style
# peer: bash bench/syscalls.sh (separately; not part of this run).
#
# A run covering every scenario writes bench/results/latest.json, the plots
# bench/results/*.svg and the generated part of BENCHMARKS.md (between
# <!-- bench:begin --> and <!-- bench:end -->), via bench/report.py.
#
# Needs Debian's nginx-light, libnginx-mod-http-lua, lua-cjson, wrk, golang-go
# and golang-golang-x-sync-dev (installed with apt-get when missing, as root),
# Node.js ≥ 18.17 with npm (the machine's, or Debian's nodejs and npm when there
# is none), python3, curl, cargo. The Node peer's one dependency (undici) comes
# from the npm registry: `npm ci` in bench/node-gateway when its node_modules is
# missing (the versions of its package-lock.json).
# Everything listens on 127.0.0.1, ports 19101-19334; every process it starts
# is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$PATH:/usr/sbin:/sbin"

# The command as run, with the settings given in the environment that change
# the figures (not BENCH_PORT_OFFSET or BENCH_NO_BUILD).
CMDLINE="bash bench/run.sh${*:+ $*}"
for var in GROUP_MAX_TIME OVERHEAD_RATE FAILFAST_REQUESTS TAIL_REQUESTS THROUGHPUT_ROUNDS \
  BENCH_SKIP_GROUP BENCH_ONLY FANOUT_LOG BENCH_SECONDS HOSTS_RATE HOSTS_SECONDS; do
  if [ -n "${!var:-}" ]; then CMDLINE="$var=${!var} $CMDLINE"; fi
done

QUICK=0
for arg in "$@"; do
  case $arg in
    --quick) QUICK=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done
if [ "$QUICK" = 1 ]; then
  : "${BENCH_SECONDS:=2}" "${TAIL_REQUESTS:=1000}" "${GROUP_MAX_TIME:=0.5}" "${THROUGHPUT_ROUNDS:=1}"
fi
BENCH_SECONDS=${BENCH_SECONDS:-10}
TAIL_REQUESTS=${TAIL_REQUESTS:-3000}
FAILFAST_REQUESTS=${FAILFAST_REQUESTS:-20}
OVERHEAD_RATE=${OVERHEAD_RATE:-200}
ROUNDS=${THROUGHPUT_ROUNDS:-3}
GROUP_MAX_TIME=${GROUP_MAX_TIME:-3}
FANOUT_LOG=${FANOUT_LOG:-info}
BENCH_ONLY=${BENCH_ONLY:-}
BENCH_SKIP_GROUP=${BENCH_SKIP_GROUP:-0}
PORT_OFFSET=${BENCH_PORT_OFFSET:-0}
HOSTS_RATE=${HOSTS_RATE:-1000}
HOSTS_SECONDS=${HOSTS_SECONDS:-10}
S=$BENCH_SECONDS
WIDTH_SECONDS=$((S / 2 < 2 ? 2 : S / 2))
ALL_SCENARIOS="throughput overhead width tail failfast group tls h2 hosts"
[[ $ROUNDS =~ ^[0-9]+$ ]] && [ "$ROUNDS" -ge 1 ] || { echo "run.sh: THROUGHPUT_ROUNDS must be a whole number ≥ 1" >&2; exit 2; }
[[ $S =~ ^[0-9]+$ ]] && [ "$S" -ge 1 ] || { echo "run.sh: BENCH_SECONDS must be a whole number of seconds ≥ 1" >&2; exit 2; }
[[ $HOSTS_RATE =~ ^[0-9]+$ ]] && [ "$HOSTS_RATE" -ge 10 ] && [ "$HOSTS_RATE" -le 5000 ] ||
  { echo "run.sh: HOSTS_RATE must be a whole number from 10 to 5000" >&2; exit 2; }
[[ $HOSTS_SECONDS =~ ^[0-9]+$ ]] && [ "$HOSTS_SECONDS" -ge 8 ] && [ "$HOSTS_SECONDS" -le 300 ] ||
  { echo "run.sh: HOSTS_SECONDS must be a whole number from 8 to 300" >&2; exit 2; }

log() { printf '\033[1m[bench %s]\033[0m %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '\033[1;31m[bench] error:\033[0m %s\n' "$*" >&2; exit 1; }
selected() { # scenario -> 0 if it runs
  if [ "$1" = group ] && [ "$BENCH_SKIP_GROUP" = 1 ]; then return 1; fi
  [ -z "$BENCH_ONLY" ] && return 0
  [[ ",$BENCH_ONLY," == *",$1,"* ]] || { [ "$1" = throughput ] && [[ ",$BENCH_ONLY," == *",memory,"* ]]; }
}
for name in ${BENCH_ONLY//,/ }; do
  [[ " $ALL_SCENARIOS memory " == *" $name "* ]] || die "BENCH_ONLY: unknown scenario '$name' (known: $ALL_SCENARIOS)"
done

[[ $PORT_OFFSET =~ ^[0-9]+$ ]] && [ "$PORT_OFFSET" -le 600 ] || { echo "run.sh: BENCH_PORT_OFFSET must be 0-600" >&2; exit 2; }
MOCK_TAIL=$((19101 + PORT_OFFSET)) MOCK_FF=$((19102 + PORT_OFFSET))
FO_TP=$((19180 + PORT_OFFSET)) FO_W=$((19181 + PORT_OFFSET)) FO_TAIL=$((19182 + PORT_OFFSET)) FO_FF=$((19183 + PORT_OFFSET))
FO1_TP=$((19184 + PORT_OFFSET)) OR_TP=$((19284 + PORT_OFFSET)) NODE_TP=$((19285 + PORT_OFFSET))
GO_TP=$((19280 + PORT_OFFSET)) GO_W=$((19281 + PORT_OFFSET)) GO_TAIL=$((19282 + PORT_OFFSET)) GO_FF=$((19283 + PORT_OFFSET))
NG1=$((19301 + PORT_OFFSET)) NG2=$((19302 + PORT_OFFSET)) NG3=$((19303 + PORT_OFFSET)) NGP=$((19304 + PORT_OFFSET))
FO_TLS=$((19190 + PORT_OFFSET)) FO_H2=$((19191 + PORT_OFFSET)) FO_H1=$((19192 + PORT_OFFSET))
GO_TLS=$((19290 + PORT_OFFSET)) GOD_TLS=$((19291 + PORT_OFFSET))
FO_HOSTS=$((19193 + PORT_OFFSET)) FO_HOSTS_ADMIN=$((19194 + PORT_OFFSET))
FO_CTRL=$((19195 + PORT_OFFSET)) FO_CTRL_ADMIN=$((19196 + PORT_OFFSET))
NGT1=$((19311 + PORT_OFFSET)) NGT2=$((19312 + PORT_OFFSET)) NGT3=$((19313 + PORT_OFFSET)) NGT_STATUS=$((19319 + PORT_OFFSET))
NGH1=$((19321 + PORT_OFFSET)) NGH2=$((19322 + PORT_OFFSET)) NGH3=$((19323 + PORT_OFFSET))
NGR1=$((19331 + PORT_OFFSET)) NGR2=$((19332 + PORT_OFFSET)) NGR3=$((19333 + PORT_OFFSET)) NGR4=$((19334 + PORT_OFFSET))
busy=$(python3 bench/lib.py ports-busy "$MOCK_TAIL" "$MOCK_FF" "$FO_TP" "$FO_W" "$FO_TAIL" "$FO_FF" \
  "$GO_TP" "$GO_W" "$GO_TAIL" "$GO_FF" "$NG1" "$NG2" "$NG3" "$NGP" "$FO1_TP" "$OR_TP" "$NODE_TP" \
  "$FO_TLS" "$FO_H2" "$FO_H1" "$GO_TLS" "$GOD_TLS" "$FO_HOSTS" "$FO_HOSTS_ADMIN" "$FO_CTRL" "$FO_CTRL_ADMIN" \
  "$NGT1" "$NGT2" "$NGT3" "$NGT_STATUS" "$NGH1" "$NGH2" "$NGH3" "$NGR1" "$NGR2" "$NGR3" "$NGR4")
[ -z "$busy" ] || die "ports already in use on 127.0.0.1: $busy (another benchmark running? set BENCH_PORT_OFFSET, e.g. 300)"

# --- what it needs -----------------------------------------------------------
PEERS=0 # the throughput scenario runs the OpenResty and Node peers
if selected throughput; then PEERS=1; fi
LUA_MODULE=/usr/lib/nginx/modules/ngx_http_lua_module.so
missing=()
packages=(nginx-light wrk golang-go golang-golang-x-sync-dev)
for cmd in nginx wrk go; do command -v "$cmd" >/dev/null || missing+=("$cmd"); done
[ -d /usr/share/gocode/src/golang.org/x/sync/errgroup ] || missing+=("golang.org/x/sync")
if [ "$PEERS" = 1 ]; then
  packages+=(libnginx-mod-http-lua lua-cjson)
  [ -e "$LUA_MODULE" ] || missing+=("$LUA_MODULE")
  dpkg-query -W -f '${Status}' lua-cjson 2>/dev/null | grep -q 'ok installed' || missing+=(lua-cjson)
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    missing+=(node npm)
    packages+=(nodejs npm)
  fi
fi
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing ${missing[*]}: apt-get install -y ${packages[*]} (as root)"
  log "installing ${packages[*]} (missing: ${missing[*]})"
  # Keep the package scripts from starting the system's nginx on port 80.
  policy_rc_d=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy_rc_d=1
  fi
  install_rc=0
  { timeout 600 apt-get update &&
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y "${packages[@]}"; } || install_rc=$?
  if [ "$policy_rc_d" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  [ "$install_rc" = 0 ] || die "apt-get failed ($install_rc)"
fi
for cmd in python3 curl cargo; do command -v "$cmd" >/dev/null || die "$cmd is needed"; done
if [ "$PEERS" = 1 ]; then
  node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 18 || (a === 18 && b >= 17) ? 0 : 1)' ||
    die "the Node peer needs Node.js ≥ 18.17 (undici 6); this is $(node --version)"
  if [ ! -d bench/node-gateway/node_modules/undici ]; then
    log "installing the Node peer's dependencies (npm ci in bench/node-gateway)"
    (cd bench/node-gateway && timeout 300 npm ci --no-audit --no-fund --loglevel=error) >&2 ||
      die "npm ci failed in bench/node-gateway"
  fi
fi

# --- processes: every one is stopped on exit ---------------------------------
WORK=$(mktemp -d /tmp/fanout-bench.XXXXXX)
PIDS=()  # servers (nginx, gateways, mocks): one process each
STEPS=() # the foreground step, in its own process group (wrk, loadgen, cargo)
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local pid
  for pid in "${STEPS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ "$rc" = 0 ]; then rm -rf "$WORK"; else echo "[bench] failed ($rc); logs and partial results kept in $WORK" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() { # CMD...: runs a bounded foreground step where a signal can interrupt it
  local pid rc=0 kept=() p
  setsid "$@" &
  pid=$!
  STEPS+=("$pid")
  wait "$pid" || rc=$?
  for p in "${STEPS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  STEPS=("${kept[@]}")
  return "$rc"
}
SPAWNED=
spawn() { # NAME STDOUT CMD... -> $SPAWNED; stderr goes to $WORK/NAME.err
  local name=$1 out=$2
  shift 2
  "$@" >"$out" 2>"$WORK/$name.err" &
  SPAWNED=$!
  PIDS+=("$SPAWNED")
}
stop() { # PID: stop one process started by spawn
  local pid=$1 kept=() p
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  PIDS=("${kept[@]}")
}
wait_ready() { # NAME PID URL: until URL answers 200 (10 s at most)
  local name=$1 pid=$2 url=$3 code
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || die "$name exited at start: $(tail -5 "$WORK/$name.err" 2>/dev/null)"
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
    [ "$code" = 200 ] && return 0
    sleep 0.1
  done
  die "$name does not answer 200 on $url after 10 s (last status: $code): $(tail -5 "$WORK/$name.err" 2>/dev/null)"
}
LIB=(python3 "$ROOT/bench/lib.py")
lib() { "${LIB[@]}" "$@"; }
config() { # FILE: bench/FILE with its ports shifted by BENCH_PORT_OFFSET, in $WORK
  lib shift-ports "bench/$1" "$PORT_OFFSET" > "$WORK/$1" && echo "$WORK/$1"
}
RESULTS=$WORK/results.json
rec() { lib set "$RESULTS" "$1" "$2"; }

# --- build ---------------------------------------------------------------------
T0=$(date +%s)
BIN=${CARGO_TARGET_DIR:-target}/release/fanout
[[ $BIN == /* ]] || BIN=$ROOT/$BIN
if selected throughput || selected overhead || selected width || selected tail || selected failfast ||
  selected tls || selected h2 || selected hosts; then
  if [ "${BENCH_NO_BUILD:-0}" = 1 ]; then
    log "using the fanout binary as built: $BIN (BENCH_NO_BUILD=1)"
  else
    log "building fanout (cargo build --release --bin fanout)"
    step timeout 1800 cargo build --release --quiet --bin fanout || die "cargo build failed"
  fi
  [ -x "$BIN" ] || die "no binary at $BIN"
  log "building the Go reference (bench/go-reference)"
  GO111MODULE=off GOPATH=/usr/share/gocode timeout 600 go build -o "$WORK/go-reference" bench/go-reference/main.go ||
    die "go build failed"
fi
GOREF=$WORK/go-reference

rec meta "$(python3 -c '
import json, sys
print(json.dumps({"command": sys.argv[1], "bench_seconds": int(sys.argv[2]), "width_seconds": int(sys.argv[3]),
  "tail_requests": int(sys.argv[4]), "failfast_requests": int(sys.argv[5]), "overhead_rate": float(sys.argv[6]),
  "group_max_time": float(sys.argv[7]), "fanout_log": sys.argv[8], "only": sys.argv[9] or None,
  "skip_group": sys.argv[10] == "1", "quick": sys.argv[11] == "1", "throughput_rounds": int(sys.argv[12]),
  "hosts_rate": int(sys.argv[13]), "hosts_seconds": int(sys.argv[14])}))
' "$CMDLINE" "$S" "$WIDTH_SECONDS" "$TAIL_REQUESTS" "$FAILFAST_REQUESTS" "$OVERHEAD_RATE" \
  "$GROUP_MAX_TIME" "$FANOUT_LOG" "$BENCH_ONLY" "$BENCH_SKIP_GROUP" "$QUICK" "$ROUNDS" "$HOSTS_RATE" "$HOSTS_SECONDS")"
rec machine "$(lib machine)"
rec meta.load_before "\"$(uptime | sed 's/.*load average: //')\""
rec meta.fanout_version "\"$( ("$BIN" --version 2>/dev/null || echo fanout unknown) | head -1)\""
rec meta.git "\"$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(
  [ -z "$(git status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null)" ] || echo ' with uncommitted changes')\""

# --- nginx backends and the two gateways of the throughput scenario ------------
NGINX=
GO_PID=
FANOUT_PID=
if selected throughput || selected overhead || selected width; then
  log "starting 3 nginx backends (one worker, 127.0.0.1:$NG1-$NG3)"
  lib nginx-conf "$WORK" "$PORT_OFFSET" > "$WORK/nginx.conf"
  nginx -t -q -c "$WORK/nginx.conf" -p "$WORK" -e "$WORK/nginx-error.log" 2>"$WORK/nginx-test.err" ||
    die "nginx rejects its config: $(cat "$WORK/nginx-test.err")"
  spawn nginx /dev/null nginx -c "$WORK/nginx.conf" -p "$WORK" -e "$WORK/nginx-error.log"
  NGINX=$SPAWNED
  for port in "$NG1" "$NG2" "$NG3"; do wait_ready nginx "$NGINX" "http://127.0.0.1:$port/data"; done
fi
if selected throughput || selected overhead; then
  spawn go-reference /dev/null "$GOREF" -listen 127.0.0.1:$GO_TP \
    -backends http://127.0.0.1:$NG1/data,http://127.0.0.1:$NG2/data,http://127.0.0.1:$NG3/data
  GO_PID=$SPAWNED
  config=$(config throughput-gateway.yaml)
  "$BIN" check -c "$config" >/dev/null || die "fanout check refuses bench/throughput-gateway.yaml"
  spawn fanout /dev/null env RUST_LOG="$FANOUT_LOG" "$BIN" serve -c "$config"
  FANOUT_PID=$SPAWNED
  wait_ready go-reference "$GO_PID" http://127.0.0.1:$GO_TP/merged
  wait_ready fanout "$FANOUT_PID" http://127.0.0.1:$FO_TP/merged
  for url in http://127.0.0.1:$GO_TP/merged http://127.0.0.1:$FO_TP/merged; do
    curl -s --max-time 2 "$url" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert len(d) == 24, d' ||
      die "$url does not merge the 3 backends (24 keys)"
  done
fi
# The peers of the throughput scenario, and fanout on one thread beside them.
OR_PID=
NODE_PID=
FANOUT1_PID=
FANOUT_THREADS=$(nproc)
if [ "$PEERS" = 1 ]; then
  log "starting the peers: OpenResty-style nginx + Lua (one worker, :$OR_TP), Node (:$NODE_TP), fanout --threads 1 (:$FO1_TP)"
  mkdir -p "$WORK/openresty"
  lib shift-ports bench/openresty/nginx.conf "$PORT_OFFSET" > "$WORK/openresty/nginx.conf"
  cp bench/openresty/merge.lua "$WORK/openresty/"
  nginx -t -q -p "$WORK/openresty/" -c nginx.conf -e "$WORK/openresty/error.log" 2>"$WORK/openresty-test.err" ||
    die "nginx rejects bench/openresty/nginx.conf: $(cat "$WORK/openresty-test.err")"
  spawn openresty /dev/null nginx -p "$WORK/openresty/" -c nginx.conf -e "$WORK/openresty/error.log"
  OR_PID=$SPAWNED # the master; its one worker is counted with it
  spawn node-gateway /dev/null node bench/node-gateway/server.js --listen "127.0.0.1:$NODE_TP" \
    --backends "http://127.0.0.1:$NG1/data,http://127.0.0.1:$NG2/data,http://127.0.0.1:$NG3/data"
  NODE_PID=$SPAWNED
  lib shift-ports bench/throughput-gateway.yaml "$PORT_OFFSET" |
    sed "s/127.0.0.1:$FO_TP\"/127.0.0.1:$FO1_TP\"/" > "$WORK/throughput-gateway-1.yaml"
  spawn fanout-1 /dev/null env RUST_LOG="$FANOUT_LOG" "$BIN" serve -c "$WORK/throughput-gateway-1.yaml" --threads 1
  FANOUT1_PID=$SPAWNED
  wait_ready openresty "$OR_PID" "http://127.0.0.1:$OR_TP/merged"
  wait_ready node-gateway "$NODE_PID" "http://127.0.0.1:$NODE_TP/merged"
  wait_ready fanout-1 "$FANOUT1_PID" "http://127.0.0.1:$FO1_TP/merged"
  [ -n "$(lib proc-children "$OR_PID")" ] || die "the OpenResty-style nginx has no worker process"
  # Before anything is measured: each peer answers exactly fanout's bytes.
  for peer in openresty=$OR_TP node=$NODE_TP fanout1=$FO1_TP; do
    lib same-body "http://127.0.0.1:$FO_TP/merged" "http://127.0.0.1:${peer#*=}/merged" "${peer%%=*}" >&2 ||
      die "${peer%%=*} does not merge as fanout does (above); nothing was measured"
  done
fi

# --- 1 + 2: aggregation throughput and memory ------------------------------------
if selected throughput; then
  GATEWAYS=(go openresty node fanout fanout1)
  log "aggregation throughput: wrk -t2 -c64 -d${S}s after a warm-up (2 s each, Node 4 s); direct once, then ${GATEWAYS[*]} in turn, $ROUNDS round(s)"
  target_of() { # NAME -> url pid (pid+: the process and its children)
    case $1 in
      direct) echo "http://127.0.0.1:$NG1/data" ;;
      go) echo "http://127.0.0.1:$GO_TP/merged $GO_PID" ;;
      openresty) echo "http://127.0.0.1:$OR_TP/merged $OR_PID+" ;;
      node) echo "http://127.0.0.1:$NODE_TP/merged $NODE_PID" ;;
      fanout) echo "http://127.0.0.1:$FO_TP/merged $FANOUT_PID" ;;
      fanout1) echo "http://127.0.0.1:$FO1_TP/merged $FANOUT1_PID" ;;
    esac
  }
  for target in direct "${GATEWAYS[@]}"; do
    read -r url pid <<< "$(target_of "$target")"
    step "${LIB[@]}" wrk-run "$url" 2 >/dev/null
    # V8 compiles its hot paths later than the others settle: twice as long.
    if [ "$target" = node ]; then step "${LIB[@]}" wrk-run "$url" 2 >/dev/null; fi
  done
  read -r url pid <<< "$(target_of direct)"
  step "${LIB[@]}" wrk-run "$url" "$S" "" "$NGINX" > "$WORK/throughput-direct-1.json"
  # The gateways alternate, so that all see the same drift of a shared machine;
  # each round starts one further along the list, so none is always first.
  n=${#GATEWAYS[@]}
  for round in $(seq "$ROUNDS"); do
    for i in $(seq 0 $((n - 1))); do
      target=${GATEWAYS[$(((round - 1 + i) % n))]}
      read -r url pid <<< "$(target_of "$target")"
      step "${LIB[@]}" wrk-run "$url" "$S" "$pid" "$NGINX" > "$WORK/throughput-$target-$round.json"
    done
    [ "$ROUNDS" = 1 ] || log "  round $round/$ROUNDS done"
  done
  for pid in $FANOUT1_PID $NODE_PID $OR_PID; do stop "$pid"; done
  rec meta.fanout_threads "$FANOUT_THREADS"
  for target in direct "${GATEWAYS[@]}"; do
    lib merge-rounds "$WORK"/throughput-"$target"-*.json > "$WORK/throughput-$target.json"
    rec "throughput.$target" "@$WORK/throughput-$target.json"
    lib show throughput "$WORK/throughput-$target.json" "$target" >&2
  done
fi

# --- 3: overhead over the slowest call -------------------------------------------
if selected overhead; then
  # The floor: one more HTTP hop, as nginx's proxy_pass makes it (a process of
  # its own, like a gateway), to backend one; and fanout making that one call.
  lib nginx-proxy-conf "$WORK" "$PORT_OFFSET" > "$WORK/nginx-proxy.conf"
  spawn nginx-proxy /dev/null nginx -c "$WORK/nginx-proxy.conf" -p "$WORK" -e "$WORK/nginx-proxy-error.log"
  NGINX_PROXY=$SPAWNED
  wait_ready nginx-proxy "$NGINX_PROXY" "http://127.0.0.1:$NGP/data"
  log "overhead: ${OVERHEAD_RATE} req/s per target for ${S}s (after 1 s), one keep-alive connection each, interleaved"
  step timeout $((S * 4 + 60)) python3 bench/loadgen.py --rate "$OVERHEAD_RATE" --seconds "$S" --warmup 1 \
    one=http://127.0.0.1:$NG1/data two=http://127.0.0.1:$NG2/data three=http://127.0.0.1:$NG3/data \
    go=http://127.0.0.1:$GO_TP/merged fanout=http://127.0.0.1:$FO_TP/merged \
    proxy=http://127.0.0.1:$NGP/data fanout_one=http://127.0.0.1:$FO_TP/one > "$WORK/overhead.json" ||
    die "the fixed-rate client failed or timed out"
  stop "$NGINX_PROXY"
  rec overhead "@$WORK/overhead.json"
  lib show overhead "$WORK/overhead.json" >&2
fi

# --- 4: cost of fan-out width ------------------------------------------------------
if selected width; then
  log "fan-out width 1, 3, 10, 30: wrk -t2 -c64 -d${WIDTH_SECONDS}s after 1 s, go-reference then fanout"
  lib width-gateway "$FO_W" "$PORT_OFFSET" 1 3 10 30 > "$WORK/width-gateway.yaml"
  "$BIN" check -c "$WORK/width-gateway.yaml" >/dev/null || die "fanout check refuses the width config ($WORK/width-gateway.yaml)"
  spawn fanout-width /dev/null env RUST_LOG="$FANOUT_LOG" "$BIN" serve -c "$WORK/width-gateway.yaml"
  FANOUT_WIDTH=$SPAWNED
  for width in 1 3 10 30; do
    spawn "go-width-$width" /dev/null "$GOREF" -listen 127.0.0.1:$GO_W -backends "$(lib width-urls "$width" "$PORT_OFFSET")"
    go_width=$SPAWNED
    wait_ready "go-width-$width" "$go_width" http://127.0.0.1:$GO_W/merged
    wait_ready fanout-width "$FANOUT_WIDTH" "http://127.0.0.1:$FO_W/w$width"
    for target in go fanout; do
      case $target in
        go) url=http://127.0.0.1:$GO_W/merged pid=$go_width ;;
        fanout) url=http://127.0.0.1:$FO_W/w$width pid=$FANOUT_WIDTH ;;
      esac
      keys=$(curl -s --max-time 2 "$url" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
      [ "$keys" = $((width * 8)) ] || die "$url merges $keys keys, not $((width * 8))"
      step "${LIB[@]}" wrk-run "$url" 1 >/dev/null
      step "${LIB[@]}" wrk-run "$url" "$WIDTH_SECONDS" "$pid" "$NGINX" > "$WORK/width-$target-$width.json"
      rec "width.$target.w$width" "@$WORK/width-$target-$width.json"
      lib show width "$WORK/width-$target-$width.json" "$target" "$width" >&2
    done
    stop "$go_width"
  done
  stop "$FANOUT_WIDTH"
fi

# Backends and gateways of the first scenarios are no longer needed.
for pid in $FANOUT_PID $GO_PID $NGINX; do stop "$pid"; done

# --- 5: tail latency with hedging ----------------------------------------------------
mock_stats() { curl -s --max-time 2 "http://127.0.0.1:$1/__mock/stats"; }
if selected tail; then
  log "tail latency: fanout fetch, 16 in flight, $TAIL_REQUESTS requests per endpoint after 300 warm-up ones"
  config=$(config tail-mock.yaml)
  "$BIN" mock --check -c "$config" >/dev/null || die "bench/tail-mock.yaml is refused"
  spawn tail-mock /dev/null "$BIN" mock -c "$config"
  mock=$SPAWNED
  spawn tail-gateway /dev/null env GATEWAY_PORT="$FO_TAIL" RUST_LOG="$FANOUT_LOG" "$BIN" serve -c "$(config tail-gateway.yaml)"
  gateway=$SPAWNED
  spawn tail-go /dev/null "$GOREF" -listen 127.0.0.1:$GO_TAIL -backends http://127.0.0.1:$MOCK_TAIL/tail
  gotail=$SPAWNED
  wait_ready tail-mock "$mock" http://127.0.0.1:$MOCK_TAIL/__mock/stats
  wait_ready tail-gateway "$gateway" http://127.0.0.1:$FO_TAIL/plain
  wait_ready tail-go "$gotail" http://127.0.0.1:$GO_TAIL/merged
  urls() { python3 -c 'import sys; print("\n".join([sys.argv[1]] * int(sys.argv[2])))' "$1" "$2"; }
  fetch() { timeout 300 "$BIN" fetch --limit 16 --timeout 5s --json -f - || [ $? = 1 ]; } # 1: some failed
  for target in plain hedged go; do
    case $target in
      go) url=http://127.0.0.1:$GO_TAIL/merged ;;
      *) url=http://127.0.0.1:$FO_TAIL/$target ;;
    esac
    urls "$url" 300 | fetch >/dev/null # warm-up; the hedged upstream learns its p95
  done
  for target in plain hedged go; do
    case $target in
      go) url=http://127.0.0.1:$GO_TAIL/merged ;;
      *) url=http://127.0.0.1:$FO_TAIL/$target ;;
    esac
    before=$(mock_stats $MOCK_TAIL)
    urls "$url" "$TAIL_REQUESTS" | fetch > "$WORK/tail-$target-fetch.json"
    after=$(mock_stats $MOCK_TAIL)
    lib tail-summary "$WORK/tail-$target-fetch.json" "$before" "$after" > "$WORK/tail-$target.json"
    rec "tail.$target" "@$WORK/tail-$target.json"
    lib show tail "$WORK/tail-$target.json" "$target" >&2
  done
  for pid in $gotail $gateway $mock; do stop "$pid"; done
fi

# --- 6: fail-fast ---------------------------------------------------------------------
if selected failfast; then
  log "fail-fast: $FAILFAST_REQUESTS sequential requests per gateway; the payment fails at 50 ms, the inventory takes 2 s"
  config=$(config failfast-mock.yaml)
  "$BIN" mock --check -c "$config" >/dev/null || die "bench/failfast-mock.yaml is refused"
  spawn failfast-mock /dev/null "$BIN" mock -c "$config"
  mock=$SPAWNED
  spawn failfast-gateway /dev/null env RUST_LOG="$FANOUT_LOG" "$BIN" serve -c "$(config failfast-gateway.yaml)"
  gateway=$SPAWNED
  spawn failfast-go /dev/null "$GOREF" -listen 127.0.0.1:$GO_FF \
    -backends http://127.0.0.1:$MOCK_FF/payments/authorize,http://127.0.0.1:$MOCK_FF/inventory/reserve
  goff=$SPAWNED
  wait_ready failfast-mock "$mock" http://127.0.0.1:$MOCK_FF/__mock/stats
  for pid_port in "$gateway:$FO_FF" "$goff:$GO_FF"; do # up once the port accepts (they answer 502)
    for _ in $(seq 100); do
      curl -s -o /dev/null --max-time 5 "http://127.0.0.1:${pid_port#*:}/" && break
      kill -0 "${pid_port%%:*}" || die "a fail-fast gateway exited at start"
      sleep 0.1
    done
  done
  for target in fanout go; do
    case $target in
      fanout) url=http://127.0.0.1:$FO_FF/checkout ;;
      go) url=http://127.0.0.1:$GO_FF/merged ;;
    esac
    before=$(mock_stats $MOCK_FF)
    # One every 125 ms: a gateway that waits for the slow call takes 2 s each.
    step timeout $((FAILFAST_REQUESTS * 3 + 30)) python3 bench/loadgen.py --rate 8 --count "$FAILFAST_REQUESTS" \
      --warmup 0 "$target=$url" > "$WORK/failfast-$target-load.json" || die "the fail-fast client failed"
    sleep 0.5 # let the mock see the last disconnect
    after=$(mock_stats $MOCK_FF)
    lib failfast-summary "$WORK/failfast-$target-load.json" "$target" "$before" "$after" > "$WORK/failfast-$target.json"
    rec "failfast.$target" "@$WORK/failfast-$target.json"
    lib show failfast "$WORK/failfast-$target.json" "$target" >&2
  done
  for pid in $goff $gateway $mock; do stop "$pid"; done
fi

# --- 7: task group overhead -----------------------------------------------------------
if selected group; then
  log "task group: cargo bench -p fanout-group --bench group (divan, --max-time $GROUP_MAX_TIME s per benchmark, try_join_all skipped)"
  step timeout 1200 cargo bench --quiet -p fanout-group --bench group -- --skip try_join_all --max-time "$GROUP_MAX_TIME" \
    > "$WORK/group.txt" 2> "$WORK/group.err" || die "cargo bench failed: $(tail -20 "$WORK/group.err")"
  lib divan "$WORK/group.txt" > "$WORK/group.json"
  rec group "@$WORK/group.json"
  sed 's/^/    /' "$WORK/group.txt" >&2
elif [ "$BENCH_SKIP_GROUP" = 1 ]; then
  rec group null
fi

# --- 8 + 9: TLS and HTTP/2 to backends ------------------------------------------------
# The backends' new connections over a measured run are TLS handshakes: nginx's
# stub_status counts the connections it accepted (each read of it is one more).
NGINX_TLS=
accepts() { lib nginx-accepts "http://127.0.0.1:$NGT_STATUS/status"; }
tls_run() { # NAME URL PID OUT PORTS...: 2 s warm-up, then a measured run; handshakes and connections counted
  local name=$1 url=$2 pid=$3 out=$4 w0 a0 a1
  shift 4
  w0=$(accepts)
  step "${LIB[@]}" wrk-run "$url" 2 >/dev/null
  a0=$(accepts)
  step "${LIB[@]}" wrk-run "$url" "$S" "$pid" "$NGINX_TLS" > "$out"
  lib set "$out" backend_conns "$(lib conns "$pid" "$@")"
  a1=$(accepts)
  lib set "$out" warmup_handshakes "$((a0 - w0 - 1))"
  lib set "$out" handshakes "$((a1 - a0 - 1))"
  lib set "$out" handshakes_per_s "$(python3 -c 'import json, sys; d = json.load(open(sys.argv[1]))
print(round(d["handshakes"] / d["duration_s"], 3))' "$out")"
}
if selected tls || selected h2; then
  log "TLS backends: a test CA and certificate (fanout mock --make-certs), nginx ssl on :$NGT1-$NGT3, ssl http2 on :$NGH1-$NGH3"
  "$BIN" mock --make-certs "$WORK/certs" >/dev/null || die "fanout mock --make-certs failed"
  lib nginx-tls-conf "$WORK" "$PORT_OFFSET" "$WORK/certs/mock.pem" "$WORK/certs/mock-key.pem" > "$WORK/nginx-tls.conf"
  nginx -t -q -c "$WORK/nginx-tls.conf" -p "$WORK" -e "$WORK/nginx-tls-error.log" 2>"$WORK/nginx-tls-test.err" ||
    die "nginx rejects its TLS config: $(cat "$WORK/nginx-tls-test.err")"
  spawn nginx-tls /dev/null nginx -c "$WORK/nginx-tls.conf" -p "$WORK" -e "$WORK/nginx-tls-error.log"
  NGINX_TLS=$SPAWNED
  wait_ready nginx-tls "$NGINX_TLS" "http://127.0.0.1:$NGT_STATUS/status"
  for port in "$NGT1" "$NGT2" "$NGT3" "$NGH1" "$NGH2" "$NGH3"; do
    curl -sf --max-time 2 --cacert "$WORK/certs/ca.pem" -o /dev/null "https://127.0.0.1:$port/data" ||
      die "https://127.0.0.1:$port/data does not answer with a certificate of the test CA"
  done
fi
merged_24() { # URL: the answer merges the 3 backends (24 keys)
  curl -s --max-time 2 "$1" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert len(d) == 24, d' ||
    die "$1 does not merge the 3 backends (24 keys)"
}
if selected tls; then
  spawn go-tls /dev/null "$GOREF" -listen 127.0.0.1:$GO_TLS -ca "$WORK/certs/ca.pem" \
    -backends "https://127.0.0.1:$NGT1/data,https://127.0.0.1:$NGT2/data,https://127.0.0.1:$NGT3/data"
  go_tls=$SPAWNED
  spawn go-detached-tls /dev/null "$GOREF" -listen 127.0.0.1:$GOD_TLS -ca "$WORK/certs/ca.pem" -detached \
    -backends "https://127.0.0.1:$NGT1/data,https://127.0.0.1:$NGT2/data,https://127.0.0.1:$NGT3/data"
  go_detached_tls=$SPAWNED
  config tls-gateway.yaml >/dev/null # into $WORK, beside certs/
  "$BIN" check -c "$WORK/tls-gateway.yaml" >/dev/null || die "fanout check refuses bench/tls-gateway.yaml"
  spawn fanout-tls /dev/null env RUST_LOG="$FANOUT_LOG" "$BIN" serve -c "$WORK/tls-gateway.yaml"
  fanout_tls=$SPAWNED
  wait_ready go-tls "$go_tls" "http://127.0.0.1:$GO_TLS/merged"
  wait_ready go-detached-tls "$go_detached_tls" "http://127.0.0.1:$GOD_TLS/merged"
  wait_ready fanout-tls "$fanout_tls" "http://127.0.0.1:$FO_TLS/merged"
  merged_24 "http://127.0.0.1:$GO_TLS/merged"
  merged_24 "http://127.0.0.1:$GOD_TLS/merged"
  merged_24 "http://127.0.0.1:$FO_TLS/merged"
  log "TLS to backends: wrk -t2 -c64 -d${S}s after 2 s, go, go -detached and fanout in turn, $ROUNDS round(s); handshakes counted"
  GATEWAYS=(go godetached fanout)
  for round in $(seq "$ROUNDS"); do
    for i in 0 1 2; do
      target=${GATEWAYS[$(((round - 1 + i) % 3))]}
      case $target in
        go) url=http://127.0.0.1:$GO_TLS/merged pid=$go_tls ;;
        godetached) url=http://127.0.0.1:$GOD_TLS/merged pid=$go_detached_tls ;;
        fanout) url=http://127.0.0.1:$FO_TLS/merged pid=$fanout_tls ;;
      esac
      tls_run "$target" "$url" "$pid" "$WORK/tls-$target-$round.json" "$NGT1" "$NGT2" "$NGT3"
    done
  done
  for target in go godetached fanout; do
    lib merge-rounds "$WORK"/tls-"$target"-*.json > "$WORK/tls-$target.json"
    rec "tls.$target" "@$WORK/tls-$target.json"
    lib show tls "$WORK/tls-$target.json" "$target" >&2
  done
  rec meta.fanout_threads "$FANOUT_THREADS"
  for pid in $fanout_tls $go_detached_tls $go_tls; do stop "$pid"; done
fi
if selected h2; then
  config h2-gateway.yaml >/dev/null # into $WORK, beside certs/
  sed -e 's/http2: auto/http2: never/' -e "s/127.0.0.1:$FO_H2\"/127.0.0.1:$FO_H1\"/" "$WORK/h2-gateway.yaml" > "$WORK/h1-gateway.yaml"
  for file in h2-gateway h1-gateway; do
    "$BIN" check -c "$WORK/$file.yaml" >/dev/null || die "fanout check refuses $WORK/$file.yaml"
  done
  spawn fanout-h2 /dev/null env RUST_LOG="$FANOUT_LOG" "$BIN" serve -c "$WORK/h2-gateway.yaml"
  fanout_h2=$SPAWNED
  spawn fanout-h1 /dev/null env RUST_LOG="$FANOUT_LOG" "$BIN" serve -c "$WORK/h1-gateway.yaml"
  fanout_h1=$SPAWNED
  wait_ready fanout-h2 "$fanout_h2" "http://127.0.0.1:$FO_H2/merged"
  wait_ready fanout-h1 "$fanout_h1" "http://127.0.0.1:$FO_H1/merged"
  merged_24 "http://127.0.0.1:$FO_H2/merged"
  merged_24 "http://127.0.0.1:$FO_H1/merged"
  log "HTTP/2 to backends: wrk -t2 -c64 -d${S}s after 2 s, http2: auto and http2: never in turn, $ROUNDS round(s); connections counted"
  GATEWAYS=(h2 h1)
  for round in $(seq "$ROUNDS"); do
    for i in 0 1; do
      target=${GATEWAYS[$(((round - 1 + i) % 2))]}
      case $target in
        h2) url=http://127.0.0.1:$FO_H2/merged pid=$fanout_h2 ;;
        h1) url=http://127.0.0.1:$FO_H1/merged pid=$fanout_h1 ;;
      esac
      tls_run "$target" "$url" "$pid" "$WORK/h2-$target-$round.json" "$NGH1" "$NGH2" "$NGH3"
    done
  done
  for target in h2 h1; do
    lib merge-rounds "$WORK"/h2-"$target"-*.json > "$WORK/h2-$target.json"
    rec "h2.$target" "@$WORK/h2-$target.json"
    lib show h2 "$WORK/h2-$target.json" "$target" >&2
  done
  rec meta.fanout_threads "$FANOUT_THREADS"
  for pid in $fanout_h1 $fanout_h2; do stop "$pid"; done
fi
if [ -n "$NGINX_TLS" ]; then stop "$NGINX_TLS"; fi

# --- 10: many hosts: a replica fails under load ------------------------------------------
if selected hosts; then
  FAIL_AT=3 REFUSE_AT=6
  log "many hosts: 4 nginx replicas (:$NGR1-$NGR4), $HOSTS_RATE req/s for ${HOSTS_SECONDS}s; the 4th answers 500 from ${FAIL_AT}s, refuses from ${REFUSE_AT}s"
  lib hosts-nginx-conf "$WORK" "$PORT_OFFSET" > "$WORK/nginx-hosts.conf"
  spawn nginx-hosts /dev/null nginx -c "$WORK/nginx-hosts.conf" -p "$WORK" -e "$WORK/nginx-hosts-error.log"
  nginx_hosts=$SPAWNED
  for port in "$NGR1" "$NGR2" "$NGR3"; do wait_ready nginx-hosts "$nginx_hosts" "http://127.0.0.1:$port/data"; done
  for variant in fanout control; do
    case $variant in
      fanout) file=hosts-gateway.yaml port=$FO_HOSTS admin=$FO_HOSTS_ADMIN ;;
      control) file=hosts-control.yaml port=$FO_CTRL admin=$FO_CTRL_ADMIN ;;
    esac
    lib failing-nginx-conf "$WORK" "$PORT_OFFSET" 200 > "$WORK/nginx-failing.conf"
    spawn nginx-failing /dev/null nginx -c "$WORK/nginx-failing.conf" -p "$WORK" -e "$WORK/nginx-failing-error.log"
    failing=$SPAWNED
    wait_ready nginx-failing "$failing" "http://127.0.0.1:$NGR4/data"
    config=$(config "$file")
    "$BIN" check -c "$config" >/dev/null || die "fanout check refuses bench/$file"
    spawn "hosts-$variant" /dev/null env RUST_LOG="$FANOUT_LOG" "$BIN" serve -c "$config"
    gateway=$SPAWNED
    wait_ready "hosts-$variant" "$gateway" "http://127.0.0.1:$port/data"
    spawn "hosts-$variant-client" "$WORK/hosts-$variant-run.json" timeout $((HOSTS_SECONDS + 90)) \
      python3 bench/failover.py run --url "http://127.0.0.1:$port/data" \
      --stats "http://127.0.0.1:$admin/api/stats" --rate "$HOSTS_RATE" --seconds "$HOSTS_SECONDS"
    client=$SPAWNED
    sleep "$FAIL_AT.2" # the client starts 0.2 s after it is spawned
    fail_at=$(date +%s.%N)
    lib failing-nginx-conf "$WORK" "$PORT_OFFSET" 500 > "$WORK/nginx-failing.conf"
    kill -HUP "$failing" # graceful: a new worker answers 500, the old one finishes what it has
    sleep $((REFUSE_AT - FAIL_AT))
    refuse_at=$(date +%s.%N)
    stop "$failing"
    wait "$client" || die "the hosts client failed: $(tail -5 "$WORK/hosts-$variant-client.err")"
    stop "$client"
    python3 bench/failover.py summary "$WORK/hosts-$variant-run.json" --target "127.0.0.1:$NGR4" \
      --fail "$fail_at" --refuse "$refuse_at" --backend-log "$WORK/failing-access.log" > "$WORK/hosts-$variant.json"
    mv "$WORK/failing-access.log" "$WORK/failing-access-$variant.log"
    rec "hosts.$variant" "@$WORK/hosts-$variant.json"
    lib show hosts "$WORK/hosts-$variant.json" "$variant" >&2
    stop "$gateway"
  done
  stop "$nginx_hosts"
fi

# --- results ---------------------------------------------------------------------------
rec meta.duration_s "$(($(date +%s) - T0))"
rec meta.load_after "\"$(uptime | sed 's/.*load average: //')\""
rec meta.finished "\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\""
mkdir -p bench/results
if [ -z "$BENCH_ONLY" ]; then
  cp "$RESULTS" bench/results/latest.json
  python3 bench/report.py bench/results/latest.json --write BENCHMARKS.md --svg-dir bench/results
  log "wrote bench/results/latest.json, bench/results/*.svg and BENCHMARKS.md ($(($(date +%s) - T0)) s)"
else
  cp "$RESULTS" bench/results/partial.json
  python3 bench/report.py bench/results/partial.json
  log "partial run (BENCH_ONLY=$BENCH_ONLY): bench/results/partial.json; BENCHMARKS.md left alone"
fi
