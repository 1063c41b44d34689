"""Imbalanced classes: the ratio data check reports, and the class weights train --balance puts in the loss."""

import json

import pytest
import torch

import alexnet.training.loop
from alexnet.cli import main
from alexnet.config import resolve_config
from alexnet.data.pack import pack_dataset
from alexnet.data.synthetic import make_synthetic
from alexnet.imbalance import balanced_weights, class_counts, imbalance_ratio
from alexnet.training import train


@pytest.fixture(scope="module")
def lopsided(tmp_path_factory):
    """3 classes of 64 px: 12, 12 and 3 training images (4x), 4 val images each."""
    root = make_synthetic(tmp_path_factory.mktemp("lop"), classes=3, per_class=12, val_per_class=4, size=64,
                          show_progress=False)  # fmt: skip
    small = sorted((root / "train").iterdir())[2]
    for f in sorted(small.iterdir())[3:]:
        f.unlink()
    return root


def test_weights_by_hand():
    assert class_counts([0, 2, 2, 1, 2], 4) == [1, 1, 3, 0]
    # N / (C * n_c) over the C = 3 classes with images: 5 / (3 * [1, 1, 3]); the empty class weighs 0
    assert balanced_weights([1, 1, 3, 0]).tolist() == pytest.approx([5 / 3, 5 / 3, 5 / 9, 0.0])
    assert balanced_weights([7, 7]).tolist() == [1.0, 1.0]  # balanced data: the plain loss
    w = balanced_weights([12, 12, 3])
    assert (w[torch.tensor([0] * 12 + [1] * 12 + [2] * 3)].mean()).item() == pytest.approx(1.0)  # the loss's scale
    assert imbalance_ratio([12, 0, 3]) == 4.0 and imbalance_ratio([5, 0]) is None


def test_data_check_reports_the_imbalance(lopsided, tmp_path, capsys):
    assert main(["data", "check", str(lopsided), "--json", str(tmp_path / "r.json")]) == 0  # it still trains
    out = capsys.readouterr().out
    assert "per class min/max: 3/12 (largest/smallest class: 4.0x)" in out
    assert "warning: train: class imbalance 4.0x (3 to 12 images per class, over 3x); train --balance" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["splits"]["train"]["imbalance"] == 4.0 and report["splits"]["val"]["imbalance"] == 1.0
    assert not any(w.startswith("val:") for w in report["warnings"])  # val is balanced: no warning
    pack_dataset(str(lopsided), str(tmp_path / "pack"), size=72, workers=1, progress=False)  # packs say the same
    assert main(["data", "check", str(tmp_path / "pack")]) == 0
    assert "train: class imbalance 4.0x" in capsys.readouterr().out


@pytest.mark.parametrize("balance", [False, True])
def test_train_balance_weights_the_loss(lopsided, tmp_path, monkeypatch, capsys, balance):
    seen = []
    real = alexnet.training.loop.train_step

    def step(model, x, y, criterion, *args, **kw):
        seen.append(criterion.weight)
        return real(model, x, y, criterion, *args, **kw)

    monkeypatch.setattr(alexnet.training.loop, "train_step", step)
    cfg = resolve_config("fast", flags=dict(data=str(lopsided), out=str(tmp_path / "run"), epochs=1, batch_size=6,
                                            image_size=64, workers=0, max_steps_per_epoch=1, device="cpu",
                                            precision="fp32", channels_last=False, in_memory=False,
                                            balance=balance))  # fmt: skip
    train(cfg)
    if balance:
        assert seen[0].tolist() == pytest.approx([27 / 36, 27 / 36, 27 / 9])  # 27 images / (3 classes x 12, 12, 3)
        assert "balance: loss weight per class" in capsys.readouterr().out
    else:
        assert seen[0] is None
