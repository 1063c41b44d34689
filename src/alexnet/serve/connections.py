"""Connections: how many the server keeps open and for how long, and a log that a flood cannot fill.

uvicorn closes a keep-alive connection idle for ``timeout_keep_alive`` after an answer, but not a connection that
never sends a byte, nor one that sends its headers a byte at a time, and it accepts connections until the process
runs out of file descriptors (then every accept fails and each failure is logged). ``GuardedH11Protocol`` adds:

- a header deadline: a request's line and headers must be complete within ``header_timeout_s`` of the connection's
  start or of the previous answer, however slowly they trickle in, else the connection is closed;
- a cap on open connections, ``max_connections`` (and below the descriptor limit): past it, the connection that has
  waited longest for its next request is closed (idle ones are cheap for a client to open and must not lock out the
  others); when every connection is inside a request, the new one is closed instead.

``RateLimitedLog`` lets at most ``burst`` records of one message through per ``window_s`` on a logger, then one
line saying how many were dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

DESCRIPTORS_KEPT = 128  # file descriptors left for the model, the decoders' files, logs and the listening socket


def connection_cap(max_connections: int) -> int:
    """``max_connections``, or fewer when the process may not open that many files (``RLIMIT_NOFILE``)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(8, min(max_connections, soft - DESCRIPTORS_KEPT))


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a cap on open connections (see the module)."""

    header_timeout_s: float = 10.0
    max_connections: int = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # the connections waiting for a request (not inside one), oldest wait first; shared by the server's protocols
        state = kwargs.get("server_state", args[1] if len(args) > 1 else None)
        if not hasattr(state, "alexnet_waiting"):
            state.alexnet_waiting = OrderedDict()  # type: ignore[union-attr]
        self._waiting: OrderedDict[GuardedH11Protocol, None] = state.alexnet_waiting  # type: ignore[union-attr]
        self._header_timer: asyncio.TimerHandle | None = None

    @classmethod
    def configured(cls, header_timeout_s: float, max_connections: int) -> type[GuardedH11Protocol]:
        """A subclass with these limits, for ``uvicorn.Config(http=...)``."""
        limits = {"header_timeout_s": header_timeout_s, "max_connections": connection_cap(max_connections)}
        return type(cls.__name__, (cls,), limits)

    # ---- uvicorn's protocol interface

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_waiting()
        if len(self.connections) > self.max_connections:
            # close the connection that has waited longest for a request; this one if every other is in a request
            oldest = next(iter(self._waiting))
            oldest._close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not None and not self.cycle.response_complete:  # the headers are in: a request runs
            self._stop_waiting()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._start_waiting()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    # ---- waiting for a request

    def _start_waiting(self) -> None:
        self._waiting.pop(self, None)
        self._waiting[self] = None  # the newest wait, last
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _stop_waiting(self) -> None:
        self._waiting.pop(self, None)
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self in self._waiting:
            self._close()

    def _close(self) -> None:
        self._stop_waiting()
        self.connections.discard(self)  # at once: the cap counts what is open, not what the loop has yet to close
        if not self.transport.is_closing():
            self.transport.close()


class RateLimitedLog(logging.Filter):
    """At most ``burst`` records of one message per ``window_s``; then one record saying how many were dropped."""

    def __init__(self, burst: int = 10, window_s: float = 60.0) -> None:
        super().__init__()
        self.burst, self.window_s = burst, window_s
        self._seen: dict[str, list] = {}  # message -> [window start, count, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        key = str(record.msg)[:200]
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is None or now - seen[0] > self.window_s:
            if len(self._seen) > 1000:  # many different messages: forget the old windows
                self._seen.clear()
            dropped = seen[2] if seen else 0
            self._seen[key] = [now, 1, 0]
            if dropped:
                record.msg = f"{record.msg} (and {dropped} more like it in the last {self.window_s:g} s, not logged)"
            return True
        seen[1] += 1
        if seen[1] <= self.burst:
            return True
        seen[2] += 1
        return False


@contextlib.contextmanager
def rate_limited_logs(names: tuple[str, ...] = ("asyncio", "uvicorn.error"), burst: int = 10) -> Iterator[None]:
    """Rate-limit the loggers a flood of connections writes to (asyncio's accept errors, uvicorn's bad requests),
    for the block; the filters are removed after it."""
    loggers = [logging.getLogger(n) for n in names]
    log_filter = RateLimitedLog(burst)
    for logger in loggers:
        logger.addFilter(log_filter)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(log_filter)
