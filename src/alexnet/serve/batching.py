"""Dynamic batching: the images of concurrent requests go through the model together, in one forward pass.

Each request submits its crops (``uint8 (n, 3, c, c)``) as one item. The batcher's thread takes the first waiting
item, keeps taking items for up to ``max_wait_s`` or until ``max_batch`` images, and runs ``forward`` once on their
concatenation. A request's images stay together and in order (an item never straddles two forward passes unless it
alone is over ``max_batch``), so a request served alone runs the very batch ``Predictor.predict`` runs on the same
files and gets bit-identical probabilities. Batched with other requests its rows can differ in the last bits: CPU
kernels pick their algorithm by batch size (measured on this machine's MKL: batch 1 vs >= 2 in the convolutions,
< 16 vs >= 16 rows in the linear layers, up to 6e-8 in a probability).

Admission is bounded: ``reserve(n)`` admits n images only while the server holds fewer than ``capacity``, counting
every image from admission to its answer (decoding, waiting, in the forward pass). The caller refuses the request
when it returns False, so memory stays bounded whatever the load.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import torch


@dataclass
class _Item:
    crops: torch.Tensor  # uint8 (n, 3, c, c)
    future: Future  # -> float32 (n, num_classes) on the CPU


_STOP = object()


class Budget:
    """How much of something (images, bytes) the server holds, never more than ``capacity``. Thread-safe."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._held = 0
        self._lock = threading.Lock()

    def reserve(self, n: int) -> bool:
        """Hold ``n`` more if the total then stays within ``capacity``; False (nothing held) if not."""
        with self._lock:
            if self._held + n > self.capacity:
                return False
            self._held += n
            return True

    def release(self, n: int) -> None:
        with self._lock:
            self._held -= n

    def fits(self, n: int) -> bool:
        """Whether ``n`` more would fit now (holds nothing: a check before work that ends in ``reserve``)."""
        return self._held + n <= self.capacity

    @property
    def held(self) -> int:
        return self._held


class Batcher:
    """Runs ``forward(uint8 (B, 3, c, c)) -> float32 (B, C)`` on groups of submitted crops, in a thread of its own.

    ``on_batch(images, seconds)`` is called after every forward pass (for metrics).
    """

    def __init__(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        *,
        max_batch: int,
        max_wait_s: float,
        capacity: int,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.forward, self.max_batch, self.max_wait_s, self.capacity = forward, max_batch, max_wait_s, capacity
        self.on_batch = on_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.admission = Budget(capacity)  # images from reserve() to release(); read-only to others
        self._waiting = 0  # images submitted and not yet taken into a forward pass
        self._thread: threading.Thread | None = None
        self._closed = False

    # ---- admission

    def reserve(self, n: int) -> bool:
        """Admit ``n`` more images if the server then holds at most ``capacity``; False (nothing admitted) if not."""
        return self.admission.reserve(n)

    def release(self, n: int) -> None:
        self.admission.release(n)

    @property
    def admitted(self) -> int:
        return self.admission.held

    @property
    def waiting(self) -> int:
        return self._waiting

    # ---- work

    def submit(self, crops: torch.Tensor) -> list[Future]:
        """Queue one request's crops; one future per chunk of at most ``max_batch`` images, in order."""
        if self._closed:
            raise RuntimeError("the batcher is closed")
        futures = []
        for chunk in crops.split(self.max_batch):
            item = _Item(chunk, Future())
            with self._lock:
                self._waiting += len(chunk)
            self._queue.put(item)
            futures.append(item.future)
        return futures

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="alexnet-batcher", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        carry = None  # an item taken but not fitting the previous batch: it starts the next one
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is _STOP:
                return
            batch, n = [first], len(first.crops)
            deadline = time.monotonic() + self.max_wait_s
            while n < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is _STOP or n + len(item.crops) > self.max_batch:
                    carry = item
                    break
                batch.append(item)
                n += len(item.crops)
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Item]) -> None:
        with self._lock:
            self._waiting -= sum(len(it.crops) for it in batch)
        live = [it for it in batch if it.future.set_running_or_notify_cancel()]  # timed-out requests are skipped
        if not live:
            return
        start = time.perf_counter()
        try:
            probs = self.forward(torch.cat([it.crops for it in live]))  # (B, C)
        except Exception as e:  # every request of the batch gets the error; the thread lives on
            for it in live:
                it.future.set_exception(e)
            return
        if self.on_batch is not None:
            self.on_batch(len(probs), time.perf_counter() - start)
        i = 0
        for it in live:
            it.future.set_result(probs[i : i + len(it.crops)])
            i += len(it.crops)
