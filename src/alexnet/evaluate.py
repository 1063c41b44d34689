"""Metrics: loss, top-1/top-5, per-class accuracy, confusion matrix, and the paper's ten-crop averaging.

The pure functions work on whole batches on any device; ``evaluate`` runs a model over a loader, keeps the running
sums on the device (no per-batch sync) and, under DDP, all-reduces them so every rank gets the global report.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .device import autocast
from .progress import progress
from .text import plural, printable


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> torch.Tensor:
    """Number of samples whose label is among the top-k scores, for each k: an int64 tensor of len(ks)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices  # (B, kmax)
    hit = top == labels[:, None]  # (B, kmax), at most one True per row
    return torch.stack([hit[:, : min(k, kmax)].any(dim=1).sum() for k in ks])


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts; rows are true classes, columns predicted ones."""
    idx = labels * num_classes + preds
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def precision_recall_f1(confusion: torch.Tensor) -> dict:
    """Per-class precision, recall and F1 from a (C, C) confusion matrix (rows true, columns predicted), and their
    unweighted (macro) means.

    Returns ``{"precision": [C], "recall": [C], "f1": [C], "support": [C], "macro": {"precision", "recall", "f1"}}``.
    A ratio with nothing to count (a class never predicted has no precision) is 0; the macro means are over the classes
    that occur among the labels or the predictions, as sklearn's ``precision_recall_fscore_support`` does by default,
    so a class absent from the split does not pull them down.
    """
    conf = confusion.double()
    tp = conf.diag()
    predicted, actual = conf.sum(dim=0), conf.sum(dim=1)  # (C,) column and row totals
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), 0.0)
    recall = torch.where(actual > 0, tp / actual.clamp_min(1), 0.0)
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-300), 0.0)
    seen = (predicted + actual) > 0
    macro = {k: (v[seen].mean().item() if seen.any() else 0.0) for k, v in
             (("precision", precision), ("recall", recall), ("f1", f1))}  # fmt: skip
    return {
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": actual.long().tolist(),
        "macro": macro,
    }


def ten_crop_probs(logits: torch.Tensor) -> torch.Tensor:
    """paper §4.1: average the softmax over the views. ``logits`` (B, V, C) -> probabilities (B, C)."""
    return logits.float().softmax(dim=-1).mean(dim=1)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    num_classes: int,
    classes: Sequence[str] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    distributed: bool = False,
    desc: str | None = None,
    flip: bool = False,
) -> dict:
    """Run ``model`` in eval mode over ``(x, y)`` batches; x is (B, 3, H, W) or (B, 10, 3, H, W) for ten crops.
    ``desc``: show progress under this name (a bar on a terminal, a line every 30 s elsewhere). ``flip``: each
    (B, 3, H, W) batch is seen with its mirror too (two views, averaged as the ten crops are; training mirrors images
    half the time, so the model knows both), and the report's ``"centre"`` holds the loss, top-1 and top-5 of the
    image alone (the same numbers as ``flip=False``: one pass gives both).

    Returns ``{"count", "loss", "top1", "top5", "per_class": {name: acc}, "precision" / "recall" / "f1" /
    "support": {name: value}, "macro": {"precision", "recall", "f1"}, "confusion": [[int]], "classes"}``; loss is the
    mean cross-entropy (of the averaged ten-crop probabilities when ten crops are given); per-class accuracy is the
    class's recall; see ``precision_recall_f1`` for the conventions.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros(2, dtype=torch.int64, device=device)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    centre_loss = torch.zeros((), dtype=torch.float64, device=device)  # with ``flip``: the first view alone
    centre_correct = torch.zeros(2, dtype=torch.int64, device=device)
    flipped = False
    bar = progress(len(batches) if hasattr(batches, "__len__") else None, desc or "", unit="batch", enabled=bool(desc))
    for x, y in batches:
        bar.update(1)
        if flip and x.dim() == 4:
            x, flipped = torch.stack((x, x.flip(-1)), dim=1), True  # (B, 2, 3, H, W): the image and its mirror
        with autocast(device, dtype):
            if x.dim() == 5:  # (B, V, 3, H, W): V views per image (ten crops, or an image and its mirror)
                b, v = x.shape[:2]
                logits = model(x.flatten(0, 1)).float().view(b, v, -1)
                if flipped:
                    centre_loss += F.cross_entropy(logits[:, 0], y, reduction="sum").double()
                    centre_correct += topk_correct(logits[:, 0], y, (1, 5))
                probs = ten_crop_probs(logits)
                scores = probs
                loss_sum += F.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="sum").double()
            else:
                scores = model(x).float()
                loss_sum += F.cross_entropy(scores, y, reduction="sum").double()
        correct += topk_correct(scores, y, (1, 5))
        confusion += confusion_matrix(scores.argmax(dim=1), y, num_classes)
        count += y.numel()
    bar.close()
    if distributed:
        for t in (loss_sum, correct, confusion, count, centre_loss, centre_correct):
            dist.all_reduce(t)
    model.train(was_training)
    n = max(int(count.item()), 1)  # .item() syncs once, at the end
    conf = confusion.cpu()
    names = list(classes) if classes is not None else [str(i) for i in range(num_classes)]
    per_class_total = conf.sum(dim=1).clamp_min(1)
    per_class = (conf.diag().double() / per_class_total).tolist()
    prf = precision_recall_f1(conf)
    centre = ({"centre": {"loss": centre_loss.item() / n, "top1": centre_correct[0].item() / n,
                          "top5": centre_correct[1].item() / n}} if flipped else {})  # fmt: skip
    return {
        **centre,
        "count": int(count.item()),
        "loss": loss_sum.item() / n,
        "top1": correct[0].item() / n,
        "top5": correct[1].item() / n,
        "per_class": dict(zip(names, per_class)),
        **{k: dict(zip(names, prf[k])) for k in ("precision", "recall", "f1", "support")},
        "macro": prf["macro"],
        "confusion": conf.tolist(),
        "classes": names,
    }


