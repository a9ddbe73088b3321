"""Stylization: apply a trained model to tensors, PIL images and whole photo libraries.

``Stylizer`` loads a model once through a backend (``fastnst.backends``) and
stylizes images of any size: small ones whole (batched when sizes match),
large ones in tiles sharing whole-image statistics (``fastnst.tiling``), then
applies ``strength`` and ``preserve_color`` (``fastnst.color``).
``fastnst.pipeline.stylize_files`` runs it over files, folders and globs.

Tensors are RGB, (B, 3, H, W) or (3, H, W); float 0–1, or uint8 0–255 for the
file pipeline, which never holds a float copy of a whole large photo.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastnst.backends import (
    AUTO,
    BACKEND_CHOICES,
    BACKEND_DTYPES,
    BACKEND_OPTIONS,
    Backend,
    backend_class,
    choose_backend,
)
from fastnst.backends.torch import TorchBackend
from fastnst.color import blend, preserve_color
from fastnst.device import DEVICE_CHOICES
from fastnst.errors import ConfigError
from fastnst.images import DEFAULT_MAX_PIXELS, to_float, to_rgb, to_uint8
from fastnst.inputs import FORMATS, Shard
from fastnst.models.transformer import NormStats, TransformerNet
from fastnst.styles import describe, model_style_names, parse_style_mix, resolve_style
from fastnst.tiling import (
    exact_stats,
    min_tile_size,
    needs_tiling,
    norm_count,
    plan,
    stylize_tiled,
    thumbnail_stats,
    tile_context,
)

log = logging.getLogger(__name__)

# Memory of one eager fp32 forward pass of the default network, per pixel (1,223 B measured at 1024²).
# The default tile size gives one pass at most MEMORY_SHARE of the free memory (an eighth: a tiled
# photo may hold up to three graphs' buffers at once on the ONNX runtimes, and several photos are in flight),
# within [MIN_DEFAULT_TILE, MAX_DEFAULT_TILE]; 1024 (about 1 GB a pass) when free memory is unknown.
FORWARD_BYTES_PER_PIXEL = 1250
MEMORY_SHARE = 0.125
MIN_DEFAULT_TILE, MAX_DEFAULT_TILE = 1024, 4096
# Batching on accelerators only. On the CPU a batch is no faster than its photos one by one, and
# oneDNN may round a batch of N differently from N single images in the last bit, which would
# make a resumed run's bytes depend on its batches.
DEFAULT_GPU_BATCH = 8
# Where tiles get their InstanceNorm statistics (see ``fastnst.tiling``). The default is exact
# where the backend can measure it (torch), else the thumbnail's.
TILE_STATS = ("exact", "thumbnail")


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
    tile_size: int | None = None  # None: from free memory (``default_tile_size``)
    tile_stats: str | None = None  # None: exact where the backend can, else thumbnail
    strength: float = 1.0
    preserve_color: bool = False
    workers: int = 2
    streams: int | None = None  # photos computed at once, one core each; None: ``default_streams``
    shard: tuple[int, int] | None = None  # None: torchrun's RANK/WORLD_SIZE if set, else everything
    report: str | None = None
    style: str | None = None  # multi-style models: a style name or index; None: the first style
    style_mix: str | None = None  # "starry=0.7,wave=0.3": a blend of the model's styles

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(str(i) for i in self.inputs))
        if self.style is not None and self.style_mix is not None:
            raise ConfigError("give --style or --style-mix, not both")
        if self.style_mix is not None:
            parse_style_mix(self.style_mix)
        if not self.inputs:
            raise ConfigError("no inputs given: name image files, folders or patterns to stylize")
        check_backend_options(self.backend, self.dtype, self.channels_last, self.compile)
        if self.format not in FORMATS:
            raise ConfigError(f"unknown format {self.format!r}; choose one of {', '.join(FORMATS)}")
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"--quality must be 1–100, got {self.quality}")
        if self.max_size is not None and self.max_size < 1:
            raise ConfigError(f"--max-size must be a positive number of pixels, got {self.max_size}")
        if self.device.split(":")[0] not in DEVICE_CHOICES:
            raise ConfigError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICE_CHOICES)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.tile_size is not None and self.tile_size < 64:
            raise ConfigError(f"--tile-size must be at least 64 pixels, got {self.tile_size}")
        if self.tile_stats is not None and self.tile_stats not in TILE_STATS:
            raise ConfigError(f"unknown --tile-stats {self.tile_stats!r}; choose one of {', '.join(TILE_STATS)}")
        if not 0.0 <= self.strength <= 1.0:
            raise ConfigError(f"--strength must be within 0..1 (1 = full style, 0 = the photo), got {self.strength}")
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        if self.streams is not None and self.streams < 1:
            raise ConfigError(f"--streams must be at least 1, got {self.streams}")
        if self.compile and (self.streams or 1) > 1:
            raise ConfigError("--compile runs one photo at a time on all cores (compilation is not thread-safe); "
                              "drop --streams")
        if self.shard is not None:
            object.__setattr__(self, "shard", tuple(self.shard))
            Shard(*self.shard)


def check_backend_options(backend: str, dtype: str | None, channels_last: bool | None, compile: bool) -> None:
    """A one-line ``ConfigError`` when ``backend`` is unknown or does not take the options given."""
    if backend not in BACKEND_CHOICES:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    dtypes = sorted({d for values in BACKEND_DTYPES.values() for d in values})
    if dtype is not None and dtype not in dtypes:
        raise ConfigError(f"unknown dtype {dtype!r}; choose one of {', '.join(dtypes)}")
    if backend == AUTO:
        return
    options = BACKEND_OPTIONS.get(backend, ())
    if dtype is not None and dtype not in BACKEND_DTYPES.get(backend, ()):
        takes = f"takes {', '.join(BACKEND_DTYPES[backend])}" if backend in BACKEND_DTYPES else \
            "takes none: an ONNX file's precision is its own (fastnst export --fp16)"
        raise ConfigError(f"--dtype {dtype} is not an option of the {backend} backend ({takes}); drop it or "
                          "choose another --backend")
    given = [name for name, value in (("--channels-last", channels_last is not None), ("--compile", compile))
             if value and name.lstrip("-").replace("-", "_") not in options]
    if given:
        raise ConfigError(f"{' and '.join(given)}: torch backend options, not options of the {backend} backend; drop "
                          f"them or use --backend torch")


def free_memory(device: torch.device) -> int | None:
    """Bytes free for a forward pass on ``device``: CUDA's free memory, the OS's available memory, or None."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as meminfo:
                for line in meminfo:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def default_tile_size(device: torch.device) -> int:
    """The side of the largest square one forward pass may take: ``MEMORY_SHARE`` of free memory, 64-px steps.

    20 GiB available gives 1408 (a 2 MP pass: 1080p runs whole, larger photos
    are tiled); a 6000×4000 photo then peaks at a few GB (scripts/bench_stylize.py).
    """
    free = free_memory(device)
    if free is None:
        return MIN_DEFAULT_TILE
    side = int(math.sqrt(free * MEMORY_SHARE / FORWARD_BYTES_PER_PIXEL)) // 64 * 64
    return max(MIN_DEFAULT_TILE, min(MAX_DEFAULT_TILE, side))


