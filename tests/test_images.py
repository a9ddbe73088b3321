"""Image I/O: every common format and mode to RGB, orientation, limits, one error type, atomic saving."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fastnst.errors import ConfigError, ImageError
from fastnst.files import TEMP_MARKER
from fastnst.images import load_image, open_image, psnr, resize_long_side, save_image, to_pil, to_tensor

import image_corpus as corpus
from conftest import gradient_image


@pytest.mark.parametrize("name,save", [("a.jpg", {"quality": 100, "subsampling": 0}), ("a.png", {}),
                                       ("a.webp", {"lossless": True}), ("a.tiff", {}), ("a.bmp", {})])
def test_common_formats_decode_to_the_same_rgb(tmp_path, name, save):
    path = corpus.make_rgb(tmp_path, name, size=(24, 16), **save)
    img = open_image(path)
    assert img.mode == "RGB" and img.size == (24, 16)
    diff = np.abs(np.asarray(img, np.int16) - np.asarray(gradient_image(24, 16), np.int16))
    assert diff.max() <= (12 if name.endswith(".jpg") else 0)


def test_gif_gives_its_first_frame(tmp_path):
    img = open_image(corpus.make_animated_gif(tmp_path))
    assert img.mode == "RGB" and img.getpixel((5, 5)) == (255, 0, 0)


@pytest.mark.parametrize("orientation,transpose", [(3, Image.Transpose.ROTATE_180),
                                                   (6, Image.Transpose.ROTATE_270),
                                                   (8, Image.Transpose.ROTATE_90)])
def test_exif_orientation_is_applied(tmp_path, orientation, transpose):
    path = corpus.make_exif_rotated(tmp_path, orientation)
    with Image.open(path) as raw:
        expected = np.asarray(raw.convert("RGB").transpose(transpose), np.int16)
    img = open_image(path)
    assert img.size == (expected.shape[1], expected.shape[0])
    assert np.abs(np.asarray(img, np.int16) - expected).max() <= 8


def test_16bit_gray_png_is_scaled_not_clipped(tmp_path):
    img = open_image(corpus.make_16bit_gray_png(tmp_path))
    assert [img.getpixel((x, 0)) for x in range(4)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255), (64, 64, 64)]


def test_transparency_is_composited_on_white(tmp_path):
    rgba = open_image(corpus.make_rgba(tmp_path))
    assert rgba.getpixel((0, 0)) == (255, 255, 255)
    r, g, b = rgba.getpixel((6, 3))
    assert r == 255 and abs(g - 127) <= 1 and abs(b - 127) <= 1
    assert open_image(corpus.make_la(tmp_path)).getpixel((2, 2)) == (255, 255, 255)
    palette = open_image(corpus.make_palette_transparent(tmp_path))
    assert palette.getpixel((0, 0)) == (255, 255, 255) and palette.getpixel((5, 0)) == (255, 0, 0)


def test_grayscale_and_cmyk(tmp_path):
    Image.new("L", (5, 5), 77).save(tmp_path / "g.png")
    assert open_image(tmp_path / "g.png").getpixel((1, 1)) == (77, 77, 77)
    r, g, b = open_image(corpus.make_cmyk_jpeg(tmp_path)).getpixel((8, 8))
    assert r > 230 and g < 25 and b < 25


@pytest.mark.parametrize("maker,reason", [
    (corpus.make_empty, "empty file"),
    (corpus.make_text_as_jpg, "not an image"),
    (lambda d: corpus.make_truncated(d, ".jpg"), "truncated"),
    (lambda d: corpus.make_truncated(d, ".png"), "truncated"),
    (corpus.make_bomb_png, "decompression bomb"),
    (lambda d: corpus.make_bomb_png(d, 12_000, 12_000), "144,000,000 pixels is over the limit of 100,000,000"),
    (lambda d: d / "missing.png", "no such file"),
    (lambda d: d, "is a folder"),
])
def test_bad_files_raise_one_error_type_with_path_and_reason(tmp_path, maker, reason):
    path = maker(tmp_path)
    with pytest.raises(ImageError) as err:
        open_image(path)
    assert err.value.path == str(path) and reason in err.value.reason
    assert str(err.value) == f"{path}: {err.value.reason}" and "\n" not in str(err.value)


def test_pixel_limit_is_configurable(tmp_path):
    path = corpus.make_rgb(tmp_path, "a.png", size=(30, 20))
    with pytest.raises(ImageError, match="600 pixels is over the limit of 500"):
        open_image(path, max_pixels=500)
    assert open_image(path, max_pixels=600).size == (30, 20)


def test_unreadable_file(tmp_path, monkeypatch):
    import os

    path = corpus.make_rgb(tmp_path, "locked.png")
    path.chmod(0)
    if os.geteuid() == 0:
        # root reads chmod-000 files anyway; make the open fail the way it does for everyone else.
        real_open = Image.open

        def refuse(fp, *args, **kwargs):
            if str(fp) == str(path):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(fp, *args, **kwargs)

        monkeypatch.setattr(Image, "open", refuse)
    with pytest.raises(ImageError, match="locked.png: permission denied"):
        open_image(path)


def test_tensor_conversions_round_trip():
    img = gradient_image(9, 7)
    t = to_tensor(img)
    assert t.shape == (3, 7, 9) and t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 1
    assert np.array_equal(np.asarray(to_pil(t)), np.asarray(img))
    clipped = to_pil(torch.full((1, 3, 2, 2), 1.7))
    assert clipped.getpixel((0, 0)) == (255, 255, 255)


def test_load_image_downsizes_the_long_side(tmp_path):
    path = corpus.make_rgb(tmp_path, "big.png", size=(200, 100))
    assert load_image(path, max_size=50).shape == (3, 25, 50)
    assert load_image(path, max_size=500).shape == (3, 100, 200)  # never upsized
    assert resize_long_side(gradient_image(3, 300), 10).size == (1, 10)


def test_save_by_extension_is_atomic_and_deterministic(tmp_path):
    img = gradient_image(32, 32)
    png = save_image(img, tmp_path / "out" / "a.png")
    assert np.array_equal(np.asarray(Image.open(png)), np.asarray(img))
    small = save_image(img, tmp_path / "q10.jpg", quality=10)
    large = save_image(img, tmp_path / "q95.jpg", quality=95)
    assert small.stat().st_size < large.stat().st_size
    first = save_image(img, tmp_path / "d.webp").read_bytes()
    assert save_image(img, tmp_path / "d.webp").read_bytes() == first
    assert not list(tmp_path.rglob(TEMP_MARKER + "*"))
    with pytest.raises(ConfigError, match="cannot save as .xyz"):
        save_image(img, tmp_path / "a.xyz")


def test_psnr_against_the_formula():
    a = np.zeros((4, 5, 3), np.uint8)
    assert psnr(a, a) == float("inf")
    assert psnr(a, a + 1) == pytest.approx(20 * np.log10(255))  # every pixel off by one level: MSE 1
    b = np.full((2, 2), 0.5)
    assert psnr(b, b + 0.1, peak=1.0) == pytest.approx(20.0)  # MSE 0.01 against a peak of 1
