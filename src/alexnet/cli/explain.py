"""``alexnet explain MODEL INPUT...``: where the network looks, as an attribution map per image.

For each image file, image in a folder (recursive) and sampled video frame: OUT/NAME.METHOD.png, the centre crop
the network sees, the map and the two overlaid, titled with the predicted and the target class; with --format npy
(give --format twice for both) the raw map as a float32 (crop, crop) array, OUT/NAME.METHOD.npy. One line per
image on stdout. Methods (see alexnet.explain):

- gradcam: Grad-CAM at --layer (auto: conv5 from 127-px crops, 13x13 at 224 px; conv2 at 64 px, where conv5 is
  3x3; bilinear to the crop);
- occlusion: drop of the target's score when a --window px square is greyed out, every --stride px (default crop/4
  and crop/8: 49 forward passes);
- saliency: largest absolute input gradient over the colour channels;
- integrated-gradients: from a black image, in --steps steps.

A bad input prints one error line naming it on stderr and the rest still run; the exit code is 1 if any failed.
.onnx exports cannot be explained (no gradients): use the checkpoint.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ..errors import UserError

METHODS = ("gradcam", "occlusion", "saliency", "integrated-gradients")  # alexnet.explain.METHODS, without torch
LAYERS = ("auto", "conv1", "conv2", "conv3", "conv4", "conv5")
FORMATS = ("png", "npy")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "explain", help="attribution maps: Grad-CAM, occlusion, saliency, IG", description=__doc__
    )
    p.add_argument("model", help="our checkpoint (.pt), a torchvision AlexNet .pth, or .safetensors + .json")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (searched recursively), videos")
    p.add_argument("--method", choices=METHODS, default="gradcam", help="attribution method")
    p.add_argument(
        "--layer",
        choices=LAYERS,
        default=None,
        help="gradcam: the conv layer whose maps are weighted (default auto: the deepest with >= 7x7 maps at the "
        "model's crop: conv5 at 224 px, conv2 at 64 px)",
    )
    p.add_argument(
        "--target",
        default="top1",
        metavar="CLASS",
        help="top1 (each image's prediction), a class name or a class index",
    )
    p.add_argument("--out", default="explanations", metavar="DIR", help="output folder")
    p.add_argument("--format", choices=FORMATS, action="append", default=None,
                   help="png (the overlay) or npy (the raw map); give twice for both (default: png)")  # fmt: skip
    p.add_argument(
        "--window", type=int, default=None, metavar="PX", help="occlusion: square side in px (default: crop / 4)"
    )
    p.add_argument("--stride", type=int, default=None, metavar="PX", help="occlusion: step in px (default: window / 2)")
    p.add_argument("--steps", type=int, default=32, metavar="N", help="integrated gradients: points along the path")
    p.add_argument("--every", type=float, default=1.0, metavar="S", help="video: seconds between sampled frames")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from ..explain import layer_size, resolve_layer
    from ..predict import load
    from .predict import expand_inputs, list_inputs

    formats = args.format or ["png"]
    if args.every <= 0:
        raise UserError(f"--every {args.every}: must be a positive number of seconds")
    if args.layer is not None and args.method != "gradcam":
        print(f"alexnet explain: note: --layer is for gradcam; {args.method} ignores it", file=sys.stderr)
    predictor = load(args.model, device=args.device)
    if predictor.model is None:
        raise UserError(
            f"{args.model}: explain needs gradients, which an .onnx export does not have; use the checkpoint"
        )
    from ..explain import resolve_target

    resolve_target(args.target, predictor.classes)  # a wrong --target stops here, before any image
    if "png" in formats:
        from ..plots import plot_explanation
    layer = resolve_layer(predictor.model, args.layer, predictor.preprocess.crop)
    side = layer_size(predictor.model, layer, predictor.preprocess.crop)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    failed = 0
    for name, t, src in expand_inputs(list_inputs(args.inputs), every=args.every):
        label = name if t is None else f"{name} @ {t:.2f}s"
        try:
            if isinstance(src, UserError):
                raise src
            (expl,) = predictor.explain(
                src, method=args.method, target=args.target, layer=layer, window=args.window,
                stride=args.stride, steps=args.steps, batch_size=1,
            )  # fmt: skip
        except UserError as e:
            failed += 1
            sys.stdout.flush()
            tqdm.write(f"alexnet explain: error: {e}", file=sys.stderr)
            continue
        stem = _unique(_stem(name, t), used)
        written = []
        if "png" in formats:
            path = out_dir / f"{stem}.{args.method}.png"
            plot_explanation(expl, path, name=label, layer_side=side)
            written.append(path)
        if "npy" in formats:
            path = out_dir / f"{stem}.{args.method}.npy"
            np.save(path, expl.map.numpy())
            written.append(path)
        print(
            f"{label}: predicted {expl.predicted} ({100 * expl.probability:.1f}%), map for {expl.target} "
            f"-> {', '.join(map(str, written))}"
        )
    return 1 if failed else 0


def _stem(name: str, t: float | None) -> str:
    """A file-name stem for an input: its own stem, plus the frame time for a video."""
    stem = Path(name).stem or "image"
    stem = re.sub(r"[^\w.@+-]", "_", stem)
    return stem if t is None else f"{stem}@{t:.2f}s"


def _unique(stem: str, used: set[str]) -> str:
    """``stem``, or ``stem-2``, ``stem-3``... if an earlier input of this run took it (same names in two folders)."""
    out, n = stem, 1
    while out in used:
        n += 1
        out = f"{stem}-{n}"
    used.add(out)
    return out