def _rank_device(device: str) -> str:
    """Under torchrun, ``auto``/``cuda`` without an index mean this process's own GPU (``LOCAL_RANK``)."""
    local = os.environ.get("LOCAL_RANK")
    if local is None or device not in ("auto", "cuda") or not torch.cuda.is_available():
        return device
    return f"cuda:{int(local)}"


class Stylizer:
    """A model loaded once, ready to stylize many images of any size.

    ``model`` is a model file (fastnst ``.safetensors``, pytorch/examples
    ``.pth`` or exported ``.onnx``, loaded by ``backend``: ``auto`` picks one
    with ``fastnst.backends.choose_backend``), a ``TransformerNet`` (run by the
    torch backend) or a ready backend object. ``dtype`` goes to the torch and
    openvino backends (None: their default), ``channels_last`` and ``compile``
    to torch. Images of more than ``tile_size``²
    pixels (default: from free memory, ``default_tile_size``) are stylized in
    tiles sharing ``tile_stats`` statistics (default ``exact`` where the backend
    can measure them, so tiling does not change the picture); ``strength`` 0–1
    blends the result with the photo, ``preserve_color`` keeps the photo's
    colours (luminance transfer). ``style`` (a name or index) or ``style_mix``
    (``"a=0.7,b=0.3"`` or a mapping) choose among a multi-style model's styles
    (``fastnst.styles.resolve_style``; default the first); the choice is set
    once on the backend (``backend.style``).
    """

    def __init__(self, model: str | Path | TransformerNet | Backend, *, backend: str = AUTO,
                 device: str | torch.device = "auto", dtype: str | None = None, channels_last: bool | None = None,
                 compile: bool = False, tile_size: int | None = None, tile_stats: str | None = None,
                 strength: float = 1.0, preserve_color: bool = False, style: int | str | None = None,
                 style_mix: str | dict | None = None) -> None:
        if not 0.0 <= strength <= 1.0:
            raise ConfigError(f"strength must be within 0..1, got {strength}")
        if tile_stats is not None and tile_stats not in TILE_STATS:
            raise ConfigError(f"unknown tile_stats {tile_stats!r}; choose one of {', '.join(TILE_STATS)}")
        if isinstance(model, TransformerNet):
            check_backend_options("torch", dtype, channels_last, compile)
            self.backend = TorchBackend(model, device, dtype=dtype or "fp32", channels_last=channels_last,
                                        compile=compile)
        elif isinstance(model, (str, Path)):
            check_backend_options(backend, dtype, channels_last, compile)
            if backend == AUTO:
                torch_only = dtype == "fp16" or channels_last is not None or compile
                backend, why = choose_backend(model, str(device), torch_only)
                log.info("backend auto: %s (%s)", backend, why)
            options = {"dtype": dtype, "channels_last": channels_last, "compile": compile}
            extra = {k: v for k, v in options.items() if k in BACKEND_OPTIONS.get(backend, ()) and v is not None}
            self.backend = backend_class(backend).from_file(model, device=device, **extra)
        else:
            self.backend = model
        self.info = self.backend.info
        self.style_names = model_style_names(self.info.styles, self.info.spec.num_styles)
        chosen = resolve_style(self.style_names, style, style_mix)
        if chosen is not None or not hasattr(self.backend, "style"):  # keep a ready backend's own choice
            self.backend.style = chosen
        if self.info.spec.num_styles > 1:
            log.info("style: %s (the model has %s)", describe(self.backend.style, self.style_names),
                     ", ".join(self.style_names))
        self.context = tile_context(self.info.spec)
        if tile_size is None:
            tile_size = default_tile_size(self.device)
        if tile_stats is None:
            tile_stats = "exact" if hasattr(self.backend, "region_sums") else "thumbnail"
        if tile_size < min_tile_size(self.context):
            raise ConfigError(f"tile size {tile_size} is too small for this network (it needs {self.context} pixels "
                              f"of context a side); use at least {min_tile_size(self.context)}")
        if tile_stats == "exact" and not hasattr(self.backend, "region_sums"):
            raise ConfigError(f"--tile-stats exact needs a backend that measures statistics tile by tile; "
                              f"the {self.backend.name} backend does not: use --tile-stats thumbnail")
        self.tile_size = tile_size
        self.tile_stats = tile_stats
        self.strength = float(strength)
        self.preserve_color = bool(preserve_color)

    @classmethod
    def from_config(cls, config: StylizeConfig) -> Stylizer:
        return cls(config.model, backend=config.backend, device=_rank_device(config.device), dtype=config.dtype,
                   channels_last=config.channels_last, compile=config.compile, tile_size=config.tile_size,
                   tile_stats=config.tile_stats, strength=config.strength, preserve_color=config.preserve_color,
                   style=config.style, style_mix=config.style_mix)

    @property
    def device(self) -> torch.device:
        """Where the network runs (CPU for backends that do not say)."""
        return torch.device(getattr(self.backend, "device", "cpu"))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) or (3, H, W) float in 0–1 → stylized, same shape, clamped to 0–1, on the input's device."""
        single = images.dim() == 3
        batch = images[None] if single else images
        out = self.stylize(batch.cpu(), torch.empty(batch.shape, dtype=torch.float32))
        out = out.to(images.device)
        return out[0] if single else out

    def stylize_image(self, image: Image.Image) -> Image.Image:
        """Stylize one PIL image (converted to RGB); the result has exactly its size."""
        pixels = torch.from_numpy(np.array(to_rgb(image), dtype=np.uint8)).permute(2, 0, 1)[None]
        out = self.stylize(pixels, self.empty_like_pixels(pixels))
        return Image.fromarray(out[0].permute(1, 2, 0).numpy())

    @staticmethod
    def empty_like_pixels(batch: torch.Tensor) -> torch.Tensor:
        """An uninitialised uint8 (B, 3, H, W) with pixel-interleaved (HWC) memory, as image files want it."""
        b, _, h, w = batch.shape
        return torch.empty((b, h, w, 3), dtype=torch.uint8).permute(0, 3, 1, 2)

    def stylize(self, images: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Stylize a batch of equal-size CPU images into ``out`` and return it.

        ``images`` (B, 3, H, W) uint8 0–255 or float 0–1; ``out`` the same shape,
        uint8 (quantised like ``to_pil``) or float (clamped 0–1). Images over
        ``tile_size``² pixels are tiled one at a time; smaller ones run as one batch.
        """
        height, width = images.shape[-2:]
        if needs_tiling(height, width, self.tile_size):
            for image, target in zip(images, out):
                stylize_tiled(image, target, tile_size=self.tile_size, context=self.context,
                              stats=self.tile_norm_stats(image), process=self._process)
            return out
        result = self._process(to_float(images))
        out.copy_(to_uint8(result) if out.dtype == torch.uint8 else result)
        return out

    def tile_norm_stats(self, image: torch.Tensor) -> NormStats:
        """The statistics every tile of ``image`` (3, H, W) is normalised with, as ``tile_stats`` asks."""
        if self.tile_stats == "exact":
            return exact_stats(image, tile_size=self.tile_size, context=self.context,
                               count=norm_count(self.info.spec), region_sums=self.backend.region_sums)
        return thumbnail_stats(image, tile_size=self.tile_size, norm_stats=self.backend.norm_stats)

    def tiles(self, height: int, width: int) -> int:
        """How many forward passes an image of this size takes (1 unless it is tiled)."""
        if not needs_tiling(height, width, self.tile_size):
            return 1
        return len(plan(height, width, self.tile_size, self.context))

    def _process(self, content: torch.Tensor, norm_stats: NormStats | None = None) -> torch.Tensor:
        """Network, then colour and strength: (B, 3, h, w) float 0–1 → (B, 3, h, w) float clamped to 0–1."""
        styled = self.backend.run(content, norm_stats=norm_stats)
        if self.preserve_color:
            styled = preserve_color(content, styled)
        if self.strength < 1.0:
            styled = blend(content, styled, self.strength)
        return styled.clamp_(0, 1)


def default_batch_size(stylizer: Stylizer) -> int:
    """Batch size when none is given: 1 on the CPU, ``DEFAULT_GPU_BATCH`` on accelerators."""
    return 1 if stylizer.device.type == "cpu" else DEFAULT_GPU_BATCH


def default_streams(stylizer: Stylizer) -> int:
    """Photos computed at once when ``--streams`` is not given.

    OpenVINO on the CPU: one per core, as OpenVINO throughput streams (6.3
    against 4.5 img/s for one photo on both cores at 481×321, 2 cores). Torch: 1
    (with glibc keeping freed memory, one photo on all cores measured as fast as
    one photo per core: 2.99 against 2.76 img/s). Everything else: 1.
    """
    if getattr(stylizer.backend, "name", "") == "openvino" and stylizer.device.type == "cpu":
        return max(1, torch.get_num_threads())
    return 1
