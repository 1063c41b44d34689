"""Reading a ``torch.save`` file that may be hostile: ``weights_only=True``, and its size bounded before and after.

A 1 MB file can inflate to a 1 GiB tensor (a recompressed zip) or describe one (a stride-0 view of a small storage,
which any copy, export or ``.contiguous()`` materialises): both are refused with one line naming the file.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from .errors import WeightsError
from .limits import limits

MAX_INFLATION = 4  # unpacked / on-disk size of a weights file; torch.save writes ~1.0


def check_inflated_size(path: Path) -> None:
    """Refuse a file whose contents would inflate past ``limits().max_weights_bytes`` (torch.save writes a zip; its
    entries may be compressed: a 1 MB file can hold a 1 GiB tensor). Checked from the zip directory, before loading."""
    import zipfile

    limit = limits().max_weights_bytes
    on_disk = size = path.stat().st_size
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                size = sum(i.file_size for i in z.infolist())
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise WeightsError(f"{path}: not a readable weights file (broken zip: {e})") from None
    # torch.save stores its entries uncompressed (inflated size ~ file size); a file that inflates far beyond its
    # size was recompressed by someone, and is refused before it allocates (1 MB on disk -> a 1 GiB tensor)
    if size > max(MAX_INFLATION * on_disk, 64 << 20):
        raise WeightsError(
            f"{path}: its {on_disk:,} bytes inflate to {size:,} ({size / max(on_disk, 1):.0f}x); torch.save never "
            "compresses, so this file was made to exhaust memory. Refused"
        )
    if size > limit:
        raise WeightsError(
            f"{path}: holds {size:,} bytes once unpacked, over the {limit:,}-byte limit for weights files "
            "(raise ALEXNET_MAX_WEIGHTS_BYTES if it is genuine)"
        )


def torch_load(path: Path) -> Any:
    check_inflated_size(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # PyTorch's text suggests weights_only=False: never say that about a file
        if not looks_like_torch_save(path):  # a text or JSON file: "invalid load key", not a pickle that runs code
            raise WeightsError(f"{path}: {unreadable_reason(path, e)}") from None
        raise WeightsError(
            f"{path}: refused to load: it holds Python objects other than tensors and plain values, and loading it "
            "could run code. If you trust where it came from, re-save its state_dict (or export it as safetensors) "
            "in that trusted environment"
        ) from None
    except Exception as e:  # a torn or foreign file fails in many ways inside the unpickler
        raise WeightsError(f"{path}: {unreadable_reason(path, e)}") from None
    check_tensor_bytes(obj, path)
    return obj


def looks_like_torch_save(path: Path) -> bool:
    """Whether ``path`` starts as torch.save's output does: a zip archive, or a legacy pickle (protocol byte)."""
    import zipfile

    with open(path, "rb") as f:
        head = f.read(2)
    return zipfile.is_zipfile(path) or head.startswith(b"\x80")


def unreadable_reason(path: Path, error: Exception) -> str:
    """Why ``torch.load`` failed on ``path``, in words: torch.save writes a zip archive (a legacy file starts with a
    pickle's protocol byte); a file that is neither was cut short or is something else renamed. Otherwise torch's
    own first sentence (it can run to 400 characters of miniz advice)."""
    if not looks_like_torch_save(path):
        return ("not a PyTorch weights file, or one cut short (torch.save writes a zip archive; this file has no zip "
                "directory)")  # fmt: skip
    text = str(error).strip()
    first = text.splitlines()[0].split(". ")[0] if text else type(error).__name__
    return f"not a readable weights file ({first[:200]})"


def check_tensor_bytes(obj: Any, path: Path) -> None:
    """Refuse tensors that describe far more elements than the file stores: a stride-0 (``expand``) view of a few
    bytes reads as a 100,000 x 4096 head, and copying, exporting or ``.contiguous()`` allocates all of it (a 6 kB
    file made ``predict`` peak at 2.5 GB). Counted as element bytes against the same bound as the zip's size."""
    on_disk = path.stat().st_size
    described, seen, stack = 0, set(), [obj]
    while stack:
        v = stack.pop()
        if torch.is_tensor(v):
            described += v.numel() * v.element_size()
        elif isinstance(v, (dict, list, tuple)) and id(v) not in seen:
            seen.add(id(v))
            stack.extend(v.values() if isinstance(v, dict) else v)
    if described > max(MAX_INFLATION * on_disk, 64 << 20):
        raise WeightsError(
            f"{path}: its tensors describe {described:,} bytes but the file holds {on_disk:,} "
            f"({described / max(on_disk, 1):.0f}x: views that repeat a few values); made to exhaust memory. Refused"
        )
