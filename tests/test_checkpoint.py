"""The checkpoint as untrusted input and as output: files that describe more than they hold, settings that refer to
themselves, wrong types, full disks, and names that would rewrite the terminal. Fast: no training."""

import errno
import os
import shutil

import pytest
import torch

from alexnet import checkpoint
from alexnet.checkpoint import Checkpoint, save_payload
from alexnet.cli import main
from alexnet.errors import WeightsError
from alexnet.evaluate import format_report
from alexnet.model import create_model
from alexnet.preprocess import Preprocess
from alexnet.weights import model_from_file, read_file

PRE = Preprocess.for_crop(64).to_dict()


@pytest.fixture(scope="module")
def state_dict():
    return create_model("alexnet", num_classes=3).state_dict()


def _write(path, state_dict, **fields):
    payload = {"arch": "alexnet", "num_classes": 3, "model": state_dict, "classes": ["a", "b", "c"],
               "preprocess": PRE, "model_kwargs": {"dropout": 0.0}, **fields}  # fmt: skip
    save_payload(payload, path)
    return path


def test_round_trip_of_every_field(tmp_path, state_dict):
    ckpt = Checkpoint(model=state_dict, arch="alexnet", classes=["a", "b", "c"],
                      preprocess=Preprocess.for_crop(64), model_kwargs={"dropout": 0.0},
                      config={"data": "d", "batch_size": 6}, epoch=2, batch_in_epoch=1, step=7, total_steps=20,
                      best={"metric": "val_top1", "value": 0.5, "epoch": 2}, epoch_partial=(1.5, 6), elapsed=3.0,
                      optimizer={"state": {}, "param_groups": []}, scheduler={}, scaler={}, rng={})  # fmt: skip
    back = checkpoint.load(ckpt.save(tmp_path / "c.pt"))
    for f in ("arch", "classes", "preprocess", "model_kwargs", "config", "epoch", "batch_in_epoch", "step",
              "total_steps", "best", "epoch_partial", "elapsed", "optimizer"):  # fmt: skip
        assert getattr(back, f) == getattr(ckpt, f), f
    assert back.best_top1 == 0.5 and back.num_classes == 3
    assert set(back.metadata()) == {"arch", "num_classes", "classes", "preprocess", "model_kwargs", "config", "epoch",
                                    "step", "best_top1"}  # fmt: skip


def test_stride_zero_tensors_that_describe_gigabytes_are_refused(tmp_path, state_dict, capsys):
    """issue 20 item 7: a 6 kB file whose 100,000-class head is one float expanded made predict peak at 2.5 GB."""
    sd = {k: torch.zeros(()).expand(v.shape) for k, v in state_dict.items()}  # 4 bytes each, the full shapes
    sd["classifier.6.weight"] = torch.zeros(()).expand(100_000, 4096)
    sd["classifier.6.bias"] = torch.zeros(()).expand(100_000)
    path = _write(tmp_path / "x.pt", sd, classes=None, num_classes=100_000)
    assert path.stat().st_size < 100_000
    with pytest.raises(WeightsError, match=r"x\.pt: its tensors describe [\d,]+ bytes but the file holds"):
        read_file(path)
    assert main(["export", str(path), "--format", "safetensors"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "describe" in err[0], err
    assert not path.with_suffix(".safetensors").exists()


def test_a_config_that_holds_itself_is_refused_before_export(tmp_path, state_dict, capsys):
    """issue 20 item 8: json.dumps of a self-referencing list hung export while memory grew."""
    loop = []
    loop.append(loop)
    path = _write(tmp_path / "loop.pt", state_dict, config={"data": None, "extra": loop})
    assert main(["export", str(path), "--format", "safetensors"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"alexnet export: error: {path}: config refers to itself (or shares parts); refused"], err
    assert not list(tmp_path.glob("loop.*json")) and not path.with_suffix(".safetensors").exists()


@pytest.mark.parametrize("config, expected", [("abc", "'config' must be a table of settings, got str"),
                                              ({"data": 123}, "config data must be a path, got 123")])  # fmt: skip
def test_a_config_of_the_wrong_type_is_one_line(tmp_path, state_dict, capsys, config, expected):
    """issue 20 item 10: evaluate CKPT with config "abc" or {"data": 123} was a traceback."""
    path = _write(tmp_path / "c.pt", state_dict, config=config)
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"alexnet evaluate: error: {path}: {expected}"], err


def test_a_failed_save_names_the_space_it_needed(tmp_path, monkeypatch):
    """issue 20 item 11: torch's "[enforce fail at inline_container.cc] unexpected pos" on a full disk, compared
    against 64 MiB of free space while a checkpoint needs 456 MB, read as "the write failed"."""

    def full(obj, f, *a, **k):
        f.write(b"x" * 1000)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=100 << 20))  # 100 MiB: over 64
    path = tmp_path / "last.pt"
    with pytest.raises(WeightsError) as e:
        save_payload({"model": {"w": torch.zeros(128 << 20, dtype=torch.uint8)}, "optimizer": {"m": torch.zeros(1)}},
                     path)  # fmt: skip
    assert str(e.value).startswith(f"cannot write {path}: no space left on the device (100 MiB free, the checkpoint "
                                   "needs 128 MiB)"), e.value  # fmt: skip
    assert list(tmp_path.iterdir()) == []  # the temp file went with the failure


