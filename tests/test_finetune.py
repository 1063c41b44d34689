"""Fine-tuning: start from a trained model, new head for a new class set, optional freezing, head lr multiplier."""

import json
import shutil

import pytest
import torch

from alexnet.checkpoint import load as load_checkpoint
from alexnet.data.synthetic import CLASSES, make_synthetic
from alexnet.errors import WeightsError
from alexnet.training import train
from alexnet.training.step import build_model
from alexnet.weights import read_state_dict

from .test_train import tiny_config


def _subset(src, dst, names):
    for split in ("train", "val"):
        for name in names:
            shutil.copytree(src / split / name, dst / split / name)
    return dst


@pytest.fixture(scope="module")
def class_sets(tmp_path_factory):
    """Two disjoint class sets: shapes 0-4 (plenty of images) to pretrain, 5-9 (12 images each) to fine-tune on."""
    root = tmp_path_factory.mktemp("ft")
    many = make_synthetic(root / "many", classes=5, per_class=100, val_per_class=10, size=64)
    few = make_synthetic(root / "few", classes=10, per_class=12, val_per_class=20, size=64, seed=1)
    return str(many), str(_subset(few, root / "new", CLASSES[5:]))


def _epoch_top1(run):
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [e["val_top1"] for e in lines if e["kind"] == "epoch"]


def test_finetuning_reaches_the_target_in_fewer_steps_than_scratch(class_sets, tmp_path, final_checkpoint_only):
    """The usual reason to fine-tune: few images of the new classes. Same steps, same data, same seed."""
    old, new = class_sets
    common = dict(max_steps_per_epoch=None, dropout=0.0, lr=0.01, warmup_epochs=0.5, log_every=50)
    pre = train(tiny_config(old, tmp_path / "pre", epochs=6, batch_size=16, **common))
    assert _epoch_top1(pre)[-1] > 0.4  # it learned something worth transferring
    start = str(pre / "checkpoints" / "last.pt")
    runs = {
        "tuned": dict(init_weights=start, freeze="features", head_lr_mult=1.0),
        "scratch": {},
    }
    acc = {}
    for name, extra in runs.items():
        run = train(tiny_config(new, tmp_path / name, epochs=8, batch_size=12, **common, **extra))
        acc[name] = _epoch_top1(run)
    target = 0.4  # twice chance on five classes
    first = {k: next((i + 1 for i, a in enumerate(v) if a >= target), None) for k, v in acc.items()}
    assert first["tuned"] is not None, acc
    assert first["scratch"] is None or first["tuned"] < first["scratch"], acc
    ckpt = load_checkpoint(tmp_path / "tuned" / "checkpoints" / "last.pt")
    assert ckpt.init_from == start
    assert ckpt.classes == sorted(CLASSES[5:])  # folder classes are sorted by name


def test_new_head_frozen_layers_and_head_lr(tmp_path):
    source = build_model(tiny_config(None, tmp_path, arch="alexnet"), num_classes=7)
    torch.save(source.state_dict(), tmp_path / "tv.pth")  # a torchvision-format file with 7 classes
    cfg = tiny_config(None, tmp_path, init_weights=str(tmp_path / "tv.pth"), freeze="features", head_lr_mult=10.0)
    model = build_model(cfg, num_classes=3)
    assert model.classifier[6].out_features == 3
    sd = read_state_dict(tmp_path / "tv.pth")
    assert torch.equal(model.features[0].weight, sd["features.0.weight"])  # body kept
    assert torch.equal(model.classifier[4].weight, sd["classifier.4.weight"])
    assert not any(p.requires_grad for p in model.features.parameters())
    assert all(p.requires_grad for p in model.classifier.parameters())
    only_head = build_model(
        tiny_config(None, tmp_path, init_weights=str(tmp_path / "tv.pth"), freeze="all-but-head"), 3
    )
    assert [n for n, p in only_head.named_parameters() if p.requires_grad] == [
        "classifier.6.weight",
        "classifier.6.bias",
    ]
    from alexnet.training.step import build_optimizer

    opt = build_optimizer(cfg, model, torch.device("cpu"))
    assert [g["lr_mult"] for g in opt.param_groups] == [1.0, 10.0]
    with pytest.raises(WeightsError, match="mis-shaped"):
        build_model(tiny_config(None, tmp_path, arch="alexnet2012", init_weights=str(tmp_path / "tv.pth")), 3)
