"""``pcnn serve``: a FastAPI REST API and a one-page web app for facial expression recognition.

* ``POST /predict`` – multipart upload (field ``file``) → the ``pcnn predict`` JSON record of the image
  (``source``, ``frame``, ``skipped``, ``faces`` [box, landmarks, label, score, probabilities, regions, …]).
* ``GET /health`` – status, backend, model classes, input size, regions, class colours, limits.
* ``GET /`` – the web page (upload or webcam snapshot, faces boxed with their expression and per-region bars);
  ``/static/*`` its script and style; ``/docs`` the OpenAPI (Swagger UI) page, served from local copies of its
  script and style (package ``fastapi-offline``), so that it works without internet access.

The model is loaded once. Requests are decoded and recognised in Starlette's thread pool, so the event loop never
blocks; a small pool of recognizers (one face detector each) shares the one classifier backend, whose calls are
serialised by a lock unless the backend declares itself thread-safe (onnxruntime sessions are). Memory is bounded
(:mod:`.memory`): each upload's peak is estimated from its image header, and at most ``max_decodes`` images
(default: the CPU cores) whose estimates fit in ``max_memory_mb`` beside the server's own memory are decoded and
analysed at once; the others wait, first come first served, with only their spooled upload in memory, and beyond
``max_queue`` waiting uploads the answer is 503 with ``Retry-After``.

Bad uploads never crash the server: bodies over the limit get 413 (checked on ``Content-Length`` and while
streaming), and so do images whose header declares more than ``max_pixels`` pixels (checked before decoding); a
body that stops arriving gets 408 (:mod:`.body_guard`); a request that is not ``multipart/form-data`` or a file part
whose type is not an image gets 415; an empty, truncated or undecodable image gets 422 – each with a one-line
``detail`` message.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import math
import queue
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ..backends.dispatch import ClassifierBackend, create_backend, describe_backend
from ..defaults import DEFAULT_MAX_MEMORY_MB, DEFAULT_MAX_QUEUE, DEFAULT_MAX_UPLOAD_MB, DEFAULT_READ_TIMEOUT
from ..errors import UsageError
from ..faces.detect import FaceDetector
from ..faces.imageio import MAX_PIXELS, ImageLoadError
from ..faces.recognizer import Recognizer
from ..models.calibration import check_min_confidence
from .body_guard import BodyGuardMiddleware
from .live import SESSION_PATTERN, LiveSessions
from .memory import (
    FIXED_COST,
    MIB,
    TRIM_PIXELS,
    DecodeBudget,
    DecodeQueueFull,
    ImageTooLargeError,
    Upload,
    decode_rgb,
    default_max_decodes,
    inspect_upload,
    release_memory,
    upload_cost,
)

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Part content types accepted besides ``image/*`` (the bytes are decoded and checked anyway).
GENERIC_TYPES = {"", "application/octet-stream", "binary/octet-stream"}
log = logging.getLogger("pcnn_fer.serve")


class LockedBackend:
    """A classifier backend whose calls are serialised by a lock (PyTorch modules are shared between threads)."""

    def __init__(self, backend: ClassifierBackend) -> None:
        self.backend = backend
        self.config = backend.config
        self.name = getattr(backend, "name", type(backend).__name__)
        self._lock = threading.Lock()

    def __call__(self, batch: Any) -> Any:
        """Run the wrapped backend under the lock."""
        with self._lock:
            return self.backend(batch)


class InferenceService:
    """The model, loaded once, behind a pool of ``workers`` recognizers (each with its own face detector) that share
    one classifier backend. :meth:`predict` is thread-safe and blocking: call it from a worker thread. Decodes are
    admitted by :attr:`budget`: at most ``max_decodes`` at once (default: the CPU cores), whose estimated peaks fit
    in ``max_memory_mb`` MiB beside the process's own memory (0: no memory bound)."""

    def __init__(self, checkpoint: Any = "default", backend: str | ClassifierBackend = "auto", device: str = "cpu",
                 detector: str | FaceDetector = "auto", workers: int = 2, threads: int | None = None,
                 max_pixels: int = MAX_PIXELS, max_decodes: int | None = None,
                 max_memory_mb: float = DEFAULT_MAX_MEMORY_MB, min_confidence: float | None = None) -> None:
        self.min_confidence = check_min_confidence(min_confidence)
        if workers < 1:
            raise UsageError(f"workers must be at least 1, got {workers}")
        if max_pixels < 1:
            raise UsageError(f"max_pixels must be at least 1, got {max_pixels}")
        if not 0 <= max_memory_mb < float("inf"):
            raise UsageError(f"max_memory_mb must be a non-negative number of MiB (0: no bound), got {max_memory_mb}")
        model = create_backend(backend, checkpoint, device, threads=threads, spinning=False)
        self.backend_name = getattr(model, "name", type(model).__name__)
        self.backend_note = describe_backend(model)  # the name, and for auto why it was chosen
        shared = model if getattr(model, "thread_safe", False) else LockedBackend(model)
        self.recognizers: queue.Queue[Recognizer] = queue.Queue()
        first = None
        for _ in range(workers):
            rec = Recognizer(backend=shared, detector=detector, device=device, max_pixels=max_pixels,
                             min_confidence=self.min_confidence)
            first = first or rec
            self.recognizers.put(rec)
        assert first is not None
        self.config = first.config
        self.classes: tuple[str, ...] = first.classes
        self.detector_name = type(first.detector).__name__
        self.workers, self.max_pixels = workers, max_pixels
        self.checkpoint = checkpoint if isinstance(checkpoint, (str, Path)) else type(checkpoint).__name__
        self.served = 0
        self.live = LiveSessions()
        self._count_lock = threading.Lock()
        # measured after the model and detectors are loaded: the baseline the memory budget is shared with
        self.budget = DecodeBudget(max_decodes or default_max_decodes(),
                                   int(max_memory_mb * MIB) if max_memory_mb else None)
        self.max_memory_mb = max_memory_mb
        if self.budget.available is not None and self.budget.available < FIXED_COST:
            raise UsageError(f"--max-memory-mb {max_memory_mb:g}: the server already takes "
                             f"{self.budget.baseline / MIB:.0f} MiB with its model and detectors, which leaves no "
                             f"room to decode an upload (at least {(self.budget.baseline + FIXED_COST) / MIB:.0f}; "
                             "0: no bound)")

    @contextlib.contextmanager
    def borrow(self) -> Iterator[Recognizer]:
        """One recognizer of the pool for the duration of the block (waits while all are busy)."""
        rec = self.recognizers.get()
        try:
            yield rec
        finally:
            self.recognizers.put(rec)

    def predict(self, data: bytes, source: str | None = None) -> dict[str, Any]:
        """Decode ``data`` and recognise its faces → the ``pcnn predict`` JSON record, waiting for the budget's
        admission. Raises :class:`~pcnn_fer.deploy.memory.ImageTooLargeError` when the header declares more than
        ``max_pixels`` pixels (nothing is decoded) and :class:`~pcnn_fer.faces.imageio.ImageLoadError` for inputs
        that cannot be decoded."""
        upload = inspect_upload(data, self.max_pixels)
        with self.budget.hold(self.cost_of(upload, len(data))):
            return self.recognise(data, source, upload)

    def cost_of(self, upload: Upload | None, size: int) -> int:
        """The estimated peak memory of an upload of ``size`` bytes (its header's estimate, or the fixed cost
        when the header could not be read: the decoder will then refuse it). Raises
        :class:`~pcnn_fer.deploy.memory.ImageTooLargeError` (413) when it exceeds what the memory budget leaves
        beside the server's own memory: such an image is refused rather than decoded alone over the budget."""
        cost = upload.cost if upload is not None else upload_cost(0, 0, "", size)
        room = self.budget.available
        if upload is not None and room is not None and cost > room:
            raise ImageTooLargeError(f"image too large for the server's memory: {upload.width}x{upload.height} "
                                     f"{upload.mode} needs about {cost / MIB:.0f} MiB to decode, the memory budget "
                                     f"leaves {room / MIB:.0f} MiB (pcnn serve --max-memory-mb)")
        return cost

    def recognise(self, data: bytes, source: str | None, upload: Upload | None, session: str | None = None,
                  time_s: float | None = None, min_confidence: float | None = None) -> dict[str, Any]:
        """:meth:`predict` for a caller that holds the budget's admission for ``upload`` (its header); with a live
        webcam ``session`` the faces get that session's ids and smoothed labels (:mod:`pcnn_fer.deploy.live`);
        ``min_confidence``: a request's own threshold for ``uncertain`` (None: the service's)."""
        try:
            rgb = decode_rgb(data, self.max_pixels)  # the decoded image lives only inside an admission
            with self.borrow() as rec:
                result = rec.predict_array(rgb, source=source)
            if session is not None:
                self.live.follow(session, result, time_s)
            result.image = None
            del rgb
        finally:
            if upload is None or upload.pixels >= TRIM_PIXELS:
                release_memory()
        with self._count_lock:
            self.served += 1
        if min_confidence is not None:
            result.relabel(min_confidence)
        return result.to_dict()


