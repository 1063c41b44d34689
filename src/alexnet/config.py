"""Training configuration: ``TrainConfig`` is the one list of settings, three recipes, and how sources combine.

Each field carries its help text, choices and allowed range (``alexnet.settings.setting``): ``alexnet train`` builds
its flags from them and ``TrainConfig.validate`` checks every value against them, whether it came from a flag, a
config file or Python. The defaults are the ``fast`` recipe; the other recipes list only what they change.

Precedence, lowest first: the defaults, the recipe, ``--config FILE`` (TOML, YAML or JSON), command-line flags.
The resolved config is written to ``RUN_DIR/config.json`` and stored inside every checkpoint. Each field also says
whether a resumed run may change it (``on_resume``: ``fixed`` or ``free``; ``fixed_on_resume()`` lists the first).

This module does not import torch: the CLI reads it to build ``alexnet train --help``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Any

from .errors import UserError
from .names import (
    ARCHS,
    DEFAULT_RECIPE,
    DEVICE_HELP,
    DEVICE_PATTERN,
    MAX_CROP_DEFAULT_RESIZE,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    PRECISIONS,
    PRESETS,
)
from .names import RECIPES as RECIPE_NAMES
from .settings import InvalidSetting, flag_name, setting, show, validate_fields

# --window: data.window's choices (checked further by check_window: widths >= 1, percentiles in order)
# as alexnet.data.window parses it (data pack took "-600, 1500", train refused it)
WINDOW_PATTERN = (
    r"auto|minmax|lung|bone|brain|soft-tissue|\s*-?\d+(\.\d*)?\s*,\s*\d+(\.\d*)?\s*|p\d+(\.\d*)?-p\d+(\.\d*)?"
)


@dataclass
class TrainConfig:
    """Every setting of a training run. ``TrainConfig()`` is the ``fast`` recipe; ``resolve_config`` applies another
    recipe, a config file and flags. Construction validates (``UserError`` naming the setting and its range)."""

    # data
    data: str | None = setting(None, "image folders, ImageNet layout, CIFAR archive or packed dir; omit for the "
                               "built-in synthetic data set", flags=(), metavar="DATA", on_resume="fixed")  # fmt: skip
    train_dir: str | None = setting(
        None, "a folder of class subfolders for training (instead of DATA)", metavar="DIR", on_resume="fixed"
    )
    val_dir: str | None = setting(None, "a folder of class subfolders for validation", metavar="DIR", on_resume="fixed")
    # 0.2, not 0.1: on 1,200 images at 80% top-1, 240 val images measure top-1 to +-2.6 points (one standard
    # error), 120 to +-3.7; fastai's from_folder holds out 0.2 too
    val_fraction: float = setting(0.2, "DATA without a val split (one folder of class sub-folders, or ROOT/train "
                                  "alone): hold out this fraction of each class for validation, chosen by --seed "
                                  "(0 = none)", low=0, high=1, high_open=True, on_resume="fixed")  # fmt: skip
    image_size: int | None = setting(None, "training crop in px", metavar="PX|auto", low=MIN_IMAGE_SIZE,
                                     high=MAX_IMAGE_SIZE, why="AlexNet's smallest input is 63 px", auto=True,
                                     none_text="auto: 224/256 of the images' shorter side, 64 to 224",
                                     on_resume="fixed")  # fmt: skip
    resize_size: int | None = setting(None, "shorter side in px before cropping", metavar="PX", low=MIN_IMAGE_SIZE,
                                      high=MAX_IMAGE_SIZE, none_text="crop x 256/224", on_resume="fixed")  # fmt: skip
    augment: str = setting("paper", "crop style: paper (stored square, random crop, flip) or torchvision "
                           "(RandomResizedCrop, flip)", choices=PRESETS, on_resume="fixed")  # fmt: skip
    pca_std: float = setting(0.1, "std of the paper's PCA colour noise (0 = off)", low=0, on_resume="fixed")
    in_memory: bool | None = setting(None, "decode the images once into memory (no loader processes, no decoding per "
                                     "epoch)", auto=True,
                                     none_text="auto: on when they fit in a quarter of the free memory, 4 GiB "
                                     "at most", on_resume="free")  # fmt: skip
    workers: int | None = setting(
        None, "data loader processes", low=0, high=256, none_text="0 on CPU, else cores - 1", on_resume="free"
    )
    in_channels: int | None = setting(None, "input channels: 3 (RGB) or 1 (grayscale: a single-channel model, packs "
                                      "and in-memory sets; colour images become luma; on gray data it learns as the "
                                      "RGB model does)", choices=(1, 3), auto=True,
                                      none_text="auto: 1 when every sampled image is grayscale (DICOM, 8/16-bit "
                                      "gray), else 3", on_resume="fixed")  # fmt: skip
    window: str = setting("auto", "how DICOMs and 16-bit gray images become 8 bits: auto (the DICOM's window, else "
                          "min..max; 16-bit PNG/TIFF: the full range), minmax, lung, bone, brain, soft-tissue, C,W "
                          "(centre, width) or pLOW-pHIGH (percentiles)", pattern=WINDOW_PATTERN,
                          pattern_rule="auto, minmax, lung, bone, brain, soft-tissue, C,W or pLOW-pHIGH",
                          metavar="WINDOW", on_resume="fixed")  # fmt: skip
    max_bad_fraction: float = setting(0.01, "stop when more than this fraction of a split cannot be decoded",
                                      low=0, high=1, on_resume="free")  # fmt: skip
    # model
    arch: str = setting("alexnet", "architecture", choices=ARCHS, on_resume="fixed")
    init: str | None = setting("kaiming", "weight init", choices=("torchvision", "paper", "kaiming"),
                               none_text="the architecture's own", on_resume="fixed")  # fmt: skip
    dropout: float | None = setting(None, "dropout probability of the two hidden fully connected layers", low=0,
                                    high=1, high_open=True, auto=True,
                                    none_text="auto: the paper's 0.5 for runs of 30 epochs or more, else "
                                    "0", on_resume="fixed")  # fmt: skip
    # optimisation
    recipe: str = setting(DEFAULT_RECIPE, "settings to start from: paper, torchvision or fast (see the README)",
                          choices=RECIPE_NAMES, on_resume="fixed")  # fmt: skip
    epochs: int | None = setting(None, "epochs to train (with --time-budget: at most)", low=1, high=100_000, auto=True,
                                 none_text="16; with --time-budget as many as fit", on_resume="fixed")  # fmt: skip
    time_budget: str | None = setting(None, "train for this long, start to final report: measure the speed on the "
                                      "first steps, then fix the step count and decay the lr linearly to zero over "
                                      "it", metavar="DURATION", none_text="off; e.g. 300s, 5m, 1h30m",
                                      on_resume="fixed")  # fmt: skip
    batch_size: int | None = setting(None, "images per step, summed over all processes", low=1, high=65536, auto=True,
                                     none_text="auto: the largest of 128/64/32/16 giving 50 steps per epoch, "
                                     "at most the training images",
                                     on_resume="fixed")  # fmt: skip
    lr: float | None = setting(None, "peak learning rate for --batch-size images per step", low=0, low_open=True,
                               auto=True, none_text="auto: 0.01, x sqrt(batch/32) below 32, x sqrt(batch/64) above 64",
                               on_resume="fixed")  # fmt: skip
    momentum: float = setting(0.9, "SGD momentum", low=0, high=1, high_open=True, on_resume="fixed")
    nesterov: bool = setting(True, "Nesterov momentum", on_resume="fixed")
    weight_decay: float = setting(5e-4, "L2 weight decay", low=0, on_resume="fixed")
    label_smoothing: float = setting(
        0.1, "label smoothing of the cross-entropy", low=0, high=1, high_open=True, on_resume="fixed"
    )
    balance: bool = setting(False, "weight the cross-entropy so that every class counts the same however many "
                            "training images it has (for imbalanced classes)", switch=True,
                            on_resume="fixed")  # fmt: skip
    schedule: str | None = setting(None, "learning-rate schedule: cosine or linear (to zero), step (x lr-decay "
                                   "every step-epochs), plateau (x lr-decay when val top-1 stalls)",
                                   choices=("cosine", "linear", "step", "plateau"),
                                   none_text="cosine; linear with --time-budget", on_resume="fixed")  # fmt: skip
    warmup_epochs: float | None = setting(None, "linear warm-up from lr/100, in epochs (fractions allowed; 0 = none)",
                                          low=0, auto=True,
                                          none_text="auto: 20 steps, at most half an epoch",
                                          on_resume="fixed")  # fmt: skip
    step_epochs: int = setting(30, "step schedule: epochs between decays", low=1, on_resume="fixed")
    lr_decay: float = setting(
        0.1, "factor of each step or plateau decay", low=0, high=1, low_open=True, on_resume="fixed"
    )
    plateau_patience: int = setting(
        2, "plateau schedule: epochs without val top-1 improvement before a decay", low=1, on_resume="fixed"
    )
    plateau_max_decays: int = setting(3, "plateau schedule: most decays (paper: three)", low=0, on_resume="fixed")
    # fine-tuning
    init_weights: str | None = setting(None, "start from these weights: torchvision (torchvision's ImageNet file, "
                                       "$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth, never downloaded) or "
                                       "a weights file or one of our checkpoints; a new last layer for this data's "
                                       "classes, and settings chosen for fine-tuning (224 px, lr / 10, head lr x 10)",
                                       flags=("--pretrained", "--init-weights", "--finetune-from"),
                                       metavar="torchvision|PATH", on_resume="fixed")  # fmt: skip
    freeze: str = setting(
        "none", "layers kept fixed when fine-tuning", choices=("none", "features", "all-but-head"), on_resume="fixed"
    )
    head_lr_mult: float | None = setting(None, "learning-rate multiplier of the new last layer", low=0, auto=True,
                                         none_text="auto: 10 with --pretrained, else 1",
                                         on_resume="fixed")  # fmt: skip
    # hardware
    device: str = setting(
        "auto", DEVICE_HELP, pattern=DEVICE_PATTERN, pattern_rule=f"choose from {DEVICE_HELP}", on_resume="free"
    )
    precision: str = setting("auto", "autocast precision (auto: bf16 or fp16 on GPUs; on a CPU the faster of fp32 and "
                             "bf16, measured once per machine, fp32 without bf16 units)",
                             choices=PRECISIONS, on_resume="fixed")  # fmt: skip
    channels_last: bool | None = setting(
        None,
        "channels-last memory format",
        none_text="on for CUDA; on a CPU measured with --precision",
        on_resume="fixed",
    )
    compile: bool | None = setting(None, "torch.compile the model", none_text="on for CUDA", on_resume="free")
    # run
    out: str | None = setting(None, "run directory", metavar="DIR", none_text="runs/ARCH-RECIPE-TIME", on_resume="free")
    overwrite: bool = setting(False, "start afresh in an --out that holds another run's checkpoints or metrics",
                              switch=True, on_resume="free")  # fmt: skip
    resume: str | None = setting(None, "auto (RUN_DIR/checkpoints/last.pt, if there is one), a checkpoint path, "
                                 "or a run folder (its checkpoints/last.pt)",
                                 metavar="auto|PATH", on_resume="free")  # fmt: skip
    seed: int = setting(0, "random seed (shuffle, augmentation, init)", low=0, high=2**32 - 1, on_resume="fixed")
    log_every: int = setting(
        100, "steps between loss readings (each reading waits for the device)", low=1, on_resume="free"
    )
    checkpoint_minutes: float = setting(
        0.0, "also save last.pt every this many minutes (0 = once per epoch)", low=0, on_resume="free"
    )
    max_steps_per_epoch: int | None = setting(None, "cut each epoch short (smoke tests)", low=1,
                                              none_text="the whole epoch", on_resume="fixed")  # fmt: skip
    ten_crop_eval: bool = setting(False, "final evaluation with ten crops (paper §4.1)", switch=True, on_resume="free")
    flip_eval: bool = setting(True, "final evaluation averaging each image with its mirror (training mirrors half "
                              "the images; one more view of val, in the last epoch's validation)", switch=True,
                              on_resume="free")  # fmt: skip
    plots: bool = setting(False, "write the pictures at the end (needs matplotlib)", switch=True, on_resume="free")
    extra: dict[str, Any] = setting(help="free-form notes recorded with the run", factory=dict, cli=False,  # noqa: RUF009
                                    on_resume="free")  # fmt: skip

    def __post_init__(self) -> None:
        self.validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Check every value's type, range and choice, then the settings that depend on each other.

        Raises ``InvalidSetting`` (a ``UserError``) naming the first wrong setting and what it may be. Whole floats
        given for float settings as ints (``lr = 1``) are converted, and a number for ``time_budget`` is seconds.
        """
        budget, self.time_budget = self.time_budget, duration_text(self.time_budget)
        validate_fields(self)
        if self.image_size is not None and self.resize_size is not None and self.resize_size < self.image_size:
            raise InvalidSetting("resize_size", self.resize_size, f"must be at least --image-size ({self.image_size})")
        if self.image_size is not None and self.resize_size is None:
            check_default_resize(self.image_size)
        if self.warmup_epochs is not None and self.epochs is not None and self.warmup_epochs > self.epochs:
            raise InvalidSetting("warmup_epochs", self.warmup_epochs, f"must be at most --epochs ({self.epochs})")
        if self.time_budget is not None:
            try:
                seconds = parse_duration(self.time_budget)
            except UserError as e:
                raise InvalidSetting("time_budget", budget, str(e).split(": ", 1)[1]) from None
            if not MIN_BUDGET_S <= seconds <= 30 * 86400:  # below: the set-up alone overran it (1s took 14 s)
                why = f"must be between {MIN_BUDGET_S} seconds and 30 days (the set-up and final report take 10-20 s)"
                raise InvalidSetting("time_budget", budget, why)
        if self.window != "auto":
            from .data.window import check_window

            try:
                check_window(self.window)
            except UserError as e:
                raise InvalidSetting("window", self.window, str(e).split(": ", 1)[1]) from None
        if self.overwrite and self.resume:
            raise InvalidSetting("overwrite", True, "contradicts --resume (one continues a run, the other erases it)")


