"""TrainConfig: one list of settings; flags generated from it; values validated from flags and files alike."""

import argparse
import dataclasses
import re
import subprocess
import sys

import pytest

from alexnet import names
from alexnet.config import RECIPES, TrainConfig, fixed_on_resume, resolve_config
from alexnet.config_file import read_config_file
from alexnet.errors import UserError
from alexnet.names import ARCHS, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE


def _train_parser():
    from alexnet.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["train"]


def _cli(args, capsys):
    from alexnet.cli import main

    code = main(["train", *args])
    return code, capsys.readouterr().err.strip().splitlines()


def test_constants_match_the_model():
    from alexnet.model import MIN_INPUT_SIZE, list_models
    from alexnet.preprocess import MAX_SIDE

    assert list(ARCHS) == list_models()
    assert (MIN_IMAGE_SIZE, MAX_IMAGE_SIZE) == (MIN_INPUT_SIZE, MAX_SIDE)
    assert tuple(RECIPES) == names.RECIPES and TrainConfig().recipe == names.DEFAULT_RECIPE


def test_shared_names_are_the_code_they_name():
    from alexnet.data import presets

    assert tuple(presets.PRESETS) == names.PRESETS


def test_defaults_are_the_fast_recipe_and_recipes_list_only_differences():
    default = TrainConfig()
    assert RECIPES["fast"] == {}
    # the fast recipe as measured (README, "Recipes"): values written out by hand; crop, batch, lr, warm-up, epochs
    # and schedule are left to the data (None: alexnet.auto chooses them when training starts)
    assert (default.image_size, default.epochs, default.batch_size, default.lr) == (None, None, None, None)
    assert (default.schedule, default.warmup_epochs, default.in_memory, default.time_budget) == (None,) * 4
    assert (default.nesterov, default.label_smoothing, default.init) == (True, 0.1, "kaiming")
    for name, recipe in RECIPES.items():
        for key, value in recipe.items():
            assert value != getattr(default, key), f"{name}.{key} repeats the default"
    paper = resolve_config("paper")
    assert (paper.schedule, paper.epochs, paper.lr, paper.nesterov, paper.init) == ("plateau", 90, 0.01, False, None)


def test_every_setting_has_a_flag_and_every_flag_reaches_the_config():
    from alexnet.cli.train import config_from_args

    parser = _train_parser()
    dests = {a.dest for a in parser._actions} - {"help", "config"}
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"extra"}
    assert dests == fields
    args = ["DATA", "--train-dir", "t", "--val-dir", "v", "--image-size", "96", "--resize-size", "110"]
    args += ["--augment", "torchvision", "--pca-std", "0.2", "--workers", "3", "--max-bad-fraction", "0.5"]
    args += ["--arch", "alexnet2012", "--init", "paper", "--dropout", "0.3", "--recipe", "paper", "--epochs", "7"]
    args += ["--batch-size", "12", "--lr", "0.5", "--momentum", "0.5", "--nesterov", "off", "--weight-decay", "0"]
    args += ["--label-smoothing", "0.2", "--schedule", "step", "--warmup-epochs", "2", "--step-epochs", "3"]
    args += ["--lr-decay", "0.5", "--plateau-patience", "4", "--plateau-max-decays", "1", "--finetune-from", "m.pt"]
    args += ["--freeze", "features", "--head-lr-mult", "10", "--device", "cuda:1", "--precision", "bf16"]
    args += ["--channels-last", "off", "--compile", "on", "--out", "o", "--resume", "r", "--seed", "5"]
    args += ["--log-every", "9", "--checkpoint-minutes", "1.5", "--max-steps-per-epoch", "4", "--ten-crop-eval"]
    args += ["--plots", "--in-memory", "off", "--time-budget", "5m", "--balance", "--val-fraction", "0.3"]
    args += ["--in-channels", "1", "--window", "brain", "--no-flip-eval"]
    cfg = config_from_args(parser.parse_args(args))
    defaults = TrainConfig()
    unchanged = [f.name for f in dataclasses.fields(TrainConfig) if getattr(cfg, f.name) == getattr(defaults, f.name)]
    assert unchanged == ["overwrite", "extra"]  # every flag changed its setting; --overwrite contradicts --resume
    assert config_from_args(parser.parse_args(["--overwrite"])).overwrite is True
    assert (cfg.init_weights, cfg.device, cfg.compile, cfg.channels_last) == ("m.pt", "cuda:1", True, False)


