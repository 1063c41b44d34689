"""The command line: ``alexnet <command> ...`` (also ``python -m alexnet``).

Each command lives in its own module here with ``register(subparsers)``, which adds the parser and sets
``func(args) -> int``. Only this package sees argparse; it turns flags into explicit arguments for the library.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import UserError

# Command modules, in the order `alexnet --help` lists them.
COMMANDS = ["info", "data", "train", "evaluate", "predict", "features", "export", "plot", "bench"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alexnet",
        description="Train, evaluate and deploy AlexNet image classifiers.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"alexnet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"alexnet {args.command}: interrupted", file=sys.stderr)
        return 130
