"""Data efficiency: val top-1 against training images per class, from scratch and fine-tuned.

    pip install 'alexnet[digits]' && PYTHONPATH=src python benchmarks/data_efficiency.py [--steps 80] [--out DIR]

Nothing can be downloaded here, so the pretraining set is synthetic: the built-in shapes (10 classes, 3,000 images
of 64 px; ``alexnet.data.synthetic``), trained for ``--pretrain-epochs`` epochs. The transfer target is real:
scikit-learn's 1,797 handwritten 8x8 digits (``sklearn.datasets.load_digits``), written as PNG folders with a fixed
test set of 30 images per digit (300) as val, and the first N of each digit's other images (in a seeded order) as
train. Every run takes the same number of optimizer steps (``--steps``, batch 16, 64-px crops), so the only
difference between the two columns is where the weights start: He init, or the shapes run's weights under a new
head (``--pretrained RUN/checkpoints/last.pt``, with fine-tuning's lr choices: the body at a tenth, the head x10).
Writes ``OUT/data_efficiency.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

TEST_PER_CLASS = 30
BATCH = 16
COMMON = dict(batch_size=BATCH, image_size=64, workers=0, device="cpu", precision="fp32", channels_last=False,
              in_memory=True, compile=False, log_every=1000, seed=0)  # fmt: skip


def write_digits(out: Path, per_class: int | None) -> Path:
    """Digits as ``out/train/<digit>/`` (the first ``per_class`` of each digit's shuffled non-test images; None:
    all) and ``out/val/<digit>/`` (the same 30 per digit for every N)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    shutil.rmtree(out, ignore_errors=True)
    for label in range(10):
        idx = rng.permutation(np.flatnonzero(digits.target == label))
        test, rest = idx[:TEST_PER_CLASS], idx[TEST_PER_CLASS:]
        for split, part in (("val", test), ("train", rest[:per_class])):
            folder = out / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for i in part:
                pixels = np.round(digits.images[i] * 255 / 16).astype(np.uint8)  # 0..16 -> 0..255
                Image.fromarray(pixels, mode="L").save(folder / f"{i:04d}.png")
    return out


def run(data: Path | None, out: Path, log: Path, **flags) -> dict:
    """One in-process ``alexnet train`` run (its output into ``log``); its final val report and wall seconds."""
    from alexnet.config import resolve_config
    from alexnet.training import train

    cfg = resolve_config("fast", flags={"data": str(data) if data else None, "out": str(out), "overwrite": True,
                                        **COMMON, **flags})  # fmt: skip
    t0 = time.perf_counter()
    with log.open("w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(io.StringIO()):
        train(cfg)
    report = json.loads((out / "eval.json").read_text())
    return {"top1": report["top1"], "seconds": round(time.perf_counter() - t0, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per-class", nargs="+", default=["5", "20", "100", "all"], help="training images per digit")
    p.add_argument("--steps", type=int, default=80, help="optimizer steps of every transfer run")
    p.add_argument("--pretrain-epochs", type=int, default=3, help="epochs on the synthetic shapes")
    p.add_argument("--out", default="benchmarks/results", help="folder for the table, JSON, plot and runs")
    args = p.parse_args()
    import torch

    out = Path(args.out)
    work = out / "data_efficiency"
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"pretraining on the built-in synthetic shapes ({args.pretrain_epochs} epochs)...", flush=True)
    pre = run(None, work / "pretrain", work / "pretrain.log", epochs=args.pretrain_epochs, batch_size=32)
    print(f"  shapes val top-1 {pre['top1']:.1%} in {pre['seconds']:.0f} s", flush=True)
    weights = work / "pretrain" / "checkpoints" / "last.pt"
    rows = []
    for n in args.per_class:
        per_class = None if n == "all" else int(n)
        data = write_digits(work / f"digits-{n}", per_class)
        images = sum(1 for _ in (data / "train").rglob("*.png"))
        steps_per_epoch = max(1, images // BATCH)
        epochs = max(1, round(args.steps / steps_per_epoch))
        row = {"per_class": n, "train_images": images, "epochs": epochs, "steps": epochs * steps_per_epoch}
        for mode, extra in (("scratch", {}), ("fine-tuned", {"init_weights": str(weights)})):
            r = run(data, work / f"{mode}-{n}", work / f"{mode}-{n}.log", epochs=epochs, **extra)
            row[mode], row[f"{mode}_seconds"] = r["top1"], r["seconds"]
        rows.append(row)
        print(f"  {n:>4} per digit ({images:,} images, {row['steps']} steps): scratch {row['scratch']:.1%}, "
              f"fine-tuned {row['fine-tuned']:.1%}", flush=True)  # fmt: skip
    result = {"pretrain": {"data": "built-in synthetic shapes (10 classes, 3,000 + 500 images, 64 px)", **pre},
              "target": f"scikit-learn digits, val {TEST_PER_CLASS} per digit", "rows": rows,
              "settings": {**COMMON, "steps": args.steps}, "torch": torch.__version__,
              "machine": f"{platform.machine()}, {torch.get_num_threads()} threads"}  # fmt: skip
    (out / "data_efficiency.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "| digits per class | train images | steps | from scratch | fine-tuned from shapes |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['per_class']} | {r['train_images']:,} | {r['steps']} | {r['scratch']:.1%} | "
                     f"{r['fine-tuned']:.1%} |")  # fmt: skip
    (out / "data_efficiency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no plot: pip install 'alexnet[plots]'")
        return 0
    fig, ax = plt.subplots(figsize=(5, 3.5))
    x = [r["train_images"] / 10 for r in rows]
    for mode in ("scratch", "fine-tuned"):
        ax.plot(x, [100 * r[mode] for r in rows], "o-", label=mode)
    ax.set(xscale="log", xlabel="training images per class (digits)", ylabel="val top-1 (%)",
           title=f"digits, {args.steps} steps; pretrained on synthetic shapes")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "data_efficiency.png", dpi=120)
    print(f"wrote {out / 'data_efficiency.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
