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

from .errors import ArgumentError, UserError
from .names import PRECISIONS
from .text import plural

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
        if not isinstance(name, (str, torch.device)):
            raise TypeError(name)  # torch.device(0) would be cuda:0, and None a TypeError from torch
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ArgumentError(f"device {name!r} is not a device; use one of {', '.join(DEVICES)} or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r}: CUDA is not available on this machine; use cpu or auto")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError(f"device {name!r}: MPS is not available on this machine; use cpu or auto")
    return device


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """``auto`` | ``fp32`` | ``bf16`` | ``fp16`` -> the autocast dtype (``torch.float32`` means no autocast)."""
    import torch

    if name not in PRECISIONS:
        raise ArgumentError(f"precision {name!r} is not one of {', '.join(PRECISIONS)}")
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
        where = f"cpu ({plural(torch.get_num_threads(), 'thread')})"
    else:
        where = device.type
    names = {torch.float32: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast + GradScaler"}
    return f"device: {where}, precision: {names[dtype]}, torch {torch.__version__}"


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
KEEP_FREED_BYTES = 2**31 - 1  # the most M_TRIM_THRESHOLD takes (an int): freed memory stays with the process


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep the memory a training step frees, for the next step, instead of handing it back to
    the kernel (PyTorch has no caching allocator on the CPU): no ``mmap`` for large blocks (glibc maps every block
    over 32 MiB, e.g. fc7's 67 MB gradient, and unmaps it when freed) and no trimming of the heap. Each step then
    faults in and zeroes ~100 MB of fresh pages less: AlexNet at 64 px on an AVX-512 BF16 CPU (2 cores, one path per
    process, median img/s of 6 windows of 10 steps) bf16 1,004 -> 1,410 at batch 128 (1.40x), 401 -> 801 at batch 32
    (2.0x), fp32 1.1-1.34x, for 2-7% more peak memory (1,011 -> 1,073 MiB). What ``MALLOC_MMAP_MAX_=0
    MALLOC_TRIM_THRESHOLD_=...`` or a preloaded jemalloc / tcmalloc do for PyTorch on CPUs, set from inside the
    process. For processes that train: a server's memory should shrink back after a burst. Returns whether it was
    set (False off glibc)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt, Windows)
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))
