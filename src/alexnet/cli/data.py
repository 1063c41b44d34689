"""``alexnet data synth|stats|check``: make the built-in data set, compute colour statistics, check a data set.

Each subcommand has a ``register_<name>(sub)`` below; add one to ``SUBCOMMANDS`` to add a subcommand.
"""

from __future__ import annotations

import argparse
import json

from ..names import MAX_IMAGE_SIZE
from ..text import plural
from . import numbers

MAX_SYNTH_IMAGES = 1_000_000  # per class and split


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "data",
        help="make, inspect and check data sets",
        description="Make, inspect and check data sets: synth writes the built-in synthetic shapes as image "
        "folders, check says whether a data set would train (and what is wrong with it), stats computes colour "
        "statistics, pack decodes and resizes once into a pack that loads fast, verify re-hashes a pack. "
        "'alexnet data SUBCOMMAND --help' for each.",
    )
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    for reg in SUBCOMMANDS:
        reg(sub)


# ---------------------------------------------------------------------------------------------------------------


def register_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write the synthetic shapes data set as image folders",
                       description="Write the built-in synthetic data set as OUT/train/<class>/*.jpg and "
                       "OUT/val/<class>/*.jpg, with every image's object box in OUT/boxes.json: shapes whose colours, "
                       "positions, sizes and rotations are random, so mean colour says nothing about the class. The "
                       "same seed gives the same files.")  # fmt: skip
    p.add_argument("out", metavar="OUT", help="output folder (gets train/ and val/)")
    p.add_argument("--classes", type=numbers.whole(2, 10), default=10, help="number of classes (2 to 10)")
    p.add_argument("--per-class", type=numbers.whole(1, MAX_SYNTH_IMAGES), default=300, help="train images per class")
    p.add_argument("--val-per-class", type=numbers.whole(0, MAX_SYNTH_IMAGES), default=50, help="val images per class")
    p.add_argument("--size", type=numbers.whole(16, MAX_IMAGE_SIZE), default=64, help="image side in px")
    p.add_argument("--seed", type=numbers.seed, default=0, help="random seed (same seed, same files)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty OUT (replacing its images)")
    p.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    from ..data.synthetic import make_synthetic

    out = make_synthetic(
        args.out,
        classes=args.classes,
        per_class=args.per_class,
        val_per_class=args.val_per_class,
        size=args.size,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    n = args.classes * (args.per_class + args.val_per_class)
    print(f"wrote {plural(n, 'image')} ({plural(args.classes, 'class', 'classes')}, {args.size} px) to {out}")
    return 0


def register_stats(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats", help="per-channel mean/std and RGB eigenvectors of the train split",
                       description="Per-channel mean and std and the RGB covariance's eigenvalues and eigenvectors "
                       "(for the paper's PCA colour noise) of the train split (shorter sides above 256 px resized to "
                       "256), as JSON in the cache, where training that reads the files every epoch (--in-memory off) "
                       "finds them, or to --out; the data folder is not written to. A run that decodes the set into "
                       "memory computes its own as it decodes, at its resize (they differ in the third decimal). A "
                       "pack reports the statistics it stored when it was packed.")  # fmt: skip
    p.add_argument("data", metavar="DATA", help="data set folder, archive or pack")
    p.add_argument("--out", default=None, help="JSON path (default: in the cache, $ALEXNET_CACHE or ~/.cache/alexnet, "
                   "where training with --in-memory off looks for them; the data folder is left alone)")  # fmt: skip
    p.add_argument("--max-images", type=int, default=None, help="use this many evenly spaced images (default: all)")
    p.add_argument("--workers", type=numbers.workers, default=2, help="decoding threads (0: none)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run_stats)


def run_stats(args: argparse.Namespace) -> int:
    from ..data.sources import open_dataset
    from ..data.stats import default_stats_path, load_or_compute_stats, save_json
    from ..errors import UserError
    from ..outputs import prepare_output
    from .predict import say_left_out

    if args.max_images is not None and args.max_images < 1:
        raise UserError(f"--max-images {args.max_images}: must be at least 1")
    if args.out:  # an existing file is replaced only with --overwrite (it replaced any file, a text file included)
        prepare_output(args.out, overwrite=args.overwrite)
    dataset = open_dataset(args.data)
    say_left_out(dataset.left_out, "data stats")  # the statistics are of the images only: say what was not one
    train = dataset.split("train")
    fmt = lambda v: "[" + ", ".join(f"{x:.4f}" for x in v) + "]"  # noqa: E731
    if dataset.stats is not None:  # a pack: computed over every train image when it was packed
        stats, where = dataset.stats, f"{args.data}/manifest.json"
        if args.out:
            where = str(save_json(stats, args.out))
        print(f"{len(train)} packed images: mean {fmt(stats['mean'])} std {fmt(stats['std'])}")
        print(f"eigvals {fmt(stats['eigvals'])}; from {where}")
        return 0
    stats = load_or_compute_stats(train, path=args.out, max_images=args.max_images, workers=args.workers, refresh=True)
    path = args.out or default_stats_path(train)
    images = plural(stats["images"], "image")
    print(f"{images} ({stats['skipped']} skipped): mean {fmt(stats['mean'])} std {fmt(stats['std'])}")
    print(f"eigvals {fmt(stats['eigvals'])}; written to {path}")
    return 0


def register_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="check a data set; exit 0 if it would train, 1 if not",
                       description="Check a data set before training on it: images per class and split, the class "
                       "imbalance (largest/smallest class; a warning past 3x), image sizes, files that do not decode, "
                       "CMYK and grayscale images, contents that are another format than the extension says, "
                       "identical files, val classes train lacks. Exit status: 0 if it would train, "
                       "1 if not.")  # fmt: skip
    p.add_argument("data", metavar="DATA", help="data set folder, archive or pack")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the report as JSON here")
    p.add_argument("--workers", type=numbers.threads, default=None, help="threads (default: all cores)")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        metavar="F",
        help="for folders without a val split: the fraction train would hold out (default: train's)",
    )
    p.add_argument(
        "--seed", type=numbers.seed, default=0, help="the --seed train would use (which images are held out)"
    )
    p.add_argument("--window", default="auto", help="decode DICOMs and 16-bit gray images as train's --window would")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from ..data.check import check_dataset, format_report
    from ..errors import UserError
    from ..outputs import prepare_output

    if args.json:
        prepare_output(args.json, flag="--json", overwrite=args.overwrite)
    if args.val_fraction is not None and not 0 <= args.val_fraction < 1:
        raise UserError(f"--val-fraction {args.val_fraction}: must be at least 0 and below 1")
    from ..data.window import check_window

    check_window(args.window)
    report = check_dataset(args.data, workers=args.workers, val_fraction=args.val_fraction, seed=args.seed,
                           window=args.window)  # fmt: skip
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0 if report["ok"] else 1


