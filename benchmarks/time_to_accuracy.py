"""Accuracy against wall time: `alexnet train DATA --time-budget B` as a new user runs it, timed from outside.

    python benchmarks/time_to_accuracy.py builtin digits standin --budget 2m [--repeats 2] [--load 1] [-- extra flags]

DATA: a data folder, ``builtin`` (the built-in synthetic set), ``digits`` (scikit-learn's 1,797 real 8x8
handwritten digits, written once as ``train/`` (80%) and ``test/`` (20%, stratified, seed 0) PNG folders) or
``standin`` (``benchmarks/standin.py``: 20,000 train and 2,000 test 32-px images of ten object classes on crops of
real photographs, a stand-in for small real photos; written once under ``OUT``). With a ``test/`` folder and no
``val/``, the trainer evaluates ``test/``, so the final top-1 is the test split's. Each run
is a subprocess (``python -m alexnet train DATA --time-budget B --out RUN``); this script polls ``metrics.jsonl``
and notes the wall time at which each epoch's validation appears, so the curve's x axis is seconds since launch,
set-up included, measured independently of the trainer's own clock. ``--load N`` starts N busy processes (each a
Python loop of float math on one core) ``--load-after`` seconds into each run, and stops them when it ends: a load
that arrives after the budget was planned. The deadline error is the wall time past the budget (negative: early).
Writes ``OUT/time_to_accuracy.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def write_digits(out: Path) -> Path:
    """scikit-learn's digits as ``out/train/<digit>/*.png`` and ``out/test/<digit>/*.png`` (8x8 grayscale)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    if (out / "train").is_dir() and (out / "test").is_dir():
        return out
    digits = load_digits()
    rng = np.random.default_rng(0)
    tmp = out.with_name(out.name + ".tmp")
    for label in range(10):
        idx = rng.permutation(np.flatnonzero(digits.target == label))
        n_test = round(0.2 * len(idx))
        for split, part in (("test", idx[:n_test]), ("train", idx[n_test:])):
            folder = tmp / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for i in part:
                pixels = np.round(digits.images[i] * 255 / 16).astype(np.uint8)  # 0..16 -> 0..255
                Image.fromarray(pixels, mode="L").save(folder / f"{i:04d}.png")
    os.replace(tmp, out)
    return out


BUSY = "import math\nx = 0.0\nwhile True:\n    x = math.sin(x + 1.0)\n"  # one core, busy until killed


