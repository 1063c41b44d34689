"""The HTTP service: routes, limits, errors and metrics around a ``Predictor`` and a ``Batcher``.

Endpoints (every error is JSON ``{"error": "..."}`` with a 4xx or 5xx status, never a stack trace):

- ``GET /``: the page (drop images, see each one's top-5); ``GET /info``: the model's name, classes, preprocessing
  and the limits, as JSON.
- ``POST /predict?topk=5``: images as ``multipart/form-data`` (every file part is an image) or as the raw body.
  ``{"model": NAME, "results": [{"name", "top": [{"class", "probability"}]} or {"name", "status", "error"}]}``,
  one result per image in order; 200 if any image was answered, else the first refusal's status.
- The Open Inference Protocol v2 REST subset (KServe, Triton): ``GET /v2``, ``/v2/health/live``,
  ``/v2/health/ready``, ``/v2/models/NAME``, ``/v2/models/NAME/ready``, ``POST /v2/models/NAME/infer``.
- ``POST /explain?target=top1``: images as for ``/predict``; per image, where the network looked: a Grad-CAM overlay
  (``alexnet.explain``, conv5) as a PNG data URL, the map's peak and the predicted and target classes. Off unless the
  server runs with ``--explain`` (404 then); 501 for ``.onnx`` models (no gradients) and when a needed extra is
  missing. One request at a time (a backward pass per image), at most ``--explain-max-images`` images in the server.
- ``GET /metrics``: Prometheus text (requests by endpoint and status, latency, batch sizes, queue depth).

Status codes: 400 a malformed request, 404 an unknown endpoint or model, 408 the body did not arrive within
``--timeout-s``, 413 a body over ``--max-upload-mb`` (from Content-Length before reading, or counted while streaming)
or more images than ``--queue``, 415 a file that is not an image, 422 an image the decoder's bounds refuse
(``DecodeBoundsError``: decompression bombs, pixel and aspect-ratio limits of ``alexnet.limits``), 503 the server
holds ``--queue`` images or ``--max-queued-mb`` of request bodies already (with ``Retry-After``), 504 no answer
within ``--timeout-s``, 500 a bug (the server's log has the traceback).

Images are decoded and cropped in a thread pool exactly as ``Predictor.predict`` does (``decode_image`` then the
predictor's ``transform``), then batched (see ``batching``). Nothing a client sends is used as a file path.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import json
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..data.decode import DecodeBoundsError, decode_image
from ..errors import UserError
from ..limits import limits
from .batching import Batcher, Budget
from .config import ServeConfig, model_name

if TYPE_CHECKING:
    from ..predict import Predictor

T = TypeVar("T")
MAX_NAME_CHARS = 200  # an image's name (its multipart filename) as echoed back; it is a label, never a path
PAGE_HEADERS = {
    # the page is one file: its own inline style and script, thumbnails from blob: URLs, requests to this server only
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src blob: data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
}


class HTTPError(Exception):
    """A request refused with ``status`` and a message for the client."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


# ----------------------------------------------------------------------------------------------------------------
# reading requests


def check_content_length(request: Request, max_bytes: int) -> None:
    """413 from the header alone, before a byte of the body is read."""
    length = request.headers.get("content-length")
    if length is None:
        return
    if not length.isdigit():
        raise HTTPError(400, f"Content-Length {length[:40]!r} is not a number of bytes")
    if int(length) > max_bytes:
        raise HTTPError(413, f"a body of {int(length):,} bytes is over the {max_bytes:,}-byte limit (--max-upload-mb)")


async def read_body(request: Request, max_bytes: int, hold: Callable[[int], None]) -> bytes:
    """The body, counted while it streams in (chunked uploads have no Content-Length): 413 at ``max_bytes`` + 1.

    ``hold(n)`` reserves n more bytes of the server's budget or raises 503: the declared Content-Length before a
    byte is read, or each chunk as it arrives when there is none. The caller releases them with the request.
    """
    length = request.headers.get("content-length")  # a number within max_bytes: check_content_length ran first
    held = int(length) if length else 0
    hold(held)
    chunks, total = [], 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_bytes:
                raise HTTPError(413, f"the body is over the {max_bytes:,}-byte limit (--max-upload-mb)")
            if total > held:
                hold(total - held)
                held = total
            chunks.append(chunk)
    except ClientDisconnect:
        raise HTTPError(400, "the client disconnected before sending the whole body") from None
    return b"".join(chunks)


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
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        parser.write(body)
        parser.finalize()
    except HTTPError:
        raise
    except Exception as e:  # python-multipart raises MultipartParseError and friends
        raise HTTPError(400, f"malformed multipart body ({e})") from None
    if not ended:
        raise HTTPError(400, "malformed multipart body (it ends before its closing boundary)")
    return files


