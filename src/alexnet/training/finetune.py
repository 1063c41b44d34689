"""Starting from pretrained weights (``--pretrained torchvision|PATH``): where the file is, loading it under a new
head, and the settings fine-tuning wants, each printed with its reason as the settings chosen from the data are.

``--pretrained torchvision`` is torchvision's own ImageNet file where torchvision keeps it
(``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth``, ``torch.hub.get_dir()``); nothing is downloaded.
What fine-tuning changes, where the flag is not given:

- the crop: 224 px, the size the weights were trained at (the data's own choice would be 64 px for small images:
  conv1's filters would see ImageNet objects 3.5x smaller than they learnt them);
- the lr: a tenth of what training from scratch would use (the body is already trained; the paper's 0.01 moves it
  away from what it learnt before the new head has learnt anything);
- the new head's lr: 10x the body's (``--head-lr-mult``): it starts from random weights;
- the warm-up: as the data's choice (20 steps, at most half an epoch), noted: the random head's first gradients
  are the largest of the run.

``--freeze features`` or ``all-but-head`` keeps those layers fixed (not chosen automatically: with little data it
trains faster, with more it reaches less).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from torch import nn

from ..config import TrainConfig
from ..errors import UserError

TORCHVISION_FILE = "alexnet-owt-7be5be79.pth"  # torchvision.models.AlexNet_Weights.IMAGENET1K_V1
TORCHVISION_URL = f"https://download.pytorch.org/models/{TORCHVISION_FILE}"
PRETRAINED_CROP = 224  # px: the crop torchvision's weights were trained at
LR_FACTOR = 0.1  # fine-tuning lr / from-scratch lr
HEAD_LR_MULT = 10.0
HEAD = "classifier.6."  # the last layer: replaced for the data's classes


def torchvision_path() -> Path:
    """Where torchvision keeps its AlexNet weights: ``torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth``."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE


def pretrained_path(source: str) -> Path:
    """The file ``--pretrained`` names (``torchvision``: torchvision's, see ``torchvision_path``); ``UserError`` in
    one line, saying where to put it and where to get it, when it is absent."""
    if source == "torchvision":
        path = torchvision_path()
        if not path.is_file():
            raise UserError(
                f"--pretrained torchvision: no {path}; put torchvision's AlexNet weights there ({TORCHVISION_URL}, "
                "or what torchvision.models.alexnet(weights='DEFAULT') downloads; $TORCH_HOME moves the folder), "
                "or give --pretrained PATH"
            )
        return path
    path = Path(source)
    if not path.is_file():
        raise UserError(f"--pretrained {source}: no such file (a weights file, one of our checkpoints, or torchvision)")
    return path


def check_pretrained(source: str) -> None:
    """``--pretrained``'s file is there and reads as weights: a wrong file (a photo, a truncated download) is refused
    in one line before the data is opened and decoded, not minutes later."""
    from ..weights import read_file

    read_file(pretrained_path(source))


def load_pretrained(model: nn.Module, source: str, in_channels: int = 3) -> str:
    """Load everything but the head of ``source`` into ``model`` (whose head stays new, for the data's classes;
    RGB conv1 kernels summed for a 1-channel model, ``model.adapt_input_conv``); returns the line that says what was
    loaded."""
    from ..model import CONV1_WEIGHT, adapt_input_conv, is_head
    from ..weights import check_state_dict, read_file

    path = pretrained_path(source)
    sd = read_file(path).model
    conv1 = sd.get(CONV1_WEIGHT)
    if conv1 is not None and conv1.ndim == 4 and conv1.shape[1] == 3 and in_channels == 1:
        sd = {**sd, CONV1_WEIGHT: adapt_input_conv(conv1, 1)}  # RGB kernels summed for gray input
    loaded = {k: v for k, v in sd.items() if not is_head(k)}
    head = {k: v for k, v in model.state_dict().items() if is_head(k)}
    check_state_dict(model, {**loaded, **head}, source=f"--pretrained {path}")
    model.load_state_dict({**loaded, **head})
    classes = model.state_dict()[HEAD + "weight"].shape[0]
    gray = "; conv1 summed over RGB for 1-channel input" if in_channels == 1 and conv1 is not None else ""
    return f"loaded {len(loaded)} tensors from {path}; new head: {classes} classes{gray}"


def resolve_settings(cfg: TrainConfig, dataset, world_size: int = 1, log: Callable[[str], None] = print):
    """``alexnet.auto.resolve_auto``, with the fine-tuning choices first when ``cfg.init_weights`` is set (each
    printed with its reason, one line); returns ``(cfg, the data's choices)``. ``head_lr_mult`` is always resolved."""
    from ..auto import resolve_auto

    if not cfg.init_weights:
        cfg, choices = resolve_auto(cfg, dataset, world_size)
        return dataclasses.replace(cfg, head_lr_mult=1.0 if cfg.head_lr_mult is None else cfg.head_lr_mult), choices
    notes, before = [], {}
    if cfg.image_size is None:
        before["image_size"] = PRETRAINED_CROP
        notes.append(f"image size {PRETRAINED_CROP} px (the weights were trained at {PRETRAINED_CROP})")
    resolved, choices = resolve_auto(dataclasses.replace(cfg, **before), dataset, world_size)
    after = {}
    if cfg.lr is None:
        after["lr"] = round(resolved.lr * LR_FACTOR, 7)
        notes.append(f"lr {after['lr']:g} for the body (a tenth of {resolved.lr:g} from scratch: it is trained)")
        choices = [c for c in choices if not c.startswith("lr ")]
    if cfg.head_lr_mult is None:
        after["head_lr_mult"] = HEAD_LR_MULT
        lr = after.get("lr", resolved.lr) * HEAD_LR_MULT
        notes.append(f"head lr {lr:g} (x{HEAD_LR_MULT:g}, --head-lr-mult: the new head starts from random weights)")
    if cfg.warmup_epochs is None:
        warm = next((c for c in choices if c.startswith("warm-up ")), None)
        if warm:
            choices.remove(warm)
            notes.append(f"{warm[:-1]}: the random head's first gradients are the run's largest)")
    if cfg.freeze != "none":
        notes.append(f"--freeze {cfg.freeze}: those layers stay as loaded")
    log(f"fine-tuning from {cfg.init_weights}: " + "; ".join(notes) + " (flags override)")
    return dataclasses.replace(resolved, **after), choices
