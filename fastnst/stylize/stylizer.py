"""``Stylizer``: a model loaded once, applied to arrays, tensors and PIL images of any size.

It loads a model through a backend (``fastnst.backends``), stylizes small
images whole (batched when sizes match) and large ones in tiles sharing
whole-image statistics (``fastnst.stylize.tiling``), then applies ``strength``
and ``preserve_color`` (``fastnst.color``). ``fastnst.stylize.stylize_files``
runs it over files, folders and globs.

Internally everything is numpy: images (B, 3, H, W) float32 0–1 for the
network, uint8 pixels for files, so the OpenVINO path runs without PyTorch.
``Stylizer(images)`` also takes and returns torch tensors.
"""

from __future__ import annotations

import copy
import logging
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from fastnst.backends import (
    AUTO,
    BACKENDS,
    Backend,
    as_array,
    backend_class,
    check_backend_options,
    choose_backend,
    like,
)
from fastnst.color import blend, check_strength, preserve_color
from fastnst.device import accelerator_possible, resolve_device, torchrun_rank
from fastnst.errors import ConfigError, FastNSTError
from fastnst.images import resize_array, to_float, to_rgb, to_uint8
from fastnst.models.spec import NormStats, norm_count
from fastnst.styles import describe, model_style_names, resolve_style
from fastnst.stylize.config import DEFAULT_GPU_BATCH, StylizeConfig, check_stroke_scale
from fastnst.stylize.tiling import (
    TILE_STATS,
    default_tile_size,
    exact_stats,
    min_tile_size,
    needs_tiling,
    plan,
    stylize_tiled,
    thumbnail_stats,
    tile_context,
)

log = logging.getLogger(__name__)


