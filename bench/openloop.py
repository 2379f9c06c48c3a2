"""What the bench's Python clients share (stdlib only): a fixed-rate
(open-loop) HTTP/1.1 load over keep-alive connections, and waiting for a
port to listen.

Used by failover.py, store_down.py and keepalive_race.py, which import it
from their own folder.
"""

import http.client
import os
import socket
import sys
import threading
import time


def wait_port(port, what, seconds=20):
    """Returns once 127.0.0.1:`port` accepts a connection; exits after
    `seconds` otherwise, naming `what`."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{os.path.basename(sys.argv[0])}: {what} does not listen on 127.0.0.1:{port}")


def fixed_rate(host, port, path, rate, total, start, connections):
    """Sends `total` GET `path` to host:port, request i due at
    start + i / rate (wall clock, time.time()), over `connections` keep-alive
    connections, a thread each: a request waits for a free connection only
    when every one is busy, and is then sent late.

    Returns (threads, results), the threads started: join them. Once request
    i is done, results[i] is [due, sent, latency_s, status], the times on the
    wall clock, the latency from the first byte sent to the last byte of the
    body read, and status 0 for a transport error."""
    lock = threading.Lock()
    state = {"next": 0}
    results = [None] * total

    def worker():
        conn = None
        while True:
            with lock:
                i = state["next"]
                state["next"] += 1
            if i >= total:
                break
            due = start + i / rate
            pause = due - time.time()
            if pause > 0:
                time.sleep(pause)
            sent = time.time()
            t0 = time.perf_counter()
            status = 0
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=10)
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                status = response.status
                if response.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
            results[i] = [round(due, 6), round(sent, 6), round(time.perf_counter() - t0, 6), status]
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for t in threads:
        t.start()
    return threads, results
