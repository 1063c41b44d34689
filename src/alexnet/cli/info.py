"""``alexnet info``: the layer table (output shapes, parameters, FLOPs) of either architecture."""

from __future__ import annotations

import argparse

from . import ARCHS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "info",
        help="print the layer table: output shapes, parameters and FLOPs",
        description="Print an architecture's layer table at one input size: each layer's output shape, parameters "
        "and forward MFLOPs (1 MAC = 2 FLOPs), then the totals. The network is built with random weights; nothing "
        "is read, downloaded or trained. For a training step count about 3x the forward FLOPs.",
    )
    p.add_argument("--arch", default="alexnet", choices=ARCHS, help="architecture")
    p.add_argument("--image-size", type=int, default=224, help="input side in px (at least 63)")
    p.add_argument("--num-classes", type=int, default=1000, help="number of output classes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..limits import limits
    from ..model import MIN_INPUT_SIZE, create_model
    from ..names import MAX_IMAGE_SIZE
    from ..summary import format_table, layer_table

    if args.image_size < MIN_INPUT_SIZE:
        raise UserError(f"--image-size {args.image_size} is too small: AlexNet needs at least {MIN_INPUT_SIZE} px")
    if args.image_size > MAX_IMAGE_SIZE:  # 100000 px tried to allocate 120 GB; 8000 px took 5 minutes
        raise UserError(f"--image-size {args.image_size}: at most {MAX_IMAGE_SIZE} px")
    if not 1 <= args.num_classes <= limits().max_classes:
        raise UserError(f"--num-classes {args.num_classes}: must be in [1, {limits().max_classes}]")
    model = create_model(args.arch, num_classes=args.num_classes)
    title = f"{args.arch}: {args.num_classes} classes, 3x{args.image_size}x{args.image_size} input"
    print(format_table(layer_table(model, args.image_size), title=title))
    return 0
