#!/usr/bin/env python3
"""Helpers for bench/run.sh (stdlib only): generated configs, output parsers,
and the results file.

    lib.py nginx-conf DIR OFFSET           nginx.conf: 3 backends on 19301-19303 (+ OFFSET)
    lib.py nginx-proxy-conf DIR OFFSET     nginx.conf: proxy_pass to backend one, on 19304
    lib.py nginx-tls-conf DIR OFFSET CERT KEY
                                           nginx.conf: the 3 backends over TLS on
                                           19311-19313, over TLS with HTTP/2 on
                                           19321-19323, stub_status on 19319
    lib.py hosts-nginx-conf DIR OFFSET     nginx.conf: 3 replicas on 19331-19333
    lib.py failing-nginx-conf DIR OFFSET STATUS
                                           nginx.conf (with a master process, for a
                                           reload): the 4th replica on 19334,
                                           answering STATUS
    lib.py nginx-accepts URL               connections an nginx accepted so far
                                           (its stub_status at URL)
    lib.py conns PID PORT...               established TCP connections of process
                                           PID to those ports on 127.0.0.1
    lib.py width-gateway PORT OFFSET W...  fanout config: GET /wN merges N calls
    lib.py width-urls W OFFSET             the same N calls, comma-separated (Go)
    lib.py edge-token DIR                  an RSA key (openssl genrsa) in DIR/jwt-key.pem,
                                           its JWKS in DIR/jwks.json, one RS256 token
                                           signed with it (openssl dgst) in DIR/token
    lib.py edge-gateway PORT OFFSET FEATURES
                                           fanout config: the throughput scenario's
                                           GET /merged with FEATURES on (a comma list of
                                           jwt, cors, limit; "none": plain)
    lib.py shift-ports FILE OFFSET         FILE with every port 19xxx shifted by OFFSET
    lib.py ports-busy PORT...              the ports something listens on, on 127.0.0.1
    lib.py wrk FILE                        wrk --latency output -> JSON
    lib.py wrk-run URL SECONDS [PID [BACKEND_PID]] [-H HEADER]...
                                           runs wrk -t2 -c64 --latency (with the
                                           headers -H, as wrk takes them), samples the
                                           processes' CPU time around it, PID's RSS
                                           every 100 ms during it and after it -> JSON;
                                           PID+ is PID and its child processes (an
                                           nginx master and its workers: CPU and RSS
                                           summed over them)
    lib.py wrk-pair SECONDS URL_A PID_A URL_B PID_B [-H HEADER]...
                                           two wrk runs at the same time (-t1 -c32
                                           each), one per gateway, each with its
                                           CPU time per request -> {"a", "b"}
    lib.py same-body REF_URL URL NAME      exits 1 unless URL answers 200 with the very
                                           bytes REF_URL answers (a peer against fanout)
    lib.py merge-rounds FILE...            wrk-run results of several rounds -> medians
    lib.py divan FILE                      divan output -> JSON (medians in ns)
    lib.py proc PID                        {"ticks", "rss_kb", "hwm_kb", "anon_kb"} of a process
    lib.py proc-children PID               its child processes' ids
    lib.py machine                         machine and versions -> JSON
    lib.py tail-summary FETCH.json BEFORE AFTER
                                           fanout fetch --json output and the mock's
                                           stats around it -> JSON
    lib.py failfast-summary LOAD.json NAME BEFORE AFTER
                                           loadgen.py output and the mock's stats -> JSON
    lib.py show KIND FILE NAME [WIDTH]     one line of progress for the terminal
    lib.py set FILE KEY VALUE              FILE[KEY] = VALUE (JSON text, or @file);
                                           KEY is dotted: a.b.c
"""

import json
import os
import platform
import re
import socket
import subprocess
import sys
import time

NGINX_PORTS = (19301, 19302, 19303)
WIDTH_LOCATIONS = 10  # /w/0 .. /w/9 on each backend: up to 30 distinct calls


def body(prefix):
    """A ~200-byte JSON object whose keys start with prefix."""
    return json.dumps({f"{prefix}_{i}": "v" * 12 for i in range(8)}, separators=(", ", ": "))


