"""Throughput, measured side by side in one run: the model alone, the input pipelines alone, and both together.

1. model: training steps on random tensors already on the device -> img/s and MFU (counted FLOPs / peak FLOPs).
2. loaders: (a) the reference pipeline of pytorch/examples (PIL + RandomResizedCrop + ToTensor + Normalize in
   DataLoader workers), (b) our folder pipeline (``FolderLoader``), (c) the packed loader (``PackedLoader``).
3. end to end: training steps (``alexnet.training.step.train_step``, what training runs) fed by (b) and by (c), and
   their ratio to (1). Model-only and end-to-end windows are interleaved (A B C A B C ...) and each ratio is a median of
   window pairs side by side, with its min and max: an end-to-end ratio above 1.0 is noise and reads as such.

Every number is the median over ``repeats`` windows, after warm-up. A window is ``steps`` batches, lengthened to
last at least ``min_time`` seconds (a fast loader's 20 batches take tens of milliseconds; 15-batch epochs of one
packed loader measured 16k-46k img/s on a shared 2-core VM); the JSON records each row's batches per window. Timing
uses CUDA events on the GPU and ``perf_counter`` on the CPU (where every op is synchronous). All loaders use the
same augmentation (RandomResizedCrop + flip) so their speeds compare like for like; one more row (2d) times the
packed loader with its default, the paper's preset (random crop + flip + PCA colour noise), for which packing is
designed.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .bench_config import BenchConfig
from .device import keep_freed_memory, resolve_device, resolve_precision, synchronize
from .errors import UserError
from .preprocess import IMAGENET, Preprocess, default_resize
from .progress import progress
from .text import plural

# Dense peak tensor-core FLOP/s (bf16/fp16, no sparsity), from the vendors' data sheets.
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12}


# ---------------------------------------------------------------------------------------------------------------------
# timing


def _timed(device: torch.device, fn: Callable[[], None]) -> float:
    """Seconds that ``fn`` takes, including all device work it queued."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def _measure(device: torch.device, cfg: BenchConfig, run: Callable[[int], None], images_per_batch: int) -> dict:
    """img/s over ``repeats`` windows after ``warmup`` batches. The first window has ``steps`` batches; if it was
    shorter than ``min_time`` it only sizes the others (``steps`` scaled up to last ``min_time``) and is dropped."""
    run(cfg.warmup)
    synchronize(device)
    steps = cfg.steps
    first = _timed(device, lambda: run(steps))
    seconds = [first]
    if first < cfg.min_time:
        steps = math.ceil(steps * cfg.min_time / max(first, 1e-6))
        seconds = []
    seconds += [_timed(device, lambda: run(steps)) for _ in range(cfg.repeats - len(seconds))]
    rates = [images_per_batch * steps / t for t in seconds]
    return {"img_s": statistics.median(rates), "runs": rates, "steps": steps}


