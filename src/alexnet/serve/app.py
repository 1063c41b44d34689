"""The HTTP service: routes, limits, errors and metrics around a ``Predictor`` and a ``Batcher``.

Endpoints (every error is JSON ``{"error": "..."}`` with a 4xx or 5xx status, never a stack trace):

- ``GET /``: the page (drop images, see each one's top-5); ``GET /info``: the model's name, classes, preprocessing
  and the limits, as JSON. Every GET route answers HEAD (its headers, no body).
- ``POST /predict?topk=5``: images as ``multipart/form-data`` (every file part is an image) or as the raw body.
  ``{"model": NAME, "results": [{"name", "top": [{"class", "probability"}]} or {"name", "status", "error"}]}``,
  one result per image in order; 200 if any image was answered, else the first refusal's status.
- The Open Inference Protocol v2 REST subset (KServe, Triton): ``GET /v2``, ``/v2/health/live``,
  ``/v2/health/ready``, ``/v2/models/NAME``, ``/v2/models/NAME/ready``, ``POST /v2/models/NAME/infer``, and the
  same under ``/v2/models/NAME/versions/1/`` (the model's one version; 404 naming any other).
- ``POST /explain?target=top1``: images as for ``/predict``; per image, where the network looked: a Grad-CAM overlay
  (``alexnet.explain``, conv5) as a PNG data URL, the map's peak and the predicted and target classes. Off unless the
  server runs with ``--explain`` (404 then); 501 for ``.onnx`` models (no gradients) and when a needed extra is
  missing. One request at a time (a backward pass per image), at most ``--explain-max-images`` images in the server.
- ``GET /metrics``: Prometheus text (requests by endpoint and status, latency, batch sizes, queue depth).
- ``GET /openapi.json``: FastAPI's OpenAPI schema of these routes, with the bodies the POST routes read. No
  ``/docs`` or ``/redoc`` page: those load their scripts from a CDN, and the server may have no internet.

Status codes: 400 a malformed request (values it quotes are cut short; a query parameter the route does not take, or
one given twice, is one too: the GET routes take none), 404 an unknown endpoint or model, 408 the
body did not arrive within ``--timeout-s`` or arrived slower than ``--min-upload-kb-s``, 413 a body over
``--max-upload-mb`` (from Content-Length before reading, or counted while streaming) or more images than ``--queue``,
415 a file that is not an image, 422 an image the decoder's bounds refuse (``DecodeBoundsError``: decompression
bombs, pixel and aspect-ratio limits of ``alexnet.limits``, JPEGs of too many scans, decoding over the whole of
``--max-decoded-mb``), 503 the server holds ``--queue`` images, ``--max-queued-mb`` of request bodies or
``--max-decoded-mb`` of decoding images already (with ``Retry-After``), 504 no answer within ``--timeout-s``, 500 a
bug (the server's log has the traceback). Connections: see ``connections`` (header deadline, connection cap).

The routes only: a request is admitted (``admission``), its images answered by the ``service``, the v2 protocol
parsed and formatted by ``v2``, the body read by ``wire``, everything counted by ``metrics``. Nothing a client sends
is used as a file path.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from importlib import resources
from typing import TYPE_CHECKING, Any

import torch
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import UserError
from . import schema, v2
from .admission import Admitted, admit, refuse_get_query
from .config import ServeConfig
from .metrics import Observe
from .service import Service, explain_missing
from .wire import HTTPError, error, image_status, parse_topk, shown, split_images

if TYPE_CHECKING:
    from ..predict import Predictor

__all__ = ["create_app", "explain_missing", "serve"]

PAGE_HEADERS = {
    # the page is one file: its own inline style and script, thumbnails from blob: URLs, requests to this server only
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src blob: data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
}


def create_app(predictor: Predictor, config: ServeConfig | None = None, *, model_path: str | None = None) -> FastAPI:
    """The FastAPI app serving ``predictor`` (a ``Predictor`` or ``OnnxPredictor``) with ``config``'s limits.

    The batcher and the decoding threads start with the app's lifespan (``with TestClient(app)``, or uvicorn) and
    stop after it, finishing the work already queued.
    """
    config = config or ServeConfig()
    service = Service(predictor, config, model_path=model_path)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.to_thread(service.start)
        yield
        await asyncio.to_thread(service.stop)

    app = FastAPI(
        title="alexnet serve",
        version=v2.server_metadata()["version"],
        description="Image classification with an AlexNet model: /predict, the Open Inference Protocol v2 under /v2, "
        'Grad-CAM at /explain (with --explain), Prometheus /metrics. Errors are JSON {"error": "..."}.',
        lifespan=lifespan,
        docs_url=None,  # the docs pages load JavaScript from a CDN: the schema alone, for offline tools
        redoc_url=None,
        openapi_url="/openapi.json",
        dependencies=[Depends(refuse_get_query)],  # a GET route's query is refused as a POST route's unknown ones
    )
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
    app.add_middleware(Observe, metrics=service.metrics)
    app.add_middleware(AnswerHead)
    _add_error_handlers(app)
    _add_page_routes(app, service)
    _add_prediction_routes(app, service)
    _add_v2_routes(app, service)
    return app


class AnswerHead:
    """ASGI middleware: HEAD is answered as GET without the body (RFC 9110 §9.3.2); FastAPI's GET routes, unlike
    Starlette's, answer HEAD with 405."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