def nginx_conf(directory, offset=0):
    servers = []
    for index, port in enumerate(NGINX_PORTS):
        port += offset
        name = ("one", "two", "three")[index]
        locations = [f"location = /data {{ default_type application/json; return 200 '{body(name)}'; }}"]
        for k in range(WIDTH_LOCATIONS):
            locations.append(
                f"location = /w/{k} {{ default_type application/json; return 200 '{body(f'b{index}w{k}')}'; }}"
            )
        inner = "\n    ".join(locations)
        servers.append(f"  server {{\n    listen 127.0.0.1:{port};\n    {inner}\n  }}")
    return f"""# Generated by bench/lib.py for bench/run.sh.
worker_processes 1;
master_process off;
daemon off;
worker_rlimit_nofile 65536;
pid {directory}/nginx.pid;
error_log {directory}/nginx-error.log;
events {{ worker_connections 32768; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 15s;
  client_body_temp_path {directory}/client_body;
{chr(10).join(servers)}
}}
"""


PROXY_PORT = 19304
TLS_PORTS = (19311, 19312, 19313)
H2_PORTS = (19321, 19322, 19323)
TLS_STATUS_PORT = 19319
HOSTS_PORTS = (19331, 19332, 19333, 19334)


def data_server(port, name, listen_extra=""):
    return (f"  server {{\n    listen 127.0.0.1:{port}{listen_extra};\n"
            f"    location = /data {{ default_type application/json; return 200 '{body(name)}'; }}\n  }}")


def nginx_tls_conf(directory, offset, cert, key):
    """The three backends of the throughput scenario behind TLS (HTTP/1.1
    only: nginx's ALPN offers http/1.1), and again with HTTP/2 (ALPN h2),
    one worker; stub_status counts the connections they accepted."""
    names = ("one", "two", "three")
    servers = [data_server(p + offset, n, " ssl") for p, n in zip(TLS_PORTS, names)]
    servers += [data_server(p + offset, n, " ssl http2") for p, n in zip(H2_PORTS, names)]
    servers.append(f"  server {{\n    listen 127.0.0.1:{TLS_STATUS_PORT + offset};\n"
                   "    location = /status { stub_status; }\n  }")
    return f"""# Generated by bench/lib.py for bench/run.sh: TLS backends.
worker_processes 1;
master_process off;
daemon off;
worker_rlimit_nofile 65536;
pid {directory}/nginx-tls.pid;
error_log {directory}/nginx-tls-error.log;
events {{ worker_connections 32768; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 15s;
  client_body_temp_path {directory}/tls_client_body;
  ssl_certificate {cert};
  ssl_certificate_key {key};
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_cache shared:bench_tls:4m;
{chr(10).join(servers)}
}}
"""


def hosts_nginx_conf(directory, offset):
    """Three healthy replicas of the "many hosts" scenario, one worker."""
    servers = [data_server(p + offset, "replica") for p in HOSTS_PORTS[:3]]
    return f"""# Generated by bench/lib.py for bench/run.sh: 3 replicas.
worker_processes 1;
master_process off;
daemon off;
worker_rlimit_nofile 65536;
pid {directory}/nginx-hosts.pid;
error_log {directory}/nginx-hosts-error.log;
events {{ worker_connections 32768; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 15s;
  client_body_temp_path {directory}/hosts_client_body;
{chr(10).join(servers)}
}}
"""


def failing_nginx_conf(directory, offset, status):
    """The fourth replica, with a master process so that a SIGHUP switches it
    to answering `status` (graceful: requests in flight finish), and an
    access log of the time and status of every answer."""
    port = HOSTS_PORTS[3] + offset
    answer = body("replica") if int(status) == 200 else '{"error": "failing on purpose"}'
    return f"""# Generated by bench/lib.py for bench/run.sh: the replica that fails.
worker_processes 1;
master_process on;
daemon off;
worker_rlimit_nofile 65536;
pid {directory}/nginx-failing.pid;
error_log {directory}/nginx-failing-error.log;
events {{ worker_connections 32768; }}
http {{
  keepalive_requests 1000000;
  keepalive_timeout 15s;
  client_body_temp_path {directory}/failing_client_body;
  # Its own record of each answer: when it started failing, and how often.
  log_format failing '$msec $status';
  access_log {directory}/failing-access.log failing;
  server {{
    listen 127.0.0.1:{port};
    location = /data {{ default_type application/json; return {int(status)} '{answer}'; }}
  }}
}}
"""


