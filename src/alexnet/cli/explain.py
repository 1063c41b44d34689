"""``alexnet explain MODEL INPUT...``: where the network looks, as an attribution map per image.

For each image file, image in a folder (recursive) and sampled video frame: OUT/NAME.METHOD.png, the centre crop
the network sees, the map and the two overlaid, titled with the predicted and the target class; with --format npy
(give --format twice for both) the raw map as a float32 (crop, crop) array, OUT/NAME.METHOD.npy. NAME is the file's
stem; an image found in a folder keeps its sub-folders within that folder (explain MODEL ct/val writes
OUT/nodule/1.gradcam.png for ct/val/nodule/1.dcm), with characters other than letters, digits and ._@+- replaced by
_; a name taken earlier in the run gets -2, -3... For one image, --out FILE.png (or FILE.npy with --format npy)
writes that file instead. One line per image on stdout. Methods (see alexnet.explain):

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
from dataclasses import dataclass
from pathlib import Path, PurePath

from ..errors import UserError
from ..names import DEVICE_HELP, DEVICE_PATTERN, EXPLAIN_METHODS, MAX_EXPLAIN_STEPS
from ..settings import setting, validate_fields
from ._settings import add_settings, given

LAYERS = ("auto", "conv1", "conv2", "conv3", "conv4", "conv5")
FORMATS = ("png", "npy")


@dataclass
class ExplainConfig:
    """The settings of ``alexnet explain`` (the model and the inputs are its positionals); the flags are generated
    from these fields and construction checks every value (``UserError`` naming the flag)."""

    method: str = setting("gradcam", "attribution method", choices=EXPLAIN_METHODS)
    layer: str | None = setting(None, "gradcam: the conv layer whose maps are weighted", choices=LAYERS, auto=True,
                                none_text="auto: the deepest with >= 7x7 maps at the model's crop: conv5 at 224 px, "
                                "conv2 at 64 px")  # fmt: skip
    target: str = setting("top1", "top1 (each image's prediction), a class name or a class index", metavar="CLASS")
    out: str = setting("explanations", "output folder; for one image, a .png (or .npy) file name writes that file",
                       metavar="DIR")  # fmt: skip
    overwrite: bool = setting(False, "replace output files that exist (refused otherwise, as features and export do)",
                              switch=True)  # fmt: skip
    format: tuple[str, ...] | None = setting(None, "png (the overlay) or npy (the raw map); give twice for both",
                                             choices=FORMATS, none_text="png")  # fmt: skip
    window: int | None = setting(
        None,
        "occlusion: square side in px (a DICOM's window is the model's, from training's --window)",
        low=1,
        metavar="PX",
        none_text="crop / 4",
    )
    stride: int | None = setting(None, "occlusion: step in px", low=1, metavar="PX", none_text="window / 2")
    steps: int = setting(32, "integrated gradients: points along the path", low=1, high=MAX_EXPLAIN_STEPS, metavar="N")
    every: float = setting(1.0, "video: seconds between sampled frames", low=0, low_open=True, metavar="S")
    device: str = setting("auto", DEVICE_HELP, pattern=DEVICE_PATTERN, pattern_rule=f"choose from {DEVICE_HELP}")

    def __post_init__(self) -> None:
        validate_fields(self)

    @property
    def formats(self) -> tuple[str, ...]:
        return self.format or ("png",)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "explain", help="attribution maps: Grad-CAM, occlusion, saliency, IG", description=__doc__
    )
    p.add_argument("model", help="our checkpoint (.pt), a torchvision AlexNet .pth, or .safetensors + .json")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (searched recursively), videos")
    add_settings(p, ExplainConfig)  # every other flag: an ExplainConfig field, its help, range and default
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..explain import layer_size, resolve_layer
    from ..outputs import prepare_output
    from ..predict import load
    from ..video import VIDEO_EXTENSIONS
    from .predict import expand_inputs, list_inputs, say_left_out

    cfg = ExplainConfig(**given(args, ExplainConfig))
    if cfg.layer is not None and cfg.method != "gradcam":
        print(f"alexnet explain: note: --layer is for gradcam; {cfg.method} ignores it", file=sys.stderr)
    predictor = load(args.model, device=cfg.device)
    if predictor.model is None:
        raise UserError(
            f"{args.model}: explain needs gradients, which an .onnx export does not have; use the checkpoint"
        )
    from ..explain import resolve_target

    resolve_target(cfg.target, predictor.classes)  # a wrong --target stops here, before any image
    if cfg.method == "occlusion":  # and a window that does not fit the crop (it was said once per image, exit 1)
        from ..explain import occlusion_geometry

        occlusion_geometry(predictor.preprocess.crop, cfg.window, cfg.stride)
    layer = resolve_layer(predictor.model, cfg.layer, predictor.preprocess.crop)
    side = layer_size(predictor.model, layer, predictor.preprocess.crop)
    out_dir = Path(cfg.out)
    listed, left = list_inputs(args.inputs)
    say_left_out(left, "explain")
    single = single_file(cfg.out, listed, cfg.formats)  # --out x.png for one image: that file, not a folder x.png
    planned, seen = [], set()  # the images' outputs, refused before any work when they exist (videos: as written)
    for item in listed:
        if isinstance(item.path, Path) and item.path.suffix.lower() not in VIDEO_EXTENSIONS:
            stem = _unique(_stem(item.rel, None), seen)
            planned += [single or out_dir / f"{stem}.{cfg.method}.{fmt}" for fmt in cfg.formats]
    prepare_output(planned[0] if planned else out_dir / "x", also=planned[1:], overwrite=cfg.overwrite)
    used: set[str] = set()
    failed = 0
    for item, t, src in expand_inputs(listed, every=cfg.every):
        label = item.name if t is None else f"{item.name} @ {t:.2f}s"
        try:
            if isinstance(src, UserError):
                raise src
            (expl,) = predictor.explain(
                src, method=cfg.method, target=cfg.target, layer=layer, window=cfg.window,
                stride=cfg.stride, steps=cfg.steps, batch_size=1,
            )  # fmt: skip
        except UserError as e:
            failed += 1
            sys.stdout.flush()
            tqdm.write(f"alexnet explain: error: {e}", file=sys.stderr)
            continue
        stem = _unique(_stem(item.rel, t), used)
        targets = {fmt: single or out_dir / f"{stem}.{cfg.method}.{fmt}" for fmt in cfg.formats}
        written = _write(expl, targets, cfg.overwrite, label, side)
        print(
            f"{label}: predicted {expl.predicted} ({100 * expl.probability:.1f}%), map for {expl.target} "
            f"-> {', '.join(map(str, written))}"
        )
    return 1 if failed else 0


def _write(expl, targets: dict[str, Path], overwrite: bool, label: str, side: int) -> list[Path]:
    """The overlay (``png``) and the raw map (``npy``) of ``expl``, each to its ``targets`` path."""
    import numpy as np

    from ..outputs import prepare_output

    written = []
    for fmt, target in targets.items():
        path = prepare_output(target, overwrite=overwrite)
        if fmt == "png":
            from ..map_plots import plot_explanation

            plot_explanation(expl, path, name=label, layer_side=side)
        else:
            np.save(path, expl.map.numpy())
        written.append(path)
    return written


FILE_SUFFIXES = (".png", ".npy", ".jpg", ".jpeg", ".pdf", ".svg", ".tif", ".tiff", ".webp", ".json", ".csv", ".txt")


def single_file(out: str, listed: list, formats: tuple[str, ...]) -> Path | None:
    """``--out x.png`` (or ``x.npy``) for one image file and that one format: the file to write; None when ``out``
    is a folder name. Another file-like name is one ``UserError`` line (``explain --out x.png`` made a folder x.png,
    with the picture inside). An existing folder is a folder, whatever its name (``--out DIR`` as documented)."""
    suffix = Path(out).suffix.lower()
    if suffix not in FILE_SUFFIXES or Path(out).is_dir():
        return None
    from ..video import VIDEO_EXTENSIONS

    one_image = (
        len(listed) == 1 and isinstance(listed[0].path, Path) and listed[0].path.suffix.lower() not in VIDEO_EXTENSIONS
    )
    if one_image and formats == (suffix[1:],):
        return Path(out)
    why = f"written for one image with --format {suffix[1:]} only" if suffix[1:] in FORMATS else "not a png or npy"
    raise UserError(f"--out {out}: a file name ({why}); give a folder for OUT/NAME.METHOD.png per image")


def _stem(rel: PurePath, t: float | None) -> str:
    """The output path of an input, relative to --out and without suffix: its sub-folders in the folder it was found
    in (``nodule/1`` for DIR/nodule/1.dcm), each part reduced to safe characters (no ``..``, no separators), then its
    stem, plus the frame time for a video."""
    parts = [_safe_part(p) for p in rel.parent.parts] + [_safe_part(rel.stem or "image")]
    stem = "/".join(parts)
    return stem if t is None else f"{stem}@{t:.2f}s"


def _safe_part(part: str) -> str:
    part = re.sub(r"[^\w.@+-]", "_", part)
    return "_" if part.strip(".") == "" else part


def _unique(stem: str, used: set[str]) -> str:
    """``stem``, or ``stem-2``, ``stem-3``... if an earlier input of this run took it (same names in two folders)."""
    out, n = stem, 1
    while out in used:
        n += 1
        out = f"{stem}-{n}"
    used.add(out)
    return out