def image_status(err: UserError) -> int:
    """422 for an image the decoder's bounds refuse (bombs, pixel and aspect-ratio limits), 415 for the rest."""
    return 422 if isinstance(err, DecodeBoundsError) else 415


def parse_topk(raw: str | None) -> int:
    if raw is None:
        return 5
    if not raw.isdigit() or int(raw) < 1:
        raise HTTPError(400, f"topk={raw[:40]!r}: must be a whole number of classes, at least 1")
    return int(raw)


# ----------------------------------------------------------------------------------------------------------------
# the Open Inference Protocol v2 request body


def parse_infer_request(body: bytes, bounds_pixels: int, bounds_aspect: float, max_images: int) -> dict[str, Any]:
    """The one input of a v2 ``infer`` request: ``{"images": [uint8 (H, W, 3) arrays or encoded bytes], "outputs":
    [requested outputs], "id": ...}``. UINT8 tensors are ``[H, W, 3]`` or ``[B, H, W, 3]`` RGB (the layout images
    decode to); BYTES tensors ``[B]`` hold base64-encoded image files."""
    try:
        req = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise HTTPError(400, f"the body is not JSON ({e})") from None
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list) or len(req["inputs"]) != 1:
        raise HTTPError(400, 'expected {"inputs": [one tensor]} (an image tensor or encoded image files)')
    tensor = req["inputs"][0]
    if not isinstance(tensor, dict):
        raise HTTPError(400, "an input must be an object with name, shape, datatype and data")
    shape, datatype, data = tensor.get("shape"), tensor.get("datatype"), tensor.get("data")
    if not (isinstance(shape, list) and shape and all(isinstance(s, int) and s >= 0 for s in shape)):
        raise HTTPError(400, f"input shape {shape!r}: expected a list of sizes")
    if not isinstance(data, list):
        raise HTTPError(400, "input data: expected a list (row-major)")
    if datatype == "UINT8":
        images = _uint8_images(shape, data, bounds_pixels, bounds_aspect, max_images)
    elif datatype == "BYTES":
        images = _bytes_images(shape, data, max_images)
    else:
        raise HTTPError(400, f"input datatype {datatype!r}: send UINT8 image tensors or BYTES (base64 image files)")
    outputs = req.get("outputs", [{"name": "probabilities"}])
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise HTTPError(400, "outputs: expected a list of objects")
    for o in outputs:
        if o.get("name") != "probabilities":
            raise HTTPError(400, f"output {o.get('name')!r}: this model has one output, 'probabilities'")
        k = (o.get("parameters") or {}).get("classification")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise HTTPError(400, f"classification {k!r}: must be a whole number of classes, at least 1")
    return {"images": images, "outputs": outputs, "id": req.get("id")}


def _uint8_images(shape: list[int], data: list, max_pixels: int, max_aspect: float, max_images: int) -> list:
    if len(shape) == 3:
        shape = [1, *shape]
    if len(shape) != 4 or shape[3] != 3:
        raise HTTPError(400, f"UINT8 input shape {shape}: expected [H, W, 3] or [B, H, W, 3] (RGB, channels last)")
    b, h, w, _ = shape
    if b > max_images:
        raise HTTPError(413, f"{b} images in one request: at most {max_images} (--queue)")
    if min(h, w) < 1 or h * w > max_pixels or max(h, w) > max_aspect * min(h, w):
        raise HTTPError(
            422, f"refused a {w}x{h} image tensor: over {max_pixels:,} pixels or a {max_aspect:g}:1 aspect ratio"
        )
    try:
        a = np.asarray(data)
    except ValueError:  # ragged nested lists
        raise HTTPError(400, "UINT8 input data: not a regular array") from None
    if a.size != math.prod(shape):
        raise HTTPError(400, f"UINT8 input data has {a.size} values; shape {shape} needs {math.prod(shape)}")
    if a.size and (a.dtype.kind not in "iu" or a.min() < 0 or a.max() > 255):
        raise HTTPError(400, "UINT8 input data: values must be integers from 0 to 255")
    a = a.astype(np.uint8).reshape(shape)
    return [torch.from_numpy(a[i]).permute(2, 0, 1).contiguous() for i in range(b)]  # uint8 (3, H, W) each


