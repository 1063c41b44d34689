"""Settings declared once: a dataclass field carries its help, choices and range; flags and checks come from it.

``setting(...)`` makes such a field. ``validate_fields(obj)`` checks every field of a dataclass instance against
what its field declares (``InvalidSetting`` names the first wrong one as its flag: ``--lr -0.1: must be a number >
0``), and ``alexnet.cli._settings.add_settings`` turns the same fields into flags, so the help, the choices and the
checks cannot drift apart. ``TrainConfig``, ``ServeConfig``, ``BenchConfig`` and ``ExplainConfig`` are declared
this way; what depends on two settings at once stays a small method of its class.

No torch and no argparse here: the CLI reads this module to build its parsers, and library code uses it to check.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import MISSING, field
from typing import Any

from .errors import UserError


def setting(
    default: Any = MISSING,
    help: str = "",
    *,
    factory: Any = None,
    choices: tuple | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    why: str = "",
    pattern: str | None = None,
    pattern_rule: str = "",
    none_text: str | None = None,
    default_text: str | None = None,
    flags: tuple[str, ...] | None = None,
    metavar: str | None = None,
    switch: bool = False,
    auto: bool = False,
    cli: bool = True,
    on_resume: str | None = None,
) -> Any:
    """A dataclass field with what the CLI and ``validate_fields`` need to know about it.

    ``factory``: a default computed per instance (instead of ``default``). ``low``/``high``: the allowed range
    (``*_open``: the bound itself is excluded); ``why``: a reason shown with a range error; ``pattern``: a regular
    expression a string (or each item of a tuple) must match, ``pattern_rule`` the error's words. ``none_text``:
    what ``None`` means, for the help; ``default_text``: the default as the help shows it, where the value is
    computed (``CPUs, <= 4``). ``flags``: option strings (default ``--kebab-name``; ``()`` = an optional
    positional); ``switch``: a ``--name`` / ``--no-name`` flag instead of on/off; ``auto``: ``None`` means "chosen
    when the command runs" and may be written ``auto``; ``cli=False``: no flag (Python and config files only).
    ``on_resume``: ``"fixed"`` if changing it would change what a training run means, ``"free"`` if not.
    """
    if on_resume not in (None, "fixed", "free"):
        raise ValueError(f"on_resume={on_resume!r}: use 'fixed' or 'free'")
    meta = dict(help=help, choices=choices, low=low, high=high, low_open=low_open, high_open=high_open, why=why,
                pattern=pattern, pattern_rule=pattern_rule, none_text=none_text, default_text=default_text,
                flags=flags, metavar=metavar, switch=switch, auto=auto, cli=cli, on_resume=on_resume)  # fmt: skip
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


class InvalidSetting(UserError):
    """A setting outside its type, range or choices: ``--name value: must be ...``."""

    def __init__(self, name: str, value: Any, rule: str) -> None:
        self.name, self.value, self.rule = name, value, rule
        super().__init__(f"--{flag_name(name)} {show(value)}: {rule}")


def flag_name(name: str) -> str:
    return name.replace("_", "-")


def show(value: Any) -> str:
    """A value as an error line shows it: ``on``/``off``, ``'text'``, ``0.5``; a whole float as the user most likely
    wrote it (``--max-upload-mb 0``, not the ``0.0`` it became)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value) if isinstance(value, str) else str(value)


def field_kind(f: dataclasses.Field) -> tuple[str, bool]:
    """(base type name, optional) from the annotation string, e.g. ``"int | None"`` -> ``("int", True)``."""
    parts = [p.strip() for p in str(f.type).split("|")]
    return next(p for p in parts if p != "None"), "None" in parts


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"  # 1048576, not 1.04858e+06


def bounds_text(meta: dict) -> str:
    """``>= 1``, ``> 0``, ``in [0, 1)``, or ``""`` for a field without bounds."""
    low, high = meta.get("low"), meta.get("high")
    if low is not None and high is not None:
        return (
            f"in {'(' if meta['low_open'] else '['}{_number(low)}, {_number(high)}{')' if meta['high_open'] else ']'}"
        )
    if low is not None:
        return f"{'>' if meta['low_open'] else '>='} {_number(low)}"
    if high is not None:
        return f"{'<' if meta['high_open'] else '<='} {_number(high)}"
    return ""


