"""Stylizing images larger than one forward pass: overlapping tiles that share one set of statistics.

A forward pass needs memory in proportion to its pixel count (about 1 KB per
pixel for the default network in eager fp32), so an image of more than
``tile_size``² pixels is cut into tiles of at most that many pixels and each
tile is run on its own. Two things keep the tiles from showing:

* **Context.** A tile is its *core* plus ``context`` pixels of the real image
  on every side (fewer at the image border), where ``context`` is at least the
  network's receptive radius, and tiles start on the network's 4-pixel grid.
  Each core pixel then sees exactly the pixels and arithmetic it would see in
  one whole-image pass with the same statistics, so the cores are simply pasted
  side by side: the result equals the untiled pass up to float rounding and
  there is no seam to blend away (``tests/test_tiling.py`` checks it).
* **Statistics.** Every tile is normalised with the same InstanceNorm
  statistics instead of its own, so tiles cannot differ in tone. They come
  either exactly from the full image, added up tile by tile one layer at a time
  (``exact_stats``: about six extra passes, the default where the backend can),
  or from a copy of the image downscaled to ``tile_size``² pixels
  (``thumbnail_stats``: one small extra pass). The network is not
  scale-invariant, so the thumbnail's statistics are off and the picture's tone
  differs from an untiled one, evenly, without seams (25 dB at 2048² on real
  weights); ``exact`` reproduces the untiled pass.

Tensors are (3, H, W): uint8 0–255 or float 0–1 in, uint8 or float 0–1 out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fastnst.errors import ConfigError
from fastnst.images import to_float, to_uint8
from fastnst.models.transformer import SIZE_MULTIPLE, NormStats, TransformerSpec, padded_size


def receptive_radius(spec: TransformerSpec) -> int:
    """How many pixels away an input pixel can still change an output pixel.

    Each conv adds its half-width times its stride on the full-resolution grid:
    the two 9×9 convs 4 each, the 3×3 convs at half resolution 2 each and at full
    resolution 1 each, the 2 × ``num_residual`` 3×3 convs at quarter resolution 4
    each (14 + 8R), plus up to 3 pixels from where the stride-2 grid falls.
    Channel widths do not matter. The tiling tests measure it with gradients.
    """
    return 17 + 8 * spec.num_residual


def tile_context(spec: TransformerSpec) -> int:
    """Context each tile carries on every inner side: the receptive radius, rounded up to the 4-pixel grid."""
    radius = receptive_radius(spec)
    return -(-radius // SIZE_MULTIPLE) * SIZE_MULTIPLE


def min_tile_size(context: int) -> int:
    """The smallest ``tile_size`` that leaves a middle tile a core of at least 16 pixels."""
    return 2 * context + 16


def needs_tiling(height: int, width: int, tile_size: int) -> bool:
    """Whether an image is over the ``tile_size``² pixels one forward pass may take."""
    return height * width > tile_size * tile_size


@dataclass(frozen=True)
class Tile:
    """One forward pass: rows ``y0:y1`` and columns ``x0:x1`` go in, the core ``cy0:cy1, cx0:cx1`` is kept."""

    y0: int
    y1: int
    x0: int
    x1: int
    cy0: int
    cy1: int
    cx0: int
    cx1: int


def split(length: int, limit: int, context: int) -> list[tuple[int, int, int, int]]:
    """Cut ``0..length`` into cores on the 4-pixel grid; each core plus ``context`` a side spans <= ``limit``.

    Returns (start, stop, core_start, core_stop) per piece, cores in order and
    covering every pixel exactly once.
    """
    if length <= limit:
        return [(0, length, 0, length)]
    if limit < min_tile_size(context):
        raise ConfigError(f"tile size {limit} is too small for this network: tiles need {context} pixels of context "
                          f"on each side, so use at least {min_tile_size(context)}")
    pieces = 2
    while True:
        bounds = [0] + [SIZE_MULTIPLE * round(i * length / (SIZE_MULTIPLE * pieces)) for i in range(1, pieces)]
        bounds.append(length)
        spans = [(max(0, a - context), min(length, b + context), a, b) for a, b in zip(bounds, bounds[1:])]
        if all(b > a for _, _, a, b in spans) and all(stop - start <= limit for start, stop, _, _ in spans):
            return spans
        pieces += 1


def plan(height: int, width: int, tile_size: int, context: int) -> list[Tile]:
    """The tiles covering a ``height`` × ``width`` image, each at most ``tile_size``² pixels.

    Tiles are square (``tile_size`` a side) unless the image is narrower than
    that in one direction, when they stretch along the other to use the same
    pixel budget.
    """
    limit_h = limit_w = tile_size
    budget = tile_size * tile_size
    if height < tile_size:
        limit_w = budget // height // SIZE_MULTIPLE * SIZE_MULTIPLE
    elif width < tile_size:
        limit_h = budget // width // SIZE_MULTIPLE * SIZE_MULTIPLE
    rows, cols = split(height, limit_h, context), split(width, limit_w, context)
    return [Tile(y0, y1, x0, x1, cy0, cy1, cx0, cx1) for y0, y1, cy0, cy1 in rows for x0, x1, cx0, cx1 in cols]


def stats_shape(height: int, width: int, tile_size: int) -> tuple[int, int]:
    """Size of the downscaled copy the statistics are measured on: at most ``tile_size``² pixels, same aspect."""
    if not needs_tiling(height, width, tile_size):
        return height, width
    scale = math.sqrt(tile_size * tile_size / (height * width))
    return max(1, int(height * scale)), max(1, int(width * scale))


def downscale(image: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) uint8 or float → (1, 3, h, w) float 0–1, antialiased (no float copy of the full image for uint8)."""
    if tuple(image.shape[-2:]) == shape:
        return to_float(image[None])
    return to_float(F.interpolate(image[None], size=shape, mode="bilinear", antialias=True, align_corners=False))


