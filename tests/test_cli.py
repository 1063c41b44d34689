"""The command line as a whole: fast parser, --version, one help style, one-line errors with the right exit codes."""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
from importlib.metadata import version

import pytest

import alexnet.cli
from alexnet.cli import HelpFormatter, build_parser, describe, main
from alexnet.names import ARCHS


def _parsers(parser: argparse.ArgumentParser, name: str = "alexnet"):
    """Every parser of the tree, with its command line."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_building_the_parser_imports_no_torch():
    """`alexnet --help` builds every subparser: none of the cli modules may import torch (3+ s) to do so."""
    code = (
        "import importlib, sys, alexnet.cli as cli\n"
        "for name in cli.COMMANDS:\n"
        "    importlib.import_module('alexnet.cli.' + name)\n"
        "    heavy = sorted({'torch', 'numpy'} & set(sys.modules))\n"
        "    if heavy: print(f'alexnet.cli.{name} imports {heavy}'); break\n"
        "cli.build_parser()\n"
        "print(sorted({'torch', 'numpy'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_every_command_has_a_description():
    """``--help`` says what a command does beyond its one-line summary (info, evaluate, bench and data had none)."""
    bare = [name for name, p in _parsers(build_parser()) if name != "alexnet" and len(p.description or "") < 80]
    assert bare == []


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    expected = f"alexnet {version('alexnet')} (torch {version('torch')}, torchvision {version('torchvision')})"
    assert capsys.readouterr().out == expected + "\n"
    assert re.fullmatch(r"alexnet \S+ \(torch \d+\.\d+\S*, torchvision \d+\.\d+\S*\)", expected)


def test_archs_are_the_registered_models():
    from alexnet.model import list_models

    assert list(ARCHS) == list_models()


def test_every_help_shows_a_default_once_and_no_rest_markup():
    for name, parser in _parsers(build_parser()):
        text = parser.format_help()
        assert "``" not in text, f"{name} --help shows reST markup"
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.help in (None, argparse.SUPPRESS):
                continue
            shown = formatter._expand_help(action)
            assert len(re.findall(r"\bdefault\b", shown, re.IGNORECASE)) <= 1, f"{name} {action.dest}: {shown!r}"
    # an option whose help is silent about its default gets it appended
    predict = dict(_parsers(build_parser()))["alexnet predict"]
    assert re.search(r"--batch-size BATCH_SIZE\s+images per forward pass \(default: 64\)", predict.format_help())


def test_help_formatter_conventions():
    parser = argparse.ArgumentParser(prog="x", formatter_class=HelpFormatter, description=describe(__doc__))
    parser.add_argument("--a", type=int, default=5, help="apples (default 5, or 3 on Sundays)")
    parser.add_argument("--b", type=int, default=3, help="bananas")
    parser.add_argument("--c", default=None, help="cherries")
    parser.add_argument("--d", action="store_true", help="dates")
    text = " ".join(parser.format_help().split())
    assert "apples (default 5, or 3 on Sundays) --b" in text  # not twice
    assert "bananas (default: 3)" in text
    assert "cherries --d" in text and "dates" in text and "(default: False)" not in text
    assert describe("Run ``alexnet x`` on ``DATA``, like so::\n\n    alexnet x DATA") == (
        "Run alexnet x on DATA, like so:\n\n    alexnet x DATA"
    )


def test_description_lists_and_examples_survive_wrapping():
    text = (
        "Intro words.\n\n- first item, long enough to wrap " + "word " * 30 + "\n- second item\n\n    $ example  kept"
    )
    formatted = HelpFormatter("x", width=60)._fill_text(text, 60, "")
    lines = formatted.splitlines()
    assert lines[0] == "Intro words." and lines[2].startswith("- first item")
    assert lines[3].startswith("  word")  # hanging indent under the bullet
    assert any(line.startswith("- second item") for line in lines)
    assert lines[-1] == "    $ example  kept"
    assert all(len(line) <= 60 for line in lines)


# ----------------------------------------------------------------------------------------------------------------
# errors: one line, the right exit code


def _fail_with(monkeypatch, exc: BaseException) -> None:
    """Make `alexnet info` raise ``exc`` from its run function."""

    def run(args):
        print("partial output")
        raise exc

    monkeypatch.setattr(alexnet.cli.info, "run", run)


@pytest.mark.parametrize(
    ("exc", "rc", "err"),
    [
        (alexnet.cli.UserError("--x 3: too big"), 2, "alexnet info: error: --x 3: too big\n"),
        (KeyboardInterrupt(), 130, "alexnet info: interrupted\n"),
        (PermissionError(13, "Permission denied", "/runs/x.json"), 1,
         "alexnet info: error: /runs/x.json: Permission denied\n"),
        (BrokenPipeError(32, "Broken pipe"), 141, ""),
    ],
)  # fmt: skip
def test_main_turns_exceptions_into_one_line_and_an_exit_code(monkeypatch, capsys, exc, rc, err):
    _fail_with(monkeypatch, exc)
    assert main(["info"]) == rc
    captured = capsys.readouterr()
    assert captured.err == err and captured.out == "partial output\n"


def test_a_file_that_cannot_be_written_is_named(tmp_path, capsys):
    (tmp_path / "file").write_text("a file, not a folder")
    out = tmp_path / "file" / "data"
    assert main(["data", "synth", str(out), "--classes", "2", "--per-class", "1", "--val-per-class", "0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("alexnet data synth: error: ") and str(out) in err


@pytest.mark.parametrize("after", ["print('line', 1)", "for i in range(100000): print('line', i)"])
def test_closed_stdout_is_a_quiet_exit(after):
    """`alexnet ... | head -1`: no traceback, no 'Exception ignored' message, exit 141 -- whether the command writes a
    little more after the reader left (caught at the final flush) or a lot (caught mid-run)."""
    code = (
        "import sys, alexnet.cli, alexnet.cli.info as info\n"
        "def run(args):\n"
        "    print('line 0', flush=True)\n"
        "    sys.stdin.readline()  # wait until the reader has gone\n"
        f"    {after}\n"
        "info.run = run\n"
        "sys.exit(alexnet.cli.main(['info']))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered stdout, as users have it
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)  # fmt: skip
    assert p.stdout.readline() == b"line 0\n"
    p.stdout.close()  # the reader goes away, as head does
    p.stdin.write(b"go\n")
    p.stdin.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141 and err == ""


def test_progress_bar_on_a_terminal_only_when_results_go_elsewhere(monkeypatch, tmp_path, capsys):
    """predict: results on a terminal are their own progress; redirected, a bar goes to stderr (a terminal)."""
    from alexnet.data.synthetic import make_synthetic

    make_synthetic(tmp_path / "d", classes=2, per_class=3, val_per_class=0, size=32, show_progress=False)
    ckpt = _tiny_checkpoint(tmp_path / "m.pt")

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Terminal()
    monkeypatch.setattr(sys, "stderr", tty)
    assert main(["predict", str(ckpt), str(tmp_path / "d"), "--format", "json", "--device", "cpu"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 6
    assert re.search(r"predict: 100%.*6/6", tty.getvalue())


def _tiny_checkpoint(path):
    from alexnet.checkpoint import save_payload
    from alexnet.model import create_model

    model = create_model("alexnet", num_classes=2, init="kaiming")
    preprocess = {"resize": 64, "crop": 64, "mean": [0.5] * 3, "std": [0.25] * 3}
    return save_payload({"arch": "alexnet", "num_classes": 2, "model": model.state_dict(), "classes": ["a", "b"],
                            "preprocess": preprocess, "config": {"data": None}}, path)  # fmt: skip


def test_argparse_mistakes_are_one_line_naming_the_command(capsys):
    """``--lr abc`` printed train's 28-line usage before its error; ``train DATA --bogus`` blamed ``alexnet``, not
    ``alexnet train``; ``trian`` listed the commands without the one meant."""
    cases = {
        ("train", "--lr", "abc"): "alexnet train: error: argument --lr: invalid float value: 'abc'",
        ("train", "d", "--bogus"): "alexnet train: error: unrecognized arguments: --bogus",
        ("trian",): "did you mean 'train'? (see 'alexnet --help')",
        ("train", "--precision", "bf61"): "did you mean 'bf16'? (see 'alexnet train --help')",
    }
    for argv, want in cases.items():
        with pytest.raises(SystemExit) as e:
            main(list(argv))
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.splitlines()) == 1 and want in err, (argv, err)


def test_every_number_is_bounded_before_it_is_used(tmp_path, capsys):
    """Found by a new-user trial: ``evaluate --workers 100000`` started loader processes for ten minutes; these were
    tracebacks (``--every nan``, a 71-PiB integrated-gradients path, negative or 23-digit seeds, a 149-GiB synthetic
    image) and ``data synth --seed -1`` left a half-written folder. Nothing may be written or started."""
    cases = [
        (["evaluate", "m.pt", "d", "--workers", "100000"], "argument --workers: 100000 is outside [0, 256]"),
        (["predict", "m.pt", "x.avi", "--every", "nan"], "argument --every: nan is outside (0, 86400]"),
        (["predict", "m.pt", "x.png", "--batch-size", "0"], "argument --batch-size: 0 is outside [1, "),
        (["explain", "m.pt", "x.png", "--method", "integrated-gradients", "--steps", "100000000"],
         "--steps 100000000: must be an integer in [1, 4096]"),
        (["data", "check", "d", "--workers", "-1"], "argument --workers: -1 is outside [1, 256]"),
        (["data", "check", "d", "--seed", "-1"], "argument --seed: -1 is outside [0, "),
        (["train", "d", "--seed", "99999999999999999999999"], "--seed 99999999999999999999999: must be an integer"),
        (["data", "synth", str(tmp_path / "s"), "--seed", "-1"], "argument --seed: -1 is outside [0, "),
        (["data", "synth", str(tmp_path / "s"), "--size", "100000"], "argument --size: 100000 is outside [16, 2,048]"),
        (["data", "synth", str(tmp_path / "s"), "--per-class", "abc"], "argument --per-class: 'abc' is not a whole"),
    ]  # fmt: skip
    for argv, want in cases:
        try:
            code = main(argv)  # the settings' own checks return 2; argparse's exit
        except SystemExit as e:
            code = e.code
        err = capsys.readouterr().err
        assert code == 2 and len(err.splitlines()) == 1 and want in err, (argv, err)
    assert not (tmp_path / "s").exists()


def test_more_mistakes_are_one_line_and_no_file_is_replaced(tmp_path, capsys):
    """Found by a new-user trial: data stats --out replaced any file; --max-images -3 and info --image-size 100000
    were tracebacks (the latter after trying to allocate 120 GB); a JSON file given as a model was said to 'run code';
    an .onnx export given to export failed obscurely."""
    from alexnet.data.synthetic import make_synthetic

    data = make_synthetic(tmp_path / "d", classes=2, per_class=3, val_per_class=1, size=64, show_progress=False)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    (tmp_path / "m.json").write_text('{"a": 1}')
    (tmp_path / "m.onnx").write_bytes(b"onnx")
    cases = [
        (["data", "stats", str(data), "--out", str(notes)], "already exists; pass --overwrite to replace"),
        (["data", "check", str(data), "--json", str(notes)], "already exists; pass --overwrite to replace"),
        (["data", "stats", str(data), "--max-images", "-3"], "--max-images -3: must be at least 1"),
        (["info", "--image-size", "100000"], "--image-size 100000: at most 2048 px"),
        (["info", "--num-classes", "1000000000"], "--num-classes 1000000000: must be in [1, "),
        (["predict", str(tmp_path / "m.json"), str(data)], "m.json: not a PyTorch weights file"),
        (["export", str(tmp_path / "m.onnx"), "--format", "onnx"], "an .onnx export cannot be exported again"),
        (
            ["export", str(tmp_path / "m.json"), "--format", "onnx", "--out", str(tmp_path / "x.txt")],
            "x.txt: the name must end in .onnx for --format onnx",
        ),  # predict then read x.txt as a checkpoint
    ]
    for argv, want in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and want in err, (argv, err)
    assert notes.read_text() == "mine"
    assert main(["data", "stats", str(data), "--out", str(notes), "--overwrite"]) == 0
    assert '"mean"' in notes.read_text()


def test_a_negative_window_centre_is_a_value_not_an_option(tmp_path, capsys):
    """CT's lung window is -600,1500: ``--window -600,1500`` was "expected one argument" (only ``=`` worked)."""
    from alexnet.cli import build_parser, negative_values_joined

    argv = ["train", "d", "--window", "-600,1500", "--lr", "-0.5", "--epochs", "2"]
    assert negative_values_joined(argv) == ["train", "d", "--window=-600,1500", "--lr=-0.5", "--epochs", "2"]
    args = build_parser().parse_args(negative_values_joined(["data", "pack", "a", "b", "--window", "-600,1500"]))
    assert args.window == "-600,1500"
    assert main(["data", "pack", str(tmp_path / "nowhere"), str(tmp_path / "p"), "--window", "-600,1500"]) == 2
    assert "nowhere: no such file or folder" in capsys.readouterr().err  # past the parser and the window's check


