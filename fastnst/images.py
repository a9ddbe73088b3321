"""Reading and writing images.

Whatever the file (JPEG, PNG including 16-bit, WebP, TIFF, BMP, GIF's first
frame), ``open_image`` returns an 8-bit RGB ``PIL.Image`` with the EXIF
orientation applied and transparency composited on white. Anything that cannot
be read raises ``ImageError`` carrying the path and the reason, so a batch job
can report the file in one line and go on.

Tensors are (3, H, W) or (B, 3, H, W) float RGB in 0–1, the package's range.
PyTorch is imported only by the functions that make or take tensors, so the
stylization path can decode and encode without it.
"""

from __future__ import annotations

import base64
import binascii
import errno
import io
import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fastnst.errors import ConfigError, ImageError, ImageTooLarge, first_line
from fastnst.files import atomic_path

log = logging.getLogger(__name__)

# 100 megapixels: a 12,000 × 8,000 photo passes; decompression bombs (a tiny file
# declaring a 50,000 × 50,000 image) are refused before any pixel is decoded.
DEFAULT_MAX_PIXELS = 100_000_000

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif")
# Pillow's decoders for those suffixes: ``open_image`` opens nothing else, whatever a file's content says
# (a PostScript file named photo.jpg is never handed to Ghostscript).
READ_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF")
# Photo formats fastnst meets in libraries but cannot read: counted as failures, never silently ignored.
UNREADABLE_SUFFIXES = {".heic": "HEIC", ".heif": "HEIF", ".avif": "AVIF", ".jxl": "JPEG XL", ".cr2": "Canon RAW",
                       ".cr3": "Canon RAW", ".nef": "Nikon RAW", ".arw": "Sony RAW", ".dng": "DNG RAW",
                       ".raf": "Fujifilm RAW", ".orf": "Olympus RAW", ".rw2": "Panasonic RAW", ".psd": "Photoshop"}

