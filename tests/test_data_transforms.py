"""Transforms on hand-made images whose every pixel says where it came from; batched device ops by hand."""

import math

import pytest
import torch
import torchvision.transforms.functional as TF
import torchvision.transforms.v2.functional as TF2

from alexnet.data.device_ops import normalize, pca_noise, to_unit
from alexnet.data.sampling import generator
from alexnet.data.transforms import EvalTransform, TenCrop, TrainTransform, center_crop, resize_shorter, resize_square
from alexnet.errors import UserError


def coords(h, w):
    """uint8 (3, h, w): channel 0 = row, channel 1 = column, channel 2 = 7."""
    rows = torch.arange(h).view(h, 1).expand(h, w)
    cols = torch.arange(w).view(1, w).expand(h, w)
    return torch.stack([rows, cols, torch.full((h, w), 7)]).to(torch.uint8)


def window(out):
    """(top, left, flipped) of a crop of a coords() image, checked to be an exact (mirrored) window."""
    top, flipped = int(out[0, 0, 0]), bool(out[1, 0, 0] > out[1, 0, -1])
    left = int(out[1, 0, -1] if flipped else out[1, 0, 0])
    return top, left, flipped


def test_resize_shorter_and_center_crop():
    x = torch.full((3, 20, 40), 99, dtype=torch.uint8)
    y = resize_shorter(x, 10)
    assert y.shape == (3, 10, 20) and (y == 99).all()
    assert resize_shorter(coords(10, 30), 10).equal(coords(10, 30))  # already the right size: untouched
    c = center_crop(coords(5, 7), 3)
    assert c[0, :, 0].tolist() == [1, 2, 3] and c[1, 0].tolist() == [2, 3, 4]
    for h, w, s in [(6, 6, 3), (7, 10, 4), (9, 8, 5)]:  # odd margins round like torchvision
        assert center_crop(coords(h, w), s).equal(TF.center_crop(coords(h, w), [s, s]))


def test_resizes_match_torchvision_v2():
    """Our uint8 resizes give torchvision.transforms.v2's pixels (its uint8 kernel; v1's float path rounds some a
    level apart), up and down, odd shapes, gray and batched; float images keep torchvision's float path."""
    g = torch.Generator().manual_seed(0)
    for shape in [(3, 32, 32), (3, 75, 100), (3, 100, 75), (1, 40, 90), (2, 3, 50, 60)]:
        x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
        for s in (17, 64, 73):
            assert resize_shorter(x, s).equal(TF2.resize(x, [s], antialias=True)), (shape, s)
            assert resize_square(x, s).equal(TF2.resize(x, [s, s], antialias=True)), (shape, s)
    f = torch.rand(3, 20, 30, generator=g)
    assert resize_shorter(f, 10).equal(TF.resize(f, [10], antialias=True))


def test_paper_train_crop_is_an_exact_window_and_covers_all_positions():
    t = TrainTransform(preset="paper", crop_size=8, resize_size=16)
    x = coords(16, 24)  # shorter side already 16; the paper's stored form is columns 4..19
    tops, lefts, flips = set(), set(), 0
    for i in range(300):
        out = t(x, generator(0, 0, i))
        assert out.shape == (3, 8, 8) and out.dtype == torch.uint8
        top, left, flipped = window(out)
        expected = x[:, top : top + 8, left : left + 8]
        assert out.equal(expected.flip(-1) if flipped else expected)
        tops.add(top)
        lefts.add(left)
        flips += flipped
    assert tops == set(range(9)) and lefts == set(range(4, 13))  # every offset of the central 16x16
    assert 100 < flips < 200
    assert t(x, generator(5, 1, 2)).equal(t(x, generator(5, 1, 2)))  # same seed, same crop


def test_torchvision_preset():
    x = coords(16, 16)
    full = TrainTransform(preset="torchvision", crop_size=16, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    for i in range(20):
        out = full(x, generator(1, 0, i))
        assert out.equal(x) or out.equal(x.flip(-1))
    t = TrainTransform(preset="torchvision", crop_size=8)
    assert t(coords(40, 30), generator(0)).shape == (3, 8, 8)
    for i in range(200):  # boxes obey scale and ratio (up to rounding)
        top, left, h, w = t.random_resized_box(100, 120, generator(2, 0, i))
        assert 0 <= top <= 100 - h and 0 <= left <= 120 - w
        assert 0.08 - 0.01 <= h * w / 12000 <= 1.0
        assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05 or (h, w) in [(100, 120), (100, 100)]


def test_eval_transform_center():
    out = EvalTransform(crop_size=8, resize_size=16)(coords(16, 24))
    assert out[0, :, 0].tolist() == list(range(4, 12)) and out[1, 0].tolist() == list(range(8, 16))


def test_ten_crop_views_and_order():
    out = TenCrop(crop_size=8, resize_size=16)(coords(16, 24))
    assert out.shape == (10, 3, 8, 8)
    corners = [(0, 0), (0, 16), (8, 0), (8, 16), (4, 8)]  # TL, TR, BL, BR, centre
    for k, (top, left) in enumerate(corners):
        assert window(out[k]) == (top, left, False)
        assert window(out[k + 5]) == (top, left, True)
        assert out[k + 5].equal(out[k].flip(-1))


def test_bad_settings():
    with pytest.raises(UserError, match="preset"):
        TrainTransform(preset="fancy")
    with pytest.raises(UserError, match="crop size 300"):
        EvalTransform(crop_size=300, resize_size=256)


# ---------------------------------------------------------------------------------------------------------------
# device ops


def test_to_unit_and_normalize():
    x = torch.tensor([0, 255, 51], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    u = to_unit(x)
    assert u.dtype == torch.float32 and torch.allclose(u[1, :, 1, 1], torch.tensor([0.0, 1.0, 0.2]))
    n = normalize(u, mean=[0.5, 0.5, 0.2], std=[0.5, 0.25, 0.1])
    assert torch.allclose(n[0, :, 0, 0], torch.tensor([-1.0, 2.0, 0.0]), atol=1e-6)  # float32 rounding


def test_pca_noise_statistics():
    c, s = math.cos(0.5), math.sin(0.5)
    vecs = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])  # orthonormal columns
    vals = torch.tensor([0.2, 0.05, 0.01])
    x = torch.zeros(20000, 3, 2, 3)
    out = pca_noise(x, vals, vecs, alpha_std=0.1, generator=generator(3))
    delta = out[:, :, 0, 0]  # (B, 3)
    assert (out == delta[:, :, None, None]).all()  # one colour shift per image, the same on every pixel
    cov = torch.cov(delta.T.double())
    expected = vecs.double() @ torch.diag((0.1 * vals.double()) ** 2) @ vecs.double().T
    assert torch.allclose(cov, expected, atol=2e-5), (cov, expected)
    assert delta.mean(0).abs().max() < 1e-3
    assert pca_noise(x, vals, vecs, generator=generator(3)).equal(out)  # deterministic for a seed
    assert not pca_noise(x, vals, vecs, generator=generator(4)).equal(out)
