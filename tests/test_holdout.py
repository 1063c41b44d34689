"""The held-out validation split of a folder of class sub-folders: stratified counts, the same files for the same
seed, stored in the run and used again by resume, evaluate and plot; data check and train agree on it."""

import json
import shutil
from pathlib import Path

import pytest

from alexnet.cli import main
from alexnet.data.check import check_dataset, format_report
from alexnet.data.holdout import hold_out, val_count
from alexnet.data.split import Split
from alexnet.data.synthetic import make_synthetic

FLAGS = ["--device", "cpu", "--precision", "fp32", "--channels-last", "off", "--in-memory", "off", "--workers", "0",
         "--batch-size", "6", "--image-size", "64", "--resize-size", "72", "--max-steps-per-epoch", "1",
         "--log-every", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """One folder of class sub-folders (no train/val): 3 classes of 12, 9 and 2 images of 64 px."""
    src = make_synthetic(tmp_path_factory.mktemp("synth"), classes=3, per_class=12, val_per_class=1, size=64)
    out = tmp_path_factory.mktemp("photos") / "photos"
    shutil.copytree(Path(src) / "train", out)
    for name, keep in (("ring", 9), ("square", 2)):
        for f in sorted((out / name).iterdir())[keep:]:
            f.unlink()
    return out


def _split(sizes):
    items = [f"/d/c{c}/{i}.png" for c, n in enumerate(sizes) for i in range(n)]
    labels = [c for c, n in enumerate(sizes) for _ in range(n)]
    return Split("photos", items, labels, [f"c{c}" for c in range(len(sizes))], "/d")


def test_the_held_out_split_is_stratified_with_one_image_of_every_class_that_has_two():
    assert [val_count(n, 0.2) for n in (0, 1, 2, 3, 10, 12, 1000)] == [0, 0, 1, 1, 2, 2, 200]
    assert val_count(10, 0.95) == 9 and val_count(10, 0.0) == 0  # a class keeps a training image; 0 = none
    train, val = hold_out(_split([10, 5, 2, 1]), 0.2, seed=0)
    count = lambda s, c: sum(y == c for y in s.labels)  # noqa: E731
    assert [count(val, c) for c in range(4)] == [2, 1, 1, 0]
    assert [count(train, c) for c in range(4)] == [8, 4, 1, 1]
    assert not set(train.items) & set(val.items) and len(train) + len(val) == 18
    assert (train.name, val.name) == ("train", "val")


def test_the_same_seed_holds_out_the_same_files_and_another_seed_others():
    split = _split([50, 50])
    a, b, c = (hold_out(split, 0.2, seed=s)[1].items for s in (7, 7, 8))
    assert a == b and a != c and len(a) == len(c) == 20
    assert a == sorted(a, key=split.items.index)  # files keep their order


def test_data_check_says_what_train_holds_out_and_train_does_it(photos, tmp_path, capsys):
    """`data check` and `train` agree: the same counts held out, of the same files (split.json); evaluate without
    DATA scores exactly those; resuming with an image added to the folder keeps the split (the new one is unused)."""
    report = check_dataset(str(photos), progress=False)
    assert report["ok"] and report["held_out"] == {"train": 18, "val": 5, "val_fraction": 0.2}
    assert report["splits"]["val"]["per_class"] == {"circle": 2, "ring": 2, "square": 1}
    text = format_report(report)
    assert "will have held out 20% for validation: 5 of 23 images, stratified by class; --val-fraction" in text
    assert "no val split" not in text
    capsys.readouterr()

    run = tmp_path / "run"
    assert main(["train", str(photos), "--out", str(run), "--epochs", "1", *FLAGS]) == 0
    out = capsys.readouterr().out
    assert out.count("held out 20% for validation: 5 of 23 images, stratified by class") == 1
    assert "warning: no validation split" not in out
    split = json.loads((run / "split.json").read_text())
    assert split["classes"] == ["circle", "ring", "square"] and (split["seed"], split["val_fraction"]) == (0, 0.2)
    assert len(split["train"]) == 18 and len(split["val"]) == 5 and not set(split["train"]) & set(split["val"])
    assert all(not Path(p).is_absolute() and (photos / p).is_file() for p in split["val"])
    assert sorted(split["val"]) == sorted(str(Path(p).relative_to(photos)) for p in _val_files(photos, report))

    assert (
        main(["evaluate", str(run / "checkpoints" / "last.pt"), "--device", "cpu", "--out", str(tmp_path / "e.json")])
        == 0
    )
    assert json.loads((tmp_path / "e.json").read_text())["count"] == 5  # the held-out images, not all 23

    extra = photos / "ring" / "zz-added.png"  # a new photo: the resumed run keeps the stored split
    shutil.copy(next((photos / "ring").iterdir()), extra)
    try:
        capsys.readouterr()
        assert main(["train", str(photos), "--out", str(run), "--resume", "auto", *FLAGS]) == 0
        out = capsys.readouterr().out
        assert "validation: the run's held-out split (5 of 23 images)" in out and "held out 20%" not in out
        assert json.loads((run / "split.json").read_text()) == split
        assert main(["evaluate", str(run / "checkpoints" / "last.pt"), "--device", "cpu",
                     "--out", str(tmp_path / "e2.json")]) == 0  # fmt: skip
        assert json.loads((tmp_path / "e2.json").read_text())["count"] == 5
    finally:
        extra.unlink()


def _val_files(photos, report):
    """The val files data check held out (its report names the split's root only: make the split again)."""
    from alexnet.data.holdout import with_holdout
    from alexnet.data.sources import open_dataset

    return with_holdout(open_dataset(photos), report["held_out"]["val_fraction"], 0)[0].val.items


def test_val_fraction_zero_or_train_dir_alone_trains_without_validation_and_says_so(photos, tmp_path, capsys):
    assert (
        main(["train", str(photos), "--out", str(tmp_path / "a"), "--epochs", "1", "--val-fraction", "0", *FLAGS]) == 0
    )
    out = capsys.readouterr().out
    assert out.count("warning: no validation split: best.pt is chosen by train loss") == 1
    assert "or a --val-fraction above 0" in out and not (tmp_path / "a" / "split.json").exists()
    assert main(["train", "--train-dir", str(photos), "--out", str(tmp_path / "b"), "--epochs", "1", *FLAGS]) == 0
    out = capsys.readouterr().out
    assert out.count("warning: no validation split") == 1 and "give --val-dir, or pass the folder as DATA" in out
    report = check_dataset(str(photos), progress=False, val_fraction=0.0)
    assert "held_out" not in report and any("no val split" in w for w in report["warnings"])
