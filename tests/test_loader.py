"""The folder loader: pixels against torchvision, corrupt files skipped and reported, persistent workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
import torchvision.transforms.v2.functional as TF2
from PIL import Image

from alexnet.data.loading.folder import FolderLoader
from alexnet.data.sources import Split
from alexnet.errors import UserError

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def make_split(root: Path, n: int = 12, bad: tuple[int, ...] = ()) -> Split:
    """n PNG images of varied sizes (lossless, so decoding is exact); files in ``bad`` are not images."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = root / f"{i:02d}.png"
        if i in bad:
            path.write_bytes(b"this is not a png")
        else:
            h, w = 40 + 3 * i, 52 - 2 * i
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return Split("train", paths, [i % 3 for i in range(n)], ["a", "b", "c"], str(root))


def loader(split: Split, **kw) -> FolderLoader:
    args = dict(batch_size=4, train=True, preset="paper", crop_size=24, resize_size=32, mean=MEAN, std=STD,
                seed=7, pca={"eigvals": [0.2, 0.02, 0.005], "eigvecs": np.eye(3).tolist()})  # fmt: skip
    args.update(kw)
    return FolderLoader(split, **args)


def epoch(ld: FolderLoader, e: int, start_batch: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    ld.set_epoch(e, start_batch)
    return list(ld)


def same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))


def test_eval_batches_equal_torchvision(tmp_path: Path) -> None:
    split = make_split(tmp_path / "imgs", n=6)
    (x, y), (x2, _) = list(loader(split, train=False, drop_last=False))
    assert x.shape == (4, 3, 24, 24) and x2.shape == (2, 3, 24, 24) and y.tolist() == [0, 1, 2, 0]
    for i in range(4):
        ref = TF.pil_to_tensor(Image.open(split.items[i]))  # an independent decode and torchvision's eval preset
        ref = TF.center_crop(TF2.resize(ref, [32], antialias=True), [24, 24]).float() / 255
        ref = TF.normalize(ref, MEAN, STD)
        torch.testing.assert_close(x[i], ref, atol=1e-6, rtol=0)


def by_sample(ld: FolderLoader, e: int) -> dict[int, torch.Tensor]:
    ld.set_epoch(e)
    order = torch.cat(ld._batches()).tolist()  # the epoch's sample order, computed in this process
    return dict(zip(order, torch.cat([x for x, _ in ld]), strict=True))


def test_workers_persist_and_follow_the_epoch(tmp_path: Path) -> None:
    split = make_split(tmp_path / "imgs")
    serial = loader(split, workers=0)
    want = [epoch(serial, e) for e in range(3)]
    first, second = by_sample(serial, 0), by_sample(serial, 1)
    assert all(not torch.equal(first[i], second[i]) for i in first)  # every sample: a new crop, flip, colour each epoch
    parallel = loader(split, workers=2)
    first = epoch(parallel, 0)
    workers = parallel._loader._iterator._workers
    parallel.set_epoch(1)
    next(iter(parallel))  # abandoned mid-epoch, as a trainer stopped by --max-steps-per-epoch does
    got = [first, epoch(parallel, 1), epoch(parallel, 2)]
    assert all(same(g, w) for g, w in zip(got, want))
    assert parallel._loader._iterator._workers == workers  # the same processes served every epoch
    assert same(epoch(parallel, 2, start_batch=1), want[2][1:])  # mid-epoch resume


def test_corrupt_files_are_skipped_and_named(tmp_path: Path, capsys) -> None:
    split = make_split(tmp_path / "imgs", bad=(5,))
    ld = loader(split, workers=2, max_bad_fraction=0.1, drop_last=False)
    batches = epoch(ld, 0)
    assert sum(len(y) for _, y in batches) == 11
    assert [Path(p).name for p, _ in ld.bad_files] == ["05.png"]
    assert "05.png" in capsys.readouterr().err
    with pytest.raises(UserError, match=r"05\.png"):
        epoch(loader(make_split(tmp_path / "worse", bad=(2, 5)), max_bad_fraction=0.1), 0)
