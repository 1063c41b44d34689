"""The built-in data set: layout, determinism, and no shortcut through the mean colour."""

import io
import sys

import numpy as np
import pytest

from alexnet.cli import main
from alexnet.data.decode import decode_image
from alexnet.data.sources import open_splits
from alexnet.data.synthetic import CLASSES, make_synthetic
from alexnet.errors import UserError


def test_layout_and_determinism(tmp_path):
    a = make_synthetic(tmp_path / "a", classes=4, per_class=3, val_per_class=2, size=32, seed=7)
    b = make_synthetic(tmp_path / "b", classes=4, per_class=3, val_per_class=2, size=32, seed=7)
    c = make_synthetic(tmp_path / "c", classes=4, per_class=3, val_per_class=2, size=32, seed=8)
    files = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert len(files) == 4 * 5
    assert {p.parts[1] for p in files} == set(CLASSES[:4])
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)  # same seed, same bytes
    assert sum((a / f).read_bytes() != (c / f).read_bytes() for f in files) == len(files)
    assert decode_image(a / files[0]).shape == (3, 32, 32)
    assert (a / files[0]).read_bytes()[:2] == b"\xff\xd8"  # JPEG


def test_mean_colour_is_no_shortcut(tmp_path):
    root = make_synthetic(tmp_path, classes=10, per_class=40, val_per_class=30, size=32, seed=1)
    train, val = open_splits(str(root))

    def means(split):
        return np.stack([split.load(i).float().mean(dim=(1, 2)).numpy() for i in range(len(split))])

    xt, yt, xv, yv = means(train), np.array(train.labels), means(val), np.array(val.labels)
    centroids = np.stack([xt[yt == c].mean(0) for c in range(10)])
    pred = np.argmin(((xv[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    acc = (pred == yv).mean()
    assert acc < 0.3, f"nearest centroid on mean RGB gets {acc:.0%}: colours give the class away"
    # the images are not blank: foreground and background differ visibly in every image
    assert min(float(train.load(i).float().std()) for i in range(0, len(train), 37)) > 10


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "s"
    argv = ["data", "synth", str(out), "--classes", "3", "--per-class", "2", "--val-per-class", "1", "--size", "24"]
    assert main(argv) == 0
    assert len(list(out.rglob("*.jpg"))) == 9 and "wrote 9 images" in capsys.readouterr().out
    assert main(["data", "synth", str(out), "--classes", "11"]) == 2
    assert "2 to 10 classes" in capsys.readouterr().err
    assert main(argv) == 2  # again into the same folder: refused, nothing merged
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{out}: folder is not empty" in err
    assert len(list(out.rglob("*.jpg"))) == 9


def test_a_non_empty_folder_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "s"
    make_synthetic(out, classes=3, per_class=2, val_per_class=1, size=16)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"not empty.*--overwrite"):
        make_synthetic(out, classes=2, per_class=1, val_per_class=0, size=16)
    assert len(list(out.rglob("*.jpg"))) == 9  # untouched
    make_synthetic(out, classes=2, per_class=1, val_per_class=0, size=16, overwrite=True)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
    assert files == ["train/circle/circle_00000.jpg", "train/ring/ring_00000.jpg"]  # the old set is gone, not merged
    assert (out / "notes.txt").read_text() == "mine"  # only train/ and val/ are replaced
    (tmp_path / "f").write_text("")
    with pytest.raises(UserError, match="not a folder"):
        make_synthetic(tmp_path / "f", classes=2, per_class=1, size=16)


def test_progress_bar_on_a_terminal(tmp_path, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Terminal()
    monkeypatch.setattr(sys, "stderr", tty)
    make_synthetic(tmp_path / "a", classes=2, per_class=3, val_per_class=1, size=16)
    assert "synth: 100%" in tty.getvalue() and "8/8" in tty.getvalue()
    tty.truncate(0)
    make_synthetic(tmp_path / "b", classes=2, per_class=3, val_per_class=1, size=16, show_progress=False)
    assert tty.getvalue() == ""


def test_no_val_split(tmp_path):
    root = make_synthetic(tmp_path, classes=2, per_class=1, val_per_class=0, size=16)
    assert not (root / "val").exists()
    train, val = open_splits(str(root))
    assert len(train) == 2 and val is None
