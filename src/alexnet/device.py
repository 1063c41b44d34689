"""Choosing the device and the precision, once, in one place.

``auto`` device: CUDA, then Apple MPS, then CPU. ``auto`` precision: bf16 autocast on GPUs that compute it natively
(compute capability >= 8.0), fp16 autocast + GradScaler on older GPUs, fp32 on CPUs and MPS. CPU bf16 autocast is
opt-in (``--precision bf16``): on CPUs without bf16 units it is 20-50x slower than fp32, and even on our CI machine,
whose cpuinfo advertises AVX512-BF16 and AMX, a whole AlexNet training step measured 69 img/s in bf16 against 87 in
fp32 (64 px, batch 32), although single bf16 matmuls and convolutions ran 2-3x faster there.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from .errors import UserError
from .names import PRECISIONS

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions: the CLI reads these names while building its parsers.
DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps`` -> a ``torch.device``; a clear error if it is missing."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device; use one of {', '.join(DEVICES)}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError(f"--device {name}: MPS is not available on this machine (use --device cpu or auto)")
    return device


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """``auto`` | ``fp32`` | ``bf16`` | ``fp16`` -> the autocast dtype (``torch.float32`` means no autocast)."""
    import torch

    if name not in PRECISIONS:
        raise UserError(f"--precision {name!r} is not one of {', '.join(PRECISIONS)}")
    if name == "fp32":
        return torch.float32
    if name == "bf16":
        return torch.bfloat16
    if name == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32  # CPUs and MPS: see the module docstring


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """An autocast context for ``dtype``, or a no-op for fp32."""
    import torch

    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA, MPS; nothing to wait for on a CPU)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def describe(device: torch.device, dtype: torch.dtype) -> str:
    """One human line: which device and precision a run uses."""
    import torch

    if device.type == "cuda":
        where = f"cuda ({torch.cuda.get_device_name(device)})"
    elif device.type == "cpu":
        where = f"cpu ({torch.get_num_threads()} threads)"
    else:
        where = device.type
    names = {torch.float32: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast + GradScaler"}
    return f"device: {where}, precision: {names[dtype]}, torch {torch.__version__}"


# ----------------------------------------------------------------------------------------------------------------
# the fastest CPU path, chosen by measurement

CPU_PATHS = (("fp32", False), ("fp32", True), ("bf16", True))  # (precision, channels-last) candidates on a CPU
CPU_PATH_VERSION = 2


def cpu_has_bf16() -> bool:
    """Whether the CPU advertises native bf16 arithmetic (AVX512-BF16 or AMX-BF16; Linux ``/proc/cpuinfo``)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def _cpu_name() -> str:
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return platform.processor()


def choose_cpu_path(
    arch: str,
    num_classes: int,
    image_size: int,
    batch_size: int,
    *,
    precision: str = "auto",
    channels_last: bool | None = None,
    cache: str | None = None,
    log=print,
) -> tuple[str, bool]:
    """(precision, channels-last) that trains fastest on this CPU: a few interleaved training steps of each
    candidate (``CPU_PATHS``; bf16 only where the CPU has bf16 units; those matching a given ``precision`` or
    ``channels_last``) on random data with a throw-away model, once
    per (CPU, torch, threads, model, size, batch); cached in the cache directory (``ALEXNET_CACHE``)."""
    import json
    from pathlib import Path

    import torch

    from .data.stats import save_json
    from .data.synthetic import cache_root

    candidates = [c for c in CPU_PATHS if c[0] == "fp32" or cpu_has_bf16()]
    candidates = [(p, cl) for p, cl in candidates if precision in ("auto", p) and channels_last in (None, cl)]
    if not candidates:  # e.g. bf16 without channels-last: nothing to choose
        return ("fp32" if precision == "auto" else precision), bool(channels_last)
    key = "|".join(map(str, (CPU_PATH_VERSION, _cpu_name(), torch.__version__, torch.get_num_threads(), arch,
                             num_classes, image_size, batch_size, candidates)))  # fmt: skip
    path = Path(cache) if cache else cache_root() / "cpu-path.json"
    try:
        known = json.loads(path.read_text())
        known = known if isinstance(known, dict) else {}
    except (OSError, ValueError):
        known = {}
    hit = known.get(key)
    if isinstance(hit, list) and len(hit) == 2 and tuple(hit) in candidates:
        return hit[0], bool(hit[1])
    if len(candidates) == 1:
        return candidates[0]
    with torch.random.fork_rng(devices=[]):  # the run's random state must not depend on whether the cache hit
        best, shown, seconds = _measure_cpu_paths(arch, num_classes, image_size, batch_size, candidates)
    log(f"fastest CPU path measured in {seconds:.1f} s (img/s, median of 3 interleaved steps): "
        f"{shown} -> {best[0]}{' + channels-last' if best[1] else ''} (cached in {path}; --precision and "
        "--channels-last override)")  # fmt: skip
    known[key] = list(best)
    with contextlib.suppress(UserError):  # a read-only cache: measure again next time
        save_json(known, path)
    return best


def _measure_cpu_paths(arch: str, num_classes: int, image_size: int, batch_size: int, candidates: list):
    import statistics
    import time

    import torch

    from .model import create_model
    from .train import sgd, train_step

    t0 = time.perf_counter()
    steps, rates = {}, {c: [] for c in candidates}
    torch.manual_seed(0)
    for precision, cl in candidates:
        model = create_model(arch, num_classes=num_classes, dropout=0.0)
        x = torch.randn(batch_size, 3, image_size, image_size)
        if cl:
            model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, num_classes, (batch_size,))
        opt = sgd(model.parameters(), torch.device("cpu"), lr=1e-3, momentum=0.9, weight_decay=5e-4)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        dtype = resolve_precision(precision, torch.device("cpu"))
        crit = torch.nn.CrossEntropyLoss()
        steps[(precision, cl)] = lambda m=model, x=x, y=y, o=opt, s=scaler, d=dtype, c=crit: train_step(
            m, x, y, c, o, s, torch.device("cpu"), d
        )
        steps[(precision, cl)]()  # warm-up: allocation, kernel selection
    for _ in range(3):  # interleaved windows: A B C A B C ...
        for c, step in steps.items():
            t = time.perf_counter()
            step()
            rates[c].append(batch_size / (time.perf_counter() - t))
    best = max(candidates, key=lambda c: statistics.median(rates[c]))
    shown = ", ".join(f"{p}{' + channels-last' if cl else ''} {statistics.median(rates[(p, cl)]):.0f}"
                      for p, cl in candidates)  # fmt: skip
    return best, shown, time.perf_counter() - t0
