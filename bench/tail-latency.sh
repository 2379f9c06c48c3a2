#!/usr/bin/env bash
# Tail latency with and without hedging only (targets.md): one backend whose
# calls take 1 ms 97 % of the time and 100 ms 3 % of the time; the same
# endpoint without and with `hedge: { percentile: 95, max_extra: 10% }`, and
# the Go reference (no hedging). A shortcut for
#   BENCH_ONLY=tail TAIL_REQUESTS=<requests> bash bench/run.sh
# Prints the table; BENCHMARKS.md is left alone.
#
# Run: bash bench/tail-latency.sh [requests per endpoint, default 3000]
set -euo pipefail
TAIL_REQUESTS=${1:-${TAIL_REQUESTS:-3000}} BENCH_ONLY=tail exec bash "$(dirname "$0")/run.sh"
