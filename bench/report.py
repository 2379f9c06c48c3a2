#!/usr/bin/env python3
"""bench/results/latest.json (written by bench/run.sh) -> markdown and SVG plots.
Stdlib only.

    report.py RESULTS.json                          print the markdown
    report.py RESULTS.json --write BENCHMARKS.md --svg-dir bench/results
        replace the part of BENCHMARKS.md between <!-- bench:begin --> and
        <!-- bench:end --> with the markdown, write throughput.svg and
        width.svg, and print the summary table
"""

import argparse
import html
import json
import math
import os
import re
import sys

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
WIDTHS = (1, 3, 10, 30)
COLORS = {"direct": "#868e96", "go": "#1c7ed6", "openresty": "#2f9e44", "node": "#7048e8",
          "fanout": "#e8590c", "fanout1": "#ffa94d"}
LABELS = {"direct": "direct (nginx)", "go": "Go reference", "openresty": "OpenResty (1 worker)",
          "node": "Node (undici)", "fanout": "fanout", "fanout1": "fanout --threads 1"}
# The throughput scenario's targets, in the order of its table and plot.
THROUGHPUT_TARGETS = ("direct", "go", "openresty", "node", "fanout", "fanout1")
PEERS = ("go", "openresty", "node")


def target_label(doc, key):
    """LABELS, with fanout's thread count where the run recorded it."""
    threads = get(doc, "meta", "fanout_threads")
    if key == "fanout" and threads and (doc.get("throughput") or {}).get("fanout1"):
        return f"fanout ({threads} threads)"
    return LABELS[key]


# --- formatting ---------------------------------------------------------------
def num(value, digits=0):
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def ms(value):
    if value is None:
        return "–"
    if value >= 100:
        return f"{value:.0f} ms"
    if value >= 10:
        return f"{value:.1f} ms"
    return f"{value:.2f} ms"


def us(value):
    return "–" if value is None else f"{value:.0f} µs"


def duration_ns(value):
    if value is None:
        return "–"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if value >= scale:
            x = value / scale
            return f"{x:.3g} {unit}" if x < 100 else f"{x:.0f} {unit}"
    return f"{value:.0f} ns"


def mib(kb):
    return "–" if kb is None else f"{kb / 1024:.1f} MiB"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def times(r):
    return "–" if r is None else f"{r:.2f}×"


def met(ok):
    if ok is None:
        return "–"
    return "met" if ok else "**not met**"


def version(text, pattern=r"(\d+\.\d+(?:\.\d+)?)"):
    if not text:
        return "?"
    match = re.search(pattern, text)
    return match.group(1) if match else text


# --- the analysis -----------------------------------------------------------------
def get(doc, *path):
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def width_figures(doc, target):
    """{width: (req/s, req/s × width, p99)} and the spread (min/max of req/s × width over 3..30)."""
    rows = {}
    for w in WIDTHS:
        run = get(doc, "width", target, f"w{w}")
        if run:
            rows[w] = (run["requests_per_s"], run["requests_per_s"] * w, run["p99_ms"], run)
    scaled = [rows[w][1] for w in (3, 10, 30) if w in rows]
    spread = min(scaled) / max(scaled) if len(scaled) == 3 and max(scaled) > 0 else None
    return rows, spread


def overhead_figures(doc):
    targets = get(doc, "overhead", "targets")
    if not targets:
        return None
    backends = {k: targets[k]["p50_us"] for k in ("one", "two", "three") if k in targets}
    slowest_name = max(backends, key=backends.get)
    slowest = backends[slowest_name]
    out = {"slowest": slowest, "slowest_name": slowest_name}
    for t in ("fanout", "go"):
        if t in targets and targets[t]["p50_us"] is not None:
            out[t] = targets[t]["p50_us"] - slowest
    # One call to backend one: the floor (nginx proxy_pass) and fanout's `/one`.
    for t in ("proxy", "fanout_one"):
        if t in targets and "one" in backends and targets[t]["p50_us"] is not None:
            out[t] = targets[t]["p50_us"] - backends["one"]
    return out


def peer_rows(doc):
    """targets.md, "against the fastest peer": fanout (default threads) against the
    OpenResty-style peer with one worker; fanout --threads 1 beside it, not counted."""
    tp = doc.get("throughput") or {}
    orr = tp.get("openresty")
    threads = get(doc, "meta", "fanout_threads")
    rows = []
    if not (orr and tp.get("fanout")):
        return [("against the fastest peer (OpenResty-style, 1 worker)", "not run", "", "",
                 "≥ 1.3× req/s, p99 ≤, CPU/request ≤ 0.7×", "–")]
    for key, counted in (("fanout", True), ("fanout1", False)):
        fo = tp.get(key)
        if not fo:
            continue
        who = (f"fanout, {threads} threads" if threads else "fanout") if key == "fanout" else "fanout --threads 1"
        verdict = (lambda ok: met(ok)) if counted else (lambda ok: f"({'met' if ok else 'not met'})")
        suffix = "" if counted else " (not counted)"
        r = ratio(fo["requests_per_s"], orr["requests_per_s"])
        rows.append((f"against the fastest peer: requests/s ({who})", num(fo["requests_per_s"]),
                     f"{num(orr['requests_per_s'])} (OpenResty)", times(r), "≥ 1.3× OpenResty" + suffix,
                     verdict(r is not None and r >= 1.3)))
        r = ratio(fo["p99_ms"], orr["p99_ms"])
        rows.append((f"against the fastest peer: p99 ({who})", ms(fo["p99_ms"]), f"{ms(orr['p99_ms'])} (OpenResty)",
                     times(r), "≤ 1.0× OpenResty" + suffix, verdict(r is not None and r <= 1.0)))
        r = ratio(fo.get("cpu_us_per_request"), orr.get("cpu_us_per_request"))
        rows.append((f"against the fastest peer: CPU time per request ({who})", us(fo.get("cpu_us_per_request")),
                     f"{us(orr.get('cpu_us_per_request'))} (OpenResty, master + worker)", times(r),
                     "≤ 0.7× OpenResty" + suffix, verdict(r is not None and r <= 0.7)))
    return rows

def handshakes(run):
    """Handshakes per second over the measured runs (median), and in all."""
    if run.get("handshakes_per_s") is None:
        return "–"
    return f"{run['handshakes_per_s']:.2f}/s ({num(run.get('handshakes'))} in all)"


EDGE_LABELS = {"on": "JWT + CORS + rate limit", "off": "none of them", "jwt": "JWT only", "cors": "CORS only",
               "limit": "rate limit only (key: ip)"}


def edge_rows(doc):
    """targets.md: "edge features": the throughput endpoint with JWT + CORS + a
    rate limit on, against the same config with all three off. The ratio is
    the median of the rounds' ratios: `on` and `off` run back to back in each
    round, so a round's ratio is not moved by the drift of a shared machine
    between rounds, which the medians of each are."""
    edge = doc.get("edge") or {}
    on, off = edge.get("on"), edge.get("off")
    if not (on and off):
        return [("edge features", "not run", "", "", "≤ 10 % fewer requests/s", "–")]
    r = edge_ratio(edge, "on")
    rows = [("edge features: requests/s, JWT (RS256) + CORS + rate limit on ÷ off (median of the rounds' ratios)",
             num(on["requests_per_s"]), f"{num(off['requests_per_s'])} (off)", times(r), "≥ 0.90× (≤ 10 % fewer)",
             met(r is not None and r >= 0.9))]
    r = edge_ratio(edge, "on", "cpu_us_per_request")
    rows.append(("edge features: CPU time per request, on ÷ off (median of the rounds' ratios)",
                 us(on.get("cpu_us_per_request")), f"{us(off.get('cpu_us_per_request'))} (off)", times(r),
                 "(informational)", "–"))
    pairs = edge_pairs(edge)
    if pairs:
        rows.append(("edge features, on and off loaded at the same moments: requests/s, CPU time per request "
                     "(on ÷ off, median over the pairs)", "–", "–",
                     f"{times(pairs['requests_per_s'])}, {times(pairs['cpu_us_per_request'])}",
                     "(informational)", "–"))
    return rows


