"""The HTTP service: ``create_app(config)`` builds the ASGI app, ``listen`` and ``run`` serve it with uvicorn.

Endpoints (OpenAPI at ``/docs``; JSON errors are ``{"detail": "one line"}``):

* ``POST /v1/stylize`` — the photo as the raw body or as the multipart field
  ``image`` (JPEG, PNG or WebP), options in the query string → the stylized
  image's bytes (``format`` jpg, png or webp). 400 bad image, 404 unknown model
  or style, 413 upload or pixels over the limits, 422 bad parameters, 503 busy
  (with ``Retry-After``), 504 past ``--timeout``.
* ``GET /v1/models`` — each model's name and styles, a style's thumbnail as a
  ``data:`` URL (or null).
* ``GET /healthz``, ``GET /metrics`` (Prometheus text), ``GET /`` (the web page).

Nothing here blocks the event loop: the body is read as it arrives (and
refused past ``--max-upload-mb`` while reading), decoding and encoding run on
the thread pool, the network on the engine's threads (``fastnst.serve.engine``).
A photo's header is checked before it is decoded: only JPEG, PNG and WebP, and
at most ``--max-pixels`` (a decompression bomb never reaches the decoder).
With an API key, ``/v1/*`` and ``/metrics`` need ``Authorization: Bearer KEY``
or ``X-API-Key: KEY``; ``/``, ``/healthz`` and ``/docs`` stay open.
"""

from __future__ import annotations

import hmac
import logging
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Literal

import anyio
import numpy as np
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from fastnst.errors import ConfigError, FastNSTError, ImageError, ImageTooLarge, UnknownName, first_line
from fastnst.images import encode_image, open_image, resize_long_side, side_limit
from fastnst.serve.config import ServeConfig
from fastnst.serve.engine import Busy, Engine, Options
from fastnst.stylize.config import STROKE_SCALES
from fastnst.version import __version__

log = logging.getLogger(__name__)

# Upload formats (Pillow's names): only these decoders ever see an upload.
ACCEPTED = ("JPEG", "PNG", "WEBP")
# Output format → Pillow's name and the content type.
OUTPUTS = {"jpg": ("JPEG", "image/jpeg"), "png": ("PNG", "image/png"), "webp": ("WEBP", "image/webp")}
ENDPOINTS = ("/", "/v1/stylize", "/v1/models", "/healthz", "/metrics", "/docs", "/openapi.json")
# The page loads nothing from elsewhere: its script and style are inline, images data: or blob: URLs.
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:; "
               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
UPLOAD = "upload"  # what an ImageError about the request's photo names instead of a path


class TooLarge(FastNSTError):
    """The upload or its pixel count is over the service's limits (HTTP 413)."""


class Unauthorized(FastNSTError):
    """The request lacks the API key (HTTP 401)."""


