"""The checkpoint: the one module that builds and reads what our model files hold. Everything else gets typed fields.

A ``Checkpoint`` is the weights plus what using them needs (architecture, class names, ``Preprocess``, the run's
resolved settings) and, in a training run's ``last.pt`` / ``best.pt``, the training state that resumes it bit for bit.
On disk (``torch.save``, read back with ``weights_only=True``) it is a dict of plain tensors, numbers and strings::

    format, version, arch, num_classes, model_kwargs, model (state dict), classes, preprocess, config, init_from,
    epoch, batch_in_epoch, step, total_steps, best, best_top1, epoch_partial, elapsed,
    optimizer, scheduler, scaler, rng

Exports carry the same metadata without the training state (``metadata()``: the safetensors sidecar, the ONNX
``metadata_props``, the ``.pt2`` archive's ``alexnet.json``); ``from_metadata`` reads it back.

Every file is untrusted: ``from_payload`` checks each field's type before anything uses it, and a stored ``config``
must be a small table of plain values (no cycles, bounded size) before it is printed, compared or written out.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import UserError, WeightsError, missing_file
from .model import HEAD_WEIGHT
from .outputs import new_file_mode
from .preprocess import Preprocess
from .safeload import torch_load

FORMAT = "alexnet-checkpoint"
VERSION = 1
TEMP_SUFFIX = ".tmp"  # temporary files of a save: .NAME.<random>.tmp next to NAME
MAX_CONFIG_NODES = 10_000  # values in a stored config (TrainConfig has ~50)
MAX_CONFIG_DEPTH = 16
_TRAINING = ("epoch", "batch_in_epoch", "step", "total_steps", "plan", "best", "epoch_partial", "elapsed",
             "optimizer", "scheduler", "scaler", "rng")  # fmt: skip
_METADATA = ("arch", "num_classes", "classes", "preprocess", "model_kwargs", "config", "epoch", "step", "best_top1")


@dataclass
class Checkpoint:
    """Weights and what using them needs; with ``step`` set, also the state of the run that wrote them."""

    model: dict[str, torch.Tensor]  # state dict, without DDP / torch.compile prefixes
    arch: str | None = None  # None: tell from the weights (a foreign file)
    classes: list[str] | None = None  # None: ImageNet's names for 1000 outputs, else "0", "1", ...
    preprocess: Preprocess | None = None  # None: ImageNet's (torchvision's weights)
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {"dropout": 0.5}
    config: dict[str, Any] | None = None  # the run's resolved TrainConfig, as a dict
    init_from: str | None = None  # the weights a fine-tuned run started from
    # the training state (a run's checkpoints; None / defaults in weights-only files)
    epoch: int | None = None  # the epoch to run next, or to continue with batch_in_epoch > 0
    batch_in_epoch: int = 0
    step: int | None = None  # optimizer steps done
    total_steps: int | None = None  # a time budget's planned steps: a resumed run keeps them
    plan: list[tuple[int, int, int]] = field(default_factory=list)  # a budget's plans: (step made, total, µs/step)
    best: dict[str, Any] = field(default_factory=dict)  # {"metric", "value", "epoch"}: what chose best.pt
    epoch_partial: tuple[float, int] = (0.0, 0)  # (loss sum, images) of an epoch stopped part-way, over all ranks
    elapsed: float = 0.0  # seconds trained so far
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None

    def __repr__(self) -> str:
        """What the weights are, not the weights (the state dict printed whole ran to tens of thousands of lines)."""
        params = sum(t.numel() for t in self.model.values() if isinstance(t, torch.Tensor))
        classes = self.classes if self.classes is not None and len(self.classes) <= 5 else None
        n = self.num_classes if self.classes is not None or HEAD_WEIGHT in self.model else "?"
        shown = f"{n} classes" + (f" {classes}" if classes else "")
        state = f", step={self.step}" if self.step is not None else ""
        return f"Checkpoint(arch={self.arch!r}, {shown}, {params:,} parameters, {self.preprocess!r}{state})"

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes is not None else int(self.model[HEAD_WEIGHT].shape[0])

    @property
    def best_top1(self) -> float | None:
        return self.best.get("value") if self.best.get("metric") == "val_top1" else None

    @property
    def resumable(self) -> bool:
        return self.step is not None and self.optimizer is not None and self.rng is not None

    def weights_only(self) -> Checkpoint:
        """The same without the optimizer, scaler, schedule and RNG states (what inference keeps in memory)."""
        return dataclasses.replace(self, optimizer=None, scheduler=None, scaler=None, rng=None)

    # ---- writing

    def payload(self) -> dict[str, Any]:
        """The dict ``torch.save`` writes: plain values only."""
        out = {"format": FORMAT, "version": VERSION, **self.metadata(), "model": self.model}
        out["preprocess"] = self.preprocess.to_dict() if self.preprocess is not None else None
        out["init_from"] = self.init_from
        if self.step is not None:
            out.update({k: getattr(self, k) for k in _TRAINING})
            out["epoch_partial"] = list(self.epoch_partial)
            out["plan"] = [list(p) for p in self.plan]
        return out

    def metadata(self) -> dict[str, Any]:
        """What exports carry next to the weights (JSON-safe): no weights, no training state."""
        out = {k: getattr(self, k) for k in _METADATA if k not in ("preprocess",) and getattr(self, k) is not None}
        if self.preprocess is not None:
            out["preprocess"] = self.preprocess.to_dict()
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (``save_payload``)."""
        return save_payload(self.payload(), path)