def check_default_resize(image_size: int) -> None:
    """A crop whose default resize (x 256/224) would pass the largest side is refused now, naming the flags, rather
    than by the preprocessing once the data is read."""
    if image_size > MAX_CROP_DEFAULT_RESIZE:
        raise InvalidSetting(
            "image_size", image_size, f"must be at most {MAX_CROP_DEFAULT_RESIZE} with the default resize (crop x "
            f"256/224 would be over {MAX_IMAGE_SIZE} px); give --resize-size up to {MAX_IMAGE_SIZE} for larger crops"
        )  # fmt: skip


def duration_text(value: Any) -> Any:
    """A number of seconds as ``--time-budget`` takes it (``300`` -> ``"300"``: ``time-budget = 300`` in a config
    file or Python means what the flag means); anything else as it is."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def parse_duration(text: str) -> float:
    """``"300"``, ``"90s"``, ``"5m"``, ``"1.5h"``, ``"1h30m"`` -> seconds. ``UserError`` otherwise."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise UserError(f"--time-budget {text!r}: not a duration; write e.g. 300s, 5m, 1h30m")
    order = [list(units).index(u) for _, u in parts]
    if order != sorted(set(order), reverse=True):  # 1m1m (2 min?) or 5s5m: a typo, not a sum to guess at
        raise UserError(f"--time-budget {text!r}: each unit once, largest first; write e.g. 1h30m, 5m30s")
    return sum(float(n) * units[u] for n, u in parts)


