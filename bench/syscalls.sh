#!/usr/bin/env bash
# Syscalls and context switches per aggregated request: fanout against the
# OpenResty-style peer (bench/openresty), on the throughput scenario of
# bench/run.sh (3 nginx backends, GET /merged merges all 3), with the method
# of the design profile: wrk -t1 -c32 against one gateway at a time.
#
#   syscalls          `strace -c -f` attached to the gateway's processes (for
#                     nginx: master + worker) while wrk makes SYSCALL_REQUESTS
#                     requests (a wrk script stops it there); calls ÷ the
#                     requests wrk counted. strace slows the gateway many
#                     times over: read the counts, not the times.
#   context switches  `perf stat -e context-switches,task-clock -p PIDS` for a
#                     PERF_SECONDS wrk run without strace; ÷ requests. Only
#                     software events: this VM has no hardware counters
#                     (`perf stat -e instructions true` says "not supported").
#                     Beside it, voluntary and involuntary switches from the
#                     threads' /proc/PID/task/*/status over the same run: on a
#                     shared machine the involuntary ones are the rest of the
#                     machine preempting the gateway.
#
#   where the time goes
#                     `perf record -g` (cpu-clock, PROFILE_HZ) for PROFILE_SECONDS
#                     of wrk, without strace: each sample is put in one layer,
#                     in the kernel by the system call it is under (writev's TCP
#                     send path runs the loopback delivery to the receiver too;
#                     recvfrom; epoll_wait; ...), in user space by the function
#                     it is in (the allocator, memcpy, hyper, tokio, the JSON
#                     scan and merge, the log; nginx, LuaJIT, cjson). A layer's
#                     share of the samples times the gateway's CPU time per
#                     request over the same run (utime + stime from /proc) is
#                     its µs per request.
#
# Gateways: fanout --threads 1, fanout with its default threads (one per CPU),
# and the OpenResty-style peer with one worker. Prints two tables.
#
# Usage:
#   bash bench/syscalls.sh
# Settings (environment):
#   SYSCALL_REQUESTS=20000  requests per gateway under strace
#   SYSCALL_CONNECTIONS=32  wrk -t1 -c<this>
#   PERF_SECONDS=5          wrk duration under perf stat
#   PROFILE_SECONDS=5       wrk duration under perf record (0: no profile)
#   PROFILE_HZ=999          perf record's sampling frequency
#   FANOUT_LOG=info         RUST_LOG of fanout (info: one log line per request,
#                           one write(2), to /dev/null; warn: none)
#   BENCH_PORT_OFFSET=0     as in bench/run.sh (same ports: 19180, 19184, 19284, 19301-19303)
#   CARGO_TARGET_DIR        where the fanout binary was built: $CARGO_TARGET_DIR/release/fanout
#                           (build it first: cargo build --release --bin fanout)
# Needs what bench/run.sh needs for these gateways (nginx-light,
# libnginx-mod-http-lua, lua-cjson, wrk) plus strace and linux-perf; installs
# the missing ones with apt-get as root. Everything listens on 127.0.0.1 and is
# stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$PATH:/usr/sbin:/sbin"
REQUESTS=${SYSCALL_REQUESTS:-20000}
CONNECTIONS=${SYSCALL_CONNECTIONS:-32}
PERF_SECONDS=${PERF_SECONDS:-5}
PROFILE_SECONDS=${PROFILE_SECONDS:-5}
PROFILE_HZ=${PROFILE_HZ:-999}
FANOUT_LOG=${FANOUT_LOG:-info}
OFF=${BENCH_PORT_OFFSET:-0}
for v in REQUESTS CONNECTIONS PERF_SECONDS PROFILE_SECONDS PROFILE_HZ OFF; do
  [[ ${!v} =~ ^[0-9]+$ ]] && [ "${!v}" -ge 1 -o "$v" = OFF -o "$v" = PROFILE_SECONDS ] || { echo "syscalls.sh: $v must be a whole number" >&2; exit 2; }
