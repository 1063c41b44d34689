"""One front door for data: every command takes folders, one class folder and packs, and matches classes by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
import torchvision.transforms.v2.functional as TF2

from alexnet.bench import BenchConfig, _prepare_data
from alexnet.checkpoint import save_payload
from alexnet.cli import main
from alexnet.data.pack import pack_dataset, read_manifest
from alexnet.data.sources import open_dataset
from alexnet.data.synthetic import make_synthetic
from alexnet.errors import UserError
from alexnet.evaluate import evaluate_file
from alexnet.model import create_model
from alexnet.preprocess import IMAGENET, Preprocess

CLASSES = ["circle", "ring", "square"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fd") / "data"
    return make_synthetic(root, classes=3, per_class=6, val_per_class=4, size=64, seed=1)


@pytest.fixture(scope="module")
def pack(data: Path) -> Path:
    out = data.parent / "pack"
    pack_dataset(data, out, size=72, workers=0, progress=False)
    return out


def checkpoint(path: Path, *, classes=CLASSES, order=None, config=None) -> Path:
    """A 3-class AlexNet with fixed random weights; ``order`` permutes its outputs (and their names) consistently."""
    torch.manual_seed(0)
    model = create_model("alexnet", num_classes=3, init="kaiming", dropout=0.0)
    sd = model.state_dict()
    names = list(classes)
    if order is not None:
        sd["classifier.6.weight"], sd["classifier.6.bias"] = (
            sd["classifier.6.weight"][order],
            sd["classifier.6.bias"][order],
        )
        names = [names[i] for i in order]
    pre = Preprocess(crop=64, resize=72, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    payload = {"arch": "alexnet", "num_classes": 3, "model_kwargs": {"dropout": 0.0}, "model": sd, "classes": names,
               "preprocess": pre.to_dict(), "config": config or {}}  # fmt: skip
    return save_payload(payload, path)


# ---------------------------------------------------------------------------------------------------------------------
# open_dataset


def test_every_kind_has_one_split_interface(data, pack):
    folders, one, packed = open_dataset(data), open_dataset(data / "val"), open_dataset(pack)
    assert (folders.kind, one.kind, packed.kind) == ("folders", "folder", "pack")
    assert folders.classes == one.classes == packed.classes == CLASSES
    assert set(folders.splits) == set(packed.splits) == {"train", "val"}
    # one folder is keyed train whatever its name: one called val/ was its own val split (train refused it, data
    # check found every file a duplicate of itself); training holds a val split out of it
    assert list(one.splits) == ["train"] and one.val is None
    assert one.split("val") is one.split("train")  # a single class folder serves as any split
    for split in (folders.val, one.split("val"), packed.val):
        assert len(split) == 12 and list(split.labels) == [0] * 4 + [1] * 4 + [2] * 4
        img = split.load(5)
        assert img.dtype == torch.uint8 and img.shape[0] == 3 and split.describe(5)
    # the pack's image i is the folder's image i resized as the pack says (shorter side 72, centre square)
    expect = TF2.resize(folders.val.load(5), [72], antialias=True)
    assert torch.equal(packed.val.load(5), expect)
    assert packed.stats is not None and packed.image_size == 72 and packed.resize_mode == "shorter"
    train_only = data.parent / "train-only"
    shutil.copytree(data / "train", train_only / "train")
    with pytest.raises(UserError, match="has no val split"):
        open_dataset(train_only).split("val")


# ---------------------------------------------------------------------------------------------------------------------
# evaluate


def test_evaluate_folders_one_folder_and_pack_agree(data, pack, tmp_path):
    ck = checkpoint(tmp_path / "ck.pt")
    by_root = evaluate_file(str(ck), str(data), device="cpu")
    by_folder = evaluate_file(str(ck), str(data / "val"), device="cpu")
    by_pack = evaluate_file(str(ck), str(pack), device="cpu")
    for r in (by_folder, by_pack):
        assert r["count"] == by_root["count"] == 12
        assert r["top1"] == by_root["top1"] and r["confusion"] == by_root["confusion"]
        assert r["loss"] == pytest.approx(by_root["loss"], abs=1e-5)


def test_evaluate_matches_classes_by_name_not_position(data, tmp_path):
    plain = evaluate_file(str(checkpoint(tmp_path / "a.pt")), str(data), device="cpu")
    permuted = evaluate_file(str(checkpoint(tmp_path / "b.pt", order=[2, 0, 1])), str(data), device="cpu")
    assert permuted["classes"] == ["square", "circle", "ring"]
    assert permuted["top1"] == plain["top1"] and permuted["loss"] == pytest.approx(plain["loss"], abs=1e-5)
    assert permuted["per_class"] == pytest.approx(plain["per_class"])  # same numbers under the same names


def test_renamed_class_folder_is_an_error_or_a_loud_warning(data, tmp_path, capsys):
    val = tmp_path / "val"
    shutil.copytree(data / "val", val)
    (val / "ring").rename(val / "donut")
    ck = checkpoint(tmp_path / "ck.pt")
    with pytest.raises(UserError, match=r"'donut'.*'ring'"):
        evaluate_file(str(ck), str(val), device="cpu")
    assert main(["evaluate", str(ck), str(val), "--device", "cpu"]) == 2
    assert "donut" in capsys.readouterr().err
    report = evaluate_file(str(ck), str(val), device="cpu", allow_class_mismatch=True)
    assert report["warnings"] and "donut" in report["warnings"][0]
    assert list(report["per_class"]) == CLASSES  # the model's names, scored by position
    plain = evaluate_file(str(ck), str(data / "val"), device="cpu")
    assert report["top1"] == plain["top1"]


# ---------------------------------------------------------------------------------------------------------------------
# every command on a pack


def test_commands_on_a_pack(data, pack, tmp_path, capsys):
    run = tmp_path / "run"
    checkpoint(run / "checkpoints" / "best.pt", config={"data": str(pack)})
    ck = str(run / "checkpoints" / "best.pt")
    assert main(["evaluate", ck, "--device", "cpu", "--out", str(tmp_path / "e.json")]) == 0  # data from the run
    assert json.loads((tmp_path / "e.json").read_text())["count"] == 12
    assert main(["features", ck, str(pack), "--split", "val", "--layer", "fc6", "--out", str(tmp_path / "f.npy")]) == 0
    assert np.load(tmp_path / "f.npy").shape == (12, 4096)
    assert main(["data", "stats", str(pack)]) == 0
    assert main(["data", "check", str(pack)]) == 0
    assert "would train" in capsys.readouterr().out
    pytest.importorskip("matplotlib")
    assert main(["plot", str(run), "--device", "cpu"]) == 0
    assert (run / "plots" / "neighbours.png").is_file() and (run / "plots" / "predictions.png").is_file()


def test_data_check_finds_a_corrupt_pack(pack, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(pack, bad)
    with open(bad / "val" / "images.u8", "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert main(["data", "check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "checksum mismatch" in out and "NOT OK" in out


# ---------------------------------------------------------------------------------------------------------------------
# bench and preprocessing


def test_bench_packs_a_bounded_sample_and_validates(data, tmp_path, capsys):
    said = []
    cfg = BenchConfig(data=str(data), image_size=64, max_images=7, workers=0)
    folder, pack = _prepare_data(cfg, tmp_path, said.append)
    assert folder == str(data) and read_manifest(pack)["splits"]["train"]["count"] == 7
    assert said and "7 of the 18" in said[0]
    with pytest.raises(UserError, match="--image-size 32"):
        BenchConfig(image_size=32).validate()
    assert main(["bench", "--image-size", "32"]) == 2
    assert "--image-size 32" in capsys.readouterr().err


def test_preprocess_round_trip_and_every_bad_field_named():
    pre = Preprocess(crop=64, resize=80, mean=(0.1, 0.2, 0.3), std=(0.3, 0.2, 0.1), resize_mode="squash")
    assert Preprocess.from_dict(pre.to_dict()) == pre
    assert (
        Preprocess.from_dict({k: v for k, v in IMAGENET.to_dict().items() if k in ("crop", "resize", "mean", "std")})
        == IMAGENET
    )
    good = IMAGENET.to_dict()
    cases = {
        "crop": [("a", "crop"), (100000, "crop"), (32, "crop"), (True, "crop")],
        "resize": [(100, "resize"), (5000, "resize")],
        "mean": [([0.5, 0.5], "mean"), ("abc", "mean"), ([float("nan")] * 3, "mean")],
        "std": [([0.0, 1.0, 1.0], "std"), ([1.0, -1.0, 1.0], "std")],
        "resize_mode": [("fill", "resize_mode")],
    }
    for key, values in cases.items():
        for value, field in values:
            with pytest.raises(UserError, match=rf"x\.json: .*{field}"):
                Preprocess.from_dict({**good, key: value}, source="x.json")
    for broken in ([], "crop", {k: v for k, v in good.items() if k != "mean"}, {**good, "extra": 1}):
        with pytest.raises(UserError, match=r"x\.json"):
            Preprocess.from_dict(broken, source="x.json")


def test_squash_mode_resizes_both_sides():
    img = torch.randint(0, 256, (3, 50, 120), dtype=torch.uint8)
    pre = Preprocess(crop=64, resize=72, resize_mode="squash")
    expect = TF.center_crop(TF2.resize(img, [72, 72], antialias=True), [64, 64])
    assert torch.equal(pre.transform()(img), expect)
    shorter = Preprocess(crop=64, resize=72).transform()(img)
    assert not torch.equal(shorter, expect)
