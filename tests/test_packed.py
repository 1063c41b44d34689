"""Packed data sets and the packed loader: round trip, refusal of broken packs, sharding, resume, augmentation."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
import torchvision.transforms.v2.functional as TF2

from alexnet.data import batch_aug as A
from alexnet.data import pack as P
from alexnet.data.decode import DecodeError, decode_image
from alexnet.data.loading.packed import PackedLoader
from alexnet.data.pack import writer as W
from alexnet.data.sampling import normals, uniforms
from alexnet.data.transforms import TrainTransform, center_crop, resize_shorter
from alexnet.errors import UserError

IDENTITY = {"mean": [0.0, 0.0, 0.0], "std": [1 / 255] * 3}  # loader output == uint8 pixel values


class ArraySplit:
    """A source split from an in-memory uint8 (N, S, S, 3) array; indices in ``bad`` fail to decode."""

    def __init__(self, images: np.ndarray, labels, classes, name="train", bad=()):
        self.images, self.labels, self.classes, self.name, self.bad = images, list(labels), classes, name, set(bad)

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, i: int) -> torch.Tensor:
        if i in self.bad:
            raise DecodeError(f"item {i}: broken")
        return torch.from_numpy(self.images[i]).permute(2, 0, 1).contiguous()

    def describe(self, i: int) -> str:
        return f"item {i}"


def id_images(n: int, size: int) -> np.ndarray:
    """Image i: channel 0 = column, channel 1 = row, channel 2 = i (so crops, flips and identity can be read back)."""
    img = np.zeros((n, size, size, 3), np.uint8)
    img[..., 0] = np.arange(size)[None, None, :]
    img[..., 1] = np.arange(size)[None, :, None]
    img[..., 2] = (np.arange(n) % 256)[:, None, None]
    return img


def make_id_pack(tmp_path: Path, n: int = 100, size: int = 40, name: str = "pack") -> Path:
    out = tmp_path / name
    split = ArraySplit(id_images(n, size), [i % 4 for i in range(n)], ["a", "b", "c", "d"])
    P.pack_splits({"train": split}, out, size=size, workers=0, progress=False)
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """An image folder with non-square PNG/JPEG images of several sizes and one corrupt file."""
    from PIL import Image

    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 3)):
        for c in ("cat", "dog"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                h, w = int(rng.integers(30, 70)), int(rng.integers(30, 70))
                ext = "png" if i % 2 else "jpg"
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / f"{i}.{ext}")
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


# ---------------------------------------------------------------------------------------------------------------------
# pack format


@pytest.mark.parametrize("workers", [0, 2])
def test_round_trip_pixels_equal_the_preset_resize(folder: Path, tmp_path: Path, workers: int) -> None:
    out = tmp_path / "pack"
    manifest = P.pack_dataset(folder, out, size=32, workers=workers, progress=False, max_bad_fraction=0.1)
    assert P.is_packed(out) and not (out / P.IN_PROGRESS).exists()
    assert [Path(p).name for p, _ in manifest["splits"]["train"]["skipped"]] == ["broken.jpg"]
    train = P.open_packed(out, "train", verify=True)
    files = sorted((folder / "train").glob("*/*.*"))
    good = [f for f in files if f.name != "broken.jpg"]
    assert len(train) == len(good) == 16 and train.classes == ["cat", "dog"]
    for i, f in enumerate(good):
        want = center_crop(resize_shorter(decode_image(str(f)), 32), 32).permute(1, 2, 0).numpy()
        assert np.array_equal(train.images[i], want), f
        assert train.labels[i] == ["cat", "dog"].index(f.parent.name)
    assert len(P.open_packed(out, "val")) == 6
    # stats of the train split, against numpy over the stored pixels
    px = np.asarray(train.images).reshape(-1, 3).astype(np.float64) / 255
    np.testing.assert_allclose(manifest["stats"]["mean"], px.mean(0), atol=1e-9)
    np.testing.assert_allclose(manifest["stats"]["std"], px.std(0), atol=1e-9)
    v, lam = np.array(manifest["stats"]["eigvecs"]), np.array(manifest["stats"]["eigvals"])
    np.testing.assert_allclose(v @ np.diag(lam) @ v.T, np.cov(px.T, bias=True), atol=1e-9)


@pytest.mark.parametrize("resize", ["shorter-centre", "squash"])
def test_a_block_of_small_images_resized_together_equals_one_at_a_time(monkeypatch, resize: str) -> None:
    """Same-sized small images are resized a block's worth in one call: the same pixels, in the same rows, as one at a
    time; an image over ``SMALL_PIXELS`` and a broken one interleaved with them."""
    rng = np.random.default_rng(3)
    shapes = [(20, 30), (30, 20), (20, 30), (25, 25), (20, 30), (30, 20), (40, 50), (20, 30)]
    images = [rng.integers(0, 256, (3, h, w), dtype=np.uint8) for h, w in shapes]

    class Mixed(ArraySplit):
        def load(self, i: int) -> torch.Tensor:
            if i in self.bad:
                raise DecodeError(f"item {i}: broken")
            return torch.from_numpy(images[i])

    monkeypatch.setattr(W, "SMALL_PIXELS", 30 * 30)  # (40, 50) is resized alone
    W._init_worker(Mixed(None, [0] * len(images), ["x"], bad={4}), 16, resize)
    out, good, bad, _ = W._decode_range(0, len(images))
    assert list(good) == [0, 1, 2, 3, 5, 6, 7] and [d for d, _ in bad] == ["item 4"]
    for row, i in enumerate(good):
        want = W.resize_for_pack(torch.from_numpy(images[i]), 16, resize).permute(1, 2, 0).numpy()
        assert np.array_equal(out[row], want), i


def test_squash_resize(tmp_path: Path) -> None:
    img = np.random.default_rng(1).integers(0, 256, (1, 20, 20, 3), dtype=np.uint8)
    P.pack_splits(
        {"train": ArraySplit(img, [0], ["x"])}, tmp_path / "p", size=10, resize="squash", workers=0, progress=False
    )
    want = TF2.resize(torch.from_numpy(img[0]).permute(2, 0, 1), [10, 10], antialias=True).permute(1, 2, 0).numpy()
    assert np.array_equal(P.open_packed(tmp_path / "p", "train").images[0], want)
    with pytest.raises(UserError, match="resize"):
        P.pack_splits({"train": ArraySplit(img, [0], ["x"])}, tmp_path / "q", resize="stretch", progress=False)


def test_interrupted_pack_is_refused_and_rerun_restarts(tmp_path: Path, monkeypatch) -> None:
    out = make_id_pack(tmp_path)
    calls = []
    real = W._decode_range

    def dies_second_time(a: int, b: int):
        calls.append(a)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(a, b)

    monkeypatch.setattr(W, "_decode_range", dies_second_time)
    with pytest.raises(KeyboardInterrupt):
        make_id_pack(tmp_path)  # re-pack over the complete one, interrupted half-way
    monkeypatch.setattr(W, "_decode_range", real)
    assert P.is_packed(out)  # routed to the packed loader, which explains:
    with pytest.raises(UserError, match="half-written pack"):
        P.open_packed(out, "train")
    with pytest.raises(UserError, match="half-written pack"):
        PackedLoader(out, "train", batch_size=4, train=True, crop_size=32, **IDENTITY)
    make_id_pack(tmp_path)  # re-running restarts cleanly
    assert len(P.open_packed(out, "train", verify=True)) == 100


def test_corrupt_packs_are_refused(tmp_path: Path) -> None:
    out = make_id_pack(tmp_path)
    images = out / "train" / "images.u8"
    data = bytearray(images.read_bytes())
    data[12345] ^= 0xFF  # one flipped bit-pattern: sizes agree, the chunk checksum does not
    images.write_bytes(bytes(data))
    P.open_packed(out, "train")  # cheap checks pass
    with pytest.raises(UserError, match="checksum mismatch in images"):
        P.open_packed(out, "train", verify=True)
    images.write_bytes(bytes(data[:-100]))  # truncated
    with pytest.raises(UserError, match=r"images.u8: .* bytes, manifest says"):
        P.open_packed(out, "train")
    out = make_id_pack(tmp_path, name="pack2")
    labels = np.load(out / "train" / "labels.npy")
    labels[0] += 1
    np.save(out / "train" / "labels.npy", labels)
    with pytest.raises(UserError, match=r"labels\.npy: missing or checksum mismatch"):
        P.open_packed(out, "train")
    (out / P.MANIFEST).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(UserError, match="not an alexnet-packed manifest"):
        P.open_packed(out, "train")
    with pytest.raises(UserError, match="not a packed data set"):
        P.open_packed(tmp_path, "train")
    assert not P.is_packed(tmp_path) and not P.is_packed(None)


def test_refuses_to_overwrite_a_non_pack_directory(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(UserError, match="not an alexnet pack"):
        P.pack_splits({"train": ArraySplit(id_images(2, 8), [0, 1], ["a", "b"])}, tmp_path, size=8, progress=False)
    assert (tmp_path / "mine.txt").read_text() == "precious"
    blocked = tmp_path / "mine.txt" / "pack"  # a file where a parent folder would be (as /proc/x): one line, not errno
    with pytest.raises(UserError, match=r"mine.txt/pack: cannot create the pack folder there \(Not a directory\)"):
        P.pack_splits({"train": ArraySplit(id_images(2, 8), [0, 1], ["a", "b"])}, blocked, size=8, progress=False)


# ---------------------------------------------------------------------------------------------------------------------
# loader: order, sharding, resume


def sample_ids(x: torch.Tensor) -> list[int]:
    return x[:, 2, 0, 0].round().long().tolist()


def test_rank_shards_are_disjoint_and_complete(tmp_path: Path) -> None:
    out = make_id_pack(tmp_path, n=100)
    seen = []
    for rank in range(3):
        loader = PackedLoader(
            out, "train", batch_size=8, train=True, crop_size=32, seed=5, rank=rank, world_size=3, **IDENTITY
        )
        loader.set_epoch(2)
        assert len(loader) == 100 // 24
        seen.append([i for x, y in loader for i in sample_ids(x)])
    flat = [i for s in seen for i in s]
    assert len(flat) == len(set(flat)) == 4 * 24  # disjoint; whole global batches
    one = PackedLoader(out, "train", batch_size=24, train=True, crop_size=32, seed=5, **IDENTITY)
    one.set_epoch(2)
    assert sorted(flat) == sorted(i for x, _ in one for i in sample_ids(x))  # same samples as one process
    # eval across ranks: every sample exactly once, in order
    ev = [
        PackedLoader(out, "train", batch_size=7, train=False, crop_size=32, rank=r, world_size=3, **IDENTITY)
        for r in range(3)
    ]
    ids = sorted(i for loader in ev for x, _ in loader for i in sample_ids(x))
    assert ids == list(range(100))


def test_counter_based_draws_are_uniform_independent_and_keyed_by_sample() -> None:
    u = uniforms(torch.arange(50_000), 4, seed=1, epoch=0)
    assert u.shape == (50_000, 4) and u.min() >= 0 and u.max() < 1
    freq = np.histogram(u, bins=20, range=(0, 1))[0] / u.size
    assert np.abs(freq - 0.05).max() < 0.002  # binomial sd per bin ~0.0005
    assert np.abs(np.corrcoef(u.T) - np.eye(4)).max() < 0.02  # draws of one sample
    assert abs(np.corrcoef(u[:-1, 0], u[1:, 0])[0, 1]) < 0.02  # neighbouring samples
    np.testing.assert_array_equal(uniforms(torch.tensor([9, 3]), 4, seed=1, epoch=0), u[[9, 3]])
    assert not np.isin(uniforms(torch.arange(100), 4, seed=1, epoch=1), u).any()  # a new epoch, new numbers
    z = normals(u)  # Box-Muller: 50,000 x 2 standard normals
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02 and abs((z**4).mean() - 3) < 0.15


@pytest.mark.parametrize("preset", ["paper", "torchvision"])
def test_ranks_augment_each_sample_as_one_process_does(tmp_path: Path, preset: str) -> None:
    out = make_id_pack(tmp_path, n=100)
    pca = {"eigvals": [0.2, 0.02, 0.005], "eigvecs": np.eye(3).tolist()}  # used by the paper preset
    kw = dict(train=True, crop_size=24, seed=5, preset=preset, pca=pca, **IDENTITY)
    one = PackedLoader(out, "train", batch_size=8, **kw)
    one.set_epoch(1)
    want = {i: x for idx, (xs, _) in zip(one._batches(), one) for i, x in zip(idx.tolist(), xs)}
    seen = 0
    for rank in range(2):
        ld = PackedLoader(out, "train", batch_size=4, rank=rank, world_size=2, **kw)
        ld.set_epoch(1)
        for idx, (xs, _) in zip(ld._batches(), ld):
            for i, x in zip(idx.tolist(), xs):
                torch.testing.assert_close(x, want[i], atol=1e-4, rtol=0)
                seen += 1
    assert seen == len(want) == 96
    crops = torch.stack(list(want.values()))
    assert not torch.equal(crops[:, 0], crops[0, 0].expand_as(crops[:, 0]))  # the crops do vary


def test_threaded_gather_gives_the_same_batches(tmp_path: Path) -> None:
    out = make_id_pack(tmp_path, n=60)
    kw = dict(batch_size=16, train=True, crop_size=32, seed=1, **IDENTITY)
    one = list(PackedLoader(out, "train", gather_threads=1, **kw))  # one np.take per batch
    three = list(PackedLoader(out, "train", gather_threads=3, **kw))  # sorted rows split over 3 threads
    assert len(one) == len(three) == 3
    for (xa, ya), (xb, yb) in zip(one, three):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_labels_follow_their_images(tmp_path: Path) -> None:
    out = make_id_pack(tmp_path, n=50)
    loader = PackedLoader(out, "train", batch_size=10, train=True, crop_size=32, **IDENTITY)
    for x, y in loader:
        assert y.dtype == torch.int64 and y.tolist() == [i % 4 for i in sample_ids(x)]


def test_mid_epoch_resume_is_bit_identical(tmp_path: Path) -> None:
    out = make_id_pack(tmp_path, n=100)
    pca = {"eigvals": [0.2, 0.02, 0.005], "eigvecs": torch.linalg.qr(torch.randn(3, 3))[0].tolist()}
    kw = dict(batch_size=8, train=True, crop_size=32, mean=[0.5] * 3, std=[0.25] * 3, pca=pca, seed=3, prefetch=3)
    full_loader = PackedLoader(out, "train", **kw)
    full_loader.set_epoch(4)
    full = list(full_loader)
    assert len(full) == len(full_loader) == 12
    resumed = PackedLoader(out, "train", **kw)
    resumed.set_epoch(4)
    for i, _ in enumerate(resumed):
        if i == 4:
            break
    state = resumed.state()
    assert state == {"epoch": 4, "start_batch": 5}
    again = PackedLoader(out, "train", **kw)
    again.set_epoch(state["epoch"], start_batch=state["start_batch"])
    rest = list(again)
    assert len(rest) == 7
    for (xa, ya), (xb, yb) in zip(full[5:], rest):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    full_loader.set_epoch(5)
    assert not torch.equal(next(iter(full_loader))[0], full[0][0])  # reshuffled and re-augmented per epoch


# ---------------------------------------------------------------------------------------------------------------------
# augmentation: exact pixels and distributions


def test_paper_crops_and_flips_are_uniform_windows(tmp_path: Path) -> None:
    size, crop = 40, 32
    out = make_id_pack(tmp_path, n=200, size=size)
    loader = PackedLoader(out, "train", batch_size=50, train=True, crop_size=crop, channels_last=True, **IDENTITY)
    tops, lefts, flips = [], [], []
    ar = torch.arange(crop, dtype=torch.float32)
    for epoch in range(10):
        loader.set_epoch(epoch)
        for x, _ in loader:
            assert x.shape == (50, 3, crop, crop) and x.is_contiguous(memory_format=torch.channels_last)
            x = x.round()
            top, left0 = x[:, 1, 0, 0], x[:, 0, 0, 0]
            flip = x[:, 0, 0, 1] < left0
            left = torch.where(flip, left0 - crop + 1, left0)
            # every output is exactly the window at (top, left), mirrored iff flip
            assert torch.equal(x[:, 1, :, 0], top[:, None] + ar)
            cols = torch.where(flip[:, None], left[:, None] + crop - 1 - ar, left[:, None] + ar)
            assert torch.equal(x[:, 0, 0, :], cols)
            tops += top.long().tolist()
            lefts += left.long().tolist()
            flips += flip.tolist()
    n = len(flips)
    assert abs(sum(flips) / n - 0.5) < 4 * math.sqrt(0.25 / n)
    # reference: the per-image TrainTransform draws offsets uniformly over the same range
    t = TrainTransform(preset="paper", crop_size=crop, resize_size=size)
    img = torch.from_numpy(id_images(1, size)[0]).permute(2, 0, 1)
    ref = [int(t(img, torch.Generator().manual_seed(s))[1, 0, 0]) for s in range(300)]
    assert set(ref) <= set(range(size - crop + 1))
    for values in (tops, lefts):
        counts = np.bincount(values, minlength=size - crop + 1)
        assert len(counts) == size - crop + 1  # never outside the valid range
        expected = n / len(counts)
        chi2 = ((counts - expected) ** 2 / expected).sum()
        assert chi2 < 30, counts  # 8 degrees of freedom: p ~ 2e-4


def test_crop_flip_gather_equals_the_per_image_crops() -> None:
    img = torch.randint(0, 256, (16, 20, 20, 3), dtype=torch.uint8)
    p = A.sample_paper(torch.arange(16), 20, 13, seed=0, epoch=0, pca_std=None)
    loop = A.crop_flip(img, p.top, p.left, p.flip, 13)
    assert torch.equal(A.crop_flip_gather(img, p.top, p.left, p.flip, 13), loop)
    for i in range(16):
        t, c = int(p.top[i]), int(p.left[i])
        want = img[i, t : t + 13, c : c + 13].permute(2, 0, 1)
        assert torch.equal(loop[i], want.flip(-1) if p.flip[i] else want)


def test_pca_noise_covariance(tmp_path: Path) -> None:
    out = tmp_path / "flat"
    n = 400
    P.pack_splits(
        {"train": ArraySplit(np.full((n, 8, 8, 3), 128, np.uint8), [0] * n, ["x"])},
        out,
        size=8,
        workers=0,
        progress=False,
    )
    eigvecs = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0)))[0]
    eigvals = torch.tensor([0.3, 0.1, 0.02])
    loader = PackedLoader(
        out,
        "train",
        batch_size=100,
        train=True,
        crop_size=6,
        mean=[0.0] * 3,
        std=[1.0] * 3,
        pca={"eigvals": eigvals.tolist(), "eigvecs": eigvecs.tolist()},
        pca_std=0.1,
    )
    shifts = []
    for epoch in range(10):
        loader.set_epoch(epoch)
        for x, _ in loader:
            assert torch.allclose(x, x[:, :, :1, :1].expand_as(x))  # one shift per image, same at every pixel
            shifts.append(x[:, :, 0, 0] - 128 / 255)
    s = torch.cat(shifts).double()  # (4000, 3)
    want = eigvecs.double() @ torch.diag((0.1 * eigvals.double()) ** 2) @ eigvecs.double().T
    got = s.T @ s / len(s)
    assert s.mean(0).abs().max() < 4 * 0.1 * 0.3 / math.sqrt(len(s))
    assert torch.allclose(got, want, atol=0.1 * want.abs().max())


def test_resized_crop_boxes_match_torchvision_distribution() -> None:
    size, n = 64, 4000
    p = A.sample_resized_crop(torch.arange(n), size, seed=0, epoch=0)
    x1, y1, x2, y2 = p.boxes.T
    w, h = x2 - x1, y2 - y1
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= size).all() and (y2 <= size).all() and (w > 0).all()
    t = TrainTransform(preset="torchvision", crop_size=32)
    g = torch.Generator().manual_seed(1)
    ref = torch.tensor([t.random_resized_box(size, size, g) for _ in range(n)], dtype=torch.float32)
    q = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
    for ours, theirs in (
        ((w * h) / size**2, ref[:, 2] * ref[:, 3] / size**2),
        (torch.log(w / h), torch.log(ref[:, 3] / ref[:, 2])),
        (y1 / (size - h + 1), ref[:, 0] / (size - ref[:, 2] + 1)),
    ):
        assert torch.allclose(torch.quantile(ours, q), torch.quantile(theirs, q), atol=0.05)
    assert abs(p.flip.float().mean() - 0.5) < 0.03


@pytest.mark.parametrize("size,crop", [(40, 32), (24, 56)])  # mostly shrinking / always enlarging
def test_resized_crops_equal_torchvision_per_image(size: int, crop: int) -> None:
    """Both implementations (per-image uint8 on the CPU, batched matmul elsewhere) against torchvision's
    ``transforms.v2.functional.resized_crop(antialias=True)`` + ``hflip`` applied image by image (v2 keeps uint8 in
    uint8, as PIL; v1 resizes uint8 in float and rounds, which can differ by one level)."""
    n = 24
    img = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    p = A.sample_resized_crop(torch.arange(n), size, seed=1, epoch=0)
    p.boxes[0] = torch.tensor([0.0, 0, size, size])  # whole image
    p.boxes[1] = torch.tensor([size - 1.0, 0, size, size])  # a one-pixel-wide column at the edge
    p.flip[:2] = torch.tensor([False, True])
    cpu = A.resized_crop_flip(img, p.boxes, p.flip, crop)
    mm = A.resized_crop_flip_matmul(img, p.boxes, p.flip, crop) * 255  # float out is in [0, 1]
    assert cpu.dtype == torch.uint8 and cpu.shape == mm.shape == (n, 3, crop, crop)
    for i in range(n):
        x1, y1, x2, y2 = p.boxes[i].long().tolist()
        chw = img[i].permute(2, 0, 1)
        for src, got, exact in ((chw, cpu[i], True), (chw.float(), mm[i], False)):
            ref = TF2.resized_crop(src, y1, x1, y2 - y1, x2 - x1, [crop, crop], antialias=True)
            ref = TF2.hflip(ref) if p.flip[i] else ref
            if exact:
                assert torch.equal(got, ref), i
            else:
                assert torch.allclose(got, ref, atol=2e-3), (i, (got - ref).abs().max())


def test_resize_weights_by_hand() -> None:
    # 4 px -> 2 px: support 2, centres at 1 and 3 in window coordinates; pixel centres 0.5..3.5
    # -> unnormalised weights (0.75, 0.75, 0.25, 0) and (0, 0.25, 0.75, 0.75) (PIL's bilinear reduce by 2)
    w = A.resize_weights(torch.tensor([2.0]), torch.tensor([4.0]), 8, 2)[0]
    want = torch.tensor([[0, 0, 3, 3, 1, 0, 0, 0], [0, 0, 0, 1, 3, 3, 0, 0]]) / 7
    assert torch.allclose(w, want)
    # 2 px -> 4 px (enlarging): plain bilinear, align_corners=False, edges clamped to the window
    w = A.resize_weights(torch.tensor([1.0]), torch.tensor([2.0]), 4, 4, flip=torch.tensor([True]))[0]
    want = torch.tensor([[0, 0, 1, 0], [0, 0.25, 0.75, 0], [0, 0.75, 0.25, 0], [0, 1, 0, 0]])
    assert torch.allclose(w, want)


def test_torchvision_preset_through_the_loader(tmp_path: Path) -> None:
    out = make_id_pack(tmp_path, n=40, size=40)
    loader = PackedLoader(out, "train", batch_size=20, train=True, preset="torchvision", crop_size=24, **IDENTITY)
    xs = [x for x, _ in loader]
    assert len(xs) == 2 and xs[0].shape == (20, 3, 24, 24) and torch.isfinite(xs[0]).all()
    assert xs[0].min() >= 0 and xs[0].max() <= 255


def test_eval_centre_and_ten_crops_exact(tmp_path: Path) -> None:
    out = tmp_path / "rand"
    imgs = np.random.default_rng(2).integers(0, 256, (10, 37, 37, 3), dtype=np.uint8)
    P.pack_splits(
        {"val": ArraySplit(imgs, list(range(10)), [str(i) for i in range(10)], name="val")},
        out,
        size=37,
        workers=0,
        progress=False,
    )
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    ref = torch.stack(
        [
            TF.normalize(TF.center_crop(torch.from_numpy(i).permute(2, 0, 1), [30]).float() / 255, mean, std)
            for i in imgs
        ]
    )
    loader = PackedLoader(out, "val", batch_size=4, train=False, crop_size=30, mean=mean, std=std)
    x = torch.cat([b for b, _ in loader])
    assert len(loader) == 3 and torch.allclose(x, ref, atol=1e-5)
    ten = PackedLoader(out, "val", batch_size=4, train=False, crop_size=30, mean=mean, std=std, ten_crop=True)
    x = torch.cat([b for b, _ in ten])
    assert x.shape == (10, 10, 3, 30, 30)
    for i in (0, 9):
        crops = TF.ten_crop(torch.from_numpy(imgs[i]).permute(2, 0, 1), [30])
        want = torch.stack([TF.normalize(c.float() / 255, mean, std) for c in crops])
        assert torch.allclose(x[i], want, atol=1e-5)


def test_bad_arguments_are_user_errors(tmp_path: Path) -> None:
    out = make_id_pack(tmp_path, n=10, size=16)
    with pytest.raises(UserError, match="larger than the packed images"):
        PackedLoader(out, "train", batch_size=4, train=True, crop_size=32, **IDENTITY)
    with pytest.raises(UserError, match="no split 'val'"):
        PackedLoader(out, "val", batch_size=4, train=False, crop_size=8, **IDENTITY)


def test_a_crop_larger_than_the_pack_is_said_before_the_cpu_path_measurement(tmp_path: Path, monkeypatch) -> None:
    """``alexnet train PACK --image-size 64`` on 40-px images: the one-line error comes before the CPU-path
    measurement (it came after it, 4-12 s late)."""
    import alexnet.training.cpu_path as C
    from alexnet.config import resolve_config
    from alexnet.training import train

    def measure(*args, **kwargs):
        raise AssertionError("the CPU path was measured before the pack's size was checked")

    monkeypatch.setattr(C, "choose_cpu_path", measure)
    out = make_id_pack(tmp_path, n=40, size=40)
    flags = {"data": str(out), "out": str(tmp_path / "run"), "device": "cpu", "image_size": 64, "time_budget": "1m"}
    with pytest.raises(UserError, match="--image-size 64 px is larger than the packed images"):
        train(resolve_config("fast", flags=flags))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_path_matches_cpu(tmp_path: Path) -> None:
    out = make_id_pack(tmp_path, n=100)
    pca = {"eigvals": [0.2, 0.02, 0.005], "eigvecs": torch.eye(3).tolist()}
    for preset in ("paper", "torchvision"):
        kw = dict(batch_size=16, train=True, preset=preset, crop_size=32, mean=[0.5] * 3, std=[0.25] * 3, pca=pca)
        # RandomResizedCrop: uint8 (rounded) on the CPU, float on CUDA -> within half a level (+ float error)
        atol = 1e-3 if preset == "paper" else 0.51 / 255 / 0.25
        cpu = list(PackedLoader(out, "train", device="cpu", **kw))
        gpu = list(PackedLoader(out, "train", device="cuda", channels_last=True, **kw))
        assert len(cpu) == len(gpu)
        for (xc, yc), (xg, yg) in zip(cpu, gpu):
            assert xg.is_cuda and xg.is_contiguous(memory_format=torch.channels_last)
            assert torch.equal(yc, yg.cpu()) and torch.allclose(xc, xg.cpu(), atol=atol)


def test_cli_pack(folder: Path, tmp_path: Path, capsys) -> None:
    from alexnet.cli import main

    out = tmp_path / "cli-pack"
    assert main(["data", "pack", str(folder), str(out), "--size", "24", "--workers", "0"]) == 2  # cannot train AlexNet
    assert "--size 24: must be in [63, 2048] px" in capsys.readouterr().err and not out.exists()
    assert main(["data", "pack", str(folder), str(out), "--size", "64", "--workers", "0"]) == 2  # 1 of 17 is bad
    err = capsys.readouterr().err
    assert f"1 of 17 train images in {folder / 'train'} cannot be decoded, more than --max-bad-fraction 0.01" in err
    assert "broken.jpg" in err and "the partial pack was removed" in err
    assert not out.exists()  # training from it would have hidden them from its own check
    assert main(["data", "pack", str(folder), str(out), "--size", "64", "--workers", "0",
                 "--max-bad-fraction", "0.1"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "train: 16 images" in text and "1 skipped" in text and "broken.jpg" in text and "peak RSS" in text
    assert len(P.open_packed(out, "val", verify=True)) == 6
    (out / P.MANIFEST).unlink()
    with pytest.raises(UserError, match="not a packed data set"):
        P.read_manifest(out)


def test_pack_and_stats_say_which_files_were_left_out(tmp_path: Path, capsys) -> None:
    """Files that are not image file names (a .heic photo, a note) are neither packed nor in the statistics: both
    commands say so on stderr, once per folder, as ``alexnet train`` does."""
    from PIL import Image

    from alexnet.cli import main

    for c in ("cat", "dog"):
        (tmp_path / "src" / "train" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 40), (60 * i, 90, 30)).save(tmp_path / "src" / "train" / c / f"{i}.png")
    (tmp_path / "src" / "train" / "cat" / "IMG_1.heic").write_bytes(b"not decodable here")
    (tmp_path / "src" / "train" / "dog" / "notes\x1b[31m.txt").write_text("shot in 2024")  # an escape in a name
    expected = "left out 2 of 8 files, not image file names: .heic (1), .txt (1)"
    assert main(["data", "pack", str(tmp_path / "src"), str(tmp_path / "pack"), "--size", "64", "--workers", "0",
                 "--val-fraction", "0"]) == 0  # fmt: skip
    out, err = capsys.readouterr()
    assert expected in err and "IMG_1.heic" in err and "train: 6 images" in out and "\x1b" not in err
    assert main(["data", "stats", str(tmp_path / "src"), "--out", str(tmp_path / "stats.json")]) == 0
    out, err = capsys.readouterr()
    assert expected in err and out.startswith("6 images") and "\x1b" not in err


def test_abandoning_an_epoch_near_its_end_does_not_hang(tmp_path: Path) -> None:
    import threading

    out = make_id_pack(tmp_path, n=40)
    loader = PackedLoader(out, "train", batch_size=10, train=True, crop_size=32, prefetch=2, **IDENTITY)

    def take_one_and_close() -> None:
        it = iter(loader)
        next(it)
        time.sleep(0.3)  # the producer has filled the queue and is waiting to hand over the end marker
        it.close()

    worker = threading.Thread(target=take_one_and_close, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive()
    assert loader.state() == {"epoch": 0, "start_batch": 1}


def test_a_source_without_val_is_packed_with_the_split_train_would_hold_out(folder: Path, tmp_path: Path) -> None:
    """One folder of class folders packed with no val split: ``train PACK`` then had nothing to validate on and
    ``evaluate M PACK`` no val split, where training on the folder holds out 20%. The pack holds out the same
    images as training on the folder would."""
    from alexnet.data.holdout import with_holdout
    from alexnet.data.sources import open_dataset

    one = folder / "train"  # cat/ and dog/, with the broken file
    out = tmp_path / "pack"
    manifest = P.pack_dataset(one, out, size=32, workers=0, progress=False, max_bad_fraction=0.1, seed=3)
    held, _ = with_holdout(open_dataset(str(one)), 0.2, 3)
    for name in ("train", "val"):
        packed = P.open_packed(out, name)
        want = [f for f in held.split(name).items if Path(f).name != "broken.jpg"]
        assert len(packed) == len(want) and list(packed.labels) == [held.classes.index(Path(f).parent.name)
                                                                     for f in want]  # fmt: skip
    assert manifest["held_out"]["val_fraction"] == 0.2 and manifest["held_out"]["seed"] == 3
    assert "held out 20% for validation" in P.describe_pack(manifest)
    from alexnet.data.pipeline import open_training_data

    from .test_train import tiny_config

    said: list[str] = []  # train on the pack: its split, which --val-fraction and --seed cannot move, is said
    open_training_data(tiny_config(str(out), tmp_path / "run", val_fraction=0.5, seed=7), log=said.append)
    assert said == ["validation: the pack's val split, held out when it was packed (--val-fraction 0.2, --seed 3; "
                    "repack to change it)"]  # fmt: skip