def median_of(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def edge_pairs(edge):
    """on ÷ off over the runs where both were loaded at once (wrk-pair):
    the median of each pair's ratio of requests/s and of CPU per request."""
    pairs = edge.get("pairs") or []
    if not pairs:
        return None
    return {key: median_of(ratio(p["a"].get(key), p["b"].get(key)) for p in pairs)
            for key in ("requests_per_s", "cpu_us_per_request")}


def edge_round_ratios(edge, variant, key="requests_per_s"):
    """variant ÷ off in each round (the runs of a round are side by side)."""
    return [ratio(v.get(key), o.get(key)) for v, o in zip(edge[variant].get("rounds", []), edge["off"].get("rounds", []))]


def edge_ratio(edge, variant, key="requests_per_s"):
    """The median over the rounds of variant ÷ off."""
    return median_of(edge_round_ratios(edge, variant, key))


def edge_section(doc):
    meta = doc.get("meta", {})
    edge = doc.get("edge") or {}
    if not (edge.get("on") and edge.get("off")):
        return []
    threads = meta.get("fanout_threads")
    out = ["### Edge features: JWT + CORS + a rate limit", "",
           "The throughput scenario's `GET /merged` (three nginx backends, merged) with the edge features on, "
           "against the same config with all of them off, and with each one alone, every variant a fanout process "
           "of its own (the same binary"
           + (f", {threads} threads" if threads else "") + "), configs generated by `bench/lib.py edge-gateway`. "
           "JWT: an `auth` scheme with `jwks_file` (a 2048-bit RSA key made for the run with `openssl genrsa`, "
           "its public half written as a JWKS; the private key never leaves the run's temporary folder), "
           "`algorithms: [RS256]`, issuer and audience checked; one token signed with `openssl dgst -sha256 "
           "-sign`, expiring in ten years. CORS: `server.cors` with one allowed origin. Rate limit: "
           "`{ rate: 1000000/s, burst: 1000000, key: \"claim:sub\" }` (never refuses; `key: ip` when alone, "
           "as `claim:` needs a token). wrk sends `authorization: Bearer …` and `origin:` to every variant "
           "(those without the features ignore them). Before anything is measured, each variant must answer "
           "200 with the 24 merged keys, the ones checking tokens 401 with `www-authenticate: Bearer` without "
           "one, and `access-control-allow-origin` and `ratelimit-limit` must be present exactly where "
           f"configured. wrk -t2 -c64, {meta.get('bench_seconds')} s per run after a 2 s warm-up, "
           f"{meta.get('throughput_rounds', 1)} round(s): in each, `on` and `off` back to back (each first in "
           "every other round), then the three with one feature, each round starting one further along; "
           "medians over the rounds. Ratios are against `off`: the ratio of the medians, and the median of "
           "the rounds' ratios, which the target is judged by (runs of one round are a minute apart at most; "
           "on a shared machine the load moves more than that between rounds).", ""]
    rows = []
    for key in ("on", "off", "jwt", "cors", "limit"):
        r = edge.get(key)
        if not r:
            continue
        rows.append((f"`{key}`: {EDGE_LABELS[key]}", num(r["requests_per_s"]), ms(r["p50_ms"]), ms(r["p99_ms"]),
                     us(r.get("cpu_us_per_request")), us(r.get("backend_cpu_us_per_request")),
                     "–" if key == "off" else times(ratio(r["requests_per_s"], edge["off"]["requests_per_s"])),
                     "–" if key == "off" else times(edge_ratio(edge, key)),
                     "–" if key == "off" else times(edge_ratio(edge, key, "cpu_us_per_request")),
                     num(r.get("non_2xx", 0) + sum(r.get("socket_errors", {}).values()))))
    out += [table(["variant", "requests/s", "p50", "p99", "CPU / request", "backend CPU / request",
                   "req/s ÷ off (medians)", "req/s ÷ off (rounds' ratios, median)",
                   "CPU / request ÷ off (rounds' ratios, median)", "errors"], rows,
                  ["---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"]), ""]
    if len(edge["off"].get("rounds", [])) > 1:
        out += ["Requests/s in each round: " + "; ".join(
            f"{k} " + ", ".join(num(r["requests_per_s"]) for r in edge[k]["rounds"])
            for k in ("on", "off", "jwt", "cors", "limit") if edge.get(k)) + ". `on` ÷ `off` in each round: "
            + ", ".join(times(x) for x in edge_round_ratios(edge, "on")) + " (requests/s); "
            + ", ".join(times(x) for x in edge_round_ratios(edge, "on", "cpu_us_per_request"))
            + " (CPU / request).", ""]
    pairs = edge.get("pairs") or []
    if pairs:
        out += ["At the same moments: after the rounds, `on` and `off` were loaded at once, one wrk -t1 -c32 each "
                f"({len(pairs)} time(s)), so that both saw the same load from the rest of the machine; CPU per "
                "request is each process's own.", ""]
        rows = [(i + 1, num(p["a"]["requests_per_s"]), num(p["b"]["requests_per_s"]),
                 times(ratio(p["a"]["requests_per_s"], p["b"]["requests_per_s"])),
                 us(p["a"].get("cpu_us_per_request")), us(p["b"].get("cpu_us_per_request")),
                 times(ratio(p["a"].get("cpu_us_per_request"), p["b"].get("cpu_us_per_request"))))
                for i, p in enumerate(pairs)]
        med = edge_pairs(edge)
        rows.append(("median", "", "", times(med["requests_per_s"]), "", "", times(med["cpu_us_per_request"])))
        out += [table(["pair", "on req/s", "off req/s", "on ÷ off", "on CPU / request", "off CPU / request",
                       "on ÷ off"], rows, ["---:"] * 7), ""]
    return out


def upstream_rows(doc):
    """targets.md: "TLS to backends", "HTTP/2 to backends", "many hosts"."""
    rows = []
    threads = get(doc, "meta", "fanout_threads")
    tls = doc.get("tls") or {}
    fo, go = tls.get("fanout"), tls.get("go")
    if fo and go:
        r = ratio(fo["requests_per_s"], go["requests_per_s"])
        rows.append(("TLS to backends: requests/s", num(fo["requests_per_s"]), f"{num(go['requests_per_s'])} (Go)",
                     times(r), "≥ 2.0× Go", met(r is not None and r >= 2.0)))
        rows.append(("TLS to backends: handshakes per second of the runs after warm-up", handshakes(fo),
                     f"{handshakes(go)} (Go)", "–", "≈ 0 (≤ 0.1/s)", met(fo["handshakes_per_s"] <= 0.1)))
        gd = tls.get("godetached")
        if gd:
            r = ratio(fo["requests_per_s"], gd["requests_per_s"])
            rows.append(("TLS to backends: requests/s against Go `-detached` (connections kept; a variant)",
                         num(fo["requests_per_s"]), f"{num(gd['requests_per_s'])} (Go -detached)", times(r),
                         "(informational)", "–"))
    else:
        rows.append(("TLS to backends", "not run", "", "", "≥ 2.0× Go req/s, handshakes ≈ 0", "–"))
    h2 = doc.get("h2") or {}
    auto, never = h2.get("h2"), h2.get("h1")
    if auto and never:
        r = ratio(auto["requests_per_s"], never["requests_per_s"])
        rows.append(("HTTP/2 to backends: requests/s, `http2: auto` (h2) ÷ `never` (HTTP/1.1)",
                     num(auto["requests_per_s"]), f"{num(never['requests_per_s'])} (HTTP/1.1)", times(r), "≥ 1.0×",
                     met(r is not None and r >= 1.0)))
        limit = 3 * threads if threads else None
        rows.append(("HTTP/2 to backends: connections to the 3 backends (most after a run)",
                     num(auto.get("backend_conns_max")), f"{num(never.get('backend_conns_max'))} (HTTP/1.1)", "–",
                     f"≤ 3 targets × {threads} serving threads" if threads else "≤ targets × serving threads",
                     met(limit is not None and auto.get("backend_conns_max", limit + 1) <= limit)))
    else:
        rows.append(("HTTP/2 to backends", "not run", "", "", "≥ HTTP/1.1 req/s, ≤ targets × threads connections",
                     "–"))
    hosts = doc.get("hosts") or {}
    fo, ctl = hosts.get("fanout"), hosts.get("control")
    if fo:
        def first(run):
            w = run["first_second"]
            return f"{w['error_pct']:.2f} % ({w['errors']}/{w['requests']})" if w["requests"] else "–"

        rows.append(("many hosts: errors reaching clients within 1 s of a replica failing", first(fo),
                     f"{first(ctl)} (no retries, no ejection)" if ctl else "–", "–", "< 0.1 %",
                     met(fo["first_second"]["error_pct"] is not None and fo["first_second"]["error_pct"] < 0.1)))
        share = fo.get("target_share_while_ejected_pct")
        rows.append(("many hosts: the failing replica's share of attempts while ejected",
                     "–" if share is None else f"{share:.2f} %",
                     f"{ctl['target_share_after_failure_pct']:.1f} % after the failure (control)"
                     if ctl and ctl.get("target_share_after_failure_pct") is not None else "–",
                     "–", "≤ 1 %", met(share is not None and share <= 1.0)))
    else:
        rows.append(("many hosts", "not run", "", "", "< 0.1 % errors within 1 s, ≤ 1 % to the ejected", "–"))
    return rows


GROUP_ROWS = [(rt, n) for rt in ("current_thread", "multi_thread") for n in (10, 1000, 100000)]


def group_median(doc, runtime, bench, n):
    return get(doc, "group", f"{runtime}/{bench}/{n}", "median_ns")


def summary_rows(doc):
    """[(scenario, fanout, reference, ratio, target, met)]"""
    rows = []
    tp = doc.get("throughput") or {}
    fo, go = tp.get("fanout"), tp.get("go")
    if fo and go:
        r = ratio(fo["requests_per_s"], go["requests_per_s"])
        rows.append(("aggregation throughput: requests/s", num(fo["requests_per_s"]),
                     f"{num(go['requests_per_s'])} (Go)", times(r), "≥ 2.0× Go", met(r >= 2.0)))
        r = ratio(fo["p99_ms"], go["p99_ms"])
        rows.append(("aggregation throughput: p99", ms(fo["p99_ms"]), f"{ms(go['p99_ms'])} (Go)",
                     times(r), "≤ 0.5× Go", met(r is not None and r <= 0.5)))
    else:
        rows.append(("aggregation throughput", "not run", "", "", "≥ 2.0× Go req/s, p99 ≤ 0.5×", "–"))

    rows += peer_rows(doc)

    ov = overhead_figures(doc)
    if ov and "fanout" in ov:
        go_ov = ov.get("go")
        rows.append(("overhead over the slowest call: gateway p50 − slowest backend p50",
                     us(ov["fanout"]), f"{us(go_ov)} (Go)", times(ratio(ov["fanout"], go_ov)) if go_ov and go_ov > 0 else "–",
                     "≤ 100 µs", met(ov["fanout"] <= 100)))
    else:
        rows.append(("overhead over the slowest call", "not run", "", "", "≤ 100 µs", "–"))
    if ov and "fanout_one" in ov and "proxy" in ov:
        rows.append(("overhead of one call (no fan-out): p50 − backend one p50",
                     us(ov["fanout_one"]), f"{us(ov['proxy'])} (nginx proxy_pass)",
                     times(ratio(ov["fanout_one"], ov["proxy"])) if ov["proxy"] > 0 else "–",
                     "(the floor: one more hop)", "–"))

    fw, fspread = width_figures(doc, "fanout")
    gw, gspread = width_figures(doc, "go")
    if fspread is not None:
        rows.append(("cost of fan-out width: req/s × width, min ÷ max over widths 3, 10, 30",
                     f"{fspread:.2f}", f"{gspread:.2f} (Go)" if gspread is not None else "–",
                     "–", "≥ 0.80 (within 20 %)", met(fspread >= 0.8)))
        if 30 in fw and 30 in gw:
            r = ratio(fw[30][0], gw[30][0])
            rows.append(("cost of fan-out width: requests/s at width 30", num(fw[30][0]),
                         f"{num(gw[30][0])} (Go)", times(r), "(informational)", "–"))
    else:
        rows.append(("cost of fan-out width", "not run", "", "", "within 20 % from 3 to 30", "–"))

    tail = doc.get("tail") or {}
    hedged, plain, gotail = tail.get("hedged"), tail.get("plain"), tail.get("go")
    if hedged and plain:
        ref = gotail or plain
        ref_name = "Go, no hedging" if gotail else "fanout without hedging"
        rows.append(("tail latency: p99 with hedging", ms(hedged["p99_ms"]), f"{ms(ref['p99_ms'])} ({ref_name})",
                     times(ratio(hedged["p99_ms"], ref["p99_ms"])), "≤ 10 ms", met(hedged["p99_ms"] <= 10)))
        rows.append(("tail latency: p99 without hedging (control)", ms(plain["p99_ms"]),
                     f"{ms(gotail['p99_ms'])} (Go)" if gotail else "–", "–", "≥ 100 ms", met(plain["p99_ms"] >= 100)))
        rows.append(("tail latency: extra backend calls with hedging", f"{hedged['extra_calls_pct']:.1f} %",
                     f"{gotail['extra_calls_pct']:.1f} % (Go)" if gotail else "–", "–", "≤ 10 %",
                     met(hedged["extra_calls_pct"] <= 10)))
    else:
        rows.append(("tail latency with hedging", "not run", "", "", "p99 ≤ 10 ms, extra calls ≤ 10 %", "–"))

    ff = doc.get("failfast") or {}
    fo, go = ff.get("fanout"), ff.get("go")
    if fo:
        rows.append(("fail-fast: response time, median (max)", f"{ms(fo['p50_ms'])} ({ms(fo['max_ms'])})",
                     f"{ms(go['p50_ms'])} ({ms(go['max_ms'])}) (Go)" if go else "–",
                     times(ratio(fo["p50_ms"], go["p50_ms"])) if go else "–", "≤ 60 ms (median)",
                     met(fo["p50_ms"] <= 60)))

        def cancelled(x):
            return x["slow_calls"] > 0 and x["abandoned"] >= x["slow_calls"] and x["in_flight_after"] == 0

        rows.append(("fail-fast: slow calls the backend saw abandoned", f"{fo['abandoned']}/{fo['slow_calls']}",
                     f"{go['abandoned']}/{go['slow_calls']} (Go)" if go else "–", "–", "all", met(cancelled(fo))))
    else:
        rows.append(("fail-fast", "not run", "", "", "≤ 60 ms, slow call cancelled", "–"))

    rows += edge_rows(doc)
    rows += upstream_rows(doc)

    if doc.get("group"):
        for runtime, n in GROUP_ROWS:
            g = group_median(doc, runtime, "spawn_join_fanout_group", n)
            j = group_median(doc, runtime, "spawn_join_tokio_joinset", n)
            r = ratio(g, j)
            rows.append((f"task group: spawn + join, {runtime}, n = " + f"{n:,}".replace(",", " "), duration_ns(g),
                         f"{duration_ns(j)} (JoinSet)", times(r), "≤ 1.2× JoinSet",
                         met(r <= 1.2) if r is not None else "–"))
        g = get(doc, "group", "cancel/waiting_1000_fanout_group", "median_ns")
        j = get(doc, "group", "cancel/waiting_1000_tokio_joinset", "median_ns")
        rows.append(("task group: cancel 1 000 waiting tasks", duration_ns(g), f"{duration_ns(j)} (JoinSet)",
                     times(ratio(g, j)), "≤ 1 ms", met(g <= 1e6) if g is not None else "–"))
    else:
        why = "skipped (BENCH_SKIP_GROUP=1)" if get(doc, "meta", "skip_group") else "not run"
        rows.append(("task group overhead", why, "", "", "≤ 1.2× JoinSet; cancel ≤ 1 ms", "–"))

    tp = doc.get("throughput") or {}
    fo, go = tp.get("fanout"), tp.get("go")
    if fo and go and fo.get("rss_kb") and go.get("rss_kb"):
        # Under the load when sampled (median over the middle of the runs), else after it.
        key, what = (("rss_under_load_kb", "memory: RSS under the throughput run")
                     if fo.get("rss_under_load_kb") and go.get("rss_under_load_kb")
                     else ("rss_kb", "memory: RSS after the throughput run"))
        r = ratio(fo[key], go[key])
        rows.append((what, mib(fo[key]), f"{mib(go[key])} (Go)", times(r), "≤ 1.0× Go", met(r <= 1.0)))
        if fo.get("anon_under_load_kb") and go.get("anon_under_load_kb"):
            r = ratio(fo["anon_under_load_kb"], go["anon_under_load_kb"])
            rows.append(("memory: its anonymous part (heap, stacks; without the binary's and "
                         "libraries' pages) under the throughput run", mib(fo["anon_under_load_kb"]),
                         f"{mib(go['anon_under_load_kb'])} (Go)", times(r), "(informational)", "–"))
        r = ratio(fo.get("cpu_us_per_request"), go.get("cpu_us_per_request"))
        rows.append(("CPU time per request (throughput run)", us(fo.get("cpu_us_per_request")),
                     f"{us(go.get('cpu_us_per_request'))} (Go)", times(r), "(informational)", "–"))
    else:
        rows.append(("memory", "not run", "", "", "≤ Go's RSS", "–"))
    return rows


def table(header, rows, align):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def warnings(doc):
    notes = []
    for section in ("throughput", "width", "edge", "tls", "h2"):
        runs = doc.get(section) or {}
        flat = {}
        for name, run in runs.items():
            if isinstance(run, dict) and "requests_per_s" in run:
                flat[name] = run
            elif isinstance(run, dict):
                flat.update({f"{name} {k}": v for k, v in run.items()})
        for name, run in flat.items():
            errors = sum(run.get("socket_errors", {}).values())
            if run.get("non_2xx") or errors:
                notes.append(f"{section} {name}: {run.get('non_2xx', 0)} non-2xx responses, {errors} socket errors")
    for name, run in (get(doc, "overhead", "targets") or {}).items():
        if run["errors"] or set(run["statuses"]) - {"200"}:
            notes.append(f"overhead {name}: statuses {run['statuses']}, {run['errors']} errors")
    if get(doc, "overhead", "late"):
        notes.append(f"overhead: the client sent {doc['overhead']['late']} ticks late (it was starved of CPU)")
    for name, run in (doc.get("hosts") or {}).items():
        if run.get("late_ms_max", 0) > 100:
            notes.append(f"hosts {name}: the client sent some requests up to {run['late_ms_max']:.0f} ms late "
                         "(it was starved of CPU, or every connection was busy)")
    for name, run in (doc.get("tail") or {}).items():
        if run.get("failed"):
            notes.append(f"tail {name}: {run['failed']} requests failed")
    return notes


def markdown(doc, svg_prefix=None):
    meta, machine = doc.get("meta", {}), doc.get("machine", {})
    v = machine.get("versions", {})
    out = [BEGIN,
           "<!-- Generated by bench/run.sh (bench/report.py, from bench/results/latest.json): "
           "edits here are overwritten. -->",
           "",
           "## Every target in one run (generated)",
           "",
           "```sh",
           meta.get("command", "bash bench/run.sh"),
           "```",
           "",
           f"Run on {machine.get('date', '?')}, in {meta.get('duration_s', '?')} s: "
           f"wrk runs of {meta.get('bench_seconds')} s ({meta.get('width_seconds')} s per width), "
           f"fanout logging at `{meta.get('fanout_log')}`"
           + (" (**short rounds**: indicative only)" if meta.get("quick") or (meta.get("bench_seconds") or 10) < 10
              else "") + ".",
           f"Machine: {machine.get('nproc')} CPUs ({machine.get('cpu')}), {machine.get('mem_gib')} GiB, "
           f"Linux {machine.get('kernel')}. Versions: rustc {version(v.get('rustc'))}, "
           f"tokio {v.get('tokio')}, hyper {v.get('hyper')}, divan {v.get('divan')}, Go {version(v.get('go'))}, "
           f"nginx {version(v.get('nginx'))}"
           + (f" (lua module {version(v.get('nginx_lua'))}, LuaJIT {v.get('luajit')}, "
              f"lua-cjson {version(v.get('lua_cjson'))})"
              if v.get("nginx_lua") and (doc.get("throughput") or {}).get("openresty") else "")
           + (f", Node {version(v.get('node'))} with undici {v.get('undici')}"
              if v.get("node") and (doc.get("throughput") or {}).get("node") else "")
           + f", wrk {version(v.get('wrk'))}, Python {v.get('python')}; "
           f"{meta.get('fanout_version', 'fanout')} at commit {meta.get('git', '?')}.",
           "",
           (f"Load average (1, 5, 15 min) before the run: {meta['load_before']}; after it: "
              f"{meta.get('load_after', '?')}. " if meta.get("load_before") else "")
           + "Everything shares the same cores (wrk, nginx, the gateways): read the ratios, "
           "measured side by side in this run, rather than the absolute figures. "
           "Reference: the Go gateway of [`bench/go-reference`](bench/go-reference/main.go) "
           "(`errgroup.WithContext`, `net/http`, `encoding/json`) against the same backends, "
           "or raw `tokio::task::JoinSet` for the task group.",
           ""]
    rows = summary_rows(doc)
    judged = [r for r in rows if r[5] != "–" and not r[5].startswith("(")]  # "(met)": not counted
    n_met = sum(1 for r in judged if r[5] == "met")
    out.append(table(["scenario", "fanout", "reference", "fanout ÷ reference", "target", "met?"], rows,
                     ["---", "---:", "---:", "---:", "---", "---"]))
    out.append("")
    out.append(f"**{n_met} of {len(judged)} targets met** in this run.")
    notes = warnings(doc)
    if notes:
        out.append("")
        out.append("Warnings from this run:")
        out.append("")
        out += [f"- {n}" for n in notes]
    out.append("")

    # Throughput and memory.
    tp = doc.get("throughput") or {}
    if tp:
        threads = meta.get("fanout_threads")
        peers = [k for k in ("openresty", "node") if tp.get(k)]
        lineup = ", ".join(target_label(doc, k) for k in THROUGHPUT_TARGETS[1:] if tp.get(k))
        out += ["### Aggregation throughput and memory", "",
                "Three nginx backends (one worker, `127.0.0.1:19301-19303`) each serve a ~200-byte JSON object; "
                "`GET /merged` calls all three and merges them "
                "([`bench/throughput-gateway.yaml`](bench/throughput-gateway.yaml)). "
                f"wrk: 2 threads, 64 connections, {meta.get('bench_seconds')} s per run after a 2 s warm-up "
                + ("(Node: 4 s)" if tp.get("node") else "") + "; `direct` once, then the gateways in turn "
                f"({lineup}), {meta.get('throughput_rounds', 1)} round(s), each round starting one further along "
                "the list, so that all see the same drift of a shared machine; the figures are medians over the "
                "rounds. `direct` is one backend without a gateway: the ceiling the backends allow. RSS under load "
                "is read from `/proc/PID/status` every 100 ms while wrk runs (the median over the middle half of "
                "each run, then over the rounds; the target's figure), RSS after right after the last round; CPU "
                "per request is the process's utime + stime over a run divided by the requests wrk counted "
                "(backend CPU: the nginx backends' worker's); peak RSS is `VmHWM`.", ""]
        if peers:
            out += ["The peers ([`bench/openresty`](bench/openresty), [`bench/node-gateway`](bench/node-gateway)) "
                    "merge the same three calls; before anything is measured, each must answer byte for byte what "
                    "fanout answers (the run stops otherwise). OpenResty-style: Debian's nginx with "
                    "`libnginx-mod-http-lua` and `lua-cjson`, one worker process, `ngx.location.capture_multi` to "
                    "internal locations that `proxy_pass` to kept-alive upstreams, the bodies decoded and "
                    "merged with cjson; its CPU and RSS are the master's plus the worker's. Node: one process, "
                    "`node:http`, an undici `Pool` per backend, `Promise.all`. "
                    + (f"fanout runs with its default threads (one per CPU: {threads}) and, as a second gateway "
                       "on its own port, with `--threads 1`, the like of OpenResty's one worker."
                       if tp.get("fanout1") and threads else ""), ""]
        if svg_prefix:
            out += [f"![requests/s, p99 and CPU per request of every gateway]({svg_prefix}throughput.svg)", ""]
        trs = []
        for name in THROUGHPUT_TARGETS:
            r = tp.get(name)
            if not r:
                continue
            errors = r.get("non_2xx", 0) + sum(r.get("socket_errors", {}).values())
            trs.append((target_label(doc, name), num(r["requests_per_s"]), ms(r["p50_ms"]), ms(r["p90_ms"]),
                        ms(r["p99_ms"]), num(errors), mib(r.get("rss_under_load_kb")), mib(r.get("rss_kb")),
                        mib(r.get("hwm_kb")), us(r.get("cpu_us_per_request")),
                        us(r.get("backend_cpu_us_per_request"))))
        out += [table(["target", "requests/s", "p50", "p90", "p99", "errors", "RSS under load", "RSS after",
                       "peak RSS", "CPU / request", "backend CPU / request"], trs,
                      ["---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"]), ""]
        gateways = [k for k in THROUGHPUT_TARGETS[1:] if tp.get(k)]
        fastest = max((k for k in ("go", "openresty", "node") if tp.get(k)),
                      key=lambda k: tp[k]["requests_per_s"], default=None)
        if fastest and peers:
            out += [f"Fastest peer by requests/s in this run: {target_label(doc, fastest)} "
                    f"({num(tp[fastest]['requests_per_s'])}).", ""]
        if any(len(tp[k].get("rounds", [])) > 1 for k in gateways):
            line = "Requests/s in each round: " + "; ".join(
                f"{target_label(doc, k)} " + ", ".join(num(r["requests_per_s"]) for r in tp[k]["rounds"])
                for k in gateways) + "."
            for ref in ("go", "openresty"):
                if tp.get(ref) and tp.get("fanout"):
                    line += (f" fanout ÷ {target_label(doc, ref)} per round: " + ", ".join(
                        times(ratio(f["requests_per_s"], g["requests_per_s"]))
                        for g, f in zip(tp[ref]["rounds"], tp["fanout"]["rounds"])) + ".")
            out += [line, ""]

    ov = overhead_figures(doc)
    if ov:
        targets = doc["overhead"]["targets"]
        out += ["### Overhead over the slowest call", "",
                f"[`bench/loadgen.py`](bench/loadgen.py): a fixed-rate (open-loop) client, "
                f"{num(doc['overhead']['rate'])} requests/s to each target over one keep-alive connection each, "
                f"for {meta.get('bench_seconds')} s after 1 s of warm-up; each tick calls every target in turn "
                "(rotating order), so all are measured at the same moments by the same client, and the client's "
                "own cost cancels out of the difference.", ""]
        names = {"one": "backend one (direct)", "two": "backend two (direct)", "three": "backend three (direct)",
                 "go": "Go reference, `/merged`", "fanout": "fanout, `/merged`",
                 "proxy": "nginx `proxy_pass` to backend one (one hop)", "fanout_one": "fanout, `/one` (one call)"}
        ors = []
        for k, r in targets.items():
            extra = ""
            if k in ov and k in ("go", "fanout"):
                extra = us(ov[k])
            elif k in ov and k in ("proxy", "fanout_one"):
                extra = f"{us(ov[k])} (over backend one)"
            ors.append((names.get(k, k), num(r["count"]), us(r["p50_us"]), us(r["p90_us"]), us(r["p99_us"]),
                        num(r["errors"]), extra))
        out += [table(["target", "requests", "p50", "p90", "p99", "errors", "p50 − slowest backend p50"], ors,
                      ["---", "---:", "---:", "---:", "---:", "---:", "---:"]), ""]
        if "proxy" in ov:
            out += ["The floor: nginx's `proxy_pass` (a process of its own, one worker, kept-alive upstream "
                    "connections) adds one HTTP hop and nothing else, and costs "
                    f"{us(ov['proxy'])} over calling backend one directly. On these machines each hop is two "
                    "more wake-ups of a sleeping process plus the loopback TCP path, at light load with cold "
                    "caches; a gateway that fans out pays it once for the client's request and once per "
                    "backend that answers in a separate wake-up.", ""]

    fw, fspread = width_figures(doc, "fanout")
    gw, gspread = width_figures(doc, "go")
    if fw:
        out += ["### Cost of fan-out width", "",
                "`GET /wN` makes N calls, spread over the 3 nginx backends (`/w/0` … `/w/9` on each, every one "
                "a ~200-byte object with its own keys, so the merged answer has 8 × N keys for both gateways). "
                f"wrk: 2 threads, 64 connections, {meta.get('width_seconds')} s after 1 s, Go then fanout for each "
                "width. If the cost of a call did not depend on the width, requests/s × width would be flat. "
                "CPU / call: the gateway's CPU time per request (utime + stime over the run) divided by the width; "
                "wrk shares the two cores, and its cost per request weighs more at small widths, so this column is "
                "the steadier reading of the gateway's own cost per call.", ""]
        if svg_prefix:
            out += [f"![requests/s × width against width, fanout and Go]({svg_prefix}width.svg)", ""]
        def per_call(row, w):
            cpu = row[3].get("cpu_us_per_request") if row else None
            return None if cpu is None else cpu / w

        wrs = []
        for w in WIDTHS:
            f, g = fw.get(w), gw.get(w)
            wrs.append((w, num(f[0]) if f else "–", num(f[1]) if f else "–", ms(f[2]) if f else "–",
                        f"{per_call(f, w):.1f} µs" if per_call(f, w) is not None else "–",
                        num(g[0]) if g else "–", num(g[1]) if g else "–", ms(g[2]) if g else "–",
                        f"{per_call(g, w):.1f} µs" if per_call(g, w) is not None else "–",
                        times(ratio(f[0], g[0])) if f and g else "–"))
        out += [table(["width", "fanout req/s", "fanout req/s × width", "fanout p99", "fanout CPU / call",
                       "Go req/s", "Go req/s × width", "Go p99", "Go CPU / call", "fanout ÷ Go"], wrs,
                      ["---:"] * 10), ""]
        out += [f"Spread of requests/s × width over widths 3, 10, 30 (min ÷ max): fanout "
                f"{fspread:.2f}, Go {gspread:.2f}; target ≥ 0.80." if fspread is not None and gspread is not None
                else "Spread: incomplete.", ""]

    tail = doc.get("tail") or {}
    if tail:
        out += ["### Tail latency with hedging", "",
                "One backend (`fanout mock`, [`bench/tail-mock.yaml`](bench/tail-mock.yaml)) answers in 1 ms for "
                "97 % of calls and in 100 ms for 3 %. The gateway ([`bench/tail-gateway.yaml`]"
                "(bench/tail-gateway.yaml)) serves it without hedging and with "
                "`hedge: { percentile: 95, max_extra: 10% }`; the Go reference calls it once per request "
                "(it has no hedging). Load: `fanout fetch`, 16 requests in flight, "
                f"{meta.get('tail_requests')} requests per endpoint after 300 warm-up requests each; latency as "
                "the client sees it. Extra calls: backend calls counted by the mock, less the requests.", ""]
        trs = []
        for k, label in (("plain", "fanout, no hedging"), ("hedged", "fanout, hedged"), ("go", "Go reference")):
            r = tail.get(k)
            if r:
                trs.append((label, num(r["requests"]), ms(r["p50_ms"]), ms(r["p90_ms"]), ms(r["p99_ms"]),
                            ms(r["max_ms"]), num(r["failed"]), num(r["backend_calls"]), f"{r['extra_calls_pct']:.1f} %"))
        out += [table(["endpoint", "requests", "p50", "p90", "p99", "max", "failed", "backend calls", "extra calls"],
                      trs, ["---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"]), ""]

    ff = doc.get("failfast") or {}
    if ff:
        out += ["### Fail-fast", "",
                "`fanout mock` ([`bench/failfast-mock.yaml`](bench/failfast-mock.yaml)): `/payments/authorize` "
                "answers 500 after 50 ms, `/inventory/reserve` would answer after 2 s; both calls are required "
                "([`bench/failfast-gateway.yaml`](bench/failfast-gateway.yaml); the Go reference fails a call on a "
                f"status ≥ 300, and `errgroup.WithContext` cancels the other). {meta.get('failfast_requests')} "
                "sequential requests per gateway (8 per second, one keep-alive connection). The mock counts the "
                "calls whose caller went away before the answer (`abandoned` in `/__mock/stats`), read 0.5 s "
                "after the last request.", ""]
        frs = []
        for k, label in (("fanout", "fanout"), ("go", "Go reference")):
            r = ff.get(k)
            if r:
                statuses = ", ".join(f"{s} × {c}" for s, c in sorted(r["statuses"].items()))
                frs.append((label, num(r["requests"]), statuses, ms(r["p50_ms"]), ms(r["max_ms"]),
                            num(r["slow_calls"]), num(r["abandoned"]), num(r["in_flight_after"])))
        out += [table(["gateway", "requests", "statuses", "median", "max", "slow calls", "abandoned",
                       "still in flight"], frs, ["---", "---:", "---", "---:", "---:", "---:", "---:", "---:"]), ""]

    if doc.get("group"):
        out += ["### Task group overhead", "",
                "```sh",
                f"cargo bench -p fanout-group --bench group -- --skip try_join_all --max-time {meta.get('group_max_time', 3):g}",
                "```", "",
                "divan medians ([`crates/group/benches/group.rs`](crates/group/benches/group.rs)): each sample "
                "spawns n trivial tasks and joins them; `multi_thread` is a 2-worker runtime spawning from inside "
                "a task. Cancel: from `cancel` until 1 000 parked tasks are stopped and reaped.", ""]
        def fastest(key):
            return get(doc, "group", key, "fastest_ns")

        grs = []
        for runtime, n in GROUP_ROWS:
            keys = [f"{runtime}/{b}/{n}" for b in ("spawn_join_fanout_group", "spawn_join_fanout_group_no_timeline",
                                                  "spawn_join_tokio_joinset")]
            g, nt, j = (get(doc, "group", k, "median_ns") for k in keys)
            gf, _, jf = (fastest(k) for k in keys)
            grs.append((runtime, f"{n:,}".replace(",", " "), duration_ns(g), duration_ns(nt), duration_ns(j),
                        times(ratio(g, j)), times(ratio(nt, j)), times(ratio(gf, jf))))
        keys = ("cancel/waiting_1000_fanout_group", "cancel/waiting_1000_tokio_joinset")
        g, j = (get(doc, "group", k, "median_ns") for k in keys)
        gf, jf = (fastest(k) for k in keys)
        grs.append(("cancel (multi_thread)", "1 000", duration_ns(g), "–", duration_ns(j), times(ratio(g, j)), "–",
                    times(ratio(gf, jf))))
        out += [table(["runtime", "n", "fanout-group", "no timeline", "JoinSet", "group ÷ JoinSet",
                       "no timeline ÷ JoinSet", "fastest ÷ fastest"], grs,
                      ["---", "---:", "---:", "---:", "---:", "---:", "---:", "---:"]), "",
                f"Cancel, fastest samples: fanout-group {duration_ns(gf)}, JoinSet {duration_ns(jf)}. "
                "On a busy machine the fastest sample is the least disturbed one; the targets use medians.", ""]

    out += edge_section(doc)
    out += upstream_sections(doc)

    out += ["Raw figures: [`bench/results/latest.json`](bench/results/latest.json).", "", END]
    return "\n".join(out) + "\n"

def upstream_sections(doc):
    meta = doc.get("meta", {})
    threads = meta.get("fanout_threads")
    rounds = meta.get("throughput_rounds", 1)
    out = []
    tls = doc.get("tls") or {}
    if tls:
        out += ["### TLS to backends", "",
                "The three nginx backends of the throughput scenario behind TLS (`listen … ssl`, TLS 1.2 and 1.3; "
                "nginx's ALPN offers http/1.1), with a certificate for 127.0.0.1 from a test CA the run makes "
                "(`fanout mock --make-certs`). fanout ([`bench/tls-gateway.yaml`](bench/tls-gateway.yaml), "
                "`tls: { ca }`) and the Go reference (`-ca`, the same CA in `tls.Config.RootCAs`) both verify. "
                f"wrk -t2 -c64, {meta.get('bench_seconds')} s per run after a 2 s warm-up, the two in turn, "
                f"{rounds} round(s), medians. Handshakes: the connections nginx accepted during each measured run "
                "(its `stub_status`), every one a TLS handshake; connections: the gateway's established "
                "connections to the backends after the run. Beside them, a variant of the Go reference "
                "(`-detached`): the reference makes its calls with `errgroup.WithContext(r.Context())`, whose "
                "context is cancelled when `Wait` returns, and `net/http`'s read loop, when it sees the context "
                "cancelled before it has put the connection back in its pool, closes the connection; the variant "
                "cancels the calls' context only when one fails.", ""]
        rows = []
        for key, label in (("fanout", f"fanout ({threads} threads)" if threads else "fanout"),
                           ("go", "Go reference"), ("godetached", "Go, `-detached` (a variant)")):
            r = tls.get(key)
            if r:
                rows.append((label, num(r["requests_per_s"]), ms(r["p50_ms"]), ms(r["p99_ms"]),
                             us(r.get("cpu_us_per_request")), us(r.get("backend_cpu_us_per_request")),
                             num(r.get("warmup_handshakes")), num(r.get("handshakes")),
                             f"{r.get('handshakes_per_s', 0):.2f}", num(r.get("backend_conns_max")),
                             num(r.get("non_2xx", 0) + sum(r.get("socket_errors", {}).values()))))
        out += [table(["gateway", "requests/s", "p50", "p99", "CPU / request", "backend CPU / request",
                       "handshakes in warm-ups", "handshakes in measured runs", "per second (median)",
                       "connections", "errors"], rows,
                      ["---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"]), ""]
        if all(len((tls.get(k) or {}).get("rounds", [])) > 1 for k in ("fanout", "go")):
            out += ["Requests/s in each round: " + "; ".join(
                f"{label} " + ", ".join(num(r["requests_per_s"]) for r in tls[k]["rounds"])
                for k, label in (("fanout", "fanout"), ("go", "Go"), ("godetached", "Go -detached")) if tls.get(k))
                + ".", ""]
    h2 = doc.get("h2") or {}
    if h2:
        out += ["### HTTP/2 to backends", "",
                "The same three backends, with HTTP/2 on (`listen … ssl http2`: ALPN offers h2). fanout with "
                "`http2: auto` ([`bench/h2-gateway.yaml`](bench/h2-gateway.yaml): h2, every call of a serving "
                "thread multiplexed over one connection per target) and a second fanout, the same config with "
                "`http2: never` (HTTP/1.1 keep-alive pools), in turn: "
                f"wrk -t2 -c64, {meta.get('bench_seconds')} s per run after a 2 s warm-up, {rounds} round(s), "
                "medians. Connections: the gateway's established connections to the backends after each run "
                "(read from `/proc`); new connections: those nginx accepted during the measured runs.", ""]
        rows = []
        for key, label in (("h2", "`http2: auto` (h2)"), ("h1", "`http2: never` (HTTP/1.1)")):
            r = h2.get(key)
            if r:
                rows.append((label, num(r["requests_per_s"]), ms(r["p50_ms"]), ms(r["p99_ms"]),
                             us(r.get("cpu_us_per_request")), us(r.get("backend_cpu_us_per_request")),
                             num(r.get("backend_conns_max")), num(r.get("handshakes")),
                             num(r.get("non_2xx", 0) + sum(r.get("socket_errors", {}).values()))))
        out += [table(["fanout", "requests/s", "p50", "p99", "CPU / request", "backend CPU / request",
                       "connections (most)", "new connections in measured runs", "errors"], rows,
                      ["---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"]), ""]
        if all(len((h2.get(k) or {}).get("rounds", [])) > 1 for k in ("h2", "h1")):
            out += ["Requests/s in each round: h2 " + ", ".join(num(r["requests_per_s"]) for r in h2["h2"]["rounds"])
                    + "; HTTP/1.1 " + ", ".join(num(r["requests_per_s"]) for r in h2["h1"]["rounds"]) + ".", ""]
    hosts = doc.get("hosts") or {}
    if hosts:
        out += ["### Many hosts: a replica fails under load", "",
                "One upstream of four nginx replicas; `GET /data` makes one call to it. "
                "[`bench/failover.py`](bench/failover.py) sends "
                f"{num(meta.get('hosts_rate'))} requests/s (open loop: each request is due at its time, over 16 "
                f"keep-alive connections) for {meta.get('hosts_seconds')} s and reads the gateway's `/api/stats` "
                "every 100 ms. After 3 s the fourth replica is reloaded to answer 500 (nginx SIGHUP: requests in "
                "flight finish); after 6 s it is stopped (connections refused). The failure is the replica's "
                "first 500 in its own access log (a reload takes a while on a loaded machine). fanout "
                "([`bench/hosts-gateway.yaml`](bench/hosts-gateway.yaml)): `retry: { attempts: 2, backoff: 5ms, "
                "budget: 20% }`, `eject: { failures: 5, base: 2s }`, p2c; the control "
                "([`bench/hosts-control.yaml`](bench/hosts-control.yaml)): no retries, ejection off. Errors: "
                "answers other than 200 (and transport errors) that reached the client, by the time the request "
                "was sent. Share while ejected: the failing replica's attempts over all attempts, summed over the "
                "100 ms intervals in which it was ejected at both ends (so an ejection that ends and starts again within "
                "one interval brings in the few attempts made in between, which fail and eject it again).", ""]
        rows = []
        for key, label in (("fanout", "fanout, retries + ejection"), ("control", "control: neither")):
            r = hosts.get(key)
            if not r:
                continue
            f1, f5, fr = r["first_second"], r["errors_5xx_phase"], r["refused_phase"]
            share = r.get("target_share_while_ejected_pct")
            backend = r.get("backend") or {}
            rows.append((label, num(r["requests"]), f"{r.get('failure_delay_ms', '–')} ms",
                         num(backend.get("5xx")), f"{f1['errors']}/{f1['requests']}", ms(f1.get("p99_ms")),
                         f"{f5['errors']}/{f5['requests']}", f"{fr['errors']}/{fr['requests']}",
                         "–" if r.get("ejected_after_ms") is None else f"{r['ejected_after_ms']} ms",
                         num(r.get("ejections")), f"{r.get('ejected_s', 0):.1f} s",
                         "–" if share is None else f"{share:.2f} %",
                         "–" if r.get("target_share_after_failure_pct") is None
                         else f"{r['target_share_after_failure_pct']:.1f} %"))
        out += [table(["gateway", "requests", "first 500 after the reload signal", "500s the replica answered",
                       "errors in the 1st second", "p99 in it", "errors while 500",
                       "errors while refused", "ejected after", "ejections", "time ejected",
                       "its share while ejected", "its share after the failure"], rows,
                      ["---"] + ["---:"] * 12), ""]
    return out


# --- SVG -----------------------------------------------------------------------------
def nice_ticks(top, count=5):
    if top <= 0:
        return [0, 1]
    raw = top / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    ticks = [0]
    while ticks[-1] < top:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def short(value):
    if value >= 1e6:
        return f"{value / 1e6:g}M"
    if value >= 1e3:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


def text(x, y, s, size=12, anchor="start", weight="normal", color="#212529"):
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{color}">{html.escape(str(s))}</text>')


def svg_doc(width, height, body):
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">\n'
            f'<rect width="{width}" height="{height}" fill="#ffffff"/>\n' + "\n".join(body) + "\n</svg>\n")


