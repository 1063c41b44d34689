"""Load test for ``alexnet serve``: N concurrent clients against servers this script starts, batching on vs off.

    python benchmarks/serve_load.py                       # 32 clients, 20 s a run: batched, batch1, faults
    python benchmarks/serve_load.py --repeats 3 --json runs/serve_load.json
    python benchmarks/serve_load.py --clients 2 --seconds 1 --runs batched   # a smoke test

Each run starts ``alexnet serve MODEL`` on a free 127.0.0.1 port (loopback only), waits for ``/v2/health/ready``,
asks for a reference answer per test image (one request at a time), warms up, then N clients (httpx, one asyncio
task and connection each) send one image per request, back to back, for ``--seconds``. It reports the good images
answered per second, p50 / p99 latency, errors (a good request not answered 200 with the reference's classes; a bad
one not answered 4xx), the largest probability difference from the reference (batches of other sizes round
differently in the last bits), and the server's peak RSS (``VmHWM`` from ``/proc``).

Runs:

- ``batched``: ``--max-batch 32 --max-wait-ms 5`` (the defaults);
- ``batch1``: ``--max-batch 1`` (one image per forward pass);
- ``faults``: as ``batched``, but every 4th request is bad, in turn: malformed bytes (415), a body over the upload
  limit (413, from its Content-Length: the client sends the headers only and reads the answer), a decompression bomb
  (a PNG header declaring 10000 x 10000 pixels, 422).

Targets (the issue): batched >= 3x the img/s of batch1 at 32 clients on a 2-core CPU at 64 px, p99 < 1 s, zero
errors; the fault mix loses no good request, answers every bad one 4xx, and peaks within 1.5x the RSS of the clean
batched run. The clients run on the same CPU as the server: they take part of its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

RUNS = {
    "batched": ["--max-batch", "32", "--max-wait-ms", "5"],
    "batch1": ["--max-batch", "1"],
    "faults": ["--max-batch", "32", "--max-wait-ms", "5"],
}
MAX_CLIENTS, MAX_SECONDS = 256, 600
MAX_UPLOAD_BYTES = 10 << 20  # the server's default --max-upload-mb 10


@dataclass
class Result:
    name: str
    flags: list[str]
    clients: int
    seconds: float
    good: int = 0  # good requests answered correctly
    bad: int = 0  # bad requests answered 4xx
    errors: int = 0
    img_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_prob_diff: float = 0.0  # vs the reference answer of the same image sent alone
    mean_batch: float = 0.0  # images per forward pass
    model_busy: float = 0.0  # fraction of the time the server spent in forward passes
    server_cpu_ms_per_img: float = 0.0  # the server process's CPU time per good image answered
    load_avg: float = 0.0  # the machine's 1-minute load average at the end (other jobs share the CPU)
    peak_rss_mb: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    error_examples: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------------
# inputs


def make_model(path: Path, image_size: int, num_classes: int) -> None:
    """A torchvision-layout AlexNet for ``image_size`` crops, random (He) weights: speed does not depend on them."""
    import torch

    from alexnet.checkpoint import save_payload
    from alexnet.model import create_model
    from alexnet.preprocess import Preprocess

    torch.manual_seed(0)
    model = create_model("alexnet", num_classes=num_classes, init="kaiming")
    classes = [f"class{i}" for i in range(num_classes)]
    save_payload(
        {
            "arch": "alexnet",
            "num_classes": num_classes,
            "model": model.state_dict(),
            "classes": classes,
            "preprocess": Preprocess.for_crop(image_size).to_dict(),
            "config": {},
        },
        path,
    )


def make_images(n: int, image_size: int) -> list[tuple[str, bytes]]:
    """``n`` JPEGs and PNGs of random shapes, about ``image_size * 256 / 224`` px on a side, in memory."""
    import io
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(0)
    out = []
    for i in range(n):
        w, h = (round(image_size * 256 / 224 * rng.uniform(1.0, 1.4)) for _ in range(2))
        img = Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(img)
        for _ in range(4):
            x0, y0 = rng.randrange(w), rng.randrange(h)
            box = (x0, y0, x0 + rng.randrange(8, w), y0 + rng.randrange(8, h))
            draw.ellipse(box, fill=tuple(rng.randrange(256) for _ in range(3)))
        buf = io.BytesIO()
        fmt = "JPEG" if i % 2 == 0 else "PNG"
        img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        out.append((f"{i}.{fmt.lower()}", buf.getvalue()))
    return out


def png_header(width: int, height: int) -> bytes:
    """A PNG header declaring ``width`` x ``height`` pixels and no pixel data: a decompression bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


