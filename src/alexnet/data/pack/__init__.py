"""Packed data sets (``alexnet data pack``): ``reader`` opens, checks and memory-maps them (its doc has the layout);
``writer`` decodes a source once and writes one (``reader.describe_pack`` says what it wrote)."""

from .reader import (
    IN_PROGRESS,
    LOCK,
    MANIFEST,
    PackedSplit,
    describe_pack,
    is_packed,
    open_packed,
    read_manifest,
    verify_pack,
)
from .writer import pack_dataset, pack_splits

__all__ = [
    "IN_PROGRESS",
    "LOCK",
    "MANIFEST",
    "PackedSplit",
    "describe_pack",
    "is_packed",
    "open_packed",
    "pack_dataset",
    "pack_splits",
    "read_manifest",
    "verify_pack",
]
