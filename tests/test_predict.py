"""Predictor API on every input type, the predict/features CLIs with exact output formats, bad inputs, video."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import alexnet
from alexnet.checkpoint import save_payload
from alexnet.cli import main
from alexnet.model import create_model
from alexnet.predict import save_features

CLASSES = ["cat", "dog", "fox"]
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny 3-class checkpoint whose preprocessing is the identity on 64x64 images (resize 64, crop 64)."""
    torch.manual_seed(0)
    model = create_model("alexnet", num_classes=3, init="kaiming").eval()
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    preprocess = {"resize": 64, "crop": 64, "mean": MEAN, "std": STD}
    save_payload({"arch": "alexnet", "num_classes": 3, "model": model.state_dict(), "classes": CLASSES,
                     "preprocess": preprocess, "config": {"data": None}}, path)  # fmt: skip
    return path, model


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three 64x64 RGB PNGs (lossless, so the decoded pixels are exactly these arrays) and one broken file."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    (root / "sub").mkdir()
    paths = [root / "a.png", root / "sub" / "b.png", root / "sub" / "c.png"]
    for a, p in zip(arrays, paths):
        Image.fromarray(a).save(p)
    bad = root / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    return root, paths, arrays, bad


def reference_probs(model: torch.nn.Module, arrays: list[np.ndarray]) -> torch.Tensor:
    """Softmax of the plain PyTorch model on (x/255 - mean)/std: what predict must reproduce on 64x64 inputs."""
    x = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in arrays]).float() / 255
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return model(x).softmax(-1)


def as_dict(result: list[tuple[str, float]]) -> dict[str, float]:
    return dict(result)


# ----------------------------------------------------------------------------------------------------------------
# Python API


def test_probabilities_takes_what_predict_takes_or_says_what_it_wants(ckpt, images):
    path, model = ckpt
    _, paths, arrays, _ = images
    p = alexnet.load(path, device="cpu")
    expected = reference_probs(model, arrays)
    # was AttributeError: 'list' object has no attribute 'ndim'
    torch.testing.assert_close(p.probabilities([str(x) for x in paths]), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(p.probabilities([Image.fromarray(a) for a in arrays]), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(p.probabilities(arrays[0]), expected[:1], atol=1e-5, rtol=0)
    crops = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in arrays])  # the crops themselves: as before
    torch.testing.assert_close(p.probabilities(crops), expected, atol=1e-5, rtol=0)
    with pytest.raises(alexnet.UserError, match=r"a tensor is taken as crops, uint8 \(B, 3, 64, 64\).*float32"):
        p.probabilities(crops.float() / 255)


def test_a_read_only_array_predicts_without_a_warning(ckpt, images, recwarn):
    path, _ = ckpt
    _, _, arrays, _ = images
    frozen = arrays[0].copy()
    frozen.flags.writeable = False  # a video frame, a memory map, np.frombuffer over bytes
    p = alexnet.load(path, device="cpu")
    assert p.predict(frozen, topk=1) == p.predict(arrays[0], topk=1)
    assert [str(w.message) for w in recwarn] == []  # was PyTorch's "The given NumPy array is not writable" warning


def test_every_input_type_gives_the_pytorch_probabilities(ckpt, images):
    path, model = ckpt
    _, paths, arrays, _ = images
    p = alexnet.load(path, device="cpu")
    ref = reference_probs(model, arrays)
    chw = [torch.from_numpy(a).permute(2, 0, 1).contiguous() for a in arrays]
    inputs = {
        "path": [str(x) for x in paths],
        "pathlib": paths,
        "pil": [Image.fromarray(a) for a in arrays],
        "numpy": arrays,
        "chw uint8": chw,
        "chw float": [c.float() / 255 for c in chw],
    }
    for kind, imgs in inputs.items():
        results = p.predict(imgs, topk=3)
        assert len(results) == 3, kind
        for r, expected in zip(results, ref):
            assert [c for c, _ in r] == [CLASSES[i] for i in expected.argsort(descending=True)], kind
            got = torch.tensor([as_dict(r)[c] for c in CLASSES])
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0, msg=kind)
    # a (B, 3, H, W) batch tensor counts as B images; a single image needs no list
    batch = p.predict(torch.stack(chw), topk=1)
    assert [r[0][0] for r in batch] == [CLASSES[i] for i in ref.argmax(1)]
    assert len(p.predict(arrays[0], topk=2)[0]) == 2


