#!/usr/bin/env python3
"""The hostile clients of bench/slow-clients.sh, in one process (needs the
`h2` package from PyPI for the zero-window HTTP/2 readers).

Opens, in this order and all at once: slow readers (HTTP/1.1 connections
with a tiny receive buffer that ask for GET /huge and never read it; HTTP/2
connections with a zero flow-control window, several GET /big streams each),
slowloris connections (request headers at one byte a second, never ended),
then idle keep-alive connections (one small request each, answered, then
silence). It watches each connection until the gateway closes it or
--seconds pass, while sampling the gateway's RSS and open fds, and prints
one JSON document: for each kind, how many were opened, refused by the
connection cap (the 503 "too many connections"), served, closed by the
gateway and when (seconds after opening), answered 503 because the
response buffer was full (shed_503), read in full (completed: the answer fit
in the kernel's socket buffers), and still open at the end.
"""

import argparse
import json
import selectors
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.settings

from reliability import percentile, sample

TOO_MANY = b"too many connections"


class Conn:
    def __init__(self, kind, sock, opened):
        self.kind, self.sock, self.opened = kind, sock, opened
        self.received = b""
        self.bytes = 0
        self.outcome = None  # refused | closed
        self.closed_after = None
        self.served = False
        self.shed = False  # answered 503: over response_buffer
        self.status = None  # HTTP/1.1 slow readers: their answer's status
        self.sent = 0  # slowloris: header bytes sent
        self.h2 = None


