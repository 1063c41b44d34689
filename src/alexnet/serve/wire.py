"""The wire: reading a request's body (counted while it streams in) and its multipart images, the query's numbers,
and the errors a client is shown (``HTTPError`` -> ``{"error": "..."}`` with its status, one line, never a trace)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from ..data.decode import DecodeBoundsError
from ..errors import UserError
from ..text import plural

MAX_NAME_CHARS = 200  # an image's name (its multipart filename) as echoed back; it is a label, never a path
MAX_MESSAGE_CHARS = 1000  # an error message, whatever it quotes of the request
MAX_SHOWN_CHARS = 60  # a value of the client's quoted in an error message
UPLOAD_GRACE_S = 5.0  # a body's first seconds, before its average rate must reach --min-upload-kb-s


class HTTPError(Exception):
    """A request refused with ``status`` and a message for the client."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        if len(message) > MAX_MESSAGE_CHARS:  # a backstop: values are quoted with shown(), names cut when parsed
            message = f"{message[:MAX_MESSAGE_CHARS]}... ({len(message):,} characters in all)"
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def shown(value: Any, limit: int = MAX_SHOWN_CHARS) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters: a client's value is quoted, never echoed
    in full (a 100,000-character query value would come back in the answer and the log)."""
    if isinstance(value, (list, dict)) and len(value) > limit:
        return f"<a {type(value).__name__} of {len(value):,}>"  # its repr would be as large as the body
    try:
        text = repr(value)
    except RecursionError:  # nested deeper than repr goes
        return f"<a deeply nested {type(value).__name__}>"
    return text if len(text) <= limit else f"{text[: limit - 3]}... ({len(text):,} characters)"


def whole_number(text: str, max_digits: int = 9) -> int | None:
    """``text`` as a non-negative int if it is ASCII digits only (at most ``max_digits``: Python refuses to parse
    over 4,300 digits, and no limit here needs more than 9), else None."""
    if not (text.isascii() and text.isdigit()) or len(text) > max_digits:
        return None
    return int(text)


def check_content_length(request: Request, max_bytes: int) -> None:
    """413 from the header alone, before a byte of the body is read."""
    length = request.headers.get("content-length")
    if length is None:
        return
    n = whole_number(length.lstrip("0") or "0", max_digits=18)
    if n is None and length.isascii() and length.isdigit():
        n = max_bytes + 1  # over 18 digits: far over any limit
    if n is None:
        raise HTTPError(400, f"Content-Length {shown(length)} is not a number of bytes")
    if n > max_bytes:
        raise HTTPError(413, f"a body of {n:,} bytes is over the {max_bytes:,}-byte limit (--max-upload-mb)")


async def read_body(
    request: Request, max_bytes: int, hold: Callable[[int], None], min_bytes_per_s: float = 0.0
) -> bytes:
    """The body, counted while it streams in (chunked uploads have no Content-Length): 413 at ``max_bytes`` + 1.

    ``hold(n)`` reserves n more bytes of the server's budget as they arrive, or raises 503; the caller releases them
    with the request. Bytes are held when they arrive, not when they are announced: a client that declares 10 MB
    and sends a byte a second holds a byte a second. After the first ``UPLOAD_GRACE_S``, a body whose average rate
    falls under ``min_bytes_per_s`` (0: no minimum) is cut off with 408.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    chunks, total = [], 0
    stream = request.stream().__aiter__()
    try:
        while True:
            try:
                if min_bytes_per_s > 0:  # the next chunk must come before the average falls under the minimum
                    due = start + UPLOAD_GRACE_S + total / min_bytes_per_s
                    chunk = await asyncio.wait_for(stream.__anext__(), max(due - loop.time(), 0.001))
                else:
                    chunk = await stream.__anext__()
            except StopAsyncIteration:
                break
            except asyncio.TimeoutError:
                raise HTTPError(408, too_slow(request, total, loop.time() - start, min_bytes_per_s)) from None
            total += len(chunk)
            if total > max_bytes:
                raise HTTPError(413, f"the body is over the {max_bytes:,}-byte limit (--max-upload-mb)")
            hold(len(chunk))
            chunks.append(chunk)
    except ClientDisconnect:
        raise HTTPError(400, "the client disconnected before sending the whole body") from None
    return b"".join(chunks)


