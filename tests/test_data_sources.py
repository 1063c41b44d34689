"""Sources: image folders, ImageNet's flat val (LOC csv, devkit), CIFAR archives, the built-in data set."""

import io
import os
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from alexnet.data import synthetic
from alexnet.data.sources import UnlabelledValError, open_splits
from alexnet.errors import UserError


def img(path, colour=(10, 20, 30), size=(6, 4), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=fmt or ("PNG" if path.suffix.lower() == ".png" else "JPEG"))
    return str(path)


def test_image_folders(tmp_path):
    img(tmp_path / "train/zebra/1.jpg")
    img(tmp_path / "train/zebra/2.PNG")
    img(tmp_path / "train/apple/a.jpeg")
    img(tmp_path / "train/apple/sub/b.png")  # nested folders count for their class
    (tmp_path / "train/apple/readme.txt").write_text("not an image")
    img(tmp_path / "train/apple/.hidden.jpg")
    img(tmp_path / "val/zebra/v.png", colour=(255, 0, 0))  # val has only one of the classes
    train, val = open_splits(str(tmp_path))
    assert train.classes == ["apple", "zebra"] and val.classes == ["apple", "zebra"]
    names = {os.path.relpath(p, tmp_path): y for p, y in zip(train.items, train.labels)}
    assert names == {
        "train/apple/a.jpeg": 0,
        "train/apple/sub/b.png": 0,
        "train/zebra/1.jpg": 1,
        "train/zebra/2.PNG": 1,
    }
    assert len(train) == 4 and list(val.labels) == [1]  # zebra keeps the train label 1
    assert val.load(0).shape == (3, 4, 6) and val.load(0)[:, 0, 0].tolist() == [255, 0, 0]
    assert val.describe(0).endswith("val/zebra/v.png")


def test_explicit_dirs_and_val_class_missing_from_train(tmp_path):
    img(tmp_path / "t/a/1.png")
    img(tmp_path / "t/b/1.png")
    img(tmp_path / "v/b/1.png")
    train, val = open_splits(None, train_dir=str(tmp_path / "t"), val_dir=str(tmp_path / "v"))
    assert train.classes == ["a", "b"] and list(val.labels) == [1]
    img(tmp_path / "v/c/1.png")
    with pytest.raises(UserError, match=r"classes not in train: c"):
        open_splits(None, train_dir=str(tmp_path / "t"), val_dir=str(tmp_path / "v"))


def test_a_data_folder_with_train_or_val_dirs_is_refused_not_half_ignored(tmp_path):
    """``alexnet train DATA --val-dir WRONG`` validated on DATA/val and stored the wrong path in config.json; DATA
    with --train-dir ignored DATA."""
    from alexnet.data.sources import open_dataset

    img(tmp_path / "d/train/a/1.png")
    img(tmp_path / "d/train/b/1.png")
    img(tmp_path / "v/a/1.png")
    data = str(tmp_path / "d")
    with pytest.raises(UserError, match="goes with --train-dir"):
        open_dataset(data, val_dir=str(tmp_path / "v"))
    with pytest.raises(UserError, match="not both"):
        open_dataset(data, train_dir=data + "/train", val_dir=str(tmp_path / "v"))
    with pytest.raises(UserError, match=r"--val-dir .*nope: no such folder"):
        open_dataset(None, train_dir=data + "/train", val_dir=str(tmp_path / "nope"))
    assert len(open_dataset(None, train_dir=data + "/train", val_dir=str(tmp_path / "v")).val) == 1


def test_no_train_folder(tmp_path):
    img(tmp_path / "cats/1.png")
    with pytest.raises(UserError, match=r"no train/ folder"):
        open_splits(str(tmp_path))
    with pytest.raises(UserError, match="no such file"):
        open_splits(str(tmp_path / "missing"))


WNIDS = ["n01440764", "n01443537", "n01484850"]


def imagenet(tmp_path):
    for w in WNIDS:
        img(tmp_path / f"train/{w}/{w}_1.JPEG")
    for i in range(1, 5):
        img(tmp_path / f"val/ILSVRC2012_val_{i:08d}.JPEG")
    return tmp_path