def run_once(data: str | None, budget: str, run_dir: Path, extra: list[str], load: int = 0,
             load_after: float = 20.0) -> dict:  # fmt: skip
    """One training run in a subprocess; the epoch records with the wall time each appeared. ``load`` busy processes
    start ``load_after`` s into the run and are stopped when it ends."""
    cmd = [sys.executable, "-m", "alexnet", "train", *([data] if data else []), "--time-budget", budget,
           "--out", str(run_dir), "--overwrite", *extra]  # fmt: skip
    metrics = run_dir / "metrics.jsonl"
    seen, curve = 0, []
    log = (run_dir.parent / f"{run_dir.name}.log").open("w")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    busy: list[subprocess.Popen] = []
    while True:
        done = proc.poll() is not None
        if load and not busy and not done and time.perf_counter() - t0 >= load_after:
            busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(load)]
        if metrics.exists():
            lines = metrics.read_text().splitlines()
            for line in lines[seen:]:
                record = json.loads(line)
                if record.get("kind", "epoch") == "epoch" and record.get("val_top1") is not None:
                    curve.append({"wall_s": round(time.perf_counter() - t0, 2), "epoch": record["epoch"],
                                  "step": record["step"], "val_top1": record["val_top1"]})  # fmt: skip
            seen = len(lines)
        if done:
            break
        time.sleep(0.25)
    wall = time.perf_counter() - t0
    for b in busy:
        b.kill()
        b.wait()
    log.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}); see {log.name}")
    final = json.loads((run_dir / "eval.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    chosen = {k: config[k] for k in ("image_size", "batch_size", "lr", "warmup_epochs", "precision", "channels_last")}
    from alexnet.config import parse_duration

    return {"wall_s": round(wall, 1), "final_top1": final["top1"], "curve": curve, "settings": chosen,
            "steps": curve[-1]["step"] if curve else None, "log": log.name, "load": load,
            "deadline_error_s": round(wall - parse_duration(budget), 1)}  # fmt: skip


def standin_module():
    """``benchmarks/standin.py`` (this folder is not a package): ``write_standin``, ``VERSION``."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import standin

    return standin


def data_path(name: str, out: Path) -> str | None:
    """The path ``alexnet train`` gets for a DATA argument (None: the built-in set); generated sets are cached."""
    if name == "builtin":
        return None
    if name == "digits":
        return str(write_digits(out / "digits-data"))
    if name == "standin":  # the default set: 2,000 train and 200 test images per class, 32 px, seed 0
        standin = standin_module()
        return str(standin.write_standin(out / f"standin-v{standin.VERSION}-data"))
    return name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="+", help="data folders, 'builtin', 'digits' or 'standin'")
    p.add_argument("--budget", default="5m", help="--time-budget of each run (default 5m)")
    p.add_argument("--repeats", type=int, default=1, help="runs per data set (default 1)")
    p.add_argument("--out", default="runs/time_to_accuracy", help="folder for runs and results")
    p.add_argument("--load", type=int, default=0, help="busy processes started mid-run (default 0: a quiet machine)")
    p.add_argument("--load-after", type=float, default=20.0, help="seconds into each run the load starts (default 20)")
    args, extra = p.parse_known_args()
    extra = [a for a in extra if a != "--"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    results = {"budget": args.budget, "device": f"cpu: {platform.processor() or platform.machine()}, "
               f"{os.cpu_count()} cores" if not torch.cuda.is_available() else torch.cuda.get_device_name(),
               "torch": torch.__version__, "extra_flags": extra, "date": time.strftime("%Y-%m-%d %H:%M"),
               "load_before": os.getloadavg()[0], "load": args.load, "load_after_s": args.load_after,
               "runs": {}}  # fmt: skip
    for name in args.data:
        data = data_path(name, out)
        label = Path(name).name
        for r in range(args.repeats):
            print(f"{label}, run {r + 1}/{args.repeats}: alexnet train {data or ''} --time-budget {args.budget}")
            res = run_once(data, args.budget, out / f"{label}-{r}", extra, args.load, args.load_after)
            print(
                f"  {res['final_top1']:.2%} top-1 after {res['wall_s']:.0f} s wall, deadline error "
                f"{res['deadline_error_s']:+.1f} s ({res['settings']})"
            )
            results["runs"].setdefault(label, []).append(res)
    results["load_after"] = os.getloadavg()[0]
    (out / "time_to_accuracy.json").write_text(json.dumps(results, indent=1) + "\n")
    table = [f"budget {args.budget}; {results['device']}; torch {results['torch']}; load average "
             f"{results['load_before']:.1f} before, {results['load_after']:.1f} after; extra flags: "
             f"{' '.join(extra) or 'none'}; busy processes from {args.load_after:g} s: {args.load}", "",
             "| data | runs | final top-1 (median, min-max) | wall s (median, max) | deadline error s (median, "
             "min-max) | steps | crop | batch | lr | precision |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for label, runs in results["runs"].items():
        top1 = [r["final_top1"] for r in runs]
        wall = [r["wall_s"] for r in runs]
        late = [r["deadline_error_s"] for r in runs]
        s = runs[0]["settings"]
        table.append(f"| {label} | {len(runs)} | {statistics.median(top1):.1%} ({min(top1):.1%}-{max(top1):.1%}) | "
                     f"{statistics.median(wall):.0f} ({max(wall):.0f}) | {statistics.median(late):+.1f} "
                     f"({min(late):+.1f} to {max(late):+.1f}) | {runs[0]['steps']} | {s['image_size']} | "
                     f"{s['batch_size']} | {s['lr']:g} | {s['precision']}"
                     f"{' + CL' if s['channels_last'] else ''} |")  # fmt: skip
    (out / "time_to_accuracy.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, runs in results["runs"].items():
        for i, r in enumerate(runs):
            xs, ys = [c["wall_s"] for c in r["curve"]], [100 * c["val_top1"] for c in r["curve"]]
            ax.plot(xs, ys, marker="o", label=label if i == 0 else None, color=f"C{list(results['runs']).index(label)}")
    ax.set_xlabel("seconds since launch (set-up included)")
    ax.set_ylabel("val top-1 (%)")
    ax.set_title(f"alexnet train DATA --time-budget {args.budget}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "time_to_accuracy.png", dpi=120)


if __name__ == "__main__":
    main()
