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
from dataclasses import dataclass

from ..names import DEVICE_HELP, DEVICE_PATTERN
from ..settings import InvalidSetting, setting, validate_fields

LOOPBACK = ("127.0.0.1", "::1", "localhost")
BACKENDS = ("auto", "torch", "onnxruntime")
_ORIGIN = r"\*|https?://[A-Za-z0-9.\-\[\]:]+"  # scheme://host[:port], no path; * = any
_ORIGIN_RULE = "an origin is scheme://host[:port] (e.g. http://localhost:3000)"
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}"


def _default_decode_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class ServeConfig:
    """Where to listen, how to batch, and the limits. Sizes in MB are 2**20 bytes. ``alexnet serve`` generates its
    flags from these fields (``alexnet.settings``); construction checks every value (``UserError`` naming the flag)."""

    host: str = setting("127.0.0.1", "address to listen on; 0.0.0.0 serves every network (no auth!)")
    port: int = setting(8000, "TCP port", low=0, high=65535)
    max_batch: int = setting(32, "images per forward pass (1: no batching)", low=1, high=4096)
    max_wait_ms: float = setting(5.0, "ms a batch waits for more images", low=0, high=10_000)
    max_upload_mb: float = setting(10.0, "largest request body, MB; larger ones get 413 before they are read in full",
                                   low=0, low_open=True, high=1024)  # fmt: skip
    queue: int = setting(256, "images in the server at once (decoding, waiting, in the forward pass); more get 503",
                         low=1, high=1_000_000)  # fmt: skip
    max_queued_mb: float = setting(256.0, "request bodies held at once (arriving, decoding, waiting), MB, at least "
                                   "--max-upload-mb; more get 503", low=0, low_open=True, high=1 << 20)  # fmt: skip
    timeout_s: float = setting(30.0, "seconds to answer one request, from its first byte (408 reading, 504 computing)",
                               low=0, low_open=True, high=3600)  # fmt: skip
    decode_threads: int = setting(help="threads decoding and cropping images", factory=_default_decode_threads, low=1,
                                  high=256, default_text="CPUs, <= 4")  # fmt: skip
    threads: int | None = setting(None, "torch threads for the forward pass", low=1, high=1024,
                                  none_text="torch's, as alexnet predict; other counts change the last bits of the "
                                  "probabilities")  # fmt: skip
    device: str = setting("auto", DEVICE_HELP, pattern=DEVICE_PATTERN, pattern_rule=f"choose from {DEVICE_HELP}")
    backend: str = setting("auto", "auto: onnxruntime for .onnx, else torch", choices=BACKENDS)
    name: str | None = setting(None, "model name in /v2/models/NAME", pattern=_NAME,
                               pattern_rule="use 1 to 64 letters, digits, '_', '.' or '-'",
                               none_text="the file name's stem")  # fmt: skip
    cors: tuple[str, ...] = setting((), "allow this browser origin; repeat the flag for more", metavar="ORIGIN",
                                    pattern=_ORIGIN, pattern_rule=_ORIGIN_RULE, default_text="none")  # fmt: skip
    retry_after_s: int = setting(1, "the Retry-After header of a 503, s", low=1, high=3600, cli=False)
    explain: bool = setting(False, "serve POST /explain: Grad-CAM overlays, shown on the page (a backward pass per "
                            "image; needs the plots extra; not for .onnx)", switch=True)  # fmt: skip
    explain_max_images: int = setting(8, "images being explained or waiting to be, all requests together; more get "
                                      "503", low=1, high=1024)  # fmt: skip
    max_connections: int = setting(1000, "open connections (fewer if the descriptor limit is lower); past it, idle "
                                   "ones are closed", low=1, high=1_000_000)  # fmt: skip
    header_timeout_s: float = setting(10.0, "seconds for a request's line and headers, from the connection's start "
                                      "or the last answer", low=0, low_open=True, high=3600)  # fmt: skip
    keep_alive_s: float = setting(5.0, "seconds a connection idle after an answer stays open", low=0, low_open=True,
                                  high=3600)  # fmt: skip
    min_upload_kb_s: float = setting(20.0, "KB/s: a body slower than this on average (after its first 5 s) gets 408; "
                                     "0: no minimum", low=0, high=1 << 20)  # fmt: skip
    max_decoded_mb: float = setting(512.0, "MB of large images (over 4 MP) decoding at once, estimated from their "
                                    "headers; more get 503, one alone over it 422", low=1, high=1 << 20)  # fmt: skip
    access_log: bool = setting(False, "log one line per request", switch=True)

    def __post_init__(self) -> None:
        validate_fields(self)  # types, ranges, choices, patterns; lists become tuples
        if self.max_queued_mb < self.max_upload_mb:
            raise InvalidSetting(
                "max_queued_mb", self.max_queued_mb, f"must be at least --max-upload-mb ({self.max_upload_mb:g}: one "
                "upload must fit)"
            )  # fmt: skip

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * (1 << 20))

    @property
    def max_queued_bytes(self) -> int:
        return int(self.max_queued_mb * (1 << 20))

    @property
    def max_decoded_bytes(self) -> int:
        return int(self.max_decoded_mb * (1 << 20))

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK


def model_name(path: str | os.PathLike) -> str:
    """A URL-safe model name from a file name: ``runs/x/best.pt`` -> ``best``."""
    stem = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", stem).lstrip("._-")[:64]
    return name or "model"
