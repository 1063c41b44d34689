"""Reading and writing weights and checkpoints. Every file is untrusted input: safe loading only.

Formats read:
- a torchvision ``.pth`` state dict (e.g. ``alexnet-owt-7be5be79.pth``), loaded with ``weights_only=True``;
- our checkpoints (``RUN_DIR/checkpoints/*.pt``): a dict with ``format == "alexnet-checkpoint"`` and ``model``;
- ``.safetensors`` weights, optionally with a JSON sidecar (``NAME.json``) written by ``alexnet export``.

``torch.export`` archives (``.pt2``) are refused: ``torch.export.load`` can run code from the file.

Checkpoint layout (version 1), all plain tensors / numbers / strings so ``weights_only=True`` can read it::

    format, version, arch, num_classes, model_kwargs, model (state_dict), classes, preprocess,
    config (resolved run config), epoch, step, best_top1, optimizer, scheduler, scaler, rng, init_from, ...
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import UserError, WeightsError
from .limits import limits, read_bounded

CHECKPOINT_FORMAT = "alexnet-checkpoint"
CHECKPOINT_VERSION = 1
_PREFIXES = ("module.", "_orig_mod.")  # added by DistributedDataParallel and torch.compile


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names in torchvision's order, from the metadata torchvision ships (no download)."""
    from torchvision.models import AlexNet_Weights

    return list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])


def strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove ``module.`` / ``_orig_mod.`` prefixes (in any order, any number) from every key."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                if key.startswith(p):
                    key, changed = key[len(p) :], True
        out[key] = value
    return out


def _check_inflated_size(path: Path) -> None:
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


def _torch_load(path: Path) -> Any:
    _check_inflated_size(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # PyTorch's text suggests weights_only=False: never say that about a foreign file
        raise WeightsError(
            f"{path}: refused to load: it holds Python objects other than tensors and plain values, and loading it "
            "could run code. If you trust where it came from, re-save its state_dict (or export it as safetensors) "
            "in that trusted environment"
        ) from None
    except Exception as e:  # a torn or foreign file fails in many ways inside the unpickler
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{path}: not a readable weights file ({first})") from None


def refuse_program(path: str | os.PathLike) -> WeightsError:
    """The one line for a ``torch.export`` archive (``.pt2``): refused, because ``torch.export.load`` unpickles parts
    of it without ``weights_only`` (it falls back to full pickle when the safe loader fails: checked on torch 2.14), so
    a crafted file runs code. tests/test_pt2.py shows it doing so."""
    return WeightsError(
        f"{path}: a torch.export archive (.pt2) is not loaded here: loading one can run code hidden in the file. Use "
        "the checkpoint it was exported from, or an .onnx or .safetensors export (alexnet export MODEL --format onnx)"
    )


def is_program(path: Path) -> bool:
    """Whether ``path`` is a ``torch.export`` archive, by its suffix or, renamed, by the zip entries torch writes."""
    import zipfile

    if path.suffix.lower() == ".pt2":
        return True
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith(("/archive_format", "serialized_exported_program.json")) for n in z.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def read_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read any supported weights file into a dict with at least ``model`` (a state dict without prefixes).

    Our checkpoints come back whole (with ``classes``, ``preprocess``, ``config``...); torchvision files and bare
    safetensors come back as ``{"model": state_dict}`` plus whatever a JSON sidecar adds. A ``.pt2`` archive is
    refused (``refuse_program``).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    if is_program(path):
        raise refuse_program(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        _check_inflated_size(path)  # safetensors are not compressed: the file size bounds the tensors
        try:
            sd = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None
        meta: dict[str, Any] = {}
        sidecar = path.with_suffix(".json")
        if sidecar.is_file():
            meta = read_sidecar(sidecar)
        return {**meta, "model": strip_prefixes(sd)}
    obj = _torch_load(path)
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        version = obj.get("version")
        if isinstance(version, bool) or not isinstance(version, int):
            raise WeightsError(f"{path}: checkpoint field 'version' must be an integer, got {version!r}")
        if version > CHECKPOINT_VERSION:
            raise WeightsError(f"{path}: checkpoint version {version} is newer than this alexnet can read")
        model = obj.get("model")
        if not (isinstance(model, dict) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in model.items())):
            raise WeightsError(f"{path}: checkpoint field 'model' must map parameter names to tensors")
        return {**obj, "model": strip_prefixes(model)}
    if isinstance(obj, dict) and obj and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        return {"model": strip_prefixes(obj)}
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # a common third-party layout
        return {"model": strip_prefixes(obj["state_dict"])}
    raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a state dict or an alexnet checkpoint")


def read_sidecar(path: Path) -> dict[str, Any]:
    """The JSON metadata next to a ``.safetensors`` file (written by ``alexnet export``); ``WeightsError`` if broken."""
    try:
        meta = json.loads(read_bounded(path, limits().max_json_bytes, "JSON"))
    except UserError as e:
        raise WeightsError(str(e)) from None
    except ValueError as e:
        raise WeightsError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise WeightsError(f"{path}: expected a JSON object of metadata, got {type(meta).__name__}")
    return {k: v for k, v in meta.items() if k != "model"}


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Just the model weights of any supported file, prefixes stripped."""
    return read_file(path)["model"]


def check_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "weights") -> None:
    """Raise ``WeightsError`` naming the missing, unexpected and mis-shaped keys when ``state_dict`` does not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    misshaped = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected)}")
        if misshaped:
            parts.append(f"mis-shaped: {'; '.join(misshaped)}")
        raise WeightsError(f"{source} does not fit {type(model).__name__}: " + " | ".join(parts))


