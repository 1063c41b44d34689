"""The packed loader: shuffled uint8 batches gathered from a memory map, augmented on the device in whole batches.

Per step: a background thread gathers the batch's rows from the memory map (indices sorted for locality, written
back in batch order) into a pinned staging buffer with a few threads, draws the batch's random parameters (per
sample, from ``sampling.uniforms(seed, epoch, index)``) and, on CUDA, starts the copy to the device on a side
stream. The main thread waits only for that copy's event and runs the augmentation (``batch_aug``). ``prefetch``
batches are in flight.

The same code runs on CPU tensors, where the staging buffer is the batch and the background thread only reads the
memory map (numpy, which releases the GIL): labels, parameters and augmentation run in the consumer. Torch work in
both threads made the loader 2x slower on 2 cores (GIL hand-offs and two intra-op thread pools competing).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ...errors import UserError
from .. import batch_aug as A
from ..device_ops import Normalizer
from ..pack.reader import PackedSplit, open_packed
from ..presets import PRESETS
from ..sampling import loader_batches
from ..transforms import center_crop

_DONE = object()


class PackedLoader:
    """Batches of one split of a pack (a ``PackedSplit``, or a pack directory and a split name) for one rank, as
    normalised float tensors on ``device`` (the ``Loader`` protocol).

    Yields ``(x, y)``: ``x`` float32 (B, 3, crop, crop) — (B, 10, 3, crop, crop) with ``ten_crop`` — normalised and
    channels-last if asked; ``y`` int64 (B,). Train: reshuffled per epoch, ``preset`` ``paper`` (random crop + flip +
    PCA noise if ``pca``) or ``torchvision`` (RandomResizedCrop + flip). Eval: centre crop (or ten crops), in order.
    ``gather_threads``: threads copying rows out of the memory map (beyond the protocol). Default: one on the CPU,
    whose cores the consumer needs (more measured 2x slower on 2 cores), else ``min(8, cores)`` (a 256-px batch of
    256 is 50 MB; one thread copies it at a few GB/s).
    The pack's own statistics are in ``pack.read_manifest(root)["stats"]`` (mean, std, eigvals, eigvecs).
    """

    def __init__(
        self,
        root: str | Path | PackedSplit,
        split: str | None = None,
        *,
        batch_size: int,
        train: bool,
        preset: str = "paper",
        crop_size: int = 224,
        mean: Sequence[float],
        std: Sequence[float],
        pca: dict | None = None,
        pca_std: float = 0.1,
        seed: int = 0,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool | None = None,
        channels_last: bool = False,
        ten_crop: bool = False,
        prefetch: int = 2,
        gather_threads: int | None = None,
    ) -> None:
        self.data = root if isinstance(root, PackedSplit) else open_packed(root, split or "train")
        if preset not in PRESETS:
            raise UserError(f"--preset {preset!r} is not one of {', '.join(PRESETS)}")
        if crop_size > self.data.size:
            raise UserError(
                f"crop size {crop_size} px is larger than the packed images ({self.data.size} px in "
                f"{self.data.root}); re-pack with a larger --size or crop smaller"
            )
        if batch_size < 1:
            raise UserError(f"batch size {batch_size} must be at least 1")
        self.classes = self.data.classes
        self.num_samples = len(self.data)
        self.batch_size, self.train, self.preset, self.crop_size = batch_size, train, preset, crop_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.drop_last = train if drop_last is None else drop_last
        self.device = torch.device(device)
        self.channels_last, self.ten_crop = channels_last, ten_crop
        if gather_threads is None:
            gather_threads = 1 if self.device.type == "cpu" else min(8, os.cpu_count() or 1)
        self.prefetch, self.gather_threads = max(1, prefetch), max(1, gather_threads)
        self.pca_std = pca_std if (train and pca is not None and pca_std > 0 and preset == "paper") else None
        # alpha is drawn times pca_std (batch_aug.sample_paper), so the eigenvalues go in as they are
        scaled = (pca["eigvals"], pca["eigvecs"]) if self.pca_std is not None else None
        self.normalize = Normalizer(mean, std, device=self.device, pca=scaled, channels_last=channels_last)
        self.labels = torch.from_numpy(np.asarray(self.data.labels, dtype=np.int64))
        self.bad_files: list[tuple[str, str]] = []  # bad files were skipped when packing
        self.epoch, self.start_batch, self.next_batch = 0, 0, 0

    # -- protocol -----------------------------------------------------------------------------------------------------

    def _batches(self) -> list[torch.Tensor]:
        return loader_batches(self.num_samples, batch_size=self.batch_size, seed=self.seed, epoch=self.epoch,
                              train=self.train, drop_last=self.drop_last, rank=self.rank,
                              world_size=self.world_size)  # fmt: skip

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch (its order and augmentation) and skip its first ``start_batch`` batches."""
        self.epoch, self.start_batch, self.next_batch = epoch, start_batch, start_batch

    def __len__(self) -> int:
        return len(self._batches())

    def state(self) -> dict:
        """Where to resume: ``set_epoch(state["epoch"], state["start_batch"])``."""
        return {"epoch": self.epoch, "start_batch": self.next_batch}

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        steps = list(enumerate(self._batches()))[self.start_batch :]
        if not steps:
            return
        cuda = self.device.type == "cuda"
        size = self.data.size
        nbuf = self.prefetch + 2  # queue (prefetch) + one being filled + one in use by the consumer
        shape = (self.batch_size, size, size, self.data.images.shape[-1])  # 3 channels, or 1 (gray)
        bufs = [torch.empty(shape, dtype=torch.uint8, pin_memory=cuda) for _ in range(nbuf)]
        copied = [None] * nbuf  # CUDA event per buffer: its last host-to-device copy finished
        side = torch.cuda.Stream(self.device) if cuda else None
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def put(item) -> None:  # gives up when the consumer has stopped (a closed or abandoned iterator)
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        def produce() -> None:
            # a new thread starts on cuda:0; make the rank's GPU current for its streams and events
            on_device = torch.cuda.device(self.device) if cuda else contextlib.nullcontext()
            try:
                pool = ThreadPoolExecutor(self.gather_threads) if self.gather_threads > 1 else None
                with on_device, pool or contextlib.nullcontext():
                    for k, (step, idx) in enumerate(steps):
                        if stop.is_set():
                            return
                        slot = k % nbuf
                        if copied[slot] is not None:
                            copied[slot].synchronize()  # the device copy of this buffer's previous batch is done
                        buf = bufs[slot][: len(idx)]
                        self._gather(idx.numpy(), buf.numpy(), pool)
                        if not cuda:  # labels, parameters and augmentation: in the consumer (module doc)
                            put((step, idx, buf, None, None, None))
                            continue
                        y = self.labels[idx].pin_memory()
                        params = self._params(idx)
                        params = None if params is None else params.pin_memory()
                        with torch.cuda.stream(side):
                            x = buf.to(self.device, non_blocking=True)
                            y = y.to(self.device, non_blocking=True)
                            params = None if params is None else params.to(self.device, non_blocking=True)
                            ev = torch.cuda.Event()
                            ev.record(side)
                        copied[slot] = ev
                        put((step, idx, x, y, params, ev))
            except BaseException as e:  # hand errors to the consumer
                put(e)
                return
            put(_DONE)

        thread = threading.Thread(target=produce, name="packed-loader", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                step, idx, x, y, params, ev = item
                if ev is None:
                    y, params = self.labels[idx], self._params(idx)
                else:
                    stream = torch.cuda.current_stream(self.device)
                    stream.wait_event(ev)  # no host sync: the compute stream waits for the copy
                    for t in (x, y, *(vars(params).values() if params is not None else ())):
                        if t is not None:
                            t.record_stream(stream)  # allocated on the side stream, used on this one
                x = self._augment(x, params)
                self.next_batch = step + 1
                yield x, y
        finally:
            stop.set()
            thread.join()
        self.start_batch = self.next_batch = 0  # a finished epoch resumes at the start of the next one

    # -- internals ----------------------------------------------------------------------------------------------------

    def _gather(self, idx: np.ndarray, out: np.ndarray, pool: ThreadPoolExecutor | None) -> None:
        """out[j] = images[idx[j]], reading rows in sorted order (page-cache/disk locality), split over threads."""
        images = self.data.images
        if pool is None:
            np.take(images, idx, axis=0, out=out)
            return
        order = np.argsort(idx, kind="stable")

        def copy(part: np.ndarray) -> None:
            out[part] = images[idx[part]]  # one fancy-indexing copy per part (numpy releases the GIL)

        list(pool.map(copy, np.array_split(order, min(len(order), self.gather_threads))))

    def _params(self, idx: torch.Tensor) -> A.AugParams | None:
        """Random parameters of the samples ``idx``: each a pure function of (seed, epoch, sample index)."""
        if not self.train:
            return None
        key = dict(seed=self.seed, epoch=self.epoch, pca_std=self.pca_std)
        if self.preset == "paper":
            return A.sample_paper(idx, self.data.size, self.crop_size, **key)
        return A.sample_resized_crop(idx, self.data.size, **key)

    def _augment(self, x: torch.Tensor, params: A.AugParams | None) -> torch.Tensor:
        """uint8 (B, S, S, 3) on the device -> normalised float32 batch (a new tensor: the staging buffer is free)."""
        crop = self.crop_size
        if params is None and self.ten_crop:
            return self.normalize(A.ten_crop(x, crop))  # (B, 10, 3, crop, crop)
        if params is None:
            out = center_crop(x.permute(0, 3, 1, 2), crop)  # (B, 3, crop, crop) view
        elif self.preset == "paper":
            out = A.crop_flip(x, params.top, params.left, params.flip, crop)
        else:
            out = A.resized_crop_flip(x, params.boxes, params.flip, crop)
        return self.normalize(out, None if params is None else params.alpha)
