"""Training end to end on small synthetic data: learning, exact resume, crash-safe checkpoints, signals, run
directories, epoch metrics, mistakes. Several processes: test_distributed.py."""

import csv
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import alexnet.training.loop
from alexnet.checkpoint import load as load_checkpoint
from alexnet.checkpoint import save_payload
from alexnet.config import resolve_config
from alexnet.data.pack import pack_dataset
from alexnet.data.synthetic import make_synthetic
from alexnet.distributed import Preempted
from alexnet.errors import UserError
from alexnet.training import train
from alexnet.weights import read_state_dict


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """3 classes x 12 train / 4 val images of 64 px: enough to exercise every code path quickly."""
    return str(make_synthetic(tmp_path_factory.mktemp("tiny"), classes=3, per_class=12, val_per_class=4, size=64))


# Flags that fix what alexnet.auto and the CPU-path measurement would otherwise choose per machine, for runs whose
# numbers are compared (tiny_config sets the same values in Python)
PINNED_FLAGS = ["--device", "cpu", "--precision", "fp32", "--channels-last", "off", "--in-memory", "off"]


def tiny_config(data, out, **kw):
    flags = dict(data=data, out=str(out), epochs=4, batch_size=6, image_size=64, resize_size=72, workers=0,
                 max_steps_per_epoch=3, log_every=1, seed=3, device="cpu", precision="fp32",
                 channels_last=False, in_memory=False)  # fmt: skip
    flags.update(kw)
    return resolve_config("fast", flags=flags)


