"""The HTTP server: a FastAPI app over any `Classifier`.

`GET /` the page, `POST /predict` images to top-k classes (the JSON of `transferkit predict --json`),
`GET /health` (200 once the model is loaded and warmed up, 503 before), `GET /info`, `GET /metrics`.

The model loads in a thread after the server starts, so /health can say "not yet" instead of the port being
closed. Decoding runs in a small thread pool and inference in the batcher's thread: the event loop only moves
bytes. A bad request is answered with its status and `{"error": "..."}` and costs the server nothing else.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from transferkit.data.images import BadImage
from transferkit.serve.batcher import Batcher
from transferkit.serve.classifier import Classifier
from transferkit.serve.metrics import CONTENT_TYPE, ServerMetrics
from transferkit.serve.page import PAGE_HEADERS, page_html
from transferkit.serve.settings import ServeSettings
from transferkit.serve.uploads import Refused, read_uploads

__all__ = ["create_app", "ranked"]

log = logging.getLogger(__name__)

PATHS = ("/", "/predict", "/health", "/info", "/metrics")  # metrics label every other path "other"


def ranked(probs: np.ndarray, classes: Sequence[str], k: int) -> list[dict[str, float | str]]:
    """The k most probable classes of one image, most probable first (ties in class order), as `predict` ranks
    them (`evaluation.predict.top_k`, which this module does not import: it pulls in timm)."""
    order = np.argsort(-probs, kind="stable")[:min(k, len(classes))]
    return [{"label": classes[j], "probability": float(probs[j])} for j in order]


@dataclass
class _State:
    classifier: Classifier | None = None
    batcher: Batcher | None = None
    ready: bool = False
    error: str | None = None


class _Measure:
    """Counts every response by method, path and status, and times it (pure ASGI: no per-request task)."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = scope["path"] if scope["path"] in PATHS else "other"
            self.metrics.record_request(scope["method"], path, status, time.perf_counter() - started)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers) if headers else None)


def create_app(load: Callable[[], Classifier], settings: ServeSettings | None = None,
               on_load_failed: Callable[[BaseException], None] | None = None) -> FastAPI:
    """The app. `load` runs in a thread once the server is up; if it raises, /health stays 503 with the reason
    and `on_load_failed` is told (the command line then stops the server with that one-line error)."""
    settings = settings or ServeSettings()
    state, metrics = _State(), ServerMetrics()
    decoders = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="transferkit-decode")

    async def start() -> None:
        try:
            classifier = await asyncio.to_thread(load)
            batcher = Batcher(classifier.predict, settings.max_batch, settings.max_wait, metrics.record_batch)
            batcher.start()
            size = classifier.input_size
            await batcher.submit(np.zeros((size, size, 3), dtype=np.uint8))  # warm-up, on the serving path
        except Exception as exc:
            state.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if on_load_failed is None:
                log.error("the model did not load: %s", state.error)
            else:
                on_load_failed(exc)
            return
        state.classifier, state.batcher, state.ready = classifier, batcher, True
        metrics.ready = True
        log.info("ready: %d classes, %s", len(classifier.classes), classifier.info().get("engine"))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.get_running_loop().create_task(start(), name="transferkit-load")
        try:
            yield
        finally:
            loading.cancel()
            if state.batcher is not None:
                await state.batcher.stop()
            decoders.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="transferkit", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    def authorise(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("x-api-key")
        bearer = request.headers.get("authorization", "")
        if given is None and bearer[:7].lower() == "bearer ":
            given = bearer[7:].strip()
        if given is None or not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise Refused(401, "missing or wrong API key: send it as X-API-Key or Authorization: Bearer",
                          "unauthorized")

    def ready() -> tuple[Classifier, Batcher]:
        if not state.ready or state.classifier is None or state.batcher is None:
            raise Refused(503, f"the model is not ready ({state.error or 'loading'})", "not_ready")
        return state.classifier, state.batcher

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        metrics.record_error(exc.kind)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _error(exc.status, exc.message, headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        metrics.record_error("not_found" if exc.status_code == 404 else f"http_{exc.status_code}")
        return _error(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.record_error("bad_request")
        return _error(400, f"bad request: {exc.errors()[0].get('msg', 'invalid')}")

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        metrics.record_error("internal")
        return _error(500, f"internal error ({type(exc).__name__}); see the server's log")

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html(), headers=PAGE_HEADERS)

    @app.get("/health")
    async def health() -> JSONResponse:
        if state.ready:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "failed" if state.error else "loading", "error": state.error},
                            status_code=503)

    @app.get("/info")
    async def info(request: Request) -> JSONResponse:
        authorise(request)
        classifier, _ = ready()
        limits = {"max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms,
                  "max_upload_mb": settings.max_upload_mb, "max_files": settings.max_files, "top": settings.top}
        return JSONResponse({**classifier.info(), "input_size": classifier.input_size, "server": limits})

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        authorise(request)
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        authorise(request)
        classifier, batcher = ready()
        k = _top(request.query_params.get("top"), settings.top)
        uploads = await read_uploads(request, settings.max_upload_bytes, settings.max_files)
        loop = asyncio.get_running_loop()
        with batcher.coming(len(uploads)):
            decoded = await asyncio.gather(*(loop.run_in_executor(decoders, classifier.preprocess, data, name)
                                             for name, data in uploads), return_exceptions=True)
        failed = [d for d in decoded if isinstance(d, BaseException)]
        if any(not isinstance(d, BadImage) for d in failed):
            raise next(d for d in failed if not isinstance(d, BadImage))
        if failed:  # every bad file named at once, so one correction fixes the request
            raise Refused(400, "; ".join(f"{d.path}: {d.reason}" for d in failed if isinstance(d, BadImage)),
                          "bad_image")
        pixels = [d for d in decoded if isinstance(d, np.ndarray)]
        rows = await batcher.submit_all(pixels)
        classes = classifier.classes
        return JSONResponse([{"path": name, "predictions": ranked(row, classes, k)}
                             for (name, _), row in zip(uploads, rows)])

    if settings.cors:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors), allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "X-API-Key", "Authorization"])
    app.add_middleware(_Measure, metrics=metrics)
    return app


def _top(text: str | None, default: int) -> int:
    if text is None:
        return default
    if not text.isdigit() or int(text) < 1:
        raise Refused(400, f"top must be a whole number, 1 or more, got {text!r}", "bad_request")
    return int(text)
