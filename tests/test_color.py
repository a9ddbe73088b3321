"""Colour preservation and strength blending against independent YCbCr arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastnst.color import blend, luminance, preserve_color


def _to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return np.stack([y, 0.564 * (b - y), 0.713 * (r - y)])


def test_preserve_color_keeps_content_chroma_and_stylized_luma():
    torch.manual_seed(0)
    content = torch.rand(3, 6, 5) * 0.5 + 0.25  # away from 0/1 so no clamping interferes
    stylized = torch.rand(3, 6, 5) * 0.5 + 0.25
    out = preserve_color(content, stylized).numpy().astype(np.float64)
    yo, yc, ys = _to_ycbcr(out), _to_ycbcr(content.numpy()), _to_ycbcr(stylized.numpy())
    np.testing.assert_allclose(yo[0], ys[0], atol=1e-5)  # luma from the stylization
    np.testing.assert_allclose(yo[1:], yc[1:], atol=1e-5)  # chroma from the photo


def test_luminance_and_batches():
    torch.manual_seed(1)
    batch = torch.rand(2, 3, 4, 4)
    expected = np.stack([_to_ycbcr(image)[0][None] for image in batch.numpy()])  # (2, 1, 4, 4)
    np.testing.assert_allclose(luminance(batch).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(luminance(batch.numpy()), expected, atol=1e-6)  # numpy arrays as well
    styled = batch.flip(0)
    together = preserve_color(batch, styled)
    for i in range(2):  # a batch is each image on its own
        torch.testing.assert_close(together[i], preserve_color(batch[i], styled[i]))
    # Out of range: white chroma with black luma would go negative; the result is clamped to 0-1.
    clamped = preserve_color(torch.ones(3, 2, 2), torch.zeros(3, 2, 2))
    assert clamped.min() >= 0 and clamped.max() <= 1
    assert torch.equal(clamped, torch.zeros(3, 2, 2))


def test_blend_strength():
    a, b = torch.zeros(3, 2, 2), torch.ones(3, 2, 2)
    assert torch.equal(blend(a, b, 1.0), b) and torch.equal(blend(a, b, 0.0), a)
    torch.testing.assert_close(blend(a, b, 0.25), torch.full_like(a, 0.25))
    with pytest.raises(ValueError, match="0..1"):
        blend(a, b, 1.5)