def _bytes_images(shape: list[int], data: list, max_images: int) -> list[bytes]:
    if len(shape) != 1 or shape[0] != len(data):
        raise HTTPError(400, f"BYTES input shape {shape}: expected [{len(data)}], one base64 image file per element")
    if len(data) > max_images:
        raise HTTPError(413, f"{len(data)} images in one request: at most {max_images} (--queue)")
    out = []
    for i, s in enumerate(data):
        try:
            out.append(base64.b64decode(s, validate=True))
        except (TypeError, ValueError, binascii.Error):
            raise HTTPError(400, f"BYTES input element {i}: not a base64 string") from None
    return out


# ----------------------------------------------------------------------------------------------------------------
# metrics


class Metrics:
    """The Prometheus metrics of one app, in a registry of its own (two apps in one process do not mix)."""

    def __init__(self, batcher: Batcher, bodies: Budget, explaining: Budget) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "alexnet_http_requests", "HTTP requests by endpoint and status code", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "alexnet_http_request_duration_seconds",
            "time from a request's arrival to its answer",
            ["endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.images = Counter(
            "alexnet_images", "images answered, by outcome (ok, or the refusal's status)", ["outcome"], registry=r
        )
        self.batch_size = Histogram(
            "alexnet_batch_size_images",
            "images per forward pass",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
            registry=r,
        )
        self.forward = Histogram(
            "alexnet_forward_duration_seconds",
            "time of one forward pass",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        Gauge("alexnet_queue_depth_images", "images waiting for a forward pass", registry=r).set_function(
            lambda: batcher.waiting
        )
        Gauge(
            "alexnet_images_in_flight", "images admitted and not yet answered (at most --queue)", registry=r
        ).set_function(lambda: batcher.admitted)
        Gauge(
            "alexnet_request_body_bytes_held", "bytes of request bodies held (at most --max-queued-mb)", registry=r
        ).set_function(lambda: bodies.held)
        Gauge(
            "alexnet_explain_images_in_flight",
            "images admitted to POST /explain and not yet explained (at most --explain-max-images)",
            registry=r,
        ).set_function(lambda: explaining.held)

    def on_batch(self, images: int, seconds: float) -> None:
        self.batch_size.observe(images)
        self.forward.observe(seconds)


class _Observe:
    """ASGI middleware: counts every response by endpoint (the route's template, never the raw path) and status,
    times it, and adds ``X-Content-Type-Options: nosniff`` (browsers must not guess a type from a body)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_and_note(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-content-type-options", b"nosniff"))
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            endpoint = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)


# ----------------------------------------------------------------------------------------------------------------
# the service


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
        self.metrics = Metrics(self.batcher, self.bodies, self.explaining)
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

    def busy(self, what: str) -> HTTPError:
        return HTTPError(
            503, f"the server is busy ({what}); retry shortly", {"Retry-After": str(self.config.retry_after_s)}
        )

    @contextlib.contextmanager
    def admission(self) -> Iterator[Admission]:
        """An ``Admission`` for one request: what it reserves is released when the block ends."""
        admission = Admission(self)
        try:
            yield admission
        finally:
            admission.release()

    async def within(self, work: Awaitable[T], deadline: float, status: int, what: str) -> T:
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            return await asyncio.wait_for(work, max(remaining, 0.001))
        except asyncio.TimeoutError:
            raise HTTPError(status, f"{what} took over {self.config.timeout_s:g} s (--timeout-s)") from None

    def _crop(self, image: bytes | torch.Tensor, name: str) -> torch.Tensor | UserError:
        """Encoded bytes or a uint8 (3, H, W) tensor -> its uint8 (3, c, c) crop, or the decoder's refusal."""
        try:
            img = decode_image(image, name=name) if isinstance(image, bytes) else image
            return self.predictor.transform(img)
        except UserError as e:
            return e

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
        each crop's top-1), as ``alexnet explain`` computes it: per crop the overlay PNG (``alexnet.plots.overlay``,
        the crop with the heat colours blended in, c x c px), the map's peak in crop px (None for a map of zeros) and
        the classes. Runs in the explain thread, holding the model (the batcher's forward passes wait)."""
        from PIL import Image

        from ..explain import explain_crops
        from ..plots import overlay

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

    async def explain(self, crops: list[torch.Tensor], target: int | None, admission: Admission, deadline: float):
        """``gradcam`` in the explain thread. The images' place in the explain budget is given up when the work is
        done, not when the request ends: a request that timed out still holds it while its Grad-CAM runs."""
        n = admission.hand_over_explained()
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

    def check_model(self, name: str) -> None:
        if name != self.name:
            raise HTTPError(404, f"no model named {name[:100]!r}; this server has {self.name!r}")

    def info(self) -> dict[str, Any]:
        c, b, unavailable = self.config, self.bounds, self.explain_unavailable()
        return {
            "name": self.name,
            "file": self.file,
            "arch": self.predictor.meta.get("arch"),
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
            },
            "explain": {
                "enabled": unavailable is None,
                "reason": None if unavailable is None else unavailable[1],
                "method": "gradcam",
                "layer": self.explain_layer,
                "max_images": c.explain_max_images,
            },
        }


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


