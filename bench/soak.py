#!/usr/bin/env python3
"""The soak's client and sampler (run by bench/soak.sh); stdlib only.

Sends GETs at a fixed rate over keep-alive connections (one per worker
thread, each worker keeping its share of the schedule): 99 % to
/soak/{id}, 1 % to /fault/{kind} with the five kinds in turn. Every few
seconds it samples the gateway's and the mock's RSS, open file descriptors
and CPU time from /proc. Every answer's status is counted and checked
against what bench/soak-gateway.yaml can produce:

    /soak/{id}                                       200, 502
    /fault/reset, invalid_json, wrong_content_type   502
    /fault/hang, drip                                504

Anything else, or a connection that fails, is unexpected. Prints one JSON
document (the series, the counts, the verdict) and writes it with --out.
"""

import argparse
import json
import sys
import threading
import time

from reliability import Client, line_panel, machine_load, sample, summary_ms, svg

FAULTS = ["reset", "hang", "drip", "invalid_json", "wrong_content_type"]
EXPECTED = {
    "soak": {200, 502},
    "reset": {502},
    "invalid_json": {502},
    "wrong_content_type": {502},
    "hang": {504},
    "drip": {504},
}


def route(tick):
    """The path of request number `tick`, and its class."""
    if tick % 100 == 50:
        kind = FAULTS[(tick // 100) % len(FAULTS)]
        return f"/fault/{kind}", kind
    return f"/soak/{tick % 1000}", "soak"


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.statuses = {}  # class -> status -> count
        self.incomplete = 0  # 200s with x-fanout-complete: false
        self.unexpected = []  # the first few, with when and what
        self.unexpected_count = 0
        self.done = 0
        self.window = []  # latencies of /soak since the last sample

    def record(self, at, kind, status, complete, latency):
        with self.lock:
            self.done += 1
            by = self.statuses.setdefault(kind, {})
            by[str(status)] = by.get(str(status), 0) + 1
            if status == 200 and complete == "false":
                self.incomplete += 1
            if status not in EXPECTED[kind]:
                self.unexpected_count += 1
                if len(self.unexpected) < 20:
                    self.unexpected.append({"at_s": round(at, 2), "class": kind, "status": status})
            if kind == "soak" and latency is not None:
                self.window.append(latency)


def worker(index, workers, args, start, stop_at, counts):
    client = Client(args.host, args.port, timeout=5.0)
    interval = workers / args.rate
    tick = index
    n = 0
    while True:
        due = start + n * interval + index / args.rate
        now = time.monotonic()
        if due >= stop_at:
            break
        if now < due:
            time.sleep(due - now)
        path, kind = route(tick)
        began = time.monotonic()
        try:
            status, headers, _ = client.get(path)
            complete = headers.get("x-fanout-complete")
        except (OSError, ConnectionError, ValueError, IndexError) as error:
            status, complete = type(error).__name__, None
        counts.record(began - start, kind, status, complete, time.monotonic() - began)
        tick += workers
        n += 1
    client.close()


def plot(report):
    """RSS, open fds and the load over the soak, warm-up shaded."""
    series = report["series"]
    xs = [s["t_s"] for s in series]
    warm = [(0, report["warmup_s"], "#ffd43b", "warm-up")]
    limit = report["rss_warm_kb"] * 1.1 / 1024
    rss = line_panel(10, 30, 780, 200, "fanout serve: RSS", xs, [
        ("gateway", "#1971c2", [s["rss_kb"] / 1024 for s in series]),
        ("+10 % of warm-up", "#e03131", [limit for _ in series]),
        ("mock", "#868e96", [s["mock_rss_kb"] / 1024 for s in series]),
    ], "MiB", warm)
    fds = line_panel(10, 270, 780, 160, "open file descriptors", xs, [
        ("gateway", "#1971c2", [s["fds"] for s in series]),
        ("mock", "#868e96", [s["mock_fds"] for s in series]),
    ], "count", warm)
    load = line_panel(10, 470, 780, 160, "load", xs, [
        ("requests/s", "#2f9e44", [s["rps"] for s in series]),
        ("/soak p99 ms", "#f08c00", [s["soak_p99_ms"] or 0 for s in series]),
    ], "per interval", warm)
    return svg(800, 650, rss + fds + load)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--gateway-pid", type=int, required=True)
    parser.add_argument("--mock-pid", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--warmup", type=float, default=60)
    parser.add_argument("--rate", type=float, default=300, help="requests/s in all")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--every", type=float, default=5, help="seconds between samples")
    parser.add_argument("--rss-slack", type=float, default=0.10)
    parser.add_argument("--fd-slack", type=int, default=8)
    parser.add_argument("--out", required=True)
    parser.add_argument("--svg", help="plot the series here")
    args = parser.parse_args()

    counts = Counts()
    start = time.monotonic()
    stop_at = start + args.seconds
    threads = [threading.Thread(target=worker, args=(i, args.workers, args, start, stop_at, counts))
               for i in range(args.workers)]
    for thread in threads:
        thread.start()

    series = []
    last_done, last_t = 0, 0.0
    next_at = start
    while any(thread.is_alive() for thread in threads):
        next_at += args.every
        time.sleep(max(0.0, next_at - time.monotonic()))
        t = time.monotonic() - start
        with counts.lock:
            done, window, counts.window = counts.done, counts.window, []
        window.sort()
        gateway, mock = sample(args.gateway_pid), sample(args.mock_pid)
        series.append({
            "t_s": round(t, 1),
            "rss_kb": gateway["rss_kb"], "fds": gateway["fds"], "cpu_s": gateway["cpu_s"],
            "mock_rss_kb": mock["rss_kb"], "mock_fds": mock["fds"],
            "rps": round((done - last_done) / (t - last_t), 1),
            "soak_p99_ms": summary_ms(window)["p99_ms"],
        })
        last_done, last_t = done, t
    for thread in threads:
        thread.join()
    # The clients are gone: what the gateway holds once they left.
    time.sleep(2)
    after = sample(args.gateway_pid)

    warm = next((s for s in series if s["t_s"] >= args.warmup), series[-1])
    later = [s for s in series if s["t_s"] >= warm["t_s"]]
    rss_max = max(s["rss_kb"] for s in later)
    fds = [s["fds"] for s in later]
    rss_ok = rss_max <= warm["rss_kb"] * (1 + args.rss_slack)
    fds_ok = max(fds) - warm["fds"] <= args.fd_slack and series[-1]["fds"] - warm["fds"] <= args.fd_slack
    report = {
        "seconds": args.seconds, "warmup_s": args.warmup, "rate": args.rate,
        "requests": counts.done,
        "statuses": counts.statuses,
        "incomplete_200": counts.incomplete,
        "unexpected": counts.unexpected_count,
        "unexpected_first": counts.unexpected,
        "rss_warm_kb": warm["rss_kb"], "rss_max_kb": rss_max,
        "rss_growth": round(rss_max / warm["rss_kb"] - 1, 4),
        "rss_end_kb": series[-1]["rss_kb"], "hwm_kb": after["hwm_kb"],
        "fds_warm": warm["fds"], "fds_min": min(fds), "fds_max": max(fds),
        "fds_end": series[-1]["fds"], "fds_after_clients_left": after["fds"],
        "cpu_s": round(after["cpu_s"], 2),
        "machine": machine_load(),
        "pass": {"rss": rss_ok, "fds": fds_ok, "statuses": counts.unexpected_count == 0},
        "series": series,
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    if args.svg:
        with open(args.svg, "w") as f:
            f.write(plot(report))
    json.dump({k: v for k, v in report.items() if k != "series"}, sys.stdout, indent=1)
    print()
    sys.exit(0 if all(report["pass"].values()) else 1)


if __name__ == "__main__":
    main()
