"""Writing results safely: check that an output path can be written before long work, and never replace a file
the user did not ask us to replace.

``prepare_output(path)`` creates the folder and probes it with a real temporary file (``os.access`` says yes to root
even on a read-only mount), so ``export`` or ``features`` fail in a second with one line instead of after minutes
of work with a raw ``OSError``. ``overwrite=False`` refuses existing files (and sidecars: ``x.safetensors`` writes
``x.json``, which may be someone's unrelated file).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .errors import UserError


def prepare_output(
    path: str | os.PathLike, *, also: Iterable[str | os.PathLike] = (), overwrite: bool = True, flag: str = "--out"
) -> Path:
    """``path`` as a ``Path``, once its folder exists and takes a new file; ``also``: sidecars written beside it.

    ``overwrite=False``: an existing ``path`` or sidecar is a ``UserError`` suggesting ``--overwrite``.
    """
    path = Path(path)
    targets = [path, *map(Path, also)]
    for p in targets:
        if p.is_dir():
            raise UserError(f"{flag} {p}: is a folder; give a file name")
    if not overwrite:
        existing = [str(p) for p in targets if p.exists() or p.is_symlink()]
        if existing:
            verb = "exists" if len(existing) == 1 else "exist"
            raise UserError(f"{flag} {path}: {' and '.join(existing)} already {verb}; pass --overwrite to replace")
    folder = path.parent if str(path.parent) else Path(".")
    blocker = next((f for f in (folder, *folder.parents) if f.exists() and not f.is_dir()), None)
    if blocker is not None:
        raise UserError(f"{flag} {path}: cannot write there, {blocker} is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".alexnet-probe-"):
            pass
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot write in {folder} ({e.strerror or e})") from None
    return path