def nginx_accepts(url):
    """The `accepts` of an nginx stub_status page (this request's own
    connection included)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as r:
        lines = r.read().decode().splitlines()
    return int(lines[2].split()[0])


def conns(pid, ports):
    """Established TCP connections of process pid to 127.0.0.1:port for the
    given ports (its sockets' inodes matched in /proc/net/tcp)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    wanted = {f"0100007F:{port:04X}" for port in ports}
    count = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[2] in wanted and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


def nginx_proxy_conf(directory, offset=0):
    """A second nginx (one worker): proxy_pass to backend one over kept-alive
    connections. The cost of one more HTTP hop on this machine, the floor under
    any gateway's overhead."""
    return f"""# Generated by bench/lib.py for bench/run.sh: one hop, no fan-out.
worker_processes 1;
master_process off;
daemon off;
worker_rlimit_nofile 65536;
pid {directory}/nginx-proxy.pid;
error_log {directory}/nginx-proxy-error.log;
events {{ worker_connections 32768; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 15s;
  client_body_temp_path {directory}/proxy_client_body;
  proxy_temp_path {directory}/proxy_temp;
  upstream one {{ server 127.0.0.1:{NGINX_PORTS[0] + offset}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{PROXY_PORT + offset};
    location = /data {{
      proxy_pass http://one/data;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


def width_calls(width, offset=0):
    """The width-th first calls: spread over the 3 backends, distinct keys."""
    return [
        f"http://127.0.0.1:{NGINX_PORTS[j % 3] + offset}/w/{j // 3}" for j in range(width)
    ]


def shift_ports(text, offset):
    return re.sub(r"\b19(\d{3})\b", lambda m: str(int(m.group(0)) + offset), text)


def ports_busy(ports):
    busy = []
    for port in ports:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                busy.append(port)
    return busy


def width_gateway(port, widths, offset=0):
    lines = [
        "# Generated by bench/lib.py for bench/run.sh: GET /wN merges N calls,",
        "# spread over the 3 nginx backends, each answering distinct keys.",
        "server:",
        f'  listen: "127.0.0.1:{port}"',
        "  request_timeout: 5s",
        "  shutdown_grace: 1s",
        "endpoints:",
    ]
    for width in widths:
        lines.append(f"  - route: GET /w{width}")
        lines.append("    backends:")
        for j, url in enumerate(width_calls(width, offset)):
            lines.append(f'      - {{ name: b{j}, url: "{url}", required: true }}')
    return "\n".join(lines) + "\n"


EDGE_ISSUER = "https://idp.bench.invalid/"
EDGE_AUDIENCE = "fanout-bench"
EDGE_ORIGIN = "https://app.bench.invalid"
EDGE_FEATURES = ("jwt", "cors", "limit")


def b64url(data):
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def edge_token(directory):
    """A fresh RSA key (openssl genrsa, in the run's folder only: it is never
    kept), its public half as a JWKS, and one RS256 token signed with it
    (openssl dgst -sha256 -sign) that expires in ten years."""
    key = os.path.join(directory, "jwt-key.pem")
    subprocess.run(["openssl", "genrsa", "-out", key, "2048"], check=True, capture_output=True, timeout=60)
    modulus = subprocess.run(["openssl", "rsa", "-in", key, "-noout", "-modulus"], check=True,
                             capture_output=True, text=True, timeout=60).stdout.strip()
    n = bytes.fromhex(modulus.split("=", 1)[1])
    jwks = {"keys": [{"kty": "RSA", "kid": "bench", "use": "sig", "alg": "RS256",
                      "n": b64url(n), "e": b64url((65537).to_bytes(3, "big"))}]}
    with open(os.path.join(directory, "jwks.json"), "w") as f:
        json.dump(jwks, f)
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "kid": "bench"}
    claims = {"iss": EDGE_ISSUER, "aud": EDGE_AUDIENCE, "sub": "bench-user", "iat": now,
              "exp": now + 10 * 365 * 86400, "scope": "merged:read"}
    signing_input = ".".join(b64url(json.dumps(part, separators=(",", ":")).encode())
                             for part in (header, claims))
    signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing_input.encode(),
                               check=True, capture_output=True, timeout=60).stdout
    token = signing_input + "." + b64url(signature)
    with open(os.path.join(directory, "token"), "w") as f:
        f.write(token + "\n")
    return token


def edge_gateway(port, features, offset=0):
    """The throughput scenario's GET /merged with the edge features named in
    `features` on: a JWT scheme (RS256, the keys of edge_token's jwks.json,
    beside the config), CORS for one origin, and a rate limit that never
    refuses (per user: `claim:sub` with JWT, per client address without)."""
    unknown = set(features) - set(EDGE_FEATURES)
    if unknown:
        raise SystemExit(f"lib.py edge-gateway: unknown features {sorted(unknown)} (known: {EDGE_FEATURES})")
    lines = [
        "# Generated by bench/lib.py for bench/run.sh (the edge scenario): the",
        "# throughput scenario's GET /merged with: " + (", ".join(features) or "no edge feature") + ".",
        "server:",
        f'  listen: "127.0.0.1:{port}"',
        "  request_timeout: 5s",
        "  shutdown_grace: 1s",
    ]
    if "cors" in features:
        lines += ["  cors:",
                  f'    origins: ["{EDGE_ORIGIN}"]',
                  "    headers: [authorization]",
                  "    expose_headers: [ratelimit-remaining]",
                  "    max_age: 10m"]
    if "jwt" in features:
        lines += ["auth:",
                  "  users:",
                  "    jwt:",
                  "      jwks_file: jwks.json",
                  f'      issuer: "{EDGE_ISSUER}"',
                  f"      audience: [{EDGE_AUDIENCE}]",
                  "      algorithms: [RS256]"]
    lines += ["endpoints:", "  - route: GET /merged"]
    if "jwt" in features:
        lines.append("    auth: users")
    if "limit" in features:
        key = "claim:sub" if "jwt" in features else "ip"
        lines.append(f'    rate_limit: {{ rate: 1000000/s, burst: 1000000, key: "{key}" }}')
    lines.append("    backends:")
    for name, backend in zip(("one", "two", "three"), NGINX_PORTS):
        lines.append(f'      - {{ name: {name}, url: "http://127.0.0.1:{backend + offset}/data", required: true }}')
    return "\n".join(lines) + "\n"


def parse_duration_ms(text):
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        return None
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000, "h": 3600000}[unit]


def parse_wrk(text):
    out = {"requests_per_s": None, "requests": None, "duration_s": None,
           "p50_ms": None, "p75_ms": None, "p90_ms": None, "p99_ms": None,
           "non_2xx": 0, "socket_errors": {}, "transfer_per_s": None}
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "Requests/sec:":
            out["requests_per_s"] = float(words[1])
        elif words[0] == "Transfer/sec:":
            out["transfer_per_s"] = words[1]
        elif words[0] in ("50%", "75%", "90%", "99%") and len(words) == 2:
            out[f"p{words[0][:-1]}_ms"] = parse_duration_ms(words[1])
        elif len(words) >= 5 and words[1] == "requests" and words[2] == "in":
            out["requests"] = int(words[0])
            out["duration_s"] = parse_duration_ms(words[3].rstrip(",")) / 1000
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            out["non_2xx"] = int(words[-1])
        elif line.strip().startswith("Socket errors:"):
            for part in line.split(":", 1)[1].split(","):
                name, value = part.split()
                out["socket_errors"][name] = int(value)
    if out["requests_per_s"] is None or out["p99_ms"] is None:
        raise SystemExit(f"lib.py wrk: cannot read wrk's output:\n{text}")
    return out


UNITS_NS = {"ns": 1, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}


def parse_divan(text):
    """The divan tree -> {"a/b/c": {"fastest_ns", "median_ns", "mean_ns", "samples"}}."""
    results = {}
    stack = []
    for line in text.splitlines():
        match = re.match(r"^([│├╰─ ]*)(\S+)(.*)$", line)
        if not match or "│" not in match.group(3) and not match.group(1):
            continue
        prefix, name, rest = match.groups()
        if not prefix:  # the header line: the bench binary's name and column titles
            stack = [name] if "fastest" in rest else stack
            continue
        depth = len(prefix) // 3
        stack = stack[:depth] + [name]
        columns = [c.strip() for c in rest.split("│")]
        if len(columns) < 6 or not columns[0]:
            continue

        def ns(cell):
            number, unit = cell.split()
            return round(float(number) * UNITS_NS[unit], 1)

        results["/".join(stack[1:])] = {
            "fastest_ns": ns(columns[0]),
            "slowest_ns": ns(columns[1]),
            "median_ns": ns(columns[2]),
            "mean_ns": ns(columns[3]),
            "samples": int(columns[4]),
        }
    return results


def children(pid):
    """The child processes of pid (an nginx master's workers)."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return found


def procs(pids):
    """proc() summed over processes: ticks, rss_kb, hwm_kb and anon_kb (shared
    pages count once per process, as a sum of RSS always does)."""
    rows = [proc(p) for p in pids]
    out = {"ticks": sum(r["ticks"] for r in rows), "clk_tck": rows[0]["clk_tck"]}
    for key in ("rss_kb", "hwm_kb", "anon_kb"):
        values = [r[key] for r in rows if r[key] is not None]
        out[key] = sum(values) if values else None
    return out


def pid_list(spec):
    """"1234" -> [1234]; "1234+" -> 1234 and its children, as they are now."""
    if spec is None:
        return None
    spec = str(spec)
    if spec.endswith("+"):
        pid = int(spec[:-1])
        return [pid] + children(pid)
    return [int(spec)]


def wrk_run(url, seconds, pid=None, backend_pid=None, threads=2, connections=64, headers=()):
    """wrk against url (sending `headers`, "name: value" each); CPU time of pid
    (and backend_pid) over the run, RSS after. pid may be "PID+": the process
    and its children (fixed when the run starts)."""
    pids = pid_list(pid)
    before = procs(pids) if pids else None
    backend_before = proc(backend_pid) if backend_pid else None
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for header in headers:
        argv += ["-H", header]
    argv.append(url)
    # RSS under the load (all of it, and its anonymous part): sampled every
    # 100 ms while wrk runs.
    samples, anon_samples = [], []
    try:
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
            deadline = time.monotonic() + float(seconds) + 30
            while child.poll() is None:
                if time.monotonic() > deadline:
                    child.kill()
                    raise subprocess.TimeoutExpired(argv, float(seconds) + 30)
                if pids:
                    try:
                        now = procs(pids)
                        samples.append(now["rss_kb"])
                        anon_samples.append(now["anon_kb"])
                    except OSError:
                        pass
                time.sleep(0.1)
            stdout, stderr = child.communicate()
        done = subprocess.CompletedProcess(argv, child.returncode, stdout, stderr)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"lib.py: wrk did not finish within {seconds} s + 30 s: {url}")
    if done.returncode != 0:
        raise SystemExit(f"lib.py: wrk failed ({done.returncode}): {done.stderr.strip()}")
    out = parse_wrk(done.stdout)
    out["url"] = url
    out["threads"], out["connections"] = threads, connections

    def cpu(first, second):
        seconds_cpu = (second["ticks"] - first["ticks"]) / second["clk_tck"]
        per_request = seconds_cpu * 1e6 / out["requests"] if out["requests"] else None
        return round(seconds_cpu, 2), None if per_request is None else round(per_request, 1)

    if pids:
        after = procs(pids)
        out["processes"] = len(pids)
        out["cpu_s"], out["cpu_us_per_request"] = cpu(before, after)
        out["rss_kb"], out["hwm_kb"] = after["rss_kb"], after["hwm_kb"]
        # The middle half of the run: past the ramp-up, before the end.
        def steady(values):
            middle = [v for v in values[len(values) // 4: max(len(values) * 3 // 4, len(values) // 4 + 1)]
                      if v is not None]
            return sorted(middle)[len(middle) // 2] if middle else None
        if steady(samples) is not None:
            out["rss_under_load_kb"] = steady(samples)
        if steady(anon_samples) is not None:
            out["anon_under_load_kb"] = steady(anon_samples)
    if backend_pid:
        out["backend_cpu_s"], out["backend_cpu_us_per_request"] = cpu(backend_before, proc(backend_pid))
    return out


def wrk_pair(seconds, a, b, headers=()):
    """wrk_run against two gateways at once, half the threads and connections
    each: both see the same load from the rest of the machine at the same
    moments, so the ratio of their CPU time per request is the steadiest
    reading of what one costs more than the other. a, b: (url, pid)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(wrk_run, url, seconds, pid, None, 1, 32, headers) for url, pid in (a, b)]
        return {"a": runs[0].result(), "b": runs[1].result()}


def same_body(ref_url, url, name):
    """Compares the answers byte for byte; raises SystemExit with the difference."""
    import urllib.request

    def get(u):
        try:
            with urllib.request.urlopen(u, timeout=5) as r:
                return r.status, r.headers.get("content-type"), r.read()
        except Exception as err:  # HTTPError included: a 5xx is a mismatch too
            raise SystemExit(f"{name}: GET {u} failed: {err}")

    ref_status, _, ref = get(ref_url)
    status, ctype, got = get(url)
    if ref_status != 200:
        raise SystemExit(f"{name}: the reference {ref_url} answers {ref_status}")
    if status != 200 or got != ref:
        try:
            same_parsed = json.loads(got) == json.loads(ref)
            same_order = same_parsed and list(json.loads(got)) == list(json.loads(ref))
        except ValueError:
            same_parsed = same_order = False
        first = next((i for i, (a, b) in enumerate(zip(got, ref)) if a != b), min(len(got), len(ref)))
        raise SystemExit(
            f"{name}: {url} does not answer what fanout answers (status {status}, {len(got)} bytes against "
            f"{len(ref)}; equal as parsed JSON: {'yes' if same_parsed else 'no'}, same top-level key order: "
            f"{'yes' if same_order else 'no'}); first difference at byte {first}:\n"
            f"  fanout: {ref[max(0, first - 40):first + 40]!r}\n  {name}: {got[max(0, first - 40):first + 40]!r}")
    if not (ctype or "").startswith("application/json"):
        raise SystemExit(f"{name}: {url} answers content-type {ctype!r}, not application/json")
    return f"{name}: the same {len(got)} bytes as fanout"


def merge_rounds(paths):
    """wrk-run results of the same target over several rounds -> one record:
    medians of the rates, latencies and CPU per request; errors summed; RSS after
    the last round and the highest peak; each round's req/s and p99 in "rounds"."""
    runs = [json.load(open(p)) for p in paths]
    if not runs:
        raise SystemExit("lib.py merge-rounds: no runs")

    def median(key):
        values = sorted(r[key] for r in runs if r.get(key) is not None)
        if not values:
            return None
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

    out = dict(runs[-1])
    for key in ("requests_per_s", "p50_ms", "p75_ms", "p90_ms", "p99_ms", "cpu_us_per_request",
                "backend_cpu_us_per_request", "rss_under_load_kb", "anon_under_load_kb", "handshakes_per_s",
                "backend_conns"):
        if any(key in r for r in runs):
            out[key] = median(key)
    out["requests"] = sum(r.get("requests") or 0 for r in runs)
    out["non_2xx"] = sum(r.get("non_2xx") or 0 for r in runs)
    errors = {}
    for r in runs:
        for name, count in (r.get("socket_errors") or {}).items():
            errors[name] = errors.get(name, 0) + count
    out["socket_errors"] = errors
    hwm = [r["hwm_kb"] for r in runs if r.get("hwm_kb") is not None]
    if hwm:
        out["hwm_kb"] = max(hwm)
    out["rounds"] = [{"requests_per_s": r["requests_per_s"], "p99_ms": r["p99_ms"],
                      "cpu_us_per_request": r.get("cpu_us_per_request")} for r in runs]
    for key in ("handshakes", "warmup_handshakes"):
        if any(key in r for r in runs):
            out[key] = sum(r.get(key) or 0 for r in runs)
            for round_, r in zip(out["rounds"], runs):
                round_[key] = r.get(key)
    if any("backend_conns" in r for r in runs):
        out["backend_conns_max"] = max(r.get("backend_conns") or 0 for r in runs)
    return out


def proc(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)
    rss = hwm = anon = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
            elif line.startswith("RssAnon:"):
                # What the process allocated (heap, stacks), without its
                # binary's and libraries' pages (RssFile, reclaimable).
                anon = int(line.split()[1])
    return {"ticks": ticks, "clk_tck": os.sysconf("SC_CLK_TCK"), "rss_kb": rss, "hwm_kb": hwm,
            "anon_kb": anon}


def command(*argv):
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout + done.stderr).strip()
    return text.splitlines()[0] if text else None


def lock_version(crate):
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Cargo.lock")
    try:
        text = open(root).read()
    except OSError:
        return None
    match = re.search(r'name = "%s"\nversion = "([^"]+)"' % re.escape(crate), text)
    return match.group(1) if match else None


def debian_version(package):
    try:
        done = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True,
                              text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def npm_version(package):
    """The version bench/node-gateway's package-lock.json pins."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node-gateway", "package-lock.json")
    try:
        return json.load(open(path))["packages"][f"node_modules/{package}"]["version"]
    except (OSError, KeyError, ValueError):
        return None


def machine():
    cpu = None
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": round(mem_kb / 1024 / 1024, 1) if mem_kb else None,
        "kernel": platform.release(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "versions": {
            "rustc": command("rustc", "--version"),
            "tokio": lock_version("tokio"),
            "hyper": lock_version("hyper"),
            "divan": lock_version("divan"),
            "go": command("go", "version"),
            "nginx": command("nginx", "-v"),
            "nginx_lua": debian_version("libnginx-mod-http-lua"),
            "luajit": debian_version("libluajit2-5.1-2") or debian_version("libluajit-5.1-2"),
            "lua_cjson": debian_version("lua-cjson"),
            "node": command("node", "--version"),
            "undici": npm_version("undici"),
            "wrk": (command("wrk", "-v") or "").split(" Copyright")[0] or None,
            "python": platform.python_version(),
        },
    }


def tail_summary(fetch_path, before, after):
    report = json.load(open(fetch_path))
    lat = sorted(r["latency_ms"] for r in report["requests"])
    pct = lambda p: lat[min(len(lat) - 1, round(p / 100 * (len(lat) - 1)))]
    n = len(report["requests"])
    calls = after["requests"] - before["requests"]
    return {"requests": n, "failed": report["failed"], "p50_ms": pct(50), "p90_ms": pct(90),
            "p99_ms": pct(99), "max_ms": lat[-1], "backend_calls": calls,
            "extra_calls_pct": round((calls - n) / n * 100, 2)}


def failfast_summary(load_path, name, before, after):
    load = json.load(open(load_path))["targets"][name]
    calls = after["requests"] - before["requests"]
    sent = load["count"] + load["errors"]
    return {"requests": load["count"], "statuses": load["statuses"], "errors": load["errors"],
            "p50_ms": load["p50_us"] / 1000, "max_ms": load["max_us"] / 1000, "min_ms": load["min_us"] / 1000,
            "backend_calls": calls, "slow_calls": calls - sent,
            "abandoned": after["abandoned"] - before["abandoned"], "in_flight_after": after["in_flight"]}


def show(kind, path, name=None, width=None):
    d = json.load(open(path))
    if kind == "throughput":
        return (f"    {name:9} {d['requests_per_s']:>10,.0f} req/s  p50 {d['p50_ms']:.2f} ms  "
                f"p99 {d['p99_ms']:.2f} ms  RSS {(d.get('rss_kb') or 0) / 1024:.1f} MiB  "
                f"CPU {d.get('cpu_us_per_request') or '-'} µs/req  non-2xx {d['non_2xx']}")
    if kind == "edge":
        return (f"    {name:6} {d['requests_per_s']:>10,.0f} req/s  p50 {d['p50_ms']:.2f} ms  "
                f"p99 {d['p99_ms']:.2f} ms  CPU {d.get('cpu_us_per_request') or '-'} µs/req  "
                f"non-2xx {d['non_2xx']}")
    if kind in ("tls", "h2"):
        extra = (f"  handshakes/s {d.get('handshakes_per_s', '-')}" if kind == "tls"
                 else f"  backend connections {d.get('backend_conns', '-')}")
        return (f"    {name:13} {d['requests_per_s']:>10,.0f} req/s  p50 {d['p50_ms']:.2f} ms  "
                f"p99 {d['p99_ms']:.2f} ms  CPU {d.get('cpu_us_per_request') or '-'} µs/req{extra}  "
                f"non-2xx {d['non_2xx']}")
    if kind == "hosts":
        first = d["first_second"]
        return (f"    {name:8} first second after the failure: {first['errors']}/{first['requests']} errors; "
                f"after it: {d['after_failure']['errors']}/{d['after_failure']['requests']}; ejected after "
                f"{d['ejected_after_ms']} ms; its share while ejected {d['target_share_while_ejected_pct']} %")
    if kind == "width":
        w = int(width)
        return (f"    width {w:2} {name:7} {d['requests_per_s']:>9,.0f} req/s  × width "
                f"{d['requests_per_s'] * w:>9,.0f}  p99 {d['p99_ms']:.2f} ms  non-2xx {d['non_2xx']}")
    if kind == "overhead":
        return "    p50: " + "  ".join(f"{k} {v['p50_us']} µs" for k, v in d["targets"].items()) + \
            f"  (late ticks: {d['late']})"
    if kind == "tail":
        return (f"    {name:7} p50 {d['p50_ms']:.1f} ms  p99 {d['p99_ms']:.1f} ms  calls "
                f"{d['backend_calls']} ({d['extra_calls_pct']:+.1f} %)  failed {d['failed']}")
    if kind == "failfast":
        return (f"    {name:7} median {d['p50_ms']:.1f} ms  max {d['max_ms']:.1f} ms  statuses {d['statuses']}  "
                f"abandoned {d['abandoned']}/{d['slow_calls']}  still in flight {d['in_flight_after']}")
    raise SystemExit(f"lib.py show: unknown kind {kind}")


def set_key(path, key, value):
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        doc = {}
    if value.startswith("@"):
        with open(value[1:]) as f:
            value = json.load(f)
    else:
        value = json.loads(value)
    node = doc
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def main(argv):
    if len(argv) < 2:
        raise SystemExit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "nginx-conf":
        sys.stdout.write(nginx_conf(args[0], int(args[1])))
    elif cmd == "nginx-proxy-conf":
        sys.stdout.write(nginx_proxy_conf(args[0], int(args[1])))
    elif cmd == "nginx-tls-conf":
        sys.stdout.write(nginx_tls_conf(args[0], int(args[1]), args[2], args[3]))
    elif cmd == "hosts-nginx-conf":
        sys.stdout.write(hosts_nginx_conf(args[0], int(args[1])))
    elif cmd == "failing-nginx-conf":
        sys.stdout.write(failing_nginx_conf(args[0], int(args[1]), args[2]))
    elif cmd == "nginx-accepts":
        print(nginx_accepts(args[0]))
    elif cmd == "conns":
        print(conns(int(args[0]), [int(p) for p in args[1:]]))
    elif cmd == "width-gateway":
        sys.stdout.write(width_gateway(int(args[0]), [int(w) for w in args[2:]], int(args[1])))
    elif cmd == "edge-token":
        edge_token(args[0])
    elif cmd == "edge-gateway":
        features = [] if args[2] == "none" else args[2].split(",")
        sys.stdout.write(edge_gateway(int(args[0]), features, int(args[1])))
    elif cmd == "width-urls":
        print(",".join(width_calls(int(args[0]), int(args[1]))))
    elif cmd == "shift-ports":
        sys.stdout.write(shift_ports(open(args[0]).read(), int(args[1])))
    elif cmd == "ports-busy":
        print(" ".join(str(p) for p in ports_busy([int(p) for p in args])))
    elif cmd == "wrk":
        print(json.dumps(parse_wrk(open(args[0]).read())))
    elif cmd in ("wrk-run", "wrk-pair"):
        headers = []
        while "-H" in args:
            at = args.index("-H")
            headers.append(args[at + 1])
            del args[at:at + 2]
        if cmd == "wrk-pair":
            print(json.dumps(wrk_pair(args[0], (args[1], args[2]), (args[3], args[4]), headers)))
            return
        url, seconds = args[0], args[1]
        pid = args[2] if len(args) > 2 and args[2] else None
        backend_pid = int(args[3]) if len(args) > 3 and args[3] else None
        print(json.dumps(wrk_run(url, seconds, pid, backend_pid, headers=headers)))
    elif cmd == "same-body":
        print(same_body(args[0], args[1], args[2]))
    elif cmd == "merge-rounds":
        print(json.dumps(merge_rounds(args)))
    elif cmd == "divan":
        print(json.dumps(parse_divan(open(args[0]).read()), indent=1))
    elif cmd == "proc-children":
        print(" ".join(str(c) for c in children(int(args[0]))))
    elif cmd == "proc":
        print(json.dumps(proc(int(args[0]))))
    elif cmd == "machine":
        print(json.dumps(machine()))
    elif cmd == "tail-summary":
        print(json.dumps(tail_summary(args[0], json.loads(args[1]), json.loads(args[2]))))
    elif cmd == "failfast-summary":
        print(json.dumps(failfast_summary(args[0], args[1], json.loads(args[2]), json.loads(args[3]))))
    elif cmd == "show":
        print(show(*args))
    elif cmd == "set":
        set_key(args[0], args[1], args[2])
    else:
        raise SystemExit(f"lib.py: unknown command {cmd}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv)