def create_app(config: ServeConfig, engine: Engine | None = None) -> FastAPI:
    """The ASGI app serving ``config``'s models; they are loaded here, once (``engine`` replaces that)."""
    engine = engine or Engine.load(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        try:
            yield
        finally:
            await run_in_threadpool(engine.stop)

    app = FastAPI(title="fastnst", version=__version__, lifespan=lifespan,
                  description="Fast neural style transfer: send a photo, get it back painted.")
    app.state.config, app.state.engine = config, engine
    app.state.page = resources.files("fastnst.serve").joinpath("page.html").read_text(encoding="utf-8")
    app.include_router(router)
    for error, handler in ((FastNSTError, _library_error), (RequestValidationError, _validation_error),
                           (TimeoutError, _timeout_error), (Exception, _server_error)):
        app.add_exception_handler(error, handler)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"], max_age=600)
    app.add_middleware(_Measure, metrics=engine.metrics)  # outermost: counts every answer, 401s and CORS too
    return app


def listen(config: ServeConfig) -> socket.socket:
    """A socket bound to ``config.host``:``config.port``; ``FastNSTError`` naming the fix if it cannot be."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    try:
        return socket.create_server((config.host, config.port), family=family)
    except OSError as exc:
        raise FastNSTError(f"cannot listen on {config.host}:{config.port} ({exc.strerror or exc}); choose another "
                           "--port or --host") from None


def url(sock: socket.socket) -> str:
    """The address a browser opens for a listening socket."""
    host, port = sock.getsockname()[:2]
    host = "127.0.0.1" if host == "0.0.0.0" else f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/"


def run(app: FastAPI, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` until interrupted (Ctrl-C raises ``KeyboardInterrupt`` after a clean shutdown)."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", log_config=None, timeout_graceful_shutdown=10,
                                           server_header=False))
    server.run(sockets=[sock])


# -- authentication and errors ----------------------------------------------------------------------

async def require_key(request: Request) -> None:
    """Refuse a request without the configured API key (no key configured: everyone passes)."""
    key = request.app.state.config.api_key
    if key is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    given = given.strip() if scheme.lower() == "bearer" else request.headers.get("x-api-key", "")
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise Unauthorized("missing or wrong API key: send the header 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")


_STATUSES = ((Unauthorized, 401), (Busy, 503), (TooLarge, 413), (UnknownName, 404), (ConfigError, 422),
             (ImageError, 400))


async def _library_error(request: Request, exc: FastNSTError) -> JSONResponse:
    status = next((code for kind, code in _STATUSES if isinstance(exc, kind)), 500)
    detail = exc.reason if isinstance(exc, ImageError) else str(exc)
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Busy) else \
        {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status == 500:
        log.warning("%s %s: %s", request.method, request.url.path, detail)
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's list of problems as one line: ``strength: Input should be less than or equal to 1``."""
    parts = [f"{error['loc'][-1]}: {error['msg']}" for error in exc.errors()]
    return JSONResponse({"detail": "; ".join(parts)}, status_code=422)


async def _timeout_error(request: Request, exc: TimeoutError) -> JSONResponse:
    seconds = request.app.state.config.timeout
    return JSONResponse({"detail": f"not done within {seconds:g} s; try again, or send a smaller image "
                                   "(max_size)"}, status_code=504)


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, first_line(exc))
    return JSONResponse({"detail": f"internal error ({type(exc).__name__})"}, status_code=500)


class _Measure:
    """ASGI middleware: each HTTP answer's endpoint, status and seconds into ``Metrics``."""

    def __init__(self, app, metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def measured_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, measured_send)
        finally:
            endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"
            self.metrics.request(endpoint, status, time.perf_counter() - start)


# -- the endpoints ----------------------------------------------------------------------------------

router = APIRouter()
_IMAGE_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                       "properties": {"image": {"type": "string", "format": "binary"}}}},
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "image/webp": {"schema": {"type": "string", "format": "binary"}}}}}
_IMAGE_RESPONSE = {200: {"content": {media: {} for _, media in OUTPUTS.values()},
                         "description": "the stylized image, the photo's size (or max_size)"}}
_STROKES = f"brush strokes this many times larger ({STROKE_SCALES[0]:g}-{STROKE_SCALES[1]:g}, 1: the model's own)"


@router.post("/v1/stylize", dependencies=[Depends(require_key)], openapi_extra=_IMAGE_BODY,
             response_class=Response, responses=_IMAGE_RESPONSE)
async def stylize(
    request: Request,
    model: Annotated[str | None, Query(description="model name (GET /v1/models); default the first")] = None,
    style: Annotated[str | None, Query(description="style name or index; default the model's first")] = None,
    style_mix: Annotated[str | None, Query(description="blend of styles, e.g. starry_night=0.7,wave=0.3")] = None,
    strength: Annotated[float, Query(ge=0, le=1, description="1 full style, 0 the photo")] = 1.0,
    preserve_color: Annotated[bool, Query(description="keep the photo's colours")] = False,
    stroke_scale: Annotated[float, Query(ge=STROKE_SCALES[0], le=STROKE_SCALES[1], description=_STROKES)] = 1.0,
    max_size: Annotated[int | None, Query(ge=16, description="downsize the long side to this many pixels")] = None,
    format: Annotated[Literal["jpg", "png", "webp"], Query(description="output format")] = "jpg",
    quality: Annotated[int, Query(ge=1, le=100, description="JPEG/WebP quality")] = 95,
) -> Response:
    """Stylize one photo, sent as the body or as the multipart field ``image``."""
    config: ServeConfig = request.app.state.config
    engine: Engine = request.app.state.engine
    served = engine.model(model)
    options = Options(strength, preserve_color, stroke_scale, served.style_weights(style, style_mix))
    _check_declared_size(request, config)
    with anyio.fail_after(config.timeout), engine.admitted():
        data = await _image_bytes(request, config)
        pixels = await run_in_threadpool(decode, data, config.max_pixels, max_size)
        _check_encodable(pixels, format)
        styled = await engine.stylize(served, pixels, options)
        body = await run_in_threadpool(encode, styled, format, quality)
    return Response(body, media_type=OUTPUTS[format][1])


