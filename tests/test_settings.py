"""One mechanism for every command's settings: each dataclass field is a flag, with its help, range and default;
the same declaration checks values from Python, flags and files; shared bounds are declared once."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from alexnet.cli import build_parser
from alexnet.cli._settings import given
from alexnet.config import TrainConfig
from alexnet.errors import UserError
from alexnet.serve.config import ServeConfig
from alexnet.settings import flag_name

# (command, its settings class): every field is a flag of the command, except those declared cli=False
COMMANDS = [("train", TrainConfig), ("serve", ServeConfig)]


def _parser(command: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


@pytest.mark.parametrize(("command", "cls"), COMMANDS, ids=[c for c, _ in COMMANDS])
def test_every_field_is_a_flag_with_its_help(command, cls):
    parser = _parser(command)
    formatter = parser._get_formatter()
    actions = {a.dest: a for a in parser._actions}
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True) or str(f.type).startswith("dict"):  # declared: no flag
            assert f.name not in actions, f.name
            continue
        assert f.name in actions, f"{command}: {f.name} has no flag"
        action = actions[f.name]
        flag = action.option_strings[0] if action.option_strings else f.name
        assert flag in (f"--{flag_name(f.name)}", f.name) or f.metadata.get("flags"), flag
        assert f.metadata["help"] in formatter._expand_help(action), f"{command} --help lacks {f.name}'s help"
        if f.metadata.get("choices"):
            assert tuple(action.choices) == tuple(f.metadata["choices"]), f.name


def test_serve_flags_reach_the_config_and_are_checked_alike():
    parser = _parser("serve")
    argv = ["m.pt", "--port", "9000", "--cors", "http://a.test", "--cors", "*", "--max-connections", "64"]
    argv += ["--header-timeout-s", "3", "--keep-alive-s", "2", "--device", "cuda:1", "--backend", "torch"]
    argv += ["--explain", "--access-log", "--threads", "2", "--name", "m1"]
    config = ServeConfig(**given(parser.parse_args(argv), ServeConfig))
    assert (config.port, config.cors, config.max_connections) == (9000, ("http://a.test", "*"), 64)
    assert (config.header_timeout_s, config.keep_alive_s, config.device, config.backend) == (
        3.0,
        2.0,
        "cuda:1",
        "torch",
    )
    assert (config.explain, config.access_log, config.threads, config.name) == (True, True, 2, "m1")
    assert ServeConfig(**given(parser.parse_args(["m.pt"]), ServeConfig)) == ServeConfig()  # not given: defaults
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]
    assert ServeConfig(cors=["http://a.test"]).cors == ("http://a.test",)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"port": 70000}, "--port 70000: must be an integer in [0, 65535]"),
        ({"port": "80"}, "--port '80': must be an integer in [0, 65535]"),  # was a TypeError from the comparison
        ({"max_upload_mb": 0}, "--max-upload-mb 0.0: must be a number in (0, 1024]"),
        ({"timeout_s": float("nan")}, "--timeout-s nan: must be a number in (0, 3600]"),
        ({"device": "gpu"}, "--device 'gpu': choose from auto, cpu, cuda, cuda:N or mps"),
        ({"backend": "tf"}, "--backend 'tf': choose from auto, torch, onnxruntime"),
        ({"cors": ("evil.test/x",)}, "--cors 'evil.test/x': an origin is scheme://host[:port]"),
        ({"name": "a b"}, "--name 'a b': use 1 to 64 letters"),
        ({"max_queued_mb": 5.0}, "--max-queued-mb 5.0: must be at least --max-upload-mb (10: one upload must fit)"),
        ({"retry_after_s": 0}, "--retry-after-s 0: must be an integer in [1, 3600]"),
    ],
)
def test_serve_config_refuses_bad_values_in_one_line(kwargs, expected):
    with pytest.raises(UserError) as e:
        ServeConfig(**kwargs)
    assert str(e.value).startswith(expected) and "\n" not in str(e.value)