# The largest side each encoder can write (WebP 16383, JPEG 65535): checked before any compute.
MAX_SIDE = {"WEBP": 16383, "JPEG": 65535}
# Pillow format name and save options per output suffix. The options are fixed so
# that encoding the same pixels twice gives byte-identical files.
_SAVE_FORMATS = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP",
    ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP",
}

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def open_image(source: str | Path | bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS, *,
               formats: tuple[str, ...] = READ_FORMATS, name: str = "upload") -> Image.Image:
    """Decode a file (a path) or an upload (its bytes, called ``name`` in errors) into 8-bit RGB, EXIF-oriented.

    Raises ``ImageError`` for missing, unreadable, empty, truncated and non-image
    data, for formats outside ``formats`` (Pillow's names), for modes with no RGB
    meaning, and ``ImageTooLarge`` (an ``ImageError``) for images over
    ``max_pixels`` (checked from the header, before decoding; ``None`` disables
    the check) or declaring more than Pillow's decompression-bomb limit.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        label: str | Path = name
        if len(source) == 0:
            raise ImageError(name, "empty upload (0 bytes)")
        opener = io.BytesIO(source)
    else:
        label = opener = Path(source)
    try:
        if isinstance(opener, Path):
            if opener.is_dir():
                raise ImageError(label, "is a folder, not an image")
            if opener.stat().st_size == 0:
                raise ImageError(label, "empty file (0 bytes)")
        return _decode(opener, label, max_pixels, formats)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(label, "no such file") from None
    except PermissionError:
        raise ImageError(label, "permission denied") from None
    except UnidentifiedImageError:
        raise ImageError(label, f"not an image in a format fastnst reads ({', '.join(formats)})") from None
    except Image.DecompressionBombError:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise ImageTooLarge(label, f"header declares over {limit:,} pixels (Pillow's hard limit); refused as a "
                                   "possible decompression bomb", limit) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
            raise ImageError(label, "a symlink loop (the link leads back to itself), not an image") from None
        raise ImageError(label, f"cannot decode ({first_line(exc)}); the file may be truncated or corrupt") from None


def _decode(opener: Path | io.BytesIO, label: str | Path, max_pixels: int | None,
            formats: tuple[str, ...]) -> Image.Image:
    with warnings.catch_warnings():
        # We apply our own pixel limit below; Pillow's warning would only be noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(opener, formats=formats) as img:
            width, height = img.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLarge(label, f"{width}x{height} = {width * height:,} pixels is over the limit of "
                                           f"{max_pixels:,} (raise it with --max-pixels if the file is trusted)",
                                    max_pixels, (width, height))
            img.load()
            try:
                img = ImageOps.exif_transpose(img)
            except Exception as exc:  # noqa: BLE001 - a broken EXIF block should not lose the photo
                log.warning("%s: ignoring unreadable EXIF orientation (%s)", label, first_line(exc))
            return to_rgb(img, label)


def to_rgb(img: Image.Image, path: str | Path = "<image>") -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB: alpha over white, 16-bit scaled, CMYK and palettes mapped."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _SIXTEEN_BIT_MODES:
        # Pillow's own convert("L") clips 16-bit values at 255 instead of scaling them. Integer arithmetic
        # (4 bytes a pixel, not a float64 copy): (v + 128) // 257 is round(v / 257), as 257 is odd.
        values = np.clip(np.asarray(img).astype(np.int64 if mode == "I" else np.uint32), 0, 65535)
        gray = ((values + 128) // 257).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode == "F":
        gray = np.clip(np.rint(np.asarray(img, dtype=np.float32)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "La", "RGBa", "PA") or (mode == "P" and "transparency" in img.info)
    try:
        if has_alpha:
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageError(path, f"unsupported image mode {mode} ({first_line(exc)})") from None


def to_tensor(img: Image.Image):
    """RGB image → (3, H, W) float32 torch tensor in 0–1."""
    import torch

    array = np.array(to_rgb(img), dtype=np.uint8)
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


def to_float(pixels):
    """uint8 0–255 → float32 0–1 (as ``to_tensor`` computes it); float → float32 unchanged.

    Takes a numpy array or a torch tensor of any shape and returns the same kind.
    """
    if isinstance(pixels, np.ndarray):
        if pixels.dtype == np.uint8:
            return np.divide(pixels, np.float32(255.0), dtype=np.float32)
        return pixels.astype(np.float32, copy=False)
    import torch

    if pixels.dtype == torch.uint8:
        return pixels.float().div_(255.0)
    return pixels.float()


def to_pil(tensor) -> Image.Image:
    """(3, H, W) or (1, 3, H, W) tensor or array in 0–1 → 8-bit RGB image (clamped, rounded)."""
    if tensor.ndim == 4:
        if tensor.shape[0] != 1:
            raise ValueError(f"to_pil takes one image, got a batch of {tensor.shape[0]}")
        tensor = tensor[0]
    array = to_uint8(tensor)
    array = array.transpose(1, 2, 0) if isinstance(array, np.ndarray) else array.permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array))


def stack_pixels(arrays) -> np.ndarray:
    """(B, H, W, 3) from B same-size (H, W, 3) arrays; a single one is a view, not a copy (the CPU's batch of one)."""
    return arrays[0][None] if len(arrays) == 1 else np.stack(arrays)


def to_uint8(image):
    """Float image in 0–1 (any shape; numpy array or torch tensor) → uint8 0–255 of the same kind and shape.

    Clamped and rounded to nearest (ties to even, in numpy and torch alike): the one
    quantisation step of the package, so tiles, batches and single images give the same bytes.
    """
    if isinstance(image, np.ndarray):
        return np.rint(np.clip(image.astype(np.float32, copy=False), 0, 1) * np.float32(255)).astype(np.uint8)
    import torch

    return image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)


