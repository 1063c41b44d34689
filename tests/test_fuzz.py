"""Fuzzing every file format we read: a malformed file either works or raises the project's one-line ``UserError``.

Each case starts from a valid object, replaces one field (or the whole object) with an arbitrary JSON-like value,
writes it where the real file would be, and opens it as the commands do. Any exception other than ``UserError``
(``KeyError``, ``TypeError``, ``IndexError``, a NaN that gets through...) fails the test.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis", reason="the fuzz suite needs hypothesis: pip install 'alexnet[dev]'")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from alexnet.data import packed as P  # noqa: E402
from alexnet.data.sources import open_dataset, open_splits  # noqa: E402
from alexnet.data.stats import load_or_compute_stats  # noqa: E402
from alexnet.errors import UserError  # noqa: E402
from alexnet.model import create_model  # noqa: E402
from alexnet.preprocess import Preprocess  # noqa: E402
from alexnet.weights import model_from_file, model_from_info  # noqa: E402

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


def mutate(obj: dict, data: st.DataObject, fields: list[str]) -> dict:
    """``obj`` with one field (possibly nested, ``a.b``) replaced by an arbitrary value, or deleted."""
    out = copy.deepcopy(obj)
    path = data.draw(st.sampled_from(fields)).split(".")
    target = out
    for key in path[:-1]:
        target = target[key]
    if data.draw(st.booleans()):
        target.pop(path[-1], None)
    else:
        target[path[-1]] = data.draw(values)
    return out


def works_or_user_error(fn) -> None:
    with contextlib.suppress(UserError):
        fn()


# ---------------------------------------------------------------------------------------------------------------------
# preprocessing (checkpoints, sidecars, ONNX metadata all go through it)

PRE = Preprocess(crop=64, resize=73).to_dict()


@SETTINGS
@given(st.data())
def test_preprocess(data):
    d = mutate(PRE, data, list(PRE)) if data.draw(st.booleans()) else data.draw(values)

    def check():
        pre = Preprocess.from_dict(d, source="x.json")
        assert pre.crop >= 63 and all(v > 0 for v in pre.std)

    works_or_user_error(check)


# ---------------------------------------------------------------------------------------------------------------------
# packs: manifest and labels


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    class Tiny:
        def __init__(self):
            self.name, self.classes, self.labels = "train", ["a", "b", "c"], [0, 1, 2, 1]

        def __len__(self):
            return 4

        def load(self, i):
            return torch.full((3, 10, 12), 40 * i, dtype=torch.uint8)

        def describe(self, i):
            return f"tiny #{i}"

    out = tmp_path_factory.mktemp("fuzz") / "pack"
    P.pack_splits({"train": Tiny()}, out, size=8, workers=0, progress=False)
    return out


MANIFEST_FIELDS = ["size", "resize", "classes", "stats", "splits", "stats.mean", "stats.std", "stats.eigvals",
                   "stats.eigvecs", "splits.train", "splits.train.count", "splits.train.chunk_rows",
                   "splits.train.chunk_blake2b", "splits.train.labels_blake2b", "splits.train.skipped"]  # fmt: skip


def open_and_read(root: Path) -> None:
    ds = open_dataset(root)
    for split in ds.splits.values():
        for i in range(len(split)):
            assert split.load(i).shape[0] == 3 and 0 <= int(split.labels[i]) < len(ds.classes)


@SETTINGS
@given(st.data())
def test_pack_manifest(pack, tmp_path_factory, data):
    root = tmp_path_factory.mktemp("m") / "pack"
    shutil.copytree(pack, root)
    manifest = json.loads((root / P.MANIFEST).read_text())
    bad = mutate(manifest, data, MANIFEST_FIELDS) if data.draw(st.integers(0, 9)) else data.draw(values)
    (root / P.MANIFEST).write_text(json.dumps(bad))
    works_or_user_error(lambda: open_and_read(root))


labels_arrays = st.one_of(
    st.lists(st.integers(-200, 200), max_size=6).map(lambda v: np.asarray(v, dtype=np.int64)),
    st.lists(st.floats(-5, 5), max_size=6).map(lambda v: np.asarray(v, dtype=np.float64)),
    st.lists(st.integers(0, 2), min_size=4, max_size=4).map(lambda v: np.asarray(v, dtype=np.int64).reshape(2, 2)),
    st.lists(st.integers(0, 2), min_size=4, max_size=4).map(lambda v: np.asarray(v, dtype=np.uint8)),
)


@SETTINGS
@given(labels=labels_arrays)
def test_pack_labels(pack, tmp_path_factory, labels):
    root = tmp_path_factory.mktemp("l") / "pack"
    shutil.copytree(pack, root)
    np.save(root / "train" / "labels.npy", labels)
    manifest = json.loads((root / P.MANIFEST).read_text())  # a consistent digest: only the contents are wrong
    manifest["splits"]["train"]["labels_blake2b"] = hashlib.blake2b(
        (root / "train" / "labels.npy").read_bytes(), digest_size=16
    ).hexdigest()
    (root / P.MANIFEST).write_text(json.dumps(manifest))
    works_or_user_error(lambda: open_and_read(root))


# ---------------------------------------------------------------------------------------------------------------------
# CIFAR batches (extracted folder form)


def cifar_batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist()}


CIFAR_GOOD = {f"data_batch_{i}": cifar_batch(3, i) for i in range(1, 6)}
CIFAR_GOOD["test_batch"] = cifar_batch(2, 9)
CIFAR_GOOD["batches.meta"] = {b"label_names": [f"c{i}".encode() for i in range(10)]}

cifar_values = st.one_of(
    values,
    st.lists(st.integers(-3, 12), max_size=5),
    st.tuples(st.integers(0, 4), st.sampled_from([3072, 3000, 1])).map(lambda s: np.zeros(s, dtype=np.uint8)),
    st.just(np.zeros((2, 3072), dtype=np.float32)),
)


@SETTINGS
@given(st.data())
def test_cifar_batches(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("c") / "cifar-10-batches-py"
    root.mkdir()
    files = copy.deepcopy(CIFAR_GOOD)
    name = data.draw(st.sampled_from(sorted(files)))
    key = data.draw(st.sampled_from([*sorted(files[name]), b"other"]))
    if data.draw(st.booleans()):
        files[name].pop(key, None)
    else:
        files[name][key] = data.draw(cifar_values)
    for f, obj in files.items():
        (root / f).write_bytes(pickle.dumps(obj))

    def check():
        train, val = open_splits(str(root))
        for split in (train, val):
            assert all(0 <= y < len(split.classes) for y in split.labels)
            assert split.load(0).shape == (3, 32, 32)

    works_or_user_error(check)


# ---------------------------------------------------------------------------------------------------------------------
# checkpoints and safetensors sidecars


@pytest.fixture(scope="module")
def state_dict():
    return create_model("alexnet", num_classes=3, dropout=0.0).state_dict()


CKPT_FIELDS = ["model", "arch", "classes", "preprocess", "model_kwargs", "num_classes", "config"]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_checkpoint_contents(state_dict, data):
    """What ``read_file`` returns for a checkpoint, one field broken (in memory: a real file is 230 MB)."""
    good = {"arch": "alexnet", "num_classes": 3, "model_kwargs": {"dropout": 0.0}, "model": state_dict,
            "classes": ["a", "b", "c"], "preprocess": PRE, "config": {}}  # fmt: skip
    field = data.draw(st.sampled_from(CKPT_FIELDS))
    bad = dict(good)
    if field == "model":  # a model whose head is missing, scalar or mis-shaped, or whose conv1 is
        sd = dict(state_dict)
        key = data.draw(st.sampled_from(["classifier.6.weight", "features.0.weight", "classifier.6.bias"]))
        choice = data.draw(st.sampled_from(["drop", "scalar", "shape"]))
        if choice == "drop":
            sd.pop(key)
        else:
            sd[key] = torch.tensor(1.0) if choice == "scalar" else torch.zeros(3, 7)
        bad["model"] = sd
    elif data.draw(st.booleans()):
        bad.pop(field, None)
    else:
        bad[field] = data.draw(values)

    def check():
        model, meta = model_from_info(bad, "ck.pt")
        assert len(meta["classes"]) == meta["num_classes"] == model.head.out_features
        assert all(isinstance(c, str) for c in meta["classes"])
        if bad.get("classes") is not None:
            assert meta["classes"] == bad["classes"]  # never re-read: a string split into letters is wrong

    works_or_user_error(check)


@pytest.mark.parametrize("field, value", [("model", [1, 2]), ("model", None), ("version", "2"), ("version", 99)])
def test_checkpoint_file_structure(tmp_path, field, value):
    torch.save({"format": "alexnet-checkpoint", "version": 1, "model": {"w": torch.zeros(1)}, field: value},
               tmp_path / "ck.pt")  # fmt: skip
    with pytest.raises(UserError, match=rf"ck\.pt: .*{field}"):
        model_from_file(tmp_path / "ck.pt")


@pytest.fixture(scope="module")
def safetensors_file(state_dict, tmp_path_factory) -> Path:
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("s") / "m.safetensors"
    save_file({k: v.contiguous() for k, v in state_dict.items()}, path)
    return path


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_safetensors_sidecar(safetensors_file, data):
    root = safetensors_file.parent  # one weights file; each example rewrites its sidecar
    good = {"arch": "alexnet", "num_classes": 3, "classes": ["a", "b", "c"], "preprocess": PRE,
            "model_kwargs": {"dropout": 0.0}}  # fmt: skip
    if data.draw(st.integers(0, 4)):
        (root / "m.json").write_text(json.dumps(mutate(good, data, list(good))))
    else:
        (root / "m.json").write_bytes(data.draw(st.binary(max_size=40)))
    works_or_user_error(lambda: model_from_file(root / "m.safetensors"))


# ---------------------------------------------------------------------------------------------------------------------
# the statistics cache next to a data set


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_stats_cache_is_recomputed_when_malformed(tmp_path_factory, data):
    from alexnet.data.synthetic import make_synthetic

    root = make_synthetic(tmp_path_factory.mktemp("st") / "d", classes=2, per_class=2, val_per_class=0, size=16)
    train, _ = open_splits(str(root))
    good = load_or_compute_stats(train, progress=False)
    cache = root / "alexnet-stats.json"
    stored = json.loads(cache.read_text())
    bad = mutate(stored, data, ["mean", "std", "eigvals", "eigvecs", "fingerprint"])
    cache.write_text(json.dumps(bad))
    again = load_or_compute_stats(train, progress=False)
    assert all(np.isfinite(again["std"])) and min(again["std"]) > 0
    if bad.get("fingerprint") != stored["fingerprint"]:  # computed from other data: recomputed
        assert again["mean"] == pytest.approx(good["mean"]) and again["fingerprint"] == stored["fingerprint"]


@pytest.mark.parametrize("classes", [["a"], [], "abc", [f"c{i}" for i in range(10)], ["a", "b", 3], {"a": 1}])
def test_class_lists_that_do_not_match_the_head(state_dict, classes):
    info = {"arch": "alexnet", "model": state_dict, "classes": classes, "preprocess": PRE}
    with pytest.raises(UserError, match=r"ck\.pt: 'classes' must be a list of 3 names"):
        model_from_info(info, "ck.pt")
