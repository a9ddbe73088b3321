"""Stylizing videos: decode, stylize, blend and encode at once, resumable segment by segment.

Each video runs as three stages joined by bounded queues, so at most a few
batches of frames are in memory whatever the length or resolution:

    reader thread  →  this thread (the network; ``streams`` frames at once on the CPU,
    (PyAV decode,      ``batch_size`` per pass on GPUs)  →  writer thread (temporal
    RGB, upright)                                         blend, H.264 encode)

**Resuming, segment by segment.** The writer cuts the output into segments of
``segment_seconds`` of frames (a fixed frame count), each encoded by a fresh
H.264 encoder into its own MP4 file in a hidden work folder beside the output
(``fastnst.video.resume``). A segment is finished when its file has been renamed
into place and its record written. A killed run loses at most the segment it
was writing: the next run decodes past the finished frames without converting
or stylizing them (decoding is hundreds of frames per second, the network a few),
restores the temporal blend's state, and carries on. When all frames are done,
the segments' packets are joined and the input's audio and subtitle packets
copied alongside into a temporary file that is renamed to the output; then the
work folder goes. Segments rather than one long file because an H.264 stream
cannot be appended to after its writer dies; the cost is one keyframe per
segment (10 s by default).

A bad input (not a video, truncated, no video stream, no decoder, no frames)
is one warning naming the file; its work folder is removed and the run goes on.
Any other failure keeps the finished segments so that a rerun resumes.

No PyTorch here: frames are numpy arrays (H, W, 3) uint8 RGB from decoding to encoding.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from fastnst.errors import FileError, first_line
from fastnst.files import atomic_path, lock_folder, remove_temporaries_of
from fastnst.images import stack_pixels
from fastnst.stylize.inputs import Discovery, Job, MediaKind, discover, prepare_output_dir
from fastnst.stylize.pipeline import LOCK_NAME, StylizeReport, open_report, tally
from fastnst.stylize.stylizer import Stylizer
from fastnst.video import io
from fastnst.video.config import VideoConfig
from fastnst.video.resume import Segment, WorkFolder

log = logging.getLogger(__name__)

_END = object()  # the end of a stage's frames
# Options that change the pixels of a segment: a resumed run must have the same ones.
_PIXEL_OPTIONS = ("backend", "device", "dtype", "style", "style_mix", "strength", "preserve_color", "stroke_scale",
                  "max_size", "crf", "preset", "temporal_blend")


# A video run counts like a photo run: outputs written, skipped (already there), failures with their reasons.
VideoReport = StylizeReport


@dataclass(frozen=True)
class Record:
    """One input's line in the report."""

    input: str
    output: str | None
    status: str  # done, skipped or failed
    reason: str = ""
    frames: int | None = None  # frames in the output
    resumed: int | None = None  # of which finished by an earlier, interrupted run
    width: int | None = None
    height: int | None = None
    seconds: float | None = None  # this run's wall time for the video

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v not in ("", None) or k in ("output", "status")},
                          ensure_ascii=True)


def stylize_video(config: VideoConfig, stylizer: Stylizer | None = None) -> VideoReport:
    """Stylize every video of ``config`` into ``config.output_dir``; bad inputs are reported, not fatal.

    Raises ``ConfigError`` if PyAV (or, for the temporal blend, OpenCV) is not
    installed, and ``FastNSTError`` before any work if the output folder cannot
    be written or the model cannot be loaded.
    """
    io.require()
    if config.temporal_blend > 0:
        from fastnst.video.temporal import import_cv2

        import_cv2()
    output_dir = prepare_output_dir(config.output_dir)
    with lock_folder(output_dir, LOCK_NAME):  # the lock ``fastnst stylize`` takes: one run writes a folder at a time
        found = discover(config.inputs, output_dir, kind=VIDEOS)
        stylizer = stylizer or Stylizer(config.model, backend=config.backend, device=config.device,
                                        dtype=config.dtype, strength=config.strength,
                                        preserve_color=config.preserve_color, style=config.style,
                                        style_mix=config.style_mix, stroke_scale=config.stroke_scale)
        return _run(config, stylizer, found)


def _run(config: VideoConfig, stylizer: Stylizer, found: Discovery) -> VideoReport:
    report = VideoReport(report_path=Path(config.report) if config.report else None)
    with open_report(report.report_path) as records, _Engine(config, stylizer, found.jobs) as engine:
        for source, reason in found.failures:
            _tally(report, records, Record(source, None, "failed", reason))
        for job in found.jobs:
            _tally(report, records, engine.stylize(job))
    return report


