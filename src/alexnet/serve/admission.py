"""Admission: the one path every POST route takes from a request's arrival to its images.

In order: the query (each parameter the route takes parsed by its own function; 400 for one it does not take or one
given twice: a misspelt name is never silently ignored), the deadline (``--timeout-s`` from arrival), the
Content-Length check (413 before a byte is read), a check that one image (and for ``/explain`` one Grad-CAM) and the
declared body would fit, so that a full server refuses without reading the body, the body read while its bytes are
held against ``--max-queued-mb`` as they arrive (408 past the deadline or under ``--min-upload-kb-s``), the body
parsed into images in a thread (multipart, one raw image, or a v2 request), and the images' places. Nothing is held
for a body until its bytes arrive: slow clients hold what they sent, not what they announced. What the request
reserved is released when it ends, whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request

from .wire import HTTPError, check_content_length, declared_length, read_body, shown

if TYPE_CHECKING:
    from .service import Service


class Admission:
    """What one request holds of the server's budgets; each ``reserve_*`` holds more or raises 503."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.images = 0  # of --queue
        self.bytes = 0  # of --max-queued-mb
        self.explained = 0  # of --explain-max-images, until handed over to the explain thread

    def _busy(self, what: str):
        c = self.service.config
        return self.service.busy(
            {
                "images": f"{c.queue} images in flight, --queue",
                "bytes": f"{c.max_queued_mb:g} MB of request bodies held, --max-queued-mb",
                "explained": f"{c.explain_max_images} images being explained, --explain-max-images",
            }[what]
        )

    def check_room(self, images: int, bytes: int, explained: int) -> None:
        """503 unless this much would fit now; holds nothing (the request has not shown it will send its body)."""
        s = self.service
        for what, budget, n in [("explained", s.explaining, explained), ("images", s.batcher.admission, images),
                                ("bytes", s.bodies, bytes)]:  # fmt: skip
            if n and not budget.fits(n):
                raise self._busy(what)

    def reserve_images(self, n: int) -> None:
        if not self.service.batcher.reserve(n):
            raise self._busy("images")
        self.images += n

    def reserve_bytes(self, n: int) -> None:
        if not self.service.bodies.reserve(n):
            raise self._busy("bytes")
        self.bytes += n

    def reserve_explained(self, n: int) -> None:
        if not self.service.explaining.reserve(n):
            raise self._busy("explained")
        self.explained += n

    def hand_over_explained(self) -> int:
        """The explain budget held, now the explain thread's to release."""
        n, self.explained = self.explained, 0
        return n

    def release(self) -> None:
        self.service.batcher.release(self.images)
        self.service.bodies.release(self.bytes)
        self.service.explaining.release(self.explained)
        self.images = self.bytes = self.explained = 0


@dataclass
class Admitted:
    """An admitted request: its images ``(name, encoded bytes or uint8 (3, H, W))``, what the parser made of the
    rest of the body (v2: the outputs and id), its deadline (event-loop time), what it holds and its query's values
    (by parameter name)."""

    images: list[tuple[str, Any]]
    deadline: float
    holding: Admission
    parsed: dict[str, Any] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)


Parser = Callable[[bytes, str], "tuple[list[tuple[str, Any]], dict[str, Any]]"]
# parameter name -> its parser (given None when absent; raises HTTPError)
Query = dict[str, Callable[[str | None], Any]]


def read_query(request: Request, params: Query) -> dict[str, Any]:
    """Each of ``params`` parsed from ``request``'s query string; 400 naming a parameter the route does not take
    (with those it does) or one given more than once."""
    given: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in params:
            route = getattr(request.scope.get("route"), "path", "this endpoint")
            takes = f"takes {', '.join(params)}" if params else "takes no query parameters"
            raise HTTPError(400, f"unknown query parameter {shown(name)}: {route} {takes}")
        if name in given:
            raise HTTPError(400, f"query parameter {name!r} given more than once: send it once")
        given[name] = value
    return {name: parse(given.get(name)) for name, parse in params.items()}


def refuse_get_query(request: Request) -> None:
    """A dependency of every route: a GET (or HEAD) route takes no query parameters, so any is a 400 naming it, as
    the POST routes' ``read_query`` answers (``/info?x=1`` was a 200, ``/predict?x=1`` a 400)."""
    if request.method == "GET":  # HEAD arrives as GET (app.AnswerHead); POST routes read theirs in admit
        read_query(request, {})


@contextlib.asynccontextmanager
async def admit(
    request: Request, service: Service, parse: Parser, *, query: Query | None = None, explain: bool = False
) -> AsyncIterator[Admitted]:
    """Admit ``request`` (see the module's docstring): ``query`` names the parameters the route takes (none if
    None); ``parse(body, content_type) -> (images, parsed)`` runs in a thread within the deadline (504 past it).
    Yields the ``Admitted`` request; releases what it holds at the end."""
    values = read_query(request, query or {})
    config = service.config
    deadline = asyncio.get_running_loop().time() + config.timeout_s
    check_content_length(request, config.max_upload_bytes)
    holding = Admission(service)
    try:
        # a full server refuses before reading the body; what the body needs is held once it is here
        holding.check_room(images=1, bytes=declared_length(request), explained=1 if explain else 0)
        min_rate = config.min_upload_kb_s * 1024
        read = read_body(request, config.max_upload_bytes, holding.reserve_bytes, min_rate)
        body = await service.within(read, deadline, 408, "the upload")
        content_type = request.headers.get("content-type", "")
        work = asyncio.to_thread(parse, body, content_type)
        del body
        images, parsed = await service.within(work, deadline, 504, "reading the request")
        if not images:  # the parsers refuse this; without an image there is nothing to reserve or to answer
            raise HTTPError(400, "no image in the request")
        if explain:
            holding.reserve_explained(len(images))
        holding.reserve_images(len(images))
        yield Admitted(images, deadline, holding, parsed, values)
    finally:
        holding.release()
