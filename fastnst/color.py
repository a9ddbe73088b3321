"""Colour operations on stylized images: keeping the photo's colours, blending with the photo.

Both take (B, 3, H, W) or (3, H, W) RGB images in 0–1, as numpy arrays (the
stylization engine) or torch tensors (pixel optimisation), and return the same
kind, so ``--preserve-color`` and ``--strength`` mean the same in every command.
"""

from __future__ import annotations

from fastnst.errors import ConfigError

# ITU-R BT.601 luma weights (the "Y" of YCbCr / YUV).
_LUMA = (0.299, 0.587, 0.114)


def check_strength(strength: float) -> float:
    """``strength`` as a float when it is within 0..1, else a one-line ``ConfigError`` (a ``ValueError``)."""
    if not 0.0 <= strength <= 1.0:
        raise ConfigError(f"--strength must be within 0..1 (1 = full style, 0 = the photo), got {strength}")
    return float(strength)


def luminance(image):
    """Y channel of an RGB image, shape (..., 1, H, W)."""
    r, g, b = image[..., 0:1, :, :], image[..., 1:2, :, :], image[..., 2:3, :, :]
    return r * _LUMA[0] + g * _LUMA[1] + b * _LUMA[2]


def preserve_color(content, stylized):
    """Keep the photo's colours and take only the luminance from the stylization.

    In YCbCr the chroma (Cb, Cr) of ``content`` is combined with the luma of
    ``stylized``; because RGB→YCbCr is linear this is the same as adding the luma
    difference to every RGB channel of the content. Result clipped to 0–1.
    """
    return (content + (luminance(stylized) - luminance(content))).clip(0, 1)


def blend(content, stylized, strength: float):
    """``strength`` 1 gives the stylization, 0 the photo, in between a linear mix."""
    strength = check_strength(strength)
    if strength == 1.0:
        return stylized
    return content + (stylized - content) * strength