def connect(host, port, rcvbuf=None):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((host, port))
    sock.setblocking(False)
    return sock


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--gateway-pid", type=int, required=True)
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--slowloris", type=int, default=200)
    parser.add_argument("--slow-h1", type=int, default=20)
    parser.add_argument("--slow-h2", type=int, default=4)
    parser.add_argument("--h2-streams", type=int, default=10)
    parser.add_argument("--big-bytes", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    host = "127.0.0.1"

    sel = selectors.DefaultSelector()
    conns = []
    start = time.monotonic()
    series = []

    def add(kind, sock):
        conn = Conn(kind, sock, time.monotonic() - start)
        conns.append(conn)
        sel.register(sock, selectors.EVENT_READ, conn)
        return conn

    def close(conn, outcome):
        if conn.outcome is None:
            conn.outcome = outcome
            conn.closed_after = time.monotonic() - start - conn.opened
        try:
            sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    # Slow readers, HTTP/1.1: a 4 KiB receive buffer, never read. Not
    # registered for reading (reading is what they never do).
    slow_h1 = []
    for _ in range(args.slow_h1):
        sock = connect(host, args.port, rcvbuf=4096)
        sock.send(b"GET /huge HTTP/1.1\r\nhost: gw\r\n\r\n")
        slow_h1.append(Conn("slow_reader_h1", sock, time.monotonic() - start))
    # Slow readers, HTTP/2: a zero window for every stream.
    for _ in range(args.slow_h2):
        sock = connect(host, args.port)
        conn = add("slow_reader_h2", sock)
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        h2c.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        h2c.initiate_connection()
        for _ in range(args.h2_streams):
            stream = h2c.get_next_available_stream_id()
            h2c.send_headers(stream, [(":method", "GET"), (":path", "/big"), (":scheme", "http"),
                                      (":authority", "gw")], end_stream=True)
        sock.sendall(h2c.data_to_send())
        conn.h2 = h2c
    # Slowloris: headers that never end, one byte a second.
    loris_head = b"GET /small HTTP/1.1\r\nhost: gw\r\nx-slow: " + b"a" * 10_000
    loris = []
    for _ in range(args.slowloris):
        conn = add("slowloris", connect(host, args.port))
        loris.append(conn)
    # Idle keep-alive: one request, then nothing.
    for i in range(args.idle):
        try:
            sock = connect(host, args.port)
        except OSError:
            conns.append(Conn("idle", None, time.monotonic() - start))
            conns[-1].outcome = "connect_failed"
            continue
        add("idle", sock)
        try:
            sock.send(b"GET /small HTTP/1.1\r\nhost: gw\r\n\r\n")
        except OSError:
            pass
    opened_in = time.monotonic() - start

    rss_peak = 0
    next_sample = 0.0
    next_drip = 1.0
    while True:
        now = time.monotonic() - start
        if now >= args.seconds:
            break
        if now >= next_sample:
            s = sample(args.gateway_pid)
            rss_peak = max(rss_peak, s["rss_kb"])
            open_kinds = {}
            for c in conns:
                if c.outcome is None and c.sock is not None:
                    open_kinds[c.kind] = open_kinds.get(c.kind, 0) + 1
            series.append({"t_s": round(now, 2), "rss_kb": s["rss_kb"], "fds": s["fds"],
                           "open": open_kinds})
            next_sample += 0.5
        if now >= next_drip:
            for conn in loris:
                if conn.outcome is None and conn.sent < len(loris_head):
                    try:
                        conn.sock.send(loris_head[conn.sent:conn.sent + 1])
                        conn.sent += 1
                    except OSError:
                        close(conn, "closed")
            next_drip += 1.0
        for key, _ in sel.select(timeout=0.05):
            conn = key.data
            try:
                data = conn.sock.recv(65536)
            except (ConnectionResetError, OSError):
                data = b""
            if not data:
                close(conn, "refused" if TOO_MANY in conn.received else "closed")
                continue
            conn.bytes += len(data)
            if len(conn.received) < 4096:
                conn.received += data[:4096]
            if conn.h2 is not None:
                try:
                    events = conn.h2.receive_data(data)
                except Exception:  # a GOAWAY or a protocol error: it is closing
                    events = []
                for event in events:
                    if isinstance(event, h2.events.ResponseReceived):
                        status = dict(event.headers).get(b":status", dict(event.headers).get(":status"))
                        if status in (b"503", "503"):
                            conn.shed = True
                        else:
                            conn.served = True
                out = conn.h2.data_to_send()
                if out:
                    try:
                        conn.sock.send(out)
                    except OSError:
                        pass
            elif conn.received.startswith(b"HTTP/1.1 200"):
                conn.served = True

    # The HTTP/1.1 slow readers: read now what was sent; cut short (fewer
    # bytes than the answer) means the gateway gave up on them.
    for conn in slow_h1:
        conn.sock.setblocking(True)
        conn.sock.settimeout(2)
        try:
            while True:
                data = conn.sock.recv(1 << 20)
                if not data:
                    break
                if not conn.bytes:
                    conn.status = data[9:12].decode(errors="replace")
                    conn.served = data.startswith(b"HTTP/1.1 200")
                    conn.shed = data.startswith(b"HTTP/1.1 503") and TOO_MANY not in data
                    if TOO_MANY in data:
                        conn.outcome = "refused"
                conn.bytes += len(data)
        except OSError:
            pass
        if conn.outcome is None:
            if conn.shed:
                conn.outcome = "closed"
            else:
                conn.outcome = "closed" if conn.bytes < args.big_bytes else "completed"
        conn.sock.close()
    conns += slow_h1
    for conn in conns:
        if conn.outcome is None and conn.sock is not None:
            conn.sock.close()

    kinds = {}
    for conn in conns:
        k = kinds.setdefault(conn.kind, {"opened": 0, "refused": 0, "served": 0, "shed_503": 0,
                                         "closed": 0, "completed": 0, "still_open": 0, "_after": []})
        k["opened"] += 1
        if conn.served:
            k["served"] += 1
        if conn.status is not None:
            statuses = k.setdefault("statuses", {})
            statuses[conn.status] = statuses.get(conn.status, 0) + 1
        if conn.shed:
            k["shed_503"] += 1
        if conn.outcome == "refused":
            k["refused"] += 1
        elif conn.outcome == "closed":
            k["closed"] += 1
            if conn.closed_after is not None:
                k["_after"].append(conn.closed_after)
        elif conn.outcome is None:
            k["still_open"] += 1
        else:
            k[conn.outcome] = k.get(conn.outcome, 0) + 1
    for k in kinds.values():
        after = sorted(k.pop("_after"))
        if after:
            k["closed_after_s"] = {"min": round(after[0], 2), "p50": round(percentile(after, 50), 2),
                                   "max": round(after[-1], 2)}
    report = {"opened_in_s": round(opened_in, 2), "seconds": args.seconds, "kinds": kinds,
              "gateway_rss_peak_kb": rss_peak, "series": series}
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    json.dump({k: v for k, v in report.items() if k != "series"}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
