"""The queue between HTTP requests and the network: admission, batching, worker threads, metrics.

Every stylize request goes through ``Engine``:

* **Admission.** At most ``queue_size`` requests are in the service at once
  (from before their upload is read to their answer); one more is refused at
  once with ``Busy`` (HTTP 503 and a ``Retry-After``), so memory stays bounded
  whatever the load: each admitted request holds one upload and one decoded
  photo, (H, W, 3) uint8.
* **Workers.** Worker threads take jobs from one queue and run the network, so
  the event loop never waits on it. On the CPU ``workers`` threads each run one
  photo (the backend's streams, one core each: ``backend.set_streams``); on a
  GPU one thread runs batches: after taking a job it waits up to
  ``batch_wait_ms`` for more, up to ``batch_size``, and runs the jobs of equal
  size and options as one (B, H, W, 3) pass.
* **Isolation.** A ``Stylizer`` holds its options (strength, colour, stroke
  scale) and its backend the style weights as attributes, so each group of
  jobs runs through a *view* (``Stylizer.with_options``): a shallow copy of the
  model's Stylizer and backend that shares the loaded network and compiled
  graphs but has its own options. Concurrent requests with different options
  never see each other's, and a job whose batch fails is retried alone, so one
  bad request cannot fail another.

``Metrics`` counts requests by endpoint and status, their latency (a
histogram), the queue depth and the images finished per second, for
``GET /metrics`` (Prometheus text format).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastnst.checkpoint import read_info
from fastnst.errors import FastNSTError, UnknownName, first_line
from fastnst.images import stack_pixels
from fastnst.serve.config import ServeConfig
from fastnst.styles import resolve_style
from fastnst.stylize.stylizer import Stylizer

log = logging.getLogger(__name__)


class Busy(FastNSTError):
    """The service holds as many requests as it may; ``retry_after`` is a guess in whole seconds."""

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(f"the server is busy; retry in {retry_after} s")


@dataclass(frozen=True)
class Options:
    """One request's look: ``style`` None (the model's first style) or (N,) weights summing to 1."""

    strength: float = 1.0
    preserve_color: bool = False
    stroke_scale: float = 1.0
    style: tuple[float, ...] | None = None


class ServedModel:
    """One model file, loaded once: its name (the file stem), styles, thumbnails and shared ``Stylizer``."""

    def __init__(self, path: str | Path, stylizer: Stylizer) -> None:
        self.path, self.name, self.stylizer = Path(path), Path(path).stem, stylizer
        self.style_names = stylizer.style_names
        thumbnails = read_info(path).thumbnails if self.path.suffix == ".safetensors" else ()
        self.thumbnails = tuple(f"data:image/jpeg;base64,{t}" for t in thumbnails) or (None,) * len(self.style_names)

    @classmethod
    def load(cls, path: str | Path, backend: str, device: str) -> ServedModel:
        return cls(path, Stylizer(path, backend=backend, device=device))

    def describe(self) -> dict:
        """What ``GET /v1/models`` lists for the model."""
        styles = [{"name": n, "thumbnail": t} for n, t in zip(self.style_names, self.thumbnails)]
        return {"name": self.name, "styles": styles, "default_style": self.style_names[0]}

    def style_weights(self, style: str | None, style_mix: str | None) -> tuple[float, ...] | None:
        """``style`` (a name or index) or ``style_mix`` as weights; ``UnknownName`` or ``ConfigError`` if bad."""
        try:
            weights = resolve_style(self.style_names, style, style_mix, options=("style", "style_mix"))
        except UnknownName as exc:
            raise UnknownName(f"model {self.name!r}: {exc}") from None
        return None if weights is None else tuple(float(w) for w in weights)


def stylizer_view(base: Stylizer, options: Options) -> Stylizer:
    """A Stylizer running ``base``'s loaded network with ``options``, leaving ``base`` and other views alone."""
    return base.with_options(strength=options.strength, preserve_color=options.preserve_color,
                             stroke_scale=options.stroke_scale, style_weights=options.style)


@dataclass(eq=False)
class Job:
    """One photo to stylize, (H, W, 3) uint8, and the future its (H, W, 3) uint8 result goes to."""

    model: ServedModel
    pixels: np.ndarray
    options: Options
    future: asyncio.Future
    cancelled: bool = False  # its request gave up (timeout): skip it if it has not started

    @property
    def key(self) -> tuple:
        """Jobs with equal keys may share one pass."""
        return self.model.name, self.pixels.shape, self.options