done
case ${1:-} in
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "syscalls.sh: no arguments (try --help)" >&2; exit 2 ;;
esac
log() { printf '\033[1m[syscalls %s]\033[0m %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '\033[1;31m[syscalls] error:\033[0m %s\n' "$*" >&2; exit 1; }

BIN=${CARGO_TARGET_DIR:-target}/release/fanout
[[ $BIN == /* ]] || BIN=$ROOT/$BIN
[ -x "$BIN" ] || die "no fanout binary at $BIN (cargo build --release --bin fanout, or set CARGO_TARGET_DIR)"

missing=() packages=()
for pair in nginx:nginx-light wrk:wrk strace:strace perf:linux-perf; do
  command -v "${pair%%:*}" >/dev/null || { missing+=("${pair%%:*}"); packages+=("${pair#*:}"); }
done
[ -e /usr/lib/nginx/modules/ngx_http_lua_module.so ] || { missing+=(lua-module); packages+=(libnginx-mod-http-lua); }
dpkg-query -W -f '${Status}' lua-cjson 2>/dev/null | grep -q 'ok installed' || { missing+=(lua-cjson); packages+=(lua-cjson); }
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing ${missing[*]}: apt-get install -y ${packages[*]} (as root)"
  log "installing ${packages[*]}"
  policy_rc_d=0 # keep the package scripts from starting the system's nginx
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy_rc_d=1
  fi
  rc=0
  { timeout 600 apt-get update && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y "${packages[@]}"; } || rc=$?
  if [ "$policy_rc_d" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  [ "$rc" = 0 ] || die "apt-get failed ($rc)"
fi
command -v python3 >/dev/null && command -v curl >/dev/null || die "python3 and curl are needed"

NG1=$((19301 + OFF)) NG2=$((19302 + OFF)) NG3=$((19303 + OFF))
FO=$((19180 + OFF)) FO1=$((19184 + OFF)) OR=$((19284 + OFF))
lib() { python3 "$ROOT/bench/lib.py" "$@"; }
busy=$(lib ports-busy "$NG1" "$NG2" "$NG3" "$FO" "$FO1" "$OR")
[ -z "$busy" ] || die "ports already in use on 127.0.0.1: $busy (bench/run.sh running? set BENCH_PORT_OFFSET)"

WORK=$(mktemp -d /tmp/fanout-syscalls.XXXXXX)
PIDS=()
cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ "$rc" = 0 ]; then rm -rf "$WORK"; else echo "[syscalls] failed ($rc); logs kept in $WORK" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
ready() { # NAME PID URL
  for _ in $(seq 100); do
    kill -0 "$2" 2>/dev/null || die "$1 exited at start: $(tail -5 "$WORK/$1.err" 2>/dev/null)"
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$3" || true)" = 200 ] && return 0
    sleep 0.1
  done
  die "$1 does not answer 200 on $3"
}

lib nginx-conf "$WORK" "$OFF" > "$WORK/nginx.conf"
nginx -c "$WORK/nginx.conf" -p "$WORK" -e "$WORK/nginx-error.log" 2>"$WORK/backends.err" &
PIDS+=($!)
BACKENDS=$!
lib shift-ports bench/throughput-gateway.yaml "$OFF" > "$WORK/gateway.yaml"
sed "s/127.0.0.1:$FO\"/127.0.0.1:$FO1\"/" "$WORK/gateway.yaml" > "$WORK/gateway-1.yaml"
env RUST_LOG="$FANOUT_LOG" "$BIN" serve -c "$WORK/gateway.yaml" >/dev/null 2>"$WORK/fanout.err" &
PIDS+=($!)
FANOUT=$!
env RUST_LOG="$FANOUT_LOG" "$BIN" serve -c "$WORK/gateway-1.yaml" --threads 1 >/dev/null 2>"$WORK/fanout1.err" &
PIDS+=($!)
FANOUT1=$!
mkdir -p "$WORK/openresty"
lib shift-ports bench/openresty/nginx.conf "$OFF" > "$WORK/openresty/nginx.conf"
cp bench/openresty/merge.lua "$WORK/openresty/"
nginx -p "$WORK/openresty/" -c nginx.conf -e "$WORK/openresty/error.log" 2>"$WORK/openresty.err" &
PIDS+=($!)
OPENRESTY=$!
for port in "$NG1" "$NG2" "$NG3"; do ready backends "$BACKENDS" "http://127.0.0.1:$port/data"; done
ready fanout "$FANOUT" "http://127.0.0.1:$FO/merged"
ready fanout1 "$FANOUT1" "http://127.0.0.1:$FO1/merged"
ready openresty "$OPENRESTY" "http://127.0.0.1:$OR/merged"
lib same-body "http://127.0.0.1:$FO/merged" "http://127.0.0.1:$OR/merged" openresty >&2 ||
  die "the OpenResty-style peer does not merge as fanout does"
workers=$(lib proc-children "$OPENRESTY")
[ -n "$workers" ] || die "the OpenResty-style nginx has no worker"

# wrk stops after REQUESTS responses (one thread: the count is the thread's):
# the thread stops and leaves a file, and SIGINT from here ends wrk's sleep
# through the run's duration, after which wrk prints its figures.
cat > "$WORK/stop.lua" <<EOF
local done = 0
function response()
  done = done + 1
  if done == $REQUESTS then
    wrk.thread:stop()
    io.open("$WORK/wrk-done", "w"):close()
  end
end
EOF
wrk_count() { # URL OUT: wrk until REQUESTS responses (strace makes the gateway many times slower)
  local limit=$((REQUESTS / 100 + 60)) pid
  rm -f "$WORK/wrk-done"
  wrk -t1 -c"$CONNECTIONS" -d"${limit}s" -s "$WORK/stop.lua" "$1" > "$2" &
  pid=$!
  PIDS+=("$pid")
  while kill -0 "$pid" 2>/dev/null && [ ! -e "$WORK/wrk-done" ]; do sleep 0.05; done
  kill -INT "$pid" 2>/dev/null || true
  wait "$pid" || die "wrk failed ($?): $(cat "$2")"
}

ctxsw() { # PID... -> "voluntary involuntary", summed over every thread of them
  python3 - "$@" <<'PY'
import os, sys
vol = invol = 0
for pid in sys.argv[1:]:
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            for line in open(f"/proc/{pid}/task/{task}/status"):
                if line.startswith("voluntary_ctxt_switches:"):
                    vol += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    invol += int(line.split()[1])
        except OSError:
            pass
print(vol, invol)
PY
}
requests_of() { sed -n 's/^ *\([0-9]\+\) requests in .*/\1/p' "$1"; }
cpu_ticks() { # PID... -> utime + stime of every thread of them, in clock ticks
  local pid total=0
  for pid in "$@"; do
    total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
  done
  echo "$total"
}
for target in fanout1 fanout openresty; do
  case $target in
    fanout1) url=http://127.0.0.1:$FO1/merged pids=$FANOUT1 ;;
    fanout) url=http://127.0.0.1:$FO/merged pids=$FANOUT ;;
    openresty) url=http://127.0.0.1:$OR/merged pids="$OPENRESTY $workers" ;;
  esac
  log "$target: warm-up, then strace -c -f for $REQUESTS requests, then perf stat for ${PERF_SECONDS}s (wrk -t1 -c$CONNECTIONS)"
  timeout 30 wrk -t1 -c"$CONNECTIONS" -d1s "$url" >/dev/null
  attach=()
  for pid in $pids; do attach+=(-p "$pid"); done
  strace -c -f -o "$WORK/strace-$target.txt" "${attach[@]}" 2>"$WORK/strace-$target.err" &
  strace_pid=$!
  PIDS+=("$strace_pid")
  # Until strace has attached to every process (-f: with all its threads).
  for _ in $(seq 50); do
    [ "$(grep -c 'attached' "$WORK/strace-$target.err" 2>/dev/null || true)" -ge "$(wc -w <<< "$pids")" ] && break
    sleep 0.1
  done
  sleep 0.2
  wrk_count "$url" "$WORK/wrk-strace-$target.txt"
  kill -INT "$strace_pid"
  wait "$strace_pid" 2>/dev/null || true
  [ -s "$WORK/strace-$target.txt" ] || die "strace wrote nothing for $target: $(tail -3 "$WORK/strace-$target.err")"
  # shellcheck disable=SC2086 # $pids: one word per process
  before=$(ctxsw $pids)
  perf stat -x, -e context-switches,task-clock -o "$WORK/perf-$target.csv" -p "${pids// /,}" -- \
    timeout $((PERF_SECONDS + 30)) wrk -t1 -c"$CONNECTIONS" -d"${PERF_SECONDS}s" "$url" > "$WORK/wrk-perf-$target.txt" ||
    die "perf stat failed for $target: $(tail -3 "$WORK/perf-$target.csv" 2>/dev/null)"
  # shellcheck disable=SC2086
  after=$(ctxsw $pids)
  echo "$target $(requests_of "$WORK/wrk-strace-$target.txt") $(requests_of "$WORK/wrk-perf-$target.txt") $before $after" \
    >> "$WORK/counts.txt"
  if [ "$PROFILE_SECONDS" -gt 0 ]; then
    # shellcheck disable=SC2086 # $pids: one word per process
    cpu0=$(cpu_ticks $pids)
    perf record -q -F "$PROFILE_HZ" -g -o "$WORK/profile-$target.data" -p "${pids// /,}" -- \
      timeout $((PROFILE_SECONDS + 30)) wrk -t1 -c"$CONNECTIONS" -d"${PROFILE_SECONDS}s" "$url" \
      > "$WORK/wrk-profile-$target.txt" 2>"$WORK/profile-$target.err" ||
      die "perf record failed for $target: $(tail -3 "$WORK/profile-$target.err")"
    # shellcheck disable=SC2086
    cpu1=$(cpu_ticks $pids)
    perf script -i "$WORK/profile-$target.data" -F comm,ip,sym,dso > "$WORK/profile-$target.txt" 2>/dev/null ||
      die "perf script failed for $target"
    echo "$target $(requests_of "$WORK/wrk-profile-$target.txt") $((cpu1 - cpu0))" >> "$WORK/profiles.txt"
  fi
done

python3 - "$WORK" "$(nproc)" "$FANOUT_LOG" "$CONNECTIONS" "$PERF_SECONDS" <<'EOF'
import sys
work, nproc, log, conns, secs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
names = {"fanout1": "fanout --threads 1", "fanout": f"fanout ({nproc} threads)",
         "openresty": "OpenResty (1 worker)"}

def strace_calls(path):
    calls = {}
    for line in open(path):
        words = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(words) >= 5 and words[0][0].isdigit() and words[-1] != "total":
            try:
                calls[words[-1]] = int(words[3])
            except ValueError:
                pass
    return calls

def perf(path):
    out = {}
    for line in open(path):
        parts = line.strip().split(",")
        if len(parts) >= 3 and parts[2] in ("context-switches", "task-clock"):
            try:
                out[parts[2]] = float(parts[0])
            except ValueError:
                out[parts[2]] = None  # <not supported> / <not counted>
    return out

rows = []
for line in open(f"{work}/counts.txt"):
    target, n_strace, n_perf, vol0, invol0, vol1, invol1 = line.split()
    n_strace, n_perf = int(n_strace), int(n_perf)
    vol, invol = (int(vol1) - int(vol0)) / n_perf, (int(invol1) - int(invol0)) / n_perf
    calls = strace_calls(f"{work}/strace-{target}.txt")
    total = sum(calls.values())
    top = sorted(calls.items(), key=lambda kv: -kv[1])[:5]
    p = perf(f"{work}/perf-{target}.csv")
    cs = p.get("context-switches")
    clock = p.get("task-clock")  # ms
    rows.append((names[target], f"{n_strace:,}", f"{total / n_strace:.2f}",
                 ", ".join(f"{name} {count / n_strace:.2f}" for name, count in top),
                 f"{n_perf:,}", "–" if cs is None else f"{cs / n_perf:.3f}", f"{vol:.3f} / {invol:.3f}",
                 "–" if clock is None else f"{clock * 1000 / n_perf:.1f} µs"))
header = ("gateway", "requests (strace)", "syscalls / request", "most frequent, per request",
          "requests (perf)", "context switches / request", "voluntary / involuntary", "task-clock / request")
print("| " + " | ".join(header) + " |")
print("|---|---:|---:|---|---:|---:|---:|---:|")
for row in rows:
    print("| " + " | ".join(row) + " |")
print(f"\nwrk -t1 -c{conns}; strace -c -f on the gateway's processes (nginx: master + worker); perf stat "
      f"-e context-switches,task-clock over {secs} s without strace (voluntary / involuntary: the threads' "
      f"/proc counters over the same run: a wait for I/O, or preemption by the rest of the machine); "
      f"fanout logging at {log}.")
EOF

[ "$PROFILE_SECONDS" -gt 0 ] || exit 0
python3 - "$WORK" "$(getconf CLK_TCK)" "$PROFILE_SECONDS" "$PROFILE_HZ" <<'EOF'
import collections, re, sys
work, tck, secs, hz = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

# Kernel samples: the system call they are under (the function that
# do_syscall_64 called); the first key in its name wins.
SYSCALLS = [("writev", "kernel: writev (TCP send, with the loopback delivery to the receiver)"),
            ("recvfrom", "kernel: recvfrom"), ("epoll_wait", "kernel: epoll_wait"),
            ("epoll_ctl", "kernel: epoll_ctl"), ("getsockopt", "kernel: getsockopt"),
            ("futex", "kernel: futex"), ("accept", "kernel: accept"),
            ("write", "kernel: write (the log line)")]
# User samples: the function they are in; the first match wins.
USER = [
    (r"(_int_malloc|_int_free|malloc|free|cfree|realloc|_int_realloc|unlink_chunk|malloc_consolidate|calloc|tcache_|__libc_malloc|__libc_free|__libc_calloc)", "allocator (glibc)"),
    (r"__(mem|str)", "memcpy, memset, memcmp"),
    (r"(__GI___writev|__libc_recv|__writev|__libc_write|__GI___libc_write|epoll_wait|__getsockopt|__vdso|clock_gettime)", "libc system call stubs, vDSO clock"),
    (r"<?(hyper_util::|hyper::|httparse::|http::|h2::|want::)", "hyper, http, httparse"),
    (r"<?tokio::", "tokio (runtime, timers, I/O driver)"),
    (r"<?(fanout_gateway::shape::|serde_json::|indexmap::|foldhash)", "JSON scan and merge"),
    (r"<?(tracing|fanout::log|core::fmt|<&mut W as core::fmt)", "the log line, tracing"),
    (r"<?fanout_group::", "fanout-group"),
    (r"<?fanout_gateway::", "gateway (plan, run, respond, client, server)"),
    (r"ngx_", "nginx"),
]

def layer(frames):
    """frames: [(symbol, dso)], the leaf first."""
    if not frames:
        return "unknown"
    sym, dso = frames[0]
    if dso.startswith("[kernel"):
        symbols = [s for s, _ in frames]
        if "do_syscall_64" in symbols:
            call = symbols[max(symbols.index("do_syscall_64") - 1, 0)]
            for key, name in SYSCALLS:
                if key in call:
                    return name
            return "kernel: other system calls"
        return "kernel: interrupts, softirqs, scheduling"
    for pattern, name in USER:
        if re.match(pattern, sym):
            return name
    if "cjson" in dso:
        return "cjson"
    if "luajit" in dso or "[JIT]" in dso or "lua" in dso:
        return "LuaJIT"
    if dso == "nginx" or "ngx_" in dso:
        return "nginx"
    return "other user space"

names = {"fanout1": "fanout --threads 1", "fanout": "fanout (default threads)",
         "openresty": "OpenResty (1 worker)"}
tables, order = {}, []
for line in open(f"{work}/profiles.txt"):
    target, requests, ticks = line.split()
    per_request = int(ticks) / tck / int(requests) * 1e6
    counts, sample = collections.Counter(), []
    for raw in open(f"{work}/profile-{target}.txt", errors="replace"):
        if not raw.strip() or not raw[0].isspace():
            # A blank line or a sample's header line: the sample before ends.
            if sample:
                counts[layer(sample)] += 1
            sample = []
            continue
        m = re.match(r"\s*[0-9a-f]+ (.*) \((.*)\)\s*$", raw)
        if m:
            sym = re.sub(r"\+0x[0-9a-f]+$", "", m.group(1)).strip()
            sample.append((sym, m.group(2).split("/")[-1]))
    if sample:
        counts[layer(sample)] += 1
    total = sum(counts.values()) or 1
    tables[target] = (per_request, {k: v / total * per_request for k, v in counts.items()}, total)
    order.append(target)
layers = sorted({k for _, t, _ in tables.values() for k in t},
                key=lambda k: (not k.startswith("kernel"), -max(t.get(k, 0) for _, t, _ in tables.values())))
print()
print("| where the time goes, µs per request | " + " | ".join(names[t] for t in order) + " |")
print("|---|" + "---:|" * len(order))
for k in layers:
    print(f"| {k} | " + " | ".join(f"{tables[t][1].get(k, 0):.1f}" for t in order) + " |")
print("| **all: utime + stime ÷ requests** | " + " | ".join(f"**{tables[t][0]:.1f}**" for t in order) + " |")
print("| samples | " + " | ".join(f"{tables[t][2]:,}" for t in order) + " |")
print(f"\nperf record -F {hz} -g over {secs} s of wrk -t1 per gateway (cpu-clock samples: in the kernel by the "
      "system call they are under, in user space by the function they are in); a layer's share of the samples "
      "times the gateway's CPU time per request over the same run.")
EOF