class Stylizer:
    """A model loaded once, ready to stylize many images of any size.

    ``model`` is a model file (fastnst ``.safetensors``, pytorch/examples
    ``.pth`` or exported ``.onnx``, loaded by ``backend``: ``auto`` picks one
    with ``fastnst.backends.choose_backend``), a ``TransformerNet`` (run by the
    torch backend) or a ready backend object. ``dtype`` goes to the backend
    (None: its default), ``channels_last`` and ``compile`` to torch. Images of
    more than ``tile_size``² pixels (default: from free memory) are stylized in
    tiles sharing ``tile_stats`` statistics (``exact`` by default, so tiling does
    not change the picture); ``strength`` 0–1 blends the result with the photo,
    ``preserve_color`` keeps the photo's colours (luminance transfer).
    ``style`` (a name or index) or ``style_mix`` (``"a=0.7,b=0.3"`` or a
    mapping) choose among a multi-style model's styles (default the first); the
    choice is set once on the backend (``backend.style``). ``stroke_scale`` S
    changes the size of the brush strokes (``stroke_scaled``): S > 1 larger, S < 1
    finer, 1 the model's own (the default).
    """

    def __init__(self, model, *, backend: str = AUTO, device: str = "auto", dtype: str | None = None,
                 channels_last: bool | None = None, compile: bool = False, tile_size: int | None = None,
                 tile_stats: str = "exact", strength: float = 1.0, preserve_color: bool = False,
                 style: int | str | None = None, style_mix: str | dict | None = None,
                 stroke_scale: float = 1.0) -> None:
        self.strength = check_strength(strength)
        self.stroke_scale = check_stroke_scale(stroke_scale)
        if tile_stats not in TILE_STATS:
            raise ConfigError(f"unknown tile_stats {tile_stats!r}; choose one of {', '.join(TILE_STATS)}")
        self.backend = _backend(model, backend, str(device), dtype, channels_last, compile)
        self.info = self.backend.info
        self.style_names = model_style_names(self.info.styles, self.info.spec.num_styles)
        chosen = resolve_style(self.style_names, style, style_mix)
        if chosen is not None or getattr(self.backend, "style", None) is None:  # keep a ready backend's own choice
            self.backend.style = chosen
        if self.info.spec.num_styles > 1:
            log.info("style: %s (the model has %s)", describe(self.backend.style, self.style_names),
                     ", ".join(self.style_names))
        self.context = tile_context(self.info.spec)
        self.tile_size = default_tile_size(self.backend.device) if tile_size is None else int(tile_size)
        if self.tile_size < min_tile_size(self.context):
            raise ConfigError(f"tile size {self.tile_size} is too small for this network (it needs {self.context} "
                              f"pixels of context a side); use at least {min_tile_size(self.context)}")
        self.tile_stats = tile_stats
        self.preserve_color = bool(preserve_color)

    def with_options(self, *, strength: float | None = None, preserve_color: bool | None = None,
                     stroke_scale: float | None = None, style_weights=None) -> Stylizer:
        """A view of this Stylizer with other options, sharing its loaded network; ``self`` is left alone.

        For servers running many requests with their own options at once: the
        view's options and its backend's ``style`` ((N,) weights summing to 1;
        None keeps this one's) are its own attributes, while the weights,
        compiled graphs and infer requests stay shared. None keeps an option.
        """
        view = copy.copy(self)
        view.backend = copy.copy(self.backend)
        if strength is not None:
            view.strength = check_strength(strength)
        if stroke_scale is not None:
            view.stroke_scale = check_stroke_scale(stroke_scale)
        if preserve_color is not None:
            view.preserve_color = bool(preserve_color)
        if style_weights is not None:
            view.backend.style = np.asarray(style_weights, np.float32)
        return view

    @classmethod
    def from_config(cls, config: StylizeConfig) -> Stylizer:
        return cls(config.model, backend=config.backend, device=_rank_device(config.device), dtype=config.dtype,
                   channels_last=config.channels_last, compile=config.compile, tile_size=config.tile_size,
                   tile_stats=config.tile_stats, strength=config.strength, preserve_color=config.preserve_color,
                   style=config.style, style_mix=config.style_mix, stroke_scale=config.stroke_scale)

    @property
    def device_type(self) -> str:
        """Where the network runs: ``"cpu"``, ``"cuda"`` or ``"mps"``."""
        return self.backend.device_type

    @property
    def default_batch_size(self) -> int:
        """Photos of equal size per pass when none is given: 1 on the CPU, ``DEFAULT_GPU_BATCH`` on accelerators."""
        return 1 if self.device_type == "cpu" else DEFAULT_GPU_BATCH

    def stream_count(self, requested: int | None, most: int | None = None) -> int:
        """Photos to compute at once, one core each (the one streams rule of stylize, video, Ray and serve).

        ``requested`` (``--streams``) when given, else the backend's
        ``default_streams`` capped at ``most`` (the photos there are: one photo
        alone runs fastest on all cores); always 1 when the backend cannot run
        from several threads at once.
        """
        if not self.backend.concurrent:
            return 1
        default = self.backend.default_streams if most is None else min(self.backend.default_streams, most)
        return requested or max(1, default)

    def __call__(self, images):
        """(B, 3, H, W) or (3, H, W) float in 0–1 (numpy or torch) → stylized, same shape and kind, clamped to 0–1."""
        batch = as_array(images)
        single = batch.ndim == 3
        if single:
            batch = batch[None]
        out = self.stylize(batch, np.empty(batch.shape, np.float32))
        result = like(images, out[0] if single else out)
        if type(images).__module__.startswith("torch"):
            result = result.to(images.device)
        return result

    def stylize_image(self, image: Image.Image) -> Image.Image:
        """Stylize one PIL image (converted to RGB); the result has exactly its size."""
        pixels = np.asarray(to_rgb(image), dtype=np.uint8)[None]
        return Image.fromarray(self.stylize_pixels(pixels)[0])

    def stylize_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 photos of one size → (B, H, W, 3) uint8 stylized: what image files hold."""
        out = np.empty_like(pixels)
        self.stylize(pixels.transpose(0, 3, 1, 2), out.transpose(0, 3, 1, 2))
        return out

    def stylize(self, images: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Stylize a batch of equal-size images into ``out`` and return it.

        ``images`` (B, 3, H, W) uint8 0–255 or float 0–1; ``out`` the same shape,
        uint8 (quantised like ``to_uint8``) or float (clamped 0–1); either may be a
        strided view of pixel-interleaved memory. Images over ``tile_size``² pixels
        are tiled one at a time; smaller ones run as one batch.
        """
        height, width = images.shape[-2:]
        if self.stroke_scale != 1:
            for image, target in zip(images, out):
                result = self.stroke_scaled(to_float(np.ascontiguousarray(image)))
                target[...] = to_uint8(result) if out.dtype == np.uint8 else result
            return out
        if needs_tiling(height, width, self.tile_size):
            for image, target in zip(images, out):
                stylize_tiled(image, target, tile_size=self.tile_size, context=self.context,
                              stats=self.tile_norm_stats(image), process=self._process)
            return out
        result = self._process(to_float(np.ascontiguousarray(images)))
        out[...] = to_uint8(result) if out.dtype == np.uint8 else result
        return out

    def stroke_scaled(self, image: np.ndarray) -> np.ndarray:
        """One (3, H, W) float 0–1 image with strokes ``stroke_scale`` times larger, clamped, same size.

        S > 1: the photo is stylized at 1/S of its size and the result enlarged —
        the painting's strokes come out S times larger — and the full-resolution
        stylization's finest detail (what its 1/S-size copy loses) is added back so
        edges stay sharp (1 + 1/S² passes). S < 1: stylized at 1/S times the size
        and reduced (1/S² passes). Colour and strength apply to the result.
        """
        height, width = image.shape[-2:]
        scaled = (max(1, round(height / self.stroke_scale)), max(1, round(width / self.stroke_scale)))
        styled = resize_array(self._styled(resize_array(image, scaled)), (height, width))
        if self.stroke_scale > 1:
            fine = self._styled(image)
            styled += fine - resize_array(resize_array(fine, scaled), (height, width))
        return self._finish(image[None], styled[None])[0]

    def _styled(self, image: np.ndarray) -> np.ndarray:
        """The network's raw output for one (3, H, W) float image (unclamped), tiled when it is large."""
        if not needs_tiling(*image.shape[-2:], self.tile_size):
            return as_array(self.backend.run(image[None]))[0]
        out = np.empty(image.shape, np.float32)
        return stylize_tiled(image, out, tile_size=self.tile_size, context=self.context,
                             stats=self.tile_norm_stats(image),
                             process=lambda tile, stats: as_array(self.backend.run(tile, norm_stats=stats)))

    def tile_norm_stats(self, image: np.ndarray) -> NormStats:
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

    def _process(self, content: np.ndarray, norm_stats: NormStats | None = None) -> np.ndarray:
        """Network, then colour and strength: (B, 3, h, w) float32 0–1 → (B, 3, h, w) float32 clamped to 0–1."""
        return self._finish(content, as_array(self.backend.run(content, norm_stats=norm_stats)))

    def _finish(self, content: np.ndarray, styled: np.ndarray) -> np.ndarray:
        """Colour and strength on the network's output, then clamped to 0–1 (in place where possible).

        A non-finite output (NaN or infinite values: broken weights, or a runtime
        fault) is an error for this image rather than a black picture reported done.
        """
        if not np.isfinite(styled).all():
            raise FastNSTError("the network produced NaN or infinite values for this image (corrupt weights or a "
                               "runtime fault); try --backend torch or another model file")
        if self.preserve_color:
            styled = preserve_color(content, styled)
        if self.strength < 1.0:
            styled = blend(content, styled, self.strength)
        return np.clip(styled, 0, 1, out=styled)


