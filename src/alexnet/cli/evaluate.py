"""``alexnet evaluate``: top-1/top-5, per-class accuracy and the confusion matrix of a model on a data set."""

from __future__ import annotations

import argparse
import json

from . import numbers


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a checkpoint or weights file on a data set",
        description="Evaluate a model on one split of a data set: loss, top-1 and top-5, macro precision, recall "
        "and F1, and a table of the classes with the lowest F1; --out FILE.json writes the full report (per-class "
        "accuracy, precision, recall, F1, images, and the confusion matrix, rows true and columns predicted), --out "
        "FILE.csv the per-class table for a spreadsheet. The "
        "preprocessing and class names come from the model file; the data's classes are matched to the model's by "
        "name. Exit status: 0 done, 2 a mistake (file, data, classes).",
    )
    p.add_argument("model", help="one of our checkpoints, a torchvision weights file, .safetensors or .onnx")
    p.add_argument("data", nargs="?", help="data set: folders, a pack, CIFAR, or one folder of class sub-folders "
                   "(default: the one the checkpoint was trained on)")  # fmt: skip
    p.add_argument("--split", default="val", choices=["train", "val"], help="which split (ignored for one folder)")
    p.add_argument("--ten-crop", action="store_true", help="average softmax over ten crops (paper §4.1)")
    p.add_argument("--flip", action="store_true", help="average softmax over each image and its mirror (as a "
                   "training run's final report does, unless it ran with --no-flip-eval)")  # fmt: skip
    p.add_argument("--batch-size", type=numbers.batch, default=100, help="images per forward pass")
    p.add_argument(
        "--workers",
        type=numbers.workers,
        default=None,
        help="data loader processes (default: 0 on CPU, else cores - 1)",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"], help="autocast precision")
    p.add_argument("--allow-class-mismatch", action="store_true",
                   help="score by position when the data's class names differ from the model's (warns)")  # fmt: skip
    p.add_argument("--max-bad-fraction", type=float, default=0.01, metavar="X",
                   help="stop when more than this fraction of the split cannot be decoded (default: 0.01)")  # fmt: skip
    p.add_argument("--out", help="write the report here: FILE.json the full report, FILE.csv the per-class table "
                   "(class, images, correct, accuracy, precision, recall, f1)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import UserError
    from ..evaluate import evaluate_file, format_report, report_csv
    from ..outputs import atomic_file, prepare_output

    suffix = Path(args.out or "x.json").suffix.lower()
    if suffix not in (".json", ".csv"):  # x.csv held JSON
        raise UserError(f"--out {args.out}: give a .json (the full report) or .csv (the per-class table) file name")
    if args.out:  # an existing file (a checkpoint given by mistake) is replaced only with --overwrite
        prepare_output(args.out, overwrite=args.overwrite)

    report = evaluate_file(
        args.model,
        args.data,
        split=args.split,
        ten_crop=args.ten_crop,
        flip=args.flip,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        precision=args.precision,
        allow_class_mismatch=args.allow_class_mismatch,
        max_bad_fraction=args.max_bad_fraction,
        progress=True,
    )
    print(format_report(report))
    if args.out:
        with atomic_file(args.out) as tmp, open(tmp, "w", newline="") as f:
            if suffix == ".csv":
                f.write(report_csv(report))
            else:
                json.dump(report, f, indent=1)
        print(f"report: {args.out}")
    return 0