def same_weights(a: Path, b: Path) -> bool:
    sa, sb = read_state_dict(a), read_state_dict(b)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _records(run: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def signal_at_steps(monkeypatch, steps: dict[int, list[int]]) -> None:
    """Make the training step send itself ``steps[n]`` signals in the n-th step of this process (1-based)."""
    real, calls = alexnet.training.loop.train_step, [0]

    def step(*args, **kw):
        loss = real(*args, **kw)
        calls[0] += 1
        for signum in steps.get(calls[0], []):
            os.kill(os.getpid(), signum)  # delivered to the main thread before this function returns
        return loss

    monkeypatch.setattr(alexnet.training.loop, "train_step", step)


def test_exact_resume_is_bitwise_identical(tiny_data, tmp_path, monkeypatch):
    straight = train(tiny_config(tiny_data, tmp_path / "straight", workers=2))
    # a Ctrl-C in the middle of epoch 2 (its second step): saved, raised, handlers as they were
    handler = signal.getsignal(signal.SIGINT)
    signal_at_steps(monkeypatch, {5: [signal.SIGINT]})
    with pytest.raises(Preempted) as stopped:
        train(tiny_config(tiny_data, tmp_path / "resumed"))
    assert stopped.value.exit_code == 130 and signal.getsignal(signal.SIGINT) is handler
    first = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert (first.epoch, first.batch_in_epoch, first.step) == (1, 2, 5)
    monkeypatch.undo()
    resumed = train(tiny_config(tiny_data, tmp_path / "resumed", resume="auto"))
    # different worker counts on purpose: augmentation is keyed by sample, not by worker
    assert same_weights(straight / "checkpoints" / "last.pt", resumed / "checkpoints" / "last.pt")
    ckpt = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert ckpt.epoch == 4 and ckpt.step == 12
    assert ckpt.classes == ["circle", "ring", "square"]
    assert {"resize", "crop", "mean", "std"} <= set(ckpt.preprocess.to_dict())
    # the metrics read as one run: every epoch once, the stopped epoch's loss over all its batches
    epochs, whole = _records(resumed, "epoch"), _records(straight, "epoch")
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
    assert [e["train_loss"] for e in epochs] == [e["train_loss"] for e in whole]
    assert [e["step"] for e in _records(resumed, "step")] == list(range(1, 13))
    assert (resumed / "config.json").exists() and (resumed / "eval.json").exists()


def test_an_epoch_trained_before_resuming_shows_no_speed_and_three_classes_no_top5(tiny_data, tmp_path, monkeypatch,
                                                                                     capsys):  # fmt: skip
    """Stopped at the epoch's last step (saved before its validation): the resumed run validates it with no step to
    time. Its line said "0 img/s, 0.0 s"; with 3 classes every epoch line said "top-5 100.00%"."""
    signal_at_steps(monkeypatch, {2: [signal.SIGTERM]})
    with pytest.raises(Preempted):
        train(tiny_config(tiny_data, tmp_path / "run", epochs=1, max_steps_per_epoch=2))
    monkeypatch.undo()
    capsys.readouterr()
    train(tiny_config(tiny_data, tmp_path / "run", epochs=1, max_steps_per_epoch=2, resume="auto"))
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch 1/1: ")]
    assert line.endswith(", its steps trained before resuming, best so far"), line
    assert "img/s" not in line and "top-1 " in line and "top-5" not in line
    (record,) = _records(tmp_path / "run", "epoch")
    assert record["img_per_s"] is None and record["val_top5"] == 1.0  # the number stays in the metrics


def test_packed_data_trains_and_resumes_exactly(tiny_data, tmp_path):
    pack = tmp_path / "pack"
    pack_dataset(tiny_data, pack, size=72, workers=0, progress=False)
    # paper preset: random 64 px crops of the 72 px pack, flips and PCA colour noise from the manifest's statistics
    cfg = dict(augment="paper", max_steps_per_epoch=None, epochs=3)
    straight = train(tiny_config(str(pack), tmp_path / "straight", **cfg))
    train(tiny_config(str(pack), tmp_path / "resumed", **cfg), stop_after_epoch=1)
    resumed = train(tiny_config(str(pack), tmp_path / "resumed", resume="auto", **cfg))
    assert same_weights(straight / "checkpoints" / "last.pt", resumed / "checkpoints" / "last.pt")
    ckpt = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert ckpt.epoch == 3 and ckpt.step == 3 * (36 // 6)  # 36 train images in batches of 6, every epoch
    assert ckpt.classes == ["circle", "ring", "square"]
    assert ckpt.preprocess.resize == 72 and ckpt.preprocess.crop == 64
    report = json.loads((resumed / "eval.json").read_text())
    assert report["count"] == 12 and sum(map(sum, report["confusion"])) == 12  # every val image, once


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    run = train(tiny_config(tiny_data, tmp_path / "run", epochs=2), stop_after_epoch=1)
    before = (run / "checkpoints" / "last.pt").read_bytes()
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    real = alexnet.training.loop.train_step
    monkeypatch.setattr(alexnet.training.loop, "train_step", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(UserError, match="non-finite"):  # the resumed run's losses diverge (a resume cannot raise lr)
        train(tiny_config(tiny_data, tmp_path / "run", epochs=2, resume="auto"))
    monkeypatch.setattr(alexnet.training.loop, "train_step", real)
    assert (run / "checkpoints" / "last.pt").read_bytes() == before
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # restored after an error
    # the failed attempt logged steps after the checkpoint; resuming drops them, so each step appears once
    train(tiny_config(tiny_data, tmp_path / "run", epochs=2, resume="auto"))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "step"] == [1, 2, 3, 4, 5, 6]


def test_weights_broken_by_an_epochs_last_update_are_never_saved(tiny_data, tmp_path, monkeypatch):
    """Before: a step's loss is checked before its update, so lr 1e30 for one step left NaN weights that were saved
    as best.pt (and predicted "nan%") while the run exited 0. Now the val loss, and without val the weights, stop it."""
    one = dict(epochs=1, max_steps_per_epoch=1, lr=1e30)
    with pytest.raises(UserError, match=r"val loss became non-finite after epoch 1 \(step 1\); stopped without "
                                        "saving these weights; no checkpoint was written yet"):  # fmt: skip
        train(tiny_config(tiny_data, tmp_path / "val", **one))
    real = alexnet.training.loop.train_step

    def poisoning(model, *args, **kw):  # an update that overflows one weight (lr 1e30 did not, without val to see it)
        loss = real(model, *args, **kw)
        with torch.no_grad():
            next(model.parameters()).view(-1)[0] = float("inf")
        return loss

    monkeypatch.setattr(alexnet.training.loop, "train_step", poisoning)
    with pytest.raises(UserError, match=r"the weights became non-finite by step 1; stopped without saving"):
        train(tiny_config(None, tmp_path / "noval", train_dir=str(Path(tiny_data) / "train"), epochs=1,
                          max_steps_per_epoch=1))  # fmt: skip
    assert not list(tmp_path.rglob("*.pt"))


_WRITER = """
import sys, torch
from alexnet.checkpoint import save_payload
path = sys.argv[1]
big = {"model": {"w": torch.randn(4_000_000)}, "epoch": 0, "step": 0}
i = 0
while True:
    i += 1
    big["epoch"] = big["step"] = i
    save_payload(big, path)
    print(i, flush=True)
"""


def test_checkpoint_survives_sigkill_during_saving(tmp_path):
    path = tmp_path / "last.pt"
    save_payload({"model": {"w": torch.zeros(3)}, "epoch": 0, "step": 0}, path)
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()  # at least one complete save happened; the next one is under way
        time.sleep(0.05)
        proc.kill()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    ckpt = load_checkpoint(path)  # whatever is there must load
    assert ckpt.epoch >= 1 and ckpt.model["w"].numel() == 4_000_000
    leftovers = [p for p in tmp_path.iterdir() if p.name != "last.pt"]
    assert all(p.name.endswith(".tmp") for p in leftovers)  # only a torn temp file may remain, never a torn last.pt


def test_sigterm_saves_and_resumes(tiny_data, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "alexnet", "train", tiny_data, "--out", str(out), "--epochs", "3"]
    cmd += ["--batch-size", "6", "--image-size", "64", "--workers", "0", "--log-every", "1", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "metrics.jsonl").exists():
        time.sleep(0.2)
    while time.time() < deadline and (out / "metrics.jsonl").stat().st_size == 0:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err  # preempted, not finished: 128 + SIGTERM
    assert "resume with: alexnet train" in err
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt.step >= 1
    assert ckpt.epoch < 3, "the run finished before SIGTERM arrived"
    resumed = subprocess.run([*cmd[:7], "--resume", "auto"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr  # its own data, 3 epochs and batch 6 come from the checkpoint
    assert f"resumed from {out / 'checkpoints' / 'last.pt'}" in resumed.stdout
    assert load_checkpoint(out / "checkpoints" / "last.pt").epoch == 3


def test_a_short_run_learns(tmp_path, final_checkpoint_only):
    """Loss falls and held-out accuracy is well above chance (1/3) after a short run on 3 classes."""
    full = make_synthetic(tmp_path / "full", classes=10, per_class=100, val_per_class=30, size=64)
    data = tmp_path / "data"
    for split in ("train", "val"):  # three classes that do not share a silhouette (circle vs square is hard early)
        for name in ("ring", "bar", "checkerboard"):
            shutil.copytree(full / split / name, data / split / name)
    run = train(tiny_config(str(data), tmp_path / "run", epochs=6, batch_size=16, max_steps_per_epoch=None,
                            log_every=10, lr=0.01, dropout=0.0))  # fmt: skip
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [e for e in epochs if e["kind"] == "epoch"]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    report = json.loads((run / "eval.json").read_text())
    assert report["count"] == 90 and report["top1"] >= 0.8, report["top1"]  # chance: 1/3; measured 0.96


def test_evaluate_command_on_a_checkpoint(tiny_data, tmp_path, capsys):
    from alexnet.cli import main

    run = train(tiny_config(tiny_data, tmp_path / "run", epochs=1))
    out = tmp_path / "report.json"
    assert main(["evaluate", str(run / "checkpoints" / "last.pt"), "--out", str(out), "--device", "cpu"]) == 0
    report = json.loads(out.read_text())
    assert report["count"] == 12 and len(report["confusion"]) == 3
    final = json.loads((run / "eval.json").read_text())  # the run's report: each image and its mirror
    assert final["flip"] and report["top1"] == pytest.approx(final["centre_top1"])
    best = run / "checkpoints" / "best.pt"  # a slip of --out must not destroy a checkpoint
    size = best.stat().st_size
    assert main(["evaluate", str(run / "checkpoints" / "last.pt"), "--out", str(best)]) == 2
    assert "give a .json (the full report) or .csv" in capsys.readouterr().err and best.stat().st_size == size
    assert main(["evaluate", str(run / "checkpoints" / "last.pt"), "--out", str(out)]) == 2  # nor an earlier report
    assert "already exists; pass --overwrite to replace" in capsys.readouterr().err
    assert load_checkpoint(best).epoch == 1
    flags = ["--flip", "--out", str(out), "--device", "cpu", "--overwrite"]
    assert main(["evaluate", str(run / "checkpoints" / "last.pt"), *flags]) == 0
    flipped = json.loads(out.read_text())
    assert flipped["flip"] and flipped["loss"] == pytest.approx(final["loss"], rel=1e-5)
    assert (flipped["top1"], flipped["confusion"]) == (final["top1"], final["confusion"])
    assert main(["evaluate", str(run / "checkpoints" / "last.pt"), "--ten-crop", "--device", "cpu"]) == 0
    val = shutil.copytree(Path(tiny_data) / "val", tmp_path / "val")  # one unreadable image of 13: above 1%
    (val / sorted(p.name for p in val.iterdir())[0] / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    assert main(["evaluate", str(run / "checkpoints" / "last.pt"), str(val), "--device", "cpu"]) == 2
    assert "raise --max-bad-fraction" in capsys.readouterr().err  # a flag evaluate has
    flags = ["--device", "cpu", "--max-bad-fraction", "0.1", "--out", str(tmp_path / "bad.json")]
    assert main(["evaluate", str(run / "checkpoints" / "last.pt"), str(val), *flags]) == 0
    report = json.loads((tmp_path / "bad.json").read_text())
    assert report["count"] == 12 and [Path(f).name for f, _ in report["bad_files"]] == ["broken.jpg"]


def test_epoch_loss_is_the_mean_of_every_batch_and_chooses_best_without_val(tiny_data, tmp_path, monkeypatch):
    """The epoch's loss is the mean over all its batches, not of the log-step readings (here: one per epoch, at its
    last step), and without a val split it chooses best.pt (lower is better), as the metrics say."""
    losses, real = [], alexnet.training.loop.train_step

    def step(*args, **kw):
        loss = real(*args, **kw)
        losses.append(loss.item())
        return loss

    monkeypatch.setattr(alexnet.training.loop, "train_step", step)
    common = dict(train_dir=str(Path(tiny_data) / "train"), epochs=2, max_steps_per_epoch=2, lr=0.05, log_every=100)
    run = train(tiny_config(None, tmp_path / "run", **common))
    epochs = _records(run, "epoch")
    means = [e["train_loss"] for e in epochs]
    assert means == pytest.approx([(losses[0] + losses[1]) / 2, (losses[2] + losses[3]) / 2])
    best = means.index(min(means))
    assert all(e["best_metric"] == "train_loss" and e["val_top1"] is None for e in epochs)
    assert [e["is_best"] for e in epochs] == [True, means[1] < means[0]]
    ckpt = load_checkpoint(run / "checkpoints" / "best.pt")
    assert ckpt.best == {"metric": "train_loss", "value": means[best], "epoch": best + 1}
    assert ckpt.epoch == best + 1 and ckpt.best_top1 is None
    with open(run / "metrics.csv", newline="") as f:
        times = [float(row["time"]) for row in csv.DictReader(f)]  # seconds since the run started
    assert len(times) == 2 and 0 < times[0] <= times[1]


def test_a_training_set_smaller_than_one_batch_is_refused_before_writing(tiny_data, tmp_path):
    with pytest.raises(UserError, match=r"has 36 images, fewer than one batch \(--batch-size 64\); .* to 36 or less"):
        train(tiny_config(tiny_data, tmp_path / "run", batch_size=64))
    assert not (tmp_path / "run").exists()


def test_an_existing_run_needs_resume_or_overwrite(tiny_data, tmp_path):
    run = tmp_path / "run"  # another run's files
    old = {"metrics.jsonl": '{"kind": "epoch", "epoch": 1, "step": 3}\n', "checkpoints/best.pt": "old",
           "plots/curves.png": "old"}  # fmt: skip
    for name, text in old.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(text)
    with pytest.raises(UserError, match=r"--out .*run holds another run \(checkpoints/best.pt, metrics.jsonl\); "):
        train(tiny_config(tiny_data, run, epochs=1, max_steps_per_epoch=1))
    with pytest.raises(UserError, match="fewer than one batch"):  # --overwrite deletes only once all is checked
        train(tiny_config(tiny_data, run, epochs=1, batch_size=64, overwrite=True))
    assert {p.name for p in run.rglob("*") if p.is_file()} == {"metrics.jsonl", "best.pt", "curves.png"}  # untouched
    train(tiny_config(tiny_data, run, epochs=1, max_steps_per_epoch=1, overwrite=True))
    assert [(e["epoch"], e["step"]) for e in _records(run, "epoch")] == [(1, 1)]  # a fresh run: no duplicate epochs
    assert load_checkpoint(run / "checkpoints" / "best.pt").step == 1
    assert not (run / "plots").exists()  # the old run's pictures went with it


def test_resume_path_never_mixes_two_runs_and_an_unsaved_run_keeps_its_data(tiny_data, tmp_path):
    """Before: ``--out A --resume B/checkpoints/last.pt`` wrote B's config and later epochs into A (or cut B's metrics
    the other way round), and ``--resume auto`` in a run that died before its first save trained on the built-in
    data. The run folder is chosen before anything is read, so fake runs suffice."""
    from alexnet.training.run_dir import MARKER, find_run_dir

    runs = {}
    for name in ("A", "B"):
        run = runs[name] = tmp_path / name
        (run / "checkpoints").mkdir(parents=True)
        for f in (MARKER, "metrics.jsonl", "checkpoints/last.pt"):
            (run / f).write_text("x")
    b_last = runs["B"] / "checkpoints" / "last.pt"

    def where(out=None, **kw):
        cfg = tiny_config(kw.pop("data", None), out, **kw)
        return find_run_dir(cfg if out else dataclasses.replace(cfg, out=None))

    with pytest.raises(UserError, match=rf"--resume {b_last} is a checkpoint of {runs['B']}, and --out {runs['A']} "
                                        r"holds another run \(checkpoints/last.pt, metrics.jsonl\)"):  # fmt: skip
        where(out=runs["A"], resume=str(b_last))
    assert where(out=runs["B"], resume=str(b_last)) == (runs["B"], b_last)
    assert where(resume=str(b_last)) == (runs["B"], b_last)  # no --out: the checkpoint's own run, not a new folder
    assert where(out=tmp_path / "fork", resume=str(b_last)) == (tmp_path / "fork", b_last)  # a new folder: a copy
    with pytest.raises(UserError, match=r"^/nowhere/last.pt: no such checkpoint file$"):  # was "a checkpoint of /"
        where(out=runs["A"], resume="/nowhere/last.pt")

    unsaved = tmp_path / "unsaved"  # killed before its first save: config.json and metrics, no checkpoint
    unsaved.mkdir()
    (unsaved / MARKER).write_text("x")
    (unsaved / "metrics.jsonl").write_text("")
    (unsaved / "config.json").write_text(json.dumps({"data": "/photos/cats-dogs", "epochs": 30}))
    with pytest.raises(UserError, match=r"has no checkpoint .* it trained on /photos/cats-dogs: start it again with "
                                        r"alexnet train /photos/cats-dogs --out "):  # fmt: skip
        where(out=unsaved, resume="auto")
    assert where(out=unsaved, resume="auto", data=tiny_data) == (unsaved, None)  # the same command again: a new run
    (unsaved / "config.json").write_text(json.dumps({"data": None}))  # it was on the built-in data: so is this one
    assert where(out=unsaved, resume="auto") == (unsaved, None)


def test_resume_with_another_arch_or_classes_is_one_line(tiny_data, tmp_path, capsys):
    from alexnet.cli import main

    last = tmp_path / "last.pt"  # what resuming reads first: arch, then (once the data is open) classes
    save_payload({"arch": "alexnet", "num_classes": 3, "classes": ["circle", "ring", "square"],
                     "model": {"w": torch.zeros(1)}}, last)  # fmt: skip
    flags = ["--out", str(tmp_path / "other"), "--resume", str(last), "--batch-size", "6", "--image-size", "64"]
    flags += ["--device", "cpu", "--epochs", "2"]
    assert main(["train", tiny_data, *flags, "--arch", "alexnet2012"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"alexnet train: error: --resume {last}: the checkpoint is an alexnet, this run's --arch is "
                   "alexnet2012"]  # fmt: skip
    two = tmp_path / "two"
    for split in ("train", "val"):
        for name in ("circle", "ring"):
            shutil.copytree(Path(tiny_data) / split / name, two / split / name)
    assert main(["train", str(two), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("the checkpoint has 3 classes, this data set has 2; resume on the data "
                                             "it was trained on"), err  # fmt: skip
    assert not (tmp_path / "other").exists()


def test_a_second_ctrl_c_stops_at_once_and_the_cli_exits_130(tiny_data, tmp_path, monkeypatch, capsys):
    from alexnet.cli import main

    handler = signal.getsignal(signal.SIGINT)
    signal_at_steps(monkeypatch, {1: [signal.SIGINT, signal.SIGINT]})
    out = tmp_path / "run"
    flags = ["--out", str(out), "--batch-size", "6", "--image-size", "64", "--device", "cpu", "--epochs", "2"]
    assert main(["train", tiny_data, *flags, "--max-steps-per-epoch", "2"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not (out / "checkpoints" / "last.pt").exists()  # stopped before any save
    assert signal.getsignal(signal.SIGINT) is handler


def test_a_second_ctrl_c_while_saving_waits_for_the_save_and_a_third_stops_it(tiny_data, tmp_path, monkeypatch,
                                                                              capsys):  # fmt: skip
    """A second Ctrl-C that came while ``last.pt`` was written tore the write, reported as a full disk (exit 2)."""
    from alexnet.cli import main

    real = alexnet.training.loop.save
    flags = ["--batch-size", "6", "--image-size", "64", "--device", "cpu", "--epochs", "1", "--max-steps-per-epoch"]
    errs = {}
    for knocks in (1, 2):  # more Ctrl-Cs while the checkpoint is written

        def save(*args, knocks=knocks, **kw):
            for _ in range(knocks):
                os.kill(os.getpid(), signal.SIGINT)
            return real(*args, **kw)

        signal_at_steps(monkeypatch, {1: [signal.SIGINT]})  # the first: save and stop
        monkeypatch.setattr(alexnet.training.loop, "save", save)
        assert main(["train", tiny_data, "--out", str(tmp_path / str(knocks)), *flags, "2"]) == 130
        errs[knocks] = capsys.readouterr().err
        assert "received SIGINT again: saving the checkpoint, please wait" in errs[knocks], errs[knocks]
        monkeypatch.undo()
    saved = tmp_path / "1" / "checkpoints" / "last.pt"
    assert f"stopped by SIGINT at step 1 (epoch 1); saved {saved}" in errs[1] and load_checkpoint(saved).step == 1
    assert errs[2].strip().endswith("stopped by a third SIGINT while saving (that save is lost); no checkpoint was "
                                    "written yet"), errs[2]  # fmt: skip
    assert not [p for p in (tmp_path / "2").rglob("*.pt*")]  # no torn file, no temp file


def test_sighup_a_closed_terminal_saves_like_sigterm_and_the_cli_exits_129(tiny_data, tmp_path, monkeypatch, capsys):
    """Before: SIGHUP (the terminal or ssh session gone) killed the run at once, silently, without saving."""
    from alexnet.cli import main

    caught = []

    def outer(*_):  # what gets SIGHUP when training does not take it (pytest must not die of it)
        caught.append(1)

    previous = signal.signal(signal.SIGHUP, outer)
    try:
        signal_at_steps(monkeypatch, {2: [signal.SIGHUP]})
        out = tmp_path / "run"
        flags = ["--out", str(out), "--batch-size", "6", "--image-size", "64", "--device", "cpu", "--epochs", "2"]
        assert main(["train", tiny_data, *flags, "--max-steps-per-epoch", "3"]) == 129
        assert not caught and signal.getsignal(signal.SIGHUP) is outer  # training's handler took it, then gave it back
        assert "stopped by SIGHUP at step 2" in capsys.readouterr().err
        assert load_checkpoint(out / "checkpoints" / "last.pt").step == 2
    finally:
        signal.signal(signal.SIGHUP, previous)


@pytest.mark.slow
def test_gpu_defaults_compile_and_channels_last_train_on_the_cpu(tiny_data, tmp_path):
    """The CUDA defaults (torch.compile, channels-last) run here first: the weights of eager NCHW training, keys
    without wrapper prefixes. No val split: one compiled graph (the training step), not a second for evaluation."""
    from torch._dynamo.utils import counters

    common = dict(train_dir=str(Path(tiny_data) / "train"), epochs=1, max_steps_per_epoch=2, dropout=0.0)
    eager = train(tiny_config(None, tmp_path / "eager", compile=False, channels_last=False, **common))
    counters.clear()
    fast = train(tiny_config(None, tmp_path / "fast", compile=True, channels_last=True, **common))
    assert counters["stats"]["unique_graphs"] >= 1  # torch.compile made a graph
    a, b = read_state_dict(eager / "checkpoints" / "last.pt"), read_state_dict(fast / "checkpoints" / "last.pt")
    raw = torch.load(fast / "checkpoints" / "last.pt", weights_only=True)["model"]  # as other tools read it
    assert raw.keys() == a.keys()  # no _orig_mod. prefixes
    assert b["features.0.weight"].is_contiguous(memory_format=torch.channels_last)  # trained in channels-last
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-5), k


def test_an_unwritable_out_is_one_line_before_the_data_is_read(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    cfg = tiny_config(str(tmp_path / "no-such-data"), tmp_path / "file" / "run")
    with pytest.raises(UserError, match=r"--out .*file/run: cannot write there, .*file is not a folder"):
        train(cfg)  # the data path does not exist either: the --out check comes first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing created


def test_the_optimizer_is_fused_sgd_with_the_update_of_the_foreach_one():
    """build_optimizer takes SGD's fused kernel where it works (1.1-1.5x faster steps on 2 CPU cores) and keeps
    every setting: the same updates as the foreach SGD for momentum, Nesterov, weight decay and per-group lr."""
    from alexnet.model import create_model
    from alexnet.training.step import build_optimizer, fused_sgd_works

    assert fused_sgd_works("cpu") == (tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4))
    cfg = resolve_config(
        "fast", flags={"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3, "head_lr_mult": 10.0}
    )
    torch.manual_seed(0)
    models = [create_model("alexnet", num_classes=4, dropout=0.0) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    start = {k: v.clone() for k, v in models[0].state_dict().items()}
    fused = build_optimizer(cfg, models[0], torch.device("cpu"))
    assert bool(fused.defaults["fused"]) is fused_sgd_works("cpu")
    names = {id(p): n for n, p in models[0].named_parameters()}
    twin = dict(models[1].named_parameters())
    groups = [
        {"params": [twin[names[id(p)]] for p in g["params"]], "lr_mult": g["lr_mult"]} for g in fused.param_groups
    ]
    assert sorted(g["lr_mult"] for g in groups) == [1.0, 10.0]
    ref = torch.optim.SGD(groups, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3, foreach=True)
    for step in range(3):
        x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
        for model, opt in zip(models, (fused, ref)):
            for g in opt.param_groups:
                g["lr"] = 0.05 * g["lr_mult"] * (step + 1) / 3  # as train_one_epoch sets it
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        assert not torch.equal(a, start[name])  # every parameter moved: the comparison can fail
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
