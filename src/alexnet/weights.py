"""Weight files of any origin, into a model. Every file is untrusted input: safe loading only (``safeload``).

Formats read:
- a torchvision ``.pth`` state dict (e.g. ``alexnet-owt-7be5be79.pth``), loaded with ``weights_only=True``;
- our checkpoints (``RUN_DIR/checkpoints/*.pt``, read by ``alexnet.checkpoint``, which owns their layout);
- ``.safetensors`` weights, optionally with a JSON sidecar (``NAME.json``) written by ``alexnet export``.

``torch.export`` archives (``.pt2``) are refused: ``torch.export.load`` can run code from the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoint
from .arguments import file_path, flag
from .checkpoint import Checkpoint
from .errors import ArgumentError, UserError, WeightsError, missing_file
from .limits import limits, read_bounded
from .model import CONV1_WEIGHT, HEAD, HEAD_WEIGHT, create_model, list_models
from .safeload import check_inflated_size, torch_load

IMAGENET_CLASSES = 1000  # a head this wide in a file that names no classes: ImageNet's, in torchvision's order


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names in torchvision's order, from the metadata torchvision ships (no download)."""
    from torchvision.models import AlexNet_Weights

    return list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])


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


def read_file(path: str | os.PathLike) -> Checkpoint:
    """Read any supported weights file into a ``Checkpoint`` (weights without prefixes, plus what the file says).

    Our checkpoints come back whole (classes, preprocessing, settings, training state); torchvision files and bare
    safetensors come back with the weights only, plus whatever a JSON sidecar adds. A ``.pt2`` archive is refused
    (``refuse_program``).
    """
    path = Path(file_path(path, "path"))
    if not path.is_file():
        raise WeightsError(missing_file(path, "weights file"))
    if is_program(path):
        raise refuse_program(path)
    if path.suffix.lower() == ".safetensors":  # as export and load tell formats: m.SAFETENSORS too
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        check_inflated_size(path)  # safetensors are not compressed: the file size bounds the tensors
        try:
            sd = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None
        sidecar = path.with_suffix(".json")
        if sidecar.is_file():
            return checkpoint.from_metadata(read_sidecar(sidecar), str(sidecar), model=checkpoint.strip_prefixes(sd))
        return checkpoint.from_metadata(_embedded(path), str(path), model=checkpoint.strip_prefixes(sd))
    obj = torch_load(path)
    if checkpoint.is_ours(obj):
        return checkpoint.from_payload(obj, str(path))
    if isinstance(obj, dict) and obj and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        return Checkpoint(model=checkpoint.strip_prefixes(obj))
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # a common third-party layout
        sd = obj["state_dict"]
        if all(isinstance(k, str) and torch.is_tensor(v) for k, v in sd.items()):
            return Checkpoint(model=checkpoint.strip_prefixes(sd))
    raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a state dict or an alexnet checkpoint")


