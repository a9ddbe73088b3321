"""Reading and writing videos with PyAV (FFmpeg's libraries): probe, decode, encode segments, remux.

* ``probe`` opens a file, decodes its first frame and says what the run will
  write (``VideoInfo``), or raises ``FileError`` with the one reason a user reads
  (not a video, truncated, no video stream, no decoder, no frames).
* ``read_frames`` decodes every frame as (H, W, 3) uint8 RGB in the *upright*
  orientation: a display matrix (or the old ``rotate`` tag, which FFmpeg turns
  into one) is applied to the pixels, so the network sees the picture as a
  viewer does and the output needs no rotation flag (players that ignore the flag
  show it right too). Frames are scaled to ``--max-size`` (area-averaged), and
  odd sizes lose their last row or column, since H.264 in yuv420p needs even sizes.
* Timestamps: each frame keeps its own pts in the input stream's time base, so a
  variable frame rate survives exactly; a missing pts is filled in one nominal
  frame after the previous, a repeated one nudged forward one tick.
* ``SegmentWriter`` encodes frames to an H.264 (yuv420p, ``--crf``) MP4 segment
  with the input's time base and colour tags, ``remux`` joins the segments and
  copies the input's audio (and, where the container holds them, subtitles)
  packet for packet, interleaved by time: audio is never re-encoded; chapters
  are kept.

Containers: MP4, M4V, MOV and MKV are written as they came; others (WebM, AVI,
MPEG-TS, ...) become MP4, or MKV when their audio cannot go into MP4. PyAV is
imported only here and only when a run starts (``require``).
"""

from __future__ import annotations

import contextlib
import heapq
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cache
from pathlib import Path

import numpy as np

from fastnst.errors import ConfigError, FileError, first_line

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
                  ".flv", ".wmv", ".3gp", ".ogv", ".gif")
# Output containers by suffix (FFmpeg's muxer names); any other input becomes MP4 (or MKV, see ``_container``).
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
# What FFmpeg's demuxers log when a file stops early (they return what they could read without an error).
_TRUNCATION = ("ended prematurely", "partial file", "truncat")
INSTALL = "pip install fastnst[video]"


def require() -> None:
    """``ConfigError`` unless PyAV with an H.264 encoder is importable."""
    try:
        import av
    except ImportError:
        raise ConfigError(f"PyAV is not installed: {INSTALL} (or pip install av)") from None
    if "libx264" not in av.codecs_available:
        raise ConfigError(f"this PyAV build has no H.264 encoder (libx264): {INSTALL} for wheels that carry one")


