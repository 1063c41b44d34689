"""fc6 as one shared block while training on crops whose conv5 map is a single cell (63-94 px: every run on small
images, where AlexNet's 64-px crops are the default).

Before fc6 the average pool turns conv5's map into a 6x6 grid; a one-cell map is copied into all 36 cells, so fc6's
weight, (4096, 256 x 36), is 36 blocks (4096, 256) that each multiply the same 256 values. Only their sum acts
(``fc6(x) = (W_1 + ... + W_36) x``), each block gets the same gradient ``g``, and with plain SGD the sum moves by
``-lr (36 g + wd sum)`` per step whatever the blocks are. ``SharedFc6`` trains one block ``S`` that stands for all 36
(each copy equal to it, their sum ``36 S``): in a parameter group of its own with lr x 1/36 and weight decay x 36
(``AlexNet.param_groups``) its gradient is ``36 g`` and ``36 S`` moves by ``-lr/36 x 36 (36 g + 36 wd S)``, the same
step, momentum and Nesterov included (both are linear in the gradient and the weight): plain fc6's SGD trajectory.

What it saves: fc6's 37.7M of AlexNet's 61M parameters were read to fold the pool into fc6 (``AlexNet``'s
``_small_map_forward``), written back as a gradient, and updated with their momentum, every step. Training at 64
px, fp32, 2-core AVX2 CPU (``benchmarks/cpu_paths.py``, interleaved, median of 5): 113 / 180 / 199 / 237 -> 215 / 274
/ 281 / 283 img/s at batch 32 / 64 / 128 / 256.

Its ``state_dict`` is plain fc6's (each of the 36 blocks a copy of ``S``), so checkpoints, exports and every reader
see a torchvision AlexNet; loading a plain fc6 takes its blocks' mean (exactly ``S`` when the blocks are copies, as
saved, so a resumed run continues bit for bit).
"""

from __future__ import annotations

import torch
from torch import nn

POOL_CELLS = 36  # the 6x6 grid of the average pool before fc6


class SharedFc6(nn.Module):
    """A plain ``nn.Linear`` fc6 (in: channels x 36) whose 36 blocks are all ``weight`` (out, channels)."""

    def __init__(self, fc6: nn.Linear):
        super().__init__()
        self.out_features, self.in_features = fc6.weight.shape
        self.channels = self.in_features // POOL_CELLS
        self.weight = nn.Parameter(_blocks(fc6.weight.detach()).mean(-1), requires_grad=fc6.weight.requires_grad)
        self.bias = fc6.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Plain fc6 on the pooled, flattened grid (B, channels x 36): every block is ``weight``."""
        return nn.functional.linear(x.view(x.shape[0], self.channels, POOL_CELLS).sum(-1), self.weight, self.bias)

    def cell_weight(self, pool: torch.Tensor) -> torch.Tensor:
        """fc6 folded with the pool: (out, channels, cells) for ``pool`` (cells, 36), as
        ``plain_weight().view(out, channels, 36) @ pool.T``."""
        return self.weight.unsqueeze(-1) * pool.sum(1).to(self.weight.dtype)

    def plain_weight(self) -> torch.Tensor:
        """Plain fc6's weight (out, channels x 36): 36 copies of ``weight``."""
        shape = (self.out_features, self.channels, POOL_CELLS)
        return self.weight.detach().unsqueeze(-1).expand(shape).reshape(self.out_features, self.in_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, one block shared by 36 cells"

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        destination[prefix + "weight"] = self.plain_weight()
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        weight = state_dict.get(prefix + "weight")
        if isinstance(weight, torch.Tensor) and tuple(weight.shape) == (self.out_features, self.in_features):
            blocks = _blocks(weight)
            first = blocks[..., :1]
            shared = first[..., 0] if torch.equal(blocks, first.expand_as(blocks)) else blocks.mean(-1)
            state_dict = {**state_dict, prefix + "weight": shared}
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _blocks(weight: torch.Tensor) -> torch.Tensor:
    """Plain fc6's weight (out, channels x 36) as (out, channels, 36): the pool flattens channel-major."""
    return weight.view(weight.shape[0], -1, POOL_CELLS)


def saved_values(model: nn.Module) -> int:
    """The numbers in ``model``'s ``state_dict``'s parameters, a shared fc6 counted as the plain one it saves."""
    shared = sum(m.in_features * m.out_features - m.weight.numel() for m in model.modules() if isinstance(m, SharedFc6))
    return sum(p.numel() for p in model.parameters()) + shared


def share_fc6(classifier: nn.Sequential, conv5_cells: int) -> bool:
    """Replace ``classifier[1]`` (fc6) by a ``SharedFc6`` when a run's every conv5 map is ``conv5_cells`` = 1 cell,
    no dropout masks the 36 copies apart (``classifier[0]``) and fc6 trains; whether it did."""
    fc6 = classifier[1]
    if conv5_cells != 1 or classifier[0].p > 0 or type(fc6) is not nn.Linear or not fc6.weight.requires_grad:
        return False
    classifier[1] = SharedFc6(fc6)
    return True
