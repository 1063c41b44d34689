"""``alexnet serve MODEL``: an HTTP service and a web page for a trained model, with dynamic batching.

Endpoints: GET / (the page), GET /info, POST /predict, the Open Inference Protocol v2 REST subset (/v2/health/live,
/v2/health/ready, /v2/models/NAME, /v2/models/NAME/ready, POST /v2/models/NAME/infer, and the model's under
/v2/models/NAME/versions/1/), GET /metrics (Prometheus) and, with --explain, POST /explain (Grad-CAM overlays; the
page shows them next to the top-5). Concurrent requests are grouped into one forward pass of up to --max-batch images.

Limits: bodies over --max-upload-mb get 413 before they are read in full; files that are not images 415; images the
decoder's bounds refuse (ALEXNET_MAX_IMAGE_PIXELS, ALEXNET_MAX_IMAGE_ASPECT) 422, per image; more than --queue
images or --max-queued-mb of request bodies in the server 503 with Retry-After; no answer within --timeout-s 504.
Grad-CAM needs a backward pass per image: one /explain request runs at a time, with at most --explain-max-images
images admitted (503 beyond), and predictions wait while it holds the model. Errors are JSON {"error": "..."}.
It binds 127.0.0.1 only and sends no CORS headers unless told to; there is no authentication. SIGTERM or Ctrl-C
stops accepting, finishes the requests in flight and exits. Needs the serve extra: pip install 'alexnet[serve]'.

Then open http://127.0.0.1:8000/ for the page (drop images, see each one's top-5), or call the API::

    curl -F file=@cat.jpg -F file=@dog.png 'http://127.0.0.1:8000/predict?topk=3'
    curl --data-binary @cat.jpg http://127.0.0.1:8000/predict
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UserError
from ..serve.config import ServeConfig
from ._settings import add_settings, given


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="an HTTP service and a web page for a model", description=__doc__)
    p.add_argument("model", help="our checkpoint (.pt), a torchvision AlexNet .pth, .safetensors + .json, or .onnx")
    add_settings(p, ServeConfig)  # every other flag: a ServeConfig field, its help, range and default
    p.set_defaults(func=run)


def check_backend(model: str, backend: str) -> None:
    """A flag that contradicts the model file is an error, not a silent conversion."""
    onnx = Path(model).suffix.lower() == ".onnx"
    if backend == "torch" and onnx:
        raise UserError(f"{model}: an .onnx export runs with --backend onnxruntime (or auto), not torch")
    if backend == "onnxruntime" and not onnx:
        raise UserError(
            f"{model}: --backend onnxruntime runs .onnx exports; write one with "
            f"'alexnet export {model} --format onnx' and serve that file"
        )


def run(args: argparse.Namespace) -> int:
    config = ServeConfig(**given(args, ServeConfig))
    check_backend(args.model, config.backend)
    try:
        from ..serve.app import create_app, explain_missing, serve
    except ImportError as e:
        raise UserError(f"alexnet serve needs {e.name or 'FastAPI'}: pip install 'alexnet[serve]'") from None
    if config.explain:  # before the model loads: a flag that cannot work is refused at once
        if Path(args.model).suffix.lower() == ".onnx":
            raise UserError(
                f"{args.model}: --explain needs gradients, which an .onnx export does not have; "
                "serve the checkpoint it was exported from"
            )
        missing = explain_missing()
        if missing is not None:
            raise UserError(f"--explain: {missing}")
    check_listen(config.host, config.port)  # before the model loads, and before uvicorn's lines of start-up log
    from ..predict import load

    predictor = load(args.model, device=config.device)
    app = create_app(predictor, config, model_path=args.model)
    service = app.state.service
    url = f"http://{_url_host(config.host)}:{config.port}/"
    print(
        f"alexnet serve: {service.name} ({service.predictor.info.arch}, {len(service.classes)} classes, "
        f"{service.backend} on {getattr(predictor, 'device', 'cpu')}) at {url} (batches of <= {config.max_batch} "
        f"images, {config.max_wait_ms:g} ms wait; uploads <= {config.max_upload_mb:g} MB; queue {config.queue} images, "
        f"{config.max_queued_mb:g} MB; Grad-CAM {'on' if config.explain else 'off'})",
        file=sys.stderr,
    )
    if not config.loopback:
        print(
            f"alexnet serve: warning: listening on {config.host}: anyone who can reach this machine can use the "
            "model (there is no authentication)",
            file=sys.stderr,
        )
    serve(app, config, access_log=config.access_log)
    return 0


def check_listen(host: str, port: int) -> None:
    """``UserError`` naming ``--host`` / ``--port`` when this process cannot listen there: a name that does not
    resolve, an address of another machine, a port in use. uvicorn said so after 7 lines of its log, or as
    ``[Errno -2] Name or service not known`` without the host. Binds and closes at once; uvicorn binds again."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise UserError(f"--host {host}: not an address or name this machine can listen on ({e})") from None
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a port in TIME_WAIT is free
        try:
            s.bind(address)
        except OSError as e:
            raise UserError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})") from None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
