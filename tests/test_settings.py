"""One mechanism for every command's settings: each dataclass field is a flag, with its help, range and default;
the same declaration checks values from Python, flags and files; shared bounds are declared once."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from alexnet.bench_config import BenchConfig
from alexnet.cli import build_parser
from alexnet.cli._settings import given
from alexnet.cli.explain import ExplainConfig
from alexnet.config import TrainConfig
from alexnet.errors import UserError
from alexnet.serve.config import ServeConfig
from alexnet.settings import flag_name

# (command, its settings class): every field is a flag of the command, except those declared cli=False
COMMANDS = [("train", TrainConfig), ("serve", ServeConfig), ("bench", BenchConfig), ("explain", ExplainConfig)]
# and the only arguments that are not a field: files to read or write
NOT_SETTINGS = {"train": {"config"}, "serve": {"model"}, "bench": {"json"}, "explain": {"model", "inputs"}}


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
    hand_written = set(actions) - {f.name for f in dataclasses.fields(cls)} - {"help"}
    assert hand_written == NOT_SETTINGS[command], f"{command}: a flag outside {cls.__name__}"


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
        ({"max_upload_mb": 0}, "--max-upload-mb 0: must be a number in (0, 1024]"),
        ({"timeout_s": float("nan")}, "--timeout-s nan: must be a number in (0, 3600]"),
        ({"device": "gpu"}, "--device 'gpu': choose from auto, cpu, cuda, cuda:N or mps"),
        ({"backend": "tf"}, "--backend 'tf': choose from auto, torch, onnxruntime"),
        ({"cors": ("evil.test/x",)}, "--cors 'evil.test/x': an origin is scheme://host[:port]"),
        ({"name": "a b"}, "--name 'a b': use 1 to 64 letters"),
        ({"max_queued_mb": 5.0}, "--max-queued-mb 5: must be at least --max-upload-mb (10: one upload must fit)"),
        ({"retry_after_s": 0}, "--retry-after-s 0: must be an integer in [1, 3600]"),
    ],
)
def test_serve_config_refuses_bad_values_in_one_line(kwargs, expected):
    with pytest.raises(UserError) as e:
        ServeConfig(**kwargs)
    assert str(e.value).startswith(expected) and "\n" not in str(e.value)


def test_train_bench_and_serve_share_the_image_size_bounds():
    """One range for every command, from names.py: bench stopped at 1024 px while train went to 2048; serve refuses a
    model whose preprocessing is outside it (``Preprocess``). A crop resized by default (x 256/224) is at most 1792
    px, since its resize must fit too: train refuses a larger one unless --resize-size is given, and bench always
    resizes by default."""
    from alexnet.model import MIN_INPUT_SIZE
    from alexnet.names import MAX_CROP_DEFAULT_RESIZE, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
    from alexnet.preprocess import MAX_SIDE, Preprocess

    train, bench = [
        {f.name: f for f in dataclasses.fields(c)}["image_size"].metadata for c in (TrainConfig, BenchConfig)
    ]
    assert (train["low"], train["high"]) == (MIN_IMAGE_SIZE, MAX_IMAGE_SIZE) == (MIN_INPUT_SIZE, MAX_SIDE)
    assert (bench["low"], bench["high"]) == (MIN_IMAGE_SIZE, MAX_CROP_DEFAULT_RESIZE)
    largest = MAX_CROP_DEFAULT_RESIZE
    assert Preprocess.for_crop(largest).resize == MAX_SIDE  # the largest crop the preprocessing takes by default
    TrainConfig(image_size=largest), BenchConfig(image_size=largest)
    TrainConfig(image_size=MAX_SIDE, resize_size=MAX_SIDE), Preprocess.for_crop(MAX_SIDE, resize=MAX_SIDE)
    for make in (TrainConfig, BenchConfig, lambda image_size: Preprocess.for_crop(image_size)):
        with pytest.raises(UserError, match=str(largest + 1)):
            make(image_size=largest + 1)
        with pytest.raises(UserError, match="62"):
            make(image_size=62)
    with pytest.raises(UserError, match=f"--image-size {MAX_SIDE + 1}"):
        TrainConfig(image_size=MAX_SIDE + 1, resize_size=MAX_SIDE)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["bench", "--image-size", "32"], "--image-size 32: must be an integer in [63, 1792]"),
        (["train", "--image-size", "2000"], "--image-size 2000: must be at most 1792 with the default resize"),
        (["bench", "--batch-size", "0"], "--batch-size 0: must be an integer >= 1"),
        (["bench", "--workers", "-1"], "--workers -1: must be an integer >= 0"),
        (["bench", "--min-time", "nan"], "--min-time nan: must be a number >= 0"),
        (["bench", "--device", "gpu"], "--device 'gpu': choose from auto, cpu, cuda, cuda:N or mps"),
        (["explain", "m.pt", "x.jpg", "--every", "0"], "--every 0: must be a number > 0"),
        (["explain", "m.pt", "x.jpg", "--steps", "0"], "--steps 0: must be an integer in [1, 4096]"),
        (["explain", "m.pt", "x.jpg", "--window", "0"], "--window 0: must be an integer >= 1"),
        (["serve", "m.pt", "--keep-alive-s", "0"], "--keep-alive-s 0: must be a number in (0, 3600]"),
    ],
)
def test_bad_flags_are_one_line_before_anything_runs(argv, expected, capsys, tmp_path, monkeypatch):
    from alexnet.cli import main

    monkeypatch.chdir(tmp_path)  # nothing is written, nothing is loaded: m.pt does not exist
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"alexnet {argv[0]}: error: {expected}") and err.count("\n") == 1, err


def test_bench_and_explain_flags_reach_their_config():
    bench = _parser("bench").parse_args(["d", "--channels-last", "--workers", "0", "--image-size", "64"])
    cfg = BenchConfig(**given(bench, BenchConfig))
    assert (cfg.data, cfg.channels_last, cfg.workers, cfg.image_size, cfg.compile) == ("d", True, 0, 64, False)
    argv = ["m", "a.jpg", "--format", "npy", "--format", "png", "--layer", "auto", "--method", "occlusion"]
    cfg = ExplainConfig(**given(_parser("explain").parse_args(argv), ExplainConfig))
    assert (cfg.formats, cfg.layer, cfg.method) == (("npy", "png"), None, "occlusion")
    assert ExplainConfig().formats == ("png",)


def test_explain_methods_are_the_library_s():
    from alexnet.explain import METHODS
    from alexnet.names import EXPLAIN_METHODS

    assert tuple(METHODS) == EXPLAIN_METHODS