# ----------------------------------------------------------------------------------------------------------------
# errors: always {"error": "..."}


def _add_error_handlers(app: FastAPI) -> None:
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


# ----------------------------------------------------------------------------------------------------------------
# the page, the model, the metrics


def _add_page_routes(app: FastAPI, service: Service) -> None:
    page = resources.files(__package__).joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        """The page: drop images, see each one's top-5 (and Grad-CAM with --explain)."""
        return HTMLResponse(page, headers=PAGE_HEADERS)

    @app.get("/info")
    async def info() -> dict[str, Any]:
        """The model's name, file, architecture, classes and preprocessing, and the server's limits."""
        return service.info()

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text: requests by endpoint and status, latency, batch sizes, queue depth."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


# ----------------------------------------------------------------------------------------------------------------
# predictions and Grad-CAM


def _images_of(max_images: int, flag: str):
    """A parser for ``admit``: the multipart file parts, or the whole body as one image."""

    def parse(body: bytes, content_type: str) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
        return split_images(body, content_type, max_images, flag), {}

    return parse


def _answer(service: Service, results: list[dict[str, Any]], **fields: Any) -> JSONResponse:
    """200 with every result if any image was answered, else the first refusal's status."""
    if all("error" in r for r in results):
        status = results[0]["status"]
        return error(status, results[0]["error"], service.retry_after(status), results=results)
    return JSONResponse({"model": service.name, **fields, "results": results})


def _add_prediction_routes(app: FastAPI, service: Service) -> None:
    config = service.config

    @app.post("/predict", openapi_extra=schema.PREDICT)
    async def predict(request: Request) -> JSONResponse:
        """The top-k classes of each image."""
        query = {"topk": lambda raw: parse_topk(raw, len(service.classes))}
        async with admit(request, service, _images_of(config.queue, "--queue"), query=query) as req:
            answers = await service.within(service.probabilities(req.images), req.deadline, 504, "answering")
        topk, results = req.query["topk"], []
        for (name, _), answer in zip(req.images, answers):
            if isinstance(answer, UserError):
                status = image_status(answer)
                results.append({"name": name, "status": status, "error": str(answer)})
                service.metrics.images.labels(str(status)).inc()
            else:
                top = [{"class": service.classes[i], "probability": p} for i, p in service.top(answer, topk)]
                results.append({"name": name, "top": top})
                service.metrics.images.labels("ok").inc()
        return _answer(service, results)

    @app.post("/explain", openapi_extra=schema.EXPLAIN)
    async def explain(request: Request) -> JSONResponse:
        """Where the network looked: a Grad-CAM overlay per image."""
        unavailable = service.explain_unavailable()
        if unavailable is not None:
            raise HTTPError(*unavailable)
        parse = _images_of(config.explain_max_images, "--explain-max-images")
        async with admit(request, service, parse, query={"target": _target_of(service)}, explain=True) as req:
            crops = await service.within(service.crops(req.images), req.deadline, 504, "decoding")
            answers = iter(await _explain(service, crops, req.query["target"], req))
        results = []
        for (name, _), crop in zip(req.images, crops):
            if isinstance(crop, UserError):
                results.append({"name": name, "status": image_status(crop), "error": str(crop)})
            else:
                results.append({"name": name, **next(answers)})
        return _answer(service, results, method="gradcam", layer=service.explain_layer)


def _target_of(service: Service):
    """The parser of ``/explain?target=``: a class index, or None for each image's top-1."""
    from ..explain import resolve_target

    def target(raw: str | None) -> int | None:
        try:
            return resolve_target(raw, service.classes)
        except UserError as e:  # quotes the value: shortened, as every value a client sends
            raise HTTPError(400, str(e).replace(f"target {raw!r}", f"target {shown(raw)}", 1)) from None

    return target


async def _explain(service: Service, crops: list, target: int | None, req: Admitted) -> list[dict[str, Any]]:
    good = [c for c in crops if isinstance(c, torch.Tensor)]
    if not good:
        return []
    return await service.explain(good, target, req.holding.hand_over_explained(), req.deadline)