def test_export_on_a_full_disk_leaves_nothing_and_names_the_path(tmp_path, state_dict, monkeypatch, capsys):
    """issue 20 item 10: a torn .onnx / .safetensors blocked the rerun; pt2 aborted the process (exit 134)."""
    import safetensors.torch

    path = _write(tmp_path / "c.pt", state_dict)

    def full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    assert main(["export", str(path), "--format", "safetensors"]) == 2
    out = path.with_suffix(".safetensors")
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"alexnet export: error: --out {out}: cannot write it (no space left on the device); nothing was "
                   "left behind"], err  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]
    # pt2: torch.export.save aborts the process on a full disk, so the space is checked before writing
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=50 << 20))
    assert main(["export", str(path), "--format", "pt2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    expected = f"alexnet export: error: --out {path.with_suffix('.pt2')}: no space left on the device (50 MiB free"
    assert len(err) == 1 and err[0].startswith(expected) and "about 217 MiB needed" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_model_from_file_gives_typed_fields(tmp_path, state_dict):
    model, info = model_from_file(_write(tmp_path / "c.pt", state_dict, config={"data": "x"}))
    assert info.arch == "alexnet" and info.classes == ["a", "b", "c"] and info.preprocess.crop == 64
    assert info.config == {"data": "x"} and info.optimizer is None and not model.training


def test_class_names_in_reports_cannot_rewrite_the_terminal():
    """issue 20 item 12: tabs and carriage returns in class-folder names reached the terminal raw."""
    names = ["ok\r\x1b[2Kfake", "b\tc"]
    per = {"precision": {n: 0.5 for n in names}, "recall": {n: 0.5 for n in names}, "f1": {n: 0.5 for n in names},
           "support": {n: 1 for n in names}}  # fmt: skip
    report = {"count": 2, "loss": 1.0, "top1": 0.5, "top5": 1.0, "macro": {"precision": 0.5, "recall": 0.5, "f1": 0.5},
              **per}  # fmt: skip
    text = format_report(report)
    assert "\r" not in text and "\x1b" not in text and "\t" not in text
    assert "ok\\r\\x1b[2Kfake" in text and "b\\tc" in text


def test_written_files_get_the_umask_mode_not_mkstemp_0600(tmp_path):
    """Checkpoints and exports were 0600 (mkstemp's mode) where every other output is 0644 under umask 022: a server
    running as another user could not read them."""
    from alexnet.outputs import atomic_file

    old = os.umask(0o022)
    try:
        save_payload({"model": {}}, tmp_path / "c.pt")
        with atomic_file(tmp_path / "e.onnx") as tmp:
            tmp.write_bytes(b"x")
        assert oct((tmp_path / "c.pt").stat().st_mode & 0o777) == oct((tmp_path / "e.onnx").stat().st_mode & 0o777)
        assert (tmp_path / "c.pt").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        save_payload({"model": {}}, tmp_path / "private.pt")
        assert (tmp_path / "private.pt").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
