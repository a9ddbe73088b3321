"""``VideoConfig``: every option of ``fastnst video``, validated once.

The library functions that take it (``fastnst.video.stylize_video``) trust it:
every check of an option lives here, in ``__post_init__``. Whether PyAV and
OpenCV are installed is not an option; ``fastnst.video.io.require`` checks that
when a run starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fastnst.backends import AUTO
from fastnst.errors import ConfigError
from fastnst.stylize.config import check_shared

# x264's constant rate factor: 18 is the customary "visually transparent" setting (0 lossless, 51 worst).
DEFAULT_CRF = 18
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
# How much of the previous stylized frame (warped by optical flow) each new frame keeps where the flow is
# reliable. 0.7 came out of scripts/bench_video.py's measurement (see fastnst.video.temporal): a quarter to a
# third of per-frame stylization's warping error, the frames' style loss within 3% of per-frame's.
DEFAULT_TEMPORAL_BLEND = 0.7
# A killed run resumes at the last finished segment of this many seconds (see fastnst.video.pipeline).
DEFAULT_SEGMENT_SECONDS = 10.0


@dataclass(frozen=True)
class VideoConfig:
    """Options of ``fastnst video``; see ``fastnst video --help`` for each."""

    model: str
    inputs: tuple[str, ...]
    output_dir: str
    backend: str = AUTO  # see ``fastnst.backends.choose_backend``
    device: str = "auto"
    dtype: str | None = None  # None: the backend's default
    style: str | None = None  # multi-style models: a style name or index; None: the first style
    style_mix: str | None = None  # "starry=0.7,wave=0.3": a blend of the model's styles
    strength: float = 1.0
    preserve_color: bool = False
    stroke_scale: float = 1.0
    max_size: int | None = None  # long side of the output in pixels; None: the input's size
    batch_size: int | None = None  # None: 1 on the CPU, 8 on GPUs (``Stylizer.default_batch_size``)
    streams: int | None = None  # CPU: frames computed at once, one core each; None: the backend's default
    overwrite: bool = False
    crf: int = DEFAULT_CRF
    preset: str = "medium"
    temporal_blend: float = DEFAULT_TEMPORAL_BLEND  # 0: every frame stylized on its own
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS
    report: str | None = None

    def __post_init__(self) -> None:
        check_shared(self, "video files or folders of videos")
        if self.max_size is not None and self.max_size < 16:
            raise ConfigError(f"--max-size must be at least 16 pixels for a video, got {self.max_size}")
        if not 0 <= self.crf <= 51:
            raise ConfigError(f"--crf must be within 0..51 (0 lossless, {DEFAULT_CRF} visually transparent, "
                              f"higher smaller files), got {self.crf}")
        if self.preset not in X264_PRESETS:
            raise ConfigError(f"unknown --preset {self.preset!r}; choose one of {', '.join(X264_PRESETS)}")
        if not (math.isfinite(self.temporal_blend) and 0 <= self.temporal_blend < 1):
            raise ConfigError(f"--temporal-blend must be within 0..1 (0 off, {DEFAULT_TEMPORAL_BLEND} default; "
                              f"1 would freeze the first frame), got {self.temporal_blend}")
        if not (math.isfinite(self.segment_seconds) and self.segment_seconds > 0):
            raise ConfigError(f"--segment-seconds must be a positive number of seconds, got {self.segment_seconds}")
