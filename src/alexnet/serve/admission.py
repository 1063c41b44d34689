"""Admission: the one path every POST route takes from a request's arrival to its images.

In order: the deadline (``--timeout-s`` from arrival), the Content-Length check (413 before a byte is read), a place
in the image budget (and the explain budget for ``/explain``) before the body is read, so that a full server refuses
without reading it, the body read while its bytes are held against ``--max-queued-mb`` (408 past the deadline), the
body parsed into images in a thread (multipart, one raw image, or a v2 request), and the places of the other images.
What the request reserved is released when it ends, whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request

from .wire import HTTPError, check_content_length, read_body

if TYPE_CHECKING:
    from .service import Service


class Admission:
    """What one request holds of the server's budgets; each ``reserve_*`` holds more or raises 503."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.images = 0  # of --queue
        self.bytes = 0  # of --max-queued-mb
        self.explained = 0  # of --explain-max-images, until handed over to the explain thread

    def reserve_images(self, n: int) -> None:
        if not self.service.batcher.reserve(n):
            raise self.service.busy(f"{self.service.config.queue} images in flight, --queue")
        self.images += n

    def reserve_bytes(self, n: int) -> None:
        if not self.service.bodies.reserve(n):
            mb = self.service.config.max_queued_mb
            raise self.service.busy(f"{mb:g} MB of request bodies held, --max-queued-mb")
        self.bytes += n

    def reserve_explained(self, n: int) -> None:
        if not self.service.explaining.reserve(n):
            limit = self.service.config.explain_max_images
            raise self.service.busy(f"{limit} images being explained, --explain-max-images")
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
    rest of the body (v2: the outputs and id), its deadline (event-loop time) and what it holds."""

    images: list[tuple[str, Any]]
    deadline: float
    holding: Admission
    parsed: dict[str, Any] = field(default_factory=dict)


Parser = Callable[[bytes, str], "tuple[list[tuple[str, Any]], dict[str, Any]]"]


@contextlib.asynccontextmanager
async def admit(request: Request, service: Service, parse: Parser, *, explain: bool = False) -> AsyncIterator[Admitted]:
    """Admit ``request`` (see the module's docstring): ``parse(body, content_type) -> (images, parsed)`` runs in a
    thread within the deadline (504 past it). Yields the ``Admitted`` request; releases what it holds at the end."""
    config = service.config
    deadline = asyncio.get_running_loop().time() + config.timeout_s
    check_content_length(request, config.max_upload_bytes)
    holding = Admission(service)
    try:
        if explain:
            holding.reserve_explained(1)  # before the body is read: a full server refuses without reading it
        holding.reserve_images(1)
        body = await service.within(read_body(request, config.max_upload_bytes, holding.reserve_bytes), deadline, 408,
                                    "the upload")  # fmt: skip
        content_type = request.headers.get("content-type", "")
        work = asyncio.to_thread(parse, body, content_type)
        del body
        images, parsed = await service.within(work, deadline, 504, "reading the request")
        if not images:  # the parsers refuse this; without an image there is nothing to reserve or to answer
            raise HTTPError(400, "no image in the request")
        if explain:
            holding.reserve_explained(len(images) - 1)
        holding.reserve_images(len(images) - 1)
        yield Admitted(images, deadline, holding, parsed)
    finally:
        holding.release()