def test_an_empty_path_is_a_mistake_not_the_working_folder(tmp_path, monkeypatch, capsys):
    """``Path("")`` is ``.``: ``train "$DATA"`` with DATA unset trained on the working folder, ``predict M ""``
    classified everything under it, ``data pack "" OUT`` packed it."""
    from alexnet.data.synthetic import make_synthetic

    make_synthetic(tmp_path, classes=2, per_class=3, val_per_class=1, size=64, show_progress=False)
    monkeypatch.chdir(tmp_path)  # a data set right here, which "" used to find
    cases = [(["train", ""], "DATA is empty"), (["predict", "m.pt", "a.png", " "], "INPUT is empty or blank"),
             (["data", "pack", "", "p"], "SRC is empty"), (["train", "--out", ""], "--out is empty"),
             (["train", "d", "--pretrained", "  "], "--pretrained is empty or blank"),  # not its setting's name
             (["train", "d", "--out="], "--out is empty")]  # fmt: skip
    for argv, want in cases:
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.splitlines()) == 1 and want in err, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boxes.json", "train", "val"]  # nothing written


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_stdout_is_named(tmp_path):
    """``alexnet info > /dev/full`` said "error: No space left on device" without saying what could not be written."""
    from pathlib import Path

    with open("/dev/full", "w") as full:
        src = str(Path(alexnet.cli.__file__).parents[2])
        r = subprocess.run([sys.executable, "-m", "alexnet", "info"], stdout=full, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": src})  # fmt: skip
    assert r.returncode == 1 and r.stderr == "alexnet info: error: standard output: No space left on device\n"


def test_an_output_that_is_not_a_file_is_refused_and_a_link_is_written_through(tmp_path, capsys):
    """``--out fd --overwrite`` renamed a file over a device node (as root it destroyed /dev/full) and replaced a
    symlink with a file, leaving its target as it was."""
    from alexnet.data.synthetic import make_synthetic

    data = make_synthetic(tmp_path / "d", classes=2, per_class=3, val_per_class=1, size=64, show_progress=False)
    fifo, target, link = tmp_path / "fifo", tmp_path / "t.json", tmp_path / "link.json"
    os.mkfifo(fifo)
    for argv in (["data", "stats", str(data), "--out", str(fifo), "--overwrite"],
                 ["data", "check", str(data), "--json", str(fifo), "--overwrite"]):  # fmt: skip
        assert main(argv) == 2, argv
        assert "is not a regular file (a device, FIFO or socket)" in capsys.readouterr().err
    assert fifo.is_fifo()
    target.write_text("{}")
    link.symlink_to(target)
    assert main(["data", "stats", str(data), "--out", str(link), "--overwrite"]) == 0
    assert link.is_symlink() and '"mean"' in target.read_text()
