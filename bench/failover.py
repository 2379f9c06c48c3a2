#!/usr/bin/env python3
"""The client of the "many hosts" scenario (bench/run.sh, BENCH_ONLY=hosts);
stdlib only.

    failover.py run --url URL --stats URL --rate R --seconds S [--connections N]
        Sends GET URL at a fixed rate (open loop: request i is due at
        start + i / R) over N keep-alive connections, and reads the gateway's
        /api/stats (STATS) every 100 ms. Prints one JSON object: "requests"
        [[due, sent, latency_s, status or 0 for a transport error], ...] with
        wall-clock times (time.time()), and "stats" [[time, {target: [state,
        calls]}], ...] for the first upstream.

    failover.py summary RUN.json --target HOST:PORT --fail T1 --refuse T2 [--backend-log FILE]
        What the run says about the failing target HOST:PORT, told at T1 to
        answer 5xx and stopped (connections refused) at T2 (wall clock):
        errors that reached clients within 1 s of the failure (and over the
        whole run), the target's share of the attempts while it was ejected,
        when it was first ejected. The failure is the target's first 5xx in
        its own access log (FILE: "$msec $status" lines) when given, else T1.
        One JSON object.
"""

import argparse
import http.client
import json
import sys
import threading
import time
from urllib.parse import urlsplit

from openloop import fixed_rate


def run(url, stats_url, rate, seconds, connections):
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    total = int(rate * seconds)
    start = time.time() + 0.2
    threads, results = fixed_rate(parts.hostname, parts.port, path, rate, total, start, connections)

    samples = []
    done = threading.Event()

    def poll():
        sparts = urlsplit(stats_url)
        conn = None
        while not done.is_set():
            at = time.time()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(sparts.hostname, sparts.port, timeout=2)
                conn.request("GET", sparts.path)
                doc = json.loads(conn.getresponse().read())
                targets = doc["upstreams"][0]["targets"]
                samples.append([round(at, 6), {t["target"]: [t["state"], t["calls"]] for t in targets}])
            except (OSError, http.client.HTTPException, ValueError, KeyError, IndexError):
                if conn is not None:
                    conn.close()
                conn = None
            done.wait(0.1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    for t in threads:
        t.join(seconds + 60)
    done.set()
    poller.join(5)
    return {"url": url, "rate": rate, "seconds": seconds, "connections": connections,
            "requests": [r for r in results if r is not None], "stats": samples}


def backend_answers(path):
    """[(time, status)] from an access log of "$msec $status" lines."""
    out = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                out.append((float(parts[0]), int(parts[1])))
    return out


def summary(doc, target, told_at, refuse_at, backend_log=None):
    requests = doc["requests"]
    answers = backend_answers(backend_log) if backend_log else []
    first_5xx = next((t for t, status in answers if status >= 500), None)
    fail_at = first_5xx if first_5xx is not None else told_at
    ok = lambda r: r[3] == 200

    def window(lo, hi):
        rows = [r for r in requests if lo <= r[1] < hi]
        errors = sum(1 for r in rows if not ok(r))
        lat = sorted(r[2] for r in rows)
        p99 = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))] * 1000 if lat else None
        return {"requests": len(rows), "errors": errors,
                "error_pct": round(errors / len(rows) * 100, 3) if rows else None,
                "p99_ms": round(p99, 2) if p99 is not None else None}

    end = max((r[1] for r in requests), default=fail_at)
    first = min((r[1] for r in requests), default=fail_at)
    statuses = {}
    for r in requests:
        key = str(r[3]) if r[3] else "transport error"
        statuses[key] = statuses.get(key, 0) + 1

    # Attempts between consecutive stats samples in which the target was
    # ejected at both ends (it was out for the whole interval).
    samples = doc["stats"]
    ejected_calls = all_calls = 0
    ejected_s = 0.0
    first_ejected = None
    ejections = 0
    previous_state = "up"
    for (t0, s0), (t1, s1) in zip(samples, samples[1:]):
        if target not in s0 or target not in s1:
            continue
        if s1[target][0] == "ejected" and previous_state != "ejected" and t1 >= fail_at:
            ejections += 1
            if first_ejected is None:
                first_ejected = t1
        previous_state = s1[target][0]
        if s0[target][0] == "ejected" and s1[target][0] == "ejected":
            ejected_s += t1 - t0
            ejected_calls += s1[target][1] - s0[target][1]
            all_calls += sum(v[1] for v in s1.values()) - sum(s0[k][1] for k in s1 if k in s0)
    # The target's share of every attempt after the failure.
    after = [(t, s) for t, s in samples if t >= fail_at and target in s]
    share_after = None
    if len(after) >= 2:
        (t0, s0), (t1, s1) = after[0], after[-1]
        total = sum(v[1] for v in s1.values()) - sum(s0[k][1] for k in s1 if k in s0)
        share_after = round((s1[target][1] - s0[target][1]) / total * 100, 3) if total else None
    backend = None
    if answers:
        backend = {
            "ok_before": sum(1 for t, st in answers if st < 500 and t < fail_at),
            "ok_after_failure": sum(1 for t, st in answers if st < 500 and t >= fail_at),
            "5xx": sum(1 for _, st in answers if st >= 500),
        }
    return {
        "target": target,
        "told_to_fail_at": told_at,
        "failed_at": fail_at,
        "failure_delay_ms": round((fail_at - told_at) * 1000),
        "backend": backend,
        "rate": doc["rate"],
        "requests": len(requests),
        "statuses": statuses,
        "late_ms_max": round(max((r[1] - r[0] for r in requests), default=0) * 1000, 1),
        "before": window(first, fail_at),
        "first_second": window(fail_at, fail_at + 1),
        "errors_5xx_phase": window(fail_at, refuse_at),
        "refused_phase": window(refuse_at, end + 1),
        "after_failure": window(fail_at, end + 1),
        "ejected_after_ms": round((first_ejected - fail_at) * 1000) if first_ejected else None,
        "ejections": ejections,
        "ejected_s": round(ejected_s, 2),
        "attempts_while_ejected": all_calls,
        "target_attempts_while_ejected": ejected_calls,
        "target_share_while_ejected_pct": round(ejected_calls / all_calls * 100, 3) if all_calls else None,
        "target_share_after_failure_pct": share_after,
        "refused_s": round(end - refuse_at, 2),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--url", required=True)
    r.add_argument("--stats", required=True)
    r.add_argument("--rate", type=float, required=True)
    r.add_argument("--seconds", type=float, required=True)
    r.add_argument("--connections", type=int, default=16)
    s = sub.add_parser("summary")
    s.add_argument("run")
    s.add_argument("--target", required=True)
    s.add_argument("--fail", type=float, required=True)
    s.add_argument("--refuse", type=float, required=True)
    s.add_argument("--backend-log")
    args = parser.parse_args()
    if args.command == "run":
        json.dump(run(args.url, args.stats, args.rate, args.seconds, args.connections), sys.stdout)
    else:
        print(json.dumps(summary(json.load(open(args.run)), args.target, args.fail, args.refuse,
                                 args.backend_log)))


if __name__ == "__main__":
    main()
