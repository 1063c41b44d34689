"""Metrics and schedules against hand computation."""

import math

import pytest
import torch

from alexnet.config import RECIPES, TrainConfig, resolve_config
from alexnet.errors import UserError
from alexnet.evaluate import (
    confusion_matrix,
    evaluate,
    format_report,
    precision_recall_f1,
    report_csv,
    ten_crop_probs,
    topk_correct,
)
from alexnet.training.schedule import Plateau, lr_factor


def test_topk_by_hand():
    logits = torch.tensor(
        [
            [0.1, 0.9, 0.0, 0.0, 0.0, 0.0, 0.5],  # label 1: top-1 hit
            [0.9, 0.1, 0.8, 0.7, 0.6, 0.5, 0.0],  # label 1: rank 6 -> miss at top-5
            [0.9, 0.1, 0.8, 0.7, 0.6, 0.5, 0.0],  # label 4: rank 4 -> top-5 hit, top-1 miss
            [0.2, 0.3, 0.4, 1.0, 0.1, 0.0, -1.0],  # label 0: rank 4 -> top-5 hit
        ]
    )
    labels = torch.tensor([1, 1, 4, 0])
    assert topk_correct(logits, labels, (1, 5)).tolist() == [1, 3]
    # fewer classes than k: top-5 of 3 classes is always a hit
    assert topk_correct(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), (1, 5))[1].item() == 4


def test_confusion_by_hand():
    preds = torch.tensor([0, 1, 1, 2, 2, 2])
    labels = torch.tensor([0, 1, 2, 2, 2, 0])
    assert confusion_matrix(preds, labels, 3).tolist() == [[1, 0, 1], [0, 1, 0], [0, 1, 2]]


def test_ten_crop_averages_softmax_not_logits():
    logits = torch.zeros(1, 10, 2)
    logits[0, 0] = torch.tensor([10.0, 0.0])  # one very confident view for class 0
    logits[0, 1:] = torch.tensor([0.0, 1.0])  # nine mildly confident views for class 1
    probs = ten_crop_probs(logits)
    p0_one = math.exp(10) / (math.exp(10) + 1)
    p0_rest = 1 / (1 + math.e)
    assert probs[0, 0].item() == pytest.approx((p0_one + 9 * p0_rest) / 10, rel=1e-6)
    assert probs.argmax().item() == 1  # the nine agreeing views win ...
    assert logits.mean(dim=1).argmax().item() == 0  # ... while averaging logits would follow the one loud view


