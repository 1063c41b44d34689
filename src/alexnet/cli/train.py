"""``alexnet train``: flags generated from ``TrainConfig`` -> a validated config -> ``alexnet.training.train``.

Exit codes: 0 trained, 2 a mistake in the settings or data (one line), 143 / 130 / 129 stopped by SIGTERM / SIGINT /
SIGHUP after
saving ``last.pt`` (resume with ``--resume auto``), so a scheduler can tell a preempted run from a finished one.
Under torchrun these are the workers' codes; torchrun itself exits non-zero when a worker does.
"""

from __future__ import annotations

import argparse
import sys
import time

from ..config import DEFAULT_RECIPE, RECIPES, TrainConfig, in_file_terms, resolve_config
from ..config_file import read_config_file
from ..errors import UserError
from ._settings import add_settings, given

STARTED = time.time()  # when the command began (before torch is imported): the start of --time-budget


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train an AlexNet (default: the built-in synthetic data set)",
        description="Train an AlexNet. A recipe sets the starting values; --config FILE (TOML, YAML or JSON, keys "
        "as the flags, e.g. batch-size = 256) overrides the recipe, and flags override both. Defaults below are the "
        "fast recipe's, then other recipes' where they differ. The resolved settings are saved in "
        "RUN_DIR/config.json. Exit status: 0 done, 2 a mistake in the settings, 143/130/129 stopped by "
        "SIGTERM/SIGINT/SIGHUP after saving (continue with --resume auto).",
    )
    add_settings(p, TrainConfig, recipes=RECIPES, kind_metavars=True)
    p.add_argument("--config", metavar="FILE", help="TOML, YAML or JSON file of settings (keys as the flags)")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace, file_values: dict | None = None) -> TrainConfig:
    """The validated config of these flags over ``--config`` over the recipe (``UserError`` names what is wrong).
    ``file_values``: the ``--config`` file's settings, when already read."""
    skip = {"func", "command", "config"}
    flags = {k: v for k, v in vars(args).items() if k not in skip}
    if file_values is None:
        file_values = read_config_file(args.config) if args.config else {}
    return resolve_config(DEFAULT_RECIPE, flags=flags, file_values=file_values, source=args.config or "")


def run(args: argparse.Namespace) -> int:
    file_values = read_config_file(args.config) if args.config else {}
    cfg = config_from_args(args, file_values)  # every setting checked before torch is imported or anything is written
    given_here = set(given(args, TrainConfig)) | set(file_values)  # a resumed run takes the others from its checkpoint
    from ..distributed import Preempted
    from ..training import train

    try:
        train(cfg, started=STARTED, given=given_here)
    except Preempted as e:
        print(f"alexnet train: {e}", file=sys.stderr)
        return e.exit_code
    except UserError as e:  # "--pretrained x.pt: no such file" where the config file said pretrained = "x.pt"
        reworded = in_file_terms(e, file_values, given(args, TrainConfig), args.config or "")
        if reworded is e:
            raise
        raise reworded from None
    return 0
