#!/usr/bin/env python3
"""The overload scenario's driver (run by bench/overload.sh); stdlib only.

Runs `fanout fetch` (closed loop: LIMIT requests in flight at once, each
started as soon as one ends) against GET /work, first with as many clients as
the bulkhead admits (1x), then with ten times as many (10x), then 1x again;
while the 10x run goes on, it asks once more itself and keeps the body of a
503 to show its error kind. For each run: the statuses, the latency of the
admitted requests (200) and of the shed ones (503), and the gateway's CPU
time; and the same latencies as the gateway logged them (its `ms` field:
from the request's start to its outcome), which leave out the client's own
scheduling on a busy machine. Prints one JSON document and writes it with
--out.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from reliability import get_json, machine_load, sample, summary_ms


def gateway_side(log, start):
    """The gateway's own time for each request logged since byte `start` of
    its JSON log (`ms`: from the request's start to its outcome), by status:
    what the gateway did, without the client's scheduling."""
    by_status = {}
    with open(log) as f:
        f.seek(start)
        for line in f:
            try:
                fields = json.loads(line)["fields"]
            except (ValueError, KeyError):
                continue
            if "ms" in fields and "status" in fields:
                by_status.setdefault(str(fields["status"]), []).append(fields["ms"] / 1000)
    return {status: summary_ms(values) for status, values in by_status.items()}


def log_size(log):
    try:
        with open(log) as f:
            return f.seek(0, 2)
    except OSError:
        return 0


def run(fanout, url, limit, count, gateway_pid, log, probe=False):
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write((url + "\n") * count)
        urls = f.name
    before = sample(gateway_pid)
    log_start = log_size(log)
    began = time.monotonic()
    child = subprocess.Popen([fanout, "fetch", "--json", "--limit", str(limit), "--timeout", "10s",
                              "-f", urls], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    shed_body = None
    if probe:
        # One more client, while the load runs: what a shed request says.
        time.sleep(0.5)
        for _ in range(200):
            try:
                urllib.request.urlopen(url, timeout=5).read()
            except urllib.error.HTTPError as error:
                if error.code == 503:
                    shed_body = json.loads(error.read())
                    break
            except OSError:
                pass
    out, _ = child.communicate(timeout=600)
    wall = time.monotonic() - began
    time.sleep(0.2)  # the last log lines
    after = sample(gateway_pid)
    report = json.loads(out)
    statuses, admitted, shed, errors = {}, [], [], 0
    for row in report["requests"]:
        key = str(row["status"]) if row["status"] is not None else "error"
        statuses[key] = statuses.get(key, 0) + 1
        latency = row["latency_ms"] / 1000
        if row["error"] is not None:
            errors += 1
        elif row["status"] == 200:
            admitted.append(latency)
        elif row["status"] == 503:
            shed.append(latency)
    return {
        "clients": limit, "requests": count, "wall_s": round(wall, 2),
        "statuses": statuses, "errors": errors,
        "admitted": summary_ms(admitted),
        "admitted_per_s": round(len(admitted) / wall, 1),
        "shed": summary_ms(shed),
        "shed_share": round(len(shed) / count, 4),
        "gateway_side": gateway_side(log, log_start),
        "gateway_cpu_s": round(after["cpu_s"] - before["cpu_s"], 2),
        "gateway_rss_kb": after["rss_kb"],
        "shed_body": shed_body,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fanout", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--gateway-pid", type=int, required=True)
    parser.add_argument("--mock", required=True, help="the upstream's base URL (/__mock/stats)")
    parser.add_argument("--log", required=True, help="the gateway's JSON log")
    parser.add_argument("--bulkhead", type=int, default=20)
    parser.add_argument("--requests-1x", type=int, default=3000)
    parser.add_argument("--requests-10x", type=int, default=20000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    n = args.bulkhead
    log = args.log
    run(args.fanout, args.url, n, n * 10, args.gateway_pid, log)  # warm-up: connections, pools
    first = run(args.fanout, args.url, n, args.requests_1x, args.gateway_pid, log)
    overload = run(args.fanout, args.url, 10 * n, args.requests_10x, args.gateway_pid, log, probe=True)
    second = run(args.fanout, args.url, n, args.requests_1x, args.gateway_pid, log)

    base_p50 = (first["admitted"]["p50_ms"] + second["admitted"]["p50_ms"]) / 2
    base_p99 = (first["admitted"]["p99_ms"] + second["admitted"]["p99_ms"]) / 2
    ratio = lambda a, b: round(a / b, 2) if a is not None and b else None
    report = {
        "bulkhead": n,
        "runs": {"1x_before": first, "10x": overload, "1x_after": second},
        "admitted_p50_ratio_10x_to_1x": ratio(overload["admitted"]["p50_ms"], base_p50),
        "admitted_p99_ratio_10x_to_1x": ratio(overload["admitted"]["p99_ms"], base_p99),
        "gateway_side_admitted_p50_ratio": ratio(
            overload["gateway_side"]["200"]["p50_ms"],
            (first["gateway_side"]["200"]["p50_ms"] + second["gateway_side"]["200"]["p50_ms"]) / 2),
        "gateway_side_admitted_p99_ratio": ratio(
            overload["gateway_side"]["200"]["p99_ms"],
            (first["gateway_side"]["200"]["p99_ms"] + second["gateway_side"]["200"]["p99_ms"]) / 2),
        "shed_p50_ms": overload["shed"]["p50_ms"],
        "shed_p99_ms": overload["shed"]["p99_ms"],
        # The most calls the upstream ever had at once: the bulkhead held if
        # it is the bulkhead's size.
        "upstream_max_in_flight": get_json(f"{args.mock}/__mock/stats")["max_in_flight"],
        "unexpected": sum(v for k, v in overload["statuses"].items() if k not in ("200", "503"))
        + sum(v for r in (first, second) for k, v in r["statuses"].items() if k != "200"),
        "machine": machine_load(),
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