def resize_array(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(C, H, W) uint8 or float32 → (C, h, w) of the same dtype, with Pillow's antialiased bilinear filter.

    The one resampler for arrays (tile statistics, stroke scale): downscaling
    averages over the whole footprint (no aliasing), upscaling interpolates.
    A uint8 RGB image is resized as 8-bit pixels, so no float copy is made.
    """
    image = np.asarray(image)
    if tuple(image.shape[-2:]) == tuple(shape):
        return image
    size = (shape[1], shape[0])
    if image.dtype == np.uint8 and image.shape[0] == 3:
        small = Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0))).resize(size, Image.Resampling.BILINEAR)
        return np.ascontiguousarray(np.asarray(small).transpose(2, 0, 1))
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(c, dtype=np.float32), mode="F").resize(
        size, Image.Resampling.BILINEAR)) for c in image]
    return np.stack(channels).astype(np.float32)


def scaled_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(width, height) scaled so the longer side is ``long_side`` (aspect kept, each side at least 1)."""
    scale = long_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_to(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize a PIL image to exactly ``size`` = (width, height) with Lanczos (up or down)."""
    return img if img.size == tuple(size) else img.resize(tuple(size), Image.Resampling.LANCZOS)


def load_style_image(path: str | Path, size: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS):
    """A style image as (1, 3, H, W) float 0–1, by the one rule every command follows (train, optimize, score).

    With ``size`` its long side becomes exactly ``size`` pixels (Lanczos, up or
    down), so ``--style-size`` means the same everywhere; without, it is used as
    it is. The painting's scale relative to the photos decides how large its
    strokes come out.
    """
    image = open_image(path, max_pixels)
    if size is not None:
        image = resize_to(image, scaled_size(*image.size, size))
    return to_tensor(image)[None]


def resize_long_side(img: Image.Image, max_size: int | None) -> Image.Image:
    """Downsize so the longer side is at most ``max_size`` (aspect kept); never upsizes."""
    if not max_size or max(img.size) <= max_size:
        return img
    scale = max_size / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def load_image(path: str | Path, max_size: int | None = None,
               max_pixels: int | None = DEFAULT_MAX_PIXELS):
    """Open ``path`` (see ``open_image``), optionally downsize its long side, → (3, H, W) in 0–1."""
    return to_tensor(resize_long_side(open_image(path, max_pixels), max_size))


def save_format(path: str | Path) -> str:
    """Pillow's format name for ``path``'s suffix (.jpg .png .webp .tif .bmp); ``ConfigError`` for another."""
    fmt = _SAVE_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ConfigError(f"{path}: cannot save as {Path(path).suffix or '(no suffix)'}; use one of "
                          f"{', '.join(sorted(_SAVE_FORMATS))}")
    return fmt


def encode_image(image, fmt: str, quality: int = 95) -> bytes:
    """An image (PIL, (H, W, 3) uint8 array, or (3, H, W) / (1, 3, H, W) 0–1 tensor) → the bytes of a ``fmt`` file.

    ``fmt`` is Pillow's name (JPEG, PNG, WEBP, TIFF, BMP); ``quality`` (1–100)
    applies to JPEG and WebP. Encoder settings are fixed, so the same pixels
    always give the same bytes, whether saved or served.
    """
    if not 1 <= quality <= 100:
        raise ConfigError(f"quality must be 1–100, got {quality}")
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3:
        image = Image.fromarray(image)
    elif not isinstance(image, Image.Image):
        image = to_pil(image)
    options: dict = {}
    if fmt == "JPEG":
        options = {"quality": quality, "subsampling": 0 if quality >= 90 else 2, "optimize": False}
    elif fmt == "WEBP":
        options = {"quality": quality, "method": 4}
    elif fmt == "PNG":
        options = {"compress_level": 6}
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def save_image(image, path: str | Path, quality: int = 95) -> Path:
    """Write an image atomically (see ``encode_image``), the format chosen by the suffix."""
    path = Path(path)
    data = encode_image(image, save_format(path), quality)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def encode_thumbnail(path: str | Path, side: int = 128) -> str:
    """A small JPEG of the image at ``path`` (long side ``side``), base64 text for a model file's metadata.

    Model files carry one per style so that a contact sheet or a gallery can show
    what each style looks like without the style image (about 6 KB each).
    """
    image = resize_long_side(open_image(path), side)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, subsampling=0, optimize=False)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_thumbnail(data: str, what: str = "thumbnail"):
    """The (3, h, w) 0–1 image of ``encode_thumbnail``'s text; ``ImageError`` naming ``what`` if it is corrupt."""
    try:
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as img:
            return to_tensor(img.convert("RGB"))
    except (binascii.Error, ValueError, OSError, UnidentifiedImageError) as exc:
        raise ImageError(what, f"corrupt thumbnail ({first_line(exc)})") from None


def side_limit(fmt: str, width: int, height: int) -> int | None:
    """The largest side Pillow's ``fmt`` encoder can write when ``width``×``height`` exceeds it; None when it fits."""
    limit = MAX_SIDE.get(fmt)
    return limit if limit is not None and max(width, height) > limit else None


def encoder_limit(path: str | Path, width: int, height: int) -> str | None:
    """Why a ``width``×``height`` image cannot be saved as ``path``'s format, or None when it can."""
    fmt = _SAVE_FORMATS.get(Path(path).suffix.lower(), "")
    limit = side_limit(fmt, width, height)
    if limit is not None:
        return (f"{width}x{height} is larger than {fmt} can hold ({limit} px a side); use --format png or "
                f"--max-size {limit}")
    return None


def psnr(a, b, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio of two same-shape images in dB (``peak`` 255 for uint8 pixels, 1 for 0–1 floats);
    inf when they are equal. How far a backend, precision or encoder is from a reference."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(peak**2 / mse))


def is_image_file(path: str | Path) -> bool:
    """Whether ``path`` has one of the suffixes fastnst reads (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def unreadable_format(path: str | Path) -> str | None:
    """Why a photo format fastnst meets but cannot read is refused (HEIC, AVIF, RAW, ...), or None."""
    kind = UNREADABLE_SUFFIXES.get(Path(path).suffix.lower())
    return None if kind is None else (f"{kind} is not a format fastnst reads; convert it to JPEG or PNG first "
                                      f"(readable: {' '.join(IMAGE_SUFFIXES)})")
