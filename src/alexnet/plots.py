"""Pictures of a run (matplotlib, optional extra ``[plots]``), written as PNGs to ``RUN_DIR/plots/``.

- ``curves.png``: train/val loss, val top-1/top-5, learning rate and img/s per epoch (from ``metrics.jsonl``);
- ``conv1_filters.png``: every first-layer kernel as a contrast-normalised RGB image (paper Figure 3); for
  ``alexnet2012`` the two 48-kernel groups ("GPU 1" and "GPU 2") side by side;
- ``confusion.png``: the row-normalised confusion matrix from ``eval.json`` with class names up to 100 classes;
  beyond that, the matrix without names and the most frequent confusions listed beside it;
- ``neighbours.png``: for a few val images, the six training images closest in fc7 space (paper Figure 4, right);
- ``predictions.png``: a grid of val images with their true and predicted labels;
- ``gradcam.png``: Grad-CAM at conv5 over val images, right predictions on the left, wrong ones on the right
  (``alexnet.explain``);
- ``units.png``: for a few conv5 units, the 9 val crops that drive each hardest, cut to the receptive field of the
  maximum (paper-era unit view: Zeiler & Fergus 2014, Fig. 2).

Every figure has a fixed size in pixels (``plotting.SIZES``), whatever the data. The Grad-CAM and unit figures (and
``alexnet explain``'s one-image map) are drawn by ``alexnet.map_plots``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data.loading.skipped import Skipped, load_readable
from .errors import UserError
from .map_plots import plot_gradcam, plot_units
from .outputs import prepare_output
from .plotting import (
    filter_grid,
    monospace,
    new_figure,
    plain_text,
    pyplot,
    save,
    show_image,
    top_confusions,
)

NUM_QUERIES = 5  # val images in the neighbours figure
NUM_NEIGHBOURS = 6  # as in the paper's Figure 4
NEIGHBOUR_POOL = 5000  # training images searched (a random subset when there are more): bounds the plot's cost
NAMED_CLASSES_MAX = 100  # above this the confusion matrix drops the names and lists top confusions instead


def nearest_neighbours(
    queries: torch.Tensor, keys: torch.Tensor, k: int, *, chunk_size: int = 8192
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` rows of ``keys`` (N, D) closest to each row of ``queries`` (Q, D) in Euclidean distance.

    Returns ``(distances, indices)``, both (Q, k), nearest first. Keys are scanned in chunks of ``chunk_size`` so
    memory stays at Q x chunk_size distances; runs on whatever device the tensors are on.
    """
    if k > len(keys):
        raise ValueError(f"k={k} neighbours requested but only {len(keys)} keys")
    best_d = queries.new_full((len(queries), 0), float("inf"))
    best_i = torch.empty((len(queries), 0), dtype=torch.long, device=queries.device)
    for start in range(0, len(keys), chunk_size):
        chunk = keys[start : start + chunk_size]
        # exact differences (not the |a|^2 + |b|^2 - 2ab matmul trick, which loses precision for close points)
        d = torch.cdist(queries, chunk, compute_mode="donot_use_mm_for_euclid_dist")  # (Q, chunk)
        idx = torch.arange(start, start + len(chunk), device=queries.device).expand(len(queries), -1)
        d, idx = torch.cat([best_d, d], 1), torch.cat([best_i, idx], 1)
        best_d, order = d.topk(min(k, d.shape[1]), dim=1, largest=False, sorted=True)
        best_i = idx.gather(1, order)
    return best_d, best_i