# ----------------------------------------------------------------------------------------------------------------
# the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, flags: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "alexnet", "serve", str(model), "--host", "127.0.0.1", "--port", str(port), *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server did not become ready within 300 s:\n{log.read_text()[-3000:]}")


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (``VmHWM``), MB; 0 where /proc has no such line."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/PID/stat``), s; 0 where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def server_counters(metrics_text: str) -> dict[str, float]:
    """Forward-pass seconds, forward passes and images batched so far, from the server's /metrics."""
    wanted = {
        "alexnet_forward_duration_seconds_sum": "forward_s",
        "alexnet_batch_size_images_count": "batches",
        "alexnet_batch_size_images_sum": "images",
    }
    out = dict.fromkeys(wanted.values(), 0.0)
    for line in metrics_text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            out[wanted[name]] = float(value)
    return out


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ----------------------------------------------------------------------------------------------------------------
# the clients


async def oversized(url: str, max_upload_bytes: int) -> int:
    """Announce a body one byte over the limit, send none of it, and return the status of the answer."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: %d\r\n\r\n" % (max_upload_bytes + 1)
        )
        await writer.drain()
        status_line = await reader.readline()
        return int(status_line.split()[1])
    finally:
        writer.close()


async def load(url: str, images, references, *, clients: int, seconds: float, warmup_s: float, faults: bool, pid: int):
    """Run ``clients`` loops for ``warmup_s`` (not counted) then ``seconds``; returns counts and latencies, and the
    server's CPU time and counters at the start and the end of the counted window."""
    import httpx

    bad_bodies = [b"\x00garbage" * 256, None, png_header(10_000, 10_000)]  # None: the oversized announcement
    latencies: list[float] = []
    stats = {"good": 0, "bad": 0, "errors": 0, "max_diff": 0.0, "statuses": {}, "examples": []}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        start = time.perf_counter()
        counting_from, end = start + warmup_s, start + warmup_s + seconds

        async def one_client(k: int) -> None:
            i = k
            while (now := time.perf_counter()) < end:
                counted = now >= counting_from
                i += 1
                bad = faults and i % 4 == 0
                t0 = time.perf_counter()
                try:
                    if bad:
                        body = bad_bodies[(i // 4) % 3]
                        status = await (oversized(url, MAX_UPLOAD_BYTES) if body is None else _post(http, body))
                        answer = None
                    else:
                        name, data = images[i % len(images)]
                        r = await http.post("/predict", files=[("file", (name, data))])
                        status, answer = r.status_code, r.json()
                except Exception as e:  # a dropped connection, a timeout: an error
                    status, answer = 0, {"error": f"{type(e).__name__}: {e}"}
                latency = time.perf_counter() - t0
                if not counted:
                    continue
                stats["statuses"][str(status)] = stats["statuses"].get(str(status), 0) + 1
                if bad:
                    ok = 400 <= status < 500
                    stats["bad" if ok else "errors"] += 1
                    if not ok:
                        stats["examples"].append(f"bad request answered {status}")
                    continue
                diff = _compare(answer, references[i % len(images)]) if status == 200 else None
                if diff is None:
                    stats["errors"] += 1
                    stats["examples"].append(f"{status}: {json.dumps(answer)[:200]}")
                    continue
                stats["good"] += 1
                stats["max_diff"] = max(stats["max_diff"], diff)
                latencies.append(latency)

        async def snapshot(at: float) -> dict[str, float]:
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            async with httpx.AsyncClient(base_url=url, timeout=60) as own:  # not queued behind the clients' pool
                counters = server_counters((await own.get("/metrics")).text)
            return {**counters, "cpu_s": cpu_seconds(pid), "t": time.perf_counter()}

        *_, first, last = await asyncio.gather(
            *(one_client(k) for k in range(clients)), snapshot(counting_from), snapshot(end)
        )
    stats["window"] = {k: last[k] - first[k] for k in first}
    return stats, latencies


async def _post(http, body: bytes) -> int:
    return (await http.post("/predict", files=[("file", ("bad.jpg", body))])).status_code


def _compare(answer: dict, reference: list[dict]) -> float | None:
    """The largest probability difference from the reference, or None if the classes differ in any way."""
    try:
        top = answer["results"][0]["top"]
    except (KeyError, IndexError, TypeError):
        return None
    if [t["class"] for t in top] != [t["class"] for t in reference]:
        return None
    return max(abs(a["probability"] - b["probability"]) for a, b in zip(top, reference))


def run_one(name: str, model: Path, images, args, tmp: Path) -> Result:
    import httpx

    flags = RUNS[name] + ([] if args.threads is None else ["--threads", str(args.threads)])
    proc, url = start_server(model, flags, tmp / f"{name}.log")
    try:
        references = []
        for img_name, data in images:  # each image alone: the batch Predictor.predict would run
            r = httpx.post(f"{url}/predict", files=[("file", (img_name, data))], timeout=60)
            r.raise_for_status()
            references.append(r.json()["results"][0]["top"])
        stats, latencies = asyncio.run(
            load(
                url,
                images,
                references,
                clients=args.clients,
                seconds=args.seconds,
                warmup_s=args.warmup_s,
                faults=name == "faults",
                pid=proc.pid,
            )
        )
        rss = peak_rss_mb(proc.pid)
    finally:
        stop_server(proc)
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) >= 2 else [0.0] * 99
    w = stats["window"]
    return Result(
        name=name,
        flags=flags,
        clients=args.clients,
        seconds=args.seconds,
        good=stats["good"],
        bad=stats["bad"],
        errors=stats["errors"],
        img_per_s=stats["good"] / args.seconds,
        p50_ms=q[49] * 1000,
        p99_ms=q[98] * 1000,
        max_prob_diff=stats["max_diff"],
        mean_batch=w["images"] / w["batches"] if w["batches"] else 0.0,
        model_busy=w["forward_s"] / w["t"] if w["t"] > 0 else 0.0,
        server_cpu_ms_per_img=1000 * w["cpu_s"] / stats["good"] if stats["good"] else 0.0,
        load_avg=os.getloadavg()[0],
        peak_rss_mb=rss,
        statuses=stats["statuses"],
        error_examples=stats["examples"][:5],
    )


# ----------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="model file (default: a random 64-px AlexNet, 10 classes)")
    p.add_argument("--image-size", type=int, default=64, help="crop of the generated model, px")
    p.add_argument("--clients", type=int, default=32, help=f"concurrent clients (at most {MAX_CLIENTS})")
    p.add_argument("--seconds", type=float, default=20.0, help=f"measured time per run (at most {MAX_SECONDS})")
    p.add_argument("--warmup-s", type=float, default=3.0, help="load before measuring, not counted")
    p.add_argument("--images", type=int, default=16, help="distinct test images")
    p.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS), help="which runs, in order")
    p.add_argument("--repeats", type=int, default=1, help="repeat the runs, interleaved")
    p.add_argument("--threads", type=int, default=None, help="the servers' --threads (default: torch's)")
    p.add_argument("--json", type=Path, default=None, help="write the results here too")
    args = p.parse_args(argv)
    if not 1 <= args.clients <= MAX_CLIENTS or not 0 < args.seconds <= MAX_SECONDS or args.repeats < 1:
        p.error(f"--clients 1..{MAX_CLIENTS}, --seconds up to {MAX_SECONDS}, --repeats >= 1")

    import torch

    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp_dir:
        tmp = Path(tmp_dir)
        model = args.model
        if model is None:
            model = tmp / f"alexnet{args.image_size}.pt"
            make_model(model, args.image_size, num_classes=10)
        images = make_images(args.images, args.image_size)
        results = [run_one(name, model, images, args, tmp) for _ in range(args.repeats) for name in args.runs]

    sizes = f"{round(args.image_size * 256 / 224)}-{round(args.image_size * 1.6)} px"
    settings = (
        f"{args.clients} clients, {args.seconds:g} s per run after {args.warmup_s:g} s warm-up, server --threads "
        f"{args.threads or 'default'}, {args.images} images of ~{sizes}, "
        f"model {args.model or f'random AlexNet, {args.image_size}-px crops, 10 classes'}"
    )
    print(
        f"device: cpu ({os.cpu_count()} cores, {platform.machine()}), torch {torch.__version__}, "
        f"python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    print(settings)
    for name in args.runs:
        print(f"{name}: alexnet serve MODEL {' '.join(RUNS[name])}")
    header = f"{'run':<8} {'img/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'good':>6} {'bad 4xx':>7} {'errors':>6} "
    header += f"{'max |dp|':>8} {'RSS MB':>7} {'batch':>6} {'busy':>5} {'cpu ms/img':>10} {'load':>5}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.name:<8} {r.img_per_s:>7.1f} {r.p50_ms:>7.0f} {r.p99_ms:>7.0f} {r.good:>6} {r.bad:>7} {r.errors:>6} "
            f"{r.max_prob_diff:>8.0e} {r.peak_rss_mb:>7.0f} {r.mean_batch:>6.1f} {r.model_busy:>5.0%} "
            f"{r.server_cpu_ms_per_img:>10.1f} {r.load_avg:>5.1f}"
        )
        for example in r.error_examples:
            print(f"         error: {example}")
    summary = summarize(results)
    for line in summary["lines"]:
        print(line)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        info = {"settings": settings, "torch": torch.__version__, "cpus": os.cpu_count(), "date": time.strftime("%F")}
        payload = {**info, "runs": [asdict(r) for r in results], "summary": summary}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


