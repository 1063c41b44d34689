"""``alexnet serve``: an HTTP service and a web page for a trained model (FastAPI + uvicorn: the ``serve`` extra).

- ``config.ServeConfig``: the settings (address, batching, limits), validated; imports nothing heavy.
- ``batching.Batcher``: groups the images of concurrent requests into one forward pass, behind a bounded queue.
- ``app.create_app(predictor, config)``: the routes, limits, errors and metrics; ``app.serve`` runs it with uvicorn.
- ``static/index.html``: the page at ``/`` (self-contained: no CDN, works offline).

Nothing is imported here, so ``alexnet --help`` stays fast and the extra is only needed to serve.
"""
