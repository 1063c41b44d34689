"""The layer table: each layer's output shape, parameters and FLOPs, counted by PyTorch rather than typed by hand.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts as 2 FLOPs; it counts
convolutions and matrix multiplies, which are >99.9% of AlexNet's work). torchvision's AlexNet at 224 px:
0.714 GMAC = 1.43 GFLOP forward; a training step is about 3x that (forward + two backward matmuls).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class LayerRow:
    name: str  # state_dict-style module path, e.g. "features.0"
    kind: str  # module class, e.g. "Conv2d"
    out_shape: tuple[int, ...]  # without the batch dimension
    params: int
    flops: int  # forward FLOPs for one image


def count_flops(fn, *args) -> int:
    """Total FLOPs counted while running ``fn(*args)``."""
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()


def layer_table(model: nn.Module, image_size: int = 224) -> list[LayerRow]:
    """One row per leaf module in execution order, for a single ``3 x image_size x image_size`` image."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []

    def hook(name: str):
        def fn(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            shapes[name] = tuple(output.shape[1:])

        return fn

    leaves = {name: m for name, m in model.named_modules() if not list(m.children())}
    for name, module in leaves.items():
        hooks.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    # FlopCounterMode keys per-module counts as "<ModelClass>.<module path>".
    counts = counter.get_flop_counts()
    prefix = type(model).__name__
    rows = []
    for name, shape in shapes.items():  # dicts keep insertion order = execution order
        module = leaves[name]
        flops = sum(counts.get(f"{prefix}.{name}", {}).values())
        params = sum(p.numel() for p in module.parameters(recurse=False))
        rows.append(LayerRow(name, type(module).__name__, shape, params, int(flops)))
    return rows


def format_table(rows: list[LayerRow], title: str = "") -> str:
    """A fixed-width text table with totals (parameters, GFLOPs and GMACs)."""
    lines = [title] if title else []
    lines.append(f"{'layer':<14}{'type':<20}{'output':>18}{'params':>14}{'MFLOPs':>12}")
    lines.append("-" * 78)
    for r in rows:
        shape = "x".join(str(s) for s in r.out_shape)
        lines.append(f"{r.name:<14}{r.kind:<20}{shape:>18}{r.params:>14,}{r.flops / 1e6:>12.1f}")
    total_params = sum(r.params for r in rows)
    total_flops = sum(r.flops for r in rows)
    lines.append("-" * 78)
    lines.append(f"{'total':<34}{'':>18}{total_params:>14,}{total_flops / 1e6:>12.1f}")
    lines.append(f"forward: {total_flops / 1e9:.3f} GFLOP = {total_flops / 2e9:.3f} GMAC per image")
    return "\n".join(lines)
