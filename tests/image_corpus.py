"""Generators for the image files a real photo library contains, good and bad.

Each ``make_*`` writes one file under ``folder`` and returns its path; ``GOOD``
and ``BAD`` list them so image and engine tests share one corpus.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import gradient_image

ORIENTATION = 0x0112


def make_rgb(folder: Path, name: str = "photo.jpg", size=(24, 16), **save) -> Path:
    path = folder / name
    gradient_image(*size).save(path, **save)
    return path


def make_exif_rotated(folder: Path, orientation: int) -> Path:
    """A 40×20 JPEG whose pixels must be turned by the EXIF orientation tag."""
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 10))  # red marks the stored top-left corner
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    path = folder / f"exif{orientation}.jpg"
    img.save(path, exif=exif.tobytes(), quality=95)
    return path


def make_16bit_gray_png(folder: Path) -> Path:
    values = np.array([[0, 257 * 128, 65535, 257 * 64]] * 3, dtype=np.uint16)
    path = folder / "gray16.png"
    Image.fromarray(values).save(path)
    return path


def make_rgba(folder: Path) -> Path:
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    img.paste((255, 0, 0, 128), (4, 0, 8, 8))  # half-transparent red on the right
    path = folder / "rgba.png"
    img.save(path)
    return path


def make_la(folder: Path) -> Path:
    path = folder / "la.png"
    Image.new("LA", (6, 6), (0, 0)).save(path)  # black, fully transparent → white
    return path


def make_palette_transparent(folder: Path) -> Path:
    img = Image.new("P", (6, 6), 1)
    img.putpalette([0, 255, 0] + [255, 0, 0] * 255)
    img.paste(0, (0, 0, 3, 6))  # left half: index 0 (green), the transparent index
    path = folder / "palette.png"
    img.save(path, transparency=0)
    return path


def make_cmyk_jpeg(folder: Path) -> Path:
    path = folder / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)  # pure red in CMYK
    return path


def make_animated_gif(folder: Path) -> Path:
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = folder / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def make_bomb_png(folder: Path, width: int = 50_000, height: int = 50_000) -> Path:
    """A tiny PNG whose header declares a huge image (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path = folder / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def make_truncated(folder: Path, suffix: str) -> Path:
    full = make_rgb(folder, f"full{suffix}", size=(64, 64))
    data = full.read_bytes()
    full.unlink()
    path = folder / f"truncated{suffix}"
    path.write_bytes(data[: len(data) // 2])
    return path


def make_empty(folder: Path) -> Path:
    path = folder / "empty.jpg"
    path.write_bytes(b"")
    return path


def make_text_as_jpg(folder: Path) -> Path:
    path = folder / "notes.jpg"
    path.write_text("this is not a picture\n")
    return path


def make_gray(folder: Path) -> Path:
    path = folder / "gray.png"
    Image.new("L", (12, 9), 90).save(path)
    return path


def make_library(folder: Path) -> tuple[dict[Path, tuple[int, int]], dict[Path, str]]:
    """A photo library with every kind of file a real one contains, under ``folder``.

    Returns (good, bad): each good file with the (width, height) its stylized
    output must have (after EXIF orientation), and each bad file with a fragment
    of the reason it must be reported with. Files are small, so stylizing all of
    them with a light network takes well under a second.
    """
    folder.mkdir(parents=True, exist_ok=True)
    sub = folder / "nested" / "deeper"
    sub.mkdir(parents=True)
    good = {
        make_rgb(folder, "photo.jpg", size=(24, 16)): (24, 16),
        make_rgb(sub, "deep.png", size=(17, 11)): (17, 11),
        make_16bit_gray_png(folder): (4, 3),
        make_gray(folder): (12, 9),
        make_la(folder): (6, 6),
        make_palette_transparent(folder): (6, 6),
        make_rgba(folder): (8, 8),
        make_cmyk_jpeg(folder): (16, 16),
        make_exif_rotated(folder, 3): (40, 20),
        make_exif_rotated(folder, 6): (20, 40),
        make_exif_rotated(folder, 8): (20, 40),
        make_rgb(folder, "one.png", size=(1, 1)): (1, 1),
        make_rgb(folder, "three.png", size=(3, 3)): (3, 3),
        make_rgb(folder, "strip.png", size=(1, 4000)): (1, 4000),
        make_animated_gif(folder): (10, 10),
        make_rgb(folder, "lossless.webp", size=(15, 10), lossless=True): (15, 10),
        make_rgb(folder, "scan.tiff", size=(13, 7)): (13, 7),
        make_rgb(folder, "Été à la plage – n°1.jpg", size=(19, 12)): (19, 12),
    }
    bad = {
        make_empty(folder): "empty file",
        make_text_as_jpg(folder): "not an image",
        make_truncated(folder, ".jpg"): "truncated",
        make_truncated(folder, ".png"): "truncated",
        make_bomb_png(folder): "decompression bomb",
    }
    loop = folder / "nested" / "loop"
    loop.symlink_to("..", target_is_directory=True)  # a folder that contains itself
    self_link = folder / "self.jpg"
    self_link.symlink_to("self.jpg")  # a link that leads to itself
    bad[self_link] = "symlink loop"
    return good, bad
