"""The built-in data set: layout, determinism, no shortcut through the mean colour, and the object boxes."""

import io
import json
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
    assert len(json.loads((out / "boxes.json").read_text())) == 9  # data synth writes the object boxes
    with pytest.raises(SystemExit) as e:  # argparse's one line
        main(["data", "synth", str(out), "--classes", "11"])
    assert e.value.code == 2 and "argument --classes: 11 is outside [2, 10]" in capsys.readouterr().err
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


# ----------------------------------------------------------------------------------------------------------------
# object boxes (boxes.json) for the pointing game of alexnet explain


def test_recording_boxes_left_the_images_unchanged():
    """The pixels of the first images of every class, both splits, at two sizes, hashed with the generator as it was
    before boxes were recorded (commit 5106711): recording the box must not draw any extra random number."""
    import hashlib

    from alexnet.data.synthetic import draw

    expected = {64: "004f3b9d1b540979b242b1fb258087593860fbe794bc8f267166ba6df689c648",
                32: "7fc73594ed75c4cddfdd8aec7f59f81021146f9c8c5db1ae5cc17b8cec837f6d"}  # fmt: skip
    for size, digest in expected.items():
        h = hashlib.sha256()
        for split in (0, 1):
            for c in range(len(CLASSES)):
                for i in range(3):
                    pixels, _ = draw(c, np.random.default_rng([0, split, c, i]), size)
                    h.update(pixels.tobytes())
        assert h.hexdigest() == digest, size


def test_boxes_hold_the_object_tightly(tmp_path):
    """Every pixel that differs clearly from the background lies in its image's box (1 px of JPEG slack), and for
    the shapes the box is tight: each side of it has object pixels within 2 px. Textures: the box is the patch, whose
    outer band may be background-coloured, so only the first check applies."""
    from alexnet.data.synthetic import read_boxes

    root = make_synthetic(tmp_path, classes=10, per_class=1, val_per_class=12, size=64, seed=3, show_progress=False)
    boxes = read_boxes(root)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    assert sorted(boxes) == files  # one box per image, keyed by its relative path
    for key in files:
        x0, y0, x1, y1 = boxes[key]
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        img = decode_image(root / key).permute(1, 2, 0).float().numpy()  # (64, 64, 3)
        inside = np.zeros((64, 64), dtype=bool)
        inside[y0:y1, x0:x1] = True
        background = np.median(img[~inside], axis=0) if (~inside).sum() > 50 else None
        if background is None:  # the object fills (nearly) the whole image
            continue
        far = np.linalg.norm(img - background, axis=-1) > 80  # object colour: > 150 from the background's
        slack = np.zeros_like(inside)
        slack[max(y0 - 1, 0) : y1 + 1, max(x0 - 1, 0) : x1 + 1] = True
        assert not (far & ~slack).any(), f"{key}: object pixels outside its box {boxes[key]}"
        if key.split("/")[1] in ("horizontal-stripes", "vertical-stripes", "checkerboard"):
            continue
        ys, xs = np.nonzero(far)
        assert ys.min() <= y0 + 2 and ys.max() >= y1 - 3 and xs.min() <= x0 + 2 and xs.max() >= x1 - 3, key


def test_boxes_file_is_replaced_with_the_images_and_refused_when_missing(tmp_path):
    from alexnet.data.synthetic import BOXES, read_boxes

    out = make_synthetic(tmp_path / "s", classes=3, per_class=2, val_per_class=1, size=16)
    assert len(read_boxes(out)) == 9
    make_synthetic(out, classes=2, per_class=1, val_per_class=0, size=16, overwrite=True)
    assert sorted(read_boxes(out)) == ["train/circle/circle_00000.jpg", "train/ring/ring_00000.jpg"]
    (out / BOXES).unlink()
    with pytest.raises(UserError, match=r"no boxes\.json"):
        read_boxes(out)
    (out / BOXES).write_text('{"a": [1, 2]}')
    with pytest.raises(UserError, match="not a valid boxes file"):
        read_boxes(out)


def test_an_interrupted_overwrite_leaves_no_stale_boxes(tmp_path, monkeypatch):
    from alexnet.data import synthetic

    out = make_synthetic(tmp_path / "s", classes=2, per_class=2, val_per_class=0, size=16)
    draw, calls = synthetic.draw, []

    def failing_draw(*args, **kwargs):  # Ctrl-C at the third image
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return draw(*args, **kwargs)

    monkeypatch.setattr(synthetic, "draw", failing_draw)
    with pytest.raises(KeyboardInterrupt):
        make_synthetic(out, classes=2, per_class=2, val_per_class=0, size=16, overwrite=True)
    assert not (out / synthetic.BOXES).exists()  # no boxes.json describing images that are no longer there


def test_the_built_in_set_is_rebuilt_with_boxes(tmp_path, monkeypatch):
    from alexnet.data import synthetic

    monkeypatch.setattr(synthetic, "DEFAULT", {"classes": 2, "per_class": 2, "val_per_class": 1, "size": 16, "seed": 0})
    (tmp_path / "synthetic-v1" / "train").mkdir(parents=True)  # a cached copy from before boxes existed
    root = synthetic.default_synthetic(tmp_path)
    assert root.name == f"synthetic-v{synthetic._VERSION}" and synthetic._VERSION >= 2
    assert len(synthetic.read_boxes(root)) == 6
