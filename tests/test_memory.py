"""In-memory data: decoded once, served by the packed loader; equal to a pack of the same images, batch for batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alexnet.data.loading import make_loader
from alexnet.data.loading.memory import MEMORY_CAP, fits_in_memory, load_into_memory
from alexnet.data.pack import pack_dataset
from alexnet.data.sources import open_dataset
from alexnet.data.synthetic import make_synthetic
from alexnet.preprocess import Preprocess


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_synthetic(tmp_path_factory.mktemp("mem") / "d", classes=3, per_class=7, val_per_class=3, size=70)
    (root / "train" / "circle" / "broken.jpg").write_bytes(b"junk")  # skipped in both, at the same place
    return root


def test_in_memory_equals_a_pack_image_for_image_and_batch_for_batch(data, tmp_path):
    pack_dataset(data, tmp_path / "pack", size=72, workers=0, progress=False, max_bad_fraction=1)
    pack = open_dataset(tmp_path / "pack")
    folder = open_dataset(data)
    mem, stats = load_into_memory(folder.train, 72, workers=2)
    assert np.array_equal(mem.images, pack.train.images) and np.array_equal(mem.labels, pack.train.labels)
    assert len(mem) == 21 and len(mem.manifest["skipped"]) == 1
    for key in ("mean", "std", "eigvals"):
        assert stats[key] == pytest.approx(pack.stats[key], abs=1e-12)
    pre = Preprocess(crop=64, resize=72, mean=stats["mean"], std=stats["std"])
    for kw in (dict(train=True, preset="paper", pca=stats, pca_std=0.1), dict(train=True, preset="torchvision"),
               dict(train=False)):  # fmt: skip
        a = make_loader(mem, pre, batch_size=4, seed=3, **kw)
        b = make_loader(pack.train, pre, batch_size=4, seed=3, **kw)
        for epoch in (0, 1):
            a.set_epoch(epoch)
            b.set_epoch(epoch)
            pairs = list(zip(a, b))
            assert len(pairs) == len(b) > 0
            for (xa, ya), (xb, yb) in pairs:
                assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_budget():
    assert fits_in_memory(3000, 73)  # the built-in set: 48 MB
    assert not fits_in_memory(1_281_167, 256)  # ImageNet at 256 px: 252 GB
    assert not fits_in_memory(MEMORY_CAP // (64 * 64 * 3) + 1, 64)