# ----------------------------------------------------------------------------------------------------------------
# reading


def load(path: str | os.PathLike) -> Checkpoint:
    """A training run's checkpoint, read safely (``safeload``); ``WeightsError`` for anything else."""

    path = Path(path)
    if not path.is_file():
        raise WeightsError(missing_file(path, "checkpoint file"))
    obj = torch_load(path)
    if not (isinstance(obj, dict) and obj.get("format") == FORMAT):
        raise WeightsError(f"{path}: a bare weights file, not an alexnet checkpoint (it has no training state)")
    return from_payload(obj, str(path))


def is_ours(obj: Any) -> bool:
    """Whether ``torch.load`` returned one of our checkpoints (the ``format`` marker)."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT


_PREFIXES = ("module.", "_orig_mod.")  # added by DistributedDataParallel and torch.compile


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


def from_payload(obj: Any, source: str) -> Checkpoint:
    """A validated ``Checkpoint`` from what ``torch.load`` returned for one of our files (``source``: its path, for
    errors). Each field's type is checked; ``WeightsError`` names the file and the field."""
    if not isinstance(obj, dict):
        raise WeightsError(f"{source}: holds a {type(obj).__name__}, not an alexnet checkpoint")
    version = obj.get("version", VERSION)
    if isinstance(version, bool) or not isinstance(version, int):
        raise WeightsError(f"{source}: checkpoint field 'version' must be an integer, got {_short(version)}")
    if version > VERSION:
        raise WeightsError(f"{source}: checkpoint version {version} is newer than this alexnet can read")
    model = obj.get("model")
    if not (isinstance(model, dict) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in model.items())):
        raise WeightsError(f"{source}: checkpoint field 'model' must map parameter names to tensors")
    ckpt = from_metadata(obj, source, model=strip_prefixes(model))
    init_from = obj.get("init_from")
    ckpt.init_from = init_from if isinstance(init_from, str) else None
    if obj.get("step") is not None:
        _training_state(ckpt, obj, source)
    return ckpt


