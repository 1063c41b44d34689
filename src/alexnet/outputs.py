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
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
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
        check_regular(p, flag)
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


def check_regular(path: Path, flag: str = "--out") -> None:
    """``UserError`` when ``path`` exists as something other than a file (a device, a FIFO, a socket): writing
    through a temporary file and a rename would replace it (as root, ``--out /dev/full --overwrite`` did)."""
    import stat

    try:
        mode = os.stat(path).st_mode  # through a symlink: its target is what gets written
    except OSError:
        return  # absent (or a dangling link): a new file
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise UserError(f"{flag} {path}: is not a regular file (a device, FIFO or socket); give a file name")


def check_free_space(path: str | os.PathLike, needed: int, *, flag: str = "--out") -> None:
    """``UserError`` naming ``path`` when its folder has less than ``needed`` bytes free (plus 16 MiB): some writers
    (``torch.export.save``) abort the whole process on a full disk instead of raising, so ask first."""
    import shutil

    folder = Path(path).parent if str(Path(path).parent) else Path(".")
    free = shutil.disk_usage(folder).free
    if free < needed + (16 << 20):
        raise UserError(f"{flag} {path}: no space left on the device ({free >> 20} MiB free, about "
                        f"{needed >> 20} MiB needed)")  # fmt: skip


@contextmanager
def atomic_file(path: str | os.PathLike, *, flag: str = "--out") -> Iterator[Path]:
    """Write ``path`` through a temporary file beside it, renamed over ``path`` only when the block succeeds.

    A failure (a full disk, Ctrl-C, a writer's own error) removes the temporary file and leaves any previous
    ``path`` as it was, so a rerun is never blocked by a torn file; an ``OSError`` becomes one ``UserError``
    naming ``path``."""
    import errno

    check_regular(Path(path), flag)
    path = Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)  # the link stays, its target is new
    fd, name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent if str(path.parent) else "."
    )
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, new_file_mode())  # mkstemp makes it 0600: readable by its owner only
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) or "No space left" in str(e) or "inline_container" in str(e):
            full = getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(e)
            reason = "no space left on the device" if full else (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UserError(f"{flag} {path}: cannot write it ({reason}); nothing was left behind") from None
        raise


def new_file_mode() -> int:
    """The mode ``open()`` gives a new file under this process's umask (0644 under 022): what a file written through
    a ``mkstemp`` temporary (0600, so a server running as another user could not read an export) should get. The
    umask is read from ``/proc`` where it can be: ``os.umask`` only reads it by setting it, for every thread."""
    try:
        with open("/proc/self/status") as f:
            mask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o22)
        os.umask(mask)
    return 0o666 & ~mask


def lock_file(path: Path, busy: str) -> int:
    """An exclusive lock on the file ``path`` (created, never through a symbolic link), held while the returned
    descriptor is open: the kernel releases it when the process ends, however it ends (even ``kill -9``). The file
    holds this process's id. ``busy``: the ``UserError`` message when another process holds the lock; ``{pid}``
    in it becomes " (pid N)" with that process's id where it can be read, else nothing.

    ``unlock_file`` removes the file before releasing it: a process that opened the old file then finds it gone
    after its lock, and tries again on a new one (so two processes never both hold "the" lock)."""
    import fcntl

    for _ in range(5):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as e:  # ELOOP: a symbolic link, which O_CREAT would have followed to create its target
            raise UserError(f"{path}: cannot open the lock file ({e.strerror}); is it a symbolic link? remove it "
                            "(nothing was written)") from None  # fmt: skip
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(busy.replace("{pid}", _holder(path))) from None
        if _same_file(fd, path):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)  # removed by its holder as it let go: lock the new one
    raise UserError(busy.replace("{pid}", ""))


def unlock_file(fd: int, path: Path) -> None:
    """Release ``lock_file``'s lock: remove ``path`` (while still holding it), then close ``fd``."""
    try:
        if _same_file(fd, path):
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _holder(path: Path) -> str:
    """The " (pid N)" of the process whose id is in the lock file ``path``, or "" (not written yet, unreadable)."""
    try:
        with open(path, "rb") as f:
            text = f.read(32).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {text})" if text.isdigit() else ""
