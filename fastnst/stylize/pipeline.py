"""Stylizing a photo library: decode, stylize, encode, with nothing lost and memory flat.

One process loads the model once. Worker threads decode the next photos and
encode finished ones while the network computes (Pillow and torch release the
GIL), with a bounded number of photos in flight, so memory stays flat over any
number of files. On accelerators photos of equal size are batched; on the CPU
``streams`` > 1 stylizes several photos at once, one core each. A photo too large
for one pass is tiled and runs alone on all cores. Each output is
written under a temporary name and renamed, an output that exists is skipped,
and a bad input is reported in one line and skipped, so a killed run resumes
where it stopped and loses nothing.

A run never hangs silently: a photo that has been decoding, computing or
encoding for ``stall_seconds`` (``--stall-warning``, default 120 s) is named on
stderr with how long it has waited, and again at every doubling of that time;
the run keeps waiting (a huge tiled photo on a slow machine may legitimately
take that long).

No PyTorch here: photos are numpy arrays from decoding to encoding.
"""

from __future__ import annotations

import errno
import logging
import sys
import time
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from fastnst.device import torchrun_rank
from fastnst.errors import FastNSTError
from fastnst.files import atomic_path, lock_folder, show_path
from fastnst.images import stack_pixels
from fastnst.stylize.config import StylizeConfig
from fastnst.stylize.inputs import Job, Shard, discover, prepare_output_dir, remove_temporaries, resolve_shard
from fastnst.stylize.photo import Record, decode, encode, failure_reason, is_complete
from fastnst.stylize.stylizer import Stylizer

log = logging.getLogger(__name__)

LOCK_NAME = ".fastnst-lock"


@dataclass
class StylizeReport:
    """What a run did: how many outputs it wrote and skipped (already there), and each failure with its reason."""

    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, reason)
    report_path: Path | None = None


def tally(report: StylizeReport, record: Record, warn: bool = True) -> None:
    """Count one input's ``record`` into ``report``; a failure is also one warning line naming the input."""
    if record.status == "done":
        report.done += 1
    elif record.status == "skipped":
        report.skipped += 1
    else:
        report.failed.append((record.input, record.reason))
        if warn:
            log.warning("%s: %s", show_path(record.input), record.reason)


@dataclass
class Plan:
    """What a stylize run will do, decided before any photo is read: shared by every runner (local, cluster).

    ``jobs`` are this shard's photos to stylize, ``failures`` the inputs refused
    before reading (a pattern matching nothing, two inputs writing one output, ...),
    ``report_path`` this shard's report file (None: no report).
    """

    output_dir: Path
    shard: Shard
    jobs: list[Job]
    failures: list[tuple[str, str]]
    report_path: Path | None
    lock: ExitStack = field(default_factory=ExitStack, repr=False)

    @property
    def total(self) -> int:
        return len(self.jobs) + len(self.failures)

    def close(self) -> None:
        """Release the output folder's lock (also on garbage collection and at process exit)."""
        self.lock.close()

    def __enter__(self) -> Plan:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def plan(config: StylizeConfig) -> Plan:
    """Prepare the output folder, lock it for this run and list the run's jobs: ``with plan(config) as job:``.

    The output folder must be writable; a second run on it (the same shard)
    gets one line and nothing is touched; half-written files a killed run left
    are removed. Raises ``FastNSTError`` before any work when one of these fails.
    """
    output_dir = prepare_output_dir(config.output_dir)
    shard = resolve_shard(config.shard)
    lock = ExitStack()
    lock.enter_context(lock_folder(output_dir, LOCK_NAME if shard.count == 1 else
                                   f"{LOCK_NAME}-shard{shard.index}of{shard.count}"))
    try:
        found = discover(config.inputs, output_dir, config.format, shard)
    except BaseException:
        lock.close()
        raise
    removed = remove_temporaries(output_dir, shard)
    if removed:
        log.info("removed %d half-written file(s) left by an interrupted run", removed)
    return Plan(output_dir, shard, found.jobs, found.failures, report_path(config.report, shard), lock)


def stylize_files(config: StylizeConfig, stylizer: Stylizer | None = None) -> StylizeReport:
    """Stylize every input of ``config`` into ``config.output_dir``; bad inputs are reported, not fatal.

    Raises ``FastNSTError`` before any work if the output folder cannot be
    written or the model cannot be loaded.
    """
    with plan(config) as job:
        stylizer = stylizer or Stylizer.from_config(config)
        batch_size = config.batch_size or stylizer.default_batch_size
        streams = stylizer.stream_count(config.streams, most=len(job.jobs))
        stylizer.backend.set_streams(streams)
        show = sys.stderr.isatty() and torchrun_rank()[0] == 0
        with _Run(config, stylizer, batch_size, streams, job.report_path, show, job.total) as run:
            for source, reason in job.failures:
                run.finish(source, None, "failed", reason)
            run.process(job.jobs)
        return run.report