def load_weights(
    model: nn.Module, path: str | os.PathLike, *, new_head: bool = False, skip: tuple[str, ...] = ()
) -> nn.Module:
    """Load a torchvision ``.pth``, an alexnet checkpoint or a ``.safetensors`` file into ``model`` (in place).

    ``new_head``: load every layer but the head (fc8, ``classifier.6``), which keeps the model's own fresh weights:
    fine-tuning ImageNet weights to other classes. ``skip``: more key prefixes to leave as they are in ``model``.
    A file that does not fit raises ``WeightsError`` naming the keys, and saying what to do for a head of other
    classes or the other architecture.
    """
    sd = read_state_dict(path)
    skip = (*skip, _HEAD) if new_head else tuple(skip)
    if skip:
        sd = {k: v for k, v in sd.items() if not k.startswith(skip)}
        own = model.state_dict()
        sd.update({k: v for k, v in own.items() if k.startswith(skip)})
    try:
        check_state_dict(model, sd, source=str(path))
    except WeightsError as e:
        hint = _mismatch_hint(model, sd)
        raise WeightsError(f"{e}. {hint}" if hint else str(e)) from None
    model.load_state_dict(sd)
    return model


_HEAD = "classifier.6."  # fc8's keys: the layer fine-tuning replaces
_ARCH_BY_CONV1 = {64: "alexnet", 96: "alexnet2012"}  # conv1's filters tell the two architectures apart


def _mismatch_hint(model: nn.Module, sd: dict[str, torch.Tensor]) -> str:
    """What to do when ``sd`` does not fit ``model``: the other architecture, and/or a new head for other classes."""
    own, hints = model.state_dict(), []
    conv1, theirs = own.get("features.0.weight"), sd.get("features.0.weight")
    if conv1 is not None and theirs is not None and conv1.shape != theirs.shape:
        arch = _ARCH_BY_CONV1.get(int(theirs.shape[0]))
        if arch:
            hints.append(
                f"The file holds {arch!r} weights ({theirs.shape[0]} conv1 filters): create_model({arch!r}, ...)"
            )
    head, theirs = own.get(_HEAD + "weight"), sd.get(_HEAD + "weight")
    if head is not None and theirs is not None and head.shape != theirs.shape:
        hints.append(
            f"Its head has {theirs.shape[0]} classes and the model's {head.shape[0]}: to fine-tune, "
            "load_weights(model, path, new_head=True) loads every layer but the head"
        )
    return ". ".join(hints)


