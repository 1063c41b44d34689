"""Words of printed lines: text from untrusted sources (file and class names, request values) made safe to print on
one line, counts in the singular or plural, and durations."""

from __future__ import annotations


def printable(text: str, limit: int | None = None) -> str:
    """``text`` safe to print as one line: undecodable bytes of a file name (``surrogateescape``) as ``\\xNN``, control
    characters (a newline in a file or class name would forge an output line; a carriage return or an escape sequence
    would rewrite the terminal) as ``\\n``, ``\\r``, ``\\t``, ``\\x1b``...; cut to ``limit`` characters with "..."."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    text = "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in text)
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 3)] + "..."
    return text


def plural(n: float, word: str, many: str | None = None) -> str:
    """``n`` and ``word``, in the plural unless ``n`` is exactly 1: ``1 epoch``, ``0.5 epochs``, ``1,200 images``.

    ``many``: the plural when it is not ``word + "s"`` (``plural(n, "batch", "batches")``). Integers get thousands
    separators; other numbers are written with ``:g``.
    """
    number = f"{n:,}" if isinstance(n, int) else f"{n:g}"
    return f"{number} {word if n == 1 else many or word + 's'}"


def duration_text(seconds: float) -> str:
    """``42 s``, ``3 min 5 s``, ``1 h 2 min``: a duration as people read it."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s} s" if s else f"{minutes} min"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m} min" if m else f"{hours} h"