def test_batch_size_and_ten_crop(ckpt, images):
    path, model = ckpt
    _, paths, arrays, _ = images
    p = alexnet.load(path, device="cpu")
    one = p.predict(paths, topk=3, batch_size=1)
    many = p.predict(paths, topk=3, batch_size=64)
    for a, b in zip(one, many):
        assert [c for c, _ in a] == [c for c, _ in b]
        np.testing.assert_allclose([v for _, v in a], [v for _, v in b], atol=1e-6)
    # at resize == crop == image size, the ten crops are 5x the image and 5x its mirror: paper §4.1 averaging
    ref = (reference_probs(model, arrays) + reference_probs(model, [a[:, ::-1].copy() for a in arrays])) / 2
    for r, expected in zip(p.predict(paths, topk=3, ten_crop=True, batch_size=2), ref):
        torch.testing.assert_close(torch.tensor([as_dict(r)[c] for c in CLASSES]), expected, atol=1e-5, rtol=0)
    for r, expected in zip(p.predict(paths, topk=3, flip=True, batch_size=2), ref):  # the image and its mirror
        torch.testing.assert_close(torch.tensor([as_dict(r)[c] for c in CLASSES]), expected, atol=1e-5, rtol=0)


def test_bad_inputs_are_named_and_the_rest_still_run(ckpt, images):
    path, _ = ckpt
    _, paths, _, bad = images
    p = alexnet.load(path, device="cpu")
    with pytest.raises(alexnet.UserError, match=r"broken\.jpg"):
        p.predict([paths[0], bad])
    out = list(p.iter_predict([paths[0], bad, paths[1]], topk=2, batch_size=2))
    assert [src for src, _, _ in out] == [paths[0], bad, paths[1]]
    assert out[0][1] is not None and out[2][1] is not None and out[1][1] is None
    assert "broken.jpg" in str(out[1][2])
    with pytest.raises(alexnet.UserError, match="float64"):
        p.predict(np.zeros((64, 64, 3)))
    with pytest.raises(alexnet.UserError, match="shape"):
        p.predict(torch.zeros(4, 64, 64, dtype=torch.uint8))
    # an image without pixels is that item's error (it was a ZeroDivisionError that ended iter_predict's whole run)
    empty = [
        np.zeros((0, 0, 3), np.uint8),
        np.zeros((10, 0, 3), np.uint8),
        torch.rand(3, 0, 0),
        Image.new("RGB", (0, 4)),
    ]
    out = list(p.iter_predict([paths[0], *empty, paths[1]], topk=2, batch_size=2))
    assert out[0][1] is not None and out[-1][1] is not None
    assert all(top is None and "empty (no pixels)" in str(err) for _, top, err in out[1:-1]), out
    # a gray (1, H, W) or (B, 1, H, W) tensor is R = G = B, as a numpy (H, W) array is
    gray = torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8)
    assert p.predict(gray, topk=3) == p.predict([g[0].numpy() for g in gray], topk=3)


def test_a_float_tensor_outside_0_to_1_is_refused_not_clamped(ckpt, images):
    """0..255 floats (``.float()`` of a uint8 image), a normalised tensor and NaN were clamped into another image and
    still predicted; now each is an ArgumentError saying what to pass, and only that input's error in a batch."""
    path, _ = ckpt
    _, paths, arrays, _ = images
    p = alexnet.load(path, device="cpu")
    chw = torch.from_numpy(arrays[0]).permute(2, 0, 1).contiguous()
    wrong = {
        "0..255": (chw.float(), r"values 0\.\.255 \(0\.\.255 floats: divide by 255\)"),
        "normalised": ((chw.float() / 255 - 0.45) / 0.225, r"values -2\.\.2\.44"),
        "nan": (torch.full((3, 64, 64), float("nan")), "NaN or infinite values"),
        "inf": (torch.full((1, 3, 64, 64), float("inf"), dtype=torch.float16), "float16 with NaN or infinite"),
    }
    for kind, (x, message) in wrong.items():
        with pytest.raises(ValueError, match=message + r".*pass uint8 0\.\.255, or float 0\.\.1") as e:
            p.predict(x)
        assert isinstance(e.value, alexnet.ArgumentError), kind
    # rounding just outside 0..1 (a resize's overshoot) is not a mistake: clamped, the uint8 image's result
    near = (chw.float() / 255 + 5e-4).clamp_min(-5e-4)
    assert p.predict(near, topk=3) == p.predict(chw, topk=3)
    out = list(p.iter_predict([paths[0], chw.float(), paths[1]], topk=1))
    assert [top is None for _, top, _ in out] == [False, True, False]
    assert isinstance(out[1][2], alexnet.ArgumentError)