def summarize(results: list[Result]) -> dict:
    """Medians per run name and the ratios the targets are about."""
    by = {}
    for r in results:
        by.setdefault(r.name, []).append(r)
    med = {
        n: {k: statistics.median(getattr(r, k) for r in rs) for k in ("img_per_s", "p99_ms", "peak_rss_mb")}
        for n, rs in by.items()
    }
    lines, out = [], {"medians": med}
    if "batched" in med and "batch1" in med and med["batch1"]["img_per_s"] > 0:
        out["speedup"] = med["batched"]["img_per_s"] / med["batch1"]["img_per_s"]
        pairs = [a.img_per_s / b.img_per_s for a, b in zip(by["batched"], by["batch1"]) if b.img_per_s > 0]
        out["speedup_per_repeat"] = pairs
        each = ", ".join(f"{x:.2f}x" for x in pairs)
        lines.append(f"batched / batch1 img/s: {out['speedup']:.2f}x of the medians; per repeat {each} (target >= 3x)")
    if "batched" in med:
        lines.append(f"batched p99: {med['batched']['p99_ms']:.0f} ms (target < 1000 ms)")
    if "faults" in med and "batched" in med and med["batched"]["peak_rss_mb"] > 0:
        out["rss_ratio"] = med["faults"]["peak_rss_mb"] / med["batched"]["peak_rss_mb"]
        lines.append(f"faults / batched peak RSS: {out['rss_ratio']:.2f}x (target <= 1.5x)")
    lines.append(f"errors: {sum(r.errors for r in results)} (target 0)")
    out["lines"] = lines
    return out


if __name__ == "__main__":
    sys.exit(main())