def test_imagenet_flat_val_loc_csv(tmp_path):
    root = imagenet(tmp_path)
    rows = ["ImageId,PredictionString"]
    truth = {1: WNIDS[2], 2: WNIDS[0], 3: WNIDS[1], 4: WNIDS[2]}
    rows += [f"ILSVRC2012_val_{i:08d},{w} 1 2 30 40 {w} 5 6 7 8" for i, w in truth.items()]
    (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    train, val = open_splits(str(root))
    assert train.classes == WNIDS  # a subset of ImageNet keeps its wnids
    assert list(val.labels) == [2, 0, 1, 2]


def test_imagenet_flat_val_without_labels_is_a_clear_error(tmp_path):
    root = imagenet(tmp_path)
    with pytest.raises(UnlabelledValError) as e:
        open_splits(str(root))
    msg = str(e.value)
    assert "LOC_val_solution.csv" in msg and "ILSVRC2012_devkit_t12.tar.gz" in msg and "meta.mat" in msg
    assert str(root / "val") in msg and len(e.value.train) == 3


def _devkit_files(order):
    """meta.mat + ground truth, with ILSVRC2012_IDs deliberately not in sorted-wnid order."""
    sio = pytest.importorskip("scipy.io", reason="reading the devkit's meta.mat needs scipy")
    dt = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    synsets = np.array([(i + 1, w, f"words {w}", 0) for i, w in enumerate(order)], dtype=dt)
    buf = io.BytesIO()
    sio.savemat(buf, {"synsets": synsets})
    # val image k has ground-truth ID truth[k-1]
    truth = b"1\n3\n2\n1\n"
    return buf.getvalue(), truth


@pytest.mark.parametrize("form", ["tar.gz", "extracted"])
def test_imagenet_flat_val_devkit(tmp_path, form):
    order = [WNIDS[1], WNIDS[2], WNIDS[0]]  # ID 1 -> n01443537, ID 2 -> n01484850, ID 3 -> n01440764
    meta, truth = _devkit_files(order)
    root = imagenet(tmp_path)
    if form == "extracted":
        d = root / "ILSVRC2012_devkit_t12/data"
        d.mkdir(parents=True)
        (d / "meta.mat").write_bytes(meta)
        (d / "ILSVRC2012_validation_ground_truth.txt").write_bytes(truth)
    else:
        with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
            for name, data in [("meta.mat", meta), ("ILSVRC2012_validation_ground_truth.txt", truth)]:
                info = tarfile.TarInfo(f"ILSVRC2012_devkit_t12/data/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    _, val = open_splits(str(root))
    # IDs 1,3,2,1 -> wnids n01443537, n01440764, n01484850, n01443537 -> sorted-wnid labels 1, 0, 2, 1
    assert list(val.labels) == [1, 0, 2, 1]


def test_imagenet_val_in_wnid_folders(tmp_path):
    for w in WNIDS:
        img(tmp_path / f"train/{w}/a.JPEG")
    img(tmp_path / f"val/{WNIDS[1]}/ILSVRC2012_val_00000001.JPEG")
    _, val = open_splits(str(tmp_path))
    assert list(val.labels) == [1]


# ---------------------------------------------------------------------------------------------------------------
# CIFAR in the real python format: dicts with bytes keys, b"data" (N, 3072) uint8 = R plane, G plane, B plane


def cifar_batch(n, offset, key):
    data = np.zeros((n, 3072), dtype=np.uint8)
    for k in range(n):
        data[k, :1024] = offset + k  # R plane
        data[k, 1024:2048] = 100  # G plane
        data[k, 2048:] = 200  # B plane
        data[k, 1] = 7  # R at row 0, column 1
        data[k, 32] = 9  # R at row 1, column 0
    return pickle.dumps({b"data": data, key: [(offset + k) % 3 for k in range(n)], b"batch_label": b"x"})


def cifar_files(kind):
    if kind == 10:
        files = {f"data_batch_{i}": cifar_batch(2, 10 * i, b"labels") for i in range(1, 6)}
        files["test_batch"] = cifar_batch(3, 100, b"labels")
        files["batches.meta"] = pickle.dumps({b"label_names": [b"airplane", b"automobile", b"bird"]})
        return "cifar-10-batches-py", "cifar-10-python.tar.gz", files
    files = {"train": cifar_batch(4, 0, b"fine_labels"), "test": cifar_batch(2, 50, b"fine_labels")}
    files["meta"] = pickle.dumps({b"fine_label_names": [b"apple", b"aquarium_fish", b"baby"]})
    return "cifar-100-python", "cifar-100-python.tar.gz", files


@pytest.mark.parametrize("kind", [10, 100])
@pytest.mark.parametrize("form", ["archive", "folder", "parent"])
def test_cifar(tmp_path, kind, form):
    inner, archive, files = cifar_files(kind)
    if form == "archive":
        src = tmp_path / archive
        with tarfile.open(src, "w:gz") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(f"{inner}/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    else:
        (tmp_path / inner).mkdir()
        for name, data in files.items():
            (tmp_path / inner / name).write_bytes(data)
        src = tmp_path / inner if form == "folder" else tmp_path
    train, val = open_splits(str(src))
    assert train.classes == (["airplane", "automobile", "bird"] if kind == 10 else ["apple", "aquarium_fish", "baby"])
    assert len(train) == (10 if kind == 10 else 4) and len(val) == (3 if kind == 10 else 2)
    x = train.load(1)
    assert x.shape == (3, 32, 32) and x.dtype.is_floating_point is False
    first = 10 + 1 if kind == 10 else 1
    assert x[0, 5, 5] == first and x[1, 5, 5] == 100 and x[2, 5, 5] == 200
    assert x[0, 0, 1] == 7 and x[0, 1, 0] == 9  # row-major planes: (row 0, col 1) and (row 1, col 0)
    expected = [10 % 3, 11 % 3, 20 % 3] if kind == 10 else [0, 1, 2]
    assert list(train.labels[:3]) == expected
    assert train.describe(3) == f"cifar-{kind} train #3"


def test_cifar_pickle_with_code_is_refused(tmp_path):
    inner, _, files = cifar_files(10)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    files["batches.meta"] = pickle.dumps({b"label_names": Evil()})
    (tmp_path / inner).mkdir()
    for name, data in files.items():
        (tmp_path / inner / name).write_bytes(data)
    with pytest.raises(UserError, match=r"batches.meta.*refusing to load"):
        open_splits(str(tmp_path))


def test_default_synthetic_created_once(tmp_path, monkeypatch):
    monkeypatch.setitem(synthetic.DEFAULT, "per_class", 2)
    monkeypatch.setitem(synthetic.DEFAULT, "val_per_class", 1)
    monkeypatch.setitem(synthetic.DEFAULT, "size", 16)
    train, val = open_splits(None, cache_dir=str(tmp_path))
    assert len(train) == 20 and len(val) == 10 and train.classes == sorted(synthetic.CLASSES)
    assert [p.name for p in tmp_path.iterdir()] == [f"synthetic-v{synthetic._VERSION}"]  # no temp folder left behind
    stamp = os.path.getmtime(train.items[0])
    monkeypatch.setattr(synthetic, "make_synthetic", lambda *a, **k: pytest.fail("rebuilt"))
    train2, _ = open_splits(None, cache_dir=str(tmp_path))
    assert train2.items == train.items and os.path.getmtime(train.items[0]) == stamp


def test_training_on_one_class_is_refused(tmp_path):
    """``alexnet train`` on one class folder trained and reported 100% top-1 where ``alexnet data check`` said
    "classification needs at least 2"."""
    from alexnet.config import resolve_config
    from alexnet.data.pipeline import open_training_data

    for i in range(4):
        img(tmp_path / f"d/train/only/{i}.png")
    cfg = resolve_config("fast", flags={"data": str(tmp_path / "d")})
    with pytest.raises(UserError, match="training images are of 1 class; classification needs at least 2"):
        open_training_data(cfg, log=lambda line: None)
    img(tmp_path / "d/train/other/0.png")
    assert open_training_data(cfg, log=lambda line: None).classes == ["only", "other"]


def photos(root, heic=8, jpg=16):
    """A new user's trial: ``heic`` of the photos are iPhone .heic (not read), plus a note, a labelImg box file and
    the files an OS writes (never counted)."""
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True, exist_ok=True)
    for i in range(jpg):
        img(root / ("cat" if i % 2 else "dog") / f"IMG_{i}.jpg")
    for i in range(heic):
        (root / ("cat" if i % 2 else "dog") / f"IMG_{100 + i}.HEIC").write_bytes(b"ftypheic")
    (root / "cat/notes.txt").write_text("taken in May")
    (root / "dog/Thumbs.db").write_bytes(b"\0")
    (root / "dog/.DS_Store").write_bytes(b"\0")
    (root / "dog/.ipynb_checkpoints").mkdir()
    (root / "dog/.ipynb_checkpoints/x-checkpoint.ipynb").write_text("{}")


def test_files_that_are_not_images_are_counted_once_per_folder_not_left_out_silently(tmp_path):
    """8 of 24 photos were .heic: train took 16 and said nothing. The listing now says what it left out and why."""
    from alexnet.config import resolve_config
    from alexnet.data.pipeline import open_training_data

    photos(tmp_path / "d/train")
    img(tmp_path / "d/val/cat/v.jpg")
    img(tmp_path / "d/val/dog/v.jpg")
    (tmp_path / "d/val/dog/v.json").write_text("{}")  # a sidecar alone: quiet in train
    lines: list[str] = []
    data = open_training_data(resolve_config("fast", flags={"data": str(tmp_path / "d")}), log=lines.append)
    assert len(data.train) == 16  # which files are images did not change
    said = [line for line in lines if "left out" in line]
    assert said == [
        f"warning: {tmp_path}/d/train: left out 9 of 25 files, not image file names: .heic (8), .txt (1), e.g. "
        f"{tmp_path}/d/train/cat/IMG_101.HEIC, {tmp_path}/d/train/cat/notes.txt; convert photos (.heic, .jp2, "
        ".jfif) to .jpg or .png to use them"
    ]
    val = [lo for lo in data.left_out if lo.where.endswith("val")]
    assert val[0].counts == {".json": 1} and val[0].line() is None and "sidecars" in val[0].line(sidecars=True)
    (tmp_path / "d/train/cat/x\x1b[31m\n.jp2").write_bytes(b"")  # a name holding an escape and a line break
    again = open_training_data(resolve_config("fast", flags={"data": str(tmp_path / "d")}), log=lines.append)
    line = again.left_out[0].line()
    assert line is not None and "\x1b" not in line and "\n" not in line and "x\\x1b[31m\\n.jp2" in line


def test_a_folder_of_only_unreadable_photos_says_what_it_holds(tmp_path):
    photos(tmp_path / "train", heic=3, jpg=0)
    with pytest.raises(UserError, match=r"no images .* in its class folders; .*left out 4 of 4 files.*\.heic \(3\)"):
        open_splits(str(tmp_path))
