"""Shared helpers of the reliability scripts (bench/soak.sh, overload.sh,
slow-clients.sh, h2-abuse.sh); stdlib only.

Not a benchmark of its own: a process's resources as /proc shows them,
percentiles, a blocking HTTP/1.1 keep-alive client, and a hand-written SVG
line plot (as bench/report.py draws its bars).
"""

import json
import os
import socket
import time
import urllib.request

from lib import proc
from loadgen import percentile


def sample(pid):
    """What /proc says of pid now: RSS and its peak (KiB), open file
    descriptors, and CPU time (utime + stime, seconds)."""
    now = proc(pid)
    return {"rss_kb": now["rss_kb"], "hwm_kb": now["hwm_kb"],
            "fds": len(os.listdir(f"/proc/{pid}/fd")), "cpu_s": now["ticks"] / now["clk_tck"]}


def summary_ms(latencies_s):
    """count, p50, p99 and max of latencies in seconds, as milliseconds."""
    values = sorted(latencies_s)
    ms = lambda v: None if v is None else round(v * 1000, 2)
    return {
        "count": len(values),
        "p50_ms": ms(percentile(values, 50)),
        "p99_ms": ms(percentile(values, 99)),
        "max_ms": ms(values[-1] if values else None),
    }


def get_json(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return json.load(answer)


def machine_load():
    """The load averages and the CPU count, for the figures' context."""
    with open("/proc/loadavg") as f:
        one, five, fifteen = f.read().split()[:3]
    return {"loadavg_1m": float(one), "loadavg_5m": float(five),
            "loadavg_15m": float(fifteen), "cpus": os.cpu_count()}


class Client:
    """One HTTP/1.1 keep-alive connection; reconnects after a close."""

    def __init__(self, host, port, timeout=5.0):
        self.host, self.port, self.timeout = host, port, timeout
        self.sock = None
        self.buf = b""

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock, self.buf = None, b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def get(self, path):
        """One GET; returns (status, headers, body). Raises OSError or
        ConnectionError when the connection fails (it is then closed)."""
        try:
            if self.sock is None:
                self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
            while b"\r\n\r\n" not in self.buf:
                self._fill()
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            status = int(lines[0].split()[1])
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower().decode()] = value.strip().decode()
            if headers.get("transfer-encoding", "").endswith("chunked"):
                body = b""
                while True:
                    size = int(self._line().split(b";")[0], 16)
                    if size == 0:
                        while self._line():
                            pass
                        break
                    body += self._exact(size + 2)[:-2]
            else:
                body = self._exact(int(headers.get("content-length", "0")))
            if headers.get("connection", "").lower() == "close":
                self.close()
            return status, headers, body
        except (OSError, ConnectionError, ValueError, IndexError):
            self.close()
            raise


def wait_port(host, port, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {host}:{port} after {seconds} s")


# --- SVG (hand-written, like bench/report.py) ---------------------------------

def _esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _text(x, y, s, size=12, anchor="start", color="#212529"):
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-family="sans-serif" font-size="{size}" '
            f'text-anchor="{anchor}" fill="{color}">{_esc(s)}</text>')


def _ticks(top, count=4):
    if top <= 0:
        return [0, 1]
    raw = top / count
    magnitude = 10 ** len(str(int(raw))) / 10 if raw >= 1 else 1
    for step in (1, 2, 2.5, 5, 10):
        if raw <= step * magnitude:
            step *= magnitude
            break
    ticks, v = [], 0
    while v < top + step:
        ticks.append(v)
        v += step
    return ticks


def line_panel(x0, y0, w, h, title, xs, series, y_label, bands=()):
    """One plot: series is [(name, color, ys)], bands [(from_x, to_x, color,
    label)] shaded behind. Returns SVG elements."""
    out = [_text(x0, y0 - 8, f"{title} ({y_label})", 13)]
    left, bottom = x0 + 48, y0 + h - 22
    right, top = x0 + w - 8, y0 + 4
    x_max = max(xs) if xs else 1
    y_max = max((max(ys) for _, _, ys in series if ys), default=1) * 1.1
    yt = _ticks(y_max)
    y_top = yt[-1] or 1
    sx = lambda x: left + (right - left) * x / (x_max or 1)
    sy = lambda y: bottom - (bottom - top) * y / y_top
    for lo, hi, color, label in bands:
        out.append(f'<rect x="{sx(lo):.1f}" y="{top}" width="{max(0, sx(hi) - sx(lo)):.1f}" '
                   f'height="{bottom - top}" fill="{color}" opacity="0.25"/>')
        out.append(_text(sx(lo) + 3, top + 12, label, 10, color="#495057"))
    for v in yt:
        out.append(f'<line x1="{left}" x2="{right}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" stroke="#dee2e6"/>')
        out.append(_text(left - 4, sy(v) + 4, f"{v:g}", 10, "end"))
    for v in _ticks(x_max, 6):
        if v <= x_max:
            out.append(_text(sx(v), bottom + 14, f"{v:g}", 10, "middle"))
    out.append(_text(right, bottom + 14 + 12, "seconds", 10, "end"))
    lx = left + 8
    for name, color, ys in series:
        points = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys))
        out.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        out.append(f'<rect x="{lx}" y="{bottom - 14}" width="10" height="3" fill="{color}"/>')
        out.append(_text(lx + 14, bottom - 10, name, 10))
        lx += 14 + 7 * len(name) + 16
    return out


def svg(width, height, elements):
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">\n<rect width="100%" height="100%" fill="white"/>\n'
            + "\n".join(elements) + "\n</svg>\n")