def test_help_shows_each_default_once_without_markup(capsys):
    parser = _train_parser()
    text = parser.format_help()
    assert "``" not in text and ":class:" not in text
    for action in parser._actions:
        assert (action.help or "").lower().count("default") <= 1, action.dest
    # --lr: fast (chosen from the data), then where recipes differ
    flat = " ".join(text.split())  # argparse wraps lines
    assert (
        flat.count(
            "(default: auto: 0.01, x sqrt(batch/32) below 32, x sqrt(batch/64) above 64; paper, torchvision: 0.01)"
        )
        == 1
    )
    assert "--finetune-from" in text and "--channels-last on|off" in text


def test_config_does_not_import_auto():
    """auto.py reads the config; config reading auto (for parse_duration) made the two a cycle (issue 19)."""
    code = (
        "import sys, alexnet.config as c; c.TrainConfig(time_budget='5m'); c.resolve_config(flags={'epochs': 2}); "
        "print(sorted(m for m in sys.modules if m in ('alexnet.auto', 'torch')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_building_the_train_parser_does_not_import_torch():
    code = "import sys, alexnet.cli.train, alexnet.config; print(sorted(m for m in sys.modules if m == 'torch'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--lr", "-0.1"], "--lr -0.1: must be a number > 0"),
        (["--batch-size", "0"], "--batch-size 0: must be an integer in [1, 65536]"),
        (["--workers", "-1"], "--workers -1: must be an integer in [0, 256]"),
        (
            ["--image-size", "32"],
            "--image-size 32: must be an integer in [63, 2048] (AlexNet's smallest input is 63 px)",
        ),
        (["--epochs", "0"], "--epochs 0: must be an integer in [1, 100000]"),
        (["--dropout", "1"], "--dropout 1: must be a number in [0, 1)"),
        (["--momentum", "1.5"], "--momentum 1.5: must be a number in [0, 1)"),
        (["--label-smoothing", "-0.1"], "--label-smoothing -0.1: must be a number in [0, 1)"),
        (["--lr", "nan"], "--lr nan: must be a number > 0"),
        (["--epochs", "2", "--warmup-epochs", "3"], "--warmup-epochs 3: must be at most --epochs (2)"),
        (["--image-size", "100", "--resize-size", "90"], "--resize-size 90: must be at least --image-size (100)"),
        (["--device", "gpu"], "--device 'gpu': choose from auto, cpu, cuda, cuda:N or mps"),
        (["--resume", "auto", "--overwrite"], "--overwrite on: contradicts --resume"),
    ],
)
def test_bad_values_are_one_line_and_nothing_is_written(args, expected, tmp_path, capsys):
    out = tmp_path / "run"
    code, err = _cli([*args, "--out", str(out)], capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"alexnet train: error: {expected}"), err
    assert not out.exists()


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("c.toml", "epochs = 3\nlr = \n", "c.toml:2: not valid TOML"),
        ("c.yaml", "epochs: 3\nlr: [1, 2\n", "c.yaml:3: not valid YAML"),
        ("c.json", '{"epochs": 3,\n "lr": }', "c.json:2: not valid JSON"),
        ("c.toml", 'lr = "abc"\n', "c.toml: lr = 'abc': must be a number > 0"),
        ("c.yaml", "arch: vgg16\n", "c.yaml: arch = 'vgg16': choose from alexnet, alexnet2012"),
        ("c.json", '{"init": "xavier"}', "c.json: init = 'xavier': choose from torchvision, paper, kaiming"),
        ("c.toml", 'schedule = "exp"\n', "c.toml: schedule = 'exp': choose from cosine, linear, step, plateau"),
        ("c.toml", "epochs = 2.5\n", "c.toml: epochs = 2.5: must be an integer in [1, 100000]"),
        ("c.toml", "compile = 1\n", "c.toml: compile = 1: must be on or off"),
        ("c.toml", "epochz = 3\n", "unknown setting(s) in config file"),
        ("c.toml", 'recipe = "adam"\n', "c.toml: recipe = 'adam': unknown recipe; choose from fast, paper"),
        ("c.toml", "in-channels = 2\n", "c.toml: in-channels = 2: choose from 1, 3"),  # was taken, failed later
        ("c.json", "[1, 2]", "expected a table of settings, got list"),
        # a key twice was last-one-wins in JSON and YAML (TOML refuses it itself)
        ("c.json", '{"batch-size": 16, "batch-size": 32}', "c.json: cannot read it ('batch-size' is given twice)"),
        ("c.yaml", "epochs: 2\nepochs: 3\n", "c.yaml: cannot read it ('epochs' is given twice)"),
        ("c.toml", "\ufeffepochs = 2.5\n", "c.toml: epochs = 2.5: must be an integer"),  # a BOM is read past
        ("c.yaml", "pretrained: ' '\n", "c.yaml: pretrained = ' ': is empty or blank"),  # (--out is a flag here)
    ],
)
def test_config_file_mistakes_are_one_line_naming_file_and_line(name, text, expected, tmp_path, capsys):
    pytest.importorskip("yaml")
    out = tmp_path / "run"
    code, err = _cli(["--config", _write(tmp_path, name, text), "--out", str(out)], capsys)
    assert code == 2
    assert len(err) == 1 and expected in err[0], err
    assert not out.exists()


