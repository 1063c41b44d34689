"""benchmarks/standin.py, the stand-in for small real photos: layout, determinism, an interrupted write never passes
for a complete set, and no shortcut through the mean colour."""

import numpy as np
import pytest

from tests.benchmark_module import load_benchmark


def _standin():
    return load_benchmark("standin")


@pytest.fixture(scope="module")
def standin():
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    return _standin()


def test_layout_and_determinism(standin, tmp_path):
    a = standin.write_standin(tmp_path / "a", per_class=3, test_per_class=2, size=32)
    b = standin.write_standin(tmp_path / "b", per_class=3, test_per_class=2, size=32)
    c = standin.write_standin(tmp_path / "c", per_class=3, test_per_class=2, size=32, seed=1)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 10 * 5 and {p.suffix for p in files} == {".jpg"}
    assert sorted(p.name for p in a.iterdir()) == ["test", "train"]
    for split, n in (("train", 3), ("test", 2)):
        assert sorted(p.name for p in (a / split).iterdir()) == sorted(standin.CLASSES)
        assert {len(list((a / split / k).iterdir())) for k in standin.CLASSES} == {n}
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)  # same seed, same bytes
    assert sum((a / f).read_bytes() != (c / f).read_bytes() for f in files) == len(files)
    from PIL import Image

    with Image.open(a / files[0]) as im:
        assert im.format == "JPEG" and im.size == (32, 32) and im.mode == "RGB"
    assert not list(tmp_path.glob(".*tmp*"))  # nothing left aside


def test_a_complete_set_is_kept_and_an_interrupted_write_leaves_nothing(standin, tmp_path, monkeypatch):
    out = standin.write_standin(tmp_path / "s", per_class=1, test_per_class=1, size=16)
    before = {p: p.read_bytes() for p in out.rglob("*.jpg")}
    assert standin.write_standin(out, per_class=5, size=16) == out  # complete: returned as it is
    assert {p: p.read_bytes() for p in out.rglob("*.jpg")} == before

    calls = iter(range(1000))

    def draw(c, rng, size=32, hardness=1.0):
        if next(calls) == 7:
            raise KeyboardInterrupt
        return np.zeros((size, size, 3), np.uint8)

    monkeypatch.setattr(standin, "draw", draw)
    with pytest.raises(KeyboardInterrupt):
        standin.write_standin(tmp_path / "t", per_class=2, test_per_class=1, size=16)
    assert sorted(tmp_path.iterdir()) == [tmp_path / "s"]  # no half-written set, no leftovers


def test_mean_colour_is_no_shortcut(standin):
    rng = np.random.default_rng(0)
    per = 30
    x = np.stack([standin.draw(c, np.random.default_rng([5, 0, c, i]), 32).reshape(-1, 3).mean(0)
                  for c in range(10) for i in range(per)])  # fmt: skip
    y = np.repeat(np.arange(10), per)
    idx = rng.permutation(len(y))
    train, test = idx[: len(y) // 2], idx[len(y) // 2 :]
    centroids = np.stack([x[train][y[train] == c].mean(0) for c in range(10)])
    pred = np.argmin(((x[test][:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    acc = (pred == y[test]).mean()
    assert acc < 0.2, f"nearest centroid on mean RGB gets {acc:.0%}: colours give the class away"
    assert float(x.std(0).min()) > 15  # the mean colours do vary (casts, photographs), for every class alike


def test_time_to_accuracy_writes_the_standin_once_under_its_out(tmp_path, monkeypatch):
    tta = load_benchmark("time_to_accuracy")
    standin = tta.standin_module()
    calls = []
    monkeypatch.setattr(standin, "write_standin", lambda out: calls.append(out) or out)
    assert tta.data_path("standin", tmp_path) == str(tmp_path / f"standin-v{standin.VERSION}-data")
    assert calls == [tmp_path / f"standin-v{standin.VERSION}-data"]
    assert tta.data_path("builtin", tmp_path) is None and tta.data_path("/some/folder", tmp_path) == "/some/folder"
