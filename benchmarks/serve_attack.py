"""Attacks on ``alexnet serve`` while a legitimate client sends one image a second (issue 20, items 3-6 and 9).

    python benchmarks/serve_attack.py                          # every attack, 15 s each, about 3 minutes
    python benchmarks/serve_attack.py --seconds 5 --attacks idle,slow --json runs/serve_attack.json

The script starts ``alexnet serve MODEL`` (a random 64-px AlexNet, default limits) on a free 127.0.0.1 port (loopback
only), measures a quiet baseline, then runs each attack in turn from a child process, bounded in count and time:

- ``scans`` (item 3): 4 clients posting a 42 KB progressive JPEG whose last scan is repeated to 3,000 scans
  (5.6 s of decoding each before the fix);
- ``idle`` (item 4): up to 2,000 connections that send nothing, 100 that send half their headers and 20 that
  trickle a header byte every 0.5 s, reopened as the server closes them;
- ``slow`` (item 5): 40 uploads announcing 9.9 MB and sending a byte every 2 s, reopened when cut off;
- ``decoded`` (item 6): 2 clients posting 20 copies of a 20-MP gray PNG (45 KB each, 324 MB each to decode) per
  request, and 20 copies of a 64-MP one;
- ``malformed`` (item 9): 4 clients cycling through the client mistakes of item 9 (v2 shape [0,...], bool sizes,
  JSON nested 100,000 deep, an id nested 300 deep, topk of 4,301 digits, a 300-byte multipart boundary).

Meanwhile the parent sends one image a second on a new connection (``legit``), probes ``/v2/health/live`` every
0.2 s and samples the server's RSS every 0.2 s. Per attack: the legitimate requests' p50 / p99 latency and errors
(anything but 200), the worst health latency, the peak RSS, and whether the server recovered within 30 s after the
attack stopped (RSS within 10% + 50 MB of the baseline and a legitimate request answered within 2 s).

Targets (the issue): health always < 1 s; legitimate requests succeed throughout with p99 < 2 s; peak RSS < 2x the
idle RSS; back to baseline within 30 s of each attack.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import make_images, make_model, start_server, stop_server  # the script's neighbour

ATTACKS = ("scans", "idle", "slow", "decoded", "malformed")
MAX_SECONDS = 120


@dataclass
class Row:
    name: str
    seconds: float
    legit: int = 0
    legit_errors: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    health_worst_ms: float = 0.0
    health_errors: int = 0
    peak_rss_mb: float = 0.0
    recovered_s: float | None = None  # seconds after the attack until back to baseline; None: not within 30 s
    attack_requests: int = 0  # what the attacker sent (requests or connections)
    attack_statuses: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------------
# the attack inputs


def many_scans_jpeg(side: int, scans: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (side, side), (90, 120, 200)).save(out, "JPEG", progressive=True)
    data = out.getvalue()
    scan = data[data.rindex(b"\xff\xda") : -2]
    return data[:-2] + scan * (scans - data.count(b"\xff\xda")) + b"\xff\xd9"


def gray_png(side: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (side, side)).save(out, "PNG")
    return out.getvalue()


def multipart(parts: list[bytes], boundary: str = "b0undary") -> tuple[bytes, str]:
    body = b"".join(
        b'--%s\r\nContent-Disposition: form-data; name="file"; filename="%d.png"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n%s\r\n" % (boundary.encode(), i, p)
        for i, p in enumerate(parts)
    )
    return body + b"--%s--\r\n" % boundary.encode(), f"multipart/form-data; boundary={boundary}"


def malformed_requests() -> list[tuple[str, bytes, dict[str, str]]]:
    """``(path, body, headers)`` of item 9's client mistakes."""

    def v2(dt: str, shape: list, data: list, **extra) -> bytes:
        return json.dumps({"inputs": [{"name": "i", "datatype": dt, "shape": shape, "data": data}], **extra}).encode()

    one = v2("UINT8", [1, 1, 3], [0, 0, 0])
    infer = "/v2/models/model/infer"
    return [
        (infer, v2("UINT8", [0, 64, 64, 3], []), {}),
        (infer, v2("BYTES", [0], []), {}),
        (infer, v2("UINT8", [True, True, 3], [0, 0, 0]), {}),
        (infer, v2("UINT8", [1, 1, 3], [0, 0, 0], outputs=[{"name": "probabilities", "parameters": "x"}]), {}),
        (infer, b"[" * 100_000 + b"]" * 100_000, {}),
        (infer, one[:-1] + b', "id": ' + b"[" * 300 + b"]" * 300 + b"}", {}),
        ("/predict?topk=" + "9" * 4_301, b"x", {}),
        ("/predict", b"--" + b"a" * 300, {"content-type": "multipart/form-data; boundary=" + "a" * 300}),
    ]