def report_path(path: str | None, shard: Shard) -> Path | None:
    """The JSON-lines report's path; shards each write their own (``report.shard2of4.jsonl``)."""
    if path is None:
        return None
    path = Path(path)
    return path if shard.count == 1 else path.with_name(f"{path.stem}.shard{shard.index}of{shard.count}{path.suffix}")


class _Batcher:
    """Groups decoded photos of equal size into batches of up to ``size``, holding at most ``window`` photos."""

    def __init__(self, size: int, max_pixels: int) -> None:
        self.size, self.max_pixels, self.window = size, max_pixels, 2 * size
        self.groups: OrderedDict[tuple[int, int], list] = OrderedDict()
        self.held = 0

    def add(self, job: Job, pixels: np.ndarray) -> list[list]:
        shape = pixels.shape[:2]
        group = self.groups.setdefault(shape, [])
        group.append((job, pixels))
        self.held += 1
        limit = max(1, min(self.size, self.max_pixels // (shape[0] * shape[1])))
        ready = []
        if len(group) >= limit:
            ready.append(self._pop(shape))
        while self.held > self.window:
            ready.append(self._pop(max(self.groups, key=lambda s: len(self.groups[s]))))
        return ready

    def flush(self) -> list[list]:
        return [self._pop(shape) for shape in list(self.groups)]

    def _pop(self, shape: tuple[int, int]) -> list:
        group = self.groups.pop(shape)
        self.held -= len(group)
        return group


class _Run:
    """One pass over the jobs: the thread pools, the progress bar, the report file and the tallies."""

    def __init__(self, config: StylizeConfig, stylizer: Stylizer, batch_size: int, streams: int,
                 report_path: Path | None, show: bool, total: int) -> None:
        self.config, self.stylizer, self.batch_size, self.streams = config, stylizer, batch_size, streams
        self.report = StylizeReport(report_path=report_path)
        self.report_path = report_path
        self.output_dir = Path(config.output_dir).resolve()
        self.show, self.total = show, total
        # Photos in flight: decoded and waiting, and stylized and waiting to be written.
        self.prefetch = config.workers + streams * batch_size
        self.write_queue = config.workers + streams
        self.disk_full: str | None = None
        self._stack = ExitStack()

    def __enter__(self) -> _Run:
        stack = self._stack
        self.records = stack.enter_context(open_report(self.report_path))
        self.bar = stack.enter_context(tqdm(total=self.total, desc="stylize", unit="img", disable=not self.show,
                                            dynamic_ncols=True))
        stack.enter_context(logging_redirect_tqdm([logging.getLogger("fastnst")]) if self.show else nullcontext())
        self.readers = ThreadPoolExecutor(self.config.workers, "fastnst-decode")
        self.writers = ThreadPoolExecutor(self.config.workers, "fastnst-encode")
        self.writing: deque[tuple[Job, tuple[int, int], int, Future]] = deque()
        self.computing: deque[tuple[list[Job], tuple[int, int], int, Future]] = deque()
        # ``--streams N``: N photos at once, one core each (the backend was told with ``set_streams``).
        # Compute runs on its own threads even for one stream, so this thread can watch for stalls.
        self.compute = ThreadPoolExecutor(self.streams, "fastnst-compute")
        return self

    def __exit__(self, *exc_info) -> bool | None:
        try:
            if exc_info[0] is None:
                self._drain_compute(0)
                self._drain_writes(0)
        finally:
            # Interrupted: drop queued work; a write already running still completes or leaves only a temporary.
            cancel = exc_info[0] is not None
            for pool in (self.readers, self.compute, self.writers):
                pool.shutdown(wait=True, cancel_futures=cancel)
            self.stylizer.backend.set_streams(1)  # back to one photo on all cores for whoever uses it next
        return self._stack.__exit__(*exc_info)

    def _wait(self, future: Future, what: str, names: list) -> object:
        """``future.result()``, saying on stderr which photo has waited how long every time the wait doubles."""
        start, limit = time.monotonic(), self.config.stall_seconds
        while True:
            try:
                return future.result(timeout=max(0.0, start + limit - time.monotonic()))
            except FutureTimeout:
                log.warning("%s: still %s after %.1f s (no result yet; if this repeats, the run may be stuck: "
                            "interrupt it with Ctrl-C and rerun, finished outputs are kept)",
                            ", ".join(str(n) for n in names), what, time.monotonic() - start)
                limit *= 2

    def finish(self, source: str | Path, target: Path | None, status: str, reason: str = "",
               size: tuple[int, int] | None = None, tiles: int = 0, log: bool = True) -> None:
        """Count one input, log it if it failed (unless ``log`` is False), add its line to the report and
        advance the bar."""
        record = Record(str(source), str(target) if target else None, status, reason,
                        *((size[1], size[0]) if size else (None, None)), tiles)
        tally(self.report, record, log)
        if self.records is not None:
            self.records.write(record)
        self.bar.update(1)
        if self.report.failed:
            self.bar.set_postfix(failed=len(self.report.failed), refresh=False)

    def process(self, jobs: list[Job]) -> None:
        pending = iter(jobs)
        decoding: deque[tuple[Job, Future]] = deque()
        batcher = _Batcher(self.batch_size, self.stylizer.tile_size ** 2)
        self._refill(pending, decoding)
        while decoding:
            job, future = decoding.popleft()
            self._refill(pending, decoding)
            try:
                pixels = self._wait(future, "decoding", [job.source])
            except Exception as exc:  # noqa: BLE001 - one odd file (a decoder bug) must not stop the library
                self.finish(job.source, None, "failed", failure_reason(exc, "decoding", job))
                continue
            for batch in batcher.add(job, pixels):
                self._stylize(batch)
        for batch in batcher.flush():
            self._stylize(batch)

    def _refill(self, pending, decoding: deque) -> None:
        """Start decoding until ``prefetch`` photos are queued; finished outputs are skipped unread.

        Once the disk is full, the rest of the jobs are counted as failed (one
        warning for all of them) instead of computed for nothing.
        """
        while len(decoding) < self.prefetch:
            job = next(pending, None)
            if job is None:
                return
            if self.disk_full:
                self._give_up(job, pending)
                return
            if not self.config.overwrite and is_complete(job.target):
                self.finish(job.source, job.target, "skipped")
                continue
            decoding.append((job, self.readers.submit(decode, job, self.config)))

    def _give_up(self, job: Job, pending) -> None:
        rest = [job, *pending]
        log.warning("%d photo(s) not stylized: the disk holding %s is full (%s); free some space and run the same "
                    "command again, finished outputs are kept", len(rest), show_path(self.output_dir), self.disk_full)
        for left in rest:
            self.finish(left.source, None, "failed", f"not stylized: the disk is full ({self.disk_full})", log=False)

    def _stylize(self, batch: list[tuple[Job, np.ndarray]]) -> None:
        """Stylize a batch of equal-size photos on a compute thread; a tiled photo runs alone (all cores)."""
        jobs = [job for job, _ in batch]
        arrays = [p for _, p in batch]
        pixels = stack_pixels(arrays)  # (B, H, W, 3) uint8
        del arrays
        batch.clear()  # the decoded arrays now live in ``pixels`` only
        shape = tuple(pixels.shape[1:3])
        tiles = self.stylizer.tiles(*shape)
        alone = tiles > 1  # a tiled photo's passes are each as large as memory allows: one at a time
        if alone:
            self._drain_compute(0)
        self.computing.append((jobs, shape, tiles, self.compute.submit(self.stylizer.stylize_pixels, pixels)))
        self._drain_compute(0 if alone else self.streams)

    def _drain_compute(self, keep: int) -> None:
        """Hand finished batches to the writers until at most ``keep`` are still computing."""
        while len(self.computing) > keep:
            jobs, shape, tiles, future = self.computing.popleft()
            try:
                arrays = self._wait(future, "computing", [job.source for job in jobs])
            except (RuntimeError, MemoryError, FastNSTError) as exc:  # e.g. out of memory: lose this batch, not the run
                for job in jobs:
                    self.finish(job.source, None, "failed", failure_reason(exc, "computing", job))
                continue
            for job, array in zip(jobs, arrays):
                self.writing.append((job, shape, tiles, self.writers.submit(encode, job, array, self.config,
                                                                            self.output_dir)))
            self._drain_writes(self.write_queue)

    def _drain_writes(self, keep: int) -> None:
        while len(self.writing) > keep:
            job, shape, tiles, future = self.writing.popleft()
            try:
                self._wait(future, "encoding", [job.source])
            except Exception as exc:  # noqa: BLE001 - an encoder bug on one photo must not stop the library
                if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    self.disk_full = exc.strerror or str(exc)
                self.finish(job.source, None, "failed", failure_reason(exc, "encoding", job))
            else:
                self.finish(job.source, job.target, "done", size=shape, tiles=tiles)


@contextmanager
def open_report(path: Path | None):
    """The report writer (``ReportWriter``, or None without ``path``), open for the whole run under a temporary
    name and renamed at the end: ``write(record)`` one ``Record`` per input."""
    if path is None:
        yield None
        return
    with atomic_path(path) as tmp:
        writer = ReportWriter(tmp, path)
        try:
            yield writer
        finally:
            writer.close()


class ReportWriter:
    """Writes the report's lines; a write that fails (a full disk) stops the writing, not the run, and the
    run ends with one error line naming the report (its temporary file removed) once the photos are done."""

    def __init__(self, tmp: Path, path: Path) -> None:
        self.path, self.error = path, None
        self.handle = open(tmp, "w", encoding="ascii")  # Record.to_json escapes everything else

    def write(self, record: Record) -> None:
        if self.error is None:
            try:
                self.handle.write(record.to_json() + "\n")
            except OSError as exc:
                self.error = exc.strerror or str(exc)

    def close(self) -> None:
        try:
            self.handle.close()
        except OSError as exc:
            self.error = self.error or exc.strerror or str(exc)
        if self.error is not None:
            raise FastNSTError(f"cannot write the report {show_path(self.path)} ({self.error}); the photos above "
                               "were processed, rerun with another --report (or free space) for the list")
