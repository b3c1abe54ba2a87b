"""The HTTP app (FastAPI): image requests, model facts, status, health, metrics and the web page.

    app = create_app([ModelService("fmnist", elit.load_pretrained(DIR))], api_key=None)
    uvicorn.run(app, host="127.0.0.1", port=8000)        # what `elit serve` does

Bad requests are answered 4xx with {"error": {"field": ..., "message": ...}} and never reach a worker;
work the server will not start (queue full, deadline out of reach) is answered 503 with Retry-After.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hmac
import io
import json
import pathlib
import time

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from elit.serve.metrics import ServeMetrics
from elit.serve.requests import MAX_NESTING, FieldError, nesting_depth, parse_request
from elit.serve.scheduler import Overloaded

PAGE = pathlib.Path(__file__).with_name("page")


def encode_png(images: np.ndarray, per_row: int = 8) -> bytes:
    """One PNG: the image, or several tiled in rows of `per_row` (2 px gaps)."""
    from PIL import Image
    n, h, w, c = images.shape
    cols, rows = min(n, per_row), -(-n // per_row)
    canvas = np.zeros((rows * (h + 2) - 2, cols * (w + 2) - 2, c), dtype=np.uint8)
    for i, image in enumerate(images):
        r, k = divmod(i, per_row)
        canvas[r * (h + 2):r * (h + 2) + h, k * (w + 2):k * (w + 2) + w] = image
    buf = io.BytesIO()
    Image.fromarray(canvas[..., 0] if c == 1 else canvas, mode="L" if c == 1 else "RGB").save(buf, format="PNG")
    return buf.getvalue()


def _error(status: int, message: str, field: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"field": field, "message": message}}, status_code=status, headers=headers)


async def _read_body(request: Request, cap: int) -> bytes:
    """The body, refused (413) as soon as it passes `cap` bytes: never buffered beyond the cap."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > cap:
        raise FieldError("body", f"{length} bytes exceed this server's cap of {cap} bytes", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise FieldError("body", f"more than {cap} bytes (this server's cap)", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _no_constants(name):
    raise ValueError(f"{name} is not a number JSON allows")


def _unique_fields(pairs):
    """An object whose field repeats is refused: which value counts would be the parser's choice."""
    names = [k for k, _ in pairs]
    twice = sorted({k for k in names if names.count(k) > 1})
    if twice:
        raise ValueError(f"field {twice[0]!r} is given twice; give it once")
    return dict(pairs)


def create_app(services, *, api_key: str | None = None, metrics: ServeMetrics | None = None,
               manage_workers: bool = True) -> FastAPI:
    """`services`: ModelService objects (the first is the default model). With `manage_workers` the
    app starts their worker threads on start-up and stops them on shutdown."""
    services = {s.name: s for s in services}
    metrics = metrics or ServeMetrics()
    for s in services.values():
        s.scheduler.on_batch = functools.partial(metrics.batch_done, s.name)
        metrics.watch(s)
    limits = next(iter(services.values())).limits

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if manage_workers:
            for s in services.values():
                s.scheduler.start()
        yield
        if manage_workers:
            for s in services.values():
                s.scheduler.stop()

    app = FastAPI(title="elit serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.services, app.state.metrics = services, metrics

    @app.exception_handler(FieldError)
    async def field_error(request, e: FieldError):
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
        return _error(e.status, e.message, e.field, headers)

    @app.exception_handler(HTTPException)
    async def http_error(request, e: HTTPException):
        return _error(e.status_code, str(e.detail))

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("x-api-key") or ""
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise FieldError("api_key", "missing or wrong API key; send `Authorization: Bearer KEY` or "
                                        "`X-API-Key: KEY`", 401)

    @app.post("/v1/images")
    async def images(request: Request):
        start = time.perf_counter()
        name = next(iter(services))
        try:
            check_key(request)
            body = await _read_body(request, limits.max_body_bytes)
            if nesting_depth(body) > MAX_NESTING:   # json.loads recurses: 4,000 brackets were a 500
                raise FieldError("body", f"JSON nested more than {MAX_NESTING} levels deep; the request is one "
                                         f"object of fields", 400)
            try:
                data = json.loads(body or b"null", parse_constant=_no_constants, object_pairs_hook=_unique_fields)
            except (ValueError, UnicodeDecodeError, RecursionError) as e:
                raise FieldError("body", f"malformed JSON: {e}", 400) from None
            req = parse_request(data)
            name = req.model or name
            if name not in services:
                raise FieldError("model", f"unknown model {name!r}; this server serves {', '.join(services)}")
            service = services[name]
            # a text model encodes the prompt here: off the event loop (a pipeline's encoder takes a while)
            job = await run_in_threadpool(service.make_job, req) if service.text_encoder else service.make_job(req)
            result = await asyncio.wrap_future(service.scheduler.submit(job))
        except FieldError as e:
            metrics.requests.labels(name if name in services else "?", str(e.status)).inc()
            raise
        except Overloaded as e:
            metrics.requests.labels(name, "503").inc()
            return _error(503, str(e), None, {"Retry-After": str(e.retry_after)})
        except Exception as e:   # a bug in a batch: this request fails, the server goes on
            metrics.requests.labels(name, "500").inc()
            return _error(500, f"generation failed: {type(e).__name__}: {e}")
        png = [await run_in_threadpool(encode_png, result.images)] if req.format == "png" else \
            await run_in_threadpool(lambda: [encode_png(im[None]) for im in result.images])
        s = job.settings
        # the weak pass's budget, only where one runs (ccfg / ag with a nonzero scale)
        weak = (s.weak_budget if s.weak_budget is not None else service.budgets[0]) \
            if s.guidance in ("ccfg", "ag") and s.scale else None
        facts = {"model": name, "budget": result.budget, "steps": result.steps, "guidance": s.guidance,
                 "scale": s.scale, "weak_budget": weak, "gflops_per_image": round(result.gflops_per_image, 4),
                 "queue_wait_ms": round(1000 * result.queue_wait, 2), "compute_ms": round(1000 * result.compute, 2),
                 "batch_images": result.batch_images, "seeds": job.seeds,
                 "labels": job.labels if isinstance(job.labels, list) else None,
                 "text_tokens": s.text_tokens, "deadline_ms": req.deadline_ms, "replica": service.replica}
        headers = {f"X-Elit-{k.title().replace('_', '-').replace('Gflops', 'GFLOPs')}":
                   ",".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in facts.items() if v is not None}
        metrics.requests.labels(name, "200").inc()
        metrics.latency.labels(name).observe(time.perf_counter() - start)
        if req.format == "json":   # the prompts only here: a header cannot carry any text
            guided = s.guidance in ("cfg", "ccfg") and bool(s.scale)     # the negative prompt used: default ""
            text = {} if service.text_encoder is None else {
                "prompt": req.prompt, "negative_prompt": (req.negative_prompt or "") if guided else None}
            return JSONResponse({**facts, **text, "images": [base64.b64encode(p).decode() for p in png],
                                 "mime": "image/png"}, headers=headers)
        return Response(png[0], media_type="image/png", headers=headers)

    @app.get("/v1/models")
    async def models(request: Request):
        check_key(request)
        return {"models": [s.info() for s in services.values()]}

    @app.get("/v1/status")
    async def status(request: Request):
        check_key(request)
        return {"models": {n: s.scheduler.status() for n, s in services.items()},
                "replica": next(iter(services.values())).replica}

    @app.get("/healthz")
    async def healthz():
        dead = [n for n, s in services.items() if not s.scheduler.healthy()]
        if dead:
            return _error(503, f"worker of {', '.join(dead)} is not running")
        return {"status": "ok", "models": list(services)}

    @app.get("/metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/")
    async def page():
        return FileResponse(PAGE / "index.html")

    app.mount("/static", StaticFiles(directory=PAGE), name="static")
    return app