# ----------------------------------------------------------------------------------------------------------------
# the attacks (each in a child process, bounded in time and count)


def _post_loop(url: str, seconds: float, clients: int, requests, out: multiprocessing.Queue) -> None:
    """``clients`` threads posting ``requests`` (path, body, headers) in turn until ``seconds`` have passed."""
    import httpx

    end = time.monotonic() + seconds
    statuses: dict[str, int] = {}
    lock = threading.Lock()

    def client(k: int) -> None:
        with httpx.Client(timeout=60) as http:
            i = k
            while time.monotonic() < end:
                path, body, headers = requests[i % len(requests)]
                i += 1
                try:
                    status = str(http.post(url + path, content=body, headers=headers).status_code)
                except httpx.HTTPError as e:
                    status = type(e).__name__
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(statuses)


def _connections(url: str, seconds: float, out: multiprocessing.Queue, *, idle: int, half: int, trickle: int) -> None:
    """Hold ``idle`` silent connections, ``half`` with half-sent headers, ``trickle`` sending a header byte every 0.5
    s; reopen what the server closes; for ``seconds``."""
    import select

    host, port = url.removeprefix("http://").rsplit(":", 1)
    address = (host, int(port))
    kinds = ["idle"] * idle + ["half"] * half + ["trickle"] * trickle
    socks: list[socket.socket | None] = [None] * len(kinds)
    opened = closed_by_server = 0
    end = time.monotonic() + seconds
    header = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 1000

    def open_one(i: int) -> None:
        nonlocal opened
        try:
            s = socket.create_connection(address, timeout=2)
        except OSError:
            return
        opened += 1
        if kinds[i] == "half":
            s.sendall(header[:40])
        s.setblocking(False)
        socks[i] = s

    while time.monotonic() < end:
        for i, s in enumerate(socks):
            if time.monotonic() >= end:
                break
            if s is None:
                open_one(i)
        poll = select.poll()  # not select(): descriptors above 1023
        for s in socks:
            if s is not None:
                poll.register(s, select.POLLIN)
        readable = {fd for fd, _ in poll.poll(0)}  # closed by the server (or answered: half-sent headers never are)
        for i, s in enumerate(socks):
            if s is None:
                continue
            gone = s.fileno() in readable
            if not gone and kinds[i] == "trickle":
                try:
                    s.send(b"a")
                except OSError:
                    gone = True
            if gone:
                closed_by_server += 1
                s.close()
                socks[i] = None
        time.sleep(0.5)
    for s in socks:
        if s is not None:
            s.close()
    out.put({"opened": opened, "closed by the server": closed_by_server})


