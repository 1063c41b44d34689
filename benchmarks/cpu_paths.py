"""Training steps per second on the CPU for each precision / memory layout / SGD kernel, at several batch sizes.

    PYTHONPATH=src python benchmarks/cpu_paths.py [--image-size 64] [--batches 32 64 128 256] [--rounds 5]

Every case is one ``alexnet.training.step.train_step`` on a fixed random batch (torchvision's AlexNet, 10 classes,
dropout 0): fp32 with the foreach SGD kernel and a plain fc6 (what training used before the fused kernel), fp32 with a
plain fc6 (before ``share_fc6``), and as training runs now (fused SGD, fc6 shared where the crop allows) fp32, fp32 +
channels-last and bf16 autocast + channels-last (the candidates ``alexnet.training.cpu_path.choose_cpu_path``
measures).
Cases of one batch size run round-robin (A B C D A B C D ...) after one warm-up step each; the table gives the median
img/s of the rounds. Writes ``runs/cpu-paths.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

CASES = {  # name: (autocast dtype, channels-last, fused SGD, shared fc6)
    "fp32, foreach, plain fc6": (torch.float32, False, False, False),
    "fp32, plain fc6": (torch.float32, False, True, False),
    "fp32": (torch.float32, False, True, True),
    "fp32 + channels-last": (torch.float32, True, True, True),
    "bf16 + channels-last": (torch.bfloat16, True, True, True),
}


def step_fn(batch: int, size: int, dtype: torch.dtype, channels_last: bool, fused: bool, shared: bool):
    from alexnet.model import create_model
    from alexnet.training.step import train_step

    model = create_model("alexnet", num_classes=10, dropout=0.0)
    if shared:
        model.share_fc6(size)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    kernel = {"fused": True} if fused else {"foreach": True}
    opt = torch.optim.SGD(model.param_groups(weight_decay=5e-4), lr=1e-3, momentum=0.9, weight_decay=5e-4, **kernel)
    scaler, crit, cpu = torch.amp.GradScaler("cpu", enabled=False), torch.nn.CrossEntropyLoss(), torch.device("cpu")
    return lambda: train_step(model, x, y, crit, opt, scaler, cpu, dtype)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", default="runs/cpu-paths.json")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    load = os.getloadavg()[0]
    from alexnet.device import keep_freed_memory

    kept = keep_freed_memory()  # as training does
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.image_size} px, load {load:.1f} at start"
        f"{', freed memory kept' if kept else ''}"
    )
    from alexnet.training.cpu_path import cpu_has_bf16

    cases = {name: case for name, case in CASES.items() if case[0] != torch.bfloat16 or cpu_has_bf16()}
    if len(cases) < len(CASES):
        print("no bf16 units on this CPU (cpuinfo): bf16 left out (it falls back to ~6 img/s)")
    print(f"{'batch':>5} " + " ".join(f"{name:>24}" for name in cases) + "   (img/s, median of rounds)")
    table = {}
    for batch in args.batches:
        steps = {name: step_fn(batch, args.image_size, *case) for name, case in cases.items()}
        for fn in steps.values():
            fn()  # warm-up: allocation, kernel selection
        rates: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(args.rounds):
            for name, fn in steps.items():
                t0 = time.perf_counter()
                fn()
                rates[name].append(batch / (time.perf_counter() - t0))
        table[batch] = {name: statistics.median(r) for name, r in rates.items()}
        print(f"{batch:5d} " + " ".join(f"{table[batch][name]:24.0f}" for name in cases), flush=True)
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "image_size": args.image_size,
           "rounds": args.rounds, "load_at_start": load, "load_at_end": os.getloadavg()[0],
           "img_per_s": table}  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