def is_video_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` found out about one input and how its output will look."""

    path: Path
    suffix: str  # the output's suffix (container), see ``CONTAINERS``
    size: tuple[int, int]  # output (width, height): upright, scaled, even
    decode_size: tuple[int, int]  # (width, height) to convert each decoded frame to, before turning it upright
    quarter_turns: int  # counter-clockwise quarter turns that make a decoded frame upright (np.rot90's k)
    time_base: Fraction
    rate: Fraction  # nominal frames per second (the average for variable frame rates)
    frames: int  # estimated frame count (for the progress bar; 0 when unknown)
    colour: dict = field(default_factory=dict)  # the input's colorspace, range, primaries and transfer tags

    @property
    def step(self) -> int:
        """One nominal frame in time-base ticks."""
        return max(1, round(1 / (self.rate * self.time_base)))


@contextlib.contextmanager
def open_input(path: str | Path):
    """The input container, or ``FileError`` naming why FFmpeg cannot read the file."""
    import av

    try:
        container = av.open(str(path), metadata_errors="replace")
    except IsADirectoryError:
        raise FileError(path, "is a folder, not a video file") from None
    except FileNotFoundError:
        raise FileError(path, "no such file") from None
    except PermissionError:
        raise FileError(path, "cannot be read (permission denied)") from None
    except (av.error.InvalidDataError, av.error.EOFError):
        raise FileError(path, "not a video FFmpeg can read (not a video, or truncated before its index)") from None
    except (av.error.FFmpegError, OSError) as exc:
        raise FileError(path, f"cannot be opened ({first_line(exc)})") from None
    with container:
        yield container


def video_stream(container, path: str | Path):
    """The first real video stream (cover art is not one), or ``FileError``."""
    import av

    streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not streams:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        raise FileError(path, f"has no video stream (it holds {', '.join(kinds)}): nothing to stylize")
    stream = streams[0]
    if stream.codec_context is None:
        raise FileError(path, "its video codec is not supported: this FFmpeg has no decoder for it")
    return stream


def probe(path: Path, max_size: int | None) -> VideoInfo:
    """Open ``path``, decode its first frame and plan the output; ``FileError`` for anything unusable."""
    with open_input(path) as container:
        stream = video_stream(container, path)
        first = next(_decode(container, stream, path), None)
        if first is None:
            raise FileError(path, "its video stream has no frames")
        turns = round((first.rotation or 0) / 90) % 4
        upright = (first.width, first.height) if turns % 2 == 0 else (first.height, first.width)
        size = _even(upright, max_size)
        decode = size if max_size and max(upright) > max_size else upright  # scaled by swscale, else cropped
        decode = decode if turns % 2 == 0 else decode[::-1]
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        time_base = stream.time_base or 1 / rate
        frames = stream.frames or round(float(container.duration or 0) / 1e6 * rate)
        audio = [s.codec_context.name for s in container.streams.audio if s.codec_context is not None]
        colour = {name: int(getattr(first, name, 0) or 0)  # (older PyAV lacks primaries and transfer)
                  for name in ("colorspace", "color_range", "color_primaries", "color_trc")}
        return VideoInfo(path, _container(path, audio), size, decode, turns, Fraction(time_base),
                         Fraction(rate), int(frames), colour)


def _even(size: tuple[int, int], max_size: int | None) -> tuple[int, int]:
    """(width, height) scaled so the long side is at most ``max_size``, each side rounded down to even (>= 2)."""
    width, height = size
    if max_size and max(width, height) > max_size:
        scale = max_size / max(width, height)
        width, height = round(width * scale), round(height * scale)
    return max(2, width - width % 2), max(2, height - height % 2)


@cache
def _supported(format_name: str) -> frozenset[str]:
    import av

    with av.open(io.BytesIO(), "w", format=format_name) as probe_output:
        return frozenset(probe_output.supported_codecs)


def output_suffix(path: Path) -> str:
    """The output's suffix as planned before reading: the input's where it holds H.264, else .mp4."""
    suffix = path.suffix.lower()
    return suffix if suffix in CONTAINERS else ".mp4"


def _container(path: Path, audio_codecs: list[str]) -> str:
    """The output's suffix: ``output_suffix``, or .mkv where the audio cannot go into MP4."""
    suffix = output_suffix(path)
    if path.suffix.lower() in CONTAINERS or all(codec in _supported("mp4") for codec in audio_codecs):
        return suffix
    return ".mkv"


def _decode(container, stream, path) -> Iterator:
    """Decoded frames of ``stream``; a decoder error becomes ``FileError``."""
    import av

    try:
        yield from container.decode(stream)
    except (av.error.FFmpegError, OSError) as exc:
        raise FileError(path, f"decoding failed: the file is damaged or truncated ({first_line(exc)})") from None


def read_frames(info: VideoInfo, skip: int = 0) -> Iterator[tuple[int, int, np.ndarray | None]]:
    """(index, pts, pixels) for every frame in order; pixels (H, W, 3) uint8 RGB upright, None for the first
    ``skip`` frames (decoded to keep the place, not converted). ``FileError`` if the file ends early."""
    with open_input(info.path) as container, _ffmpeg_errors() as errors:
        stream = video_stream(container, info.path)
        stream.thread_type = "AUTO"
        previous = None
        for index, frame in enumerate(_decode(container, stream, info.path)):
            previous = next_pts(frame.pts, previous, info.step)
            yield index, previous, None if index < skip else _pixels(frame, info)
            if index % 64 == 0:
                _check_truncation(errors, info.path)
        _check_truncation(errors, info.path)


def _check_truncation(errors: list, path: Path) -> None:
    """``FileError`` if FFmpeg logged that the file ends early; the log is emptied (memory stays flat)."""
    import av.logging

    stopped = [message.strip() for level, _, message in errors if level <= av.logging.ERROR
               and any(word in message.lower() for word in _TRUNCATION)]
    del errors[:]
    if stopped:
        raise FileError(path, f"the file is truncated (FFmpeg: {stopped[0]}); nothing was written for it")


@contextlib.contextmanager
def _ffmpeg_errors():
    """The (level, name, message) errors FFmpeg logs meanwhile, from any thread (its decoders run their own):
    collected here rather than printed, since a damaged file can log one per frame."""
    import av.logging

    level = av.logging.get_level()
    if level is None or level < av.logging.ERROR:
        av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture(False) as logs:
            yield logs
    finally:
        av.logging.set_level(level)


def next_pts(pts: int | None, previous: int | None, step: int) -> int:
    """A frame's pts, repaired: missing → one ``step`` after ``previous``; not after ``previous`` → one tick later."""
    if pts is None:
        return 0 if previous is None else previous + step
    if previous is not None and pts <= previous:
        return previous + 1
    return pts


def _pixels(frame, info: VideoInfo) -> np.ndarray:
    """One decoded frame → (H, W, 3) uint8 RGB: scaled (area-averaged), turned upright, cropped to even."""
    width, height = info.decode_size
    rgb = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA",
                           src_color_range=frame.color_range or None)
    if info.quarter_turns:
        rgb = np.rot90(rgb, info.quarter_turns)
    return np.ascontiguousarray(rgb[:info.size[1], :info.size[0]])


class SegmentWriter:
    """Encodes frames of one video into an H.264 MP4 file at ``path`` (the caller makes it atomic)."""

    def __init__(self, path: Path, info: VideoInfo, crf: int, preset: str) -> None:
        import av

        self.av, self.info = av, info
        self.output = av.open(str(path), "w", format="mp4")
        self.stream = self.output.add_stream("libx264", rate=info.rate)
        codec = self.stream.codec_context
        self.stream.width, self.stream.height = info.size
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = codec.time_base = info.time_base
        self.stream.options = {"crf": str(crf), "preset": preset}
        for name, value in info.colour.items():
            if name != "color_range" and value:
                setattr(codec, name, value)
        codec.color_range = 1  # limited ("tv") range: what players expect of yuv420p H.264
        # swscale knows these matrices; anything else (unspecified included) converts as BT.601, FFmpeg's default.
        known = info.colour.get("colorspace") in (1, 4, 5, 6, 7, 9)
        self.matrix = info.colour["colorspace"] if known else 5

    def write(self, pts: int, pixels: np.ndarray) -> None:
        """Encode one (H, W, 3) uint8 RGB frame shown at ``pts`` (input time-base ticks)."""
        frame = self.av.VideoFrame.from_ndarray(pixels, format="rgb24")
        frame = frame.reformat(format="yuv420p", dst_colorspace=self.matrix, dst_color_range=1)
        frame.pts, frame.time_base = pts, self.info.time_base
        self.output.mux(self.stream.encode(frame))

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        try:
            self.output.mux(self.stream.encode(None))
        finally:
            self.output.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # noqa: BLE001 - the file is being thrown away anyway
            self.output.close()


def remux(info: VideoInfo, segments: list[Path], target: Path) -> None:
    """Write ``target`` (already a temporary name): the video of the segment files joined, and the input's
    audio and subtitle packets copied unchanged, all interleaved by time; its chapters and main tags kept."""
    import av

    with open_input(info.path) as source, av.open(str(target), "w", format=CONTAINERS[info.suffix]) as output:
        with av.open(str(segments[0])) as first:
            video = output.add_stream_from_template(first.streams.video[0])
        video.codec_context.framerate = info.rate  # the nominal rate (MKV's default duration)
        copies = _copied_streams(source, output, info)
        output.metadata.update({k: v for k, v in source.metadata.items() if k in ("title", "creation_time",
                                                                                 "comment", "location")})
        chapters = source.chapters()
        if chapters:
            output.set_chapters(chapters)
        output.start_encoding()
        packets = [_segment_packets(segments, video, info)]
        if copies:
            packets.append(_source_packets(source, copies))
        for _, _, packet in heapq.merge(*packets, key=lambda item: item[:2]):
            output.mux(packet)


def _copied_streams(source, output, info: VideoInfo) -> dict[int, object]:
    """Output streams for the input's audio and subtitles (input index → output stream); others are skipped."""
    copies = {}
    for stream in source.streams:
        if stream.type not in ("audio", "subtitle"):
            if stream.type != "video":
                log.info("%s: %s stream %d not copied (only audio and subtitles are)", info.path, stream.type,
                         stream.index)
            continue
        name = stream.codec_context.name if stream.codec_context is not None else "unknown"
        if name not in _supported(CONTAINERS[info.suffix]):
            log.warning("%s: %s stream %d (%s) skipped: %s files cannot hold it", info.path, stream.type,
                        stream.index, name, info.suffix)
            continue
        copies[stream.index] = output.add_stream_from_template(stream)
        copies[stream.index].metadata.update({k: v for k, v in stream.metadata.items() if k in ("language", "title")})
    return copies


def _segment_packets(segments: list[Path], video, info: VideoInfo) -> Iterator[tuple[float, int, object]]:
    """The segments' video packets, in the output stream's time base, with decode times and durations redone.

    Each segment comes from its own encoder, whose decode times reach back before
    its first frame by its own B-frame delay (a short last segment may have none):
    joined as they are, they would overlap or leave gaps. Instead, with D the
    largest reordering of the whole stream, packet i decodes at the (i - D)-th
    frame time, which keeps every decode time before its frame's and makes each
    step one frame's duration (what MP4 stores as sample durations). A frame lasts
    until the next one (the last, one nominal frame).
    """
    base = video.time_base
    times = [round(time / base) for path in segments for time in _segment_times(path)]  # decode order
    order = sorted(times)
    rank = {pts: position for position, pts in enumerate(order)}
    delay = max(index - rank[pts] for index, pts in enumerate(times))
    step = max(1, round(info.step * info.time_base / base))
    ends = [*order[1:], order[-1] + step]
    index = 0
    for path in segments:
        for packet, _ in _demuxed(path):
            pts = times[index]
            dts = order[index - delay] if index >= delay else order[0] - (delay - index) * step
            packet.pts, packet.dts, packet.duration = pts, dts, ends[rank[pts]] - pts
            packet.time_base, packet.stream = base, video
            index += 1
            yield float(dts * base), 0, packet


def _demuxed(path: Path) -> Iterator[tuple[object, Fraction]]:
    """A segment file's video packets with their presentation times in seconds (exact fractions)."""
    import av

    with av.open(str(path)) as container:
        for packet in container.demux(container.streams.video[0]):
            if packet.pts is not None and packet.dts is not None:  # not the demuxer's end-of-stream marker
                yield packet, packet.pts * packet.time_base


def _segment_times(path: Path) -> list[Fraction]:
    return [time for _, time in _demuxed(path)]


def _source_packets(source, copies: dict[int, object]) -> Iterator[tuple[float, int, object]]:
    """The input's packets of the copied streams, as they are, each pointed at its output stream."""
    for packet in source.demux(*[source.streams[index] for index in copies]):
        stamp = packet.dts if packet.dts is not None else packet.pts
        if stamp is None:  # the demuxer's end-of-stream marker
            continue
        packet.stream = copies[packet.stream.index]
        yield float(stamp * packet.time_base), 1, packet
