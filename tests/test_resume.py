"""Resuming restores the run (issue 19); a run folder is ours before anything in it is replaced (issue 20 item 2)."""

import json
import os

from alexnet.checkpoint import load as load_checkpoint
from alexnet.cli import main
from alexnet.training import train

from .test_train import PINNED_FLAGS, tiny_config, tiny_data  # noqa: F401 - tiny_data is a fixture


def test_resume_from_out_alone_continues_with_the_runs_own_data_and_settings(tiny_data, tmp_path, capsys):  # noqa: F811
    """The README's ``alexnet train --out RUN --resume auto`` built the built-in set and failed ("3 classes, this
    data set has 10"); with DATA it resumed at another batch size, lr and epoch count."""
    run = tmp_path / "run"
    train(tiny_config(tiny_data, run, epochs=2, lr=0.005), stop_after_epoch=1)
    before = load_checkpoint(run / "checkpoints" / "last.pt")
    assert main(["train", "--out", str(run), "--resume", "auto"]) == 0, capsys.readouterr().err
    after = load_checkpoint(run / "checkpoints" / "last.pt")
    assert after.epoch == 2 and after.step == 2 * 3  # 3 steps per epoch (max_steps_per_epoch), both epochs
    unchanged = {k: v for k, v in after.config.items() if k != "resume"}
    assert unchanged == {k: v for k, v in before.config.items() if k != "resume"}
    assert after.config["data"] == tiny_data and after.config["batch_size"] == 6 and after.config["lr"] == 0.005