def bar_panel(x0, y0, w, h, title, items, fmt, clip_to=None, label_w=110):
    """Horizontal bars: items = [(label, value, color)]. Bars beyond clip_to are drawn broken."""
    body = [text(x0, y0 + 14, title, 13, weight="bold")]
    top_pad, bottom_pad = 30, 24
    plot_x, plot_w = x0 + label_w, w - label_w - 70
    plot_y, plot_h = y0 + top_pad, h - top_pad - bottom_pad
    values = [v for _, v, _ in items if v is not None]
    top = clip_to if clip_to else max(values or [1])
    ticks = nice_ticks(top)
    scale = plot_w / ticks[-1]
    for t in ticks:
        x = plot_x + t * scale
        body.append(f'<line x1="{x:.1f}" y1="{plot_y}" x2="{x:.1f}" y2="{plot_y + plot_h}" stroke="#e9ecef"/>')
        body.append(text(x, plot_y + plot_h + 16, short(t), 11, "middle", color="#495057"))
    band = plot_h / len(items)
    for i, (label, value, color) in enumerate(items):
        y = plot_y + i * band + band * 0.2
        bh = band * 0.6
        body.append(text(plot_x - 8, y + bh / 2 + 4, label, 12, "end"))
        if value is None:
            continue
        broken = value > ticks[-1]
        bw = plot_w if broken else value * scale
        body.append(f'<rect x="{plot_x}" y="{y:.1f}" width="{bw:.1f}" height="{bh:.1f}" fill="{color}"/>')
        if broken:  # a break mark: the bar is off the scale
            bx = plot_x + plot_w * 0.8
            for dx in (0, 7):
                body.append(f'<line x1="{bx + dx - 4:.1f}" y1="{y + bh + 3:.1f}" x2="{bx + dx + 4:.1f}" '
                            f'y2="{y - 3:.1f}" stroke="#ffffff" stroke-width="3"/>')
        body.append(text(plot_x + bw + 5, y + bh / 2 + 4, fmt(value), 12, weight="bold"))
    body.append(f'<line x1="{plot_x}" y1="{plot_y}" x2="{plot_x}" y2="{plot_y + plot_h}" stroke="#495057"/>')
    return body