def _endless(loader) -> Iterator:
    """Batches forever, moving to the next epoch (``set_epoch``) when one ends."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def _consume(it: Iterator, device: torch.device, step: Callable | None = None) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            x, y = next(it)
            if step is not None:
                step(x, y)
            elif x.device != device:  # the reference loader yields CPU tensors: count the copy as its work
                x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    return run


# ---------------------------------------------------------------------------------------------------------------------
# the pieces


def _train_step(model: torch.nn.Module, device: torch.device, dtype: torch.dtype, channels_last: bool) -> Callable:
    """``step(x, y)``: ``training.step.train_step`` (what training runs), after moving a CPU batch to the device."""
    from .training.step import sgd, train_step

    opt = sgd(model.parameters(), device, lr=1e-3, momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    criterion = torch.nn.CrossEntropyLoss()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        if x.device != device:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        train_step(model, x, y, criterion, opt, scaler, device, dtype)

    return step


def _interleaved(device: torch.device, cfg: BenchConfig, runs: dict[str, Callable[[int], None]], images: int,
                 log: Callable[[str], None] = lambda line: None) -> dict:  # fmt: skip
    """``_measure`` for several runs at once, their windows interleaved (A B C A B C ...), so that a change in the
    machine's load hits all of them alike and a ratio of two is taken from windows side by side. ``log`` gets a
    line once the windows are sized and one per round of windows."""
    steps = {}
    for name, run in runs.items():
        run(cfg.warmup)
        first = _timed(device, lambda run=run: run(cfg.steps))
        steps[name] = max(cfg.steps, math.ceil(cfg.steps * cfg.min_time / max(first, 1e-6)))
    log("   windows of " + ", ".join(f"{name} {plural(n, 'batch', 'batches')}" for name, n in steps.items()))
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(cfg.repeats):
        for name, run in runs.items():
            seconds = _timed(device, lambda run=run, n=steps[name]: run(n))
            rates[name].append(images * steps[name] / seconds)
        log(f"   round {i + 1}/{cfg.repeats}: " + ", ".join(f"{name} {r[-1]:,.0f}" for name, r in rates.items())
            + " img/s")  # fmt: skip
    return {name: {"img_s": statistics.median(r), "runs": r, "steps": steps[name]} for name, r in rates.items()}


def paired_ratio(a: list[float], b: list[float]) -> dict:
    """Median, min and max of ``a[i] / b[i]`` over windows measured side by side."""
    ratios = [x / y for x, y in zip(a, b)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def _flops_per_image(model: torch.nn.Module, image_size: int, num_classes: int) -> int:
    """Training FLOPs per image (forward + backward), counted by PyTorch on a batch of 2 on the CPU."""
    import copy

    from .summary import count_flops

    m = copy.deepcopy(model).float().cpu()
    x, y = torch.randn(2, 3, image_size, image_size), torch.randint(0, num_classes, (2,))
    return count_flops(lambda: F.cross_entropy(m(x), y).backward()) // 2


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """Dense bf16/fp16 peak FLOP/s of a known GPU; None elsewhere (CPU, fp32, unknown cards)."""
    if device.type != "cuda" or dtype == torch.float32:
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def _prepare_data(cfg: BenchConfig, tmp: Path, log: Callable[[str], None]) -> tuple[str | None, Path]:
    """(image folder or None, pack dir): generated, or packed from at most ``max_images`` evenly spaced train images
    of ``cfg.data``, or ``cfg.data`` if it is a pack (read in place)."""
    from .data.pack import pack_splits
    from .data.sources import open_dataset
    from .data.split import Subset

    resize = default_resize(cfg.image_size)
    if cfg.data is None:
        log(f"drawing {cfg.synthetic_images:,} synthetic JPEGs of {resize} px (--synthetic-images) ...")
        folder = str(_make_folder(tmp / "synthetic", cfg.synthetic_images, resize))
        dataset = open_dataset(folder)
    else:
        folder, dataset = cfg.data, open_dataset(cfg.data)
        if dataset.kind == "pack":
            return None, Path(cfg.data)
    train = dataset.split("train")
    if len(train) > cfg.max_images:
        log(f"packing {cfg.max_images} of the {len(train)} train images of {cfg.data} (evenly spaced; --max-images)")
        train = Subset(train, np.linspace(0, len(train) - 1, cfg.max_images).round().astype(int))
    pack = tmp / "packed"
    log(f"packing {len(train):,} images at {resize} px for the packed loader ...")
    pack_splits({"train": train}, pack, size=resize, workers=cfg.workers, progress=True, source=str(folder))
    return folder, pack


def _make_folder(out: Path, n: int, size: int, classes: int = 10) -> Path:
    """``n`` JPEGs of ``size`` px in ``out/train/<class>/``: synthetic shapes drawn small and upscaled (drawing
    at full size costs ~0.1 s per image; decoding cost, what the benchmark measures, depends only on the size)."""
    from PIL import Image

    from .data.synthetic import make_synthetic

    small = make_synthetic(out.parent / "small", classes=classes, per_class=4, val_per_class=0, size=32,
                           show_progress=False)  # fmt: skip
    bases = sorted((small / "train").glob("*/*.jpg"))
    with progress(n, "draw", unit="img") as bar:  # a bar on a terminal, else a line every 30 s
        for i in range(n):
            src = bases[i % len(bases)]
            folder = out / "train" / src.parent.name
            folder.mkdir(parents=True, exist_ok=True)
            image = Image.open(src).convert("RGB").resize((size, size), Image.BILINEAR)
            image.save(folder / f"{i:06d}.jpg", quality=90)
            bar.update(1)
    return out


def _reference_loader(folder: str, cfg: BenchConfig, device: torch.device):
    """pytorch/examples imagenet: ImageFolder + PIL transforms in DataLoader workers."""
    import torchvision.datasets as D
    import torchvision.transforms as T

    from .data.sources import open_dataset

    train = open_dataset(folder).split("train")
    if not isinstance(train.items, list):
        raise UserError(f"{folder}: the reference loader reads image files (ImageFolder), not {type(train).__name__}")
    tf = T.Compose(
        [
            T.RandomResizedCrop(cfg.image_size),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET.mean, IMAGENET.std),
        ]
    )
    ds = D.ImageFolder(str(Path(train.root)), tf)
    return torch.utils.data.DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=True,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=cfg.workers > 0,
    )


def _folder_loader(folder: str, cfg: BenchConfig, device: torch.device):
    from .data.loading import make_loader
    from .data.sources import open_dataset

    train = open_dataset(folder).split("train")
    pre = Preprocess.for_crop(cfg.image_size)
    return make_loader(train, pre, batch_size=cfg.batch_size, train=True, preset="torchvision", device=device,
                       channels_last=cfg.channels_last, workers=cfg.workers)  # fmt: skip


def _packed_loader(pack: Path, cfg: BenchConfig, device: torch.device, preset: str = "torchvision"):
    from .data.loading import make_loader
    from .data.sources import open_dataset

    dataset = open_dataset(pack)  # the paper preset adds PCA colour noise from the pack's statistics
    pre = Preprocess(crop=cfg.image_size, resize=dataset.image_size)
    return make_loader(dataset.split("train"), pre, batch_size=cfg.batch_size, train=True, preset=preset,
                       pca=dataset.stats, pca_std=0.1 if preset == "paper" else 0.0, device=device,
                       channels_last=cfg.channels_last)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# the run


def _say(line: str) -> None:
    print(line, flush=True)  # flushed: into a pipe or a log file too, a line as each measurement ends


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = _say) -> dict:
    """Run all measurements on one device and return the results (see ``format_results``); ``log`` gets a line
    per stage and per measurement as it ends (a minute or more each at the defaults)."""
    from .model import create_model

    cfg.validate()
    device = resolve_device(cfg.device)
    dtype = resolve_precision(cfg.precision, device)
    if device.type == "cpu":
        keep_freed_memory()  # as training does
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="alexnet-bench-") as tmp:
        t0 = time.perf_counter()
        folder, pack = _prepare_data(cfg, Path(tmp), log)
        log(f"data ready in {time.perf_counter() - t0:.0f} s; measuring {plural(cfg.repeats, 'window')} per row, each "
            f"at least {plural(cfg.steps, 'batch', 'batches')} and {cfg.min_time:g} s, after "
            f"{plural(cfg.warmup, 'warm-up batch', 'warm-up batches')}")  # fmt: skip
        from .data.pack import read_manifest

        num_classes = len(read_manifest(pack)["classes"])
        n_images = read_manifest(pack)["splits"]["train"]["count"]
        if n_images < cfg.batch_size:
            raise UserError(f"--batch-size {cfg.batch_size} is larger than the {n_images} training images")

        model = create_model(cfg.arch, num_classes=num_classes).to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        flops = _flops_per_image(model, cfg.image_size, num_classes)
        runner = torch.compile(model) if cfg.compile else model
        step = _train_step(runner, device, dtype, cfg.channels_last)

        x = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size, device=device)
        y = torch.randint(0, num_classes, (cfg.batch_size,), device=device)
        model_only = lambda n: [step(x, y) for _ in range(n)]  # noqa: E731

        loaders: dict[str, Callable[[], object]] = {}
        if folder is not None:
            loaders["reference"] = lambda: _reference_loader(folder, cfg, device)
            loaders["folder"] = lambda: _folder_loader(folder, cfg, device)
        loaders["packed"] = lambda: _packed_loader(pack, cfg, device)
        loaders["packed_paper"] = lambda: _packed_loader(pack, cfg, device, preset="paper")
        for name, make in loaders.items():
            t0 = time.perf_counter()
            with contextlib.closing(_endless(make())) as it:
                m = results[f"loader_{name}"] = _measure(device, cfg, _consume(it, device), cfg.batch_size)
            log(f"2. loader only, {name}: {m['img_s']:,.0f} img/s (median of {plural(len(m['runs']), 'window')} of "
                f"{plural(m['steps'], 'batch', 'batches')}; {time.perf_counter() - t0:.0f} s)")  # fmt: skip
        log("1 + 3. model only and end to end, interleaved ...")
        with contextlib.ExitStack() as stack:
            runs = {"model": model_only}
            for name in ("folder", "packed"):
                if name in loaders:
                    it = stack.enter_context(contextlib.closing(_endless(loaders[name]())))
                    runs[f"train_{name}"] = _consume(it, device, step)
            results.update(_interleaved(device, cfg, runs, cfg.batch_size, log))
        results = {key: results[key] for key in LABELS if key in results}  # in the table's order

    peak = peak_flops(device, dtype)
    results["model"]["mfu"] = None if peak is None else results["model"]["img_s"] * flops / peak
    ratios, spread = _ratios(results)
    return {
        "device": _device_name(device),
        "torch": torch.__version__,
        "precision": str(dtype).replace("torch.", ""),
        "train_gflop_per_image": flops / 1e9,
        "peak_flops": peak,
        "settings": asdict(cfg),
        "results": results,
        "ratios": ratios,
        "ratio_spread": spread,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }


def _ratios(results: dict[str, dict]) -> tuple[dict, dict]:
    """Each loader over the reference loader, and each end-to-end row over the model-only windows beside it
    (median of the pairs; the spread too: above 1.0 is noise)."""
    ratios, spread = {}, {}
    if "loader_reference" in results:
        ref = results["loader_reference"]["img_s"]
        for name in ("folder", "packed", "packed_paper"):
            if f"loader_{name}" in results:
                ratios[f"loader_{name}_vs_reference"] = results[f"loader_{name}"]["img_s"] / ref
    for name in ("folder", "packed"):
        if f"train_{name}" in results:
            pair = paired_ratio(results[f"train_{name}"]["runs"], results["model"]["runs"])
            ratios[f"train_{name}_vs_model"] = pair["median"]
            spread[f"train_{name}_vs_model"] = pair
    return ratios, spread


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({plural(torch.get_num_threads(), 'thread')})"
    return device.type


LABELS = {
    "model": "1. model only (random tensors on device)",
    "loader_reference": "2a. loader: reference (PIL + DataLoader)",
    "loader_folder": "2b. loader: folder pipeline",
    "loader_packed": "2c. loader: packed",
    "loader_packed_paper": "2d. loader: packed, paper preset",
    "train_folder": "3b. end to end: folder pipeline",
    "train_packed": "3c. end to end: packed",
}


def columns(rows: list[list[str]], align: str, gap: int = 2) -> list[str]:
    """``rows`` of cells as lines of columns, each as wide as its widest cell and ``gap`` spaces apart (``align``: one
    ``<`` or ``>`` per column), so that no two cells run together whatever their width."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(align))]
    return [(" " * gap).join(f"{cell:{a}{w}}" for cell, a, w in zip(row, align, widths)).rstrip() for row in rows]


