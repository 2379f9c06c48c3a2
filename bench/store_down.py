#!/usr/bin/env python3
"""Shared state down (targets.md, reliability): a fleet of two gateways whose
rate limits go through one real `redis-server`, under a steady load, while
Redis is slowed, then stopped, then started again. Stdlib only.

    store_down.py FANOUT

Starts, all on 127.0.0.1:
- `redis-server` (no persistence) on BASE;
- `FANOUT mock`, the backend, on BASE + 1 (`/data`, answered at once);
- two gateways, `FANOUT serve`, on BASE + 2 and BASE + 3 (admin API on
  BASE + 4 and BASE + 5), each with `GET /x`: one call to the backend under a
  `rate_limit` that is enforced fleet-wide (`rate_limits_shared: true`,
  `store.fleet_size: 2`) and high enough never to refuse, so that every
  request makes its Redis round trip (a Lua script: GCRA) and none is refused
  for its rate.

Then RATE requests a second go to each gateway (open loop: request i is due
at start + i / RATE, over 32 keep-alive connections per gateway) for 14 s,
and the admin APIs' `/api/stats` are read every 50 ms. Meanwhile:
- at 3 s, Redis stops answering for 1 s (`DEBUG SLEEP 1`): slowed;
- at 7 s, Redis is stopped (SIGTERM): down, connections refused;
- at 10 s, it is started again on the same port, empty: back.

Prints, for each phase, the requests, the ones that were not 200, the
latency (from the request's first byte sent to its answer's last byte read)
at the median, the 99th percentile and the maximum, and how many took more
than 50 ms; and when each gateway saw the store go down and come back up
(`/api/stats`, read every 50 ms), its fallbacks, and how long after Redis
was started again the store was in use again. Writes bench/results/store-down.json.

The target: no request waits on Redis past 50 ms (the store's budget,
`store.timeout`), limits fall back to the local limiter, and shared limiting
resumes without a restart. The client is Python, on the same two cores: its
own delays show in the latencies too (the healthy phase's maximum says how
much).

Settings (environment): STORE_RATE=300 (per gateway), STORE_PORT=19660
(BASE).
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from openloop import fixed_rate, wait_port

RATE = float(os.environ.get("STORE_RATE", "300"))
BASE = int(os.environ.get("STORE_PORT", "19660"))
CONNECTIONS = 32
SECONDS = 14.0
SLOW_AT, SLOW_FOR, STOP_AT, START_AT = 3.0, 1, 7.0, 10.0
PHASES = [
    ("healthy", 0.5, SLOW_AT),
    (f"slowed ({SLOW_FOR} s of DEBUG SLEEP)", SLOW_AT, SLOW_AT + SLOW_FOR),
    ("after the slow second", SLOW_AT + SLOW_FOR, STOP_AT),
    ("stopped (connections refused)", STOP_AT, START_AT),
    ("started again, empty", START_AT, SECONDS),
]

GATEWAY = """server: {{ listen: "127.0.0.1:{port}", admin: "127.0.0.1:{admin}" }}
store: {{ redis: "redis://127.0.0.1:{redis}", fleet_size: 2 }}
rate_limits_shared: true
endpoints:
  - route: GET /x
    rate_limit: {{ rate: 100000/s, burst: 100000, key: endpoint }}
    backends:
      - {{ name: a, url: "http://127.0.0.1:{backend}/data", required: true }}
"""

MOCK = """listen: "127.0.0.1:{port}"
routes:
  - {{ path: /data, body: {{ ok: true }} }}
"""


def redis_command(*args, timeout=5.0):
    """One command on a new connection; the reply's first line."""
    message = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", BASE), timeout=timeout) as s:
        s.sendall(message.encode())
        return s.recv(4096).split(b"\r\n")[0].decode()