def shows_top5(num_classes: int) -> bool:
    """Whether a summary line shows top-5: only with more than 5 classes (with 5 or fewer it is always 100%; the
    reports and metrics.jsonl keep the number)."""
    return num_classes > 5


def format_report(report: dict, max_classes: int = 20) -> str:
    """A short human summary: totals (top-5 only with more than 5 classes), macro precision / recall / F1, then a
    table of the classes with the lowest F1 (at most ``max_classes`` rows; all of them when there are no more)."""
    top5 = f"  top-5: {100 * report['top5']:.2f}%" if shows_top5(len(report["f1"])) else ""
    lines = [f"images: {report['count']}  loss: {report['loss']:.4f}  top-1: {100 * report['top1']:.2f}%{top5}"]
    m = report["macro"]
    lines.append(f"macro precision: {100 * m['precision']:.2f}%  recall: {100 * m['recall']:.2f}%  "
                 f"F1: {100 * m['f1']:.2f}%")  # fmt: skip
    rows = sorted(report["f1"], key=lambda c: (report["f1"][c], c))
    names = {c: printable(c) for c in rows}  # class-folder names may hold tabs, line breaks, escape sequences
    if not rows:
        return "\n".join(lines)
    shown = rows[:max_classes]
    width = max(5, *(len(names[c]) for c in shown))
    title = (
        "per class"
        if len(shown) == len(rows)
        else f"the {plural(len(shown), 'class', 'classes')} of {len(rows)} with the lowest F1"
    )
    lines.append(f"{title}:")
    lines.append(f"  {'class':<{width}}  precision  recall      F1  images")  # each column right-aligned
    for c in shown:
        p, r, f = (100 * report[k][c] for k in ("precision", "recall", "f1"))
        lines.append(f"  {names[c]:<{width}}  {p:8.1f}%  {r:5.1f}%  {f:5.1f}%  {report['support'][c]:6d}")
    return "\n".join(lines)


def report_csv(report: dict) -> str:
    """The per-class table of ``report`` (``evaluate``'s) as CSV text, one row per class in the model's order:
    class, images, correct, accuracy, precision, recall, f1 (fractions in [0, 1]). The totals and the confusion
    matrix are in the JSON report only."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["class", "images", "correct", "accuracy", "precision", "recall", "f1"])
    for i, name in enumerate(report["classes"]):
        row = [report[k][name] for k in ("per_class", "precision", "recall", "f1")]
        writer.writerow([name, report["support"][name], report["confusion"][i][i], *row])
    return out.getvalue()


def _dataset(data: str | None, config: dict, model_path: str):
    """``data``, or else the data set the model's run trained on (with its held-out val split, if it made one)."""
    from .data.sources import open_dataset
    from .errors import UserError
    from .export import PATHS_LEFT_OUT

    if data is not None:
        return open_dataset(data)
    if not config:  # a run's checkpoint always has a config (data None = the built-in set)
        raise UserError(f"{model_path} records no data set: give DATA")
    if config.get(PATHS_LEFT_OUT):
        raise UserError(f"{model_path} is an export, which leaves the training data's path out: give DATA")
    from .data.holdout import open_run_dataset

    return open_run_dataset(config, model_path)


