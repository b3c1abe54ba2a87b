"""`elit serve`: one set of weights answers a cheap preview and a full-quality render, and under load
lowers the budget instead of making users wait.

    app.py        the FastAPI app: POST /v1/images, GET /v1/models, /v1/status, /healthz, /metrics, the page
    requests.py   the request body, the server's caps, errors that name the field
    service.py    one served model: weights, cost model, scheduler; a request -> a job
    scheduler.py  the worker: micro-batches, deadline-aware choice of budget and steps, 503 when out of reach
    costmodel.py  seconds of a batch from its GFLOPs, calibrated at start-up, corrected while serving
    metrics.py    Prometheus metrics
    ray_app.py    the same app as a Ray Serve deployment with N replicas
    page/         the web page (plain HTML/JS/CSS, no build step)

The model side (`elit.model`) knows nothing of this package.
"""
