"""``alexnet train``: flags generated from ``TrainConfig`` -> a validated config -> ``alexnet.train.train``.

Exit codes: 0 trained, 2 a mistake in the settings or data (one line), 143 / 130 stopped by SIGTERM / SIGINT after
saving ``last.pt`` (resume with ``--resume auto``), so a scheduler can tell a preempted run from a finished one.
Under torchrun these are the workers' codes; torchrun itself exits non-zero when a worker does.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from ..config import (
    DEFAULT_RECIPE,
    RECIPES,
    TrainConfig,
    bounds_text,
    field_kind,
    flag_name,
    read_config_file,
    resolve_config,
)

STARTED = time.time()  # when the command began (before torch is imported): the start of --time-budget


def _on_off(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, got {value!r}")


def _auto(convert):
    """An argparse type accepting ``auto`` (kept as the string; ``TrainConfig`` reads it as "from the data")."""

    def parse(value: str):
        if value.lower() == "auto":
            return "auto"
        try:
            return convert(value)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{e} (or auto)") from None

    parse.__name__ = convert.__name__  # argparse names it in "invalid int value"
    return parse


def _shown(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def help_text(f: dataclasses.Field) -> str:
    """The field's help, its range, and its default once: the fast recipe's value, then the other recipes' where
    they differ (``default: 0.02; paper, torchvision: 0.01``)."""
    meta, (kind, _) = f.metadata, field_kind(f)
    text = meta["help"]
    if kind in ("int", "float") and bounds_text(meta):
        text += f"; {bounds_text(meta)}"  # "; >= 1", "; in [0, 1)"
    default = getattr(_DEFAULTS, f.name)
    if meta.get("switch"):
        return text
    shown = meta.get("none_text") if default is None else _shown(default)
    others: dict[str, list[str]] = {}
    for name, recipe in RECIPES.items():
        if f.name in recipe and recipe[f.name] != default:
            value = recipe[f.name]
            others.setdefault(meta.get("none_text") if value is None else _shown(value), []).append(name)
    if shown is None:
        return text
    text += f" (default: {shown}"
    text += "".join(f"; {', '.join(names)}: {value}" for value, names in others.items()) + ")"
    return text


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train an AlexNet (default: the built-in synthetic data set)",
        description="Train an AlexNet. A recipe sets the starting values; --config FILE (TOML, YAML or JSON, keys "
        "as the flags, e.g. batch-size = 256) overrides the recipe, and flags override both. Defaults below are the "
        "fast recipe's, then other recipes' where they differ. The resolved settings are saved in "
        "RUN_DIR/config.json. Exit status: 0 done, 2 a mistake in the settings, 143/130 stopped by SIGTERM/SIGINT "
        "after saving (continue with --resume auto).",
    )
    for f in dataclasses.fields(TrainConfig):
        kind, _ = field_kind(f)
        meta = f.metadata
        if kind.startswith("dict"):  # extra: free-form notes, from a config file only
            continue
        kw: dict = dict(help=help_text(f), default=None)
        if kind == "bool" and meta.get("switch"):
            kw["action"] = argparse.BooleanOptionalAction
        elif kind == "bool":
            kw.update(type=_auto(_on_off) if meta.get("auto") else _on_off, metavar="on|off" + "|auto" * meta["auto"])
        elif kind in ("int", "float"):
            convert = int if kind == "int" else float
            metavar = meta.get("metavar") or {"int": "N", "float": "X"}[kind] + "|auto" * meta["auto"]
            kw.update(type=_auto(convert) if meta.get("auto") else convert, metavar=metavar)
        elif meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
        if meta.get("choices"):
            kw["choices"] = meta["choices"]
        flags = meta.get("flags")
        if flags == ():  # positional
            p.add_argument(f.name, nargs="?", **kw)
        else:
            p.add_argument(*(flags or (f"--{flag_name(f.name)}",)), dest=f.name, **kw)
    p.add_argument("--config", metavar="FILE", help="TOML, YAML or JSON file of settings (keys as the flags)")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The validated config of these flags over ``--config`` over the recipe (``UserError`` names what is wrong)."""
    skip = {"func", "command", "config"}
    flags = {k: v for k, v in vars(args).items() if k not in skip}
    file_values = read_config_file(args.config) if args.config else {}
    return resolve_config(DEFAULT_RECIPE, flags=flags, file_values=file_values, source=args.config or "")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)  # every setting checked before torch is imported or anything is read or written
    from ..distributed import Preempted
    from ..train import train

    try:
        train(cfg, started=STARTED)
    except Preempted as e:
        print(f"alexnet train: {e}", file=sys.stderr)
        return e.exit_code
    return 0


_DEFAULTS = TrainConfig()