MIN_BUDGET_S = 30  # the shortest --time-budget: less cannot be kept on a small CPU
PATH_SETTINGS = ("data", "train_dir", "val_dir")  # stored absolute; compared as paths on resume


# ----------------------------------------------------------------------------------------------------------------
# recipes: what each changes from the defaults (the fast recipe)

RECIPES: dict[str, dict[str, Any]] = {
    # fast: what trained AlexNet fastest to good accuracy in our measurements (README, "Recipes"): He init (AlexNet
    # has no normalisation layers; PyTorch's default init learns nothing in the first epoch), crop, batch, lr and a
    # short linear warm-up chosen from the data (alexnet.auto), one decay to zero (cosine; linear under a time
    # budget), Nesterov momentum, label smoothing 0.1, and bf16 + channels-last + compile on GPUs. These are
    # TrainConfig's defaults.
    "fast": {},
    # paper §5: SGD, batch 128, momentum 0.9, weight decay 5e-4, lr 0.01 divided by 10 when the validation error
    # stopped improving (three times), about 90 epochs; §4.1 augmentation: 256-px stored images, random 224 crops,
    # flips and PCA colour noise; each architecture's own init (the paper's for alexnet2012).
    "paper": dict(
        epochs=90,
        batch_size=128,
        lr=0.01,
        nesterov=False,
        schedule="plateau",
        warmup_epochs=0.0,
        label_smoothing=0.0,
        init=None,
    ),
    # torchvision's reference recipe for AlexNet (references/classification): lr 0.01, wd 1e-4, batch 256 (32 x 8
    # GPUs), x0.1 every 30 epochs, 90 epochs, RandomResizedCrop + flip, no colour noise.
    "torchvision": dict(
        epochs=90,
        batch_size=256,
        lr=0.01,
        nesterov=False,
        weight_decay=1e-4,
        schedule="step",  # step_epochs: the default, 30
        warmup_epochs=0.0,
        label_smoothing=0.0,
        augment="torchvision",
        pca_std=0.0,
        init=None,
    ),
}


