"""`alexnet bench` runs end to end on a tiny setting (its numbers are printed, not asserted)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from alexnet.bench import format_results, peak_flops
from alexnet.cli import main
from alexnet.model import create_model
from alexnet.summary import layer_table


def test_bench_runs_and_writes_table_and_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    argv = ["bench", "--device", "cpu", "--precision", "fp32", "--image-size", "64", "--batch-size", "8"]
    argv += ["--steps", "2", "--repeats", "2", "--warmup", "1", "--workers", "0", "--synthetic-images", "40"]
    argv += ["--min-time", "0.05"]  # the loaders' 2-batch windows are shorter: lengthened
    assert main([*argv, "--json", str(out)]) == 0
    table = capsys.readouterr().out
    print(table)
    r = json.loads(out.read_text())
    keys = ["model", "loader_reference", "loader_folder", "loader_packed", "loader_packed_paper"]
    keys += ["train_folder", "train_packed"]
    assert list(r["results"]) == keys
    for k in keys:
        assert r["results"][k]["img_s"] > 0 and len(r["results"][k]["runs"]) == 2 and r["results"][k]["steps"] >= 2
        assert f"{r['results'][k]['img_s']:,.0f}" in table
    assert set(r["ratios"]) == {
        "loader_folder_vs_reference",
        "loader_packed_vs_reference",
        "loader_packed_paper_vs_reference",
        "train_folder_vs_model",
        "train_packed_vs_model",
    }
    assert r["results"]["model"]["mfu"] is None and "MFU: n/a" in table  # no peak FLOPs for a CPU
    # a training step is ~3x the forward FLOPs (less: conv1 needs no input gradient)
    forward = sum(row.flops for row in layer_table(create_model("alexnet", num_classes=10), 64)) / 1e9
    assert 2.8 * forward < r["train_gflop_per_image"] < 3.0 * forward
    assert r["settings"]["image_size"] == 64 and r["torch"] == torch.__version__
    # a line as each measurement ends, before the table (bench was silent for minutes after its first line)
    before_table = table[: table.index("device: cpu")]
    for name in ("reference", "folder", "packed", "packed_paper"):
        assert f"2. loader only, {name}: {r['results'][f'loader_{name}']['img_s']:,.0f} img/s" in before_table
    rates = ", ".join(f"{k} {r['results'][k]['runs'][1]:,.0f}" for k in ("model", "train_folder", "train_packed"))
    assert f"round 2/2: {rates} img/s" in before_table


def test_peak_flops_table() -> None:
    assert peak_flops(torch.device("cpu"), torch.bfloat16) is None


def test_table_columns_never_run_together() -> None:
    """A 2-batch window beside a ratio with its spread read "20.94 [0.94-0.94]": every cell stays apart."""
    settings = dict(arch="alexnet", batch_size=8, image_size=64, channels_last=False, compile=False, workers=0,
                    repeats=2, steps=2, min_time=0.05)  # fmt: skip
    results = {"model": {"img_s": 1234567.0, "runs": [1234000.0, 1235000.0], "steps": 2, "mfu": None},
               "train_folder": {"img_s": 34.0, "runs": [34.0, 34.0], "steps": 2}}  # fmt: skip
    spread = {"train_folder_vs_model": {"median": 0.94, "min": 0.94, "max": 0.94}}
    r = dict(device="cpu", torch="x", precision="fp32", settings=settings, results=results, peak_flops=None,
             ratios={"train_folder_vs_model": 0.94}, ratio_spread=spread, train_gflop_per_image=1.0)  # fmt: skip
    lines = format_results(r).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("measurement"))
    cells = [re.split(r"\s{2,}", line) for line in lines[header : header + 4] if not line.startswith("---")]
    assert cells == [
        ["measurement", "img/s", "min", "max", "batches", "ratio"],
        ["1. model only (random tensors on device)", "1,234,567", "1,234,000", "1,235,000", "2"],
        ["3b. end to end: folder pipeline", "34", "34", "34", "2", "0.94 [0.94-0.94] x model"],
    ]
