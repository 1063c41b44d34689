"""``alexnet train``: flags -> ``TrainConfig`` -> ``alexnet.train.train``."""

from __future__ import annotations

import argparse

from ..config import RECIPES, TrainConfig, read_config_file, resolve_config
from ..model import list_models


def _bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected on/off, got {value!r}")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train an AlexNet (default: the built-in synthetic data set)",
        description="Train an AlexNet. Flags override the recipe; --config FILE (TOML/YAML) sets defaults that flags "
        "override. Unset flags show the recipe's value in RUN_DIR/config.json.",
    )
    p.add_argument("data", nargs="?", help="image folders, ImageNet layout, CIFAR archive or packed dir; "
                   "omit for the built-in synthetic data set")  # fmt: skip
    p.add_argument("--train-dir", help="a folder of class subfolders for training (instead of DATA)")
    p.add_argument("--val-dir", help="a folder of class subfolders for validation")
    p.add_argument("--arch", choices=list_models(), help="architecture (default alexnet)")
    p.add_argument("--recipe", choices=list(RECIPES), help="paper | torchvision | fast (default fast)")
    p.add_argument("--config", help="TOML or YAML file of settings (keys as the flags, e.g. batch-size = 256)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="images per step, over all processes")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--schedule", choices=["cosine", "step", "plateau"])
    p.add_argument("--warmup-epochs", type=float, help="linear warm-up length in epochs (0 = none)")
    p.add_argument("--image-size", type=int, help="training crop in px (default 224; 64 on the built-in data)")
    p.add_argument("--resize-size", type=int, help="shorter side in px before cropping (default crop x 8/7)")
    p.add_argument("--augment", choices=["paper", "torchvision"], help="crop style")
    p.add_argument("--pca-std", type=float, help="PCA colour noise std (paper 0.1; 0 = off)")
    p.add_argument("--init", dest="init", choices=["torchvision", "paper", "kaiming"], help="weight init")
    p.add_argument("--dropout", type=float)
    p.add_argument("--init-weights", "--finetune-from", dest="init_weights", metavar="MODEL",
                   help="fine-tune: start from a torchvision weights file or one of our checkpoints")  # fmt: skip
    p.add_argument("--freeze", choices=["none", "features", "all-but-head"], help="layers kept fixed when fine-tuning")
    p.add_argument("--head-lr-mult", type=float, help="lr multiplier of the new last layer")
    p.add_argument("--out", help="run directory (default runs/ARCH-RECIPE-TIME)")
    p.add_argument("--resume", help="auto (RUN_DIR/checkpoints/last.pt) or a checkpoint path")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--channels-last", type=_bool, metavar="on|off", help="default: on for CUDA")
    p.add_argument("--compile", type=_bool, metavar="on|off", help="torch.compile; default: on for CUDA")
    p.add_argument("--workers", type=int, help="data loader processes (default: 0 on CPU, else cores - 1)")
    p.add_argument("--seed", type=int)
    p.add_argument("--log-every", type=int, help="steps between loss readings")
    p.add_argument("--checkpoint-minutes", type=float, help="also save last.pt every N minutes (0 = per epoch)")
    p.add_argument("--max-steps-per-epoch", type=int, help="cut each epoch short (smoke tests)")
    p.add_argument("--max-bad-fraction", type=float, help="stop when more than this fraction of images is unreadable")
    p.add_argument("--ten-crop-eval", action="store_const", const=True, help="final evaluation with ten crops")
    p.add_argument("--plots", action="store_const", const=True, help="write the pictures at the end (matplotlib)")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    skip = {"func", "command", "config"}
    flags = {k: v for k, v in vars(args).items() if k not in skip}
    file_values = read_config_file(args.config) if args.config else {}
    return resolve_config(flags=flags, file_values=file_values)


def run(args: argparse.Namespace) -> int:
    from ..train import train

    train(config_from_args(args))
    return 0