class _Fixed(torch.nn.Module):
    """A 'model' returning preset logits for each input id (x[:, 0, 0, 0])."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def forward(self, x):
        return self.table[x[:, 0, 0, 0].long()]


def test_evaluate_report_by_hand():
    table = torch.tensor([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 2.0, 1.0], [1.0, 0.0, 2.0]])
    x = torch.arange(4).float().view(4, 1, 1, 1).expand(4, 3, 1, 1)
    y = torch.tensor([0, 1, 2, 2])
    report = evaluate(_Fixed(table), [(x[:2], y[:2]), (x[2:], y[2:])], num_classes=3, classes=["a", "b", "c"])
    assert report["count"] == 4
    assert report["top1"] == pytest.approx(3 / 4)  # samples 0, 1, 3 right
    assert report["top5"] == 1.0
    assert report["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert report["per_class"] == {"a": 1.0, "b": 1.0, "c": 0.5}
    expected = torch.nn.functional.cross_entropy(table, y).item()
    assert report["loss"] == pytest.approx(expected, rel=1e-6)
    # by hand from the confusion matrix: b is predicted twice (once right), c is found once of twice
    assert report["precision"] == pytest.approx({"a": 1.0, "b": 0.5, "c": 1.0})
    assert report["recall"] == pytest.approx({"a": 1.0, "b": 1.0, "c": 0.5})
    assert report["f1"] == pytest.approx({"a": 1.0, "b": 2 / 3, "c": 2 / 3})  # 2PR / (P + R)
    assert report["support"] == {"a": 1, "b": 1, "c": 2}
    assert report["macro"] == pytest.approx({"precision": 5 / 6, "recall": 5 / 6, "f1": 7 / 9})
    text = format_report(report)
    assert "macro precision: 83.33%  recall: 83.33%  F1: 77.78%" in text
    assert "top-1: 75.00%" in text and "top-5" not in text  # 3 classes: top-5 is always 100% (it was shown)
    six = {k: {str(i): 1 for i in range(6)} for k in ("precision", "recall", "f1", "support")}
    assert "top-1: 75.00%  top-5: 100.00%" in format_report({**report, **six})  # 6 classes: shown
    assert text.splitlines()[-1].split() == ["a", "100.0%", "100.0%", "100.0%", "1"]  # lowest F1 first, a last


def test_evaluate_out_csv_is_the_per_class_table(tmp_path, capsys):
    """Found by a new-user trial: ``evaluate --out x.csv`` wrote JSON into it; .csv is the per-class table, another
    suffix is refused in one line before the model is read."""
    import csv

    from alexnet.cli import main

    report = {"classes": ["a", "b"], "support": {"a": 3, "b": 1}, "confusion": [[2, 1], [0, 1]],
              "per_class": {"a": 2 / 3, "b": 1.0}, "precision": {"a": 1.0, "b": 0.5},
              "recall": {"a": 2 / 3, "b": 1.0}, "f1": {"a": 0.8, "b": 2 / 3}}  # fmt: skip
    rows = list(csv.DictReader(report_csv(report).splitlines()))
    assert rows[0] == {"class": "a", "images": "3", "correct": "2", "accuracy": str(2 / 3), "precision": "1.0",
                       "recall": str(2 / 3), "f1": "0.8"}  # fmt: skip
    assert [r["class"] for r in rows] == ["a", "b"] and rows[1]["precision"] == "0.5"
    for name in ("x.txt", "x"):
        assert main(["evaluate", "missing.pt", "--out", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"alexnet evaluate: error: --out {tmp_path / name}: give a .json (the full report) or .csv "
                       "(the per-class table) file name"]  # fmt: skip


def test_precision_recall_f1_conventions():
    # class 2 never occurs and is never predicted: 0 everywhere, and left out of the macro means (as sklearn does);
    # class 1 is never predicted: precision 0 (nothing to count), recall 0, F1 0
    conf = torch.tensor([[3, 0, 0], [2, 0, 0], [0, 0, 0]])
    m = precision_recall_f1(conf)
    assert m["precision"] == pytest.approx([3 / 5, 0.0, 0.0])
    assert m["recall"] == pytest.approx([1.0, 0.0, 0.0])
    assert m["f1"] == pytest.approx([2 * 0.6 / 1.6, 0.0, 0.0])
    assert m["macro"] == pytest.approx({"precision": 0.3, "recall": 0.5, "f1": 0.6 / 1.6})


def test_evaluate_ten_crop_path():
    table = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    x = torch.zeros(1, 10, 3, 1, 1)
    x[0, 0] = 0  # view 0 -> row 0
    x[0, 1:] = 1  # views 1..9 -> row 1
    report = evaluate(_Fixed(table), [(x, torch.tensor([0]))], num_classes=2)
    p = ten_crop_probs(table[torch.tensor([0] + [1] * 9)].view(1, 10, 2))
    assert report["top1"] == float(p.argmax().item() == 0)
    assert report["loss"] == pytest.approx(-math.log(p[0, 0].item()), rel=1e-6)


def test_evaluate_flip_averages_each_image_with_its_mirror():
    """``flip=True``: the softmax of the image and of its mirror, averaged (the model reads the top-left pixel, so the
    mirror is the image's top-right pixel's row of the table)."""
    table = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).view(2, 1, 1, 2).expand(2, 3, 1, 2)  # top-left 0 | 1, top-right 1 | 0
    y = torch.tensor([0, 1])
    p = ten_crop_probs(table[torch.tensor([[0, 1], [1, 0]])])  # (2 images, 2 views, 2 classes)
    report = evaluate(_Fixed(table), [(x, y)], num_classes=2, flip=True)
    assert report["top1"] == 0.5  # both images average the same two rows: class 1 wins for both
    assert report["loss"] == pytest.approx(-(p[0, 0].log() + p[1, 1].log()).item() / 2, rel=1e-6)
    alone = evaluate(_Fixed(table), [(x, y)], num_classes=2)
    assert alone["top1"] == 1.0  # without the mirror: row 0, then row 1
    # the same pass reports the image alone (the epoch's record under a fold of the final report into it)
    centre = -(table[0].log_softmax(0)[0] + table[1].log_softmax(0)[1]).item() / 2  # by hand
    assert report["centre"] == {"loss": pytest.approx(centre, rel=1e-6), "top1": 1.0, "top5": 1.0}
    assert alone["loss"] == pytest.approx(centre, rel=1e-6) and "centre" not in alone


def test_cosine_with_warmup():
    cfg = TrainConfig(schedule="cosine", warmup_epochs=1, epochs=10)
    assert lr_factor(cfg, 0, 100) == pytest.approx(0.01)
    assert lr_factor(cfg, 50, 100) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(cfg, 100, 100) == pytest.approx(1.0)
    assert lr_factor(cfg, 550, 100) == pytest.approx(0.5)  # halfway through the 900 post-warm-up steps
    assert lr_factor(cfg, 1000, 100) == pytest.approx(0.0, abs=1e-12)


def test_step_schedule_matches_torchvision_recipe():
    cfg = resolve_config("torchvision")
    assert (cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.step_epochs) == (0.01, 1e-4, 256, 30)
    assert lr_factor(cfg, 29 * 10 + 9, 10) == 1.0
    assert lr_factor(cfg, 30 * 10, 10) == pytest.approx(0.1)
    assert lr_factor(cfg, 60 * 10, 10) == pytest.approx(0.01)


def test_plateau_divides_by_ten_at_most_three_times():
    cfg = resolve_config("paper")
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size) == (0.01, 0.9, 5e-4, 128)
    p = Plateau(patience=2, max_decays=3)
    for acc in [0.1, 0.2, 0.2, 0.2]:  # two epochs without improvement -> one decay
        p.update(acc)
    assert p.decays == 1 and lr_factor(cfg, 0, 1, p.decays) == pytest.approx(0.1)
    for _ in range(20):
        p.update(0.1)
    assert p.decays == 3


def test_config_precedence_and_errors():
    cfg = resolve_config("fast", file_values={"epochs": 3, "lr": 0.5}, flags={"lr": 0.1, "batch_size": None})
    fast = TrainConfig(**RECIPES["fast"])  # the recipe: its differences from the defaults, applied
    assert cfg.epochs == 3 and cfg.lr == 0.1 and cfg.batch_size == fast.batch_size  # a None flag is "not given"
    with pytest.raises(UserError, match="unknown recipe"):
        resolve_config("adam")
    with pytest.raises(UserError, match="epochz"):
        resolve_config("fast", file_values={"epochz": 3})
