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
    stdout = sys.stdout
    sys.stdout = _NamedStdout(stdout)  # a failed write to it is said to be stdout's (it names no file)
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    finally:
        sys.stdout = stdout


def _main(argv: list[str]) -> int:
    parser, name = build_parser(), "alexnet"
    try:
        try:
            args, extra = parser.parse_known_args(negative_values_joined(argv))
        except SystemExit as e:  # --help and --version printed: flush here, where a failed write is caught
            if e.code in (0, None):
                sys.stdout.flush()
            raise
        name = " ".join(["alexnet", args.command, getattr(args, "data_command", None) or ""]).strip()
        if extra:  # argparse names the top-level parser ("alexnet: error"), not the command whose flag it is
            parser.exit(2, f"{name}: error: unrecognized arguments: {' '.join(extra)} (see '{name} --help')\n")
        empty = _empty_value(args, argv, _metavars(parser, args))
        if empty:  # Path("") is ".": `alexnet train "$DATA"` with DATA unset trained on the working folder
            parser.exit(2, f"{name}: error: {empty} is empty or blank (an unset shell variable?)\n")
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
        if e.filename == STDOUT_NAME:
            _silence_stdout()  # the rest of its buffer would fail again, loudly, at exit
        where = f"{e.filename}: " if e.filename is not None else ""
        _error(f"{name}: error: {where}{e.strerror or e}")
        return 1


STDOUT_NAME = "standard output"


class _NamedStdout:
    """``sys.stdout`` whose failed writes name it: ``alexnet info > /dev/full`` said "No space left on device" and
    nothing more, and a guess from the error number blamed stdout for a ``--json`` file's full disk."""

    def __init__(self, stream) -> None:
        self._stream, self._failed = stream, None

    def write(self, text: str) -> int:
        return self._named(self._stream.write, text)

    def flush(self) -> None:
        if self._failed is not None:  # a write whose error its caller swallowed (argparse's help does)
            raise self._failed
        self._named(self._stream.flush)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    def _named(self, call, *args):
        try:
            return call(*args)
        except BrokenPipeError:
            raise
        except OSError as e:
            self._failed = OSError(e.errno, e.strerror, STDOUT_NAME)
            raise self._failed from None


def _metavars(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, str]:
    """The command's positional arguments as its usage line names them (``inputs`` -> ``INPUT``)."""
    for command in (args.command, getattr(args, "data_command", None)):
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or command not in sub.choices:
            break
        parser = sub.choices[command]
    return {a.dest: a.metavar or a.dest.upper() for a in parser._actions if not a.option_strings}


def _empty_value(args: argparse.Namespace, argv: list[str], metavars: dict[str, str]) -> str | None:
    """The flag or argument given an empty or blank value, as the user typed it (``--pretrained``, not the setting's
    name ``init-weights``; ``INPUT``, as the usage line names it), or None."""
    for key, value in vars(args).items():
        values = value if isinstance(value, list) else [value]
        blank = next((v for v in values if isinstance(v, str) and not v.strip()), None)
        if blank is None:
            continue
        i = argv.index(blank) if blank in argv else -1
        before = argv[i - 1] if i > 0 else ""
        if before.startswith("--"):
            return before
        attached = next((w.split("=", 1)[0] for w in argv if w.startswith("--") and w.endswith("=" + blank)), None)
        return attached or metavars.get(key, key.upper())
    return None


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