def from_metadata(meta: dict[str, Any], source: str, *, model: dict[str, torch.Tensor] | None = None) -> Checkpoint:
    """A ``Checkpoint`` from export metadata (a sidecar, ONNX ``metadata_props`` decoded, ``alexnet.json``), each
    field checked; ``model`` the weights when there are any (an ONNX export has none of ours)."""
    arch = meta.get("arch")
    if arch is not None and not isinstance(arch, str):
        raise WeightsError(f"{source}: 'arch' must be a name, got {_short(arch)}")
    raw = meta.get("preprocess")
    try:
        preprocess = None if raw is None else Preprocess.from_dict(raw, source=source)
    except UserError as e:  # a WeightsError names the file the same way
        raise WeightsError(str(e)) from None
    return Checkpoint(model=model if model is not None else {}, arch=arch, classes=_classes(meta, model, source),
                      preprocess=preprocess, model_kwargs=_model_kwargs(meta, source),
                      config=_config(meta, source))  # fmt: skip


def _classes(meta: dict[str, Any], model: dict[str, torch.Tensor] | None, source: str) -> list[str] | None:
    classes = meta.get("classes")
    head = (model or {}).get(HEAD_WEIGHT)
    outputs = int(head.shape[0]) if head is not None and head.ndim == 2 else None
    if classes is None:
        return None
    fits = isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)
    if not fits or (outputs is not None and len(classes) != outputs):
        what = f"{outputs} names (one per output)" if outputs is not None else "class names"
        raise WeightsError(f"{source}: 'classes' must be a list of {what}")
    twice = sorted(c for c, n in Counter(classes).items() if n > 1)
    if twice:  # two outputs of one name: a prediction could not say which, and evaluate would score by the first
        raise WeightsError(f"{source}: class {twice[0]!r} is named twice in 'classes' (each output needs its own name)")
    return classes


def _model_kwargs(meta: dict[str, Any], source: str) -> dict[str, Any]:
    kwargs = meta.get("model_kwargs") or {}
    if not isinstance(kwargs, dict) or not set(kwargs) <= {"dropout"}:
        raise WeightsError(f"{source}: model_kwargs must be a mapping with at most 'dropout', got {_short(kwargs)}")
    dropout = kwargs.get("dropout", 0.5)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise WeightsError(f"{source}: model_kwargs dropout must be a number in [0, 1), got {_short(dropout)}")
    return dict(kwargs)


def _config(meta: dict[str, Any], source: str) -> dict[str, Any] | None:
    config = meta.get("config")
    if config is None:
        return None
    check_plain(config, source, "config")
    if not isinstance(config, dict):
        raise WeightsError(f"{source}: 'config' must be a table of settings, got {type(config).__name__}")
    for key in ("data", "train_dir", "val_dir"):
        if config.get(key) is not None and not isinstance(config[key], str):
            raise WeightsError(f"{source}: config {key} must be a path, got {_short(config[key])}")
    return config


def _training_state(ckpt: Checkpoint, obj: dict[str, Any], source: str) -> None:
    """Copy and check the training state of a run's checkpoint into ``ckpt``."""

    def number(key: str, kind: type | tuple[type, ...] = int, optional: bool = False) -> Any:
        value = obj.get(key)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, kind) or value < 0:
            raise WeightsError(f"{source}: checkpoint field {key!r} must be a number >= 0, got {_short(value)}")
        return value

    ckpt.epoch, ckpt.step = number("epoch"), number("step")
    ckpt.batch_in_epoch = number("batch_in_epoch") if "batch_in_epoch" in obj else 0
    ckpt.total_steps = number("total_steps", optional=True)
    ckpt.elapsed = float(number("elapsed", (int, float))) if "elapsed" in obj else 0.0
    best = obj.get("best") or {}
    if not isinstance(best, dict):
        raise WeightsError(f"{source}: checkpoint field 'best' must be a mapping, got {_short(best)}")
    ckpt.best = best
    partial = obj.get("epoch_partial", (0.0, 0))
    if not (isinstance(partial, (list, tuple)) and len(partial) == 2):
        raise WeightsError(f"{source}: checkpoint field 'epoch_partial' must be (loss sum, images)")
    ckpt.epoch_partial = (float(partial[0]), int(partial[1]))
    plan = obj.get("plan", [])
    if not (
        isinstance(plan, list)
        and len(plan) <= 1_000_000
        and all(
            isinstance(p, (list, tuple)) and len(p) == 3 and all(type(v) is int and v >= 0 for v in p) for p in plan
        )
    ):
        raise WeightsError(f"{source}: checkpoint field 'plan' must be a list of (step, total steps, µs) triples")
    ckpt.plan = [(int(a), int(b), int(c)) for a, b, c in plan]
    for key in ("optimizer", "scheduler", "scaler", "rng"):
        value = obj.get(key)
        if value is not None and not isinstance(value, dict):
            raise WeightsError(f"{source}: checkpoint field {key!r} must be a mapping, got {type(value).__name__}")
        setattr(ckpt, key, value)


