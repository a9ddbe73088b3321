"""Tiling: the receptive radius, the tile plan, and tiled results equal to whole-image ones (no seams)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fastnst.backends.torch import TorchBackend
from fastnst.errors import ConfigError
from fastnst.images import to_tensor, to_uint8
from fastnst.models.spec import norm_count
from fastnst.models.transformer import SPECS, TransformerNet, TransformerSpec
from fastnst.stylize import Stylizer
from fastnst.stylize.tiling import (
    downscale,
    exact_stats,
    min_tile_size,
    needs_tiling,
    plan,
    receptive_radius,
    split,
    stats_shape,
    stylize_tiled,
    tile_context,
)

from conftest import gradient_image, psnr

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("num_residual", [0, 2, 5])
def test_receptive_radius_matches_the_gradient_footprint(num_residual):
    torch.manual_seed(num_residual)
    net = TransformerNet(TransformerSpec(channels=(4, 4, 4), num_residual=num_residual)).eval()
    x = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        stats = net.compute_norm_stats(x)
    reach = 0
    for c in range(76, 84):  # every alignment of the output pixel to the 8-pixel grid of two stride-2 convs
        xx = x.clone().requires_grad_(True)
        net(xx, norm_stats=stats)[0, :, c, c].sum().backward()
        rows, cols = torch.nonzero(xx.grad[0].abs().sum(0), as_tuple=True)
        reach = max(reach, c - int(rows.min()), int(rows.max()) - c, c - int(cols.min()), int(cols.max()) - c)
    assert reach == receptive_radius(net.spec)
    assert tile_context(net.spec) % 4 == 0 and tile_context(net.spec) >= reach


@pytest.mark.parametrize("length,limit,context", [(100, 100, 44), (1000, 256, 44), (4000, 1024, 60), (517, 120, 44),
                                                  (20, 16, 0)])
def test_split_covers_every_pixel_once_within_the_limit(length, limit, context):
    spans = split(length, limit, context)
    cores = [(a, b) for _, _, a, b in spans]
    assert cores[0][0] == 0 and cores[-1][1] == length
    assert all(b0 == a1 for (_, b0), (a1, _) in zip(cores, cores[1:]))
    for start, stop, core_start, core_stop in spans:
        assert stop - start <= limit and start % 4 == 0 and start <= core_start < core_stop <= stop
        assert core_start - start == min(context, core_start) and stop - core_stop == min(context, length - core_stop)


def test_plan_respects_the_pixel_budget_and_stretches_narrow_images():
    tiles = plan(3000, 2000, 1024, 60)
    assert all((t.y1 - t.y0) * (t.x1 - t.x0) <= 1024**2 for t in tiles)
    covered = np.zeros((3000, 2000), np.int32)
    for t in tiles:
        covered[t.cy0:t.cy1, t.cx0:t.cx1] += 1
    assert (covered == 1).all()
    narrow = plan(300, 20000, 1024, 60)  # 300 rows: tiles 300 × ~3500 instead of 300 × 1024
    assert len({(t.y0, t.y1) for t in narrow}) == 1 and len(narrow) == 6
    assert not needs_tiling(1, 4000, 1024) and needs_tiling(1025, 1024, 1024)
    assert stats_shape(4000, 6000, 1024) == (836, 1254)


def test_too_small_a_tile_is_a_config_error(light_net):
    with pytest.raises(ConfigError, match="too small"):
        split(500, 90, 44)
    with pytest.raises(ConfigError, match=f"at least {min_tile_size(tile_context(light_net.spec))}"):
        Stylizer(light_net, tile_size=64)


def _tiled(net, image, tile_size, stats, out):
    def process(tile, s):
        with torch.no_grad():
            return net(tile, norm_stats=s).clamp(0, 1)

    return stylize_tiled(image, out, tile_size=tile_size, context=tile_context(net.spec), stats=stats,
                         process=process)


def test_tiles_reproduce_the_whole_image_pass_with_the_same_statistics(light_net):
    image = to_tensor(gradient_image(300, 230, seed=3))  # noisy: every pixel differs from its neighbours
    with torch.no_grad():
        stats = light_net.compute_norm_stats(image[None])
        whole = light_net(image[None], norm_stats=stats).clamp(0, 1)[0]
    assert len(plan(230, 300, 160, tile_context(light_net.spec))) >= 6
    tiled = _tiled(light_net, image, 160, stats, torch.empty_like(image))
    assert (tiled - whole).abs().max() < 1e-4  # no seam: identical up to float rounding
    pixels = (image * 255).round().to(torch.uint8)
    quantised = _tiled(light_net, pixels, 160, stats, torch.empty_like(pixels))
    with torch.no_grad():
        expected = to_uint8(light_net(pixels[None].float() / 255, norm_stats=stats)[0])
    assert (quantised.int() - expected.int()).abs().max() <= 1


def test_exact_statistics_add_up_to_the_whole_image_ones(light_net):
    image = to_tensor(gradient_image(300, 230, seed=4))
    pixels = (image * 255).round().to(torch.uint8)
    backend = TorchBackend(light_net)
    with torch.no_grad():
        whole = light_net.compute_norm_stats(image[None])
    stats = exact_stats(pixels, tile_size=160, context=tile_context(light_net.spec), count=norm_count(light_net.spec),
                        region_sums=backend.region_sums)
    assert len(stats) == len(whole) == norm_count(light_net.spec)
    for (mean, var), (mean_ref, var_ref) in zip(stats, whole):
        mean, var = torch.from_numpy(mean), torch.from_numpy(var)
        torch.testing.assert_close(mean, mean_ref, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(var, var_ref, atol=1e-4, rtol=1e-3)
    tiled = Stylizer(light_net, tile_size=160, tile_stats="exact")(image)
    untiled = Stylizer(light_net)(image)
    assert psnr(tiled.numpy() * 255, untiled.numpy() * 255) > 60


def test_thumbnail_statistics_shift_the_tone_evenly_without_seams(light_net):
    """The downscaled copy's statistics differ a little from the full image's (random weights exaggerate it),
    but every tile shares them: the difference from an untiled pass is no larger along tile edges."""
    image = to_tensor(gradient_image(40, 32, seed=5).resize((320, 256), Image.Resampling.BICUBIC))
    tiled = Stylizer(light_net, tile_size=128, tile_stats="thumbnail")(image)
    whole = Stylizer(light_net, tile_size=1024)(image)
    assert tiled.shape == image.shape
    error = (tiled - whole).abs().mean(0).numpy()
    boundaries = np.zeros(error.shape, bool)
    for t in plan(256, 320, 128, tile_context(light_net.spec)):
        for y in (t.cy0, t.cy1):
            boundaries[max(0, y - 2):y + 2, t.cx0:t.cx1] = 0 < y < 256
        for x in (t.cx0, t.cx1):
            boundaries[t.cy0:t.cy1, max(0, x - 2):x + 2] = 0 < x < 320
    assert boundaries.any()
    assert error[boundaries].mean() < 1.5 * error[~boundaries].mean() + 1e-4


def test_downscale_keeps_uint8_and_float_consistent():
    image = to_tensor(gradient_image(64, 48))
    pixels = (image * 255).round().to(torch.uint8)
    small_float, small_pixels = downscale(image.numpy(), (12, 16)), downscale(pixels.numpy(), (12, 16))
    assert small_float.shape == small_pixels.shape == (1, 3, 12, 16)
    assert np.abs(small_float - small_pixels).max() < 2 / 255
    assert np.array_equal(downscale(image.numpy(), (48, 64))[0], image.numpy())


def test_stylizer_tiles_large_images_in_the_tensor_api():
    torch.manual_seed(1)
    net = TransformerNet(SPECS["light"]).eval()
    stylizer = Stylizer(net, tile_size=160)
    images = torch.rand(2, 3, 200, 180)
    out = stylizer(images)
    assert out.shape == images.shape and 0 <= out.min() and out.max() <= 1
    assert stylizer.tiles(200, 180) == 4 and stylizer.tiles(160, 160) == 1
    torch.testing.assert_close(out[1], stylizer(images[1]))


def test_default_tile_size_follows_free_memory_within_bounds(light_net, monkeypatch):
    from fastnst.stylize import tiling as engine

    cpu = torch.device("cpu")
    for free, expected in ((None, 1024), (10**9, 1024), (20 * 2**30, 1408), (10**12, 4096)):
        monkeypatch.setattr(engine, "free_memory", lambda device, free=free: free)
        side = engine.default_tile_size(cpu)
        assert side == expected
        if free is not None and 1024 < side < 4096:  # one pass takes at most an eighth of the free memory
            bytes_per_pixel = engine.FORWARD_BYTES_PER_PIXEL
            assert side**2 * bytes_per_pixel <= free / 8 < (side + 64) ** 2 * bytes_per_pixel
    monkeypatch.setattr(engine, "free_memory", lambda device: 20 * 2**30)
    assert Stylizer(light_net).tile_size == 1408
    assert Stylizer(light_net).tile_stats == "exact"  # torch can measure exact statistics


def test_tiles_are_sized_by_the_memory_of_the_backend_s_own_gpu(light_net, monkeypatch):
    """A torchrun rank's network sits on cuda:LOCAL_RANK: its tiles follow that GPU's free memory, not GPU 0's."""
    import copy

    from fastnst.backends.torch import TorchBackend
    from fastnst.stylize import tiling as engine

    free_per_gpu = {0: 2 * 2**30, 1: 20 * 2**30}  # GPU 0 nearly full, GPU 1 free
    asked = []

    def mem_get_info(device=None):
        asked.append(device)
        index = torch.device(device).index
        return free_per_gpu[0 if index is None else index], 80 * 2**30

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    assert engine.free_memory("cuda:1") == free_per_gpu[1]
    assert engine.free_memory(torch.device("cuda", 1)) == free_per_gpu[1]
    assert engine.free_memory("cuda") == free_per_gpu[0]  # plain "cuda": the current GPU
    rank_backend = copy.copy(TorchBackend(light_net, "cpu"))
    rank_backend.device = torch.device("cuda", 1)  # as a rank's backend reports it; nothing runs here
    assert Stylizer(rank_backend).tile_size == engine.default_tile_size("cuda:1") == 1408
    assert engine.default_tile_size("cuda:0") == 1024


def test_free_memory_reads_the_systems_available_memory():
    import os

    from fastnst.stylize.tiling import free_memory

    free = free_memory(torch.device("cpu"))  # MemAvailable: free pages plus reclaimable caches
    page = os.sysconf("SC_PAGE_SIZE")
    assert 0.5 * os.sysconf("SC_AVPHYS_PAGES") * page <= free <= os.sysconf("SC_PHYS_PAGES") * page
