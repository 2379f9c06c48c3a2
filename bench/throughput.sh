#!/usr/bin/env bash
# Aggregation throughput and memory only (targets.md, first and last rows,
# and "against the fastest peer"): three nginx backends, the Go reference, the
# OpenResty-style and Node peers, and fanout (default threads and --threads 1),
# wrk -t2 -c64, side by side in alternating rounds of one run. A shortcut for
#   BENCH_ONLY=throughput BENCH_SECONDS=<seconds> bash bench/run.sh
# (see bench/run.sh for the settings; FANOUT_LOG=warn turns fanout's
# per-request log line off). Prints the table; BENCHMARKS.md is left alone.
#
# Run: bash bench/throughput.sh [seconds, default 10]
set -euo pipefail
BENCH_SECONDS=${1:-${BENCH_SECONDS:-10}} BENCH_ONLY=throughput exec bash "$(dirname "$0")/run.sh"