def format_results(r: dict) -> str:
    """The results as a fixed-width table with the device, versions and settings above it."""
    s = r["settings"]
    lines = [
        f"device: {r['device']}, torch {r['torch']}, precision {r['precision']}",
        f"arch {s['arch']}, batch {s['batch_size']}, {s['image_size']} px, channels_last {s['channels_last']}, "
        f"compile {s['compile']}, {plural(s['workers'], 'worker')}; median of {plural(s['repeats'], 'window')} of >= "
        f"{s['steps']} "
        f"batches and >= {s.get('min_time', 0):g} s",
    ]
    rows = [["measurement", "img/s", "min", "max", "batches", "ratio"]]
    ratio_of = {
        "loader_folder": ("loader_folder_vs_reference", "x ref"),
        "loader_packed": ("loader_packed_vs_reference", "x ref"),
        "loader_packed_paper": ("loader_packed_paper_vs_reference", "x ref"),
        "train_folder": ("train_folder_vs_model", "x model"),
        "train_packed": ("train_packed_vs_model", "x model"),
    }
    for key, label in LABELS.items():
        if key not in r["results"]:
            continue
        m = r["results"][key]
        ratio = ""
        if key in ratio_of and ratio_of[key][0] in r["ratios"]:
            ratio = f"{r['ratios'][ratio_of[key][0]]:.2f} {ratio_of[key][1]}"
            pair = r.get("ratio_spread", {}).get(ratio_of[key][0])
            if pair:
                ratio = f"{pair['median']:.2f} [{pair['min']:.2f}-{pair['max']:.2f}] {ratio_of[key][1]}"
        rows.append([label, f"{m['img_s']:,.0f}", f"{min(m['runs']):,.0f}", f"{max(m['runs']):,.0f}",
                     str(m.get("steps", s["steps"])), ratio])  # fmt: skip
    table = columns(rows, align="<>>>><")
    lines += [table[0], "-" * max(map(len, table)), *table[1:]]
    noisy = [k for k, p in r.get("ratio_spread", {}).items() if p["median"] > 1.0]
    if r.get("ratio_spread"):
        lines.append("end-to-end ratios: median [min-max] of each window over the model-only window beside it "
                     "(interleaved)" + ("; above 1.0 is measurement noise, not a pipeline faster than the model"
                                        if noisy else ""))  # fmt: skip
    mfu = r["results"]["model"].get("mfu")
    lines.append(
        f"model FLOPs: {r['train_gflop_per_image']:.3f} GFLOP per training image; "
        f"MFU: {'n/a' if mfu is None else f'{mfu:.1%}'}"
        + ("" if r["peak_flops"] is None else f" of {r['peak_flops'] / 1e12:.0f} TFLOP/s")
    )
    return "\n".join(lines)
