"""Exports: ONNX and torch.export parity with PyTorch, safetensors round trips, and a parity check that can fail."""

from __future__ import annotations

import json

import pytest
import torch

import alexnet
from alexnet.checkpoint import Checkpoint, save_payload
from alexnet.cli import main
from alexnet.export import ParityError, check_onnx, export
from alexnet.model import create_model
from alexnet.preprocess import Preprocess
from alexnet.weights import model_from_file

CLASSES = ["ant", "bee", "cow", "dog"]
PREPROCESS = {"resize": 73, "crop": 64, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny alexnet2012 (grouped convs, LRN) checkpoint at 64 px."""
    torch.manual_seed(0)
    model = create_model("alexnet2012", num_classes=4, init="kaiming").eval()
    path = tmp_path_factory.mktemp("export") / "best.pt"
    save_payload({"arch": "alexnet2012", "num_classes": 4, "model": model.state_dict(), "classes": CLASSES,
                     "preprocess": PREPROCESS, "config": {"data": None, "epochs": 3}}, path)  # fmt: skip
    return path, model


def test_onnx_parity_dynamic_batch_and_metadata(ckpt, tmp_path, capsys):
    onnx = pytest.importorskip("onnx", reason="ONNX export needs onnx: pip install 'alexnet[onnx]'")
    ort = pytest.importorskip("onnxruntime", reason="the ONNX parity check needs pip install 'alexnet[onnx]'")
    path, model = ckpt
    out = tmp_path / "m.onnx"
    assert main(["export", str(path), "--format", "onnx", "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out} (parity with PyTorch: max abs diff")
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["classes"]) == CLASSES
    assert json.loads(meta["preprocess"]) == Preprocess.from_dict(PREPROCESS).to_dict()  # every field, plain JSON
    assert meta["arch"] == "alexnet2012"
    # independent of the built-in check: a batch of 5 (export used 2) against the original module
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    assert (got - expected).abs().max().item() <= 1e-4

    # the check fails loudly when the file does not match the model
    wrong = create_model("alexnet2012", num_classes=4, init="kaiming").eval()
    with pytest.raises(ParityError, match="differ from PyTorch"):
        check_onnx(wrong, Checkpoint(model={}, preprocess=Preprocess.from_dict(PREPROCESS)), out)


def test_torch_export_program_parity(ckpt, tmp_path):
    path, model = ckpt
    out, diff = export(path, "pt2")
    assert out == path.with_suffix(".pt2") and out.is_file() and diff <= 1e-4
    extra = {"alexnet.json": ""}
    loaded = torch.export.load(str(out), extra_files=extra).module()
    info = json.loads(extra["alexnet.json"])
    assert info["classes"] == CLASSES and Preprocess.from_dict(info["preprocess"]) == Preprocess.from_dict(PREPROCESS)
    x = torch.randn(7, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-4, rtol=0)


def test_safetensors_round_trip_through_load(ckpt, tmp_path):
    path, model = ckpt
    out, diff = export(path, "safetensors", tmp_path / "m.safetensors")
    assert diff is None and out.with_suffix(".json").is_file()
    loaded, meta = model_from_file(out)
    assert type(loaded).__name__ == "AlexNet2012"
    assert meta.classes == CLASSES and meta.config["epochs"] == 3
    assert Preprocess.from_dict(json.loads(out.with_suffix(".json").read_text())["preprocess"]) == meta.preprocess
    assert meta.preprocess == Preprocess.from_dict(PREPROCESS)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    img = torch.randint(0, 256, (3, 80, 90), dtype=torch.uint8)
    assert alexnet.load(out, device="cpu").predict(img, topk=4) == alexnet.load(path, device="cpu").predict(img, topk=4)
    # copied without its .json: the file's own header has the metadata (it was classes 0..3 and ImageNet's
    # preprocessing, or refused for a 1-channel model)
    out.with_suffix(".json").unlink()
    assert model_from_file(out)[1].metadata() == meta.metadata()


def test_an_upper_case_suffix_is_the_same_format(ckpt, tmp_path):
    """Found by a new-user trial: ``--out m.SAFETENSORS`` passed export's suffix check, then was refused when written
    (and would not have loaded: read as a checkpoint), while ``evaluate --out r.JSON`` is a JSON report."""
    path, _ = ckpt
    out, _ = export(path, "safetensors", tmp_path / "m.SAFETENSORS")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.SAFETENSORS", "m.json"]
    img = torch.randint(0, 256, (3, 80, 90), dtype=torch.uint8)
    assert alexnet.load(out, device="cpu").predict(img, topk=4) == alexnet.load(path, device="cpu").predict(img, topk=4)


def test_an_export_leaves_the_training_machines_paths_behind(ckpt, tmp_path, capsys):
    # found by a new-user trial: exports carried the data's and the run's absolute paths (a hospital's folders often
    # name the patient), though an export is the file that leaves the machine
    _, model = ckpt
    secret = "/data/Doe^John_123456"
    config = {"data": secret, "val_dir": None, "out": f"{secret}/run", "init_weights": "torchvision", "epochs": 3}
    save_payload({"arch": "alexnet2012", "num_classes": 4, "model": model.state_dict(), "classes": CLASSES,
                  "preprocess": PREPROCESS, "config": config}, tmp_path / "run.pt")  # fmt: skip
    out, _ = export(tmp_path / "run.pt", "safetensors", tmp_path / "m.safetensors")
    for written in (out, out.with_suffix(".json")):
        assert b"Doe^John" not in written.read_bytes(), written
    kept = model_from_file(out)[1].config
    assert kept["epochs"] == 3 and kept["init_weights"] == "torchvision" and "data" not in kept
    assert main(["evaluate", str(out)]) == 2  # it would have evaluated on the built-in set (data None)
    assert "m.safetensors is an export, which leaves the training data's path out: give DATA" in capsys.readouterr().err


def test_export_errors_name_the_value(ckpt, tmp_path, capsys):
    path, _ = ckpt
    with pytest.raises(alexnet.UserError, match="--format 'tflite'"):
        export(path, "tflite")
    with pytest.raises(alexnet.UserError, match="now called 'pt2'"):
        export(path, "torchscript")
    # the CLI still takes the old name, says so, and writes a .pt2
    out = tmp_path / "old.pt2"
    assert main(["export", str(path), "--format", "torchscript", "--out", str(out), "--no-check"]) == 0
    assert "torchscript is now called pt2" in capsys.readouterr().err and out.is_file()
    with pytest.raises(alexnet.UserError, match=r"must end in \.safetensors for --format safetensors"):
        export(path, "safetensors", path)  # the checkpoint itself, or any name the loader would misread
    with pytest.raises(alexnet.UserError, match=r"nope\.pt"):
        export(tmp_path / "nope.pt", "onnx")