def test_a_setting_that_changes_the_run_is_refused_and_harmless_ones_apply(tiny_data, tmp_path, capsys):  # noqa: F811
    run = tmp_path / "run"
    train(tiny_config(tiny_data, run, epochs=2), stop_after_epoch=1)
    capsys.readouterr()
    base = ["train", "--out", str(run), "--resume", "auto"]
    for flag, value, stored in [("--batch-size", "8", "6"), ("--image-size", "96", "64"), ("--lr", "0.1", None)]:
        assert main([*base, flag, value]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{flag} {value} would change the run (it was trained with " in err[0], err
        if stored is not None:
            assert f"trained with {stored})" in err[0], err
    assert load_checkpoint(run / "checkpoints" / "last.pt").epoch == 1  # refused before anything ran
    assert main([*base, tiny_data, "--batch-size", "6", "--workers", "1", "--log-every", "2"]) == 0  # same values: fine
    out = capsys.readouterr().out
    assert "with its own settings, except --log-every 2, --workers 1" in out, out
    assert json.loads((run / "config.json").read_text())["workers"] == 1


def test_a_folder_of_someone_elses_files_is_never_touched(tmp_path, capsys):
    """``--out DIR`` on a folder that holds no run of ours replaced its config.json and deleted a hidden .tmp file;
    with --overwrite it deleted plots/ and tensorboard/thesis.tex."""
    folder = tmp_path / "thesis"
    files = {"config.json": "{my settings}", "checkpoints/.notes.tmp": "notes", "plots/figure.png": "png",
             "tensorboard/thesis.tex": "tex"}  # fmt: skip
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    for extra in ([], ["--overwrite"]):
        assert main(["train", "--out", str(folder), "--epochs", "1", *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "holds files that are not an alexnet run" in err[0], err
        assert {n: (folder / n).read_text() for n in files} == files
        assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == sorted(files)


def test_overwrite_removes_only_what_our_runs_write(tiny_data, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    train(tiny_config(tiny_data, run, epochs=1, max_steps_per_epoch=1, plots=False))
    mine = {"notes.txt": "n", "plots/mine.txt": "m", "tensorboard/thesis.tex": "t", "checkpoints/.notes.tmp": "x"}
    for name, text in mine.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(text)
    (run / "plots" / "curves.png").write_bytes(b"old picture")
    (run / "checkpoints" / ".last.pt.abc123.tmp").write_bytes(b"torn save")
    train(tiny_config(tiny_data, run, epochs=1, max_steps_per_epoch=1, overwrite=True))
    assert {n: (run / n).read_text() for n in mine} == mine
    assert not (run / "plots" / "curves.png").exists() and not (run / "checkpoints" / ".last.pt.abc123.tmp").exists()
    assert load_checkpoint(run / "checkpoints" / "last.pt").step == 1


def test_resume_auto_without_a_checkpoint_says_it_starts_a_new_run(tiny_data, tmp_path, capsys):  # noqa: F811
    """``--resume auto`` starts a run where there is none (a first launch under torchrun restarts), but a mistyped
    ``--out`` looked exactly like a resumed run; now its first line says so."""
    run = tmp_path / "nothere"
    train(tiny_config(tiny_data, run, epochs=1, max_steps_per_epoch=1, resume="auto"))
    out = capsys.readouterr().out
    assert f"--resume auto: no checkpoint in {run / 'checkpoints'}: starting a new run\n" in out, out


def test_a_relative_data_path_is_stored_absolute(tiny_data, tmp_path, monkeypatch, capsys):  # noqa: F811
    """A run started with ``alexnet train d`` stored ``d``: evaluate and resume from any other folder failed with
    "d: no such file or folder", a path the user never typed there."""
    from pathlib import Path

    monkeypatch.chdir(Path(tiny_data).parent)
    run = tmp_path / "run"
    train(tiny_config(Path(tiny_data).name, run, epochs=2), stop_after_epoch=1)
    assert load_checkpoint(run / "checkpoints" / "last.pt").config["data"] == tiny_data
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", str(run / "checkpoints" / "last.pt"), "--device", "cpu"]) == 0
    moved = tmp_path / "moved"
    Path(tiny_data).rename(moved)
    try:
        assert main(["evaluate", str(run / "checkpoints" / "last.pt"), "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert f"was trained on {tiny_data}, which cannot be opened now" in err and "give DATA" in err, err
    finally:
        moved.rename(tiny_data)


def test_resuming_a_finished_run_says_so_and_changes_nothing(tiny_data, tmp_path, capsys):  # noqa: F811
    """It printed "resumed ... at epoch 3" for a 2-epoch run and wrote its final report again."""
    run = tmp_path / "run"
    train(tiny_config(tiny_data, run, epochs=1, max_steps_per_epoch=1))
    before = (run / "eval.json").stat().st_mtime_ns, (run / "checkpoints" / "last.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "auto"]) == 0
    assert f"{run} finished its 1 epoch already; nothing to resume" in capsys.readouterr().out
    assert ((run / "eval.json").stat().st_mtime_ns, (run / "checkpoints" / "last.pt").stat().st_mtime_ns) == before
    # into a new --out it said "checkpoints: NEW/checkpoints/{last,best}.pt" and wrote none: now the checkpoint is
    # there, and only the final report is made again (with this command's evaluation flags)
    new, best = tmp_path / "new", run / "checkpoints" / "best.pt"
    assert main(["train", "--resume", str(best), "--out", str(new), "--no-flip-eval"]) == 0
    out = capsys.readouterr().out
    assert f"{best} finished its 1 epoch: nothing to train; it is {new}/checkpoints/last.pt now" in out
    assert f"checkpoints: {new}/checkpoints/last.pt  metrics" in out and "also best.pt" not in out
    assert os.listdir(new / "checkpoints") == ["last.pt"] and (new / "eval.json").is_file()
    assert os.path.samefile(new / "checkpoints" / "last.pt", best)  # a hard link: no second 0.5 GB write


def test_a_second_train_into_a_busy_out_is_refused_and_the_lock_goes_with_the_run(tiny_data, tmp_path, capsys):  # noqa: F811
    """Two ``alexnet train --out X`` at once both exited 0, each wiping the other's metrics.jsonl."""

    from alexnet.training.run_dir import LOCK, RunLock

    run = tmp_path / "runs" / "run"
    with RunLock() as held:
        held.take(run, f"--out {run}")  # as a running `alexnet train --out run` holds it
        assert main(["train", tiny_data, "--out", str(run), "--epochs", "1", *PINNED_FLAGS]) == 2
        busy = f"--out {run} is in use by another alexnet train (pid {os.getpid()}); wait for it or choose another"
        assert capsys.readouterr().err.strip() == f"alexnet train: error: {busy} --out"
        assert os.listdir(run) == [LOCK]  # nothing of the refused run was written
    assert not (tmp_path / "runs").exists()  # a folder created only to be locked goes with the lock
    train(tiny_config(tiny_data, run, epochs=1, max_steps_per_epoch=1))
    assert not (run / LOCK).exists()
    assert main(["train", "--out", str(run), "--resume", "auto"]) == 0  # the ended run's folder is free again
    assert "finished its 1 epoch already" in capsys.readouterr().out


def test_resume_of_a_run_folder_continues_its_last_checkpoint(tmp_path):
    """``--resume RUN`` said "is a folder ... (a run's is RUN/checkpoints/best.pt)": resuming wants last.pt."""
    import dataclasses

    import pytest

    from alexnet.errors import UserError
    from alexnet.training.run_dir import MARKER, find_run_dir

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for f in (MARKER, "metrics.jsonl", "checkpoints/last.pt"):
        (run / f).write_text("x")

    def where(resume):
        return find_run_dir(dataclasses.replace(tiny_config(None, None, resume=resume), out=None))

    assert where(str(run)) == (run, run / "checkpoints" / "last.pt")
    with pytest.raises(UserError, match=r"is a folder, not a checkpoint file; give the file \(a run's is "
                                        r"RUN/checkpoints/last.pt\)$"):  # fmt: skip
        where(str(run / "checkpoints"))
