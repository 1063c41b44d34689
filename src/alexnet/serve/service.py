"""The service behind the routes: a predictor, the batcher that groups images into forward passes, the thread pool
that decodes and crops them, Grad-CAM's thread, and the budgets every request reserves against (``admission``).

Images are decoded and cropped in the pool exactly as ``Predictor.predict`` does (``decode_image`` then the
predictor's ``transform``), then batched (see ``batching``).
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from ..data.decode import DecodeBoundsError
from ..errors import UserError
from ..limits import limits
from .batching import Batcher, Budget
from .config import ServeConfig, model_name
from .images import SMALL_DECODE_BYTES, DecodeBusy, decode_bytes, give_back_memory
from .metrics import Metrics
from .v2 import MODEL_VERSION
from .wire import HTTPError, shown

if TYPE_CHECKING:
    from ..predict import Predictor

T = TypeVar("T")


class Service:
    """A predictor behind a batcher, a decoding thread pool and the limits of ``config``."""

    def __init__(self, predictor: Predictor, config: ServeConfig, *, model_path: str | None = None) -> None:
        from ..predict import OnnxPredictor

        self.predictor, self.config = predictor, config
        self.name = config.name or (model_name(model_path) if model_path else "alexnet")
        self.file = Path(model_path).name if model_path else None  # the name only: the page never shows a path
        self.backend = "onnxruntime" if isinstance(predictor, OnnxPredictor) else "torch"
        self.classes: list[str] = list(predictor.classes)
        self.bounds = limits()
        self.bodies = Budget(config.max_queued_bytes)  # bytes of request bodies, from arrival to answer
        self.explaining = Budget(config.explain_max_images)  # images from admission until their Grad-CAM is done
        self.decoding = Budget(config.max_decoded_bytes)  # estimated bytes of the images decoding now (``images``)
        # Grad-CAM's layer, set when it is on: alexnet explain's default (conv5 at 224 px, conv2 at 64 px)
        self.explain_layer: str | None = None
        # Grad-CAM hooks a conv layer of the model: a forward pass of the batcher's thread must not run meanwhile
        self._model_lock = threading.Lock()
        self.batcher = Batcher(
            self._forward,
            max_batch=config.max_batch,
            max_wait_s=config.max_wait_ms / 1000,
            capacity=config.queue,
            on_batch=self._on_batch,
        )
        self.metrics = Metrics(self.batcher, self.bodies, self.explaining, self.decoding)
        self.pool: ThreadPoolExecutor | None = None
        self.explainer: ThreadPoolExecutor | None = None  # one thread: one Grad-CAM request at a time
        self.ready = False

    def _forward(self, crops: torch.Tensor) -> torch.Tensor:
        with self._model_lock:
            return self.predictor.probabilities(crops).float().cpu()  # (B, C)

    def _on_batch(self, images: int, seconds: float) -> None:
        self.metrics.on_batch(images, seconds)

    # ---- lifetime

    def start(self) -> None:
        self.pool = ThreadPoolExecutor(self.config.decode_threads, thread_name_prefix="alexnet-decode")
        if self.config.explain and self.explain_unavailable() is None:
            from ..explain import default_layer

            self.explain_layer = default_layer(self.predictor.model, self.predictor.preprocess.crop)
            self.explainer = ThreadPoolExecutor(1, thread_name_prefix="alexnet-explain")
        self._warm_up()
        self.batcher.start()
        self.ready = True

    def _warm_up(self) -> None:
        """Decode, crop and classify one small PNG, so that the first request does not pay for the imports (the
        resize code took 6 s to import on a busy 2-core machine) and the kernels' first-call setup."""
        from PIL import Image

        png = io.BytesIO()
        Image.new("RGB", (8, 8)).save(png, format="PNG")
        crop = self._crop(png.getvalue(), "warm-up")
        if isinstance(crop, UserError):  # cannot happen with the limits' defaults; an override that refuses 8x8
            raise crop
        self._forward(crop[None])
        if self.explainer is not None:  # imports matplotlib (seconds), so the first /explain does not pay for it
            self.gradcam(crop[None], None)

    def stop(self) -> None:
        """Finish the queued work, then stop (uvicorn has already drained the requests in flight)."""
        self.ready = False
        self.batcher.close()
        for pool in (self.pool, self.explainer):
            if pool is not None:
                pool.shutdown(wait=True)

    # ---- one request

    def retry_after(self, status: int) -> dict[str, str] | None:
        """The headers of an answer with ``status``: ``Retry-After`` for a 503."""
        return {"Retry-After": str(self.config.retry_after_s)} if status == 503 else None

    def busy(self, what: str) -> HTTPError:
        return HTTPError(
            503, f"the server is busy ({what}); retry shortly", {"Retry-After": str(self.config.retry_after_s)}
        )

    async def within(self, work: Awaitable[T], deadline: float, status: int, what: str) -> T:
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            return await asyncio.wait_for(work, max(remaining, 0.001))
        except asyncio.TimeoutError:
            raise HTTPError(status, f"{what} took over {self.config.timeout_s:g} s (--timeout-s)") from None

    def _crop(self, image: bytes | torch.Tensor, name: str) -> torch.Tensor | UserError:
        """Encoded bytes or a uint8 (C, H, W) tensor (C 1 or 3) -> its uint8 crop with the model's channels, or the
        decoder's refusal."""
        try:
            held = self._hold_decoding(decode_bytes(image, name), name) if isinstance(image, bytes) else 0
            try:
                img = self.predictor.preprocess.decode(image, name=name) if isinstance(image, bytes) else image
                return self.predictor.transform(img)
            finally:
                if held:
                    self.decoding.release(held)
                    give_back_memory()
        except UserError as e:
            return e

    def _hold_decoding(self, cost: int, name: str) -> int:
        """Hold ``cost`` bytes of ``--max-decoded-mb`` for one image (0 for a small one); refuse it if it cannot fit."""
        if cost <= SMALL_DECODE_BYTES:
            return 0
        mb, limit = cost / (1 << 20), self.config.max_decoded_mb
        if cost > self.decoding.capacity:
            raise DecodeBoundsError(
                f"{name}: decoding it would take about {mb:,.0f} MB, over --max-decoded-mb {limit:g}"
            )
        if not self.decoding.reserve(cost):
            raise DecodeBusy(f"{name}: the server is decoding {limit:g} MB of images (--max-decoded-mb); retry shortly")
        return cost

    async def crops(self, images: list[tuple[str, bytes | torch.Tensor]]) -> list[torch.Tensor | UserError]:
        """Per image, in order, decoded and cropped in the thread pool: its uint8 (3, c, c) crop or its refusal."""
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(loop.run_in_executor(self.pool, self._crop, im, nm) for nm, im in images))

    async def probabilities(self, images: list[tuple[str, bytes | torch.Tensor]]) -> list[torch.Tensor | UserError]:
        """Per image, in order: float32 ``(C,)`` probabilities, or the ``UserError`` that refused it."""
        crops = await self.crops(images)
        good = [c for c in crops if isinstance(c, torch.Tensor)]
        if not good:
            return list(crops)
        futures = self.batcher.submit(torch.stack(good))
        try:
            probs = torch.cat([await asyncio.wrap_future(f) for f in futures])
        except BaseException:  # timed out (cancelled) or the forward failed: the batcher skips what is left
            for f in futures:
                f.cancel()
            raise
        rows = iter(probs)
        return [next(rows) if isinstance(c, torch.Tensor) else c for c in crops]

    # ---- Grad-CAM

    def explain_unavailable(self) -> tuple[int, str] | None:
        """Why ``POST /explain`` cannot answer here, as ``(status, message)``; None when it can."""
        if self.backend == "onnxruntime":
            return 501, (
                f"{self.file or 'this model'}: Grad-CAM needs gradients, which an .onnx export does not have; "
                "serve the checkpoint it was exported from with --explain"
            )
        if not self.config.explain:
            return 404, "Grad-CAM is off on this server: start alexnet serve with --explain"
        missing = explain_missing()
        return None if missing is None else (501, missing)

    def gradcam(self, crops: torch.Tensor, target: int | None) -> list[dict[str, Any]]:
        """Grad-CAM at ``explain_layer`` (``alexnet.explain``) for ``uint8 (B, 3, c, c)`` crops and a class index (None:
        each crop's top-1), as ``alexnet explain`` computes it: per crop the overlay PNG (``alexnet.plotting.overlay``,
        the crop with the heat colours blended in, c x c px), the map's peak in crop px (None for a map of zeros) and
        the classes. Runs in the explain thread, holding the model (the batcher's forward passes wait)."""
        from PIL import Image

        from ..explain import explain_crops
        from ..plotting import overlay

        with self._model_lock:
            explanations = explain_crops(
                self.predictor.model, crops, preprocess=self.predictor.preprocess, classes=self.classes,
                method="gradcam", target=target, layer=self.explain_layer, device=self.predictor.device,
            )  # fmt: skip
        out = []
        for e in explanations:
            rgb = (overlay(e.crop, e.map) * 255).round().astype(np.uint8)  # (c, c, 3)
            png = io.BytesIO()
            Image.fromarray(rgb).save(png, format="PNG")
            y, x = divmod(int(e.map.argmax()), e.map.shape[-1])  # the first maximum in row-major order
            flat = bool(e.map.max() <= e.map.min())  # a map of zeros points nowhere (as in the pointing game)
            out.append(
                {
                    "predicted": e.predicted,
                    "probability": e.probability,
                    "target": e.target,
                    "target_probability": e.target_probability,
                    "peak": None if flat else {"x": x, "y": y},  # crop px
                    "overlay": "data:image/png;base64," + base64.b64encode(png.getvalue()).decode("ascii"),
                }
            )
        return out

    async def explain(self, crops: list[torch.Tensor], target: int | None, held: int, deadline: float):
        """``gradcam`` in the explain thread. The ``held`` images of the explain budget are given up when the work is
        done, not when the request ends: a request that timed out still holds them while its Grad-CAM runs."""
        n = held
        try:
            future = self.explainer.submit(self.gradcam, torch.stack(crops), target)  # type: ignore[union-attr]
        except BaseException:
            self.explaining.release(n)
            raise
        future.add_done_callback(lambda _: self.explaining.release(n))
        return await self.within(asyncio.wrap_future(future), deadline, 504, "explaining")

    def top(self, probs: torch.Tensor, k: int) -> list[tuple[int, float]]:
        """``(class index, probability)`` of the ``k`` most likely classes, as ``Predictor.predict`` ranks them."""
        p, i = probs.topk(min(k, len(self.classes)))
        return list(zip(i.tolist(), p.tolist()))

    def check_model(self, name: str, version: str | None = None) -> None:
        """404 unless ``name`` is this model and ``version`` (v2's versioned paths; None: unversioned) its one, 1."""
        if name != self.name:
            raise HTTPError(404, f"no model named {name[:100]!r}; this server has {self.name!r}")
        if version not in (None, MODEL_VERSION):
            raise HTTPError(404, f"model {self.name!r} has no version {shown(version)}; its one version is "
                            f"{MODEL_VERSION!r}")  # fmt: skip

    def info(self) -> dict[str, Any]:
        c, b, unavailable = self.config, self.bounds, self.explain_unavailable()
        return {
            "name": self.name,
            "file": self.file,
            "arch": self.predictor.info.arch,
            "backend": self.backend,
            "classes": self.classes,
            "preprocess": self.predictor.preprocess.to_dict(),
            "limits": {
                "max_upload_bytes": c.max_upload_bytes,
                "max_queued_bytes": c.max_queued_bytes,
                "max_batch": c.max_batch,
                "max_wait_ms": c.max_wait_ms,
                "queue": c.queue,
                "timeout_s": c.timeout_s,
                "max_image_pixels": b.max_image_pixels,
                "max_image_aspect": b.max_image_aspect,
                "max_decoded_bytes": c.max_decoded_bytes,
            },
            "explain": {
                "enabled": unavailable is None,
                "reason": None if unavailable is None else unavailable[1],
                "method": "gradcam",
                "layer": self.explain_layer,
                "max_images": c.explain_max_images,
            },
        }


def explain_missing() -> str | None:
    """None when Grad-CAM overlays can be made here, else which extra to install."""
    import importlib

    try:
        importlib.import_module("alexnet.explain")  # not "from .. import": that finds the package's attribute
    except ImportError as e:
        return f"Grad-CAM needs {e.name or 'alexnet.explain'}, which cannot be imported: pip install 'alexnet[explain]'"
    try:
        import matplotlib  # noqa: F401 (the overlay's colours, as alexnet explain draws them)
    except ImportError:
        return "Grad-CAM overlays need matplotlib: pip install 'alexnet[plots]'"
    return None
