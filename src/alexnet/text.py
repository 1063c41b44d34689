"""Words of printed lines: text from untrusted sources (file and class names, request values) made safe to print on
one line, and counts in the singular or plural."""

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