@pytest.mark.parametrize("window", ["auto", "1000,20000"])
def test_a_16_bit_or_float_gray_image_is_windowed_alike_as_a_file_a_pil_image_or_an_array(ckpt, tmp_path, window):
    """A PIL I;16 image went through convert("RGB"), which saturates above 255, and a uint16 array was refused with
    the advice .astype(np.uint8) (values modulo 256): now both take the file's window, the one stored with the model."""
    from alexnet.checkpoint import Checkpoint
    from alexnet.predict import Predictor
    from alexnet.preprocess import Preprocess

    _, model = ckpt
    preprocess = Preprocess(crop=64, resize=64, mean=MEAN, std=STD, window=window)
    p = Predictor(model, Checkpoint(model={}, classes=CLASSES, preprocess=preprocess))
    rng = np.random.default_rng(1)
    files = {"g16.png": rng.integers(0, 40000, (64, 64)).astype(np.uint16),
             "f32.tif": rng.uniform(-100, 4900, (64, 64)).astype(np.float32)}  # fmt: skip
    for name, a in files.items():
        Image.fromarray(a).save(tmp_path / name)
        pil = Image.open(tmp_path / name)
        assert pil.mode in ("I;16", "F"), pil.mode
        expected = p.probabilities(tmp_path / name)
        inputs = {"PIL": pil, "numpy": a, "numpy from PIL": np.asarray(pil), "int32": a.astype(np.int32)}
        for kind, x in inputs.items():
            if kind != "int32" or name == "g16.png":  # an int32 copy of 16-bit values: the same integers
                torch.testing.assert_close(p.probabilities(x), expected, msg=f"{name} {kind}")


TOPK = "topk must be a whole number from 1 to 3 (this model has 3 classes), got "


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p, x: p.predict(x, topk=2.5), TOPK + "2.5"),
        (lambda p, x: p.predict(x, topk="3"), TOPK + "'3'"),
        (lambda p, x: p.predict(x, topk=0), TOPK + "0"),
        (lambda p, x: p.predict(x, topk=True), TOPK + "True"),
        (lambda p, x: p.predict(x, batch_size=2.5), "batch_size must be a positive whole number, got 2.5"),
        (lambda p, x: p.predict(x, ten_crop="yes"), "ten_crop must be True or False, got 'yes'"),
        (lambda p, x: p.features(x, batch_size=0), "batch_size must be a positive whole number, got 0"),
        (lambda p, x: p.features(x, batch_size=True), "batch_size must be a positive whole number, got True"),
        (lambda p, x: p.features(x, layer="conv6"), "layer must be one of conv5, fc6, fc7, logits, got 'conv6'"),
        (lambda p, x: alexnet.load(None), "model_path must be a file path (a str or pathlib.Path), got None"),
        (lambda p, x: alexnet.load(123), "model_path must be a file path (a str or pathlib.Path), got 123"),
        (lambda p, x: alexnet.load(str(x).encode()), "got b'"),
        (lambda p, x: alexnet.load(p.path, device="gpu"), "device 'gpu' is not a device; use one of auto, cpu"),
        (lambda p, x: alexnet.load_weights(create_model("alexnet", num_classes=3), None), "path must be a file path"),
    ],
)  # fmt: skip
def test_python_api_names_a_wrong_argument_as_the_caller_wrote_it(ckpt, images, call, message):
    """Each of these ended in a torch or pathlib traceback, or named a CLI flag (--topk) the caller never typed."""
    p = alexnet.load(ckpt[0], device="cpu")
    p.path = ckpt[0]
    with pytest.raises(alexnet.UserError) as e:
        call(p, images[1][0])
    assert message in str(e.value) and "--" not in str(e.value)
    if message.startswith(("topk", "batch_size", "model_path", "layer")):  # also the built-in types callers catch
        assert isinstance(e.value, TypeError) and isinstance(e.value, ValueError)


