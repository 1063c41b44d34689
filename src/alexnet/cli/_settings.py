"""Flags generated from a settings dataclass (``alexnet.settings.setting`` fields): one flag per field, with its
help, range, choices and default taken from the field, so ``--help`` and the checks cannot drift apart.

Every generated flag defaults to ``None``, meaning "not given": ``given(args, Config)`` keeps the values the user
typed and the dataclass supplies the rest (for ``alexnet train``, the recipe and ``--config`` file first).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ..settings import bounds_text, field_kind, flag_name


def _on_off(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, got {value!r}")


def _auto(convert):
    """An argparse type accepting ``auto`` (kept as the string; the dataclass reads it as "chosen when it runs")."""

    def parse(value: str):
        if value.lower() == "auto":
            return "auto"
        try:
            return convert(value)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{e} (or auto)") from None

    parse.__name__ = convert.__name__  # argparse names it in "invalid int value"
    return parse


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def help_text(f: dataclasses.Field, default: Any, recipes: dict[str, dict] | None = None) -> str:
    """The field's help, its range, and its default once; with ``recipes``, the other recipes' values where they
    differ (``default: 0.02; paper, torchvision: 0.01``)."""
    meta, (kind, _) = f.metadata, field_kind(f)
    text = meta["help"]
    if kind in ("int", "float") and bounds_text(meta):
        text += f"; {bounds_text(meta)}"  # "; >= 1", "; in [0, 1)"
    if meta.get("switch"):
        return text
    shown = meta.get("default_text") or (meta.get("none_text") if default is None else _shown(default))
    others: dict[str, list[str]] = {}
    for name, recipe in (recipes or {}).items():
        if f.name in recipe and recipe[f.name] != default:
            value = recipe[f.name]
            others.setdefault(meta.get("none_text") if value is None else _shown(value), []).append(name)
    if shown is None:
        return text
    text += f" (default: {shown}"
    text += "".join(f"; {', '.join(names)}: {value}" for value, names in others.items()) + ")"
    return text


def _argument(f: dataclasses.Field, default: Any, recipes: dict | None, kind_metavars: bool) -> dict:
    """``add_argument`` keywords for field ``f``."""
    kind, _ = field_kind(f)
    meta = f.metadata
    kw: dict = dict(help=help_text(f, default, recipes), default=None)
    auto = "|auto" * bool(meta.get("auto"))
    if kind == "bool" and meta.get("switch"):
        kw["action"] = argparse.BooleanOptionalAction
    elif kind == "bool":
        kw.update(type=_auto(_on_off) if meta.get("auto") else _on_off, metavar="on|off" + auto)
    elif kind in ("int", "float"):
        convert = int if kind == "int" else float
        kw["type"] = _auto(convert) if meta.get("auto") else convert
        if meta.get("metavar") or kind_metavars:
            kw["metavar"] = meta.get("metavar") or {"int": "N", "float": "X"}[kind] + auto
    elif kind.startswith("tuple"):
        kw["action"] = "append"  # given once per item
    if meta.get("metavar") and "metavar" not in kw and kw.get("action") != argparse.BooleanOptionalAction:
        kw["metavar"] = meta["metavar"]
    if meta.get("choices"):
        kw["choices"] = meta["choices"]
    return kw


def add_settings(
    parser: argparse.ArgumentParser, cls: type, *, recipes: dict | None = None, kind_metavars: bool = False
) -> None:
    """Add one flag per field of the dataclass ``cls`` (fields declared ``cli=False`` and tables excepted).

    ``recipes``: named sets of other defaults, shown in the help where they differ. ``kind_metavars``: numbers show
    ``N`` / ``X`` (``alexnet train``) instead of argparse's ``NAME``, unless the field names its own metavar.
    """
    defaults = cls()
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True) or field_kind(f)[0].startswith("dict"):
            continue
        kw = _argument(f, getattr(defaults, f.name), recipes, kind_metavars)
        flags = f.metadata.get("flags")
        if flags == ():  # an optional positional
            parser.add_argument(f.name, nargs="?", **kw)
        else:
            parser.add_argument(*(flags or (f"--{flag_name(f.name)}",)), dest=f.name, **kw)


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` that were given on the command line (generated flags are ``None`` when not given)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}
