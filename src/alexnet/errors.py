"""The exceptions for mistakes a user can fix: the CLI prints their message on one line, without a traceback."""

import contextlib
import os
import re


class UserError(Exception):
    """Bad input from the user (a file, a flag, a value). The message says what was wrong and what to do."""


class ArgumentError(UserError, TypeError, ValueError):
    """A public function called with an argument of the wrong type or value (``topk=2.5``, ``num_classes=0``); the
    message names the argument as the caller wrote it. Also a ``TypeError`` and a ``ValueError``, so code catching
    those goes on working; checked by ``alexnet.arguments``."""


class WeightsError(UserError):
    """A weights or checkpoint file that cannot be read, or does not fit the model."""


class DecodeError(UserError):
    """A file that is not a readable image: truncated, empty, not an image, not a regular file or over the size cap."""


class DecodeBoundsError(DecodeError):
    """A readable image refused by the decoder's bounds before its pixels are decoded: a decompression bomb, more
    pixels than ``max_image_pixels`` or an aspect ratio over ``max_image_aspect`` (``alexnet.limits``). The image may
    be genuine; the limit can be raised. ``alexnet serve`` answers these 422, the other decode errors 415."""


def missing_file(path: str | os.PathLike, what: str, in_run: str = "checkpoints/best.pt") -> str:
    """Why ``path`` is not the ``what`` ("model file", "checkpoint file"...) asked for: a folder given by mistake
    (a run folder, say), or nothing there. ``in_run``: the run's file to suggest (``--resume`` wants last.pt)."""
    if os.path.isdir(path):
        return f"{path}: is a folder, not a {what}; give the file (a run's is RUN/{in_run})"
    return f"{path}: no such {what}"


_REPR = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")  # <_io.BytesIO object at 0x7f...>: a heap address, no use


def exception_reason(e: BaseException, limit: int = 300) -> str:
    """``TypeName: message`` on one line (at most ``limit`` characters of message) for a library's exception, without
    the Python object reprs Pillow puts in its messages (``cannot identify image file <_io.BytesIO object at
    0x7f...>``): the caller names the file instead."""
    text = " ".join(_REPR.sub("", str(e)).split())[:limit]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


@contextlib.contextmanager
def decoding(name: str, what: str = "image"):
    """Around the decoding of one untrusted file: any unexpected exception from the libraries (ValueError,
    TypeError, KeyError, IndexError, a numpy or pydicom error...) becomes that file's one ``DecodeError`` line,
    naming it and the exception, so that one hostile file costs only its own result. ``UserError``s pass unchanged;
    so do ``MemoryError``, ``KeyboardInterrupt`` and ``SystemExit``."""
    try:
        yield
    except (UserError, MemoryError):
        raise
    except Exception as e:
        raise DecodeError(f"{name}: cannot decode this {what} ({exception_reason(e)})") from None