class Engine:
    """The models and the worker threads that run them; ``start`` before use, ``stop`` after."""

    def __init__(self, models: dict[str, ServedModel], config: ServeConfig) -> None:
        self.models, self.config = models, config
        first = next(iter(models.values())).stylizer
        requested = config.workers or max(m.stylizer.backend.default_streams for m in models.values())
        # As many workers as asked (or the largest default) if every model can run them; one on a GPU.
        self.workers = min(m.stylizer.stream_count(requested) for m in models.values()) \
            if first.device_type == "cpu" else 1
        self.batch_size = config.batch_size or first.default_batch_size
        self.metrics = Metrics()
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=config.queue_size)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.active = 0  # admitted requests not yet answered
        for model in models.values():
            model.stylizer.backend.set_streams(self.workers)
            model.stylizer.stylize_pixels(np.zeros((1, 16, 16, 3), np.uint8))  # compile now, not on a request
        log.info("serving %s with %d worker(s), batches of up to %d", ", ".join(models), self.workers,
                 self.batch_size)

    @classmethod
    def load(cls, config: ServeConfig) -> Engine:
        """Load every model of ``config`` (``ModelFileError`` or ``ConfigError`` for a bad one)."""
        models = {}
        for path in config.models:
            model = ServedModel.load(path, config.backend, config.device)
            models[model.name] = model
        return cls(models, config)

    def model(self, name: str | None) -> ServedModel:
        """The model called ``name`` (None: the first); ``UnknownName`` listing the models otherwise."""
        if name is None:
            return next(iter(self.models.values()))
        if name not in self.models:
            raise UnknownName(f"no model {name!r}; this server has {', '.join(self.models)}")
        return self.models[name]

    @property
    def queue_depth(self) -> int:
        """Jobs waiting for a worker."""
        return self._queue.qsize()

    # -- admission and submission ----------------------------------------------------------------

    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        """Hold one of the ``queue_size`` places for the duration of a request; ``Busy`` when none is free."""
        with self._lock:
            if self.active >= self.config.queue_size:
                raise Busy(self.retry_after())
            self.active += 1
        try:
            yield
        finally:
            with self._lock:
                self.active -= 1

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the work ahead divided among the workers, 1-60."""
        seconds = self.metrics.mean_compute() * self.active / self.workers
        return max(1, min(60, math.ceil(seconds)))

    async def stylize(self, model: ServedModel, pixels: np.ndarray, options: Options) -> np.ndarray:
        """(H, W, 3) uint8 → stylized (H, W, 3) uint8, computed on a worker thread."""
        job = Job(model, pixels, options, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except queue.Full:  # only when more than queue_size jobs were admitted, which admitted() prevents
            raise Busy(self.retry_after()) from None
        try:
            return await job.future
        finally:
            job.cancelled = True

    # -- the worker threads ----------------------------------------------------------------------

    def start(self) -> None:
        for i in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"fastnst-serve-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the jobs already queued, then end the threads (each waits at most ``timeout`` s)."""
        for _ in self._threads:
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=timeout)
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job, *self._gather()] if self.batch_size > 1 else [job]
            groups: dict[tuple, list[Job]] = {}
            for item in jobs:
                if item is not None and not item.cancelled:
                    groups.setdefault(item.key, []).append(item)
            for group in groups.values():
                self._run_group(group)
            if None in jobs:  # a stop signal came in with the batch: this round was the last
                return

    def _gather(self) -> list[Job | None]:
        """More jobs for a batch: whatever arrives within ``batch_wait_ms``, up to ``batch_size`` in all."""
        deadline = time.monotonic() + self.config.batch_wait_ms / 1000
        more: list[Job | None] = []
        while len(more) + 1 < self.batch_size and None not in more:
            try:
                more.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return more

    def _run_group(self, group: list[Job]) -> None:
        start = time.perf_counter()
        try:
            results = self.compute(group)
        except Exception as exc:  # noqa: BLE001 - one failed pass must fail its own requests only
            if len(group) > 1:
                for job in group:
                    self._run_group([job])
                return
            height, width = group[0].pixels.shape[:2]
            _settle(group[0], exc=exc if isinstance(exc, FastNSTError) else
                    FastNSTError(f"the network failed on a {width}x{height} photo ({first_line(exc)})"))
            return
        self.metrics.computed(len(group), time.perf_counter() - start)
        for job, result in zip(group, results):
            _settle(job, result=result)

    def compute(self, group: list[Job]) -> np.ndarray:
        """Stylize jobs of equal key in one pass: (B, H, W, 3) uint8."""
        first = group[0]
        view = stylizer_view(first.model.stylizer, first.options)
        return view.stylize_pixels(stack_pixels([job.pixels for job in group]))


