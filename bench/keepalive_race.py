#!/usr/bin/env python3
"""The keep-alive race: a backend that closes idle connections after its
keep-alive timeout, a network delay between it and the gateway, and calls
spaced so that the gateway reuses a connection just as the backend closes it.

    keepalive_race.py FANOUT [BASELINE]

Starts, all on 127.0.0.1:
- a Node.js backend (`node:http`, `keepAliveTimeout` 1 s, so it answers with
  `Keep-Alive: timeout=1` and closes an idle connection about 2 s after its
  last answer, as Node 20 does), on port BASE;
- a TCP proxy in front of it that delays every chunk, and the end of each
  stream, by DELAY (default 20 ms) each way, as a network does: a close of
  the backend's reaches the gateway DELAY later, and a request sent meanwhile
  meets a closed connection (BASE + 1);
- `FANOUT serve` (and `BASELINE serve`, another build, when given) with
  `GET /x` and `POST /p`, each one required call to the backend through the
  proxy (BASE + 2, BASE + 3).

Then, for each gateway at the same time, a client per method makes REQUESTS
sequential calls, each the backend's idle close (measured first) minus DELAY
(give or take 25 ms) after the answer before: most then go out when the
backend has closed the connection and the gateway has not heard of it yet.
Counts the answers that are not 200. Prints a table
and writes bench/results/keepalive.json.

Settings (environment): KEEPALIVE_REQUESTS=40, KEEPALIVE_DELAY=0.02,
KEEPALIVE_PORT=19640 (BASE).
"""

import asyncio
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time

from openloop import wait_port

REQUESTS = int(os.environ.get("KEEPALIVE_REQUESTS", "40"))
DELAY = float(os.environ.get("KEEPALIVE_DELAY", "0.02"))
BASE = int(os.environ.get("KEEPALIVE_PORT", "19640"))

NODE = """
const http = require('http');
const s = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => { res.setHeader('content-type', 'application/json'); res.end('{"ok":true}'); });
});
s.keepAliveTimeout = 1000;
s.listen(Number(process.argv[1]), '127.0.0.1');
"""

GATEWAY = """server: {{ listen: "127.0.0.1:{port}" }}
endpoints:
  - route: GET /x
    backends:
      - {{ name: node, url: "http://127.0.0.1:{backend}/a", required: true }}
  - route: POST /p
    backends:
      - {{ name: node, url: "http://127.0.0.1:{backend}/a", method: POST, body: forward, required: true }}
"""


def proxy(listen, target, delay, ready):
    """Forwards listen -> target, every chunk and each end of stream delayed."""

    async def pipe(reader, writer):
        try:
            while True:
                data = await reader.read(65536)
                await asyncio.sleep(delay)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(client_reader, client_writer):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, writer), pipe(reader, client_writer))

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", listen)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def idle_close(port):
    """How long the backend keeps an idle connection after an answer."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n")
    s.recv(4096)
    started = time.time()
    s.settimeout(30)
    s.recv(16)
    s.close()
    return time.time() - started


def series(port, method, gap, out):
    failed, statuses = 0, {}
    for _ in range(REQUESTS):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        if method == "POST":
            c.request("POST", "/p", body=b'{"n":1}', headers={"content-type": "application/json"})
        else:
            c.request("GET", "/x")
        r = c.getresponse()
        r.read()
        c.close()
        statuses[r.status] = statuses.get(r.status, 0) + 1
        failed += r.status != 200
        # The window of the race: the backend has closed, the gateway has
        # not heard yet (the close takes DELAY to reach it).
        time.sleep(gap - DELAY + random.uniform(-0.025, 0.025))
    out[(port, method)] = {"requests": REQUESTS, "failed": failed, "statuses": statuses}


def main():
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    builds = [("this build", sys.argv[1])] + ([("baseline", sys.argv[2])] if len(sys.argv) == 3 else [])
    procs = []
    work = tempfile.mkdtemp(prefix="keepalive.")
    try:
        procs.append(subprocess.Popen(["node", "-e", NODE, str(BASE)]))
        wait_port(BASE, "the Node backend")
        ready = threading.Event()
        threading.Thread(target=proxy, args=(BASE + 1, BASE, DELAY, ready), daemon=True).start()
        ready.wait(10)
        gap = idle_close(BASE)
        ports = []
        for i, (name, binary) in enumerate(builds):
            port = BASE + 2 + i
            config = os.path.join(work, f"gateway-{i}.yaml")
            with open(config, "w") as f:
                f.write(GATEWAY.format(port=port, backend=BASE + 1))
            log = open(os.path.join(work, f"gateway-{i}.log"), "w")
            procs.append(subprocess.Popen([binary, "serve", "-c", config], stdout=log, stderr=log,
                                          env={**os.environ, "RUST_LOG": "warn"}))
            wait_port(port, f"{name} ({binary})")
            ports.append((name, binary, port))
        results = {}
        threads = [threading.Thread(target=series, args=(port, method, gap, results))
                   for _, _, port in ports for method in ("GET", "POST")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
    print(f"Node.js backend closing idle connections after {gap:.2f} s, {DELAY * 1000:.0f} ms each way "
          f"between it and the gateways; {REQUESTS} sequential calls per method, each that less "
          f"the delay (± 25 ms) after the answer before")
    print("| gateway | GET failed | POST failed |")
    print("|---|---:|---:|")
    doc = {"backend_idle_close_s": round(gap, 3), "delay_ms": DELAY * 1000, "gateways": []}
    for name, binary, port in ports:
        get, post = results[(port, "GET")], results[(port, "POST")]
        print(f"| {name} | {get['failed']} of {get['requests']} | {post['failed']} of {post['requests']} |")
        doc["gateways"].append({"name": name, "binary": binary, "get": get, "post": post})
    os.makedirs("bench/results", exist_ok=True)
    with open("bench/results/keepalive.json", "w") as f:
        json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
