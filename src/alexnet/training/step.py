"""One optimizer step, and the model and optimizer it updates: shared by training, the CPU-path measurement and
``alexnet bench``."""

from __future__ import annotations

import functools

import torch
from torch import nn

from ..config import TrainConfig
from ..device import autocast
from ..model import create_model


def train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """One optimizer step on the batch ``x`` (B, 3, S, S), ``y`` (B,): forward (autocast to ``dtype``), backward,
    step. Returns the batch's mean loss, detached and still on the device (reading it syncs)."""
    with autocast(device, dtype):
        loss = criterion(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()  # a no-op scale unless fp16
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def build_model(cfg: TrainConfig, num_classes: int, log=None) -> nn.Module:
    """``cfg.arch`` for ``num_classes``; with ``cfg.init_weights`` (``--pretrained``) every layer but the head from
    that file (``finetune.load_pretrained``; ``log`` gets the line saying what was loaded), frozen as ``cfg.freeze``
    says, fc6 shared where ``cfg.image_size`` allows (``AlexNet.share_fc6``)."""
    kwargs = {} if cfg.dropout is None else {"dropout": cfg.dropout}  # None (not resolved): the model's default
    if cfg.init is not None:
        kwargs["init"] = cfg.init
    model = create_model(cfg.arch, num_classes=num_classes, in_channels=cfg.in_channels or 3, **kwargs)
    if cfg.init_weights:  # fine-tuning: everything but the head from the file, a new head for our classes
        from .finetune import load_pretrained

        line = load_pretrained(model, cfg.init_weights, in_channels=cfg.in_channels or 3)
        if log is not None:
            log(line)
    model.freeze(cfg.freeze)
    if cfg.image_size is not None:
        model.share_fc6(cfg.image_size)  # one block for fc6's 36 copies of a one-cell conv5 map: faster, same SGD
    return model


def build_optimizer(cfg: TrainConfig, model: nn.Module, device: torch.device) -> torch.optim.SGD:
    return sgd(
        model.param_groups(1.0 if cfg.head_lr_mult is None else cfg.head_lr_mult, cfg.weight_decay),  # None: unresolved
        device,
        lr=cfg.lr or 0.0,  # set before every step (train_one_epoch); None: not yet chosen from the data
        momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )


def sgd(params, device: torch.device, **hyper) -> torch.optim.SGD:
    """``torch.optim.SGD`` with its fused kernel (one pass over all parameters) where this torch has one for
    ``device``, else the foreach one. On 2 CPU cores the update of AlexNet's 61M parameters took 34 ms fused against
    153 ms foreach, a third of a batch-32 step at 64 px: training steps ran 1.1-1.5x faster (batch 256-32; README,
    "Your own data")."""
    fused = fused_sgd_works(str(torch.device(device)))
    return torch.optim.SGD(params, **hyper, fused=fused or None, foreach=None if fused else True)


@functools.cache
def fused_sgd_works(device: str) -> bool:
    """Whether ``SGD(fused=True)`` steps on ``device`` (``"cpu"``, ``"cuda:1"``...) with this torch (CPU: torch >= 2.4);
    tried once per device, on that device (a DDP rank never touches another rank's GPU)."""
    p = torch.zeros(2, device=device, requires_grad=True)
    p.grad = torch.ones_like(p)
    try:
        torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=1e-4, fused=True).step()
    except (RuntimeError, ValueError, TypeError):
        return False
    return bool(torch.allclose(p.detach(), torch.full_like(p, -0.1)))
