"""Printed lines say "1 epoch", not "1 epochs"."""

import torch

from alexnet.device import describe
from alexnet.evaluate import format_report
from alexnet.text import plural


def test_plural():
    assert plural(1, "epoch") == "1 epoch" and plural(2, "epoch") == "2 epochs" and plural(0, "image") == "0 images"
    assert plural(0.5, "epoch") == "0.5 epochs" and plural(1.0, "epoch") == "1 epoch"
    assert plural(1, "batch", "batches") == "1 batch" and plural(1200, "batch", "batches") == "1,200 batches"


def test_printed_lines_use_it(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert describe(torch.device("cpu"), torch.float32).startswith("device: cpu (1 thread),")
    report = {"count": 2, "loss": 0.1, "top1": 0.5, "top5": 1.0, "macro": {"precision": 0.5, "recall": 0.5, "f1": 0.5}}
    report.update({k: {"a": 0.5, "b": 0.5} for k in ("precision", "recall", "f1")}, support={"a": 1, "b": 1})
    assert "the 1 class of 2 with the lowest F1" in format_report(report, max_classes=1)
