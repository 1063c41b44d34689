"""One account of unreadable images for every loader: the folder loader, the in-memory set and a pack name the same
files in the same lines, bound the warnings the same way, and count what they hold after skipping."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from alexnet.config import TrainConfig
from alexnet.data.loading.skipped import WARN_FIRST
from alexnet.data.pack import pack_dataset
from alexnet.data.pipeline import build_data
from alexnet.data.sources import open_dataset
from alexnet.data.synthetic import make_synthetic
from alexnet.errors import UserError

BAD = WARN_FIRST + 3  # unreadable train files: WARN_FIRST named, the rest counted


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = make_synthetic(tmp_path_factory.mktemp("skips") / "d", classes=2, per_class=16, val_per_class=4, size=64)
    for i in range(BAD):
        (root / "train" / "circle" / f"bad_{i}.jpg").write_bytes(b"")  # empty files: "empty file (0 bytes)"
    return root


def warnings(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("warning: skipped")]


def train_epoch(data_path: Path, capsys, **kw) -> tuple[list[str], object, str]:
    cfg = TrainConfig(data=str(data_path), batch_size=8, image_size=64, max_bad_fraction=0.5, workers=0, **kw)
    logged: list[str] = []
    bundle = build_data(cfg, open_dataset(data_path), device=torch.device("cpu"), log=logged.append)
    for epoch in (0, 1):  # a second epoch names nothing again
        bundle.train.set_epoch(epoch)
        n = sum(len(y) for _, y in bundle.train)
        assert n == 32 // 8 * 8  # every readable image, whole batches
    return warnings(capsys.readouterr().err), bundle, "\n".join(logged)


def test_folders_packs_and_memory_name_the_same_files_in_the_same_lines(data, tmp_path, capsys) -> None:
    folder, _, _ = train_epoch(data, capsys, in_memory=False)
    memory, bundle, log = train_epoch(data, capsys, in_memory=True)
    pack_dataset(data, tmp_path / "pack", size=73, workers=0, progress=False, max_bad_fraction=1)  # keep the bad
    capsys.readouterr()
    packed, _, _ = train_epoch(tmp_path / "pack", capsys)
    named = [line for line in folder if "bad_" in line]
    assert len(named) == WARN_FIRST and all("empty file" in line for line in named)
    assert len(set(named)) == WARN_FIRST  # each file once, over two epochs
    more = [line for line in folder if re.search(rf"skipped {BAD - WARN_FIRST} more unreadable images", line)]
    assert len(more) == 1 and f"{BAD} of {32 + BAD} in all" in more[0]
    assert len(folder) == WARN_FIRST + 1
    # the in-memory set (the default for small sets) and the pack say the same about the same files (in file order;
    # the folder loader names them in the order its shuffled epoch meets them)
    every = {f"warning: skipped {data}/train/circle/bad_{i}.jpg: " + named[0].split(": ", 2)[2] for i in range(BAD)}
    assert set(named) <= every
    assert memory[:WARN_FIRST] == packed[:WARN_FIRST] and set(memory[:WARN_FIRST]) <= every
    assert memory[-1] == more[0] and packed[-1] == more[0].replace(f"{data}/train", str(tmp_path / "pack"))
    # counts after skipping: the in-memory set holds 32 train images, not the 40 files
    assert (
        f"32 train ({BAD} unreadable, skipped)" in log and f"32 train ({BAD} unreadable, skipped)" in bundle.description
    )
    assert "40 train" not in log + bundle.description


def test_too_many_unreadable_images_stop_every_loader_alike(data, tmp_path, capsys) -> None:
    for kw in (dict(in_memory=True), dict(in_memory=False)):
        cfg = TrainConfig(data=str(data), batch_size=8, image_size=64, max_bad_fraction=0.1, workers=0, **kw)
        with pytest.raises(UserError, match=r"of 40 train images .* cannot be decoded.*bad_0\.jpg"):
            bundle = build_data(cfg, open_dataset(data), device=torch.device("cpu"))
            list(bundle.train)
