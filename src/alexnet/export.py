"""Shipping a model: ONNX, ``torch.export`` programs and safetensors, each checked against PyTorch after writing.

- ``onnx``: the dynamo exporter (``torch.onnx.export(..., dynamo=True)``; the legacy TorchScript exporter cannot
  export ``adaptive_avg_pool2d`` when the feature map is smaller than 6x6), a dynamic batch axis, a fixed
  ``crop x crop`` input, and ``classes`` / ``preprocess`` / ``arch`` as JSON strings in ``metadata_props``. Then
  onnxruntime runs random inputs and the outputs must match PyTorch's to ``atol`` (1e-4 in fp32) or it fails loudly.
- ``pt2``: a ``torch.export`` program (``torch.jit.trace`` is deprecated from torch 2.10 on; this is not TorchScript)
  saved as a ``.pt2`` archive with ``alexnet.json`` (classes, preprocessing) inside; load it with
  ``torch.export.load(path).module()``, but only a file you trust: that unpickles parts of it, so a crafted archive
  runs code. ``alexnet predict``, ``evaluate`` and ``serve`` refuse ``.pt2`` for that reason
  (``weights.refuse_program``).
- ``safetensors``: the weights plus a JSON sidecar (arch, num_classes, classes, preprocess, config, model_kwargs),
  which ``alexnet.load`` and ``weights.model_from_file`` read back.

Every export stores the model's ``Preprocess`` as ``to_dict()``; ``alexnet.load`` runs ``.onnx`` files through
onnxruntime with it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from torch import nn

from .checkpoint import Checkpoint
from .config import PATH_SETTINGS
from .errors import UserError, missing_file
from .outputs import atomic_file, check_free_space, prepare_output

FORMATS = ("onnx", "pt2", "safetensors")
SUFFIXES = {"onnx": ".onnx", "pt2": ".pt2", "safetensors": ".safetensors"}
PARITY_ATOL = 1e-4  # max abs difference of logits, fp32
LOCAL_PATHS = (*PATH_SETTINGS, "out", "resume", "init_weights")  # the training machine's paths: not exported
PATHS_LEFT_OUT = "local_paths"  # the key an export's config says so under


class ParityError(UserError):
    """An exported model whose outputs differ from PyTorch's by more than the tolerance."""


def export(
    model_path: str | os.PathLike,
    fmt: str,
    out: str | os.PathLike | None = None,
    *,
    check: bool = True,
    overwrite: bool = False,
) -> tuple[Path, float | None]:
    """Export a weights file to ``fmt``. Returns ``(path written, max abs diff of the parity check or None)``.

    ``out`` defaults to the model path with the format's suffix (``.onnx``, ``.pt2``, ``.safetensors``). An existing
    output (or, for safetensors, its ``.json`` sidecar) is refused unless ``overwrite``; checked before any work.
    """
    from .weights import model_from_file

    if fmt == "torchscript":
        raise UserError("--format 'torchscript' is now called 'pt2' (a torch.export archive, not TorchScript)")
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if not Path(model_path).is_file():
        raise UserError(missing_file(model_path, "weights file"))
    if Path(model_path).suffix.lower() == ".onnx":  # it has no PyTorch weights to export
        raise UserError(f"{model_path}: an .onnx export cannot be exported again; export the checkpoint it came from")
    out = Path(out) if out is not None else Path(model_path).with_suffix(SUFFIXES[fmt])
    if out.suffix.lower() != SUFFIXES[fmt]:  # loading tells the format by it: x.txt would be read as a checkpoint
        raise UserError(f"--out {out}: the name must end in {SUFFIXES[fmt]} for --format {fmt} (predict and serve "
                        "tell the format by it)")  # fmt: skip
    sidecars = [out.with_suffix(".json")] if fmt == "safetensors" else []
    if any(p.resolve() == Path(model_path).resolve() for p in [out, *sidecars]):
        raise UserError(f"--out {out}: would overwrite the model file itself; choose another path")
    prepare_output(out, also=sidecars, overwrite=overwrite)
    model, meta = model_from_file(model_path)
    meta = shareable(meta)
    check_free_space(out, sum(t.numel() * t.element_size() for t in model.state_dict().values()))
    if fmt == "onnx":
        return out, export_onnx(model, meta, out, check=check)
    if fmt == "pt2":
        return out, export_program(model, meta, out, check=check)
    export_safetensors(model, meta, out)
    return out, None


def shareable(meta: Checkpoint) -> Checkpoint:
    """``meta`` without the training run's local paths (data, run folder, weights started from): an export is the
    file that leaves the machine, and a hospital's folder names often carry a patient's name or ID."""
    if meta.config is None:
        return meta
    config = {k: v for k, v in meta.config.items() if k not in LOCAL_PATHS or v is None or v == "torchvision"}
    if len(config) < len(meta.config):
        config[PATHS_LEFT_OUT] = "left out on export"
    return dataclasses.replace(meta, config=config)


