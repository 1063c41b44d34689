"""Reading ``--config FILE``: a TOML, YAML (``.yaml``/``.yml``) or JSON table of training settings, keyed as the
flags; the suffix (any case) says which. Syntax errors, keys given twice, a key without a value, text that is not
UTF-8 and files over ``max_json_bytes`` are one ``UserError`` line naming the file; ``alexnet.config.resolve_config``
checks the keys and values.

This module does not import torch: the CLI reads it before anything heavy is imported.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from .config import TrainConfig, key_text
from .errors import UserError
from .limits import limits, read_bounded
from .settings import field_kind, flag_name, show

SUFFIXES = {".toml": "TOML", ".yaml": "YAML", ".yml": "YAML", ".json": "JSON"}
# null is a value only where it means something no other value says: init = null is the architecture's own init
# (what the paper and torchvision recipes use); for any other setting a key without a value is a slip (YAML's
# `data:` trained on the built-in synthetic data), and leaving the key out, or `auto`, says "the default"
NULL_MEANS = {"init": "the architecture's own init"}

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# every flag of a setting is a key for it too: pretrained, init-weights and finetune-from are init_weights
_ALIASES = {flag.lstrip("-").replace("-", "_"): f.name for f in _FIELDS.values() for flag in f.metadata["flags"] or ()}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML, YAML (``.yaml``/``.yml``) or JSON file of settings, keyed as any of a setting's flags
    (kebab-case or snake_case: ``pretrained``, ``init-weights``; ``no-flip-eval = true`` for a switch).

    A syntax error is one ``UserError`` line naming the file and line. Keys are not checked here (``resolve_config``
    does), but YAML 1.1's numbers without a dot (``lr: 1e-3`` reads as a string) are read as numbers.
    """
    path = Path(path)
    kind = _kind(path)
    try:
        data = read_bounded(path, limits().max_json_bytes, "config")
    except UserError as e:
        raise UserError(f"--config {e} (ALEXNET_MAX_JSON_BYTES)" if "limit" in str(e) else f"--config {e}") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UserError(f"--config {path}: a UTF-16 file; save it as UTF-8")
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark (Windows editors write one) is not part of the settings
    except UnicodeDecodeError as e:
        raise UserError(f"--config {path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    try:
        values = _parse(path, kind, text)
    except (ValueError, RecursionError) as e:  # a number of over 4300 digits; nesting deeper than Python's stack
        raise UserError(f"--config {path}: cannot read it ({str(e).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise UserError(f"--config {path}: expected a table of settings, got {type(values).__name__}")
    out, spelled = ConfigValues(), {}
    for key, value in values.items():
        name, value = _setting_of(path, str(key), value)
        if name in spelled:
            raise UserError(f"--config {path}: {spelled[name]!r} and {str(key)!r} are the same setting "
                            f"({flag_name(name)}); give it once")  # fmt: skip
        out[name], spelled[name] = value, str(key)
    out.spelled = {name: flag_name(key) for name, key in spelled.items()}
    return out


class ConfigValues(dict):
    """A config file's settings by field name; ``spelled``: each one's key as the file wrote it (kebab-case), so
    that an error names what the user typed (``pretrained``, not ``init-weights``)."""

    spelled: dict[str, str] = {}  # noqa: RUF012


def _setting_of(path: Path, key: str, value: Any) -> tuple[str, Any]:
    """(field name, value) of a config-file key, which may be any of the setting's flags: ``pretrained`` and
    ``finetune-from`` are ``init_weights``; ``no-plots = true`` is ``plots = false``."""
    name = key.replace("-", "_")
    name = _ALIASES.get(name, name)
    negated = name.removeprefix("no_")
    switch = name not in _FIELDS and negated in _FIELDS and _FIELDS[negated].metadata.get("switch")
    if value is None and (name in _FIELDS or switch) and name not in NULL_MEANS:
        raise UserError(f"--config {path}: {key_text(name)} has no value (null); {_what_to_give(negated)}")
    if switch:
        if not isinstance(value, bool):
            raise UserError(f"--config {path}: {key_text(name)} = {show(value)}: must be true or false")
        return negated, not value
    return name, value


def _kind(path: Path) -> str:
    """TOML, YAML or JSON, by the suffix in any case (``c.YAML``); a folder or another suffix is one line."""
    if path.is_dir():
        raise UserError(f"--config {path}: is a folder, not a config file")
    if not path.exists():
        raise UserError(f"--config {path}: no such file")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"--config {path}: not a config file name; use .toml, .yaml/.yml or .json")
    return kind


def _what_to_give(name: str) -> str:
    auto = name in _FIELDS and _FIELDS[name].metadata.get("auto")
    return f"give a value{' (or auto)' * bool(auto)} or leave the setting out"


def _parse(path: Path, kind: str, text: str) -> Any:
    """The file's values; syntax errors as one ``UserError`` line naming the file and line."""
    if kind == "YAML":
        try:
            import yaml
        except ImportError:
            raise UserError(f"--config {path}: YAML needs PyYAML: pip install 'alexnet[yaml]' (or use TOML)") from None
        try:
            values = yaml.load(text, Loader=_unique_keys_loader(yaml))  # a SafeLoader: no tags that run code
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise UserError(f"--config {path}{where}: not valid YAML ({problem})") from None
        values = {} if values is None else values
        if isinstance(values, dict):
            values = {k: _yaml_number(k, v) for k, v in values.items()}
    elif kind == "JSON":
        try:
            values = json.loads(text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as e:
            raise UserError(f"--config {path}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno})") from None
    else:
        import tomllib

        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
            where = f":{m.group(1)}" if m else ""
            raise UserError(f"--config {path}{where}: not valid TOML ({str(e).split(' (at ')[0]})") from None
    return values


def _unique_keys(pairs: list[tuple[Any, Any]]) -> dict:
    """A JSON / YAML mapping whose keys are all different: a setting given twice is a mistake, not last-one-wins."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"{key!r} is given twice")
        out[key] = value
    return out


def _unique_keys_loader(yaml):
    """PyYAML's SafeLoader with ``_unique_keys`` mappings."""

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            pairs = [(self.construct_object(k, deep=deep), self.construct_object(v, deep=deep)) for k, v in node.value]
            return _unique_keys(pairs)

    return Loader


def _yaml_number(key: Any, value: Any) -> Any:
    """``1e-3`` read by YAML 1.1 as a string -> 0.001, for float settings only."""
    f = _FIELDS.get(str(key).replace("-", "_"))
    if f is None or not isinstance(value, str) or field_kind(f)[0] != "float":
        return value
    try:
        return float(value)
    except ValueError:
        return value
