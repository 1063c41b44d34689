"""``train --balance`` on an imbalanced stand-in: macro-F1 and the lowest per-class recall, off against on.

    python benchmarks/balance.py OUT [--repeats 3] [--epochs 8] [--classes 4] [--per-class 150] [--keep 0.15]

The stand-in is the built-in synthetic generator (``--classes`` classes, 64 px, ``--per-class`` training images per
class, 50 validation images per class), with the training images of the second half of the classes cut to ``--keep``
(the validation split stays balanced, so macro-F1 and per-class recall on it say how the small classes fare).
Each repeat trains once with ``--balance`` off and once on, same seed, interleaved, for ``--epochs`` epochs,
everything else the defaults.
Prints a table of medians (min-max) and writes ``OUT/balance.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import time
from pathlib import Path

import torch

from alexnet.config import TrainConfig
from alexnet.data.synthetic import make_synthetic
from alexnet.training import train


def stand_in(out: Path, classes: int, per_class: int, keep: float) -> Path:
    """The synthetic set with the second half of train's classes cut to ``keep`` of their images (the first ones)."""
    if (out / "train").is_dir():
        return out
    make_synthetic(out, classes=classes, per_class=per_class, val_per_class=50, size=64, seed=0, show_progress=False)
    for folder in sorted((out / "train").iterdir())[classes // 2 :]:
        files = sorted(folder.iterdir())
        for f in files[round(keep * len(files)) :]:
            f.unlink()
    return out


def summary(values: list[float]) -> str:
    return f"{100 * statistics.median(values):.1f}% ({100 * min(values):.1f}-{100 * max(values):.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--classes", type=int, default=4, help="classes (2 to 10); the second half are cut")
    ap.add_argument("--per-class", type=int, default=150, help="training images of each class before the cut")
    ap.add_argument("--keep", type=float, default=0.15, help="fraction of the small classes' training images kept")
    args = ap.parse_args()
    out = Path(args.out)
    data = stand_in(out / "data", args.classes, args.per_class, args.keep)
    rows = []
    for seed in range(args.repeats):
        for balance in (False, True):
            run = out / f"run-{'on' if balance else 'off'}-{seed}"
            t0 = time.perf_counter()
            cfg = TrainConfig(data=str(data), epochs=args.epochs, seed=seed, balance=balance, out=str(run),
                              overwrite=True, device="cpu")  # fmt: skip
            train(cfg)
            report = json.loads((run / "eval.json").read_text())
            small = report["classes"][args.classes // 2 :]
            rows.append({"seed": seed, "balance": balance, "seconds": time.perf_counter() - t0,
                         "top1": report["top1"], "macro_f1": report["macro"]["f1"],
                         "min_recall": min(report["recall"].values()),
                         "small_recall": statistics.mean(report["recall"][c] for c in small)})  # fmt: skip
            shutil.rmtree(run / "checkpoints", ignore_errors=True)
            print(json.dumps(rows[-1]), flush=True)
    big, small_n = args.classes // 2, args.classes - args.classes // 2
    machine = (
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    lines = [
        f"imbalanced stand-in: {args.classes} synthetic classes, {args.per_class} train images each for {big} of them "
        f"and {round(args.per_class * args.keep)} for the other {small_n}, 50 val each; {args.epochs} epochs; "
        f"n={args.repeats} seeds; {machine}",
        "",
        "| --balance | macro-F1 | lowest per-class recall | mean recall of the small classes | top-1 |",
        "|---|---|---|---|---|",
    ]
    for balance in (False, True):
        got = [r for r in rows if r["balance"] == balance]
        lines.append(f"| {'on' if balance else 'off'} | {summary([r['macro_f1'] for r in got])} | "
                     f"{summary([r['min_recall'] for r in got])} | {summary([r['small_recall'] for r in got])} | "
                     f"{summary([r['top1'] for r in got])} |")  # fmt: skip
    text = "\n".join(lines)
    print(text)
    (out / "balance.md").write_text(text + "\n")
    (out / "balance.json").write_text(json.dumps({"args": vars(args), "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
