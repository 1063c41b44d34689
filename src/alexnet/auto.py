"""Settings chosen from the data, and the step count of a time budget: small pure functions, each unit-tested.

``alexnet train DATA`` with no flags must learn on whatever it is given: 1,797 8x8 digits, 3,000 64-px shapes or
60,000 28-px photos. What it needs from the data:

- the crop (``image_size``): about 224/256 of the images' shorter side, at least 64 px (AlexNet's smallest input
  is 63) and at most 224 (the paper's): 28-px images train at 64, not 224 (12x fewer pixels, ~7x faster on a CPU);
- the batch (``batch_size``): the largest of 128, 64, 32, 16 that still gives 50 steps per epoch (4 classes x
  150 images at the fast recipe's old 128 gave 4 steps per epoch and learnt nothing in 3 epochs). Not 256: at equal
  images batch 128 learns more (the photo stand-in, 20,000 images, 6 epochs, seeds 0 / 1: 72.9 / 72.2% against
  68.1 / 67.8% at 256 and lr 0.02), and since fc6 trains as one shared block at small crops
  (``alexnet.shared_fc6``) a step has no large fixed cost left to spread over a larger batch (64 px, fp32, 2-core
  CPU: 281 img/s at batch 128, 283 at 256; batch 256 had 1.2-1.5x the images per second of 128 before, and was the
  default for crops of at most 64 px);
- the learning rate: the paper's 0.01, scaled down by sqrt(batch/32) below batch 32 (0.0071 at 16), and up by
  sqrt(batch/64) above batch 64 (0.0141 at 128, 0.02 at 256). Not raised between 32 and 64: on the built-in data,
  2-minute runs at batch 64 reached 97.6% at lr 0.01 and 90.8% at 0.014; digits at batch 16 reached 97.5% at 0.0071
  and 95.8% at 0.01. At batch 128 on the photo stand-in (6 epochs, seed 0) 0.01 / 0.015 / 0.02 reached 72.9 / 76.2 /
  76.8%, and the 5-minute command on 50,000 of its images 59.6-61.4% at 0.01 and 65.5% at 0.0141 (batch 128 at 0.02
  diverged once on the built-in data, so the lower of the two that won); at 256, 0.02 beat 0.01 and 0.03 wobbled;
- the warm-up: 20 steps, at most half an epoch. AlexNet has no normalisation layers: it sits near chance until its
  lr is large enough, and a 100-step warm-up made that plateau ~150 steps long (50,000 32-px photos at batch 256:
  val top-1 after the first 195 steps 26.4% with 98 warm-up steps, 43.1% and 36.0% with 20);
- dropout: the paper's 0.5 for runs of 30 epochs or more, else none: short runs underfit, and on the built-in data
  dropout 0.5 reached 37% val top-1 after 4 epochs where dropout 0 reached 95% after 8 (README, "Recipes").

``plan_steps`` turns a time budget into a fixed number of optimizer steps from a measured step time.
"""

from __future__ import annotations

import dataclasses
import math
import os

from .config import MIN_IMAGE_SIZE, TrainConfig
from .text import plural

BASE_LR, BASE_BATCH = 0.01, 32  # the peak lr (the paper's, at batch 128), and the batch below which it is scaled down
SQRT_ABOVE = 64  # above it the lr grows with sqrt(batch / 64): 0.0141 at 128, 0.02 at 256 (module docstring)
BATCHES = (128, 64, 32, 16)  # candidates, largest first
STEPS_PER_EPOCH = 50  # the fewest steps per epoch auto batch sizes aim for
WARMUP_STEPS = 20
PAPER_CROP, PAPER_RESIZE = 224, 256
PROBE_IMAGES = 200  # image headers read to find the typical image size
DEFAULT_EPOCHS = 16  # without --time-budget
LONG_RUN_EPOCHS, LONG_DROPOUT = 30, 0.5  # dropout only for long runs: in short ones it slows learning (README)


def choose_image_size(shorter_side: float) -> int:
    """The training crop in px for images whose typical shorter side is ``shorter_side`` px."""
    crop = round(shorter_side * PAPER_CROP / PAPER_RESIZE)
    return max(64, MIN_IMAGE_SIZE, min(PAPER_CROP, crop))