def throughput_svg(doc):
    tp = doc.get("throughput") or {}
    keys = [k for k in THROUGHPUT_TARGETS if k in tp]
    gws = [k for k in keys if k != "direct"]
    items_rps = [(target_label(doc, k), tp[k]["requests_per_s"], COLORS[k]) for k in keys]
    items_p99 = [(target_label(doc, k), tp[k]["p99_ms"], COLORS[k]) for k in keys]
    items_cpu = [(target_label(doc, k), tp[k].get("cpu_us_per_request"), COLORS[k]) for k in gws]
    gateways = [tp[k]["requests_per_s"] for k in gws]
    clip = max(gateways) * 1.3 if gateways else None
    if clip and all(v <= clip for _, v, _ in items_rps):
        clip = None
    W = 1240
    H = 110 + 28 * len(keys)
    body = bar_panel(10, 8, 440, H - 30, "requests/s (higher is better)", items_rps, lambda v: num(v), clip, 140)
    body += bar_panel(450, 8, 390, H - 30, "p99 latency, ms (lower is better)", items_p99, lambda v: f"{v:.2f}",
                      None, 140)
    if items_cpu:
        # Same rows as the other panels: direct has no gateway CPU.
        rows = ([(target_label(doc, "direct"), None, COLORS["direct"])] if "direct" in keys else []) + items_cpu
        body += bar_panel(840, 8, 390, H - 30, "CPU µs per request (lower is better)", rows,
                          lambda v: f"{v:.0f}", None, 140)
    go, fo, orr = tp.get("go"), tp.get("fanout"), tp.get("openresty")
    parts = []
    if go and fo:
        parts.append(f"fanout ÷ Go: requests/s {fo['requests_per_s'] / go['requests_per_s']:.2f}× (target ≥ 2.0×), "
                     f"p99 {fo['p99_ms'] / go['p99_ms']:.2f}× (≤ 0.5×)")
    if orr and fo:
        cpu = ratio(fo.get("cpu_us_per_request"), orr.get("cpu_us_per_request"))
        parts.append(f"fanout ÷ OpenResty: requests/s {fo['requests_per_s'] / orr['requests_per_s']:.2f}× (≥ 1.3×), "
                     f"p99 {fo['p99_ms'] / orr['p99_ms']:.2f}× (≤ 1.0×)"
                     + (f", CPU/request {cpu:.2f}× (≤ 0.7×)" if cpu is not None else ""))
    if parts:
        caption = "; ".join(parts) + (f". wrk -t2 -c64, {get(doc, 'meta', 'bench_seconds')} s × "
                                      f"{get(doc, 'meta', 'throughput_rounds') or 1}; {get(doc, 'machine', 'date')}")
        body.append(text(10, H - 8, caption, 11, color="#495057"))
    return svg_doc(W, H, body)


