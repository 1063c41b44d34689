"""Data: sources (folders, ImageNet, CIFAR, synthetic), decoding, transforms, batched device ops, stats, checks."""

from .check import check_dataset, format_report
from .decode import DecodeError, decode_image
from .device_ops import normalize, pca_noise, to_unit
from .sources import UnlabelledValError, open_splits
from .split import Split
from .stats import compute_stats, load_or_compute_stats
from .synthetic import default_synthetic, make_synthetic
from .transforms import EvalTransform, TenCrop, TrainTransform, center_crop, resize_shorter

__all__ = [
    "DecodeError",
    "EvalTransform",
    "Split",
    "TenCrop",
    "TrainTransform",
    "UnlabelledValError",
    "center_crop",
    "check_dataset",
    "compute_stats",
    "decode_image",
    "default_synthetic",
    "format_report",
    "load_or_compute_stats",
    "make_synthetic",
    "normalize",
    "open_splits",
    "pca_noise",
    "resize_shorter",
    "to_unit",
]