def test_a_config_value_refused_while_training_names_the_file_and_key(tmp_path, capsys, monkeypatch):
    """Found by a new-user trial: values checked once training starts were named as the flags the user never typed
    (``--pretrained x.pt: no such file`` for ``pretrained = "x.pt"`` in the file); given as flags, they still are."""
    cases = [
        ('pretrained = "missing.pt"', "pretrained = 'missing.pt': no such file (a weights file"),
        ('finetune-from = "missing.pt"', "finetune-from = 'missing.pt': no such file"),
        ('data = "missing"', "data = 'missing': no such file or folder"),
        ('resume = "missing.pt"', "resume = 'missing.pt': no such checkpoint file"),
    ]
    for text, expected in cases:
        path = _write(tmp_path, "c.toml", text + "\n")
        code, err = _cli(["--config", path, "--out", str(tmp_path / "run"), "--device", "cpu"], capsys)
        assert code == 2 and len(err) == 1 and err[0].startswith(f"alexnet train: error: --config {path}: {expected}")
    code, err = _cli(["--pretrained", "missing.pt", "--out", str(tmp_path / "run"), "--device", "cpu"], capsys)
    assert code == 2 and err[0].startswith("alexnet train: error: --pretrained missing.pt: no such file"), err
    # a relative path in the file is relative to the working folder, as a flag's is: the error says so
    monkeypatch.chdir(tmp_path)
    code, err = _cli(["--config", _write(tmp_path, "c.toml", 'data = "../missing"\n'), "--device", "cpu"], capsys)
    assert err == [f"alexnet train: error: --config {tmp_path / 'c.toml'}: data = '../missing': no such file or "
                   f"folder (relative to the working folder {tmp_path})"], err  # fmt: skip