@router.get("/v1/models", dependencies=[Depends(require_key)])
async def models(request: Request) -> dict:
    """The models served, each style's name and thumbnail (a ``data:`` URL of a small JPEG, or null)."""
    return {"models": [m.describe() for m in request.app.state.engine.models.values()]}


@router.get("/healthz")
async def healthz(request: Request) -> dict:
    """Liveness: 200 while the server runs, with the models it serves."""
    return {"status": "ok", "models": list(request.app.state.engine.models)}


@router.get("/metrics", dependencies=[Depends(require_key)], response_class=PlainTextResponse)
async def metrics(request: Request) -> PlainTextResponse:
    """Request counts by endpoint and status, latency histogram, queue depth, images/s (Prometheus text)."""
    engine: Engine = request.app.state.engine
    text = engine.metrics.render(engine.queue_depth, engine.active)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page(request: Request) -> HTMLResponse:
    return HTMLResponse(request.app.state.page, headers={"Content-Security-Policy": PAGE_POLICY,
                                                         "X-Content-Type-Options": "nosniff"})


# -- reading the photo ------------------------------------------------------------------------------

def _check_declared_size(request: Request, config: ServeConfig) -> None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > config.max_upload_bytes:
        raise TooLarge(f"{int(declared) / 2**20:.1f} MB is over this server's limit of {config.max_upload_mb:g} MB; "
                       "send a smaller image")


async def _image_bytes(request: Request, config: ServeConfig) -> bytes:
    """The photo's bytes: the whole body, or its multipart field ``image``; ``TooLarge`` past the limit."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > config.max_upload_bytes:
            raise TooLarge(f"the upload is over this server's limit of {config.max_upload_mb:g} MB; send a smaller "
                           "image")
        chunks.append(chunk)
    body = b"".join(chunks)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        body = await _multipart_image(request, body)
    if not body:
        raise ImageError(UPLOAD, "no image: send it as the request body or as the multipart field 'image'")
    return body


async def _multipart_image(request: Request, body: bytes) -> bytes:
    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        async with Request(request.scope, replay).form(max_files=1, max_fields=16) as form:
            image = form.get("image")
            if not isinstance(image, UploadFile):
                raise ImageError(UPLOAD, "the multipart body has no file field 'image'")
            return await image.read()
    except MultiPartException as exc:
        raise ImageError(UPLOAD, f"unreadable multipart body ({exc.message})") from None


def decode(data: bytes, max_pixels: int, max_size: int | None) -> np.ndarray:
    """An upload → (H, W, 3) uint8 RGB, EXIF-oriented, long side at most ``max_size``.

    Decoded by ``fastnst.images.open_image``, as for ``fastnst stylize``, but
    only from the ``ACCEPTED`` formats; more than ``max_pixels`` pixels is
    ``TooLarge``, found from the header before any pixel is decoded.
    """
    try:
        image = open_image(data, max_pixels, formats=ACCEPTED, name=UPLOAD)
    except ImageTooLarge as exc:
        if exc.size is None:  # over Pillow's decompression-bomb limit
            raise TooLarge(f"the image's {exc.reason}") from None
        width, height = exc.size
        raise TooLarge(f"{width}x{height} = {width * height:,} pixels is over this server's limit of "
                       f"{exc.limit:,}; send a smaller image") from None
    return np.asarray(resize_long_side(image, max_size), dtype=np.uint8)


def _check_encodable(pixels: np.ndarray, fmt: str) -> None:
    """A ``ConfigError`` (422) before any compute when ``fmt`` cannot hold an image this large."""
    height, width = pixels.shape[:2]
    limit = side_limit(OUTPUTS[fmt][0], width, height)
    if limit is not None:
        raise ConfigError(f"{width}x{height} is larger than {fmt} can hold ({limit} px a side); ask for "
                          f"format=png or max_size={limit}")


def encode(pixels: np.ndarray, fmt: str, quality: int) -> bytes:
    """(H, W, 3) uint8 → the bytes of a ``fmt`` file (jpg, png, webp), encoded as ``fastnst stylize`` saves it."""
    return encode_image(pixels, OUTPUTS[fmt][0], quality)
