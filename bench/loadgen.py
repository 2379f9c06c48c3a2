#!/usr/bin/env python3
"""A small open-loop (fixed-rate) HTTP/1.1 client for bench/run.sh; stdlib only.

wrk is closed-loop: it measures capacity, not the latency of a lightly loaded
server. This client sends requests on a fixed schedule over one keep-alive
connection per target and times each one with time.perf_counter_ns, from the
first byte sent to the last byte of the body read.

With several targets, every tick sends one request to each of them (in a
rotating order), so all targets are measured under the same conditions at the
same moments: their latencies can be compared, and subtracted.

    loadgen.py --rate 200 --seconds 10 --warmup 1 NAME=URL [NAME=URL ...]

prints one JSON object: {"rate", "seconds", "late", "targets": {NAME: {"count",
"errors", "statuses", "p50_us", "p90_us", "p99_us", "max_us", "min_us",
"mean_us"}}}. `--count N` sends N requests per target instead of running for
`--seconds`. Ticks that could not be sent on time (the previous ones were still
running) are sent at once and counted in "late".
"""

import argparse
import json
import socket
import sys
import time
from urllib.parse import urlsplit


class Connection:
    def __init__(self, url, timeout):
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise SystemExit(f"loadgen: only http:// URLs: {url}")
        self.host = parts.hostname
        self.port = parts.port or 80
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "User-Agent: fanout-bench-loadgen\r\nAccept: */*\r\n\r\n"
        ).encode()
        self.timeout = timeout
        self.sock = None
        self.buf = b""

    def connect(self):
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.buf = b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by the server")
        self.buf += chunk

    def _read_line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def get(self):
        """One request; returns (status, latency in ns). Reconnects if needed."""
        if self.sock is None:
            self.connect()
        start = time.perf_counter_ns()
        self.sock.sendall(self.request)
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        if headers.get(b"transfer-encoding", b"").endswith(b"chunked"):
            while True:
                size = int(self._read_line().split(b";")[0], 16)
                if size == 0:
                    while self._read_line():  # trailers, then the empty line
                        pass
                    break
                self._read_exact(size + 2)
        elif b"content-length" in headers:
            self._read_exact(int(headers[b"content-length"]))
        else:  # read to the end of the connection
            try:
                while True:
                    self._fill()
            except ConnectionError:
                pass
            self.close()
        elapsed = time.perf_counter_ns() - start
        if headers.get(b"connection") == b"close":
            self.close()
        return status, elapsed


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    rank = round(p / 100 * (len(sorted_values) - 1))
    return sorted_values[min(len(sorted_values) - 1, max(0, rank))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200, help="requests/s per target")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--count", type=int, help="requests per target (instead of --seconds)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds not recorded")
    parser.add_argument("--timeout", type=float, default=5.0, help="per request, seconds")
    parser.add_argument("targets", nargs="+", metavar="NAME=URL")
    args = parser.parse_args()

    targets = []
    for spec in args.targets:
        name, sep, url = spec.partition("=")
        if not sep:
            raise SystemExit(f"loadgen: expected NAME=URL, got {spec!r}")
        targets.append((name, Connection(url, args.timeout)))
    samples = {name: [] for name, _ in targets}
    errors = {name: 0 for name, _ in targets}
    statuses = {name: {} for name, _ in targets}

    interval_ns = int(1e9 / args.rate)
    warmup_ticks = int(args.warmup * args.rate)
    if args.count is not None:
        total_ticks = warmup_ticks + args.count
    else:
        total_ticks = warmup_ticks + int(args.seconds * args.rate)
    late = 0
    start = time.perf_counter_ns()
    for tick in range(total_ticks):
        due = start + tick * interval_ns
        now = time.perf_counter_ns()
        if now < due:
            time.sleep((due - now) / 1e9)
        elif tick and now - due > interval_ns:
            late += 1
        record = tick >= warmup_ticks
        # Rotate the order so that no target always goes first.
        order = targets[tick % len(targets):] + targets[: tick % len(targets)]
        for name, conn in order:
            try:
                status, elapsed = conn.get()
            except (OSError, ValueError, IndexError, ConnectionError) as error:
                conn.close()
                if record:
                    errors[name] += 1
                    statuses[name][type(error).__name__] = statuses[name].get(type(error).__name__, 0) + 1
                continue
            if record:
                samples[name].append(elapsed)
                statuses[name][str(status)] = statuses[name].get(str(status), 0) + 1
    for _, conn in targets:
        conn.close()

    report = {"rate": args.rate, "seconds": args.seconds if args.count is None else None,
              "late": late, "targets": {}}
    for name, _ in targets:
        values = sorted(samples[name])
        us = lambda ns: None if ns is None else round(ns / 1000, 1)
        report["targets"][name] = {
            "count": len(values),
            "errors": errors[name],
            "statuses": statuses[name],
            "min_us": us(values[0] if values else None),
            "p50_us": us(percentile(values, 50)),
            "p90_us": us(percentile(values, 90)),
            "p99_us": us(percentile(values, 99)),
            "max_us": us(values[-1] if values else None),
            "mean_us": us(sum(values) / len(values) if values else None),
        }
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
