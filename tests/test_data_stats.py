"""Colour statistics against numpy on the very same pixels."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from alexnet.cli import main
from alexnet.data import stats as stats_mod
from alexnet.data.sources import open_splits
from alexnet.data.stats import compute_stats, load_or_compute_stats


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    arrays = []
    for k, (h, w) in enumerate([(8, 12), (10, 10), (5, 7)]):
        a = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
        a[..., 1] = a[..., 0] // 2 + a[..., 1] // 4  # correlated channels: a non-trivial covariance
        d = tmp_path / "train" / f"c{k % 2}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(d / f"{k}.png")
        arrays.append(a)
    return tmp_path, arrays


def reference(arrays):
    px = np.concatenate([a.reshape(-1, 3) for a in arrays]).astype(np.float64) / 255
    cov = np.cov(px.T, bias=True)
    vals, vecs = np.linalg.eigh(cov)
    return px.mean(0), px.std(0), vals[::-1], vecs[:, ::-1]


@pytest.mark.parametrize("workers", [0, 2])
def test_stats_match_numpy(data, workers):
    root, arrays = data
    train, _ = open_splits(str(root))
    s = compute_stats(train, workers=workers, progress=False)
    mean, std, vals, vecs = reference(arrays)
    assert s["images"] == 3 and s["skipped"] == 0
    np.testing.assert_allclose(s["mean"], mean, atol=1e-10)
    np.testing.assert_allclose(s["std"], std, atol=1e-10)
    np.testing.assert_allclose(s["eigvals"], vals, atol=1e-10)
    np.testing.assert_allclose(np.abs((np.array(s["eigvecs"]) * vecs).sum(0)), 1, atol=1e-8)  # same up to sign


def test_skips_bad_files_and_max_images(data):
    root, arrays = data
    (root / "train/c0/bad.jpg").write_bytes(b"garbage")
    train, _ = open_splits(str(root))
    s = compute_stats(train, progress=False)
    assert s["images"] == 3 and s["skipped"] == 1
    np.testing.assert_allclose(s["mean"], reference(arrays)[0], atol=1e-10)
    assert compute_stats(train, max_images=2, progress=False)["images"] + 0 <= 2


def test_cached_in_the_cache_not_in_the_data(data, monkeypatch, capsys):
    root, _ = data
    before = sorted(root.rglob("*"))
    train, _ = open_splits(str(root))
    first = load_or_compute_stats(train, progress=False)
    cached = stats_mod.default_stats_path(train)
    assert cached.is_relative_to(os.environ["ALEXNET_CACHE"])  # conftest: a private cache
    assert json.loads(cached.read_text())["mean"] == first["mean"]
    monkeypatch.setattr(stats_mod, "compute_stats", lambda *a, **k: pytest.fail("recomputed"))
    assert load_or_compute_stats(train, progress=False) == first
    assert load_or_compute_stats(train, progress=False, max_images=5000) == first  # 5,000 of 3 images: all of them
    monkeypatch.undo()
    # data stats without --out: into the same cache file (training reads it back), nothing in the user's folder
    cached.unlink()
    assert main(["data", "stats", str(root)]) == 0
    assert f"written to {cached}" in capsys.readouterr().out
    assert sorted(root.rglob("*")) == before
    monkeypatch.setattr(stats_mod, "compute_stats", lambda *a, **k: pytest.fail("recomputed"))
    assert load_or_compute_stats(train, progress=False, max_images=5000)["mean"] == first["mean"]


def test_cli_stats(data, tmp_path, capsys):
    root, arrays = data
    out = tmp_path / "s.json"
    assert main(["data", "stats", str(root), "--out", str(out)]) == 0
    np.testing.assert_allclose(json.loads(out.read_text())["std"], reference(arrays)[1], atol=1e-10)
    assert str(out) in capsys.readouterr().out


def test_statistics_from_an_older_decoder_are_recomputed(data, monkeypatch):
    # a decoder that turns a file into other pixels (issue: --window auto on 32-bit / float TIFFs) makes the cached
    # mean / std stale though no file changed
    root, _ = data
    train, _ = open_splits(str(root))
    first = load_or_compute_stats(train, progress=False)
    monkeypatch.setattr(stats_mod, "DECODING_VERSION", stats_mod.DECODING_VERSION + 1)
    monkeypatch.setattr(stats_mod, "compute_stats", lambda *a, **k: {**first, "mean": [0.5, 0.5, 0.5]})
    assert load_or_compute_stats(train, progress=False)["mean"] == [0.5, 0.5, 0.5]