# ----------------------------------------------------------------------------------------------------------------
# sources (a config file is read by alexnet.config_file)


def key_text(name: str) -> str:
    """A setting's name as its flag; quoted when it is not a plain word (a key with spaces, or a line break)."""
    return flag_name(name) if name.isidentifier() else repr(name)


def resolve_config(
    recipe: str = DEFAULT_RECIPE, file_values: dict | None = None, flags: dict | None = None, *, source: str = ""
) -> TrainConfig:
    """Defaults <- recipe <- config file <- flags (``None`` values in ``flags`` mean "not given"), validated.

    ``source``: the config file's name, so an error in one of its values names the file.
    """
    file_values = file_values if file_values is not None else {}
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    try:
        recipe = flags.get("recipe", file_values.get("recipe", recipe))
        if not isinstance(recipe, str) or recipe not in RECIPES:
            raise InvalidSetting("recipe", recipe, f"unknown recipe; choose from {', '.join(RECIPES)}")
        for where, values in (("config file " + source if source else "config file", file_values), ("flags", flags)):
            unknown = sorted(set(values) - set(_FIELDS))
            if unknown:
                raise UserError(f"unknown setting(s) in {where}: {', '.join(map(key_text, unknown))}")
        return TrainConfig(**{**RECIPES[recipe], **file_values, **flags, "recipe": recipe})
    except UserError as e:
        reworded = in_file_terms(e, file_values, flags, source)
        if reworded is e:
            raise
        raise reworded from None


