"""The exceptions for mistakes a user can fix: the CLI prints their message on one line, without a traceback."""

import os


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


def missing_file(path: str | os.PathLike, what: str) -> str:
    """Why ``path`` is not the ``what`` ("model file", "checkpoint file"...) asked for: a folder given by mistake
    (a run folder, say), or nothing there."""
    if os.path.isdir(path):
        return f"{path}: is a folder, not a {what}; give the file (a run's is RUN/checkpoints/best.pt)"
    return f"{path}: no such {what}"