def norm_count(spec: TransformerSpec) -> int:
    """How many InstanceNorms the network has: three in the encoder, two per residual block, two in the decoder."""
    return 3 + 2 * spec.num_residual + 2


def region_moments(x: torch.Tensor, region: tuple[int, int, int, int], full_height: int
                   ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel sum and sum of squares (float64, (C,)) and pixel count of ``x`` (B, C, h, w) inside ``region``.

    ``region`` is (y0, y1, x0, x1) in full-resolution pixels of the padded input
    (multiples of 4); ``x`` may be at a lower resolution, ``full_height // h``
    times smaller, and the region is mapped to it. What ``region_sums`` of the
    backends return for ``exact_stats``.
    """
    factor = full_height // x.shape[-2]
    y0, y1, x0, x1 = (v // factor for v in region)
    values = x[..., y0:y1, x0:x1].double()
    count = values.shape[0] * values.shape[2] * values.shape[3]
    return values.sum(dim=(0, 2, 3)), values.square().sum(dim=(0, 2, 3)), count


RegionSums = Callable[[torch.Tensor, NormStats, tuple[int, int, int, int]], tuple[torch.Tensor, torch.Tensor, int]]


def exact_stats(image: torch.Tensor, *, tile_size: int, context: int, count: int,
                region_sums: RegionSums) -> NormStats:
    """The whole image's own InstanceNorm statistics, added up tile by tile: what an untiled pass would use.

    Layer ``k``'s statistics depend on those of the layers before it, so they
    are measured one layer at a time: a pass over the tiles with layers
    ``0..k-1`` fixed, counting each tile's core only (``region_sums``, see
    ``TorchBackend.region_sums``). Each pass stops at its layer, so the ``count``
    passes cost about 6 whole passes for the default network: exact, and slow.
    """
    height, width = image.shape[-2:]
    tiles = plan(height, width, tile_size, context)
    padded_h, padded_w = padded_size(height), padded_size(width)
    known: NormStats = []
    for _ in range(count):
        total = total_sq = None
        pixels = 0
        for t in tiles:
            # A core on the image's last row or column also counts the edge padding, as the untiled pass does.
            region = (t.cy0 - t.y0, (padded_h if t.cy1 == height else t.cy1) - t.y0,
                      t.cx0 - t.x0, (padded_w if t.cx1 == width else t.cx1) - t.x0)
            s1, s2, n = region_sums(to_float(image[None, :, t.y0:t.y1, t.x0:t.x1]), known, region)
            total = s1 if total is None else total + s1
            total_sq = s2 if total_sq is None else total_sq + s2
            pixels += n
        mean = total / pixels
        var = (total_sq / pixels - mean.square()).clamp_(min=0)
        known.append((mean.float()[None], var.float()[None]))
    return known


Process = Callable[[torch.Tensor, NormStats], torch.Tensor]


def thumbnail_stats(image: torch.Tensor, *, tile_size: int, norm_stats: Callable[[torch.Tensor], NormStats]
                    ) -> NormStats:
    """Statistics measured on the image downscaled to ``tile_size``² pixels: one small pass, approximate.

    The network is not scale-invariant, so these differ from the full image's by
    a few percent per layer: no seams (every tile shares them), but a slightly
    different rendering than an untiled pass (``scripts/bench_stylize.py``).
    """
    height, width = image.shape[-2:]
    return norm_stats(downscale(image, stats_shape(height, width, tile_size)))


def stylize_tiled(image: torch.Tensor, out: torch.Tensor, *, tile_size: int, context: int, stats: NormStats,
                  process: Process) -> torch.Tensor:
    """Stylize one large image tile by tile into ``out``, every tile normalised with ``stats``.

    ``image`` (3, H, W) uint8 or float 0–1; ``out`` (3, H, W) uint8 (filled with
    quantised pixels) or float; ``process(tile, stats)`` turns a (1, 3, h, w)
    float tile into the finished (1, 3, h, w) float 0–1 result. Only one tile is
    held in float at a time, so memory stays bounded.
    """
    height, width = image.shape[-2:]
    for t in plan(height, width, tile_size, context):
        result = process(to_float(image[None, :, t.y0:t.y1, t.x0:t.x1]), stats)
        core = result[0, :, t.cy0 - t.y0:t.cy1 - t.y0, t.cx0 - t.x0:t.cx1 - t.x0]
        out[:, t.cy0:t.cy1, t.cx0:t.cx1] = to_uint8(core) if out.dtype == torch.uint8 else core
    return out
