"""The command line: ``alexnet <command> ...`` (also ``python -m alexnet``).

Each command lives in its own module here with ``register(subparsers)``, which adds the parser and sets
``func(args) -> int``. Only this package sees argparse; it turns flags into explicit arguments for the library.
Commands with a settings class (train, serve, bench, explain) generate their flags from its fields with
``_settings.add_settings``: to add a setting, add a field with ``alexnet.settings.setting`` and the flag follows.

Building the parser must stay fast (``alexnet --help`` builds every subparser): no module of this package imports
torch, torchvision or numpy at import time; ``run`` functions import what they need. Every parser in the tree is an
``ArgumentParser`` from here, so all of them share one ``HelpFormatter`` and plain-text descriptions.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import importlib
import os
import re
import sys
import textwrap
from typing import NoReturn

from ..errors import UserError
from ..names import ARCHS as ARCHS  # for the commands' --arch choices (alexnet.names keeps it equal to the models)

# Command modules, in the order `alexnet --help` lists them.
COMMANDS = ["info", "data", "train", "evaluate", "predict", "features", "explain", "export", "serve", "plot", "bench"]


# ----------------------------------------------------------------------------------------------------------------
# help text


def describe(doc: str | None) -> str | None:
    """A module docstring as plain help text: reST ````literal```` markup and ``::`` literal-block markers removed."""
    if doc is None:
        return None
    text = re.sub(r"``(.+?)``", r"\1", textwrap.dedent(doc).strip())
    text = re.sub(r"\s*::$", ":", text, flags=re.MULTILINE)
    return text


class HelpFormatter(argparse.HelpFormatter):
    """One help style for every command.

    - An option's default is shown once, as ``(default: X)``, unless its help already speaks of a default, the
      default is None, or the option is an on/off switch.
    - Descriptions are re-wrapped to the terminal paragraph by paragraph; ``- `` list items keep their own lines and
      a hanging indent, and indented blocks (examples) are kept as written.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = describe(action.help) or ""
        default = action.default
        if (
            "default" in text.lower()
            or default is None
            or default is argparse.SUPPRESS
            or isinstance(default, bool)
            or not (action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE))
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for block in re.split(r"\n[ \t]*\n", text.strip("\n")):
            if all(line.startswith((" ", "\t")) for line in block.splitlines()):  # an example: as written
                out.append(textwrap.indent(block, indent))
                continue
            for item in re.split(r"\n(?=[ \t]*[-*] )", block):  # one paragraph, or one list item each
                bullet = re.match(r"[ \t]*[-*] ", item)
                hang = " " * len(bullet.group(0)) if bullet else ""
                words = " ".join(item.split())
                out.append(textwrap.fill(words, width, initial_indent=indent, subsequent_indent=indent + hang))
            out.append("")
        return "\n".join(out).strip("\n")


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with ``HelpFormatter`` and ``describe``d descriptions, for every subparser too.

    ``formatter_class`` passed by a command module is replaced: one convention for the whole tree, so a default is
    never shown twice and no reST markup reaches the terminal.
    """

    def __init__(self, *args, description: str | None = None, **kwargs) -> None:
        kwargs["formatter_class"] = HelpFormatter
        super().__init__(*args, description=describe(description), **kwargs)

    def error(self, message: str) -> NoReturn:
        """One line, as every other mistake, and exit 2: argparse printed its whole usage first (28 lines for train)."""
        wrong = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if wrong:  # a misspelt command or choice: trian -> train
            close = difflib.get_close_matches(wrong[1], re.findall(r"'([^']*)'", wrong[2]), n=1)
            message += f"; did you mean '{close[0]}'?" if close else ""
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class _VersionAction(argparse.Action):
    """``--version``: computed when asked for, from installed package metadata (no torch import)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs) -> None:
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(version_line())
        parser.exit()


def version_line() -> str:
    """``alexnet X.Y.Z (torch A, torchvision B)``, read from package metadata, so it does not import torch."""
    from importlib.metadata import PackageNotFoundError, version

    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return f"alexnet {v('alexnet')} (torch {v('torch')}, torchvision {v('torchvision')})"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="alexnet", description="Train, evaluate and deploy AlexNet image classifiers.")
    parser.add_argument("--version", action=_VersionAction, help="print the versions of alexnet, torch, torchvision")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


# ----------------------------------------------------------------------------------------------------------------
# running a command


def main(argv: list[str] | None = None) -> int:
    """Run one command; mistakes end in one ``alexnet COMMAND: error: ...`` line and a non-zero exit code.

    Exit codes: 0 ok, 1 the command failed (or a file could not be read or written), 2 a usage error (``UserError``,
    or a flag argparse rejects), 130 interrupted (Ctrl-C), 141 the reader of stdout went away (``| head``).
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(negative_values_joined(sys.argv[1:] if argv is None else argv))
    name = " ".join(["alexnet", args.command, getattr(args, "data_command", None) or ""]).strip()  # alexnet data pack
    if extra:  # argparse names the top-level parser ("alexnet: error"), not the command whose flag it is
        parser.exit(2, f"{name}: error: unrecognized arguments: {' '.join(extra)} (see '{name} --help')\n")
    empty = next((k for k, v in vars(args).items() if v == "" or (isinstance(v, list) and "" in v)), None)
    if empty:  # Path("") is ".": `alexnet train "$DATA"` with DATA unset trained on the working folder
        what = f"one of the {empty}" if isinstance(getattr(args, empty), list) else empty.replace("_", "-")
        parser.exit(2, f"{name}: error: {what} is empty (''; an unset shell variable?)\n")
    try:
        rc = int(args.func(args) or 0)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
        return rc
    except UserError as e:
        _error(f"{name}: error: {e}")
        return 2
    except KeyboardInterrupt:
        _error(f"{name}: interrupted")
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 141  # 128 + SIGPIPE, as the shell reports a tool killed by a closed pipe
    except OSError as e:  # a file that cannot be written or read: name it, no traceback
        where = f"{e.filename}: " if e.filename is not None else ""
        if not where and e.errno in _WRITE_ERRNOS:  # our files are named: a nameless write error is stdout's
            where = "standard output: "  # `> /dev/full`, or a full disk under `> out.txt`
            _silence_stdout()
        _error(f"{name}: error: {where}{e.strerror or e}")
        return 1


_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)


def negative_values_joined(argv: list[str]) -> list[str]:
    """``--window -600,1500`` as ``--window=-600,1500``: argparse takes a word that starts with ``-`` for an option
    unless it is a plain negative number, and CT windows have negative centres. No option starts with a digit."""
    out: list[str] = []
    for word in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and re.fullmatch(r"-\d[\d.,:eE+-]*", word):
            out[-1] = f"{out[-1]}={word}"
        else:
            out.append(word)
    return out


def _error(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()  # the command's output first, then the error line
    print(line, file=sys.stderr)


def _silence_stdout() -> None:
    """Point stdout at /dev/null: the unwritten rest of its buffer would fail again, and loudly, at exit."""
    with contextlib.suppress(OSError, ValueError, AttributeError):  # stdout may not be a real file (under a test)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