def test_a_config_file_not_in_utf8_is_one_line(tmp_path, capsys):
    cases = [
        ("u16.toml", "epochs = 2\n".encode("utf-16"), "a UTF-16 file; save it as UTF-8"),
        ("l1.toml", 'name = "caf\xe9"\n'.encode("latin-1"), "not UTF-8 text (byte 11); save it as UTF-8"),
    ]
    for name, data, expected in cases:
        (tmp_path / name).write_bytes(data)
        code, err = _cli(["--config", str(tmp_path / name), "--out", str(tmp_path / "run")], capsys)
        assert code == 2 and err == [f"alexnet train: error: --config {tmp_path / name}: {expected}"], err


def test_every_train_flag_is_a_config_file_key(tmp_path):
    """Found by a new-user trial: ``pretrained = "torchvision"`` was an unknown setting though ``--pretrained`` is a
    flag (only ``init-weights`` was a key); ``no-flip-eval = true`` is ``--no-flip-eval``."""
    for action in _train_parser()._actions:
        for flag in (f for f in action.option_strings if f not in ("-h", "--help", "--config")):
            negated = isinstance(action, argparse.BooleanOptionalAction) and flag.startswith("--no-")
            values = read_config_file(_write(tmp_path, "c.toml", f"{flag[2:]} = true\n"))
            assert values == {action.dest: not negated}, flag
    cfg = resolve_config(file_values=read_config_file(_write(tmp_path, "c.toml", 'pretrained = "torchvision"\n')))
    assert cfg.init_weights == "torchvision"
    path = _write(tmp_path, "c.json", '{"pretrained": "a.pt", "init-weights": "b.pt"}')
    with pytest.raises(UserError, match="'pretrained' and 'init-weights' are the same setting"):
        read_config_file(path)
    path = _write(tmp_path, "c.toml", "finetune-from = 3\n")
    with pytest.raises(UserError, match=r"^--config .*c\.toml: finetune-from = 3: must be a string$"):
        resolve_config(file_values=read_config_file(path), source=path)


def test_a_config_file_takes_what_the_flag_takes_for_a_time_budget(tmp_path):
    """Found by a new-user trial: ``time-budget = 300`` was refused ("must be a string") while the CLI took
    ``--time-budget 300``; a number is seconds, a string a duration, as on the command line."""
    for text, seconds in [("300", "300"), ("90.5", "90.5"), ('"5m"', "5m"), ("1800.0", "1800")]:
        path = _write(tmp_path, "c.toml", f"time-budget = {text}\n")
        assert resolve_config(file_values=read_config_file(path), source=path).time_budget == seconds
    path = _write(tmp_path, "c.toml", "time-budget = 10\n")
    with pytest.raises(UserError, match=r"c\.toml: time-budget = 10: must be between 30 seconds and 30 days"):
        resolve_config(file_values=read_config_file(path), source=path)
    with pytest.raises(UserError, match=r"^--time-budget -5: not a duration"):
        TrainConfig(time_budget=-5)


def test_an_empty_path_in_a_config_file_is_refused_naming_file_and_key(tmp_path):
    """Found by a new-user trial: ``out = ""`` trained into the default runs/ARCH-RECIPE-TIME folder."""
    for key in ("out", "data", "val-dir", "resume"):
        path = _write(tmp_path, "c.toml", f'{key} = ""\n')
        with pytest.raises(UserError, match=rf"^--config .*c\.toml: {key} = '': is empty or blank; give a value"):
            resolve_config(file_values=read_config_file(path), source=path)


def test_a_key_without_a_value_is_refused_naming_file_and_key(tmp_path):
    """Found by a new-user trial: YAML's ``data:`` (null) trained on the built-in synthetic data and ``lr:`` fell
    back to the default, silently; ``init: null`` (the architecture's own init) is the one null with a meaning."""
    pytest.importorskip("yaml")
    cases = [
        ("c.yaml", "data:\n", "data has no value (null); give a value or leave the setting out"),
        ("c.yaml", "lr:\n", "lr has no value (null); give a value (or auto) or leave the setting out"),
        ("c.json", '{"val-dir": null}', "val-dir has no value (null); give a value or leave the setting out"),
        ("c.yaml", "no-plots: null\n", "no-plots has no value (null); give a value or leave the setting out"),
    ]
    for name, text, expected in cases:
        path = _write(tmp_path, name, text)
        with pytest.raises(UserError, match=rf"^--config .*{re.escape(name)}: {re.escape(expected)}$"):
            read_config_file(path)
    path = _write(tmp_path, "c.yaml", "init: null\nrecipe: fast\n")
    assert resolve_config(file_values=read_config_file(path), source=path).init is None


