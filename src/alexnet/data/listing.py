"""Listing an image folder, and saying what the listing left out.

``list_images`` walks a folder for image files (``decode.is_image_file``: by name, extensionless DICOMs by their first
bytes) and returns, beside them, a ``LeftOut``: the other files, counted by extension, with a few example paths. A
user whose 8 of 24 photos are ``.heic`` then reads one line saying so instead of training on 16 without knowing.

What is never counted: hidden files and folders (``.DS_Store``, ``._IMG_1.jpg``, ``.ipynb_checkpoints/``) and the
thumbnail caches Windows writes into any folder it shows (``Thumbs.db``, ``desktop.ini``): no one put them there.
Sidecars (``.txt``, ``.json``, ``.xml``, ``.csv``, ``.xmp``, ...: labelImg's boxes, Labelme's polygons, Lightroom's
edits, a README) are counted but quiet: put beside images on purpose, they alone do not make a warning in train or
predict (every run would repeat it, and a warning that is always there is not read); ``data check`` lists them, and
when real left-outs are reported they are in the same counts, so the numbers add up.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..text import plural, printable
from .decode import is_image_file

OS_FILES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r"})  # lower case; written by the OS itself
SIDECAR_EXTENSIONS = frozenset({".txt", ".json", ".xml", ".csv", ".tsv", ".xmp", ".aae", ".md", ".yaml", ".yml",
                                ".log"})  # fmt: skip
NO_EXTENSION = "no extension"
_SHOWN = 6  # extensions named in a line; examples: up to 3


@dataclass
class LeftOut:
    """The files of ``where`` a listing left out as not images, beside the ``kept`` images it took.

    ``counts``: extension (lower case, or ``NO_EXTENSION``) -> files; ``examples``: the first path seen of each."""

    where: str
    kept: int = 0
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, path: str) -> None:
        """Count ``path`` (not an image) unless the OS wrote it (``OS_FILES``); the caller skips hidden files."""
        name = os.path.basename(path)
        if name.lower() in OS_FILES:
            return
        ext = os.path.splitext(name)[1].lower() or NO_EXTENSION
        self.counts[ext] += 1
        self.examples.setdefault(ext, path)

    @property
    def files(self) -> int:
        return sum(self.counts.values())

    @property
    def sidecars_only(self) -> bool:
        return all(ext in SIDECAR_EXTENSIONS for ext in self.counts)

    def _ranked(self) -> list[str]:
        """Extensions, non-sidecars first, then the commonest first."""
        return sorted(self.counts, key=lambda e: (e in SIDECAR_EXTENSIONS, -self.counts[e], e))

    def line(self, *, sidecars: bool = False) -> str | None:
        """One line for a user, e.g. ``DATA/train: left out 9 of 25 files, not image file names: .heic (8), .txt (1),
        e.g. DATA/train/cat/IMG_1.heic; ...``. None when nothing was left out, or only sidecars (unless
        ``sidecars``: data check's inventory)."""
        if not self.counts or (self.sidecars_only and not sidecars):
            return None
        ranked = self._ranked()
        shown = ", ".join(f"{e} ({self.counts[e]:,})" for e in ranked[:_SHOWN])
        more = f" and {len(ranked) - _SHOWN} more extensions" if len(ranked) > _SHOWN else ""
        examples = ", ".join(self.examples[e] for e in ranked[:3])
        advice = ("sidecars (notes, labels) beside the images, fine if meant" if self.sidecars_only else
                  "convert photos (.heic, .jp2, .jfif) to .jpg or .png to use them")  # fmt: skip
        line = (f"{self.where}: left out {self.files:,} of {plural(self.files + self.kept, 'file')}, not image file "
                f"names: {shown}{more}, e.g. {examples}; {advice}")  # fmt: skip
        return printable(line)  # file names may hold escape sequences or line breaks: every caller prints this line

    def as_json(self) -> dict:
        """For data check's report: the folder, the counts (commonest first), the sidecars among them, examples."""
        ranked = self._ranked()
        return {
            "folder": self.where,
            "files": self.files,
            "images": self.kept,
            "by_extension": {e: self.counts[e] for e in ranked},
            "sidecars": sum(n for e, n in self.counts.items() if e in SIDECAR_EXTENSIONS),
            "examples": [self.examples[e] for e in ranked[:3]],
        }


def list_images(folder: Path, left_out: LeftOut | None = None) -> tuple[list[str], LeftOut]:
    """Image files directly in ``folder`` (recursively in sub-folders), sorted: by their names, and extensionless
    DICOMs by their first bytes (``decode.is_image_file``); and the ``LeftOut`` files (``left_out`` if given, its
    ``kept`` and counts added to). Hidden files are neither; files in hidden folders are taken when images, never
    counted when not. No file is opened or stat'ed beyond what ``is_image_file`` does."""
    out: list[str] = []
    left = left_out if left_out is not None else LeftOut(str(folder))
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        hidden = any(part.startswith(".") for part in Path(os.path.relpath(dirpath, folder)).parts if part != ".")
        for f in sorted(filenames):
            if f.startswith("."):
                continue
            p = os.path.join(dirpath, f)
            if is_image_file(p):
                out.append(p)
            elif not hidden:
                left.add(p)
    left.kept += len(out)
    return out, left


def class_folders(folder: Path) -> list[str]:
    """Sorted names of the sub-folders of ``folder`` (the classes), hidden ones excluded."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