def _tally(report: VideoReport, records, record: Record) -> None:
    tally(report, record)
    if records is not None:
        records.write(record)


# Videos are found as ``fastnst stylize`` finds photos (files, folders mirrored, patterns; never an output over an
# input); each output keeps its input's container where it can hold H.264, else .mp4.
VIDEOS = MediaKind("video", io.VIDEO_SUFFIXES, io.is_video_file, lambda source, fmt: io.output_suffix(source),
                   lambda source: None)


class _Stop(Exception):
    """Another stage failed, or the run was interrupted: this stage ends without an error of its own."""


class _Stages:
    """Threads joined by bounded queues: the first error anywhere stops every stage and is raised by ``join``."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []

    def start(self, name: str, target, *args) -> None:
        def run() -> None:
            try:
                target(*args)
            except _Stop:
                pass
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises it
                self.errors.append(exc)
                self.stop.set()

        thread = threading.Thread(target=run, name=f"fastnst-{name}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def put(self, channel: queue.Queue, item) -> None:
        while not self.stop.is_set():
            try:
                return channel.put(item, timeout=0.1)
            except queue.Full:
                continue
        raise _Stop

    def get(self, channel: queue.Queue):
        while not self.stop.is_set():
            try:
                return channel.get(timeout=0.1)
            except queue.Empty:
                continue
        raise _Stop

    def join(self, quietly: bool = False) -> None:
        """Wait for every stage; raise the first error one of them had (unless ``quietly``)."""
        for thread in self.threads:
            thread.join()
        if self.errors and not quietly:
            raise self.errors[0]


class _Engine:
    """The model's compute threads and settings, shared by every video of a run."""

    def __init__(self, config: VideoConfig, stylizer: Stylizer, jobs: list[Job]) -> None:
        self.config, self.stylizer = config, stylizer
        self.claimed = {job.target for job in jobs}
        self.batch_size = config.batch_size or stylizer.default_batch_size
        self.streams = stylizer.stream_count(config.streams)
        self.show = sys.stderr.isatty()

    def __enter__(self) -> _Engine:
        self.stylizer.backend.set_streams(self.streams)
        self.compute = ThreadPoolExecutor(self.streams, "fastnst-compute")
        return self

    def __exit__(self, *exc_info) -> None:
        self.compute.shutdown(wait=True, cancel_futures=True)
        self.stylizer.backend.set_streams(1)

    def stylize(self, job: Job) -> Record:
        """One video from probe to finished output; failures are records, never exceptions."""
        try:
            info = io.probe(job.source, self.config.max_size)
        except FileError as exc:
            return Record(str(job.source), None, "failed", exc.reason)
        target = job.target.with_suffix(info.suffix)
        if target != job.target and target in self.claimed:
            return Record(str(job.source), None, "failed", f"its audio needs an MKV file, but {target} is another "
                                                           "input's output; stylize it separately")
        if target.exists() and job.source.exists() and os.path.samefile(target, job.source):
            return Record(str(job.source), None, "failed", f"its output {target} is the input itself; choose "
                                                           "another -o/--output-dir")
        if target.exists() and not self.config.overwrite:
            return Record(str(job.source), str(target), "skipped")
        remove_temporaries_of(target)
        work = WorkFolder(target, self._manifest(info))
        start = time.monotonic()
        try:
            frames, resumed = self._run(info, work, target)
        except FileError as exc:
            work.remove()
            return Record(str(job.source), None, "failed", exc.reason)
        except Exception as exc:  # noqa: BLE001 - one video's failure (an encoder error, memory) must not stop the run
            return Record(str(job.source), None, "failed", f"{type(exc).__name__}: {first_line(exc)} (finished "
                                                           "segments are kept: rerun to resume)")
        work.remove()
        return Record(str(job.source), str(target), "done", frames=frames, resumed=resumed, width=info.size[0],
                      height=info.size[1], seconds=round(time.monotonic() - start, 3))

    def _manifest(self, info: io.VideoInfo) -> dict:
        """What a video's segments depend on (see ``fastnst.video.resume``)."""
        source, model = info.path.stat(), Path(self.config.model).stat()
        return {"input": str(info.path.resolve()), "input_bytes": source.st_size, "input_mtime": source.st_mtime_ns,
                "model": str(Path(self.config.model).resolve()), "model_bytes": model.st_size,
                "model_mtime": model.st_mtime_ns, "segment_frames": self._segment_frames(info),
                "size": list(info.size), **{name: getattr(self.config, name) for name in _PIXEL_OPTIONS}}

    def _segment_frames(self, info: io.VideoInfo) -> int:
        return max(1, round(float(info.rate) * self.config.segment_seconds))

    def _run(self, info: io.VideoInfo, work: WorkFolder, target: Path) -> tuple[int, int]:
        """Stylize the frames the work folder lacks, then join everything into ``target``: (frames, resumed)."""
        done = work.finished()
        skip = done[-1].end if done else 0
        if skip:
            log.info("%s: resuming after %d finished segment(s) (%d frames)", info.path, len(done), skip)
        # Frames in memory: up to ``depth`` decoded, ``streams + 1`` batches computing, ``depth`` to be written.
        depth = self.batch_size * self.streams + 2
        decoded, styled = queue.Queue(depth), queue.Queue(depth)
        stages = _Stages()
        with _progress(info, skip, self.show) as bar:
            stages.start("decode", self._read, stages, info, skip, decoded)
            stages.start("encode", self._write, stages, info, work, done, styled, bar)
            try:
                self._compute(stages, decoded, styled)
            except _Stop:
                pass
            except BaseException:  # an interrupt, or the network failed: stop the other stages, then re-raise
                stages.stop.set()
                stages.join(quietly=True)
                raise
            stages.join()
        segments = work.finished()
        with atomic_path(target) as tmp:
            io.remux(info, [work.segment_path(s.index) for s in segments], tmp)
        return (segments[-1].end if segments else 0), skip

    def _read(self, stages: _Stages, info: io.VideoInfo, skip: int, decoded: queue.Queue) -> None:
        with contextlib.closing(io.read_frames(info, skip)) as frames:
            for index, pts, pixels in frames:
                if pixels is not None:
                    stages.put(decoded, (index, pts, pixels))
        stages.put(decoded, _END)

    def _compute(self, stages: _Stages, decoded: queue.Queue, styled: queue.Queue) -> None:
        """Batches of decoded frames through the network, ``streams`` at once, handed on in order."""
        pending: deque = deque()
        batch: list = []
        while True:
            item = stages.get(decoded)
            if item is not _END:
                batch.append(item)
            if batch and (item is _END or len(batch) == self.batch_size):
                pixels = stack_pixels([frame for _, _, frame in batch])
                pending.append((batch, self.compute.submit(self.stylizer.stylize_pixels, pixels)))
                batch = []
            while pending and (item is _END or len(pending) > self.streams):
                frames, future = pending.popleft()
                for (index, pts, content), result in zip(frames, future.result()):
                    stages.put(styled, (index, pts, content, result))
            if item is _END:
                break
        stages.put(styled, _END)

    def _write(self, stages: _Stages, info: io.VideoInfo, work: WorkFolder, done: list[Segment],
               styled: queue.Queue, bar) -> None:
        """Blend and encode frames, one segment file at a time; each finished segment is recorded."""
        blender = None
        if self.config.temporal_blend > 0:
            from fastnst.video.temporal import TemporalBlender

            blender = TemporalBlender(self.config.temporal_blend)
            if done:
                blender.restore(work.state(done[-1]))
        size = self._segment_frames(info)
        item = stages.get(styled)
        while item is not _END:
            number, first, count, last_pts = item[0] // size, item[0], 0, 0
            with atomic_path(work.segment_path(number)) as tmp:
                writer = io.SegmentWriter(tmp, info, self.config.crf, self.config.preset)
                try:
                    while item is not _END and item[0] // size == number:
                        index, last_pts, content, frame = item
                        writer.write(last_pts, blender(content, frame) if blender else frame)
                        count += 1
                        bar.update(1)
                        item = stages.get(styled)
                except BaseException:
                    writer.abort()
                    raise
                writer.close()
            work.finish(Segment(number, first, count, last_pts), blender.state() if blender else {})
        if blender is not None and blender.cuts:
            log.info("%s: %d scene cut(s): the temporal blend started afresh there", info.path, blender.cuts)


@contextlib.contextmanager
def _progress(info: io.VideoInfo, done: int, show: bool):
    """A frames/s bar with an ETA on a terminal (log lines printed above it); nothing otherwise."""
    bar = tqdm(total=info.frames or None, initial=done, desc=info.path.name, unit="frame", disable=not show,
               dynamic_ncols=True)
    redirect = logging_redirect_tqdm([logging.getLogger("fastnst")]) if show else contextlib.nullcontext()
    with bar, redirect:
        yield bar