def range_text(meta: dict, kind: str) -> str:
    """``an integer >= 1``, ``a number > 0``, ``a number in [0, 1)``."""
    noun = "an integer" if kind == "int" else "a number"
    return f"{noun} {bounds_text(meta)}".strip()


# ----------------------------------------------------------------------------------------------------------------
# checking values


def validate_fields(obj: Any) -> None:
    """Check every field of the dataclass instance ``obj`` against its declaration, in order, and store the value
    as checked (ints widened to float for float fields, lists to tuples for tuple fields). Works on frozen classes.
    Raises ``InvalidSetting`` naming the first wrong setting and what it may be."""
    for f in dataclasses.fields(obj):
        object.__setattr__(obj, f.name, check_field(f, getattr(obj, f.name)))


def check_field(f: dataclasses.Field, value: Any) -> Any:
    """``value`` if it fits field ``f`` (ints widened to float for float fields), else ``InvalidSetting``."""
    kind, optional = field_kind(f)
    meta = f.metadata
    if meta.get("auto") and value == "auto":
        value = None
    if value is None:
        if optional:
            return None
        raise InvalidSetting(f.name, value, "must be set")
    if kind in ("int", "float"):
        return _check_number(f.name, meta, kind, value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise InvalidSetting(f.name, value, "must be on or off (true or false)")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise InvalidSetting(f.name, value, "must be a string")
        return _check_text(f.name, meta, value)
    if kind.startswith("tuple"):
        return _check_texts(f.name, meta, value)
    return _check_table(f.name, value)


def _check_number(name: str, meta: dict, kind: str, value: Any) -> int | float:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind == "int" and not is_int:
        raise InvalidSetting(name, value, f"must be {range_text(meta, kind)}")
    if kind == "float":
        try:
            number = float(value) if is_int or isinstance(value, float) else math.nan
        except OverflowError:  # an integer past a float's range (lr = 1e400 written out in full)
            number = math.inf
        if not math.isfinite(number):
            raise InvalidSetting(name, value, f"must be {range_text(meta, kind)}")
        value = number
    if meta.get("choices") and value not in meta["choices"]:  # in-channels = 2 in a config file was taken
        raise InvalidSetting(name, value, f"choose from {', '.join(map(str, meta['choices']))}")
    low, high = meta.get("low"), meta.get("high")
    too_low = low is not None and (value <= low if meta["low_open"] else value < low)
    too_high = high is not None and (value >= high if meta["high_open"] else value > high)
    if too_low or too_high:
        why = f" ({meta['why']})" if meta.get("why") else ""
        raise InvalidSetting(name, value, f"must be {range_text(meta, kind)}{why}")
    return value


def _check_text(name: str, meta: dict, value: str) -> str:
    if not value.strip():  # out = "" in a config file trained into the default folder (Path("") is the working one)
        raise InvalidSetting(name, value, "is empty or blank; give a value or leave the setting out")
    if meta.get("choices") and value not in meta["choices"]:
        raise InvalidSetting(name, value, f"choose from {', '.join(meta['choices'])}")
    if meta.get("pattern") and not re.fullmatch(meta["pattern"], value):
        raise InvalidSetting(name, value, meta["pattern_rule"] or f"must match {meta['pattern']}")
    return value


def _check_texts(name: str, meta: dict, value: Any) -> tuple[str, ...]:
    """A tuple (or list) of strings, each checked as a string setting: ``--cors`` given several times."""
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) for v in value):
        raise InvalidSetting(name, value, "must be a list of strings")
    return tuple(_check_text(name, meta, v) for v in value)


def _check_table(name: str, value: Any) -> dict:
    if not isinstance(value, dict) or not _json_safe(value):  # extra: config.json and every checkpoint hold it
        raise InvalidSetting(name, value, "must be a table of notes (text, numbers, on/off, lists, tables)")
    return value


def _json_safe(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError):  # dates, sets or bytes from TOML/YAML; a table holding itself
        return False
    return True
