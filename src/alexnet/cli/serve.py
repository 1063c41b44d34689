"""``alexnet serve MODEL``: an HTTP service and a web page for a trained model, with dynamic batching.

Endpoints: GET / (the page), GET /info, POST /predict, the Open Inference Protocol v2 REST subset (/v2/health/live,
/v2/health/ready, /v2/models/NAME, /v2/models/NAME/ready, POST /v2/models/NAME/infer), GET /metrics (Prometheus)
and, with --explain, POST /explain (Grad-CAM overlays; the page shows them next to the top-5). Concurrent requests
are grouped into one forward pass of up to --max-batch images.

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

BACKENDS = ("auto", "torch", "onnxruntime")


def register(subparsers: argparse._SubParsersAction) -> None:
    d = ServeConfig()  # the defaults: one source for the library and the flags
    p = subparsers.add_parser("serve", help="an HTTP service and a web page for a model", description=__doc__)
    p.add_argument("model", help="our checkpoint (.pt), a torchvision AlexNet .pth, .safetensors + .json, or .onnx")
    p.add_argument("--host", default=d.host, help="address to listen on; 0.0.0.0 serves every network (no auth!)")
    p.add_argument("--port", type=int, default=d.port, help="TCP port")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="images per forward pass (1: no batching)")
    p.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms, help="ms a batch waits for more images")
    p.add_argument("--max-upload-mb", type=float, default=d.max_upload_mb, help="largest request body, MB")
    p.add_argument("--queue", type=int, default=d.queue, help="images in the server at once; more get 503")
    p.add_argument(
        "--max-queued-mb",
        type=float,
        default=d.max_queued_mb,
        help="request bodies held at once (arriving, decoding, waiting), MB; more get 503",
    )
    p.add_argument("--timeout-s", type=float, default=d.timeout_s, help="seconds to answer one request")
    p.add_argument("--decode-threads", type=int, default=None, help="threads decoding images (default: CPUs, <= 4)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for the forward pass (default: torch's, as alexnet predict; other counts change the "
        "last bits of the probabilities)",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="auto: onnxruntime for .onnx, else torch")
    p.add_argument("--name", default=None, help="model name in /v2/models/NAME (default: the file name's stem)")
    p.add_argument(
        "--cors",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow this browser origin (repeat the flag for more; none by default)",
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help="serve POST /explain: Grad-CAM overlays, shown on the page (needs the plots extra; not for .onnx)",
    )
    p.add_argument(
        "--explain-max-images",
        type=int,
        default=d.explain_max_images,
        help="images being explained or waiting to be, all requests together; more get 503",
    )
    p.add_argument("--access-log", action="store_true", help="log one line per request")
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
    extra = {} if args.decode_threads is None else {"decode_threads": args.decode_threads}
    config = ServeConfig(
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_upload_mb=args.max_upload_mb,
        queue=args.queue,
        max_queued_mb=args.max_queued_mb,
        explain=args.explain,
        explain_max_images=args.explain_max_images,
        timeout_s=args.timeout_s,
        cors=tuple(args.cors),
        name=args.name,
        threads=args.threads,
        **extra,
    )
    check_backend(args.model, args.backend)
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
    from ..predict import load

    predictor = load(args.model, device=args.device)
    app = create_app(predictor, config, model_path=args.model)
    service = app.state.service
    url = f"http://{_url_host(config.host)}:{config.port}/"
    print(
        f"alexnet serve: {service.name} ({service.predictor.meta.get('arch')}, {len(service.classes)} classes, "
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
    serve(app, config, access_log=args.access_log)
    return 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