def start_redis(directory):
    process = subprocess.Popen(
        ["redis-server", "--port", str(BASE), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--enable-debug-command", "local", "--dir", directory],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(BASE, "redis-server")
    return process


def poll_stats(admins, start, stop, out):
    """Each gateway's store state from /api/stats every 50 ms."""
    conns = {a: None for a in admins}
    while not stop.is_set():
        now = time.time() - start
        for admin in admins:
            try:
                if conns[admin] is None:
                    conns[admin] = http.client.HTTPConnection("127.0.0.1", admin, timeout=2)
                conns[admin].request("GET", "/api/stats")
                store = json.loads(conns[admin].getresponse().read())["store"]
                out.append((now, admin, store["up"], store["rate_limit_fallbacks"]))
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                conns[admin] = None
        time.sleep(0.05)


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def transitions(stats, admin):
    """[(time, up)] each time the gateway's store state changed."""
    changes, last = [], None
    for now, a, up, _ in stats:
        if a == admin and up != last:
            changes.append((round(now, 3), up))
            last = up
    return changes


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    work = tempfile.mkdtemp(prefix="fanout-store-down-")
    backend, gateways, admins = BASE + 1, [BASE + 2, BASE + 3], [BASE + 4, BASE + 5]
    procs = []
    redis = start_redis(work)
    try:
        mock = os.path.join(work, "mock.yaml")
        with open(mock, "w") as f:
            f.write(MOCK.format(port=backend))
        procs.append(subprocess.Popen([binary, "mock", "-c", mock], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        wait_port(backend, "the mock backend")
        for port, admin in zip(gateways, admins):
            config = os.path.join(work, f"gateway-{port}.yaml")
            with open(config, "w") as f:
                f.write(GATEWAY.format(port=port, admin=admin, redis=BASE, backend=backend))
            log = open(os.path.join(work, f"gateway-{port}.log"), "w")
            procs.append(subprocess.Popen([binary, "serve", "-c", config], stdout=log, stderr=log,
                                          env={**os.environ, "RUST_LOG": "warn"}))
            wait_port(port, f"the gateway ({binary})")
            wait_port(admin, "the gateway's admin API")
        for port in gateways:  # the store in use on both before the load
            for _ in range(200):
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/x")
                c.getresponse().read()
                c.close()

        start = time.time() + 0.3
        total = int(RATE * SECONDS)
        loads = {port: fixed_rate("127.0.0.1", port, "/x", RATE, total, start, CONNECTIONS)
                 for port in gateways}
        stats, stop = [], threading.Event()
        poller = threading.Thread(target=poll_stats, args=(admins, start, stop, stats))
        poller.start()
        events = {}

        def at(t):
            pause = start + t - time.time()
            if pause > 0:
                time.sleep(pause)

        at(SLOW_AT)
        events["slowed"] = round(time.time() - start, 3)
        sleeper = threading.Thread(target=redis_command,
                                   args=("DEBUG", "SLEEP", str(SLOW_FOR)), kwargs={"timeout": 10})
        sleeper.start()
        at(STOP_AT)
        events["stopped"] = round(time.time() - start, 3)
        redis.send_signal(signal.SIGTERM)
        redis.wait(timeout=10)
        at(START_AT)
        events["started"] = round(time.time() - start, 3)
        redis = start_redis(work)
        for threads, _ in loads.values():
            for t in threads:
                t.join()
        sleeper.join()
        stop.set()
        poller.join()
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        redis.terminate()
        redis.wait(timeout=10)

    report = {"rate_per_gateway": RATE, "seconds": SECONDS, "events": events, "phases": [],
              "gateways": {}}
    # (due, sent, latency) in seconds since the start, and the status; due
    # times to the millisecond, so that the 6-digit rounding of the wall clock
    # does not move a request due at a phase's start into the phase before.
    everything = [(round(r[0] - start, 3), r[1] - start, r[2], r[3])
                  for _, results in loads.values() for r in results if r is not None]
    print(f"store_down.py: 2 gateways, {RATE:.0f} requests/s each, events at "
          + ", ".join(f"{k} {v:.2f} s" for k, v in events.items()))
    print(f"{'phase':<36} {'requests':>8} {'not 200':>8} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7} {'> 50 ms':>8}")
    for name, begin, end in PHASES:
        rows = [r for r in everything if begin <= r[0] < end]
        latencies = [r[2] * 1000 for r in rows]
        phase = {
            "phase": name, "from_s": begin, "to_s": end, "requests": len(rows),
            "not_200": sum(1 for r in rows if r[3] != 200),
            "p50_ms": round(percentile(latencies, 50) or 0, 2),
            "p99_ms": round(percentile(latencies, 99) or 0, 2),
            "max_ms": round(max(latencies, default=0), 2),
            "over_50ms": sum(1 for x in latencies if x > 50),
            "late_sends": sum(1 for r in rows if r[1] - r[0] > 0.01),
        }
        report["phases"].append(phase)
        print(f"{name:<36} {phase['requests']:>8} {phase['not_200']:>8} {phase['p50_ms']:>7} "
              f"{phase['p99_ms']:>7} {phase['max_ms']:>7} {phase['over_50ms']:>8}")
    for port, admin in zip(gateways, admins):
        changes = transitions(stats, admin)
        fallbacks = max((s[3] for s in stats if s[1] == admin), default=0)
        back = next((t for t, up in changes if up and t >= events["started"]), None)
        recovered = None if back is None else round(back - events["started"], 3)
        report["gateways"][str(port)] = {"store_up_changes": changes, "fallbacks": fallbacks,
                                         "in_use_again_after_s": recovered}
        print(f"gateway :{port}: store up/down (time s, up) {changes}; "
              f"rate-limit fallbacks {fallbacks}; in use again {recovered} s after Redis was started")
    os.makedirs("bench/results", exist_ok=True)
    with open("bench/results/store-down.json", "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
