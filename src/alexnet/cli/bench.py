"""``alexnet bench``: model-only, loader-only and end-to-end throughput, side by side in one run (table + JSON)."""

from __future__ import annotations

import argparse
import json
import os

from . import ARCHS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="measure training img/s: model only, input pipelines only, end to end",
    )
    p.add_argument("data", nargs="?", default=None, help="image folder, CIFAR or pack dir (default: generated)")
    p.add_argument("--arch", default="alexnet", choices=ARCHS, help="architecture")
    p.add_argument("--batch-size", type=int, default=256, help="images per step")
    p.add_argument("--image-size", type=int, default=224, help="training crop in px")
    p.add_argument("--precision", default="auto", help="autocast precision: auto, fp32, bf16 or fp16")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--steps", type=int, default=20, help="batches per timed window, at least")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds per timed window, at least (fast rows)")
    p.add_argument("--repeats", type=int, default=3, help="timed windows (the median is reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches before timing")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers / pack processes")
    p.add_argument("--synthetic-images", type=int, default=2000, help="generated train images without DATA")
    p.add_argument("--max-images", type=int, default=4000, help="with DATA: pack at most this many train images")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench import BenchConfig, format_results, run_bench
    from ..outputs import prepare_output

    if args.json:
        prepare_output(args.json, flag="--json")

    cfg = BenchConfig(
        data=args.data,
        arch=args.arch,
        batch_size=args.batch_size,
        image_size=args.image_size,
        precision=args.precision,
        channels_last=args.channels_last,
        compile=args.compile,
        steps=args.steps,
        min_time=args.min_time,
        repeats=args.repeats,
        warmup=args.warmup,
        workers=args.workers,
        device=args.device,
        synthetic_images=args.synthetic_images,
        max_images=args.max_images,
    )
    results = run_bench(cfg)
    print(format_results(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {args.json}")
    return 0
