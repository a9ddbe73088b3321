"""``StylizeConfig``: every option of ``fastnst stylize``, validated once.

The library functions that take it (``stylize_files``, ``Stylizer.from_config``)
trust it: every check of an option lives here, in ``__post_init__``.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastnst.backends import AUTO, check_backend_options
from fastnst.color import check_strength
from fastnst.device import check_device
from fastnst.errors import ConfigError
from fastnst.images import DEFAULT_MAX_PIXELS
from fastnst.stylize.inputs import FORMATS, Shard
from fastnst.stylize.tiling import TILE_STATS

# Batching on accelerators only. On the CPU a batch is no faster than its photos one by one, and
# oneDNN may round a batch of N differently from N single images in the last bit, which would
# make a resumed run's bytes depend on its batches.
DEFAULT_GPU_BATCH = 8
# How long a photo may compute (or decode, or encode) before the run says it is still waiting.
DEFAULT_STALL_SECONDS = 120.0
# --stroke-scale bounds: 8x larger strokes already stylize a 2000-px photo at 250 px; 4x finer costs 16 passes.
STROKE_SCALES = (0.25, 8.0)


def check_stroke_scale(value: float) -> float:
    """``value`` as a float when it is within ``STROKE_SCALES``, else a one-line ``ConfigError``."""
    low, high = STROKE_SCALES
    if not low <= value <= high:
        raise ConfigError(f"--stroke-scale must be within {low:g}..{high:g} (2: strokes twice as large, 0.5: half), "
                          f"got {value}")
    return float(value)


def check_shared(config, noun: str) -> None:
    """The checks ``StylizeConfig`` and ``VideoConfig`` share: inputs, style choice, look, runtime, sizes.

    ``noun`` names what the inputs are ("image files, folders or patterns").
    Normalises ``inputs`` to a tuple of str and ``strength``/``stroke_scale`` to floats.
    """
    from fastnst.styles import parse_style_mix

    object.__setattr__(config, "inputs", tuple(str(i) for i in config.inputs))
    if not config.inputs:
        raise ConfigError(f"no inputs given: name {noun} to stylize")
    if config.style is not None and config.style_mix is not None:
        raise ConfigError("give --style or --style-mix, not both")
    if config.style_mix is not None:
        parse_style_mix(config.style_mix)
    check_backend_options(config.backend, config.dtype, getattr(config, "channels_last", None),
                          getattr(config, "compile", False))
    check_device(config.device)
    object.__setattr__(config, "strength", check_strength(config.strength))
    object.__setattr__(config, "stroke_scale", check_stroke_scale(config.stroke_scale))
    for name in ("max_size", "batch_size", "streams"):
        if getattr(config, name) is not None and getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")


@dataclass(frozen=True)
class StylizeConfig:
    """Options of ``fastnst stylize``; see ``fastnst stylize --help`` for each."""

    model: str
    inputs: tuple[str, ...]
    output_dir: str
    backend: str = AUTO  # see ``fastnst.backends.choose_backend``
    device: str = "auto"
    dtype: str | None = None  # None: the backend's default (torch fp32; openvino bf16 where the CPU has it)
    channels_last: bool | None = None  # None: on for CUDA, off on the CPU (torch backend)
    compile: bool = False
    format: str = "same"
    quality: int = 95
    max_size: int | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    overwrite: bool = False
    batch_size: int | None = None  # None: 1 on the CPU, DEFAULT_GPU_BATCH on CUDA/MPS
    tile_size: int | None = None  # None: from free memory (``fastnst.stylize.tiling.default_tile_size``)
    tile_stats: str = "exact"
    strength: float = 1.0
    preserve_color: bool = False
    workers: int = 2
    streams: int | None = None  # photos computed at once, one core each; None: the backend's ``default_streams``
    shard: tuple[int, int] | None = None  # None: torchrun's RANK/WORLD_SIZE if set, else everything
    report: str | None = None
    style: str | None = None  # multi-style models: a style name or index; None: the first style
    style_mix: str | None = None  # "starry=0.7,wave=0.3": a blend of the model's styles
    stall_seconds: float = DEFAULT_STALL_SECONDS  # say so on stderr when a photo has waited this long
    stroke_scale: float = 1.0  # brush strokes this many times larger (< 1: finer)

    def __post_init__(self) -> None:
        check_shared(self, "image files, folders or patterns")
        if self.format not in FORMATS:
            raise ConfigError(f"unknown format {self.format!r}; choose one of {', '.join(FORMATS)}")
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"--quality must be 1–100, got {self.quality}")
        if self.tile_size is not None and self.tile_size < 64:
            raise ConfigError(f"--tile-size must be at least 64 pixels, got {self.tile_size}")
        if self.tile_stats not in TILE_STATS:
            raise ConfigError(f"unknown --tile-stats {self.tile_stats!r}; choose one of {', '.join(TILE_STATS)}")
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        if self.compile and (self.streams or 1) > 1:
            raise ConfigError("--compile runs one photo at a time on all cores (compilation is not thread-safe); "
                              "drop --streams")
        if not self.stall_seconds > 0:
            raise ConfigError(f"--stall-warning must be a positive number of seconds, got {self.stall_seconds}")
        if self.shard is not None:
            object.__setattr__(self, "shard", tuple(self.shard))
            Shard(*self.shard)