def width_svg(doc):
    fw, fspread = width_figures(doc, "fanout")
    gw, gspread = width_figures(doc, "go")
    W, H = 700, 330
    left, right, top_, bottom = 70, 210, 40, 50
    pw, ph = W - left - right, H - top_ - bottom
    values = [r[1] for r in list(fw.values()) + list(gw.values())]
    ticks = nice_ticks(max(values or [1]) * 1.1)
    ymax = ticks[-1]
    inner = 30  # keep the first and last points off the axes
    xs = {w: left + inner + (pw - 2 * inner) * i / (len(WIDTHS) - 1) for i, w in enumerate(WIDTHS)}
    ys = lambda v: top_ + ph - v / ymax * ph
    body = [text(10, 20, "requests/s × width against fan-out width (flat is ideal)", 14, weight="bold")]
    for t in ticks:
        body.append(f'<line x1="{left}" y1="{ys(t):.1f}" x2="{left + pw}" y2="{ys(t):.1f}" stroke="#e9ecef"/>')
        body.append(text(left - 8, ys(t) + 4, short(t), 11, "end", color="#495057"))
    for w, x in xs.items():
        body.append(f'<line x1="{x:.1f}" y1="{top_ + ph}" x2="{x:.1f}" y2="{top_ + ph + 5}" stroke="#495057"/>')
        body.append(text(x, top_ + ph + 19, w, 12, "middle"))
    body.append(text(left + pw / 2, H - 8, "backend calls per request (width)", 12, "middle", color="#495057"))
    body.append(f'<line x1="{left}" y1="{top_}" x2="{left}" y2="{top_ + ph}" stroke="#495057"/>')
    body.append(f'<line x1="{left}" y1="{top_ + ph}" x2="{left + pw}" y2="{top_ + ph}" stroke="#495057"/>')
    # The target band for fanout: within 20 % of its best over widths 3..30.
    best = max([fw[w][1] for w in (3, 10, 30) if w in fw] or [0])
    if best:
        y1, y2 = ys(best), ys(best * 0.8)
        body.append(f'<rect x="{xs[3] - 8:.1f}" y="{y1:.1f}" width="{xs[30] - xs[3] + 16:.1f}" '
                    f'height="{y2 - y1:.1f}" fill="{COLORS["fanout"]}" fill-opacity="0.10"/>')
    series = (("fanout", fw), ("go", gw))
    for key, rows in series:
        points = [(xs[w], ys(rows[w][1])) for w in WIDTHS if w in rows]
        if points:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            body.append(f'<polyline points="{path}" fill="none" stroke="{COLORS[key]}" stroke-width="2.5"/>')
    for w in WIDTHS:
        here = [(key, rows[w][1]) for key, rows in series if w in rows]
        higher = max(here, key=lambda kv: kv[1])[0] if here else None
        for key, value in here:
            x, y = xs[w], ys(value)
            dy = -9 if key == higher else 17
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{COLORS[key]}"/>')
            body.append(text(x, y + dy, num(value), 10, "middle", color=COLORS[key]))
    lx, ly = left + pw + 20, top_ + 10
    for key, spread in (("fanout", fspread), ("go", gspread)):
        body.append(f'<rect x="{lx}" y="{ly - 7}" width="16" height="4" fill="{COLORS[key]}"/>')
        body.append(text(lx + 22, ly - 1, LABELS[key], 12))
        if spread is not None:
            body.append(text(lx + 22, ly + 14, f"min ÷ max over 3–30: {spread:.2f}", 10, color="#495057"))
        ly += 40
    if best:
        body.append(f'<rect x="{lx}" y="{ly - 10}" width="16" height="10" fill="{COLORS["fanout"]}" '
                    f'fill-opacity="0.10"/>')
        body.append(text(lx + 22, ly - 1, "target: fanout within", 10, color="#495057"))
        body.append(text(lx + 22, ly + 12, "20 % of its best (3–30)", 10, color="#495057"))
    body.append(text(lx, top_ + ph - 12, f"wrk -t2 -c64, {get(doc, 'meta', 'width_seconds')} s per point",
                     9, color="#868e96"))
    body.append(text(lx, top_ + ph, str(get(doc, "machine", "date")), 9, color="#868e96"))
    return svg_doc(W, H, body)


