"""``alexnet.load("model.onnx")``: onnxruntime gives PyTorch's predictions, through the API and the CLI."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import alexnet
from alexnet.checkpoint import save_payload
from alexnet.cli import main
from alexnet.export import export
from alexnet.model import create_model
from alexnet.predict import OnnxPredictor

pytest.importorskip("onnxscript", reason="ONNX export needs pip install 'alexnet[onnx]'")
onnx = pytest.importorskip("onnx", reason="ONNX export needs pip install 'alexnet[onnx]'")
pytest.importorskip("onnxruntime", reason="running ONNX models needs pip install 'alexnet[onnx]'")

CLASSES = ["cat", "dog", "fox"]
# not the identity: images are resized (shorter side 73) and centre-cropped (64) before the network
PREPROCESS = {"resize": 73, "crop": 64, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A 3-class, 64-px checkpoint and its ONNX export (exported once: the dynamo exporter takes ~10-30 s)."""
    torch.manual_seed(0)
    model = create_model("alexnet", num_classes=3, init="kaiming").eval()
    root = tmp_path_factory.mktemp("onnx")
    ckpt = root / "model.pt"
    save_payload({"arch": "alexnet", "num_classes": 3, "model": model.state_dict(), "classes": CLASSES,
                     "preprocess": PREPROCESS, "config": {"data": None}}, ckpt)  # fmt: skip
    out, _ = export(ckpt, "onnx")
    return ckpt, out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Five PNGs of different sizes and aspect ratios, so resizing and cropping run for real."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(64, 64), (80, 96), (120, 70), (73, 73), (200, 150)]):
        paths.append(root / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def test_onnx_predictions_match_pytorch(exported, images):
    ckpt, onnx_path = exported
    torch_p, onnx_p = alexnet.load(ckpt, device="cpu"), alexnet.load(onnx_path)
    assert isinstance(onnx_p, OnnxPredictor) and onnx_p.classes == CLASSES
    assert onnx_p.preprocess == torch_p.preprocess  # read back from the ONNX metadata
    for ten_crop in (False, True):
        a = torch_p.predict(images, topk=3, ten_crop=ten_crop, batch_size=2)
        b = onnx_p.predict(images, topk=3, ten_crop=ten_crop, batch_size=2)
        for ra, rb in zip(a, b, strict=True):
            assert [c for c, _ in ra] == [c for c, _ in rb]
            np.testing.assert_allclose([p for _, p in ra], [p for _, p in rb], atol=1e-4, rtol=0)
    # the batch API evaluate uses: uint8 crops (B, 3, c, c) or ten-crop (B, 10, 3, c, c) -> (B, num_classes)
    crops = torch.stack([torch_p.transform(torch.randint(0, 256, (3, 90, 100), dtype=torch.uint8)) for _ in range(4)])
    torch.testing.assert_close(onnx_p.probabilities(crops), torch_p.probabilities(crops), atol=1e-4, rtol=0)
    tens = crops[:, None].expand(4, 10, 3, 64, 64)
    assert onnx_p.probabilities(tens).shape == (4, 3)


def test_predict_cli_on_an_onnx_file(exported, images, capsys):
    ckpt, onnx_path = exported
    inputs = [str(p) for p in images[:3]]
    assert main(["predict", str(ckpt), *inputs, "--format", "json", "--device", "cpu"]) == 0
    expected = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(["predict", str(onnx_path), *inputs, "--format", "json"]) == 0
    got = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["input"] for r in got] == inputs
    for e, g in zip(expected, got, strict=True):
        assert [t["class"] for t in g["top"]] == [t["class"] for t in e["top"]]
        np.testing.assert_allclose([t["probability"] for t in g["top"]], [t["probability"] for t in e["top"]],
                                   atol=1e-4)  # fmt: skip


def test_onnx_mistakes_are_one_line(exported, images, tmp_path, capsys, monkeypatch):
    _, onnx_path = exported
    # features need the checkpoint: the export holds only the logits
    with pytest.raises(alexnet.UserError, match=r"features are not supported for \.onnx"):
        alexnet.load(onnx_path).features(images, layer="fc7")
    data = tmp_path / "data" / "train" / "a"
    data.mkdir(parents=True)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(data / "0.png")
    rc = main(["features", str(onnx_path), str(tmp_path / "data"), "--out", str(tmp_path / "f.npy")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "not supported for .onnx" in err

    # an ONNX file without our metadata: the preprocessing is unknown, so refuse it
    bare = onnx.load(str(onnx_path))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(alexnet.UserError, match=r"bare\.onnx: no classes or preprocess in the ONNX metadata"):
        alexnet.load(tmp_path / "bare.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf")
    assert main(["predict", str(tmp_path / "junk.onnx"), str(images[0])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "junk.onnx: onnxruntime cannot read this file" in err

    # without onnxruntime: one line naming the extra to install
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert main(["predict", str(onnx_path), str(images[0])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'alexnet[onnx]'" in err


def test_evaluate_runs_onnx_exports_with_the_checkpoints_numbers(exported, tmp_path):
    from alexnet.data.synthetic import make_synthetic
    from alexnet.evaluate import evaluate_file

    ckpt, onnx_path = exported
    data = make_synthetic(tmp_path / "d", classes=3, per_class=2, val_per_class=4, size=80, seed=3)
    for folder, new in zip(sorted((data / "val").iterdir()), CLASSES):
        folder.rename(folder.parent / new)  # the model's class names
    for ten_crop in (False, True):
        a = evaluate_file(str(ckpt), str(data / "val"), device="cpu", ten_crop=ten_crop)
        b = evaluate_file(str(onnx_path), str(data / "val"), ten_crop=ten_crop)
        assert b["count"] == a["count"] == 12 and b["confusion"] == a["confusion"]
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-4)
    assert main(["evaluate", str(onnx_path), str(data / "val")]) == 0