def _settle(job: Job, result: np.ndarray | None = None, exc: BaseException | None = None) -> None:
    """Hand a result (or an exception) to the job's future, on its event loop's thread."""

    def settle() -> None:
        if job.future.done():
            return
        if exc is not None:
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)

    with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
        job.future.get_loop().call_soon_threadsafe(settle)


# -- metrics ----------------------------------------------------------------------------------------

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RATE_WINDOW = 60  # seconds over which images/s is averaged


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    total: int = 0
    sum: float = 0.0

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1
        self.total += 1
        self.sum += seconds


class Metrics:
    """Counters for ``GET /metrics``; thread-safe (updated by the event loop and the workers)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, _Histogram] = {}
        self.images = 0
        self._per_second: deque[list[int]] = deque()  # [whole second, images finished in it]
        self._compute = 0.0  # moving average of a pass's seconds per image
        self._started = time.monotonic()

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[endpoint, status] = self.requests.get((endpoint, status), 0) + 1
            self.latency.setdefault(endpoint, _Histogram()).observe(seconds)

    def computed(self, images: int, seconds: float) -> None:
        now = int(time.monotonic())
        with self._lock:
            self.images += images
            if self._per_second and self._per_second[-1][0] == now:
                self._per_second[-1][1] += images
            else:
                self._per_second.append([now, images])
            while self._per_second[0][0] <= now - RATE_WINDOW:
                self._per_second.popleft()
            each = seconds / images
            self._compute = each if self._compute == 0 else 0.8 * self._compute + 0.2 * each

    def mean_compute(self) -> float:
        return self._compute or 1.0

    def images_per_second(self) -> float:
        """Images finished per second over the last minute (or since the start, if sooner)."""
        now = time.monotonic()
        with self._lock:
            recent = sum(n for second, n in self._per_second if second > now - RATE_WINDOW)
        return recent / max(1.0, min(RATE_WINDOW, now - self._started))

    def render(self, queue_depth: int, active: int) -> str:
        """The Prometheus text exposition of everything counted so far."""
        lines = ["# HELP fastnst_requests_total HTTP requests answered, by endpoint and status.",
                 "# TYPE fastnst_requests_total counter"]
        with self._lock:
            for (endpoint, status), count in sorted(self.requests.items()):
                lines.append(f'fastnst_requests_total{{endpoint="{endpoint}",status="{status}"}} {count}')
            lines += ["# HELP fastnst_request_seconds Time from a request's arrival to its answer.",
                      "# TYPE fastnst_request_seconds histogram"]
            for endpoint, hist in sorted(self.latency.items()):
                label = f'endpoint="{endpoint}"'
                for bound, count in zip(LATENCY_BUCKETS, hist.counts):
                    lines.append(f'fastnst_request_seconds_bucket{{{label},le="{bound:g}"}} {count}')
                lines += [f'fastnst_request_seconds_bucket{{{label},le="+Inf"}} {hist.total}',
                          f"fastnst_request_seconds_sum{{{label}}} {hist.sum:.6f}",
                          f"fastnst_request_seconds_count{{{label}}} {hist.total}"]
            images = self.images
        gauges = [("queue_depth", "Jobs waiting for a worker.", queue_depth),
                  ("requests_in_flight", "Stylize requests admitted and not yet answered.", active),
                  ("images_per_second", f"Images stylized per second over the last {RATE_WINDOW} s.",
                   round(self.images_per_second(), 4))]
        for name, text, value in gauges:
            lines += [f"# HELP fastnst_{name} {text}", f"# TYPE fastnst_{name} gauge", f"fastnst_{name} {value}"]
        lines += ["# HELP fastnst_images_total Images stylized.", "# TYPE fastnst_images_total counter",
                  f"fastnst_images_total {images}"]
        return "\n".join(lines) + "\n"
