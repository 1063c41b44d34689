"""The run folder: where it is, whether it holds another run, making it writable, clearing it, and linking
``best.pt`` to ``last.pt``."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from datetime import datetime
from pathlib import Path

from ..checkpoint import clean_stale_temps
from ..config import TrainConfig
from ..data.holdout import run_dir_of
from ..errors import UserError, missing_file
from ..limits import limits, read_bounded
from ..outputs import lock_file, unlock_file
from ..text import plural


def default_run_dir(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.arch}-{cfg.recipe}-{datetime.now():%Y%m%d-%H%M%S}"


RUN_FILES = ("checkpoints/last.pt", "checkpoints/best.pt", "metrics.jsonl", "metrics.csv")
MARKER = ".alexnet-run"  # written into every run folder before anything else: what makes a folder ours
LOCK = ".alexnet-lock"  # held by the run training into the folder (RunLock); removed when it ends
# what --overwrite removes: the files our runs write, by name or pattern, and nothing else in the folder
OURS = (*RUN_FILES, "eval.json", "config.json", "split.json", MARKER)
OUR_PATTERNS = ("plots/*.png", "tensorboard/events.out.tfevents.*")


def is_run_dir(run_dir: Path) -> bool:
    """Whether ``run_dir`` is one of our run folders: it has our marker, or (runs from before the marker) a
    ``metrics.jsonl`` and a ``checkpoints`` folder, neither a link."""
    if (run_dir / MARKER).is_file() and not (run_dir / MARKER).is_symlink():
        return True
    metrics, checkpoints = run_dir / "metrics.jsonl", run_dir / "checkpoints"
    return metrics.is_file() and not metrics.is_symlink() and checkpoints.is_dir() and not checkpoints.is_symlink()


def find_run_dir(cfg: TrainConfig, lock: RunLock | None = None) -> tuple[Path, Path | None]:
    """(run directory, checkpoint to resume or None). Refuses the directory of another run (it has checkpoints or
    metrics) unless resuming it or ``overwrite``. With ``lock``, locks the directory first (creating it): another
    ``alexnet train`` into it is refused. Writes nothing else: ``clear_run_dir`` deletes, once the data is open too.

    ``--resume PATH`` continues PATH's own run folder when there is no ``--out`` (a new folder when PATH is not in
    one of our runs), and refuses an ``--out`` that holds another run: the two runs' metrics and checkpoints would
    mix. Into a new or empty ``--out`` it continues there, a copy of the run from that checkpoint on. ``--resume
    RUN`` (one of our run folders) continues its ``checkpoints/last.pt``.
    """
    run_dir, resume, owner = _where(cfg)
    if lock is not None:
        probe_writable(run_dir)
        lock.take(run_dir, f"--out {run_dir}" if cfg.out else str(run_dir))
    others = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK) if run_dir.is_dir() else []
    if others and not is_run_dir(run_dir):
        raise UserError(
            f"--out {run_dir} holds files that are not an alexnet run ({', '.join(others[:4])}...); nothing there is "
            "touched: choose a new or empty folder"
        )
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if found and not cfg.resume and not cfg.overwrite:
        raise UserError(
            f"--out {run_dir} holds another run ({', '.join(found)}); continue it with --resume auto, "
            "start it afresh with --overwrite, or choose another --out"
        )
    if found and owner is not None and owner.resolve() != run_dir.resolve():
        raise UserError(
            f"--resume {resume} is a checkpoint of {owner}, and --out {run_dir} holds another run "
            f"({', '.join(found)}): continue {owner} with --out {owner}, or give a new or empty --out to continue it "
            "there"
        )
    if cfg.resume == "auto" and resume is None:
        _check_unsaved_run(run_dir, cfg)
    return run_dir, resume


def _where(cfg: TrainConfig) -> tuple[Path, Path | None, Path | None]:
    """(run directory, checkpoint to resume, the run folder of an explicit ``--resume PATH``)."""
    if cfg.resume == "auto":
        run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg)
        last = run_dir / "checkpoints" / "last.pt"
        return run_dir, last if last.exists() else None, None
    resume = Path(cfg.resume) if cfg.resume else None
    if resume is not None and is_run_dir(resume) and (resume / "checkpoints" / "last.pt").is_file():
        resume = resume / "checkpoints" / "last.pt"  # a run folder: where it stopped
    if resume is not None and not resume.is_file():  # said first: its "run folder" would be a guess from the path
        raise UserError(missing_file(resume, "checkpoint file", "checkpoints/last.pt"))
    owner = run_dir_of(resume) if resume is not None else None
    if cfg.out:
        return Path(cfg.out), resume, owner
    return owner if owner is not None and is_run_dir(owner) else default_run_dir(cfg), resume, owner


class NothingToResume(Exception):
    """The checkpoint resumed in its own run folder finished that run, whose final report is written: nothing to do
    (the message says so; the CLI exits 0)."""

    def __init__(self, run_dir: Path, message: str) -> None:
        super().__init__(message)
        self.run_dir = run_dir


def check_finished(run_dir: Path, resume: Path, epoch: int, batch: int, epochs: int) -> Path | None:
    """Before the run folder is written: is ``resume`` at the end of its run's ``epochs`` (``epoch``, ``batch``:
    where it stopped)? In its own folder, once the final report is there: ``NothingToResume`` (else that report is
    made again). Into another ``--out`` it returns ``resume``: ``clear_run_dir`` makes it that run's checkpoint, and
    only the final report is made (with this command's evaluation flags). None: there is training left."""
    if epoch < epochs or batch:
        return None
    owner = run_dir_of(resume)
    if owner.resolve() != run_dir.resolve():
        return resume
    report = run_dir / "eval.json"
    if report.is_file():
        done = f"finished its {plural(epochs, 'epoch')} already; nothing to resume"
        raise NothingToResume(
            run_dir, f"{run_dir} {done}. Its final report is {report}; to train longer, start a new run"
        )
    return None


def _check_unsaved_run(run_dir: Path, cfg: TrainConfig) -> None:
    """``--resume auto`` found no checkpoint: a run that stopped before its first save left its ``config.json``.
    Started again without DATA, it would train on the built-in data; refused when that run had other data."""
    if cfg.data or cfg.train_dir or not (run_dir / "config.json").is_file():
        return
    try:
        stored = json.loads(read_bounded(run_dir / "config.json", limits().max_json_bytes, "config.json"))
    except (UserError, ValueError):
        return  # not ours to judge: a new run replaces it, as the message before training says
    data = stored.get("data") or stored.get("train_dir") if isinstance(stored, dict) else None
    if isinstance(data, str) and data:
        raise UserError(
            f"--resume auto: {run_dir} has no checkpoint (that run stopped before its first save); it trained on "
            f"{data}: start it again with alexnet train {data} --out {run_dir} --overwrite and its flags "
            f"({run_dir / 'config.json'})"
        )


class RunLock:
    """``with RunLock() as lock:`` ``lock.take(run_dir, name)`` locks ``run_dir`` (``LOCK``, creating the folder) until
    the block ends, however it ends; a second ``take`` of a locked folder, by any process, is a ``UserError``. On
    exit the lock file goes, and the folders ``take`` created when nothing else was written in them."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.path: Path | None = None
        self.created: list[Path] = []

    def take(self, run_dir: Path, name: str) -> None:
        self.created = [p for p in (run_dir, *run_dir.parents) if not p.exists() and not p.is_symlink()]
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / LOCK
        busy = f"{name} is in use by another alexnet train{{pid}}; wait for it or choose another --out"
        self.fd = lock_file(self.path, busy)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            unlock_file(self.fd, self.path)
            self.fd = None
        for folder in self.created:  # deepest first; only when empty: a refused run leaves nothing behind
            with contextlib.suppress(OSError):
                folder.rmdir()


def probe_writable(run_dir: Path) -> None:
    """``UserError`` unless ``run_dir`` can be created and written (a temp file in its nearest existing folder,
    deleted at once: nothing is left behind when a later check refuses the run)."""
    import tempfile

    existing = next(p for p in (run_dir, *run_dir.parents) if p.exists() or p == Path("."))
    if not existing.is_dir():
        raise UserError(f"--out {run_dir}: cannot write there, {existing} is not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".alexnet-probe-"):
            pass
    except OSError as e:
        raise UserError(f"--out {run_dir}: cannot write in {existing} ({e.strerror or e})") from None


def clear_run_dir(run_dir: Path, *, overwrite: bool, finished: Path | None = None) -> None:
    """Mark ``run_dir`` as ours (``MARKER``; ``find_run_dir`` has refused a folder of someone else's files). With
    ``overwrite``, delete the files a previous run wrote (``OURS``, ``OUR_PATTERNS``: regular files, not links, not
    anything else in the folder); always, the temp files of a save that was killed. ``finished``: the checkpoint of
    a finished run resumed into ``run_dir`` (``check_finished``), which becomes its ``checkpoints/last.pt``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:
        doomed = [run_dir / name for name in OURS] + [p for pattern in OUR_PATTERNS for p in run_dir.glob(pattern)]
        for path in doomed:
            if path.is_file() or path.is_symlink():  # a link is removed, never followed
                path.unlink()
        for folder in ("plots", "tensorboard"):
            with contextlib.suppress(OSError):  # only when empty: a file of the user's keeps its folder
                (run_dir / folder).rmdir()
    (run_dir / MARKER).write_text('{"alexnet": "run folder"}\n')
    clean_stale_temps(run_dir / "checkpoints")  # .last.pt.<random>.tmp files only: see checkpoint.save_payload
    if finished is not None:  # nothing to train: the run's checkpoint, so that the folder is a whole run
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        copy_checkpoint(finished, run_dir / "checkpoints" / "last.pt")


def copy_checkpoint(src: Path, dst: Path) -> None:
    """``dst`` becomes ``src``'s content, atomically: a hard link (no second 0.5 GB write), else a copy."""
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
