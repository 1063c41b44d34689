"""Attribution-map figures (matplotlib, optional extra ``[plots]``): the Grad-CAM grid (``gradcam.png``), the conv5
unit view (``units.png``) of ``alexnet.plots.make_plots``, and one image's map for ``alexnet explain``
(``plot_explanation``)."""

from __future__ import annotations

from pathlib import Path

import torch

from .data.loading.skipped import Skipped, load_readable
from .errors import UserError
from .plotting import (
    DPI,
    EXPLANATION_SIZE,
    HEAT_CMAP,
    imshow_image,
    new_figure,
    overlay,
    plain_text,
    pyplot,
    save,
    show_image,
)

GRADCAM_ROWS, GRADCAM_COLS = 4, 3  # per side (right / wrong) of the Grad-CAM grid
GRADCAM_POOL = 1000  # val images searched for right and wrong predictions: bounds the plot's cost
NUM_UNITS = 6  # conv5 units in the unit view
PATCHES_PER_UNIT = 9  # as in Zeiler & Fergus, Fig. 2
UNIT_POOL = 500  # val images searched for each unit's strongest activations


def _map_label(method: str, layer: str | None, side: int, crop: int) -> str:
    if method == "gradcam":
        return f"Grad-CAM at {layer} ({side}x{side} map, bilinear to {crop} px)"
    return method.replace("-", " ")


@plain_text
def plot_explanation(expl, out: Path, *, name: str = "", layer_side: int | None = None) -> Path:
    """One image: the crop, the raw map (with its scale) and the overlay; predicted and target class in the title.

    ``expl``: an ``alexnet.explain.Explanation``; ``layer_side``: Grad-CAM's map size before upsampling (a label).
    """
    plt = pyplot()
    w, h = EXPLANATION_SIZE
    fig = plt.figure(figsize=(w / DPI, h / DPI), dpi=DPI)
    axes = fig.subplots(1, 3)
    crop = expl.crop.shape[-1]
    show_image(axes[0], expl.crop, f"input ({crop} px crop)")
    im = axes[1].imshow(expl.map.numpy(), cmap=HEAT_CMAP)
    axes[1].set_title(_map_label(expl.method, expl.layer, layer_side or crop, crop), fontsize=8)
    axes[1].set_xticks([])
    axes[1].set_yticks([])
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.02)
    axes[2].imshow(overlay(expl.crop, expl.map))
    axes[2].set_title("overlay", fontsize=8)
    axes[2].set_xticks([])
    axes[2].set_yticks([])
    colour = "green" if expl.predicted_index == expl.target_index else "black"
    fig.suptitle(
        f"{name}\npredicted: {expl.predicted} ({100 * expl.probability:.1f}%)    "
        f"map for: {expl.target} ({100 * expl.target_probability:.1f}%)",
        fontsize=10, color=colour,
    )  # fmt: skip
    fig.tight_layout()
    return save(fig, out)


def _gradcam_figure(
    predictor, val, *, layer: str | None = None, pool: int = GRADCAM_POOL, seed: int = 0, batch: int = 64,
    skipped: Skipped | None = None,
):  # fmt: skip
    """The Grad-CAM grid and its cells: ``(fig, cells)``, each cell a dict with ``ax``, ``index`` (into ``val``),
    ``crop``, ``map``, ``correct``, ``true`` and ``predicted`` (class names)."""
    from .explain import explain_crops, layer_size, resolve_layer

    layer = resolve_layer(predictor.model, layer, predictor.preprocess.crop)
    n = GRADCAM_ROWS * GRADCAM_COLS
    g = torch.Generator().manual_seed(seed + 2)
    order = torch.randperm(len(val), generator=g)[:pool].tolist()
    right: list[tuple[int, torch.Tensor]] = []
    wrong: list[tuple[int, torch.Tensor]] = []
    searched = 0
    for start in range(0, len(order), batch):  # stop as soon as both sides are full
        idx, images = load_readable(val, order[start : start + batch], skipped)
        if not idx:
            continue
        crops = torch.stack([predictor.transform(img) for img in images])
        pred = predictor.probabilities(crops).argmax(1).cpu().tolist()
        searched += len(idx)  # readable images searched
        for i, crop, p in zip(idx, crops, pred):
            side = right if predictor.classes[p] == val.classes[val.labels[i]] else wrong
            if len(side) < n:
                side.append((i, crop))
        if len(right) == n and len(wrong) == n:
            break
    chosen = right + wrong
    expls = []
    if chosen:
        crops = torch.stack([c for _, c in chosen])
        expls = explain_crops(predictor.model, crops, preprocess=predictor.preprocess, classes=predictor.classes,
                              method="gradcam", layer=layer, device=predictor.device)  # fmt: skip
    fig = new_figure("gradcam")
    subs = fig.subfigures(1, 2, wspace=0.04)
    cells = []
    for sub, items, offset, label in ((subs[0], right, 0, "right"), (subs[1], wrong, len(right), "wrong")):
        axes = sub.subplots(GRADCAM_ROWS, GRADCAM_COLS, squeeze=False).ravel()
        sub.suptitle(f"{label} predictions ({len(items)} shown)", color="green" if label == "right" else "red")
        for k, ax in enumerate(axes):
            ax.set_xticks([])
            ax.set_yticks([])
            if k >= len(items):
                ax.axis("off")
                continue
            i, crop = items[k]
            e = expls[offset + k]
            true = val.classes[val.labels[i]]
            ax.imshow(overlay(crop, e.map), interpolation="nearest")
            title = f"{true} ({100 * e.probability:.0f}%)" if label == "right" else f"true: {true}\npred: {e.predicted}"
            ax.set_title(title, fontsize=7, color="black" if label == "right" else "red")
            cells.append({"ax": ax, "index": i, "crop": crop, "map": e.map, "correct": label == "right",
                          "true": true, "predicted": e.predicted})  # fmt: skip
        if not items:
            sub.text(0.5, 0.5, f"none among {searched} val images", ha="center", va="center")
    side = layer_size(predictor.model, layer, predictor.preprocess.crop)
    fig.text(0.5, 0.005, f"Grad-CAM at {layer} for the predicted class ({side}x{side} map, bilinear to "
             f"{predictor.preprocess.crop} px); {searched} val images searched", ha="center", fontsize=8)  # fmt: skip
    return fig, cells


