"""The data-set doctor: what would go wrong if you trained on this folder, before you spend hours finding out.

``check_dataset`` opens the data as training would (``open_dataset``), then reads every file (in a thread pool, all
cores): decodes it, hashes its bytes, and notes its format, colour mode and size. A pack is checked against its
manifest instead: sizes, label digests and every image chunk's checksum. The report lists errors (the data would not
train) and warnings (it would, but look).
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections import Counter, defaultdict
from multiprocessing.pool import ThreadPool
from pathlib import Path

import numpy as np

from ..errors import UserError, decoding
from ..imbalance import WARN_RATIO, imbalance_ratio
from ..limits import limits, read_bounded
from ..progress import progress as progress_bar
from ..text import plural
from . import dicom
from .decode import GRAY_MODES, decode_image, read_header
from .listing import class_folders
from .pack.reader import is_packed, read_manifest, verify_pack
from .sources import UnlabelledValError, open_dataset
from .wide_gray import wide_gray_facts
from .window import auto_advice

# The trainer stops when more than this fraction of a split cannot be decoded.
MAX_BAD_FRACTION = 0.01
TINY_SIDE = 8  # px: a smaller image is warned about (scikit-learn's digits, 8x8, are not)
_EXT_FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".bmp": "BMP",
    ".gif": "GIF",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".dcm": "DICOM",
    ".dicom": "DICOM",
}
_GRAY_MODES = GRAY_MODES | {"MONOCHROME1", "MONOCHROME2"}  # a DICOM's mode here is its photometric interpretation


def inspect_file(path: str, window: str = "auto") -> dict:
    """One file's facts: ``{"path", "hash", "format", "mode", "size", "error", "dicom"}`` (``dicom``: modality,
    bits stored, window, pixel spacing, transfer syntax and frames of a DICOM; its ``mode`` is the photometric
    interpretation), and ``"wide_gray"`` for a gray image over 8 bits (``wide_gray.wide_gray_facts``)."""
    out = {"path": path, "hash": None, "format": None, "mode": None, "size": None, "error": None, "dicom": None}
    try:
        data = read_bounded(path, limits().max_image_file_bytes, "image")
        out["hash"] = hashlib.blake2b(data, digest_size=16).hexdigest()
        with decoding(path):  # any other error reading this one file is its one line
            _inspect_bytes(out, data, path, window)
    except UserError as e:  # DecodeError, or a file read_bounded refused
        out["error"] = str(e)
    return out


def _inspect_bytes(out: dict, data: bytes, path: str, window: str) -> None:
    if dicom.is_dicom(data):  # the header's pixel module, modality and spacing: no patient data
        bounds = limits()
        h = dicom.read_header(data, path, max_pixels=bounds.max_image_pixels, max_aspect=bounds.max_image_aspect)
        out["format"], out["mode"] = "DICOM", h.photometric
        out["dicom"] = {"modality": h.modality or "?", "bits": h.bits_stored, "photometric": h.photometric,
                        "window": h.window or ("unusable" if h.window_problem else None),
                        "spacing": h.pixel_spacing, "syntax": h.transfer_syntax, "frames": h.frames}  # fmt: skip
    else:
        img = read_header(data, path)
        out["format"], out["mode"] = img.format, img.mode
    t = decode_image(data, name=path, window=window)
    if out["dicom"] is None:  # decoded: its pixels load
        out["wide_gray"] = wide_gray_facts(img, path)  # the values auto's fixed ranges are about (window.py)
    out["size"] = [int(t.shape[2]), int(t.shape[1])]  # (W, H)


def check_dataset(
    data: str | None,
    *,
    train_dir: str | None = None,
    val_dir: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    imbalance_ratio: float = WARN_RATIO,
    max_bad_fraction: float = MAX_BAD_FRACTION,
    val_fraction: float | None = None,
    seed: int = 0,
    window: str = "auto",
) -> dict:
    """Check a data set; returns a JSON-able report with ``ok`` (would it train), ``errors``, ``warnings``, ....

    Image folders without a val split are checked as ``alexnet train`` would split them (``val_fraction``, default
    train's; ``seed``): the report's train and val splits are the held-out ones, and ``notes`` says so."""
    if train_dir is None and is_packed(data):
        return _check_pack(data, progress=progress)
    if val_fraction is None:
        from ..config import TrainConfig

        val_fraction = TrainConfig.__dataclass_fields__["val_fraction"].default
    report: dict = {"data": data, "ok": True, "errors": [], "warnings": [], "notes": [], "splits": {}, "left_out": []}
    if not _classes_agree(report, data, train_dir, val_dir):
        report["ok"] = False
        return report
    splits = _open_for_check(report, data, train_dir, val_dir, val_fraction, seed)
    if splits is None:
        report["ok"] = False
        return report
    hashes: dict[str, list[str]] = defaultdict(list)
    for split in splits:
        if split is not None:
            _check_split(report, split, hashes, workers=workers or os.cpu_count() or 1, progress=progress,
                         warn_ratio=imbalance_ratio, max_bad_fraction=max_bad_fraction, window=window)  # fmt: skip
    dups = [paths for paths in hashes.values() if len(paths) > 1]
    report["duplicates"] = dups
    if dups:
        report["warnings"].append(
            f"{len(dups)} group(s) of identical files (same bytes), e.g. {' = '.join(dups[0][:3])}"
        )
    report["ok"] = not report["errors"]
    return report


def _classes_agree(report: dict, data: str | None, train_dir: str | None, val_dir: str | None) -> bool:
    """Classes on disk, compared before opening (opening refuses val classes that train lacks); False if val has
    classes that train lacks (an error in ``report``)."""
    root = Path(train_dir).parent if train_dir else Path(data) if data else None
    tdir = Path(train_dir) if train_dir else (root / "train" if root else None)
    vdir = Path(val_dir) if val_dir else (root / "val" if root else None)
    if not (tdir and vdir and tdir.is_dir() and vdir.is_dir() and class_folders(tdir) and class_folders(vdir)):
        return True
    t_classes, v_classes = set(class_folders(tdir)), set(class_folders(vdir))
    if v_classes - t_classes:
        report["errors"].append(f"classes in val but not in train: {', '.join(sorted(v_classes - t_classes))}")
    if t_classes - v_classes:
        report["warnings"].append(
            f"classes in train but not in val (not evaluated): {', '.join(sorted(t_classes - v_classes))}"
        )
    return not v_classes - t_classes


def _open_for_check(report: dict, data, train_dir, val_dir, val_fraction: float, seed: int) -> tuple | None:
    """``(train, val)`` as training would open them, a held-out val split included (val None if absent or
    unlabelled); None if they cannot be."""
    from .holdout import with_holdout

    try:
        dataset = open_dataset(data, train_dir=train_dir, val_dir=val_dir)
        _left_out(report, dataset.left_out)
        dataset, line = with_holdout(dataset, val_fraction, seed, train_dir=train_dir)
        if line:
            report["notes"].append(f"alexnet train (--seed {seed}) will have {line}")
            report["held_out"] = {"train": len(dataset.train), "val": len(dataset.val), "val_fraction": val_fraction}
        elif dataset.val is None:
            report["warnings"].append(
                f"{data or train_dir}: no val split: training would measure no accuracy and choose best.pt by train "
                "loss" + (" (--val-fraction 0 holds nothing out)" if val_fraction == 0 and not train_dir else "")
            )
        return dataset.split("train"), dataset.val
    except UnlabelledValError as e:
        _left_out(report, [e.train.left_out])
        report["errors"].append(str(e))
        return e.train, None
    except UserError as e:
        report["errors"].append(str(e))
        return None


def _left_out(report: dict, left_out: list) -> None:
    """Files of the image folders that are not images (``listing.LeftOut``) into ``report["left_out"]``, one line
    each: a warning, or a note when they are only sidecars (.txt, .json, ...)."""
    report["left_out"] = [lo.as_json() for lo in left_out if lo.counts]
    for lo in left_out:
        if said := lo.line(sidecars=True):
            report["notes" if lo.sidecars_only else "warnings"].append(said)


def _check_split(report: dict, split, hashes: dict, *, workers: int, progress: bool, warn_ratio: float,
                 max_bad_fraction: float, window: str = "auto") -> None:  # fmt: skip
    """Add one split's counts, sizes and file findings to ``report``; its files' hashes to ``hashes``."""
    err = report["errors"].append
    counts = Counter(split.labels)
    info: dict = {
        "root": split.root,
        "images": len(split),
        "classes": len(split.classes),
        "per_class": {c: counts.get(i, 0) for i, c in enumerate(split.classes)},
    }
    report["splits"][split.name] = info
    present = [n for n in info["per_class"].values() if n > 0]
    if split.name == "train":
        empty = [c for c, n in info["per_class"].items() if n == 0]
        if empty:
            err(f"train classes without images: {', '.join(empty[:20])}")
        if len(present) < 2:
            err(f"train has {len(present)} class(es) with images; classification needs at least 2")
    _imbalance(report, split.name, info, warn_ratio)
    if isinstance(split.items, np.ndarray):  # CIFAR: pixels already decoded
        info["sizes"] = {"min": [32, 32], "median": [32, 32], "max": [32, 32]}
        return
    results = _inspect_all([str(p) for p in split.items], split.name, workers=workers, progress=progress,
                           window=window)  # fmt: skip
    for r in results:
        if r["hash"]:
            hashes[r["hash"]].append(r["path"])
    _file_findings(report, split.name, info, results, max_bad_fraction)
    if window == "auto":  # a window given is the user's answer to the warning
        report["warnings"] += auto_advice(split.name, [r["wide_gray"] for r in results if r.get("wide_gray")])


def _imbalance(report: dict, name: str, info: dict, ratio: float) -> None:
    """Largest over smallest class (among classes with images) into ``info["imbalance"]``; a warning past ``ratio``."""
    counts = list(info["per_class"].values())
    info["imbalance"] = imbalance_ratio(counts)
    if info["imbalance"] is not None and info["imbalance"] > ratio:
        present = [n for n in counts if n > 0]
        hint = "; train --balance weights the loss so that every class counts the same" if name == "train" else ""
        report["warnings"].append(f"{name}: class imbalance {info['imbalance']:.1f}x ({min(present)} to "
                                  f"{max(present)} images per class, over {ratio:g}x){hint}")  # fmt: skip


def _inspect_all(files: list[str], name: str, *, workers: int, progress: bool, window: str = "auto") -> list[dict]:
    """``inspect_file`` for every file, in a thread pool; sorted by path."""
    results = []
    with ThreadPool(workers) as pool, progress_bar(len(files), f"check {name}", unit="img",
                                                    enabled=progress) as bar:  # fmt: skip
        for r in pool.imap_unordered(functools.partial(inspect_file, window=window), files, chunksize=32):
            results.append(r)
            bar.update(1)
    results.sort(key=lambda r: r["path"])
    return results


def _file_findings(report: dict, name: str, info: dict, results: list[dict], max_bad_fraction: float) -> None:
    """Undecodable, CMYK, grayscale and misnamed files, and the size range, into ``info`` and the report."""
    err, warn = report["errors"].append, report["warnings"].append
    bad = [r for r in results if r["error"]]
    info["undecodable"] = [r["error"] for r in bad]
    info["cmyk"] = [r["path"] for r in results if r["mode"] == "CMYK"]
    info["grayscale"] = [r["path"] for r in results if r["mode"] in _GRAY_MODES]
    dicoms = [r["dicom"] for r in results if r.get("dicom")]
    if dicoms:
        info["dicom"] = _dicom_summary(dicoms)
    info["wrong_extension"] = [
        f"{r['path']} is {r['format']}"
        for r in results
        if r["format"] and _EXT_FORMATS.get(Path(r["path"]).suffix.lower(), r["format"]) != r["format"]
    ]
    _size_findings(warn, name, info, results)
    if bad:
        frac = len(bad) / len(results)
        msg = f"{name}: {len(bad)} undecodable file(s) ({frac:.1%}), e.g. {bad[0]['error']}"
        (err if frac > max_bad_fraction else warn)(
            msg + (f" -- above the {max_bad_fraction:.0%} a run tolerates" if frac > max_bad_fraction else "")
        )
    _mode_warnings(report, name, info, decoded=len(results) - len(bad))


def _size_findings(warn, name: str, info: dict, results: list[dict]) -> None:
    """The smallest, median and largest images by pixels into ``info`` (per axis, 10x60 and 60x10 made a 60x60 that
    does not exist), and a warning for images under ``TINY_SIDE`` px on a side."""
    sized = sorted((r for r in results if r["size"]), key=lambda r: (r["size"][0] * r["size"][1], r["size"]))
    sizes = [r["size"] for r in sized] or [[0, 0]]
    info["sizes"] = {"min": sizes[0], "median": sizes[len(sizes) // 2], "max": sizes[-1]}
    tiny = [r for r in sized if min(r["size"]) < TINY_SIDE]
    if tiny:
        w, h = tiny[0]["size"]
        warn(f"{name}: {len(tiny)} image(s) under {TINY_SIDE} px on a side, e.g. {tiny[0]['path']} ({w}x{h}): "
             "scaled up to the crop they carry almost nothing")  # fmt: skip


def _mode_warnings(report: dict, name: str, info: dict, decoded: int) -> None:
    """One line each for CMYK, grayscale and misnamed files: grayscale images among colour ones are a warning (they
    become RGB), an all-grayscale split a note (train chooses a one-channel model for it)."""
    warn = report["warnings"].append
    if info["cmyk"]:
        warn(f"{name}: {len(info['cmyk'])} CMYK image(s) (converted to RGB), e.g. {info['cmyk'][0]}")
    gray = info["grayscale"]
    if gray and len(gray) == decoded:
        report["notes"].append(f"{name}: every image is grayscale: train chooses a one-channel model (--in-channels "
                               "auto)")  # fmt: skip
    elif gray:
        warn(f"{name}: {len(gray)} grayscale image(s) among colour ones (made RGB), e.g. {gray[0]}")
    if info["wrong_extension"]:
        warn(
            f"{name}: {len(info['wrong_extension'])} file(s) whose content is another format than the "
            f"extension says (they still load), e.g. {info['wrong_extension'][0]}"
        )


def _dicom_summary(headers: list[dict]) -> dict:
    """What a set of DICOM headers hold: modality, bits stored, photometric interpretation, transfer syntax and
    window counts, and the pixel spacing's spread (mm; min, median, max of the row spacing)."""

    def counts(key, fmt=str) -> dict:
        return dict(Counter(fmt(h[key]) for h in headers).most_common())

    spacing = [h["spacing"][0] for h in headers if h["spacing"]]
    return {
        "files": len(headers),
        "modality": counts("modality"),
        "bits_stored": counts("bits"),
        "photometric": counts("photometric"),
        "transfer_syntax": counts("syntax"),
        "window": counts("window", lambda w: w if isinstance(w, str) else f"{w[0]:g}/{w[1]:g}" if w else "none"),
        "multi_frame": sum(h["frames"] > 1 for h in headers),
        "pixel_spacing_mm": (
            {
                "min": min(spacing),
                "median": float(np.median(spacing)),
                "max": max(spacing),
                "missing": len(headers) - len(spacing),
            }
            if spacing
            else None
        ),
    }


def _format_dicom(d: dict) -> list[str]:
    def top(c: dict) -> str:
        items = list(c.items())
        return ", ".join(f"{k} ({v})" for k, v in items[:6]) + (f" (+{len(items) - 6} more)" if len(items) > 6 else "")

    sp = d["pixel_spacing_mm"]
    spacing = (
        f"{sp['min']:g} / {sp['median']:g} / {sp['max']:g} mm (min / median / max)"
        + (f", {sp['missing']} file(s) without" if sp["missing"] else "")
        if sp
        else "not given"
    )
    return [
        f"  DICOM: {d['files']} file(s); modality: {top(d['modality'])}; bits stored: {top(d['bits_stored'])}",
        f"    photometric: {top(d['photometric'])}; transfer syntax: {top(d['transfer_syntax'])}",
        f"    window (centre/width): {top(d['window'])}; pixel spacing: {spacing}"
        + (f"; multi-frame: {d['multi_frame']} (the first frame is used)" if d["multi_frame"] else ""),
    ]


def _check_pack(root: str, *, progress: bool) -> dict:
    """A pack's report: its manifest and files (``read_manifest``), every chunk checksum, classes per split."""
    report: dict = {"data": root, "ok": True, "errors": [], "warnings": [], "splits": {}, "duplicates": []}
    try:
        manifest = read_manifest(root)
        verify_pack(root, manifest=manifest, progress=progress)
    except UserError as e:
        report["errors"].append(str(e))
        report["ok"] = False
        return report
    classes = list(manifest["classes"])
    for name, info in manifest["splits"].items():
        counts = Counter(np.load(Path(root) / name / "labels.npy").tolist())
        per_class = {c: counts.get(i, 0) for i, c in enumerate(classes)}
        size = [manifest["size"]] * 2
        report["splits"][name] = {
            "root": f"{root}/{name}",
            "images": info["count"],
            "classes": len(classes),
            "per_class": per_class,
            "sizes": {"min": size, "median": size, "max": size},
            "undecodable": [f"{d}: {r}" for d, r in info["skipped"]],
        }
        if info["skipped"]:
            report["warnings"].append(f"{name}: {len(info['skipped'])} file(s) were skipped when packing")
        _imbalance(report, name, report["splits"][name], WARN_RATIO)
        if name == "train" and sum(n > 0 for n in per_class.values()) < 2:
            report["errors"].append("train has fewer than 2 classes with images; classification needs at least 2")
    if "train" not in manifest["splits"]:
        report["errors"].append(f"{root}: the pack has no train split")
    report["ok"] = not report["errors"]
    return report


def format_report(report: dict) -> str:
    """The report as text for a terminal."""
    lines = [f"data: {report['data'] or '(built-in synthetic)'}"]
    for name, s in report["splits"].items():
        lines.append(
            f"\n{name}: {plural(s['images'], 'image')}, {plural(s['classes'], 'class', 'classes')}  ({s['root']})"
        )
        counts = s["per_class"]
        if counts:
            shown = list(counts.items())
            body = ", ".join(f"{c}={n}" for c, n in shown[:20]) + (" ..." if len(shown) > 20 else "")
            lines.append(f"  per class: {body}")
            ratio = s.get("imbalance")
            smallest = "smallest non-empty" if min(counts.values()) == 0 else "smallest"
            lines.append(f"  per class min/max: {min(counts.values())}/{max(counts.values())}"
                         + (f" (largest/{smallest} class: {ratio:.1f}x)" if ratio else ""))  # fmt: skip
        if "sizes" in s:
            z = s["sizes"]
            lines.append(
                f"  image size (WxH) min {z['min'][0]}x{z['min'][1]}, median {z['median'][0]}x"
                f"{z['median'][1]}, max {z['max'][0]}x{z['max'][1]}"
            )
        if s.get("dicom"):
            lines += _format_dicom(s["dicom"])
        for key in ("undecodable", "cmyk", "grayscale", "wrong_extension"):
            if s.get(key):
                lines.append(f"  {key.replace('_', ' ')}: {len(s[key])}")
                lines += [f"    {x}" for x in s[key][:10]]
                if len(s[key]) > 10:
                    lines.append(f"    ... and {len(s[key]) - 10} more")
    if report.get("duplicates"):
        lines.append(f"\nduplicates: {len(report['duplicates'])} group(s)")
        lines += [f"  {' = '.join(g[:4])}" for g in report["duplicates"][:10]]
    lines.append("")
    lines += [f"ERROR: {e}" for e in report["errors"]]
    lines += [f"warning: {w}" for w in report["warnings"]]
    lines += [f"note: {n}" for n in report.get("notes", [])]
    verdict = "OK: this data set would train" if report["ok"] else "NOT OK: this data set would not train"
    lines.append(verdict)
    return "\n".join(lines)