def evaluate_file(
    model_path: str,
    data: str | None = None,
    *,
    split: str = "val",
    ten_crop: bool = False,
    flip: bool = False,
    batch_size: int = 100,
    workers: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    allow_class_mismatch: bool = False,
    max_bad_fraction: float = 0.01,
    progress: bool = False,
) -> dict:
    """Evaluate a checkpoint / weights file on ``data`` (default: the data set recorded in the checkpoint).

    ``data`` is anything ``open_dataset`` opens, packs and a single folder of class sub-folders included (which then
    serves as the split). Preprocessing comes from the file (a torchvision weights file: ImageNet's). The data's
    classes are matched to the model's by name (order may differ); a class the model does not know is a
    ``UserError`` unless ``allow_class_mismatch``, which scores by position and says so in ``report["warnings"]``.
    An ``.onnx`` export runs through onnxruntime (on the CPU, fp32). ``flip``: average each image's softmax with its
    mirror's, as a training run's final report does (ignored with ``ten_crop``: its ten views hold the mirrors).
    Unreadable images are skipped and listed in ``report["bad_files"]``; more than ``max_bad_fraction`` of the split
    is a ``UserError``.
    """
    from .data.loading import make_loader
    from .data.sources import match_classes, relabel
    from .device import resolve_device, resolve_precision
    from .errors import UserError
    from .weights import model_from_file

    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1")
    if workers is not None and workers < 0:
        raise UserError(f"--workers {workers}: must be 0 or more")
    if not 0 <= max_bad_fraction <= 1:
        raise UserError(f"--max-bad-fraction {max_bad_fraction:g}: must be in [0, 1]")
    # an export: onnxruntime on the CPU, classes and preprocess from its metadata
    if str(model_path).lower().endswith(".onnx"):
        from .predict import OnnxPredictor

        onnx = OnnxPredictor(model_path, device="cpu")
        model, device, precision = onnx.as_module(), "cpu", "fp32"
        info = onnx.info
    else:
        model, info = model_from_file(model_path)
    dataset = _dataset(data, info.config or {}, model_path)
    chosen = dataset.split(split)
    classes, warnings = list(info.classes), []
    left_out = getattr(chosen, "left_out", None)  # a folder's files that are not images (listing.LeftOut); no pack's
    if left_out is not None and (said := left_out.line()):  # said as train says it
        warnings.append(said)
        print(f"warning: {said}", file=sys.stderr)
    try:
        chosen = relabel(chosen, match_classes(chosen.classes, classes, source=dataset.source, model=str(model_path)),
                         classes)  # fmt: skip
    except UserError as e:
        if not allow_class_mismatch or len(chosen.classes) > len(classes):
            raise
        warnings.append(f"class names differ, scored by position as --allow-class-mismatch asks: {e}")
        print(f"warning: {warnings[-1]}", file=sys.stderr)
        chosen = relabel(chosen, range(len(chosen.classes)), classes)
    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev)
    loader = make_loader(chosen, info.preprocess, batch_size=max(1, batch_size // 10) if ten_crop else batch_size,
                         ten_crop=ten_crop, device=dev, workers=workers,
                         max_bad_fraction=max_bad_fraction)  # fmt: skip
    model.to(dev)
    desc = f"evaluate {dataset.source} ({split})" if progress else None
    flip = flip and not ten_crop  # the ten crops hold the mirrors
    report = evaluate(model, loader, num_classes=len(classes), classes=classes, device=dev, dtype=dtype,
                      desc=desc, flip=flip)  # fmt: skip
    report.update(model=str(model_path), data=dataset.source, split=split, ten_crop=ten_crop, flip=flip,
                  bad_files=loader.bad_files, warnings=warnings)  # fmt: skip
    return report
