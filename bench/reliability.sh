# What the reliability scripts (soak.sh, overload.sh, slow-clients.sh,
# h2-abuse.sh) share; sourced from the repo's root with NAME set to the
# script's name. It builds the release binary unless BENCH_NO_BUILD=1, checks
# that the ports given to `reliability_start` are free, and stops every
# process listed in PIDS and removes WORK when the script exits.

TARGET=${CARGO_TARGET_DIR:-target}
FANOUT=$TARGET/release/fanout
OUT=bench/results
mkdir -p "$OUT"
WORK=$(mktemp -d)
PIDS=()

log() { printf '\033[1m[%s %s]\033[0m %s\n' "$NAME" "$(date +%H:%M:%S)" "$*" >&2; }

reliability_cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap reliability_cleanup EXIT

# reliability_start PORT...: the release binary built, the ports free.
reliability_start() {
  if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
    log "cargo build --release --bin fanout"
    cargo build --release --quiet --bin fanout
  fi
  local busy
  busy=$(python3 bench/lib.py ports-busy "$@")
  [ -z "$busy" ] || { echo "$NAME: ports already in use on 127.0.0.1: $busy" >&2; exit 1; }
}

# needs_h2: python's h2 package (PyPI), installed when missing.
needs_h2() {
  python3 -c 'import h2' 2>/dev/null || { log "pip install h2"; pip install -q h2; }
}

# wait_ports PORT...: until something listens on each (at most 20 s).
wait_ports() {
  python3 -c 'import sys; sys.path.insert(0, "bench"); from reliability import wait_port
for port in sys.argv[1:]: wait_port("127.0.0.1", int(port))' "$@"
}
