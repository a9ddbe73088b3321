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

The tile size itself comes from memory: ``default_tile_size`` gives one pass at
most an eighth of the free memory.

Images are numpy arrays (3, H, W): uint8 0–255 or float 0–1 in, uint8 or float
0–1 out (a torch tensor works where only slicing is done: ``stylize_tiled``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fastnst.errors import ConfigError
from fastnst.images import resize_array, to_float, to_uint8
from fastnst.models.spec import SIZE_MULTIPLE, NormStats, TransformerSpec, padded_size

# Memory of one eager fp32 forward pass of the default network, per pixel (1,223 B measured at 1024²).
# The default tile size gives one pass at most MEMORY_SHARE of the free memory (an eighth: a tiled
# photo may hold up to three graphs' buffers at once on the ONNX runtimes, and several photos are in flight),
# within [MIN_DEFAULT_TILE, MAX_DEFAULT_TILE]; 1024 (about 1 GB a pass) when free memory is unknown.
FORWARD_BYTES_PER_PIXEL = 1250
MEMORY_SHARE = 0.125
MIN_DEFAULT_TILE, MAX_DEFAULT_TILE = 1024, 4096
# Where tiles get their InstanceNorm statistics: exact (the default, wherever the backend can add them
# up tile by tile: every backend can) or measured on a downscaled copy.
TILE_STATS = ("exact", "thumbnail")


def free_memory(device) -> int | None:
    """Bytes free for a forward pass on ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a torch device): that
    GPU's free memory (the current one's for ``"cuda"``), the OS's available memory (Linux), or None."""
    device_type = getattr(device, "type", str(device).split(":")[0])
    if device_type == "cuda":
        import torch

        return torch.cuda.mem_get_info(torch.device(device))[0]
    if device_type == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as meminfo:
                for line in meminfo:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def default_tile_size(device) -> int:
    """The side of the largest square one forward pass may take: ``MEMORY_SHARE`` of free memory, 64-px steps.

    20 GiB available gives 1408 (a 2 MP pass: 1080p runs whole, larger photos
    are tiled); a 6000×4000 photo then peaks at a few GB (scripts/bench_stylize.py).
    """
    free = free_memory(device)
    if free is None:
        return MIN_DEFAULT_TILE
    side = int(math.sqrt(free * MEMORY_SHARE / FORWARD_BYTES_PER_PIXEL)) // 64 * 64
    return max(MIN_DEFAULT_TILE, min(MAX_DEFAULT_TILE, side))


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
    """Whether an image is over the ``tile_size``² pixels one forward pass may take (counted as the network
    pads it: a 1-pixel-high strip costs 8 rows)."""
    return padded_size(height) * padded_size(width) > tile_size * tile_size


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
    # A thin image is padded to at least MIN_SIZE (and a multiple of 4) across: that padded size, not the
    # image's, is what a pass costs, so a 1-pixel-high strip does not get 8 times the budget.
    if height < tile_size:
        limit_w = budget // padded_size(height) // SIZE_MULTIPLE * SIZE_MULTIPLE
    elif width < tile_size:
        limit_h = budget // padded_size(width) // SIZE_MULTIPLE * SIZE_MULTIPLE
    rows, cols = split(height, limit_h, context), split(width, limit_w, context)
    return [Tile(y0, y1, x0, x1, cy0, cy1, cx0, cx1) for y0, y1, cy0, cy1 in rows for x0, x1, cx0, cx1 in cols]


def stats_shape(height: int, width: int, tile_size: int) -> tuple[int, int]:
    """Size of the downscaled copy the statistics are measured on: at most ``tile_size``² pixels, same aspect."""
    if not needs_tiling(height, width, tile_size):
        return height, width
    scale = math.sqrt(tile_size * tile_size / (height * width))
    return max(1, int(height * scale)), max(1, int(width * scale))


def downscale(image, shape: tuple[int, int]) -> np.ndarray:
    """(3, H, W) uint8 or float 0–1 → (1, 3, h, w) float32 0–1, antialiased (``fastnst.images.resize_array``).

    A uint8 image is resized as 8-bit pixels, so no float copy of a large photo is made.
    """
    return to_float(resize_array(np.asarray(image), shape)[None])


RegionSums = Callable[[np.ndarray, NormStats, tuple[int, int, int, int]], tuple[np.ndarray, np.ndarray, int]]


def exact_stats(image, *, tile_size: int, context: int, count: int,
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
            s1, s2, n = region_sums(to_float(np.asarray(image[:, t.y0:t.y1, t.x0:t.x1])[None]), known, region)
            total = s1 if total is None else total + s1
            total_sq = s2 if total_sq is None else total_sq + s2
            pixels += n
        mean = np.asarray(total, np.float64) / pixels
        var = np.maximum(np.asarray(total_sq, np.float64) / pixels - mean * mean, 0)
        known.append((mean.astype(np.float32)[None], var.astype(np.float32)[None]))
    return known


Process = Callable[[np.ndarray, NormStats], np.ndarray]


def thumbnail_stats(image, *, tile_size: int, norm_stats: Callable[[np.ndarray], NormStats]) -> NormStats:
    """Statistics measured on the image downscaled to ``tile_size``² pixels: one small pass, approximate.

    The network is not scale-invariant, so these differ from the full image's by
    a few percent per layer: no seams (every tile shares them), but a slightly
    different rendering than an untiled pass (``scripts/bench_stylize.py``).
    """
    height, width = image.shape[-2:]
    return norm_stats(downscale(image, stats_shape(height, width, tile_size)))


def stylize_tiled(image, out, *, tile_size: int, context: int, stats: NormStats, process: Process):
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
        out[:, t.cy0:t.cy1, t.cx0:t.cx1] = to_uint8(core) if str(out.dtype).endswith("uint8") else core
    return out
