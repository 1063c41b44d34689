"""--pretrained torchvision|PATH: torchvision's file where torchvision keeps it (never downloaded), one line when it is
absent, a line saying what was loaded, and the settings fine-tuning chooses, each with its reason."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from alexnet.checkpoint import load as load_checkpoint
from alexnet.cli import main
from alexnet.data.synthetic import make_synthetic

FLAGS = ["--device", "cpu", "--precision", "fp32", "--channels-last", "off", "--in-memory", "off", "--workers", "0",
         "--batch-size", "6", "--max-steps-per-epoch", "1", "--epochs", "1", "--log-every", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    """A stand-in for torchvision's ImageNet file: torchvision.models.alexnet(weights=None)'s tensors, saved where
    torch.hub keeps it under a temporary TORCH_HOME."""
    torchvision = pytest.importorskip("torchvision")
    home = tmp_path_factory.mktemp("torch-home")
    path = home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    src = make_synthetic(tmp_path_factory.mktemp("synth"), classes=3, per_class=8, val_per_class=2, size=64)
    return str(src)


def test_torchvision_is_looked_for_where_torchvision_keeps_it_and_never_downloaded(tmp_path, monkeypatch, capsys):
    from alexnet.training.finetune import torchvision_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert torchvision_path() == tmp_path / "th" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert main(["train", "--pretrained", "torchvision", "--out", str(tmp_path / "run"), *FLAGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"no {torchvision_path()}; put torchvision's AlexNet weights there" in err[0], err
    assert "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in err[0]
    assert not (tmp_path / "run").exists() and not (tmp_path / "th").exists()  # nothing written, nothing fetched


def test_a_pretrained_file_that_is_not_weights_is_refused_before_the_data_is_opened(
    photos, tmp_path, monkeypatch, capsys
):
    import alexnet.training.setup as setup

    photo = next(Path(photos).rglob("*.png"), None) or next(Path(photos).rglob("*.jpg"))
    monkeypatch.setattr(setup, "_data", lambda *a, **k: pytest.fail("the data was opened (minutes on a large set)"))
    assert main(["train", photos, "--pretrained", str(photo), "--out", str(tmp_path / "run"), *FLAGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"alexnet train: error: {photo}: not a PyTorch weights file"), err


def test_pretrained_torchvision_loads_the_body_under_a_new_head_with_fine_tuning_settings(
    torchvision_file, photos, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("TORCH_HOME", str(torchvision_file.parents[2]))
    run = tmp_path / "run"
    assert main(["train", photos, "--pretrained", "torchvision", "--out", str(run), *FLAGS]) == 0
    out = capsys.readouterr().out
    assert f"loaded 14 tensors from {torchvision_file}; new head: 3 classes" in out
    line = next(s for s in out.splitlines() if s.startswith("fine-tuning from torchvision: "))
    assert "image size 224 px (the weights were trained at 224)" in line
    assert "lr 0.000433 for the body (a tenth of 0.00433 from scratch" in line  # batch 6: 0.01 x sqrt(6/32)
    assert "head lr 0.00433 (x10, --head-lr-mult" in line
    assert "warm-up 0.5 epochs" in line and "the random head's first gradients" in line
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["image_size"], cfg["lr"], cfg["head_lr_mult"], cfg["init_weights"]) == (224, 0.000433, 10.0,
                                                                                          "torchvision")  # fmt: skip
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt.preprocess.crop == 224 and ckpt.classes == ["circle", "ring", "square"]
    assert ckpt.model["classifier.6.weight"].shape == (3, 4096)


def test_flags_override_the_fine_tuning_choices_and_a_path_works_as_well(torchvision_file, photos, tmp_path, capsys):
    copy = tmp_path / "weights.pth"
    shutil.copy(torchvision_file, copy)
    run = tmp_path / "run"
    flags = ["--image-size", "64", "--lr", "0.002", "--head-lr-mult", "1", "--freeze", "features"]
    assert main(["train", photos, "--pretrained", str(copy), "--out", str(run), *flags, *FLAGS]) == 0
    out = capsys.readouterr().out
    assert f"loaded 14 tensors from {copy}; new head: 3 classes" in out
    line = next(s for s in out.splitlines() if s.startswith("fine-tuning from "))
    assert "image size" not in line and "lr 0.002" not in line and "head lr" not in line
    assert "--freeze features: those layers stay as loaded" in line
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["image_size"], cfg["lr"], cfg["head_lr_mult"]) == (64, 0.002, 1.0)
    before = torch.load(copy, weights_only=True)["features.0.weight"]
    assert torch.equal(load_checkpoint(run / "checkpoints" / "last.pt").model["features.0.weight"], before)


def test_init_weights_and_finetune_from_still_work_as_aliases(tmp_path):
    from alexnet.cli.train import config_from_args
    from tests.test_config import _train_parser

    for flag in ("--pretrained", "--init-weights", "--finetune-from"):
        cfg = config_from_args(_train_parser().parse_args(["d", flag, "w.pth"]))
        assert cfg.init_weights == "w.pth"
    assert Path("w.pth").exists() is False
