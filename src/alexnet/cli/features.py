"""``alexnet features MODEL DATA --layer fc7 --out FILE``: activations of one layer for every image of a split.

``FILE.npy`` gets the float32 array and ``FILE.json`` the layer, class names, labels and paths;
``FILE.safetensors`` holds ``features`` and ``labels`` with the rest in its metadata.
"""

from __future__ import annotations

import argparse

from ..text import plural
from . import numbers


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "features",
        help="write conv5/fc6/fc7 features with labels and paths (npy or safetensors)",
        description=__doc__,
    )
    p.add_argument("model", help="our checkpoint (.pt), a torchvision AlexNet .pth, or .safetensors + .json")
    p.add_argument("data", help="data set: ROOT with train/<class>/ (and val/), a pack, CIFAR, or one class folder")
    p.add_argument("--layer", choices=("conv5", "fc6", "fc7"), default="fc7", help="layer (default fc7)")
    p.add_argument("--split", choices=("train", "val"), default="train", help="which split (default train)")
    p.add_argument("--out", required=True, help="output file, .npy or .safetensors")
    p.add_argument("--batch-size", type=numbers.batch, default=64, help="images per forward pass")
    p.add_argument("--max-bad-fraction", type=numbers.number(0, 1), default=0.01, metavar="X",
                   help="stop when more than this fraction of the split cannot be decoded (default: 0.01)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file (and its .json)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..data.sources import open_dataset
    from ..errors import UserError
    from ..outputs import prepare_output
    from ..predict import load, save_features

    if not args.out.lower().endswith((".npy", ".safetensors")):
        raise UserError(f"--out {args.out}: the file name must end in .npy or .safetensors")
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be at least 1")
    sidecars = [Path(args.out).with_suffix(".json")] if args.out.lower().endswith(".npy") else []
    prepare_output(args.out, also=sidecars, overwrite=args.overwrite)
    dataset = open_dataset(args.data)
    split = dataset.split(args.split)
    predictor = load(args.model, device=args.device)
    feats, kept = readable_features(predictor, split, args.layer, args.batch_size, args.max_bad_fraction)
    labels, paths = [int(split.labels[i]) for i in kept], [split.describe(i) for i in kept]
    for path in save_features(args.out, feats, labels=labels, paths=paths, classes=split.classes, layer=args.layer):
        print(f"wrote {path}")
    # one folder of class folders is every split: name it, not the --split it stood in for ("from 8 train images")
    which = "image" if dataset.kind == "folder" else f"{args.split} image"
    where = "in" if dataset.kind == "folder" else "of"
    print(f"{args.layer} features: {tuple(feats.shape)} from {plural(len(kept), which)} {where} {dataset.source}")
    return 0


def readable_features(predictor, split, layer: str, batch_size: int, max_bad_fraction: float):
    """``(features, indices)`` of the images of ``split`` that decode, batch by batch: an unreadable file is skipped
    and named (rows, labels and paths stay aligned), and more than ``max_bad_fraction`` of the split stops the run,
    as training and evaluate do (it stopped at the first one)."""
    import torch

    from ..data.loading.skipped import Skipped, load_readable

    skipped = Skipped(split.name, str(getattr(split, "root", split.name)), len(split), max_bad_fraction)
    feats, kept = [], []
    for start in range(0, len(split), batch_size):
        idx, images = load_readable(split, range(start, min(start + batch_size, len(split))), skipped)
        skipped.check()
        if images:
            feats.append(predictor.features(images, layer=layer, batch_size=batch_size))
            kept += idx
    skipped.summarise()
    if not feats:
        from ..errors import UserError

        raise UserError(f"no {split.name} image could be decoded")
    return torch.cat(feats), kept