def choose_batch_size(images: int, world_size: int = 1) -> int:
    """The largest of ``BATCHES`` giving at least ``STEPS_PER_EPOCH`` steps per epoch (else the smallest), rounded
    up to a multiple of ``world_size``. Never more than the ``images`` (rounded down to that multiple): 10 images
    train at batch 10, not 16 (less than one batch)."""
    batch = next((b for b in BATCHES if images // b >= STEPS_PER_EPOCH), BATCHES[-1])
    batch = world_size * math.ceil(batch / world_size)
    return min(batch, max(world_size, images - images % world_size))


def scaled_lr(batch_size: int) -> float:
    """The peak lr for ``batch_size``: 0.01, times sqrt(batch/32) below batch 32 and sqrt(batch/64) above 64."""
    return BASE_LR * math.sqrt(min(1.0, batch_size / BASE_BATCH) * max(1.0, batch_size / SQRT_ABOVE))


def choose_warmup_epochs(steps_per_epoch: int) -> float:
    """``WARMUP_STEPS`` steps, at most half an epoch, in epochs (rounded to 3 digits)."""
    return round(min(0.5, WARMUP_STEPS / max(1, steps_per_epoch)), 3)


def warmup_steps(warmup_epochs: float, steps_per_epoch: int) -> int:
    """The optimizer steps below the peak lr: those with step < warmup_epochs x steps_per_epoch (``lr_factor``), so
    half an epoch of 1 step is 1 step (at 1% of the lr), not round(0.5) = 0."""
    return math.ceil(round(warmup_epochs * steps_per_epoch, 6))


# ----------------------------------------------------------------------------------------------------------------
# what the data says


def typical_shorter_side(dataset) -> tuple[float, str]:
    """(median shorter side in px, how it was found) of ``dataset``'s training images, reading headers only."""
    if dataset.kind == "pack":
        return float(dataset.image_size), f"packed at {dataset.image_size} px"
    split = dataset.train
    items = getattr(split, "items", None)
    if items is None or hasattr(items, "shape"):  # CIFAR: an (N, 32, 32, 3) array
        side = int(items.shape[1]) if items is not None else 0
        return float(side), f"{side}x{side} px images"
    from .data.decode import stored_header

    step = max(1, len(items) // PROBE_IMAGES)
    sides, shapes = [], {}
    for path in items[::step][:PROBE_IMAGES]:
        if not os.path.isfile(path):  # a FIFO or device file: the loader reports it; never open it here
            continue
        header = stored_header(path)  # the header only; DICOMs too (Pillow cannot open them)
        if header is None:  # an unreadable file: the loader reports it
            continue
        w, h, _ = header
        sides.append(min(w, h))
        shapes[(w, h)] = shapes.get((w, h), 0) + 1
    if not sides:
        return float(PAPER_RESIZE), "no readable image headers"
    sides.sort()
    median = sides[len(sides) // 2]
    (w, h), count = max(shapes.items(), key=lambda kv: kv[1])
    what = f"{w}x{h} px images" if count == len(sides) else f"median shorter side {median} px"
    return float(median), what


def resolve_auto(cfg: TrainConfig, dataset, world_size: int = 1) -> tuple[TrainConfig, list[str]]:
    """``cfg`` with every setting left to the data (``None``) filled in, and one note per choice saying why."""
    notes, changes = [], {}
    n = len(dataset.train)
    if cfg.image_size is None:
        side, what = typical_shorter_side(dataset)
        crop = choose_image_size(side)
        if dataset.kind == "pack":
            crop = min(crop, dataset.image_size)
        changes["image_size"] = crop
        notes.append(f"image size {crop} px ({what}; AlexNet needs >= {MIN_IMAGE_SIZE}, the paper used 224)")
    batch = cfg.batch_size
    if batch is None:
        batch = choose_batch_size(n, world_size)
        changes["batch_size"] = batch
        notes.append(f"batch {batch} ({n:,} training images: {plural(max(1, n // batch), 'step')} per epoch)")
    if cfg.lr is None:
        changes["lr"] = round(scaled_lr(batch), 6)
        if batch < BASE_BATCH:
            why = f"0.01 x sqrt({batch}/{BASE_BATCH})"
        elif batch > SQRT_ABOVE:
            why = f"the paper's 0.01 x sqrt({batch}/{SQRT_ABOVE})"
        else:
            why = "the paper's lr"
        notes.append(f"lr {changes['lr']:g} ({why})")
    if cfg.warmup_epochs is None:
        steps = max(1, n // batch)
        changes["warmup_epochs"] = choose_warmup_epochs(steps)
        warm = changes["warmup_epochs"]
        notes.append(f"warm-up {plural(warm, 'epoch')} ({plural(warmup_steps(warm, steps), 'step')})")
    if cfg.schedule is None:
        changes["schedule"] = "linear" if cfg.time_budget else "cosine"
    epochs = cfg.epochs
    if epochs is None and not cfg.time_budget:
        changes["epochs"] = epochs = DEFAULT_EPOCHS
    if cfg.dropout is None:
        changes["dropout"] = LONG_DROPOUT if epochs is not None and epochs >= LONG_RUN_EPOCHS else 0.0
        why = "a long run" if changes["dropout"] else "a time budget" if epochs is None else plural(epochs, "epoch")
        notes.append(f"dropout {changes['dropout']:g} ({why}; the paper's 0.5 is for long runs)")
    return dataclasses.replace(cfg, **changes), notes


# ----------------------------------------------------------------------------------------------------------------
# time budget


def plan_steps(
    *,
    remaining: float,
    step_seconds: float,
    steps_done: int,
    steps_per_epoch: int,
    epoch_seconds: float,
    final_seconds: float = 0.0,
    max_steps: int | None = None,
) -> int:
    """The total optimizer steps that fit in ``remaining`` seconds from now, ``steps_done`` steps being done.

    Each further step costs ``step_seconds``; each epoch end from now on costs ``epoch_seconds`` (validation,
    checkpoint); the final evaluation beyond that ``final_seconds``. At least ``steps_done`` (stop now), at most
    ``max_steps``.
    """
    per_step = step_seconds + epoch_seconds / steps_per_epoch

    def cost(total: int) -> float:
        ends = math.ceil(total / steps_per_epoch) - steps_done // steps_per_epoch
        return (total - steps_done) * step_seconds + max(0, ends) * epoch_seconds + final_seconds

    total = steps_done + max(0, int((remaining - final_seconds) / per_step))
    if max_steps is not None:
        total = min(total, max_steps)
    while total > steps_done and cost(total) > remaining:
        total -= 1
    return max(total, steps_done)


def epochs_for(total_steps: int, steps_per_epoch: int) -> int:
    return max(1, math.ceil(total_steps / steps_per_epoch))