class FaceRecord(BaseModel):
    """One face of a prediction record."""

    box: list[float] = Field(description="[x1, y1, x2, y2] in image pixels (after EXIF rotation), clipped to the image")
    box_unclipped: list[float] | None = Field(None, description="the detector's box when it reached past an image "
                                              "edge (absent otherwise)")
    landmarks: list[list[float]] | None = Field(description="5 points or null (YuNet: eye centres, nose tip, mouth "
                                                "corners; dlib: eye corners, nose base; order in docs/faces.md)")
    label: str = Field(description="most probable expression, or 'uncertain' below min_confidence")
    score: float = Field(description="its probability")
    probabilities: dict[str, float] = Field(description="softmax of the global (fused) logits, per class")
    regions: dict[str, dict[str, float]] = Field(description="per PCNN region: softmax of its head's logits")
    detection_score: float = Field(description="the face detector's score (detector-specific scale)")
    face_id: int | None = Field(None, description="live webcam session: the person's id, stable through the session")
    smooth_label: str | None = Field(None, description="live webcam session: the person's smoothed expression")
    smooth_probabilities: dict[str, float] | None = Field(None, description="live webcam session: smoothed "
                                                                              "probabilities per class")
    occlusion: dict[str, float] | None = Field(None, description="per PCNN region: probability that it is covered "
                                                                 "(models with occlusion heads)")
    quality: dict[str, Any] | None = Field(None, description="size_px, sharpness, brightness, clipped, yaw, pitch "
                                                             "and the failed quality checks (issues)")


