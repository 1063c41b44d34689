"""``alexnet predict MODEL INPUT...``: top-k classes for image files, folders (recursive) and videos.

Output formats, one record per image or sampled video frame, in input order:

- ``table``: the input (``NAME`` or ``NAME @ 1.50s`` for a frame), then one ``  91.23%  class`` line per class;
- ``json``: one JSON object per line, ``{"input": NAME, "time": seconds or null, "top": [{"class", "probability"}]}``,
  or ``{"input": NAME, "time": ..., "error": MESSAGE}`` for an input that failed;
- ``csv``: a header ``input,time,rank,class,probability,error``, then one row per class (``time`` empty for images,
  ``error`` empty), or one row with only ``input``, ``time`` and ``error`` for an input that failed.

A bad input prints one error line naming it on stderr (and, in json and csv, its record above) and the rest still run;
the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

from ..errors import UserError
from ..text import printable
from . import numbers

if TYPE_CHECKING:
    from ..data.listing import LeftOut

FORMATS = ("table", "json", "csv")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="classify images, folders of images and videos", description=__doc__)
    p.add_argument("model", help="our checkpoint (.pt), a torchvision AlexNet .pth, .safetensors + .json, or .onnx")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (searched recursively), videos")
    p.add_argument("--topk", type=int, help="classes to show per image, 1 to the model's classes (default: 5, or "
                   "all of a model with fewer)")  # fmt: skip
    p.add_argument("--format", choices=FORMATS, default="table", help="output format")
    p.add_argument("--ten-crop", action="store_true", help="average the 10 crops of paper §4.1 (10x the compute)")
    p.add_argument("--flip", action="store_true", help="average each image with its mirror (2x the compute; as a "
                   "training run's final report does)")  # fmt: skip
    p.add_argument("--batch-size", type=numbers.batch, default=64, help="images per forward pass")
    p.add_argument(
        "--every",
        type=numbers.number(0, 86400, low_open=True),
        default=1.0,
        help="video: seconds between sampled frames",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.set_defaults(func=run)


class Input(NamedTuple):
    """One input as listed: ``name`` as the user wrote it (or the found file's path), ``path`` (a file, or the
    ``UserError`` that says why not) and ``rel``, its path relative to the folder it was found in (its own file name
    when given by itself): ``explain`` mirrors it under --out."""

    name: str
    path: Path | UserError
    rel: PurePath


def list_inputs(inputs: list[str]) -> tuple[list[Input], list[LeftOut]]:
    """An ``Input`` per image file or video, in order; folders listed recursively, sorted. Beside them, per folder,
    the files left out as not images (``listing.LeftOut``; hidden files and folders are not counted)."""
    from ..data.decode import IMAGE_EXTENSIONS, is_image_file
    from ..data.listing import LeftOut

    out: list[Input] = []
    left: list[LeftOut] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():  # DICOMs named IM0001 too (is_image_file), as image folders take them
            files, left_out = [], LeftOut(raw)
            for p in sorted(p for p in path.rglob("*") if p.is_file()):
                if is_image_file(str(p)):
                    files.append(p)
                elif not any(part.startswith(".") for part in p.relative_to(path).parts):
                    left_out.add(str(p))
            left_out.kept = len(files)
            left.append(left_out)
            if not files:
                said = f"; {left_out.line(sidecars=True)}" if left_out.counts else ""
                error = UserError(f"{raw}: no image files in this folder ({', '.join(IMAGE_EXTENSIONS)}){said}")
                out.append(Input(raw, error, PurePath(path.name)))
            out += [Input(str(f), f, f.relative_to(path)) for f in files]
        elif not path.exists():
            out.append(Input(raw, UserError(f"{raw}: no such file or folder"), PurePath(path.name)))
        else:
            out.append(Input(raw, path, PurePath(path.name)))
    return out, left


def say_left_out(left: list[LeftOut], command: str) -> None:
    """One warning line on stderr per folder whose files were left out as not images (sidecars alone say nothing)."""
    for left_out in left:
        if said := left_out.line():
            print(f"alexnet {command}: warning: {printable(said)}", file=sys.stderr)


def expand_inputs(listed: list[Input], *, every: float) -> Iterator[tuple[Input, float | None, Any]]:
    """``(input, time or None, image source or UserError)`` per image and sampled video frame, in order."""
    from ..video import VIDEO_EXTENSIONS, video_frames

    for item in listed:
        path = item.path
        if isinstance(path, Path) and path.suffix.lower() in VIDEO_EXTENSIONS:
            try:
                for t, frame in video_frames(path, every=every):
                    yield item, t, frame
            except UserError as e:
                yield item, None, e
        else:
            yield item, None, str(path) if isinstance(path, Path) else path


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..predict import load
    from ..progress import progress
    from ..video import VIDEO_EXTENSIONS

    predictor = load(args.model, device=args.device)
    topk = predictor.top_k(args.topk, "--topk")  # more than the model's classes is refused, as serve's ?topk
    listed, left = list_inputs(args.inputs)
    say_left_out(left, "predict")
    videos = any(isinstance(i.path, Path) and i.path.suffix.lower() in VIDEO_EXTENSIONS for i in listed)
    names: deque[tuple[str, float | None]] = deque()

    def sources() -> Iterator[Any]:
        for item, t, src in expand_inputs(listed, every=args.every):
            names.append((item.name, t))
            yield src

    out = sys.stdout
    writer = _Writer(args.format, out)
    failed = 0
    results = predictor.iter_predict(sources(), topk=topk, ten_crop=args.ten_crop, batch_size=args.batch_size,
                                     flip=args.flip)  # fmt: skip
    # on a terminal the results are the progress; a bar (stderr) only when they go to a file or a pipe
    with progress(None if videos else len(listed), "predict", unit="img", enabled=not out.isatty()) as bar:
        for _src, top, err in results:
            name, t = names.popleft()
            bar.update(1)
            if err is not None:
                failed += 1
                writer.write_error(name, t, str(err))  # json/csv: a program reading stdout sees which input failed
                out.flush()
                tqdm.write(f"alexnet predict: error: {printable(str(err))}", file=sys.stderr)  # above the bar
                continue
            writer.write(name, t, top)
    out.flush()
    return 1 if failed else 0


class _Writer:
    """Formats one record at a time, so results stream out as batches finish. Names in ``table`` and ``csv`` go through
    ``printable``; ``json`` escapes them itself (``ensure_ascii``)."""

    def __init__(self, fmt: str, out: TextIO) -> None:
        self.fmt, self.out = fmt, out
        if fmt == "csv":
            self.csv = csv.writer(out, lineterminator="\n")
            self.csv.writerow(["input", "time", "rank", "class", "probability", "error"])

    def write(self, name: str, t: float | None, top: list[tuple[str, float]]) -> None:
        if self.fmt == "table":
            name = printable(name)
            self.out.write(f"{name}\n" if t is None else f"{name} @ {t:.2f}s\n")
            for cls, p in top:
                self.out.write(f"  {p * 100:6.2f}%  {printable(cls)}\n")
        elif self.fmt == "json":
            record = {"input": name, "time": t, "top": [{"class": c, "probability": round(p, 6)} for c, p in top]}
            self.out.write(json.dumps(record) + "\n")
        else:
            for rank, (cls, p) in enumerate(top, 1):
                self.csv.writerow([printable(name), _csv_time(t), rank, printable(cls), f"{p:.6f}", ""])

    def write_error(self, name: str, t: float | None, message: str) -> None:
        """A failed input's record (json, csv); the table leaves it to the error line on stderr, as before."""
        if self.fmt == "json":
            self.out.write(json.dumps({"input": name, "time": t, "error": message}) + "\n")
        elif self.fmt == "csv":
            self.csv.writerow([printable(name), _csv_time(t), "", "", "", printable(message)])


def _csv_time(t: float | None) -> str:
    return "" if t is None else f"{t:.3f}"
