"""``alexnet plot RUN_DIR``: training curves, conv1 filters, confusion matrix, fc7 neighbours, sample predictions,
a Grad-CAM grid of right and wrong val predictions, and the val patches that drive a few conv5 units hardest."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plot",
        help="draw a run's PNGs (curves, conv1 filters, confusion, fc7 neighbours, predictions, Grad-CAM, conv5 units)",
        description=__doc__,
    )
    p.add_argument("run_dir", help="a run directory (checkpoints/, metrics.jsonl, eval.json)")
    p.add_argument("--out", default=None, help="output folder (default: RUN_DIR/plots)")
    p.add_argument("--data", default=None, help="data set for neighbours.png, predictions.png, gradcam.png and "
                   "units.png, with the model's class names (default: the one the run used); curves.png comes from "
                   "RUN_DIR/metrics.jsonl and confusion.png from RUN_DIR/eval.json, whatever --data")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    p.add_argument("--overwrite", action="store_true", help="replace figures that exist in the output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..plots import make_plots

    for path in make_plots(args.run_dir, args.out, data=args.data, device=args.device, overwrite=args.overwrite):
        print(f"wrote {path}")
    return 0
