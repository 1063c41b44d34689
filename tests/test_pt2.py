"""``.pt2`` exports (``alexnet export --format pt2``, a ``torch.export`` archive) are refused by every command that
runs a model, in one line saying which format to use: ``torch.export.load`` unpickles parts of the archive with full
pickle, so a crafted file runs code (shown here). The refusal comes before ``torch.export.load`` is ever called."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import alexnet
from alexnet.cli import main
from alexnet.errors import WeightsError
from alexnet.model import create_model
from alexnet.preprocess import Preprocess

CLASSES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """A tiny model as .safetensors + sidecar, its real .pt2 export, and a small data set of two class folders."""
    root = tmp_path_factory.mktemp("pt2")
    torch.manual_seed(0)
    weights = root / "tiny.safetensors"
    save_file(create_model("alexnet", num_classes=3).state_dict(), str(weights))
    meta = {"arch": "alexnet", "classes": CLASSES, "preprocess": Preprocess(resize=64, crop=64).to_dict()}
    weights.with_suffix(".json").write_text(json.dumps(meta))
    assert main(["export", str(weights), "--format", "pt2", "--out", str(root / "tiny.pt2")]) in (0, None)
    rng = np.random.default_rng(0)
    for c in CLASSES:
        (root / "data" / "val" / c).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "data" / "val" / c / "x.png")
    return {"weights": weights, "pt2": root / "tiny.pt2", "data": root / "data", "image": root / "data/val/a/x.png"}


class _Touch:
    """A pickle that, when loaded, creates a file: what a crafted archive could do instead."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_torch_export_load_runs_code_from_a_crafted_archive(exported, tmp_path):
    """Why .pt2 is refused. If this fails, torch.export.load has become safe and .pt2 could be run (weights.py)."""
    marker, crafted = tmp_path / "ran", tmp_path / "crafted.pt2"
    with zipfile.ZipFile(exported["pt2"]) as src, zipfile.ZipFile(crafted, "w") as out:
        for entry in src.infolist():
            data = src.read(entry.filename)
            if "/data/sample_inputs/" in entry.filename:  # torch.load(weights_only=True), then weights_only=False
                data = pickle.dumps(_Touch(marker))
            out.writestr(entry, data)
    with pytest.raises(RuntimeError):  # after the pickle ran: it is not the tuple torch expected
        torch.export.load(str(crafted))
    assert marker.exists()


@pytest.fixture
def no_export_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.export.load was called on an untrusted file")

    monkeypatch.setattr(torch.export, "load", refuse)


def one_line(capsys, path: Path) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and "can run code" in err and ".onnx" in err, err
    return err


@pytest.mark.parametrize("command", ["predict", "evaluate", "serve", "features", "explain"])
def test_every_command_refuses_a_pt2_in_one_line(command, exported, capsys, no_export_load):
    path = exported["pt2"]
    second = {"predict": exported["image"], "evaluate": exported["data"], "features": exported["data"],
              "explain": exported["image"]}  # fmt: skip
    argv = [command, str(path)] + ([str(second[command])] if command in second else [])
    if command == "features":
        argv += ["--out", str(path.parent / "f.npy")]
    assert main(argv) == 2
    one_line(capsys, path)


def test_load_refuses_a_pt2_even_renamed(exported, tmp_path, no_export_load):
    renamed = tmp_path / "model.pt"
    renamed.write_bytes(exported["pt2"].read_bytes())
    for path in (exported["pt2"], renamed):
        with pytest.raises(WeightsError, match=r"torch\.export archive .* can run code"):
            alexnet.load(path, device="cpu")
    assert alexnet.load(exported["weights"], device="cpu").classes == CLASSES  # the format it names runs
