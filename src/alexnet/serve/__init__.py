"""``alexnet serve``: an HTTP service and a web page for a trained model (FastAPI + uvicorn: the ``serve`` extra).

- ``config.ServeConfig``: the settings (address, batching, limits), validated; imports nothing heavy.
- ``batching.Batcher``: groups the images of concurrent requests into one forward pass, behind a bounded queue.
- ``app.create_app(predictor, config)``: the routes; ``app.serve`` runs it with uvicorn.
- ``service.Service``: the predictor, the batcher, the decoding pool and Grad-CAM's thread, and the budgets.
- ``admission.admit``: the one path of every POST from arrival to images (deadline, budgets, body, parsing).
- ``wire``: body and multipart reading, query numbers, JSON errors; ``v2``: the Open Inference Protocol v2 parse and
  format; ``metrics``: the Prometheus metrics.
- ``connections``: the header deadline and the cap on open connections (uvicorn's protocol), rate-limited logs;
  ``images``: what decoding an image will cost (memory, JPEG scans), read from its header.
- ``static/index.html``: the page at ``/`` (self-contained: no CDN, works offline).

Nothing is imported here, so ``alexnet --help`` stays fast and the extra is only needed to serve.
"""