def in_file_terms(error: UserError, file_values: dict, flags: dict, source: str) -> UserError:
    """``error`` reworded to name the config file ``source`` and its key when it is about a setting that the file
    gave and no flag did (``--config c.toml: lr = -0.1: must be a number > 0``, not ``--lr -0.1: ...``, which the
    user never typed); otherwise ``error`` itself. ``flags``: the settings given on the command line.

    An ``InvalidSetting`` says which setting it is about; another error does by starting with one of the setting's
    flags and its value (``--pretrained x.pt: no such file``, from the training code) or, for a path, the path."""
    if not source:
        return error
    spelled = getattr(file_values, "spelled", {})  # the keys as the file wrote them (alexnet.config_file)
    for name in (n for n in file_values if n not in flags and n in _FIELDS):
        value, key = file_values[name], spelled.get(name, flag_name(name))
        if isinstance(error, InvalidSetting):
            rest = f": {error.rule}" if error.name == name else None
            value = error.value
        else:
            rest = _after_setting(str(error), name, value)
        if rest is not None:
            return UserError(f"--config {source}: {key} = {show(value)}{rest}{_relative_to(name, value, rest)}")
    return error


def _relative_to(name: str, value: Any, rest: str) -> str:
    """Where a relative path of a config file that names nothing was looked for: the working folder, as for the
    flags (not the file's folder, which a reader of the file might expect)."""
    is_path = name in (*PATH_SETTINGS, "resume", "init_weights") and isinstance(value, str)
    if is_path and not os.path.isabs(value) and "no such" in rest:
        return f" (relative to the working folder {os.getcwd()})"
    return ""


def _after_setting(text: str, name: str, value: Any) -> str | None:
    """What follows ``--flag VALUE`` (or ``VALUE`` alone, for a path) at the start of ``text``, else None."""
    heads = [f"{flag} {value}" for flag in _FIELDS[name].metadata["flags"] or (f"--{flag_name(name)}",)]
    if name in (*PATH_SETTINGS, "resume", "init_weights", "out") and isinstance(value, str):
        heads += [value, os.path.abspath(value)]  # training makes the data paths absolute (setup.absolute_data_paths)
    for head in heads:
        if text.startswith(head) and text[len(head) : len(head) + 1] in (":", " "):
            return text[len(head) :]
    return None


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def fixed_on_resume() -> tuple[str, ...]:
    """The settings that change what a run means (data, architecture, image size, batch, lr schedule, seed...):
    given on resume with another value than the run's, they are refused; the others (workers, checkpoint interval,
    progress) apply. In field order."""
    return tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata["on_resume"] == "fixed")