def _slow_uploads(url: str, seconds: float, out: multiprocessing.Queue, *, clients: int) -> None:
    """``clients`` uploads announcing 9.9 MB and sending a byte every 2 s, reopened when answered or cut off."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    address = (host, int(port))
    socks: list[socket.socket | None] = [None] * clients
    answers: dict[str, int] = {}
    end = time.monotonic() + seconds
    opened = 0
    while time.monotonic() < end:
        for i in range(clients):
            s = socks[i]
            if s is None:
                try:
                    s = socket.create_connection(address, timeout=2)
                    s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 10380902\r\n\r\nx")
                    s.setblocking(False)
                    socks[i], opened = s, opened + 1
                except OSError:
                    continue
                continue
            try:
                s.send(b"x")
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1 ") else "closed"
            answers[status] = answers.get(status, 0) + 1
            s.close()
            socks[i] = None
        time.sleep(2)
    for s in socks:
        if s is not None:
            s.close()
    out.put({"opened": opened, **answers})


def run_attack(name: str, url: str, seconds: float, out: multiprocessing.Queue) -> None:
    if name == "scans":
        attack = many_scans_jpeg(1000, 3000)
        _post_loop(url, seconds, 4, [("/predict", attack, {})], out)
    elif name == "idle":
        _connections(url, seconds, out, idle=2000, half=100, trickle=20)
    elif name == "slow":
        _slow_uploads(url, seconds, out, clients=40)
    elif name == "decoded":
        requests = []
        for side in (4500, 8000):
            body, content_type = multipart([gray_png(side)] * 20)
            requests.append(("/predict", body, {"content-type": content_type}))
        _post_loop(url, seconds, 2, requests, out)
    elif name == "malformed":
        _post_loop(url, seconds, 4, malformed_requests(), out)
    else:
        raise ValueError(name)


# ----------------------------------------------------------------------------------------------------------------
# the watchers: a legitimate client, the health probe, the server's RSS


class Watch:
    """Threads that send one image a second, probe health every 0.2 s and sample RSS every 0.2 s, into ``samples``."""

    def __init__(self, url: str, pid: int, image: bytes) -> None:
        self.url, self.pid, self.image = url, pid, image
        self.legit: list[tuple[float, float, str]] = []  # (time, seconds, status)
        self.health: list[tuple[float, float, str]] = []
        self.rss: list[tuple[float, float]] = []  # (time, MB)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._legit, self._health, self._rss)]

    def __enter__(self) -> Watch:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _timed(self, do) -> tuple[float, float, str]:
        import httpx

        start = time.monotonic()
        try:
            status = str(do(httpx).status_code)
        except httpx.HTTPError as e:
            status = type(e).__name__
        return start, time.monotonic() - start, status

    def _legit(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            self.legit.append(
                self._timed(lambda httpx: httpx.post(self.url + "/predict", content=self.image, timeout=30))
            )
            self._stop.wait(max(0.0, 1 - (time.monotonic() - start)))

    def _health(self) -> None:
        while not self._stop.is_set():
            self.health.append(self._timed(lambda httpx: httpx.get(self.url + "/v2/health/live", timeout=10)))
            self._stop.wait(0.2)

    def _rss(self) -> None:
        while not self._stop.is_set():
            self.rss.append((time.monotonic(), rss_mb(self.pid)))
            self._stop.wait(0.2)


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def summarize(name: str, watch: Watch, start: float, end: float) -> Row:
    legit = [(s, st) for t, s, st in watch.legit if start <= t < end]
    ok = sorted(s for s, st in legit if st == "200")
    health = [(s, st) for t, s, st in watch.health if start <= t < end]
    row = Row(name, round(end - start, 1), legit=len(legit))
    row.legit_errors = sum(st != "200" for _, st in legit)
    row.examples = sorted({st for _, st in legit if st != "200"})
    if ok:
        row.p50_ms = 1000 * statistics.median(ok)
        row.p99_ms = 1000 * ok[min(len(ok) - 1, round(0.99 * (len(ok) - 1)))]
    row.health_worst_ms = 1000 * max((s for s, _ in health), default=0.0)
    row.health_errors = sum(st != "200" for _, st in health)
    row.peak_rss_mb = max((mb for t, mb in watch.rss if start <= t < end), default=0.0)
    return row


def wait_recovered(watch: Watch, baseline_rss: float, since: float, limit_s: float = 30) -> float | None:
    """Seconds after ``since`` until RSS is back near the baseline and a legitimate request took under 2 s."""
    while time.monotonic() - since < limit_s:
        time.sleep(0.5)
        rss_ok = watch.rss and watch.rss[-1][1] <= baseline_rss * 1.1 + 50
        recent = [(s, st) for t, s, st in watch.legit if t >= since]
        if rss_ok and recent and recent[-1][1] == "200" and recent[-1][0] < 2:
            return round(time.monotonic() - since, 1)
    return None


# ----------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="per attack (at most 120)")
    ap.add_argument("--baseline-s", type=float, default=8.0, help="the quiet run before the attacks")
    ap.add_argument("--attacks", default=",".join(ATTACKS), help=f"comma-separated, from {', '.join(ATTACKS)}")
    ap.add_argument("--flags", default="", help="extra alexnet serve flags, e.g. '--decode-threads 2'")
    ap.add_argument("--json", type=Path, help="write the rows and settings here")
    args = ap.parse_args(argv)
    attacks = [a for a in args.attacks.split(",") if a]
    if not set(attacks) <= set(ATTACKS) or not 0 < args.seconds <= MAX_SECONDS:
        ap.error(f"--attacks from {', '.join(ATTACKS)}; --seconds over 0 and at most {MAX_SECONDS}")

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model.pt"
        make_model(model, 64, 10)
        image = make_images(1, 64)[0][1]
        proc, url = start_server(model, args.flags.split(), Path(tmp) / "server.log")
        rows = []
        try:
            import httpx

            for _ in range(3):  # warm-up
                httpx.post(url + "/predict", content=image, timeout=60)
            idle_rss = rss_mb(proc.pid)
            start = time.monotonic()
            with Watch(url, proc.pid, image) as watch:
                time.sleep(args.baseline_s)
                rows.append(summarize("baseline", watch, start, time.monotonic()))
                baseline_rss = rows[0].peak_rss_mb
                for name in attacks:
                    out: multiprocessing.Queue = multiprocessing.Queue()
                    child = multiprocessing.Process(target=run_attack, args=(name, url, args.seconds, out))
                    start = time.monotonic()
                    child.start()
                    child.join(args.seconds + 120)
                    if child.is_alive():
                        child.kill()
                    end = time.monotonic()
                    row = summarize(name, watch, start, end)
                    row.attack_statuses = out.get() if not out.empty() else {}
                    row.attack_requests = sum(v for k, v in row.attack_statuses.items() if k != "closed by the server")
                    row.recovered_s = wait_recovered(watch, baseline_rss, end)
                    rows.append(row)
                    print(f"{name}: done", file=sys.stderr)
            log_tail = (Path(tmp) / "server.log").read_text()[-2000:]
            log_bytes = (Path(tmp) / "server.log").stat().st_size
        finally:
            stop_server(proc)
    settings = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "seconds_per_attack": args.seconds,
        "server_flags": args.flags or "defaults",
        "idle_rss_mb": round(idle_rss),
        "server_log_bytes": log_bytes,
    }
    print_table(rows, settings)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": settings, "rows": [asdict(r) for r in rows],
                                         "server_log_tail": log_tail}, indent=1))  # fmt: skip
    return 0


def print_table(rows: list[Row], settings: dict) -> None:
    print(", ".join(f"{k} {v}" for k, v in settings.items()))
    head = (f"{'attack':10} {'secs':>5} {'legit':>5} {'errors':>6} {'p50 ms':>7} {'p99 ms':>7} {'health max ms':>13} "
            f"{'RSS MB':>7} {'recovered':>9}  attacker")  # fmt: skip
    print(head)
    print("-" * len(head))
    for r in rows:
        recovered = "-" if r.name == "baseline" else ("no" if r.recovered_s is None else f"{r.recovered_s:g} s")
        attacker = ", ".join(f"{k}: {v}" for k, v in r.attack_statuses.items())
        print(f"{r.name:10} {r.seconds:5.1f} {r.legit:5d} {r.legit_errors:6d} {r.p50_ms:7.0f} {r.p99_ms:7.0f} "
              f"{r.health_worst_ms:13.0f} {r.peak_rss_mb:7.0f} {recovered:>9}  {attacker}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