@plain_text
def plot_gradcam(
    predictor, val, out: Path, *, layer: str | None = None, pool: int = GRADCAM_POOL, seed: int = 0,
    skipped: Skipped | None = None,
) -> Path:  # fmt: skip
    """Grad-CAM overlays for the predicted class: right predictions on the left, wrong ones on the right.
    ``layer``: conv1..conv5, or ``None`` for ``alexnet.explain.default_layer``."""
    fig, _ = _gradcam_figure(predictor, val, layer=layer, pool=pool, seed=seed, skipped=skipped)
    return save(fig, out)


def _units_figure(predictor, val, *, layer: str = "conv5", units: int = NUM_UNITS, per_unit: int = PATCHES_PER_UNIT,
                  pool: int = UNIT_POOL, seed: int = 0, skipped: Skipped | None = None):  # fmt: skip
    """The unit view, its cells and the val images searched: ``(fig, cells, searched)``, each cell a dict with ``ax``,
    ``unit``, ``index`` (into ``val``), ``box`` (receptive field in crop px) and ``patch`` (uint8 ``(3, h, w)``)."""
    from .explain import top_patches, unit_maxima

    g = torch.Generator().manual_seed(seed + 3)
    idx, images = load_readable(val, torch.randperm(len(val), generator=g)[:pool].sort().values.tolist(), skipped)
    if not idx:
        raise UserError("units.png: no readable val images to draw")
    crops = torch.stack([predictor.transform(img) for img in images])
    maxima = unit_maxima(predictor.model, crops, predictor.preprocess, layer)
    alive = torch.nonzero(maxima.values.amax(0) > 0).flatten()  # units that fire on some image
    chosen = alive[torch.randperm(len(alive), generator=g)[:units]].sort().values.tolist()  # ZF: a random subset
    found = top_patches(maxima, chosen, per_unit=per_unit)
    fig = new_figure("units")
    rows = max(1, len(chosen))
    axes = fig.subplots(rows, per_unit, squeeze=False)
    cells = []
    for r in range(rows):
        for c in range(per_unit):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            patches = found[chosen[r]] if chosen else []
            if c >= len(patches):
                ax.axis("off")
                continue
            p = patches[c]
            x0, y0, x1, y1 = p.box
            patch = crops[p.index][:, y0:y1, x0:x1]
            imshow_image(ax, patch, interpolation="nearest")
            name = Path(val.describe(idx[p.index])).name
            ax.set_title(f"{name}\n{p.activation:.3g}", fontsize=6)
            if c == 0:
                ax.set_ylabel(f"unit {chosen[r]}", fontsize=9)
            cells.append({"ax": ax, "unit": chosen[r], "index": idx[p.index], "box": p.box, "patch": patch})
    crop = predictor.preprocess.crop
    rf = maxima.field
    note = f"{rf} px, clipped to the {crop} px crop" + (": the whole crop at this size" if rf >= crop else "")
    fig.suptitle(f"{layer} units: the {per_unit} val crops ({len(idx)} searched) that drive each unit hardest, cut to "
                 f"the receptive field of its maximum ({note}); titles: file, activation", fontsize=9)  # fmt: skip
    fig.tight_layout()
    return fig, cells, idx


@plain_text
def plot_units(
    predictor, val, out: Path, *, layer: str = "conv5", seed: int = 0, skipped: Skipped | None = None
) -> Path:
    """Zeiler & Fergus Fig. 2 style: for a few random conv5 units, the 9 val patches that activate each most."""
    fig, _, _ = _units_figure(predictor, val, layer=layer, seed=seed, skipped=skipped)
    return save(fig, out)