def check_plain(value: Any, source: str, name: str) -> None:
    """``WeightsError`` unless ``value`` is a tree of plain JSON values (dicts with string keys, lists, strings,
    numbers, booleans, None) of at most ``MAX_CONFIG_NODES`` values and ``MAX_CONFIG_DEPTH`` levels, without cycles:
    a list holding itself (which ``torch.load`` can build) would hang ``json.dumps`` or exhaust memory."""
    seen: set[int] = set()
    stack = [(value, 0)]
    count = 0
    while stack:
        v, depth = stack.pop()
        count += 1
        if count > MAX_CONFIG_NODES or depth > MAX_CONFIG_DEPTH:
            raise WeightsError(f"{source}: {name} is too large or too deeply nested to be a table of settings")
        if isinstance(v, (dict, list, tuple)):
            if id(v) in seen:
                raise WeightsError(f"{source}: {name} refers to itself (or shares parts); refused")
            seen.add(id(v))
            if isinstance(v, dict):
                if not all(isinstance(k, str) for k in v):
                    raise WeightsError(f"{source}: {name} has keys that are not text")
                stack.extend((x, depth + 1) for x in v.values())
            else:
                stack.extend((x, depth + 1) for x in v)
        elif not (v is None or isinstance(v, (str, int, float, bool))):
            raise WeightsError(f"{source}: {name} holds a {type(v).__name__}; only plain values are allowed")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------------------------------------------
# writing


def save_payload(payload: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a checkpoint payload atomically: temp file in the same folder, fsync, rename, fsync the folder.

    A kill at any moment leaves either the previous file or the new one, never a torn file. ``payload["model"]``
    must already be free of ``module.`` / ``_orig_mod.`` prefixes. A failed write (a full disk) is one
    ``WeightsError`` naming the file and the space it needed; the temp file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **payload}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, new_file_mode())  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, (OSError, RuntimeError)):  # torch reports a failed write as "enforce fail at inline_container"
            raise _save_error(path, e, payload_bytes(payload)) from None
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def payload_bytes(payload: Any) -> int:
    """Bytes of the tensors in ``payload`` (what the file will hold, give or take a few kB)."""
    if torch.is_tensor(payload):
        return payload.numel() * payload.element_size()
    if isinstance(payload, dict):
        return sum(payload_bytes(v) for v in payload.values())
    if isinstance(payload, (list, tuple)):
        return sum(payload_bytes(v) for v in payload)
    return 0


def _save_error(path: Path, e: BaseException, needed: int) -> WeightsError:
    free = shutil.disk_usage(path.parent).free
    full = getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or free < needed + (16 << 20)
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    what = (f"no space left on the device ({free >> 20} MiB free, the checkpoint needs {needed >> 20} MiB)" if full
            else f"the write failed ({first})")  # fmt: skip
    last = f"the last good checkpoint is {path}" if path.exists() else "no checkpoint was written there yet"
    return WeightsError(f"cannot write {path}: {what}; {last}. Free space, then resume with --resume auto")


def clean_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of saves that never finished (a ``kill -9`` mid-save leaves up to ~0.5 GB each):
    regular files named like ours (``.NAME.<random>.tmp``) only, no links. Call it before the first save of a run,
    when no other process writes into ``folder``. Returns what it removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(f".*.pt.*{TEMP_SUFFIX}") if p.is_file() and not p.is_symlink()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
