"""Colour operations on stylized images: keeping the photo's colours, blending with the photo.

Both work on (B, 3, H, W) or (3, H, W) RGB tensors in 0–1 and are shared by the
stylization engine and pixel optimisation, so ``--preserve-color`` and
``--strength`` mean the same in every command.
"""

from __future__ import annotations

import torch

# ITU-R BT.601 luma weights (the "Y" of YCbCr / YUV).
_LUMA = (0.299, 0.587, 0.114)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """Y channel of an RGB image, shape (..., 1, H, W)."""
    weights = image.new_tensor(_LUMA).view(3, 1, 1)
    return (image * weights).sum(dim=-3, keepdim=True)


def preserve_color(content: torch.Tensor, stylized: torch.Tensor) -> torch.Tensor:
    """Keep the photo's colours and take only the luminance from the stylization.

    In YCbCr the chroma (Cb, Cr) of ``content`` is combined with the luma of
    ``stylized``; because RGB→YCbCr is linear this is the same as adding the luma
    difference to every RGB channel of the content. Result clamped to 0–1.
    """
    return (content + (luminance(stylized) - luminance(content))).clamp(0, 1)


def blend(content: torch.Tensor, stylized: torch.Tensor, strength: float) -> torch.Tensor:
    """``strength`` 1 gives the stylization, 0 the photo, in between a linear mix."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be within 0..1, got {strength}")
    return torch.lerp(content, stylized, strength)
