"""Checks for the public Python API's arguments, at its entry points (``load``, ``create_model``, ``Predictor``'s
methods, ``model.extract``), so a wrong type or value is one ``ArgumentError`` naming the argument as the caller
wrote it (``topk must be a positive whole number, got 2.5``) instead of a traceback from deep inside torch.

The CLI's flags are checked by argparse (``cli/numbers.py``); where a check is shared, the CLI passes its flag's
name (``--topk``) as ``name``.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from typing import Any

from .errors import ArgumentError


def _shown(value: Any) -> str:
    """``repr(value)``, cut to 60 characters (a list of 10,000 paths passed by mistake is not echoed whole)."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def positive_int(value: Any, name: str, *, most: int | None = None, what: str = "") -> int:
    """``value`` as an int from 1 to ``most`` (no limit when None); a bool, a float (even 2.0), a string or None is
    refused. ``what`` says where ``most`` comes from ("this model has 3 classes")."""
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if whole and value >= 1 and (most is None or value <= most):
        return int(value)
    if most is None:
        raise ArgumentError(f"{name} must be a positive whole number, got {_shown(value)}")
    raise ArgumentError(
        f"{name} must be a whole number from 1 to {most}{f' ({what})' if what else ''}, got {_shown(value)}"
    )


def one_of(value: Any, name: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``."""
    if isinstance(value, str) and value in choices:
        return value
    raise ArgumentError(f"{name} must be one of {', '.join(choices)}, got {_shown(value)}")


def flag(value: Any, name: str) -> bool:
    """``value`` if it is True or False (a string such as "yes" is refused: it would read as True)."""
    if isinstance(value, bool):
        return value
    raise ArgumentError(f"{name} must be True or False, got {_shown(value)}")


def file_path(value: Any, name: str) -> str | os.PathLike:
    """``value`` if it can name a file: a ``str`` or an ``os.PathLike`` such as ``pathlib.Path``."""
    if isinstance(value, (str, os.PathLike)) and not isinstance(os.fspath(value), bytes):
        return value
    hint = "; decode it first (path.decode())" if isinstance(value, bytes) else ""
    raise ArgumentError(f"{name} must be a file path (a str or pathlib.Path), got {_shown(value)}{hint}")