def model_from_file(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Build the right model for a weights file and load it. Returns ``(model in eval mode, metadata)``.

    Metadata always has ``arch``, ``num_classes``, ``classes`` (as many as outputs) and ``preprocess`` (a validated
    ``Preprocess``); a torchvision weights file is recognised by its keys and gets ImageNet's names and preprocessing.
    """
    return model_from_info(read_file(path), str(path))


def model_from_info(info: dict[str, Any], path: str = "weights") -> tuple[nn.Module, dict[str, Any]]:
    """``model_from_file`` once the file is read: validate ``info`` (as ``read_file`` returns it), build the model.
    ``path`` names the source in errors. Checks cheap fields (head, arch, kwargs, classes) before building."""
    from .model import create_model, list_models
    from .preprocess import IMAGENET, Preprocess

    sd = info["model"]
    head, conv1 = sd.get("classifier.6.weight"), sd.get("features.0.weight")
    if head is None or head.ndim != 2 or conv1 is None or conv1.ndim != 4:
        raise WeightsError(f"{path}: not AlexNet weights (no 2-D classifier.6.weight and 4-D features.0.weight)")
    num_classes = int(head.shape[0])
    if not 1 <= num_classes <= limits().max_classes:
        raise WeightsError(f"{path}: a head of {num_classes} classes (limit {limits().max_classes})")
    arch = info.get("arch") or ("alexnet2012" if conv1.shape[0] == 96 else "alexnet")
    if arch not in list_models():
        raise WeightsError(f"{path}: unknown arch {arch!r}; this alexnet builds {', '.join(list_models())}")
    kwargs = info.get("model_kwargs") or {}
    if not isinstance(kwargs, dict) or not set(kwargs) <= {"dropout"}:
        raise WeightsError(f"{path}: model_kwargs must be a mapping with at most 'dropout', got {kwargs!r}")
    dropout = kwargs.get("dropout", 0.5)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise WeightsError(f"{path}: model_kwargs dropout must be a number in [0, 1), got {dropout!r}")
    classes = info.get("classes")
    if classes is None:
        classes = imagenet_classes() if num_classes == 1000 else [str(i) for i in range(num_classes)]
    if not (isinstance(classes, list) and len(classes) == num_classes and all(isinstance(c, str) for c in classes)):
        raise WeightsError(f"{path}: 'classes' must be a list of {num_classes} names (one per output)")
    raw = info.get("preprocess")
    preprocess = IMAGENET if raw is None else Preprocess.from_dict(raw, source=str(path))
    model = create_model(arch, num_classes=num_classes, **kwargs)
    check_state_dict(model, sd, source=str(path))
    model.load_state_dict(sd)
    model.eval()
    meta = {k: v for k, v in info.items() if k not in ("model", "optimizer", "scheduler", "scaler", "rng")}
    meta.update(arch=arch, num_classes=num_classes, classes=list(classes), preprocess=preprocess)
    return model, meta


# ----------------------------------------------------------------------------------------------------------------
# checkpoints


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a checkpoint atomically: temp file in the same folder, fsync, rename, fsync the folder.

    A kill at any moment leaves either the previous file or the new one, never a torn file. ``payload["model"]``
    must already be free of ``module.`` / ``_orig_mod.`` prefixes (use ``unwrap``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, (OSError, RuntimeError)):  # torch reports a failed write as "enforce fail at inline_container"
            raise _save_error(path, e) from None
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


MAX_INFLATION = 4  # unpacked / on-disk size of a weights file; torch.save writes ~1.0
TEMP_SUFFIX = ".tmp"  # save_checkpoint's temporary files: .NAME.<random>.tmp next to NAME


def _save_error(path: Path, e: BaseException) -> WeightsError:
    import errno
    import shutil

    free = shutil.disk_usage(path.parent).free
    full = getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or free < 64 << 20
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    what = f"no space left on the device ({free >> 20} MiB free)" if full else f"the write failed ({first})"
    last = f"the last good checkpoint is {path}" if path.exists() else "no checkpoint was written there yet"
    return WeightsError(f"cannot write {path}: {what}; {last}. Free space, then resume with --resume auto")


def clean_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of saves that never finished (a ``kill -9`` mid-save leaves up to ~0.5 GB each).

    Call it before the first save of a run, when no other process writes into ``folder``. Returns what it removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(f".*{TEMP_SUFFIX}") if p.is_file() and not p.is_symlink()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read one of our checkpoints (safe loading). Raises ``WeightsError`` for anything else."""
    info = read_file(path)
    if info.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(f"{path}: a bare weights file, not an alexnet checkpoint (it has no training state)")
    return info


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        else:
            return model