# --- main ------------------------------------------------------------------------------
def replace_region(path, generated):
    text_ = open(path).read()
    if BEGIN not in text_ or END not in text_:
        raise SystemExit(f"report.py: {path} has no {BEGIN} … {END} region; add both markers where the "
                         "generated section goes")
    head, rest = text_.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = head + generated.rstrip("\n") + tail
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(new)
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("--write", metavar="BENCHMARKS.md")
    parser.add_argument("--svg-dir")
    args = parser.parse_args()
    doc = json.load(open(args.results))
    if args.write:
        svg_prefix = None
        if args.svg_dir:
            os.makedirs(args.svg_dir, exist_ok=True)
            if doc.get("throughput"):
                with open(os.path.join(args.svg_dir, "throughput.svg"), "w") as f:
                    f.write(throughput_svg(doc))
            if doc.get("width"):
                with open(os.path.join(args.svg_dir, "width.svg"), "w") as f:
                    f.write(width_svg(doc))
            svg_prefix = os.path.relpath(args.svg_dir, os.path.dirname(os.path.abspath(args.write))) + "/"
        replace_region(args.write, markdown(doc, svg_prefix))
        rows = summary_rows(doc)
        print(table(["scenario", "fanout", "reference", "fanout ÷ reference", "target", "met?"], rows,
                    ["---", "---:", "---:", "---:", "---", "---"]))
        for note in warnings(doc):
            print(f"warning: {note}")
    else:
        sys.stdout.write(markdown(doc))


if __name__ == "__main__":
    main()