def register_pack(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pack", help="decode + resize once into a memory-mappable pack for fast loading",
                       description="Decode every image once, resize it to --size x --size px (--resize says how), "
                       "and store the splits as uint8 arrays with labels, colour statistics and checksums in a "
                       "manifest: a pack trains without decoding JPEGs every epoch. Give the pack wherever a data "
                       "set is asked for.")  # fmt: skip
    p.add_argument("src", metavar="SRC", help="image folder, ImageNet layout or CIFAR archive ('synthetic': built-in)")
    p.add_argument("out", metavar="OUT", help="output pack directory (new or empty, or an earlier pack to redo)")
    p.add_argument("--size", type=int, default=256, help="stored image side in px")
    p.add_argument("--resize", default="shorter-centre", choices=["shorter-centre", "squash"], help="how to get SxS")
    p.add_argument(
        "--workers", type=numbers.workers, default=None, help="decoding processes (default: all cores; 0: none)"
    )
    p.add_argument("--channels", type=int, default=3, choices=(1, 3),
                   help="3 (RGB) or 1 (gray: a third of the bytes; train it with --in-channels 1)")  # fmt: skip
    p.add_argument("--window", default="auto", help="how DICOMs and 16-bit gray images become 8 bits (see train)")
    p.add_argument("--val-fraction", type=numbers.number(0, 0.99), default=0.2, metavar="F",
                   help="a source without a val split: hold out this fraction of each class, as train would "
                   "(default 0.2; 0: none)")  # fmt: skip
    p.add_argument(
        "--seed", type=numbers.seed, default=0, help="which images --val-fraction holds out (train's --seed)"
    )
    p.add_argument("--max-bad-fraction", type=numbers.number(0, 1), default=0.01, metavar="X",
                   help="stop (and remove the partial pack) when more than this fraction of a split cannot be decoded "
                   "(default 0.01, as train)")  # fmt: skip
    p.set_defaults(func=run_pack)


def run_pack(args: argparse.Namespace) -> int:
    from ..data.pack import describe_pack, pack_dataset
    from ..errors import UserError
    from ..names import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
    from .predict import say_left_out

    src = None if args.src == "synthetic" else args.src
    from ..data.window import check_window

    check_window(args.window)
    if not MIN_IMAGE_SIZE <= args.size <= MAX_IMAGE_SIZE:  # a pack nothing can train on, or one that fills the disk
        raise UserError(f"--size {args.size}: must be in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}] px (AlexNet's smallest "
                        f"input is {MIN_IMAGE_SIZE} px; the images are stored at this size)")  # fmt: skip
    manifest = pack_dataset(src, args.out, size=args.size, resize=args.resize, workers=args.workers,
                            channels=args.channels, window=args.window, val_fraction=args.val_fraction,
                            seed=args.seed, max_bad_fraction=args.max_bad_fraction,
                            say_left_out=lambda left: say_left_out(left, "data pack"))  # fmt: skip
    print(describe_pack(manifest))
    return 0


def register_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="re-hash every image of a pack against its manifest; exit 0 if intact, 1 if not",
                       description="Re-hash every chunk of a pack's images and its labels against the checksums "
                       "in its manifest. Exit status: 0 if intact, 1 if not.")  # fmt: skip
    p.add_argument("pack", metavar="PACK", help="a pack directory (from `alexnet data pack`)")
    p.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    from ..data.pack import open_packed, read_manifest, verify_pack
    from ..errors import UserError

    try:
        manifest = read_manifest(args.pack)
        for name in manifest["splits"]:
            open_packed(args.pack, name, manifest=manifest)  # labels: shape, dtype and range
        verify_pack(args.pack, manifest=manifest, progress=True)
    except UserError as e:
        print(f"NOT OK: {e}")
        return 1
    counts = ", ".join(f"{k} {plural(v['count'], 'image')}" for k, v in manifest["splits"].items())
    print(f"OK: {args.pack}: every image and label matches its checksum ({counts})")
    return 0


SUBCOMMANDS = [register_synth, register_stats, register_check, register_pack, register_verify]