def _embedded(path: Path) -> dict[str, Any]:
    """The metadata ``alexnet export`` writes into a safetensors header (``alexnet``: JSON), or {} for other files."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        text = (f.metadata() or {}).get("alexnet")
    if text is None:
        return {}
    if len(text) > limits().max_json_bytes:
        raise WeightsError(f"{path}: its 'alexnet' metadata is over {limits().max_json_bytes:,} bytes")
    return _json_object(text, f"{path}: its 'alexnet' metadata")


def read_sidecar(path: Path) -> dict[str, Any]:
    """The JSON metadata next to a ``.safetensors`` file (written by ``alexnet export``); ``WeightsError`` if broken."""
    try:
        text = read_bounded(path, limits().max_json_bytes, "JSON")
    except UserError as e:
        raise WeightsError(str(e)) from None
    return _json_object(text, str(path))


def _json_object(text: str | bytes, what: str) -> dict[str, Any]:
    """``text`` (already bounded) parsed as a JSON object, or ``WeightsError`` starting with ``what``."""
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise WeightsError(f"{what}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise WeightsError(f"{what}: expected a JSON object of metadata, got {type(meta).__name__}")
    return meta


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Just the model weights of any supported file, prefixes stripped."""
    return read_file(path).model


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

    ``new_head``: load every layer but the head (fc8, ``model.HEAD``), which keeps the model's own fresh weights:
    fine-tuning ImageNet weights to other classes. ``skip``: more key prefixes to leave as they are in ``model``.
    A file that does not fit raises ``WeightsError`` naming the keys, and saying what to do for a head of other
    classes or the other architecture.
    """
    if not isinstance(model, nn.Module):
        raise ArgumentError(f"model must be a torch.nn.Module (alexnet.create_model(...)), got {type(model).__name__}")
    if isinstance(skip, str) or not all(isinstance(k, str) for k in skip):
        raise ArgumentError(f"skip must be a tuple of key prefixes such as ('classifier.',), got {skip!r:.60}")
    skip = (*skip, HEAD + ".") if flag(new_head, "new_head") else tuple(skip)
    sd = read_state_dict(path)
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


_ARCH_BY_CONV1 = {64: "alexnet", 96: "alexnet2012"}  # conv1's filters tell the two architectures apart


def _mismatch_hint(model: nn.Module, sd: dict[str, torch.Tensor]) -> str:
    """What to do when ``sd`` does not fit ``model``: the other architecture, and/or a new head for other classes."""
    own, hints = model.state_dict(), []
    conv1, theirs = own.get(CONV1_WEIGHT), sd.get(CONV1_WEIGHT)
    if conv1 is not None and theirs is not None and conv1.shape != theirs.shape:
        arch = _ARCH_BY_CONV1.get(int(theirs.shape[0]))
        if arch:
            hints.append(
                f"The file holds {arch!r} weights ({theirs.shape[0]} conv1 filters): create_model({arch!r}, ...)"
            )
    head, theirs = own.get(HEAD_WEIGHT), sd.get(HEAD_WEIGHT)
    if head is not None and theirs is not None and head.shape != theirs.shape:
        hints.append(
            f"Its head has {theirs.shape[0]} classes and the model's {head.shape[0]}: to fine-tune, "
            "load_weights(model, path, new_head=True) loads every layer but the head"
        )
    return ". ".join(hints)


def model_from_file(path: str | os.PathLike) -> tuple[nn.Module, Checkpoint]:
    """Build the right model for a weights file and load it. Returns ``(model in eval mode, its Checkpoint)``.

    The ``Checkpoint`` always has ``arch``, ``classes`` (as many as outputs) and ``preprocess``; a torchvision weights
    file is recognised by its keys and gets ImageNet's names and preprocessing. The optimizer and RNG states of a
    run's checkpoint are dropped (inference does not need them).
    """
    return model_from_info(read_file(path).weights_only(), str(path))


def _classes(info: Checkpoint, num_classes: int, path: str) -> list[str]:
    """The file's class names, one per output and all different; numbered (said) or ImageNet's when it has none."""
    classes = info.classes
    if classes is None and num_classes != IMAGENET_CLASSES:  # a bare state dict, a .safetensors without its .json
        print(f"warning: {path}: names no classes (an alexnet checkpoint or the .json beside an export does): its "
              f"{num_classes} classes are numbered, and its preprocessing is taken to be ImageNet's unless the file "
              "says otherwise, which may not be what it was trained with", file=sys.stderr)  # fmt: skip
    if classes is None:
        classes = imagenet_classes() if num_classes == IMAGENET_CLASSES else [str(i) for i in range(num_classes)]
    if len(classes) != num_classes:
        raise WeightsError(f"{path}: 'classes' must be a list of {num_classes} names (one per output)")
    return list(classes)


def model_from_info(info: Checkpoint, path: str = "weights") -> tuple[nn.Module, Checkpoint]:
    """``model_from_file`` once the file is read: fill in what a foreign file leaves out (architecture, class names,
    preprocessing), check the head, build the model. ``path`` names the source in errors."""
    from .preprocess import IMAGENET

    sd = info.model
    head, conv1 = sd.get(HEAD_WEIGHT), sd.get(CONV1_WEIGHT)
    if head is None or head.ndim != 2 or conv1 is None or conv1.ndim != 4:
        raise WeightsError(f"{path}: not AlexNet weights (no 2-D {HEAD_WEIGHT} and 4-D {CONV1_WEIGHT})")
    num_classes = int(head.shape[0])
    if not 1 <= num_classes <= limits().max_classes:
        raise WeightsError(f"{path}: a head of {num_classes} classes (limit {limits().max_classes})")
    arch = info.arch or ("alexnet2012" if conv1.shape[0] == 96 else "alexnet")
    if arch not in list_models():
        raise WeightsError(f"{path}: unknown arch {arch!r}; this alexnet builds {', '.join(list_models())}")
    classes = _classes(info, num_classes, path)
    if info.preprocess is None and info.classes is not None and num_classes != IMAGENET_CLASSES:
        print(f"warning: {path}: names its classes but not its preprocessing (the .json beside an export has "
              "'preprocess'): ImageNet's is assumed, which may not be what it was trained with",
              file=sys.stderr)  # fmt: skip
    preprocess = info.preprocess or IMAGENET
    in_channels = int(conv1.shape[1])  # 3, or 1 for a grayscale model (--in-channels 1)
    if in_channels != preprocess.channels:
        raise WeightsError(
            f"{path}: conv1 takes {in_channels} input channel(s) but the preprocessing says {preprocess.channels}"
        )
    model = create_model(arch, num_classes=num_classes, in_channels=in_channels, **info.model_kwargs)
    check_state_dict(model, sd, source=str(path))
    model.load_state_dict(sd)
    model.eval()
    return model, dataclasses.replace(info, arch=arch, classes=list(classes), preprocess=preprocess)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        else:
            return model