def _example(meta: Checkpoint, batch: int, seed: int = 0) -> torch.Tensor:
    p = meta.preprocess
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, p.channels, p.crop, p.crop, generator=g)  # (B, C, crop, crop): normalised ~ N(0, 1)


def _check(name: str, path: Path, expected: torch.Tensor, got: torch.Tensor, atol: float) -> float:
    diff = (expected - got).abs().max().item()
    if not diff <= atol:  # also catches NaN
        raise ParityError(
            f"{path}: {name} outputs differ from PyTorch's by {diff:.3g} (tolerance {atol:g}); "
            "the exported file is wrong, do not ship it"
        )
    return diff


# ----------------------------------------------------------------------------------------------------------------
# ONNX


def export_onnx(
    model: nn.Module, meta: Checkpoint, out: Path, *, check: bool = True, atol: float = PARITY_ATOL
) -> float | None:
    """Write ``out`` (.onnx) with a dynamic batch axis and metadata; return the parity max abs diff (or None)."""
    try:
        import onnx  # noqa: F401 - the dynamo exporter needs onnx and onnxscript
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise UserError(
            f"ONNX export needs {e.name}: pip install 'alexnet[onnx]' (onnx, onnxscript, onnxruntime)"
        ) from None
    model = model.float().eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        model,
        (_example(meta, 2),),
        input_names=["input"],
        output_names=["logits"],
        dynamo=True,
        dynamic_shapes=({0: batch},),
        verbose=False,
    )
    info = meta.metadata()
    c = meta.preprocess.channels
    info["input"] = (
        f"float32 (B, {c}, crop, crop) {'RGB' if c == 3 else 'gray'}, scaled to 0..1 then (x - mean) / std; "
        "output: logits"
    )
    for key, value in info.items():  # program.model is an onnx_ir Model: set metadata before the one save
        program.model.metadata_props[key] = value if isinstance(value, str) else json.dumps(value)
    with atomic_file(out) as tmp:  # a full disk or a failed check leaves nothing behind
        program.save(str(tmp))
        return check_onnx(model, meta, tmp, atol=atol, name=out) if check else None


def check_onnx(
    model: nn.Module, meta: Checkpoint, path: Path, *, atol: float = PARITY_ATOL, name: Path | None = None
) -> float:
    """Run onnxruntime on random batches (sizes 1 and 3) and compare with PyTorch; raise ``ParityError`` (naming
    ``name``, default ``path``) if off."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("the ONNX parity check needs onnxruntime: pip install 'alexnet[onnx]'") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in (1, 3):  # not the export batch (2): proves the batch axis is dynamic
        x = _example(meta, batch, seed=batch)
        with torch.inference_mode():
            expected = model.cpu()(x)
        got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
        worst = max(worst, _check("onnxruntime", name or path, expected, got, atol))
    return worst


# ----------------------------------------------------------------------------------------------------------------
# torch.export


def export_program(
    model: nn.Module, meta: Checkpoint, out: Path, *, check: bool = True, atol: float = PARITY_ATOL
) -> float | None:
    """Write a ``torch.export`` archive (.pt2) with a dynamic batch axis and ``alexnet.json`` metadata inside."""
    model = model.float().eval().cpu()
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model, (_example(meta, 2),), dynamic_shapes=({0: batch},))
    with atomic_file(out) as tmp:  # torch.export.save aborts the process on a full disk: export() checks first
        torch.export.save(program, str(tmp), extra_files={"alexnet.json": json.dumps(meta.metadata())})
        if not check:
            return None
        loaded = torch.export.load(str(tmp)).module()
        worst = 0.0
        for batch_size in (1, 3):
            x = _example(meta, batch_size, seed=batch_size)
            with torch.inference_mode():
                worst = max(worst, _check("torch.export", out, model(x), loaded(x), atol))
        return worst


# ----------------------------------------------------------------------------------------------------------------
# safetensors


def export_safetensors(model: nn.Module, meta: Checkpoint, out: Path) -> list[Path]:
    """Write the weights (with the metadata in the file's header) to ``out`` and the metadata to ``out`` with suffix
    ``.json``, which a reader prefers (it can be edited). Returns both paths."""
    from safetensors.torch import save_file

    if out.suffix.lower() != ".safetensors":  # m.SAFETENSORS passed export's check, then was refused here
        raise UserError(f"--out {out}: a safetensors file name must end in .safetensors")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    sidecar = out.with_suffix(".json")
    with atomic_file(out) as tmp:  # both or neither: a failed sidecar removes the weights' temp file too
        # the metadata inside too (as the ONNX export has it): a file copied without its .json keeps its classes,
        # preprocessing and channel count
        save_file(state, str(tmp), metadata={"format": "alexnet-safetensors", "alexnet": json.dumps(meta.metadata())})
        with atomic_file(sidecar) as tmp_sidecar:
            tmp_sidecar.write_text(json.dumps(meta.metadata(), indent=2) + "\n")
    return [out, sidecar]
