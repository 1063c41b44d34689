"""The run folder: where it is, whether it holds another run, making it writable, clearing it, and linking
``best.pt`` to ``last.pt``."""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path

from ..config import TrainConfig
from ..errors import UserError


def default_run_dir(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.arch}-{cfg.recipe}-{datetime.now():%Y%m%d-%H%M%S}"


RUN_FILES = ("checkpoints/last.pt", "checkpoints/best.pt", "metrics.jsonl", "metrics.csv")

OVERWRITTEN = (*RUN_FILES, "eval.json", "config.json", "split.json", "tensorboard", "plots")


def find_run_dir(cfg: TrainConfig) -> tuple[Path, Path | None]:
    """(run directory, checkpoint to resume or None). Refuses the directory of another run (it has checkpoints or
    metrics) unless resuming or ``overwrite``. Reads only: ``clear_run_dir`` deletes, once the data is open too."""
    run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg)
    resume = None
    if cfg.resume == "auto":
        resume = run_dir / "checkpoints" / "last.pt" if (run_dir / "checkpoints" / "last.pt").exists() else None
    elif cfg.resume:
        resume = Path(cfg.resume)
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if found and not cfg.resume and not cfg.overwrite:
        raise UserError(
            f"--out {run_dir} holds another run ({', '.join(found)}); continue it with --resume auto, "
            "start it afresh with --overwrite, or choose another --out"
        )
    return run_dir, resume


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


def clear_run_dir(run_dir: Path, *, overwrite: bool) -> None:
    """With ``overwrite``, delete the previous run's files; always, the temp files of a save that was killed."""
    if overwrite:
        for name in OVERWRITTEN:
            path = run_dir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    for tmp in (run_dir / "checkpoints").glob(".*.tmp"):  # see weights.save_checkpoint
        tmp.unlink(missing_ok=True)


def copy_checkpoint(src: Path, dst: Path) -> None:
    """``dst`` becomes ``src``'s content, atomically: a hard link (no second 0.5 GB write), else a copy."""
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
