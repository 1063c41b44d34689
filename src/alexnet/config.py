"""Training configuration: one dataclass, three recipes, and how flags, a config file and a recipe combine.

Precedence, lowest first: the dataclass defaults, the recipe, ``--config FILE`` (TOML or YAML), command-line flags.
The resolved config is written to ``RUN_DIR/config.json`` and stored inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError


@dataclass
class TrainConfig:
    # data
    data: str | None = None  # image folders, ImageNet layout, CIFAR archive, packed dir; None = built-in synthetic
    train_dir: str | None = None
    val_dir: str | None = None
    image_size: int | None = None  # px, the training crop; None = 224 (64 for the built-in synthetic data)
    resize_size: int | None = None  # px, shorter side before cropping; None = crop * 8/7 (256 for 224)
    augment: str = "paper"  # "paper" (stored square, random crop, flip) | "torchvision" (RandomResizedCrop, flip)
    pca_std: float = 0.1  # std of the paper's PCA colour noise alphas; 0 = off
    workers: int | None = None  # DataLoader worker processes; None = 0 on CPU, else cores - 1 (at most 8)
    max_bad_fraction: float = 0.01  # stop when more than this fraction of a split fails to decode
    # model
    arch: str = "alexnet"
    init: str | None = None  # "torchvision" | "paper" | "kaiming"; None = the architecture's own default
    dropout: float = 0.5
    # optimisation
    recipe: str = "fast"
    epochs: int = 90
    batch_size: int = 128  # per step, summed over all DDP ranks
    lr: float = 0.01  # peak learning rate for `batch_size`
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    schedule: str = "plateau"  # "plateau" (÷10 when val error stalls) | "step" | "cosine"
    warmup_epochs: float = 0.0  # linear warm-up from lr/100 (fractional epochs allowed)
    step_epochs: int = 30  # "step": multiply by lr_decay every step_epochs
    lr_decay: float = 0.1
    plateau_patience: int = 2  # "plateau": epochs without val top-1 improvement before a decay
    plateau_max_decays: int = 3  # paper §5: "reduced three times prior to termination"
    # fine-tuning
    init_weights: str | None = None  # start from a torchvision weights file or one of our checkpoints
    freeze: str = "none"  # "none" | "features" | "all-but-head"
    head_lr_mult: float = 1.0  # learning-rate multiplier of the new last layer
    # hardware
    device: str = "auto"
    precision: str = "auto"  # "auto" | "fp32" | "bf16" | "fp16"
    channels_last: bool | None = None  # None = on for CUDA
    compile: bool | None = None  # torch.compile; None = on for CUDA
    # run
    out: str | None = None  # run directory; None = runs/<arch>-<recipe>-<time>
    resume: str | None = None  # "auto" (RUN_DIR/checkpoints/last.pt) or a checkpoint path
    seed: int = 0
    log_every: int = 100  # steps between loss readings (each reading syncs with the device)
    checkpoint_minutes: float = 0.0  # also write last.pt every this many minutes; 0 = once per epoch
    max_steps_per_epoch: int | None = None  # cut epochs short (smoke tests, benchmarks)
    ten_crop_eval: bool = False  # final evaluation with ten crops (paper §4.1)
    plots: bool = False  # write the pictures at the end (needs matplotlib)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes recorded with the run

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# The recipes. Each is a set of overrides on the defaults above; flags override the recipe.
RECIPES: dict[str, dict[str, Any]] = {
    # paper §5: SGD, batch 128, momentum 0.9, weight decay 5e-4, lr 0.01 divided by 10 when the validation error
    # stopped improving (three times), about 90 epochs; §4.1 augmentation: 256-px stored images, random 224 crops,
    # flips and PCA colour noise; paper init for alexnet2012.
    "paper": dict(
        epochs=90,
        batch_size=128,
        lr=0.01,
        momentum=0.9,
        weight_decay=5e-4,
        schedule="plateau",
        augment="paper",
        pca_std=0.1,
        label_smoothing=0.0,
        warmup_epochs=0.0,
    ),
    # torchvision's reference recipe for AlexNet (references/classification): lr 0.01, wd 1e-4, batch 256 (32 x 8
    # GPUs), x0.1 every 30 epochs, 90 epochs, RandomResizedCrop + flip.
    "torchvision": dict(
        epochs=90,
        batch_size=256,
        lr=0.01,
        momentum=0.9,
        weight_decay=1e-4,
        schedule="step",
        step_epochs=30,
        augment="torchvision",
        pca_std=0.0,
        label_smoothing=0.0,
        warmup_epochs=0.0,
    ),
    # fast: what trained AlexNet fastest to good accuracy in our measurements (README, "Recipes"): He init (AlexNet
    # has no normalisation layers; PyTorch's default init learns nothing in the first epoch), a short linear warm-up,
    # one cosine decay to zero, Nesterov momentum, label smoothing 0.1, and bf16 + channels-last + compile on GPUs.
    "fast": dict(
        epochs=16,
        batch_size=128,
        lr=0.02,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        schedule="cosine",
        warmup_epochs=1.0,
        label_smoothing=0.1,
        init="kaiming",
        augment="paper",
        pca_std=0.1,
    ),
}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or YAML file of TrainConfig fields (kebab-case or snake_case keys)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--config {path}: no such file")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise UserError(f"--config {path}: YAML needs PyYAML: pip install 'alexnet[yaml]' (or use TOML)") from None
        values = yaml.safe_load(text) or {}
    elif path.suffix == ".json":
        values = json.loads(text)
    else:
        import tomllib

        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise UserError(f"--config {path}: not valid TOML ({e})") from None
    if not isinstance(values, dict):
        raise UserError(f"--config {path}: expected a table of settings, got {type(values).__name__}")
    return {k.replace("-", "_"): v for k, v in values.items()}


def resolve_config(recipe: str = "fast", file_values: dict | None = None, flags: dict | None = None) -> TrainConfig:
    """Defaults <- recipe <- config file <- flags (``None`` values in ``flags`` mean "not given")."""
    file_values, flags = dict(file_values or {}), {k: v for k, v in (flags or {}).items() if v is not None}
    recipe = flags.get("recipe", file_values.get("recipe", recipe))
    if recipe not in RECIPES:
        raise UserError(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    for source, values in (("config file", file_values), ("flags", flags)):
        unknown = sorted(set(values) - names)
        if unknown:
            raise UserError(f"unknown setting(s) in {source}: {', '.join(unknown)}")
    merged = {**RECIPES[recipe], **file_values, **flags, "recipe": recipe}
    return TrainConfig(**merged)
