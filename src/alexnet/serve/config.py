"""The settings of ``alexnet serve``: one dataclass, validated, with safe defaults. No torch, no FastAPI here.

Each limit bounds what one client can make the server hold: a body is at most ``max_upload_mb``, the server holds
at most ``queue`` images and ``max_queued_mb`` of request bodies at once (a request that would go over gets 503 with
``Retry-After``, before its body is read when it says its length), and every request is answered or refused within
``timeout_s``. Grad-CAM (``explain``) is off unless asked for: it needs a backward pass per image, so it runs one
request at a time, for at most ``explain_max_images`` images in the server at once.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ..errors import UserError

LOOPBACK = ("127.0.0.1", "::1", "localhost")
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+")  # scheme://host[:port], no path


def _default_decode_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class ServeConfig:
    """Where to listen, how to batch, and the limits. Sizes in MB are 2**20 bytes."""

    host: str = "127.0.0.1"  # loopback only; 0.0.0.0 serves every network (there is no authentication)
    port: int = 8000
    max_batch: int = 32  # images per forward pass
    max_wait_ms: float = 5.0  # how long the first image of a batch waits for more
    max_upload_mb: float = 10.0  # one request's body; larger ones get 413 before they are read in full
    queue: int = 256  # images in the server at once (decoding, waiting or in the forward pass); more: 503
    max_queued_mb: float = 256.0  # request bodies held at once (arriving, decoding, waiting); more: 503
    timeout_s: float = 30.0  # one request, from its first byte to its answer (408 reading, 504 computing)
    decode_threads: int = field(default_factory=_default_decode_threads)  # threads decoding and cropping images
    threads: int | None = None  # torch's intra-op threads for the forward pass; None: torch's default, as predict
    cors: tuple[str, ...] = ()  # origins allowed to call the API from a browser; none by default
    name: str | None = None  # model name in the v2 protocol's URLs; default: the model file's stem
    retry_after_s: int = 1  # the Retry-After header of a 503
    explain: bool = False  # POST /explain: Grad-CAM overlays (a backward pass per image; torch models only)
    explain_max_images: int = 8  # images being explained or waiting to be, all requests together; more: 503
    max_connections: int = 1000  # open connections (fewer if the descriptor limit is lower); past it, idle ones close
    header_timeout_s: float = 10.0  # a request's line and headers, from the connection's start or the last answer
    keep_alive_s: float = 5.0  # a connection idle after an answer is closed
    min_upload_kb_s: float = 20.0  # a body slower than this on average (after its first 5 s) gets 408; 0: no minimum

    def __post_init__(self) -> None:
        object.__setattr__(self, "cors", tuple(self.cors))
        checks = [
            ("--port", self.port, 0 <= self.port <= 65535, "an integer from 0 to 65535"),
            ("--max-batch", self.max_batch, 1 <= self.max_batch <= 4096, "from 1 to 4096 images"),
            ("--max-wait-ms", self.max_wait_ms, 0 <= self.max_wait_ms <= 10_000, "from 0 to 10000 ms"),
            ("--max-upload-mb", self.max_upload_mb, 0 < self.max_upload_mb <= 1024, "over 0 and at most 1024 MB"),
            ("--queue", self.queue, 1 <= self.queue <= 1_000_000, "from 1 to 1000000 images"),
            (
                "--max-queued-mb",
                self.max_queued_mb,
                self.max_upload_mb <= self.max_queued_mb <= 1 << 20,
                f"at least --max-upload-mb ({self.max_upload_mb:g}: one upload must fit) and at most 1048576 MB",
            ),
            ("--explain-max-images", self.explain_max_images, 1 <= self.explain_max_images <= 1024, "from 1 to 1024"),
            ("--timeout-s", self.timeout_s, 0 < self.timeout_s <= 3600, "over 0 and at most 3600 s"),
            ("--decode-threads", self.decode_threads, 1 <= self.decode_threads <= 256, "from 1 to 256"),
            ("--threads", self.threads, self.threads is None or 1 <= self.threads <= 1024, "from 1 to 1024"),
            ("retry_after_s", self.retry_after_s, 1 <= self.retry_after_s <= 3600, "from 1 to 3600 s"),
            ("--max-connections", self.max_connections, 1 <= self.max_connections <= 1_000_000, "from 1 to 1000000"),
            ("--header-timeout-s", self.header_timeout_s, 0 < self.header_timeout_s <= 3600, "over 0, at most 3600 s"),
            ("--keep-alive-s", self.keep_alive_s, 0 < self.keep_alive_s <= 3600, "over 0 and at most 3600 s"),
            ("--min-upload-kb-s", self.min_upload_kb_s, 0 <= self.min_upload_kb_s <= 1 << 20, "from 0 to 1048576"),
        ]
        for flag, value, ok, what in checks:
            if not ok:
                raise UserError(f"{flag} {value}: must be {what}")
        for origin in self.cors:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise UserError(f"--cors {origin!r}: an origin is scheme://host[:port] (e.g. http://localhost:3000)")
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}", self.name):
            raise UserError(f"--name {self.name!r}: use 1 to 64 letters, digits, '_', '.' or '-'")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * (1 << 20))

    @property
    def max_queued_bytes(self) -> int:
        return int(self.max_queued_mb * (1 << 20))

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK


def model_name(path: str | os.PathLike) -> str:
    """A URL-safe model name from a file name: ``runs/x/best.pt`` -> ``best``."""
    stem = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", stem).lstrip("._-")[:64]
    return name or "model"