def test_a_config_file_is_read_by_its_suffix_in_any_case_and_within_the_size_cap(tmp_path, monkeypatch):
    """Found by a new-user trial: ``c.YAML`` and ``c.JSON`` were parsed as TOML ("not valid TOML"), so was
    ``c.ini``; a folder was "no such file"; an 80 MB file was read and parsed whole."""
    pytest.importorskip("yaml")
    assert read_config_file(_write(tmp_path, "c.YAML", "lr: 0.1\n")) == {"lr": 0.1}
    assert read_config_file(_write(tmp_path, "c.JSON", '{"lr": 0.1}')) == {"lr": 0.1}
    for name in ("c.ini", "c.cfg", "settings"):
        with pytest.raises(UserError, match=rf"^--config .*{name}: not a config file name; use .toml, .yaml/.yml"):
            read_config_file(_write(tmp_path, name, "lr = 0.1\n"))
    (tmp_path / "d.toml").mkdir()
    with pytest.raises(UserError, match=r"^--config .*d\.toml: is a folder, not a config file$"):
        read_config_file(tmp_path / "d.toml")
    monkeypatch.setenv("ALEXNET_MAX_JSON_BYTES", "64")
    with pytest.raises(UserError, match=r"^--config .*c\.toml: 109 bytes, over the 64-byte limit .*MAX_JSON_BYTES"):
        read_config_file(_write(tmp_path, "c.toml", "lr = 0.1\n" + "#" * 99 + "\n"))


def test_config_file_values_flags_and_precedence(tmp_path):
    pytest.importorskip("yaml")
    values = read_config_file(_write(tmp_path, "c.yaml", "batch-size: 64\nlr: 1e-3\nrecipe: paper\nepochs: 5\n"))
    assert values["lr"] == 0.001  # YAML 1.1 reads 1e-3 as a string; a float setting takes it as a number
    cfg = resolve_config(file_values=values, flags={"epochs": 7, "lr": None})
    assert (cfg.batch_size, cfg.lr, cfg.epochs, cfg.recipe, cfg.schedule) == (64, 0.001, 7, "paper", "plateau")
    assert resolve_config(file_values={"lr": 1}).lr == 1.0 and isinstance(
        resolve_config(file_values={"lr": 1}).lr, float
    )


def test_construction_validates_in_python():
    with pytest.raises(UserError, match="--batch-size 0"):
        TrainConfig(batch_size=0)
    with pytest.raises(UserError, match="--epochs on: must be an integer"):
        TrainConfig(epochs=True)
    with pytest.raises(UserError, match="--arch 'vgg'"):
        resolve_config(flags={"arch": "vgg"})


def test_every_setting_says_whether_a_resumed_run_may_change_it():
    kinds = {f.name: f.metadata["on_resume"] for f in dataclasses.fields(TrainConfig)}
    assert {k for k, v in kinds.items() if v not in ("fixed", "free")} == set()  # a new setting must choose
    fixed = fixed_on_resume()
    # issue 19: data, architecture, classes, image size, batch, lr schedule, seed are fixed; progress is not
    for name in ("data", "arch", "image_size", "batch_size", "lr", "schedule", "epochs", "seed", "precision"):
        assert name in fixed
    for name in ("workers", "device", "out", "resume", "log_every", "checkpoint_minutes", "plots", "extra"):
        assert name not in fixed