NOT_TARGET = "not top1, a class name (cat, dog, fox) or an index 0..2"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p, x: p.explain(x, target=1.5), f"target 1.5: {NOT_TARGET}"),  # explained class 1
        (lambda p, x: p.explain(x, target=2.0), f"target 2.0: {NOT_TARGET}"),
        (lambda p, x: p.explain(x, target=True), f"target True: {NOT_TARGET}"),
        (lambda p, x: p.explain(x, target="purple"), f"target 'purple': {NOT_TARGET}"),
        (lambda p, x: p.explain(x, method="occlusion", window=0), "window must be a positive whole number, got 0"),
        (lambda p, x: p.explain(x, method="occlusion", stride=0), "stride must be a positive whole number, got 0"),
        (lambda p, x: p.explain(x, method="occlusion", window=2.5), "window must be a positive whole number, got 2.5"),
        (lambda p, x: p.explain(x, method="occlusion", window=100), "window 100 / stride 50: need 1 <= stride <= "),
        (lambda p, x: p.explain(x, method="integrated-gradients", steps=2.5), "steps must be a whole number from 1 to"),
        (lambda p, x: p.explain(x, method="integrated-gradients", steps=10**9), "from 1 to 4096, got 1000000000"),
        (lambda p, x: p.explain(x, method="integrated-gradients", steps=0), "needs at least 1 step"),
        (lambda p, x: p.explain(x, method="lime"), "method 'lime': choose one of gradcam, occlusion"),
        (lambda p, x: p.explain(x, layer="conv9"), "layer 'conv9': choose auto or one of conv1"),
        (lambda p, x: p.probabilities(x, ten_crop="x"), "ten_crop must be True or False, got 'x'"),  # a KeyError
        (lambda p, x: alexnet.load(p.path, device="gpu"), "device 'gpu' is not a device"),
        (lambda p, x: alexnet.load(p.path, device=None), "device None is not a device"),
        (lambda p, x: alexnet.load(p.path, precision="fp64"), "precision 'fp64' is not one of auto, fp32"),
        (lambda p, x: alexnet.load_weights("model", p.path), "model must be a torch.nn.Module"),  # AttributeError
        (lambda p, x: alexnet.load_weights(create_model("alexnet", num_classes=3), p.path, new_head="yes"),
         "new_head must be True or False, got 'yes'"),  # was taken as True
        (lambda p, x: alexnet.load_weights(create_model("alexnet", num_classes=3), p.path, skip="features."),
         "skip must be a tuple of key prefixes"),  # its letters were prefixes
    ],
)  # fmt: skip
def test_explain_load_and_load_weights_refuse_a_wrong_argument_as_an_argument_error(ckpt, images, call, message):
    """Each was silently replaced, truncated or taken as True, a torch TypeError / KeyError / AttributeError, or a
    plain UserError that ``except ValueError`` missed; now an ArgumentError (also TypeError and ValueError)."""
    p = alexnet.load(ckpt[0], device="cpu")
    p.path = ckpt[0]
    with pytest.raises(alexnet.ArgumentError, match=re.escape(message)) as e:
        call(p, images[1][0])
    assert isinstance(e.value, TypeError) and isinstance(e.value, ValueError)


def test_explain_takes_a_class_index_as_an_int_or_its_digits(ckpt, images):
    p = alexnet.load(ckpt[0], device="cpu")
    path = images[1][0]
    assert [e.target for e in p.explain(path, target=np.int64(1))] == ["dog"]
    assert [e.target for e in p.explain(path, target="2")] == ["fox"]  # as the CLI and serve pass it


