"""Small helpers for the words of printed lines."""

from __future__ import annotations


def plural(n: float, word: str, many: str | None = None) -> str:
    """``n`` and ``word``, in the plural unless ``n`` is exactly 1: ``1 epoch``, ``0.5 epochs``, ``1,200 images``.

    ``many``: the plural when it is not ``word + "s"`` (``plural(n, "batch", "batches")``). Integers get thousands
    separators; other numbers are written with ``:g``.
    """
    number = f"{n:,}" if isinstance(n, int) else f"{n:g}"
    return f"{number} {word if n == 1 else many or word + 's'}"