def create_app(predictor: Predictor, config: ServeConfig | None = None, *, model_path: str | None = None) -> FastAPI:
    """The FastAPI app serving ``predictor`` (a ``Predictor`` or ``OnnxPredictor``) with ``config``'s limits.

    The batcher and the decoding threads start with the app's lifespan (``with TestClient(app)``, or uvicorn) and
    stop after it, finishing the work already queued.
    """
    config = config or ServeConfig()
    service = Service(predictor, config, model_path=model_path)
    page = resources.files(__package__).joinpath("static/index.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.to_thread(service.start)
        yield
        await asyncio.to_thread(service.stop)

    app = FastAPI(title="alexnet serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    if config.cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type"],
            expose_headers=["Retry-After"],
        )
    app.add_middleware(_Observe, metrics=service.metrics)

    # ---- errors: always {"error": "..."}

    def error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
        return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, e: HTTPError) -> JSONResponse:
        return error(e.status, e.message, e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        where = f"{request.method} {request.url.path[:200]}"
        message = {404: f"{where}: no such endpoint", 405: f"{where}: method not allowed"}.get(e.status_code)
        return error(e.status_code, message or str(e.detail), dict(e.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        return error(400, "; ".join(str(x.get("msg", x)) for x in e.errors()) or "invalid request")

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception) -> JSONResponse:  # uvicorn logs the traceback; the client not
        return error(500, "internal server error (the server's log has the details)")

    # ---- the page and the model

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers=PAGE_HEADERS)

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return service.info()

    @app.get("/metrics")
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # ---- predictions

    async def read_images(
        request: Request, admit: Admission, deadline: float, max_images: int, flag: str
    ) -> list[tuple[str, bytes]]:
        """The request's images, its body held against ``--max-queued-mb`` while it is read (and until the end)."""
        read = read_body(request, config.max_upload_bytes, admit.reserve_bytes)
        body = await service.within(read, deadline, 408, "the upload")
        return split_images(body, request.headers.get("content-type", ""), max_images, flag)

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        deadline = asyncio.get_running_loop().time() + config.timeout_s
        topk = parse_topk(request.query_params.get("topk"))
        check_content_length(request, config.max_upload_bytes)
        with service.admission() as admit:
            admit.reserve_images(1)  # before the body is read: a full server refuses without reading it
            images = await read_images(request, admit, deadline, config.queue, "--queue")
            admit.reserve_images(len(images) - 1)
            answers = await service.within(service.probabilities(images), deadline, 504, "answering")
        results = []
        for (name, _), answer in zip(images, answers):
            if isinstance(answer, UserError):
                status = image_status(answer)
                results.append({"name": name, "status": status, "error": str(answer)})
                service.metrics.images.labels(str(status)).inc()
            else:
                top = [{"class": service.classes[i], "probability": p} for i, p in service.top(answer, topk)]
                results.append({"name": name, "top": top})
                service.metrics.images.labels("ok").inc()
        if all("error" in r for r in results):
            return error(results[0]["status"], results[0]["error"], results=results)
        return JSONResponse({"model": service.name, "results": results})

    @app.post("/explain")
    async def explain(request: Request) -> JSONResponse:
        deadline = asyncio.get_running_loop().time() + config.timeout_s
        unavailable = service.explain_unavailable()
        if unavailable is not None:
            raise HTTPError(*unavailable)
        from ..explain import resolve_target

        try:
            target = resolve_target(request.query_params.get("target"), service.classes)  # None: each one's top-1
        except UserError as e:
            raise HTTPError(400, str(e).replace("--target", "target", 1)) from None
        check_content_length(request, config.max_upload_bytes)
        with service.admission() as admit:
            admit.reserve_explained(1)  # before the body is read, as /predict
            admit.reserve_images(1)
            images = await read_images(request, admit, deadline, config.explain_max_images, "--explain-max-images")
            admit.reserve_explained(len(images) - 1)
            admit.reserve_images(len(images) - 1)
            crops = await service.within(service.crops(images), deadline, 504, "decoding")
            good = [c for c in crops if isinstance(c, torch.Tensor)]
            answers = iter(await service.explain(good, target, admit, deadline) if good else [])
        results = []
        for (name, _), crop in zip(images, crops):
            if isinstance(crop, UserError):
                results.append({"name": name, "status": image_status(crop), "error": str(crop)})
            else:
                results.append({"name": name, **next(answers)})
        if all("error" in r for r in results):
            return error(results[0]["status"], results[0]["error"], results=results)
        return JSONResponse(
            {"model": service.name, "method": "gradcam", "layer": service.explain_layer, "results": results}
        )

    # ---- the Open Inference Protocol v2 (REST)

    @app.get("/v2")
    async def v2_server() -> dict[str, Any]:
        from importlib.metadata import version

        return {"name": "alexnet", "version": version("alexnet"), "extensions": ["classification"]}

    @app.get("/v2/health/live")
    async def v2_live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def v2_ready() -> JSONResponse:
        return JSONResponse({"ready": service.ready}, status_code=200 if service.ready else 503)

    @app.get("/v2/models/{name}")
    async def v2_model(name: str) -> dict[str, Any]:
        service.check_model(name)
        return {
            "name": service.name,
            "versions": ["1"],
            "platform": "onnxruntime_onnx" if service.backend == "onnxruntime" else "pytorch",
            "inputs": [{"name": "image", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}],
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, len(service.classes)]}],
        }

    @app.get("/v2/models/{name}/ready")
    async def v2_model_ready(name: str) -> JSONResponse:
        service.check_model(name)
        return JSONResponse({"name": service.name, "ready": service.ready}, status_code=200 if service.ready else 503)

    @app.post("/v2/models/{name}/infer")
    async def v2_infer(name: str, request: Request) -> dict[str, Any]:
        service.check_model(name)
        deadline = asyncio.get_running_loop().time() + config.timeout_s
        check_content_length(request, config.max_upload_bytes)
        with service.admission() as admit:
            admit.reserve_images(1)
            read = read_body(request, config.max_upload_bytes, admit.reserve_bytes)
            body = await service.within(read, deadline, 408, "the upload")
            b = service.bounds
            parse = asyncio.to_thread(parse_infer_request, body, b.max_image_pixels, b.max_image_aspect, config.queue)
            req = await service.within(parse, deadline, 504, "reading the request")
            del body
            images = [(f"image {i}", im) for i, im in enumerate(req["images"])]
            admit.reserve_images(len(images) - 1)
            answers = await service.within(service.probabilities(images), deadline, 504, "answering")
        for answer in answers:
            if isinstance(answer, UserError):  # the protocol has no per-image errors: the request fails
                raise HTTPError(image_status(answer), str(answer))
        probs = torch.stack(answers)  # (B, C)
        outputs = []
        for o in req["outputs"]:
            k = (o.get("parameters") or {}).get("classification")
            if k is None:
                outputs.append(
                    {
                        "name": "probabilities",
                        "datatype": "FP32",
                        "shape": list(probs.shape),
                        "data": probs.flatten().tolist(),
                    }
                )
            else:  # Triton's classification extension: "probability:index:label", most likely first
                k = min(k, len(service.classes))
                data = [f"{p}:{i}:{service.classes[i]}" for row in probs for i, p in service.top(row, k)]
                outputs.append({"name": "probabilities", "datatype": "BYTES", "shape": [len(probs), k], "data": data})
        answer: dict[str, Any] = {"model_name": service.name, "model_version": "1", "outputs": outputs}
        if req["id"] is not None:
            answer["id"] = req["id"]
        return answer

    return app


# ----------------------------------------------------------------------------------------------------------------
# running it


def serve(app: FastAPI, config: ServeConfig, *, access_log: bool = False) -> None:
    """Run ``app`` with uvicorn until SIGINT / SIGTERM; then stop accepting, finish the requests in flight (up to
    ``timeout_s`` + 5 s), finish the queued batches and return.

    ``config.threads`` sets torch's intra-op threads for this process (the forward pass). Fewer threads than cores
    leave a core to the event loop and the decoders; a different count changes the last bits of the probabilities
    (the kernels split their sums differently), so the default is torch's, as ``alexnet predict`` runs.
    """
    import uvicorn

    if config.threads is not None:
        torch.set_num_threads(config.threads)

    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level="info",
            access_log=access_log,
            server_header=False,
            timeout_graceful_shutdown=int(config.timeout_s) + 5,
        )
    )
    server.run()