def test_topk_over_the_classes_is_refused_and_without_it_every_class_of_a_small_model(ckpt, images, capsys):
    """As serve's ?topk (400): asking for more classes than the model has is refused, naming its count (it was capped
    silently); without topk the top 5, or all classes of a model with fewer, in Python and on the command line."""
    path, _ = ckpt
    _, paths, _, _ = images
    p = alexnet.load(path, device="cpu")
    with pytest.raises(
        alexnet.UserError, match=r"topk must be a whole number from 1 to 3 \(this model has 3 classes\)"
    ):
        p.predict(paths[0], topk=4)
    assert len(p.predict(paths[0])[0]) == len(p.predict(paths[0], topk=None)[0]) == 3
    assert main(["predict", str(path), str(paths[0]), "--topk", "4"]) == 2
    err = capsys.readouterr().err
    assert (
        err == "alexnet predict: error: --topk must be a whole number from 1 to 3 (this model has 3 classes), got 4\n"
    )
    assert main(["predict", str(path), str(paths[0]), "--topk", "0"]) == 2
    assert "--topk must be a whole number from 1 to 3 (this model has 3 classes), got 0" in capsys.readouterr().err
    assert main(["predict", str(path), str(paths[0]), "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["top"]) == 3


def test_repr_says_what_the_model_is_without_its_weights(ckpt):
    p = alexnet.load(ckpt[0], device="cpu")
    for text in (repr(p.info), str(p.info), repr(p)):
        assert len(text) < 300, text[:300]  # the state dict printed whole: 48,713 characters
        assert "'alexnet'" in text and "3 classes" in text and "crop=64" in text and "tensor(" not in text
    assert repr(p.info).startswith("Checkpoint(arch='alexnet', 3 classes ['cat', 'dog', 'fox'], 57,016,131 parameters")
    assert repr(p).startswith("Predictor(arch='alexnet', 3 classes, Preprocess(crop=64")


def test_predictor_takes_typed_metadata_read_from_a_file_or_built(ckpt, images):
    """A ``Predictor`` gets a ``Checkpoint``: its ``preprocess`` is always a validated ``Preprocess`` (read from a
    file's stored dict by ``checkpoint.from_metadata``, or built), never a dict to coerce."""
    from alexnet.checkpoint import Checkpoint, from_metadata
    from alexnet.predict import Predictor
    from alexnet.preprocess import Preprocess

    _, model = ckpt
    _, paths, _, _ = images
    stored = {"resize": 64, "crop": 64, "mean": MEAN, "std": STD}
    a = Predictor(model, from_metadata({"classes": CLASSES, "preprocess": stored}, "m.pt"))
    b = Predictor(model, Checkpoint(model={}, classes=CLASSES, preprocess=Preprocess(crop=64, resize=64, mean=MEAN,
                                                                                     std=STD)))  # fmt: skip
    assert a.preprocess == b.preprocess and a.predict(paths, topk=3) == b.predict(paths, topk=3)
    with pytest.raises(alexnet.UserError, match=r"m\.pt: preprocess has no 'mean'"):
        from_metadata({"classes": CLASSES, "preprocess": {"resize": 64, "crop": 64, "std": STD}}, "m.pt")


# ----------------------------------------------------------------------------------------------------------------
# CLI


def expected_top(ckpt_path, paths, k):
    return alexnet.load(ckpt_path, device="cpu").predict(paths, topk=k)


def test_cli_table_json_csv_with_a_folder_and_a_bad_file(ckpt, images, capsys):
    path, _ = ckpt
    root, paths, _, bad = images
    sub = root / "sub"  # folder: b.png and c.png, recursive and sorted
    inputs = [str(paths[0]), str(bad), str(sub), str(root / "missing.png")]
    order = [paths[0], paths[1], paths[2]]
    top = expected_top(path, order, 2)

    rc = main(["predict", str(path), *inputs, "--topk", "2", "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 1
    lines = []
    for p_, t in zip(order, top):
        lines.append(str(p_))
        lines += [f"  {v * 100:6.2f}%  {c}" for c, v in t]
    assert captured.out == "\n".join(lines) + "\n"
    err = captured.err.strip().splitlines()
    assert len(err) == 2
    assert err[0].startswith("alexnet predict: error: ") and str(bad) in err[0]
    assert "missing.png: no such file or folder" in err[1]

    rc = main(["predict", str(path), *inputs, "--topk", "2", "--format", "json", "--batch-size", "1"])
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert rc == 1 and len(captured.err.strip().splitlines()) == 2  # the error lines stay on stderr too
    # every input is in the output, in order: a failed one with its error (was: left out, on stderr only)
    assert [r["input"] for r in records] == [str(paths[0]), str(bad), str(paths[1]), str(paths[2]),
                                             str(root / "missing.png")]  # fmt: skip
    bad_r, missing_r = records.pop(1), records.pop(-1)
    assert bad_r["time"] is None and "top" not in bad_r and str(bad) in bad_r["error"]
    assert missing_r["error"] == f"{root / 'missing.png'}: no such file or folder"
    assert [(r["input"], r["time"], [x["class"] for x in r["top"]]) for r in records] == [
        (str(p_), None, [c for c, _ in t]) for p_, t in zip(order, top)
    ]
    for r, t in zip(records, top):  # batch 1 against a batch of 3: the matmuls may round the 7th digit apart
        assert [x["probability"] for x in r["top"]] == pytest.approx([v for _, v in t], abs=2e-6)

    rc = main(["predict", str(path), str(paths[0]), str(sub), str(root / "missing.png"), "--topk", "2",
               "--format", "csv"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 1
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["input", "time", "rank", "class", "probability", "error"]
    assert rows[1:-1] == [[str(p_), "", str(r), c, f"{v:.6f}", ""] for p_, t in zip(order, top) for r, (c, v) in
                          enumerate(t, 1)]  # fmt: skip
    assert rows[-1] == [str(root / "missing.png"), "", "", "", "", f"{root / 'missing.png'}: no such file or folder"]


def test_cli_model_mistakes_are_one_line(ckpt, images, tmp_path, capsys):
    _, paths, _, _ = images
    (tmp_path / "m.pt2").write_bytes(b"PK")
    for model, message in [(tmp_path / "m.pt2", "can run code"), (tmp_path / "none.pt", "no such model file")]:
        assert main(["predict", str(model), str(paths[0])]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"alexnet predict: error: {model}: ") and message in err


def test_cli_video_frames_every_seconds(ckpt, tmp_path, capsys):
    cv2 = pytest.importorskip("cv2", reason="video input needs OpenCV: pip install 'alexnet[video]'")
    path, _ = ckpt
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 64))
    rng = np.random.default_rng(1)
    for _ in range(10):  # 10 frames at 5 fps: t = 0.0, 0.2, ..., 1.8 s
        writer.write(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    writer.release()
    rc = main(["predict", str(path), str(video), "--every", "0.4", "--format", "json", "--topk", "1"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rc == 0
    assert [r["time"] for r in records] == pytest.approx([0.0, 0.4, 0.8, 1.2, 1.6])
    assert all(r["input"] == str(video) and r["top"][0]["class"] in CLASSES for r in records)
    rc = main(["predict", str(path), str(video), "--every", "1", "--topk", "1"])
    assert rc == 0
    assert capsys.readouterr().out.splitlines()[::2] == [f"{video} @ 0.00s", f"{video} @ 1.00s"]


# ----------------------------------------------------------------------------------------------------------------
# features


def test_features_match_model_extract_and_round_trip(ckpt, images, tmp_path):
    from safetensors import safe_open

    path, model = ckpt
    _, paths, arrays, _ = images
    p = alexnet.load(path, device="cpu")
    x = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in arrays]).float() / 255
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    for layer, shape in (("fc7", (3, 4096)), ("conv5", (3, 256, 6, 6))):
        feats = p.features(paths, layer=layer, batch_size=2)
        assert feats.shape == shape
        with torch.no_grad():
            torch.testing.assert_close(feats, model.extract(x, layer), atol=1e-5, rtol=1e-5)
    feats = p.features(paths, layer="fc6")
    names = [str(q) for q in paths]
    npy, sidecar = save_features(tmp_path / "f.npy", feats, labels=[0, 2, 1], paths=names, classes=CLASSES,
                                 layer="fc6")  # fmt: skip
    np.testing.assert_array_equal(np.load(npy), feats.numpy())
    info = json.loads(sidecar.read_text())
    assert info["labels"] == [0, 2, 1] and info["paths"] == names and info["classes"] == CLASSES
    (st,) = save_features(tmp_path / "f.safetensors", feats, labels=[0, 2, 1], paths=names, classes=CLASSES,
                          layer="fc6")  # fmt: skip
    with safe_open(str(st), "pt") as f:
        torch.testing.assert_close(f.get_tensor("features"), feats, atol=0, rtol=0)
        assert f.get_tensor("labels").tolist() == [0, 2, 1]
        assert json.loads(f.metadata()["paths"]) == names and f.metadata()["layer"] == "fc6"
    with pytest.raises(alexnet.UserError, match=r"npy or \.safetensors"):
        save_features(tmp_path / "f.txt", feats, labels=[0, 2, 1], paths=names, classes=CLASSES, layer="fc6")


def test_features_cli_on_a_folder_data_set(ckpt, images, tmp_path, capsys):
    path, _ = ckpt
    _, _, arrays, _ = images
    data = tmp_path / "data"
    for cls, a in zip(("b_class", "a_class", "a_class"), arrays):
        (data / "train" / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(data / "train" / cls / f"{len(list((data / 'train' / cls).iterdir()))}.png")
    out = tmp_path / "feats.npy"
    assert main(["features", str(path), str(data), "--layer", "fc7", "--out", str(out), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.endswith(f"fc7 features: (3, 4096) from 3 train images of {data}\n")
    # a plain folder of class folders (here one named val) is named as read; it said "from 3 train images"
    shutil.copytree(data / "train", tmp_path / "val")
    argv = ["features", str(path), str(tmp_path / "val"), "--out", str(tmp_path / "v.npy"), "--device", "cpu"]
    assert main(argv) == 0
    assert capsys.readouterr().out.endswith(f"fc7 features: (3, 4096) from 3 images in {tmp_path / 'val'}\n")
    info = json.loads(out.with_suffix(".json").read_text())
    feats = np.load(out)
    assert feats.shape == (3, 4096)
    assert info["classes"] == ["a_class", "b_class"] and sorted(info["labels"]) == [0, 0, 1]
    # each row is the fc7 vector of the file named at the same position
    direct = alexnet.load(path, device="cpu").features(info["paths"], layer="fc7")
    np.testing.assert_allclose(feats, direct.numpy(), atol=1e-5)
    assert all(info["classes"][lab] in p_ for lab, p_ in zip(info["labels"], info["paths"]))
    assert main(["features", str(path), str(data), "--out", str(tmp_path / "x.txt")]) == 2
    assert "x.txt" in capsys.readouterr().err
    # an unreadable file (it stopped the whole run): skipped and named, rows still aligned, or over the limit a stop
    (data / "train" / "a_class" / "broken.png").write_bytes(b"not a png")
    capsys.readouterr()
    assert main(["features", str(path), str(data), "--out", str(out), "--overwrite", "--device", "cpu"]) == 2
    assert "1 of 4 train images" in capsys.readouterr().err
    assert main(["features", str(path), str(data), "--out", str(out), "--overwrite", "--device", "cpu",
                 "--max-bad-fraction", "0.5"]) == 0  # fmt: skip
    assert "skipped" in capsys.readouterr().err and "broken.png" not in "".join(json.loads(
        out.with_suffix(".json").read_text())["paths"])  # fmt: skip
    np.testing.assert_allclose(np.load(out), feats, atol=1e-5)


def test_features_files_get_the_umasks_mode_as_other_outputs(ckpt, images, tmp_path, capsys):
    """Found by a new-user trial: ``features --out x.safetensors`` made a 0600 file (safetensors writes it so), the
    .npy and every other output 0644 under umask 022."""
    path, _ = ckpt
    data = tmp_path / "data" / "train" / "a_class"
    data.mkdir(parents=True)
    Image.fromarray(images[2][0]).save(data / "0.png")
    mask = os.umask(0o022)
    try:
        for name in ("f.safetensors", "f.npy"):
            assert (
                main(["features", str(path), str(tmp_path / "data"), "--out", str(tmp_path / name), "--device", "cpu"])
                == 0
            )
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
        from alexnet.predict import save_features  # the library's writer too, for Python callers

        for name in ("g.safetensors", "g.npy", "h.NPY", "h.SafeTensors"):  # a suffix in any case
            written = save_features(
                tmp_path / name, torch.ones(1, 2), labels=[0], paths=["x"], classes=["a"], layer="fc7"
            )
            assert all(p.stat().st_mode & 0o777 == 0o644 for p in written), name
        assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # no temporary file left
    finally:
        os.umask(mask)


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_odd_file_names_cannot_crash_or_forge_output(ckpt, tmp_path, fmt):
    import os
    import subprocess
    import sys

    path, _ = ckpt
    root = tmp_path / "odd"
    root.mkdir()
    pixels = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    forged = "x.png\n  99.99%  forged"
    for name in (os.fsdecode(b"latin1-\xe9t\xe9.png"), forged + ".png"):  # not UTF-8; a newline in the name
        Image.fromarray(pixels).save(os.path.join(os.fsencode(root), os.fsencode(name)), format="PNG")
    (root / ("broken\nline.jpg")).write_bytes(b"junk")
    cmd = [sys.executable, "-m", "alexnet", "predict", str(path), str(root), "--format", fmt, "--topk", "2"]
    r = subprocess.run(cmd, capture_output=True, env={**os.environ, "LC_ALL": "C.UTF-8"})
    assert r.returncode == 1  # the broken file, reported on one line
    out, err = r.stdout.decode(), r.stderr.decode()
    assert "forged" in out and "\n  99.99%  forged" not in out
    assert len([line for line in err.splitlines() if "error" in line]) == 1 and "broken\\nline.jpg" in err
    if fmt == "json":
        records = [json.loads(line) for line in out.splitlines()]
        assert len(records) == 3 and ["broken\nline.jpg" in r["input"] for r in records].count(True) == 1
    if fmt == "table":
        assert "latin1-\\xe9t\\xe9.png" in out and len(out.splitlines()) == 2 * 3


def test_a_hostile_dicom_costs_only_its_own_result(ckpt, images, tmp_path):
    """A DICOM whose transfer syntax UID is not one raised a ValueError that ended the whole batch's predictions."""
    pytest.importorskip("pydicom")
    from .test_medical import bad_syntax

    bad = str(bad_syntax(tmp_path / "ts.dcm"))
    p = alexnet.load(ckpt[0], device="cpu")
    paths = images[1]
    out = list(p.iter_predict([paths[0], bad, paths[1]], topk=2, batch_size=4))
    assert out[0][1] is not None and out[2][1] is not None and out[1][1] is None
    assert "ts.dcm: unknown transfer syntax UID" in str(out[1][2])


def test_predict_folder_says_which_files_it_left_out(ckpt, tmp_path, capsys):
    """``predict FOLDER`` skipped .heic photos without a word; now one line per folder on stderr, results unchanged."""
    path, _ = ckpt
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    (tmp_path / "IMG_1.heic").write_bytes(b"ftypheic")
    (tmp_path / "IMG_2.heic").write_bytes(b"ftypheic")
    (tmp_path / "scan.jp2").write_bytes(b"\0")
    (tmp_path / "desktop.ini").write_text("")  # Windows' own: not counted
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git/HEAD").write_text("ref")  # in a hidden folder: not counted
    assert main(["predict", str(path), str(tmp_path), "--device", "cpu", "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert [json.loads(line)["input"] for line in captured.out.splitlines()] == [str(tmp_path / "a.png")]
    assert captured.err.splitlines() == [
        f"alexnet predict: warning: {tmp_path}: left out 3 of 4 files, not image file names: .heic (2), .jp2 (1), "
        f"e.g. {tmp_path}/IMG_1.heic, {tmp_path}/scan.jp2; convert photos (.heic, .jp2, .jfif) to .jpg or .png to use "
        "them"
    ]


def test_evaluate_says_which_files_of_its_split_it_left_out(ckpt, tmp_path, capsys):
    # as train and predict say it: a .heic photo in the val folder is not scored, and evaluate says so
    path, _ = ckpt
    for name in CLASSES:
        (tmp_path / "val" / name).mkdir(parents=True)
        Image.new("RGB", (64, 64)).save(tmp_path / "val" / name / "a.png")
    (tmp_path / "val" / "cat" / "IMG_1.heic").write_bytes(b"ftypheic")
    out = tmp_path / "r.json"
    assert main(["evaluate", str(path), str(tmp_path / "val"), "--out", str(out), "--device", "cpu"]) == 0
    assert f"warning: {tmp_path}/val: left out 1 of 4 files, not image file names: .heic (1)" in capsys.readouterr().err
    assert json.loads(out.read_text())["warnings"][0].startswith(f"{tmp_path}/val: left out 1 of 4 files")