# ----------------------------------------------------------------------------------------------------------------
# the Open Inference Protocol v2 (REST)


def _add_v2_routes(app: FastAPI, service: Service) -> None:
    config, b = service.config, service.bounds

    @app.get("/v2")
    async def v2_server() -> dict[str, Any]:
        """v2 server metadata."""
        return v2.server_metadata()

    @app.get("/v2/health/live")
    async def v2_live() -> dict[str, bool]:
        """v2 liveness: the process answers."""
        return {"live": True}

    @app.get("/v2/health/ready")
    async def v2_ready() -> JSONResponse:
        """v2 readiness: 200 when the model answers, else 503."""
        return JSONResponse({"ready": service.ready}, status_code=200 if service.ready else 503)

    @app.get("/v2/models/{name}")
    async def v2_model(name: str) -> dict[str, Any]:
        """v2 model metadata: the input and output tensors."""
        service.check_model(name)
        channels = service.predictor.preprocess.channels
        return v2.model_metadata(service.name, service.backend, len(service.classes), channels)

    @app.get("/v2/models/{name}/versions/{version}")
    async def v2_model_version(name: str, version: str) -> dict[str, Any]:
        """v2 model metadata of a version: the model's one, 1."""
        service.check_model(name, version)
        return await v2_model(name)

    @app.get("/v2/models/{name}/ready")
    async def v2_model_ready(name: str) -> JSONResponse:
        """v2 model readiness."""
        service.check_model(name)
        return JSONResponse({"name": service.name, "ready": service.ready}, status_code=200 if service.ready else 503)

    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def v2_model_version_ready(name: str, version: str) -> JSONResponse:
        """v2 readiness of a version: the model's one, 1."""
        service.check_model(name, version)
        return await v2_model_ready(name)

    def parse(body: bytes, content_type: str) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
        req = v2.parse_infer_request(body, b.max_image_pixels, b.max_image_aspect, config.queue, len(service.classes))
        return [(f"image {i}", im) for i, im in enumerate(req.pop("images"))], req

    @app.post("/v2/models/{name}/infer", openapi_extra=schema.V2_INFER)
    async def v2_infer(name: str, request: Request) -> dict[str, Any]:
        """v2 inference: the probabilities of each image."""
        service.check_model(name)
        v2.check_headers(request.headers)
        async with admit(request, service, parse) as req:  # no query parameters
            answers = await service.within(service.probabilities(req.images), req.deadline, 504, "answering")
        for answer in answers:
            if isinstance(answer, UserError):  # the protocol has no per-image errors: the request fails
                status = image_status(answer)
                raise HTTPError(status, str(answer), service.retry_after(status))
        return v2.infer_response(torch.stack(answers), req.parsed, service.name, service.classes, service.top)

    @app.post("/v2/models/{name}/versions/{version}/infer", openapi_extra=schema.V2_INFER)
    async def v2_infer_version(name: str, version: str, request: Request) -> dict[str, Any]:
        """v2 inference by a version: the model's one, 1."""
        service.check_model(name, version)
        return await v2_infer(name, request)


# ----------------------------------------------------------------------------------------------------------------
# running it


def server_config(app: FastAPI, config: ServeConfig, **uvicorn_options: Any):
    """The ``uvicorn.Config`` that runs ``app`` with ``config``'s connection limits (see ``connections``)."""
    import uvicorn

    from .connections import GuardedH11Protocol

    options = {
        "host": config.host,
        "port": config.port,
        "log_level": "info",
        "server_header": False,
        "timeout_graceful_shutdown": int(config.timeout_s) + 5,
        "timeout_keep_alive": config.keep_alive_s,
        "http": GuardedH11Protocol.configured(config.header_timeout_s, config.max_connections),
        **uvicorn_options,
    }
    return uvicorn.Config(app, **options)


def serve(app: FastAPI, config: ServeConfig, *, access_log: bool = False) -> None:
    """Run ``app`` with uvicorn until SIGINT / SIGTERM; then stop accepting, finish the requests in flight (up to
    ``timeout_s`` + 5 s), finish the queued batches and return.

    ``config.threads`` sets torch's intra-op threads for this process (the forward pass). Fewer threads than cores
    leave a core to the event loop and the decoders; a different count changes the last bits of the probabilities
    (the kernels split their sums differently), so the default is torch's, as ``alexnet predict`` runs.
    """
    import uvicorn

    from .connections import rate_limited_logs

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    with rate_limited_logs():  # a flood of connections (accept errors, bad requests): 10 lines a minute per message
        uvicorn.Server(server_config(app, config, access_log=access_log)).run()
