"""A small grayscale medical-style set written as DICOM, trained from scratch with 3 input channels and with 1.

    python benchmarks/medical_demo.py                # writes runs/medical-demo/data, trains 2 x 3 runs, prints a table
    python benchmarks/medical_demo.py --repeats 1    # one run each

The data: CT-like 96 x 96 slices in Hounsfield units (air -1000 outside a body disc of soft tissue, 40 HU, with
noise), three classes by what the body holds: ``nodule`` (a small round 60 HU blob inside a lung-like -800 HU region),
``clear`` (the lung region only) and ``bone`` (a 700 HU bar), stored as int16 with rescale slope 1 and intercept
-1024, a lung window (centre -600, width 1500) in the header, and a made-up patient name and ID (which no output
shows). The runs differ only in ``--in-channels`` (3 or 1), interleaved, each in a fresh process; the table gives the
median (min-max) over the repeats of the wall time of ``alexnet train`` (start to exit), its train img/s (the last
epoch's, from metrics.jsonl), its peak RSS and the final val top-1. Settings that the CPU would otherwise measure per
run are pinned (fp32, channels-last off) so the two runs do the same work apart from the channels.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CLASSES = ("nodule", "clear", "bone")


def write_set(root: Path, *, train: int, val: int, size: int = 96, seed: int = 0) -> None:
    """``root/{train,val}/<class>/<i>.dcm``: ``train`` and ``val`` slices per class."""
    from alexnet.data import dicom

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for split, n in (("train", train), ("val", val)):
        for name in CLASSES:
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                cy, cx = rng.uniform(0.45, 0.55, 2) * size
                hu = np.full((size, size), -1000.0)
                hu[np.hypot(yy - cy, xx - cx) < 0.42 * size] = 40.0  # the body
                ly, lx = cy + rng.uniform(-4, 4), cx - 0.15 * size
                lung = np.hypot((yy - ly) / 1.4, xx - lx) < 0.16 * size
                hu[lung] = -800.0
                if name == "nodule":
                    ny, nx = ly + rng.uniform(-5, 5), lx + rng.uniform(-3, 3)
                    hu[np.hypot(yy - ny, xx - nx) < rng.uniform(3, 5)] = 60.0
                elif name == "bone":
                    y0 = int(cy + rng.uniform(0.1, 0.25) * size)
                    hu[y0 : y0 + 4, int(cx - 0.25 * size) : int(cx + 0.25 * size)] = 700.0
                hu += rng.normal(0, 25, hu.shape)
                stored = np.clip(np.rint(hu + 1024), -32768, 32767).astype(np.int16)
                dicom.write(d / f"{i}.dcm", stored, slope=1, intercept=-1024, window=(-600, 1500),
                            pixel_spacing=(0.7, 0.7), patient_name="DEMO^PATIENT", patient_id="ID-0000")  # fmt: skip


def run_once(data: Path, out: Path, channels: int, flags: list[str]) -> dict:
    """One ``alexnet train`` in a fresh process; its wall time, peak RSS (of that process alone), img/s, top-1."""
    cmd = [sys.executable, "-m", "alexnet", "train", str(data), "--out", str(out), "--overwrite",
           "--in-channels", str(channels), *flags]  # fmt: skip
    # a wrapper process whose only child is the run: RUSAGE_CHILDREN is then that run's peak RSS
    probe = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode); "
        "sys.stderr.write(r.stdout[-3000:] + r.stderr[-3000:] if r.returncode else '')"
    )
    res = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True)
    wall, rss_kib, rc = res.stdout.split()
    if int(rc) != 0:
        raise SystemExit(f"alexnet train --in-channels {channels} failed:\n{res.stderr}")
    epochs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [e for e in epochs if e.get("kind") == "epoch"]
    top1 = json.loads((out / "eval.json").read_text())["top1"]
    return {"wall_s": float(wall), "peak_rss_mib": int(rss_kib) / 1024, "img_s": epochs[-1].get("img_per_s"),
            "top1": top1}  # fmt: skip


def summary(values: list[float], fmt: str) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{med:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})" if len(values) > 1 else f"{med:{fmt}}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/medical-demo", help="folder for the data and the runs")
    ap.add_argument("--train", type=int, default=100, help="training slices per class")
    ap.add_argument("--val", type=int, default=20, help="val slices per class")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3, help="runs per channel count (interleaved)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    import torch

    out = Path(args.out)
    data = out / "data"
    if not (data / "train").is_dir():
        t = time.perf_counter()
        write_set(data, train=args.train, val=args.val)
        print(f"wrote {data}: {len(CLASSES)} classes x {args.train} train + {args.val} val DICOMs "
              f"in {time.perf_counter() - t:.1f} s")  # fmt: skip
    flags = ["--epochs", str(args.epochs), "--image-size", "64", "--batch-size", "32", "--device", "cpu",
             "--precision", "fp32", "--channels-last", "off", "--workers", "0", "--seed", "0"]  # fmt: skip
    results: dict[int, list[dict]] = {3: [], 1: []}
    for rep in range(args.repeats):
        for channels in (3, 1):
            r = run_once(data, out / f"run-{channels}ch", channels, flags)
            results[channels].append(r)
            print(f"repeat {rep + 1}, {channels} channel(s): {r['wall_s']:.1f} s, {r['img_s']} img/s, "
                  f"peak RSS {r['peak_rss_mib']:.0f} MiB, top-1 {r['top1']:.1%}", flush=True)  # fmt: skip
    print(f"\n{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}; median (min-max) of {args.repeats} runs each, interleaved")  # fmt: skip
    print(f"flags: {' '.join(flags)}")
    print(f"{'channels':>8}  {'wall s':>18}  {'train img/s':>18}  {'peak RSS MiB':>18}  {'val top-1':>20}")
    for channels in (3, 1):
        rs = results[channels]
        print(f"{channels:>8}  {summary([r['wall_s'] for r in rs], '.1f'):>18}  "
              f"{summary([r['img_s'] for r in rs], '.0f'):>18}  {summary([r['peak_rss_mib'] for r in rs], '.0f'):>18}"
              f"  {summary([100 * r['top1'] for r in rs], '.1f'):>20}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"flags": flags, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