def _backend(model, backend: str, device: str, dtype: str | None, channels_last: bool | None,
             compile: bool) -> Backend:
    """The backend for ``model``: a network (torch), a model file (``backend``, ``auto`` chosen here) or itself."""
    transformer = sys.modules.get("fastnst.models.transformer")  # a network can only exist if it was imported
    if transformer is not None and isinstance(model, transformer.TransformerNet):
        from fastnst.backends.torch import TorchBackend

        check_backend_options("torch", dtype, channels_last, compile)
        return TorchBackend(model, device, dtype=dtype or "fp32", channels_last=channels_last, compile=compile)
    if not isinstance(model, (str, Path)):
        return model
    check_backend_options(backend, dtype, channels_last, compile)
    if backend == AUTO:
        backend, why = choose_backend(model, device, dtype == "fp16" or channels_last is not None or compile)
        log.info("backend auto: %s (%s)", backend, why)
    options = {"channels_last": channels_last, "compile": compile}
    extra = {k: v for k, v in options.items() if k in BACKENDS[backend].options and v is not None}
    return backend_class(backend).from_file(model, device=device, dtype=dtype, **extra)


def _rank_device(device: str) -> str:
    """Under torchrun, ``auto``/``cuda`` without an index mean this process's own GPU (``LOCAL_RANK``)."""
    _, world, local = torchrun_rank()
    if world == 1 or device not in ("auto", "cuda") or (device == "auto" and not accelerator_possible()):
        return device
    return f"cuda:{local}" if resolve_device("auto").type == "cuda" else device
