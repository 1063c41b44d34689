"""The fastest CPU path (precision, channels-last), chosen by a short measurement and cached, and the run's
precision decided from it."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path

import torch

from ..config import TrainConfig, parse_duration
from ..device import resolve_precision
from ..errors import UserError

# (precision, channels-last) candidates on a CPU with bf16 units, and on one without. fp32 + channels-last never won
# where bf16 is there (the measurement is a third cheaper without it); without bf16 units it ran 0-8% faster than
# fp32 at batch 256 and 64 px on an AVX2 CPU (356 against 335 img/s in one run), slower at batch 128 in another
CPU_PATHS = (("fp32", False), ("bf16", True))
CPU_PATHS_NO_BF16 = (("fp32", False), ("fp32", True))

# Where the CPU has bf16 units, bf16 + channels-last is taken unless fp32 measures more than 10% faster. It won
# every quiet measurement there (AVX-512 BF16 CPU, 64 px, shared fc6, one path per process, median img/s of 9
# windows of 10 steps at batch 32 / 64 / 128 / 256: bf16 425 / 680 / 953 / 1360, fp32 388 / 537 / 680 / 786), but
# the first 5-minute run after the machine started measured fp32 455 and bf16 449 (both slowed, bf16 more) and
# trained in fp32 at 0.18 s per step where bf16 takes 0.12: 80.7% against 86.6 and 87.3% on the photo stand-in.
# Taking bf16 where fp32 was 10% faster costs at most 10% of the speed; taking fp32 where bf16 was 1.4x faster
# cost a third of the steps.
BF16_EDGE = 1.1

CPU_PATH_VERSION = 6  # 6: bf16 taken unless fp32 is over 10% faster; 5: the measured model shares fc6 as training does
MEASURE_CLASSES = 10  # the throw-away model's head: the path does not depend on the data set (its class count)
# Of a time budget, the most the measurement may take; beyond it the run keeps fp32. A winner x times faster pays
# back a share m when (x - 1)(1 - m) > m: 10% for a winner 1.11x faster; bf16 ran 1.4-2x fp32 on an AVX-512 BF16 CPU
# (README), and at 5% a 1-minute run skipped its 3-s measurement and trained in fp32.
MEASURE_SHARE = 0.1


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
    image_size: int,
    batch_size: int,
    *,
    precision: str = "auto",
    channels_last: bool | None = None,
    budget_seconds: float | None = None,
    cache: str | None = None,
    log=print,
) -> tuple[str, bool]:
    """(precision, channels-last) that trains fastest on this CPU: a few interleaved training steps of each
    candidate (``CPU_PATHS``, or ``CPU_PATHS_NO_BF16`` where the CPU has no bf16 units; those matching a given
    ``precision`` or ``channels_last``) on random data with a throw-away model, once per (CPU, torch, threads,
    architecture, size, batch), whatever the data set; cached in the cache directory (``ALEXNET_CACHE``). Under a
    time budget of ``budget_seconds`` the measurement is skipped when its first steps say it would take more than
    ``MEASURE_SHARE`` of the budget (a winner 10% faster could not pay that back): fp32 without channels-last."""
    import torch

    from ..data.stats import save_json
    from ..data.synthetic import cache_root

    candidates = list(CPU_PATHS if cpu_has_bf16() else CPU_PATHS_NO_BF16)
    candidates = [(p, cl) for p, cl in candidates if precision in ("auto", p) and channels_last in (None, cl)]
    if not candidates:  # e.g. bf16 without channels-last: nothing to choose
        return ("fp32" if precision == "auto" else precision), bool(channels_last)
    key = "|".join(map(str, (CPU_PATH_VERSION, _cpu_name(), torch.__version__, torch.get_num_threads(), arch,
                             image_size, batch_size, candidates)))  # fmt: skip
    path = Path(cache) if cache else cache_root() / "cpu-path.json"
    known = _read_cache(path)
    hit = known.get(key)
    if isinstance(hit, list) and len(hit) == 2 and tuple(hit) in candidates:
        return hit[0], bool(hit[1])
    if len(candidates) == 1:
        return candidates[0]
    limit = MEASURE_SHARE * budget_seconds if budget_seconds else None
    with torch.random.fork_rng(devices=[]):  # the run's random state must not depend on whether the cache hit
        measured = _measure_cpu_paths(arch, image_size, batch_size, candidates, limit)
    if measured is None:
        default = next((c for c in candidates if c[0] == "fp32"), candidates[0])
        log(
            f"CPU path not measured: it would take more than {MEASURE_SHARE:.0%} of the time budget; "
            f"{default[0]}{' + channels-last' if default[1] else ''} (--precision and --channels-last override)"
        )
        return default
    best, shown, seconds = measured
    rule = f" (bf16 unless fp32 is over {BF16_EDGE - 1:.0%} faster)" if any(p == "bf16" for p, _ in candidates) else ""
    log(f"fastest CPU path measured in {seconds:.1f} s (img/s, the fastest of 3 interleaved steps): "
        f"{shown} -> {best[0]}{' + channels-last' if best[1] else ''}{rule} "
        f"(cached in {path}; --precision and --channels-last override)")  # fmt: skip
    known[key] = list(best)
    with contextlib.suppress(UserError):  # a read-only cache: measure again next time
        save_json(known, path)
    return best


def _read_cache(path: Path) -> dict:
    """The cached answers, keyed by machine and settings ({} when the file is missing or not a JSON table)."""
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


WARMUP_STEPS = 3  # a candidate's model, inputs and first step cost about this many steady steps (measured 2-4)
TIMED_STEPS = 3  # per candidate, interleaved


def measurement_seconds(first_seconds: float, step_seconds: float, n: int) -> float:
    """The whole measurement of ``n`` candidates, projected when the first one has been built and has run two steps
    (``first_seconds`` since the start, the second step alone ``step_seconds``): the others' set-up and warm-up, then
    ``TIMED_STEPS`` each. (The first step alone said too much: 1.0-1.3 s where the steps then took 0.4 s, so a
    5-minute budget at batch 256 kept fp32 at 0.40 s per step where bf16 ran 0.27.)"""
    return first_seconds + step_seconds * ((n - 1) * WARMUP_STEPS + n * TIMED_STEPS)


def _measure_cpu_paths(arch: str, image_size: int, batch_size: int, candidates: list, limit: float | None):
    """(best, table text, seconds), or None when the first candidate's steps say it would take over ``limit`` s
    (``measurement_seconds``)."""
    import time

    import torch

    from ..model import create_model
    from .step import sgd, train_step

    t0 = time.perf_counter()
    steps, rates = {}, {c: [] for c in candidates}
    torch.manual_seed(0)
    for precision, cl in candidates:
        model = create_model(arch, num_classes=MEASURE_CLASSES, dropout=0.0)
        model.share_fc6(image_size)  # as training does
        x = torch.randn(batch_size, 3, image_size, image_size)
        if cl:
            model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, MEASURE_CLASSES, (batch_size,))
        opt = sgd(model.parameters(), torch.device("cpu"), lr=1e-3, momentum=0.9, weight_decay=5e-4)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        dtype = resolve_precision(precision, torch.device("cpu"))
        crit = torch.nn.CrossEntropyLoss()
        steps[(precision, cl)] = lambda m=model, x=x, y=y, o=opt, s=scaler, d=dtype, c=crit: train_step(
            m, x, y, c, o, s, torch.device("cpu"), d
        )
        steps[(precision, cl)]()  # warm-up: allocation, kernel selection
        if limit is not None and len(steps) == 1:  # one more step shows the steady speed (a first step is 2-3x it)
            t = time.perf_counter()
            steps[(precision, cl)]()
            if measurement_seconds(time.perf_counter() - t0, time.perf_counter() - t, len(candidates)) > limit:
                return None
    for _ in range(TIMED_STEPS):  # interleaved windows: A B C A B C ...
        for c, step in steps.items():
            t = time.perf_counter()
            step()
            rates[c].append(batch_size / (time.perf_counter() - t))
    # the fastest step of each: another process only ever slows a step down (a median of 3 took the wrong winner
    # when 2 of bf16's 3 steps were hit: 565 against fp32's 575 img/s, where bf16 runs 1.4x faster)
    fastest = {c: max(rates[c]) for c in candidates}
    shown = ", ".join(f"{p}{' + channels-last' if cl else ''} {fastest[(p, cl)]:.0f}" for p, cl in candidates)
    return pick(fastest), shown, time.perf_counter() - t0


def pick(fastest: dict) -> tuple[str, bool]:
    """The path with the most images per second (``fastest``: path -> img/s), bf16's counted ``BF16_EDGE`` x: fp32
    must run more than 10% faster to be taken over it."""
    return max(fastest, key=lambda c: fastest[c] * (BF16_EDGE if c[0] == "bf16" else 1.0))


def choose_precision(cfg: TrainConfig, device: torch.device, log) -> TrainConfig:
    """``cfg`` with ``precision`` and ``channels_last`` decided: bf16/fp16 + channels-last on GPUs; on a CPU what a
    short, cached measurement finds fastest (``choose_cpu_path``) for what is left ``auto``."""
    precision, channels_last = cfg.precision, cfg.channels_last
    if device.type == "cpu" and (precision == "auto" or channels_last is None):
        size, batch = cfg.image_size, cfg.batch_size
        budget = parse_duration(cfg.time_budget) if cfg.time_budget else None
        fast_precision, fast_cl = choose_cpu_path(cfg.arch, size, batch, precision=precision,
                                                  channels_last=channels_last, budget_seconds=budget,
                                                  log=log)  # fmt: skip
        precision = fast_precision if precision == "auto" else precision
        channels_last = fast_cl if channels_last is None else channels_last
    if precision == "auto":
        dtype = resolve_precision("auto", device)
        precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
    if channels_last is None:
        channels_last = device.type == "cuda"
    return dataclasses.replace(cfg, precision=precision, channels_last=channels_last)
