"""The settings of ``alexnet bench`` (``alexnet.bench.run_bench``): one dataclass, checked when it is made, from which
the command generates its flags. No torch here: the CLI reads it to build ``alexnet bench --help``."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .names import (
    ARCHS,
    DEVICE_HELP,
    DEVICE_PATTERN,
    MAX_CROP_DEFAULT_RESIZE,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    PRECISIONS,
)
from .settings import setting, validate_fields


def _cpu_count() -> int:
    return os.cpu_count() or 1


@dataclass
class BenchConfig:
    """What to measure and for how long. Construction checks every value (``UserError`` naming the flag)."""

    data: str | None = setting(None, "image folder, CIFAR or pack dir", flags=(), none_text="generated")
    arch: str = setting("alexnet", "architecture", choices=ARCHS)
    batch_size: int = setting(256, "images per step", low=1)
    # the images are packed at the crop's default resize (x 256/224), which must stay within MAX_IMAGE_SIZE
    image_size: int = setting(224, "training crop in px", low=MIN_IMAGE_SIZE, high=MAX_CROP_DEFAULT_RESIZE,
                              why="AlexNet's smallest input is 63 px; images are packed at crop x 256/224, at most "
                              f"{MAX_IMAGE_SIZE} px")  # fmt: skip
    precision: str = setting(
        "auto", "autocast precision (auto: bf16 or fp16 on GPUs, fp32 on CPUs)", choices=PRECISIONS
    )
    channels_last: bool = setting(False, "channels-last memory format", switch=True)
    compile: bool = setting(False, "torch.compile the model", switch=True)
    steps: int = setting(20, "batches per timed window, at least", low=1)
    min_time: float = setting(1.0, "seconds per timed window, at least (more batches for fast rows)", low=0)
    repeats: int = setting(3, "timed windows (the median is reported)", low=1)
    warmup: int = setting(3, "untimed batches before timing", low=0)
    workers: int = setting(help="DataLoader workers (reference and folder pipelines) / pack processes",
                           factory=_cpu_count, low=0, default_text="the CPU count")  # fmt: skip
    synthetic_images: int = setting(2000, "generated train images without DATA", low=1)
    max_images: int = setting(4000, "with DATA: pack at most this many train images, evenly spaced (ImageNet would "
                              "be 250 GB)", low=1)  # fmt: skip
    device: str = setting("auto", DEVICE_HELP, pattern=DEVICE_PATTERN, pattern_rule=f"choose from {DEVICE_HELP}")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every value's type, range and choice (``InvalidSetting``, a ``UserError``, names the first wrong
        one)."""
        validate_fields(self)