class PredictionRecord(BaseModel):
    """The ``pcnn predict`` JSON record of one image."""

    source: str | None = Field(description="the uploaded file's name")
    frame: int | None = Field(description="always null for still images")
    skipped: str | None = Field(description="null, or why the image could not be used")
    time_s: float | None = Field(None, description="live webcam frames (a session): the frame's time in seconds")
    faces: list[FaceRecord]


class Health(BaseModel):
    """``GET /health``."""

    status: str
    backend: str
    classes: list[str]
    input_size: int
    regions: list[str]
    colors: dict[str, str]
    detector: str
    workers: int
    max_upload_mb: float
    max_pixels: int
    max_decodes: int
    max_memory_mb: float
    max_queue: int
    decoding: dict[str, Any] = Field(description="the decode budget now: MiB in use and for decodes, active, "
                                                 "waiting, admitted")
    read_timeout_s: float
    min_confidence: float | None = Field(None, description="pcnn serve --min-confidence (null: never uncertain)")
    calibration: str | None = Field(None, description="the model's confidence calibration (null: none)")
    occlusion: bool = Field(False, description="whether the model has per-region occlusion heads")
    version: str
    served: int


class Error(BaseModel):
    """An error response."""

    detail: str


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def docs_assets_dir() -> Path | None:
    """The folder of the local Swagger UI script and style shipped by ``fastapi-offline``, or None without it."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    folder = Path(fastapi_offline.__file__).resolve().parent / "static"
    needed = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")
    return folder if all((folder / name).is_file() for name in needed) else None


def add_docs_pages(app: FastAPI) -> None:
    """``/docs``: Swagger UI from local copies of its script and style (``/docs-assets``), so that it works offline;
    without ``fastapi-offline`` a plain page that says how to get it and links the raw schema. (No ``/redoc``: ReDoc
    loads its logo from the web.)"""
    assets = docs_assets_dir()
    title = f"{app.title} API"
    if assets is None:
        @app.get("/docs", include_in_schema=False)
        async def docs_unavailable() -> HTMLResponse:
            """A plain page: the interactive one needs fastapi-offline."""
            return HTMLResponse(f"<!doctype html><title>{title}</title><h1>{title}</h1><p>The interactive API page "
                                "needs the <code>fastapi-offline</code> package (<code>pip install "
                                "fastapi-offline</code>, part of the <code>deploy</code> extra). The OpenAPI schema "
                                f'is at <a href="{app.openapi_url}">{app.openapi_url}</a>.</p>')
        return
    app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        """Swagger UI (local script; the online validator badge is off)."""
        return get_swagger_ui_html(openapi_url=str(app.openapi_url), title=title,
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon.png",
                                   swagger_ui_parameters={"validatorUrl": None})


def create_app(service: InferenceService | None = None, *, checkpoint: Any = "default", backend: str = "auto",
               device: str = "cpu", detector: str | FaceDetector = "auto",
               max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, workers: int = 2, threads: int | None = None,
               max_pixels: int = MAX_PIXELS, max_decodes: int | None = None,
               max_memory_mb: float = DEFAULT_MAX_MEMORY_MB, max_queue: int = DEFAULT_MAX_QUEUE,
               read_timeout: float = DEFAULT_READ_TIMEOUT, min_confidence: float | None = None) -> FastAPI:
    """The FastAPI application. Pass a ready :class:`InferenceService` or the options to build one (the model is
    loaded here, once). ``read_timeout``: seconds an upload may go without sending any bytes before it gets 408;
    ``max_queue``: uploads that may wait for a decode before the next one gets 503 with ``Retry-After``."""
    from .. import __version__
    from ..faces.draw import class_color
    from ..models.pcnn import REGIONS

    if not max_upload_mb > 0:
        raise UsageError(f"max_upload_mb must be positive, got {max_upload_mb}")
    if not read_timeout > 0:
        raise UsageError(f"read_timeout must be positive, got {read_timeout}")
    if max_queue < 0:
        raise UsageError(f"max_queue must be at least 0, got {max_queue}")
    service = service or InferenceService(checkpoint, backend, device, detector, workers, threads,
                                          max_pixels=max_pixels, max_decodes=max_decodes,
                                          max_memory_mb=max_memory_mb, min_confidence=min_confidence)
    limit = int(max_upload_mb * 2**20)
    limit_text = f"{max_upload_mb:g} MB"

    app = FastAPI(
        title="pcnn-fer",
        version=__version__,
        description="Facial expression recognition with PCNN. Upload a photo to `POST /predict` (multipart field "
                    "`file`); every face found is returned with its box, landmarks, expression, class probabilities "
                    f"and the probabilities of each of PCNN's five regions. Uploads are limited to {limit_text} "
                    f"and {service.max_pixels / 1e6:g} MP.",
        docs_url=None, redoc_url=None)
    app.state.service = service
    app.add_middleware(BodyGuardMiddleware, limit=limit + 64 * 1024,
                       message=f"upload too large: the limit is {limit_text} (pcnn serve --max-upload-mb)",
                       read_timeout=read_timeout,
                       timeout_message=f"upload stalled: no data for {read_timeout:g} s (pcnn serve --read-timeout)")
    add_docs_pages(app)

    def error(status: int, detail: str) -> HTTPException:
        """An HTTP error with a one-line JSON detail."""
        return HTTPException(status_code=status, detail=detail)

    def not_multipart(request: Request) -> str | None:
        """The 415 message for a /predict request that is not multipart/form-data, else None."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            return None
        return (f"send the image as multipart/form-data in a field named 'file' (got content type "
                f"{content_type or 'none'!r})")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        """415 for /predict requests that are not multipart, FastAPI's 422 otherwise."""
        # form fields of the wrong kind (e.g. url-encoded 'file=text') fail validation before the endpoint runs
        message = not_multipart(request) if request.url.path == "/predict" else None
        if message:
            return JSONResponse({"detail": message}, status_code=415)
        return await request_validation_exception_handler(request, exc)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        """The web page."""
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/health", response_model=Health, summary="Service status and model description")
    async def health() -> dict[str, Any]:
        """Status, backend, classes (in output order), input size, regions, class colours and limits."""
        return {"status": "ok", "backend": service.backend_name, "classes": list(service.classes),
                "input_size": int(service.config.input_size), "regions": list(REGIONS),
                "colors": {c: _hex(class_color(c)) for c in service.classes}, "detector": service.detector_name,
                "workers": service.workers, "max_upload_mb": max_upload_mb, "max_pixels": service.max_pixels,
                "max_decodes": service.budget.limit, "max_memory_mb": service.max_memory_mb,
                "max_queue": max_queue, "decoding": service.budget.status(), "read_timeout_s": read_timeout,
                "version": __version__, "served": service.served, "min_confidence": service.min_confidence,
                "calibration": None if service.config.calibration is None else service.config.calibration.describe(),
                "occlusion": bool(service.config.occlusion_hidden)}

    @app.post("/predict", response_model=PredictionRecord, summary="Recognise the expressions of all faces in a photo",
              responses={408: {"model": Error, "description": "the upload stopped arriving (--read-timeout)"},
                         413: {"model": Error, "description": "upload larger than the limit, or an image with more "
                                                              "pixels than the limit (from its header)"},
                         415: {"model": Error, "description": "not multipart/form-data, or the file is not an image"},
                         422: {"model": Error, "description": "empty, truncated or undecodable image"},
                         503: {"model": Error, "description": "--max-queue uploads already wait for a decode; "
                                                              "retry after the Retry-After seconds"}})
    async def predict(request: Request,
                      file: UploadFile | None = File(None, description="the photo (JPEG, PNG, WebP, BMP, TIFF, GIF)"),
                      session: str | None = Form(None, description="live webcam: a name (1-64 letters, digits, - or "
                                                 "_) shared by the frames of one stream; faces then carry face_id, "
                                                 "smooth_label and smooth_probabilities"),
                      time_s: float | None = Form(None, description="live webcam: the frame's time in seconds"),
                      min_confidence: float | None = Query(
                          None, ge=0.0, le=1.0, description="label faces whose confidence is below this "
                                                            "'uncertain' (default: pcnn serve --min-confidence)"),
                      ) -> JSONResponse:
        """Detect every face, align it and classify its expression. Returns the ``pcnn predict`` JSON record."""
        message = not_multipart(request)
        if message:
            raise error(415, message)
        if file is None:
            raise error(422, "no file in the upload: send the image in a multipart field named 'file'")
        if session is not None and not SESSION_PATTERN.fullmatch(session):
            raise error(422, "session must be 1 to 64 letters, digits, '-' or '_'")
        if time_s is not None and not math.isfinite(time_s):
            raise error(422, "time_s must be a finite number of seconds")
        part_type = (file.content_type or "").split(";")[0].strip().lower()
        name = file.filename or "upload"
        if not (part_type.startswith("image/") or part_type in GENERIC_TYPES):
            raise error(415, f"unsupported file type {part_type!r} for {name!r}: upload an image "
                             "(JPEG, PNG, WebP, BMP, TIFF or GIF)")
        try:
            size = file.size if file.size is not None else file.file.seek(0, 2)
            if size > limit:
                raise error(413, f"upload too large: the limit is {limit_text} (pcnn serve --max-upload-mb)")
            if not size:
                raise error(422, f"{name!r} is empty")
            # the header only, from the spooled upload: what the decode will cost (413 above --max-pixels)
            header = await run_in_threadpool(inspect_upload, file.file, service.max_pixels)
            cost = service.cost_of(header, size)  # 413 when no admission could ever hold it
            started = time.perf_counter()
            async with service.budget.admit(cost, max_waiting=max_queue):
                data = await file.read(limit + 1)  # in memory only once admitted
                record = await run_in_threadpool(service.recognise, data, name, header, session, time_s,
                                                 min_confidence)
        except DecodeQueueFull as e:
            raise HTTPException(503, f"busy: {e.waiting} uploads already wait for a decode (pcnn serve --max-queue "
                                     f"{max_queue}); retry in {e.retry_after:.0f} s",
                                headers={"Retry-After": str(math.ceil(e.retry_after))}) from None
        except ImageTooLargeError as e:
            raise error(413, f"cannot use {name!r}: {e.reason}") from None
        except ImageLoadError as e:
            raise error(422, f"cannot use {name!r}: {e.reason}") from None
        except HTTPException:
            raise
        except Exception as e:  # noqa: BLE001 - report, never crash the server
            log.exception("inference failed for %s", name)
            raise error(500, f"inference failed: {type(e).__name__}: {e}") from None
        finally:
            await file.close()
        elapsed = (time.perf_counter() - started) * 1e3
        return JSONResponse(record, headers={"X-Inference-Ms": f"{elapsed:.1f}"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def serve_in_background(app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                        timeout: float = 60.0) -> Iterator[str]:
    """Run ``app`` with uvicorn in a daemon thread (``port=0``: a free port) and yield its base URL; the server
    is stopped when the block exits."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="pcnn-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the server did not start on {host}:{port}")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the server did not start within {timeout:g} s")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    try:
        yield f"http://{shown}:{bound[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (0: any free port), ready for uvicorn. Raises
    :class:`~pcnn_fer.errors.UsageError` naming the address when the port is out of range, busy or not ours."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535 (0: any free port), got {port}")
    address = host.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a TIME_WAIT port is reusable
        sock.bind((address, port))
    except OSError as e:
        sock.close()
        why = "the port is already in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
        raise UsageError(f"cannot listen on {host}:{port}: {why}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    """The ``http://host:port`` base URL of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run_on_socket(app: Any, sock: socket.socket, log_level: str = "info") -> None:
    """Serve ``app`` with uvicorn on an already bound socket until interrupted."""
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level)
    uvicorn.Server(config).run(sockets=[sock])


def serve(host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", **options: Any) -> None:
    """Bind ``host``:``port`` first (a busy port fails before the model is loaded), then build the app
    (:func:`create_app` ``options``) and serve it with uvicorn until interrupted."""
    sock = bind_socket(host, port)
    with sock:
        run_on_socket(create_app(**options), sock, log_level)


__all__ = ["create_app", "InferenceService", "BodyGuardMiddleware", "LockedBackend", "serve", "serve_in_background",
           "bind_socket", "run_on_socket", "url_of", "is_loopback", "add_docs_pages", "STATIC_DIR",
           "DEFAULT_MAX_UPLOAD_MB"]
