"""``VideoConfig``: every option of ``fastnst video``, validated once.

The library functions that take it (``fastnst.video.stylize_video``) trust it:
every check of an option lives here, in ``__post_init__``. Whether PyAV and
OpenCV are installed is not an option; ``fastnst.video.io.require`` checks that
when a run starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fastnst.backends import AUTO, check_backend_options
from fastnst.color import check_strength
from fastnst.device import check_device
from fastnst.errors import ConfigError
from fastnst.stylize.config import check_stroke_scale

# x264's constant rate factor: 18 is the customary "visually transparent" setting (0 lossless, 51 worst).
DEFAULT_CRF = 18
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
# How much of the previous stylized frame (warped by optical flow) each new frame keeps where the flow is
# reliable. 0.6 came out of scripts/bench_video.py's sweep (see fastnst.video.temporal): it roughly halves
# the warping error of per-frame stylization while the frames' style loss stays within a few percent.
DEFAULT_TEMPORAL_BLEND = 0.6
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
        from fastnst.styles import parse_style_mix

        object.__setattr__(self, "inputs", tuple(str(i) for i in self.inputs))
        if not self.inputs:
            raise ConfigError("no inputs given: name video files or folders of videos to stylize")
        if self.style is not None and self.style_mix is not None:
            raise ConfigError("give --style or --style-mix, not both")
        if self.style_mix is not None:
            parse_style_mix(self.style_mix)
        check_backend_options(self.backend, self.dtype, None, False)
        check_device(self.device)
        object.__setattr__(self, "strength", check_strength(self.strength))
        object.__setattr__(self, "stroke_scale", check_stroke_scale(self.stroke_scale))
        if self.max_size is not None and self.max_size < 16:
            raise ConfigError(f"--max-size must be at least 16 pixels, got {self.max_size}")
        for name in ("batch_size", "streams"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
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