# ----------------------------------------------------------------------------------------------------------------
# reading a run


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``; a torn last line (a killed run) is skipped."""
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _checkpoint(run_dir: Path) -> Path:
    for name in ("best.pt", "last.pt"):
        if (run_dir / "checkpoints" / name).is_file():
            return run_dir / "checkpoints" / name
    raise UserError(f"{run_dir}: no checkpoints/best.pt or checkpoints/last.pt; is this a run directory?")


# ----------------------------------------------------------------------------------------------------------------
# the figures


@plain_text
def plot_curves(metrics: list[dict[str, Any]], out: Path, *, num_classes: int | None = None) -> Path:
    """Train/val loss, val top-1/top-5, lr and img/s per epoch, from the ``kind == "epoch"`` records; top-5 only
    with more than 5 classes (``evaluate.shows_top5``: with fewer it is 100% throughout)."""
    from .evaluate import shows_top5

    epochs = [r for r in metrics if r.get("kind") == "epoch"]
    fig = new_figure("curves")
    axes = fig.subplots(2, 2)

    def series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
        pts = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    ax = axes[0, 0]
    for key, style in (("train_loss", "-o"), ("val_loss", "-s")):
        ax.plot(*series(epochs, key), style, ms=3, label=key.replace("_", " "))
    ax.set(title="loss", xlabel="epoch", ylabel="cross-entropy")
    ax.legend()
    ax = axes[0, 1]
    for key in ("val_top1", "val_top5") if num_classes is None or shows_top5(num_classes) else ("val_top1",):
        x, y = series(epochs, key)
        ax.plot(x, [100 * v for v in y], "-o", ms=3, label=key.replace("_", " "))
    ax.set(title="validation accuracy", xlabel="epoch", ylabel="%")
    ax.legend()
    ax = axes[1, 0]
    ax.plot(*series(epochs, "lr"), "-o", ms=3)
    ax.set(title="learning rate", xlabel="epoch", ylabel="lr")
    ax = axes[1, 1]
    ax.plot(*series(epochs, "img_per_s"), "-o", ms=3)
    ax.set(title="throughput", xlabel="epoch", ylabel="images / s")
    fig.tight_layout()
    return save(fig, out)


@plain_text
def plot_filters(weight: torch.Tensor, arch: str, out: Path) -> Path:
    """The conv1 kernels; for ``alexnet2012`` the two groups that fed the two GPUs' conv2 halves, side by side."""
    fig = new_figure("conv1_filters")
    k = weight.shape[0]
    if arch == "alexnet2012":
        halves = [("GPU 1 (kernels 1-48)", weight[: k // 2]), ("GPU 2 (kernels 49-96)", weight[k // 2 :])]
        for i, (title, w) in enumerate(halves):
            ax = fig.add_subplot(1, 2, i + 1)
            ax.imshow(filter_grid(w, cols=8), interpolation="nearest")
            ax.set_title(title)
            ax.axis("off")
    else:
        ax = fig.add_subplot(1, 1, 1)
        ax.imshow(filter_grid(weight, cols=16 if k > 64 else 8), interpolation="nearest")
        ax.axis("off")
    size = "x".join(str(s) for s in weight.shape[1:])
    fig.suptitle(f"conv1: {k} kernels of {size}, each contrast-normalised")
    fig.tight_layout()
    return save(fig, out)


@plain_text
def plot_confusion(report: dict[str, Any], out: Path) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted)."""
    cm = np.asarray(report["confusion"], dtype=np.int64)
    classes = list(report["classes"])
    n = len(classes)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig = new_figure("confusion")
    named = n <= NAMED_CLASSES_MAX
    ax = fig.add_axes([0.2, 0.2, 0.75, 0.72] if named else [0.05, 0.08, 0.55, 0.84])
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    top1 = report.get("top1")
    ax.set_title(f"confusion matrix, {n} classes" + (f", top-1 {100 * top1:.1f}%" if top1 is not None else ""))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if named:
        fs = max(4.0, min(10.0, 600 / max(n, 1) / 1.2))  # ~ 8 px per label at 100 classes
        ax.set_xticks(range(n), classes, rotation=90, fontsize=fs)
        ax.set_yticks(range(n), classes, fontsize=fs)
        if n <= 20:  # counts in the cells
            for t in range(n):
                for p in range(n):
                    if cm[t, p]:
                        color = "white" if norm[t, p] > 0.5 else "black"
                        ax.text(p, t, str(cm[t, p]), ha="center", va="center", fontsize=8, color=color)
    else:
        lines = [f"{c:>5}  {t[:22]} -> {p[:22]}" for t, p, c in top_confusions(cm, classes)]
        fig.text(0.66, 0.92, "most frequent confusions\n(count  true -> predicted)\n\n" + "\n".join(lines),
                 va="top", family=monospace(), fontsize=8)  # fmt: skip
    return save(fig, out)


@plain_text
def plot_neighbours(predictor, train, val, out: Path, *, pool: int = NEIGHBOUR_POOL, seed: int = 0,
                    skipped: dict[str, Skipped] | None = None) -> Path:  # fmt: skip
    """Paper Figure 4 (right): each row a val image, then its six nearest training images in fc7 space. Images that
    do not decode are skipped (``skipped``: the record per split name), as training skipped them."""
    skipped = skipped or {}
    g = torch.Generator().manual_seed(seed)
    keys_order = torch.randperm(len(train), generator=g)[:pool].sort().values.tolist()
    keys_idx, keys = [], []
    for start in range(0, len(keys_order), 64):  # decoded once, 64 at a time: memory bounded whatever the pool
        kept, images = load_readable(train, keys_order[start : start + 64], skipped.get(train.name))
        if images:
            keys_idx += kept
            keys.append(predictor.features(images, layer="fc7"))  # (k, 4096)
    query_order = torch.randperm(len(val), generator=g).tolist()
    query_idx, query_images = load_readable(val, query_order, skipped.get(val.name), want=NUM_QUERIES)
    if not keys or not query_idx:
        raise UserError(f"{out.name}: no readable {'training' if not keys else 'val'} images to draw")
    keys = torch.cat(keys).to(predictor.device)  # (N, 4096)
    queries = predictor.features(query_images, layer="fc7").to(predictor.device)  # (Q, 4096)
    dist, nn_idx = nearest_neighbours(queries, keys, min(NUM_NEIGHBOURS, len(keys)))
    dist, nn_idx = dist.cpu(), nn_idx.cpu()
    fig = new_figure("neighbours")
    cols = 1 + NUM_NEIGHBOURS
    axes = fig.subplots(len(query_idx), cols, squeeze=False)
    for r, (q, image) in enumerate(zip(query_idx, query_images)):
        show_image(axes[r, 0], predictor.transform(image), f"val: {val.classes[val.labels[q]]}", "C0")
        for c in range(cols - 1):
            ax = axes[r, c + 1]
            if c >= nn_idx.shape[1]:
                ax.axis("off")
                continue
            j = keys_idx[int(nn_idx[r, c])]
            show_image(ax, predictor.transform(train.load(j)), f"{train.classes[train.labels[j]]} d={dist[r, c]:.1f}")
    fig.suptitle(f"nearest training images in fc7 space (Euclidean, among {len(keys_idx)} training images)")
    fig.tight_layout()
    return save(fig, out)


@plain_text
def plot_predictions(predictor, val, out: Path, *, n: int = 16, seed: int = 0, skipped: Skipped | None = None) -> Path:
    """A grid of val images titled ``true / predicted (probability)``; wrong predictions in red."""
    g = torch.Generator().manual_seed(seed + 1)
    idx, images = load_readable(val, torch.randperm(len(val), generator=g).tolist(), skipped, want=n)
    if not idx:
        raise UserError(f"{out.name}: no readable val images to draw")
    crops = [predictor.transform(img) for img in images]
    probs = predictor.probabilities(torch.stack(crops)).cpu()
    p, pred = probs.max(1)
    fig = new_figure("predictions")
    side = int(np.ceil(np.sqrt(n)))
    axes = fig.subplots(side, side, squeeze=False).ravel()
    for ax in axes[len(idx) :]:
        ax.axis("off")
    for ax, i, crop, pi, pr in zip(axes, idx, crops, p.tolist(), pred.tolist()):
        true = val.classes[val.labels[i]]
        guess = predictor.classes[pr]
        show_image(ax, crop, f"true: {true}\npred: {guess} ({100 * pi:.0f}%)", "green" if guess == true else "red")
    fig.suptitle("val predictions (green: right, red: wrong)")
    fig.tight_layout()
    return save(fig, out)


# ----------------------------------------------------------------------------------------------------------------


FIGURES = (
    "curves.png",
    "conv1_filters.png",
    "confusion.png",
    "neighbours.png",
    "predictions.png",
    "gradcam.png",
    "units.png",
)  # fmt: skip  (the files make_plots writes)


def _plot_splits(predictor, run_dir: Path, data: str | None) -> tuple:
    """(train, val, the data set's source) for the figures of images: ``data``'s, else the run's own (its held-out
    split included). A val class the model does not predict is a ``UserError``, as for ``alexnet evaluate``: every
    prediction of it would be drawn wrong."""
    from .data.sources import match_classes, open_dataset

    if data is None:
        from .data.holdout import open_run_dataset

        dataset = open_run_dataset(predictor.info.config or {}, _checkpoint(run_dir))
    else:
        dataset = open_dataset(data)
    train, val = dataset.train, dataset.val
    if train is None or val is None or len(val) == 0:
        how = "a folder with train/ and val/" if data is not None else "give one with --data"
        raise UserError(f"{dataset.source}: needs train and val splits for the neighbour, prediction, Grad-CAM and "
                        f"unit figures ({how})")  # fmt: skip
    match_classes(val.classes, predictor.classes, source=dataset.source, model=str(_checkpoint(run_dir)),
                  remedy="give --data a data set with the model's classes")  # fmt: skip
    return train, val, dataset.source


def make_plots(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    data: str | None = None,
    device: str = "auto",
    overwrite: bool = True,
) -> list[Path]:
    """Write every figure the run has the inputs for into ``out_dir`` (default ``RUN_DIR/plots``); return the paths.

    ``data`` overrides the data set recorded in the checkpoint's config for the figures of images (neighbours,
    predictions, Grad-CAM, units); its val classes must be among the model's. The curves come from ``metrics.jsonl``
    and the confusion matrix from the run's ``eval.json``, whatever ``data``.
    ``overwrite=False``: a ``UserError`` before any work if one of the ``FIGURES`` exists there (``alexnet plot``'s
    rule, as for features and export; a training run replaces its own).
    """
    from .predict import load

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "a file; give the run's folder (the one holding checkpoints/)" if run_dir.exists() else (
            "no such run directory")  # fmt: skip
        raise UserError(f"{run_dir}: {what}")
    pyplot()  # fail early, with the extra's name, if matplotlib is missing
    out = Path(out_dir) if out_dir is not None else run_dir / "plots"
    prepare_output(out / FIGURES[0], also=[out / f for f in FIGURES[1:]], overwrite=overwrite)
    predictor = load(_checkpoint(run_dir), device=device)
    train, val, source = _plot_splits(predictor, run_dir, data)  # before any figure: a wrong --data left three written
    written = []
    if (run_dir / "metrics.jsonl").is_file():
        written.append(
            plot_curves(
                read_metrics(run_dir / "metrics.jsonl"), out / "curves.png", num_classes=predictor.info.num_classes
            )
        )
    conv1 = predictor.model.features[0].weight
    written.append(plot_filters(conv1, predictor.info.arch, out / "conv1_filters.png"))
    if (run_dir / "eval.json").is_file():
        written.append(plot_confusion(json.loads((run_dir / "eval.json").read_text()), out / "confusion.png"))
    # images that do not decode are skipped as training skipped them (and named them): one line per split counts them
    skipped = {s.name: Skipped(s.name, str(getattr(s, "root", source)), len(s), 1.0, named=0)
               for s in (train, val)}  # fmt: skip
    written.append(plot_neighbours(predictor, train, val, out / "neighbours.png", skipped=skipped))
    written.append(plot_predictions(predictor, val, out / "predictions.png", skipped=skipped[val.name]))
    written.append(plot_gradcam(predictor, val, out / "gradcam.png", skipped=skipped[val.name]))
    written.append(plot_units(predictor, val, out / "units.png", skipped=skipped[val.name]))
    for record in skipped.values():
        record.summarise()
    return written