def too_slow(request: Request, received: int, seconds: float, min_bytes_per_s: float) -> str:
    """Why a body was cut off: what came in how long, of how much (a Content-Length longer than the body sent
    looks the same from here: a body that stopped arriving)."""
    declared = request.headers.get("content-length")
    of = f" of the {int(declared):,} declared" if declared and declared.isdigit() else ""
    return (f"the body stopped arriving or came slower than {min_bytes_per_s / 1024:g} KB/s (--min-upload-kb-s): "
            f"{received:,}{of} bytes in {seconds:.0f} s")  # fmt: skip


def declared_length(request: Request) -> int:
    """The Content-Length (checked by ``check_content_length``), 0 when the body is chunked."""
    length = request.headers.get("content-length")
    return int(length) if length else 0


def split_images(body: bytes, content_type: str, max_images: int, flag: str = "--queue") -> list[tuple[str, bytes]]:
    """``(name, encoded bytes)`` per image: the file parts of a multipart body, or the whole body as one image.
    More than ``max_images`` file parts: 413 naming ``flag``, the limit's option."""
    if content_type.lower().startswith("multipart/form-data"):
        images = parse_multipart(body, content_type, max_images, flag)
    else:
        images = [("image", body)] if body else []
    if not images:
        raise HTTPError(400, "no image in the request: send files as multipart/form-data or one image as the body")
    return images


def parse_multipart(body: bytes, content_type: str, max_files: int, flag: str = "--queue") -> list[tuple[str, bytes]]:
    """The file parts (those with a ``filename``) of a multipart/form-data body, held in memory, never on disk."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise HTTPError(400, "multipart/form-data without a boundary in its Content-Type")
    files: list[tuple[str, bytes]] = []
    part: dict[str, Any] = {}
    ended = False

    def on_part_begin() -> None:
        part.update(headers={}, field=b"", value=b"", data=[])

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        part["value"] += data[start:end]

    def on_header_end() -> None:
        part["headers"][part["field"].lower()] = part["value"]
        part["field"], part["value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part["data"].append(data[start:end])

    def on_part_end() -> None:
        _, disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))
        if b"filename" not in disposition:
            return  # a plain form field: not an image
        if len(files) == max_files:
            raise HTTPError(413, f"more than {max_files} images in one request ({flag})")
        name = disposition[b"filename"] or disposition.get(b"name", b"") or b"image"
        files.append((name.decode("utf-8", "replace")[:MAX_NAME_CHARS], b"".join(part["data"])))

    def on_end() -> None:
        nonlocal ended
        ended = True

    callbacks = {k: v for k, v in locals().items() if k.startswith("on_")}
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type] (refuses a boundary over 256 bytes)
        parser.write(body)
        parser.finalize()
    except HTTPError:
        raise
    except Exception as e:  # python-multipart raises MultipartParseError, FormParserError and friends
        raise HTTPError(400, f"malformed multipart body ({str(e)[:200]})") from None
    if not ended:
        raise HTTPError(400, "malformed multipart body (it ends before its closing boundary)")
    return files


def image_status(err: UserError) -> int:
    """422 for an image the decoder's bounds refuse (bombs, pixel and aspect-ratio limits, too many scans), 503 for
    one the server has no decoding memory for now, 415 for the rest."""
    return getattr(err, "http_status", None) or (422 if isinstance(err, DecodeBoundsError) else 415)


def parse_topk(raw: str | None, num_classes: int) -> int:
    """``?topk``: the top 5 when absent (every class of a model of fewer); 400 as ``class_count`` says."""
    if raw is None:
        return min(5, num_classes)
    k = whole_number(raw)
    given = f"topk={k}" if k is not None and k >= 1 else f"topk={shown(raw)}"  # over the classes: the number read
    return class_count(k, num_classes, given, f"without topk: the top {min(5, num_classes)}")


def class_count(k: int | None, num_classes: int, given: str, without: str) -> int:
    """``k``, a count of classes asked for (``/predict?topk``, v2's ``"classification"``) as ``given``; 400 unless
    from 1 to ``num_classes``, naming how many the model has (a client asking for more may think it talks to another
    model). ``without``: what leaving it out gives. ``k`` None: not a whole number."""
    if k is None or k < 1:
        raise HTTPError(400, f"{given}: must be a whole number of classes, from 1 to {num_classes}")
    if k > num_classes:
        raise HTTPError(400, f"{given}: this model has {plural(num_classes, 'class', 'classes')}; ask for 1 to "
                        f"{num_classes} ({without})")  # fmt: skip
    return k


def error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """The JSON answer of a refused request: ``{"error": message, **extra}``."""
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)
