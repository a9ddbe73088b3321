"""Losses against independent numpy computations; purity; fp32 Grams under autocast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastnst.errors import ConfigError
from fastnst.losses import (
    LossSpec,
    content_loss,
    content_targets,
    gram_matrix,
    parse_layer_weights,
    perceptual_losses,
    style_grams,
    style_loss,
    tv_loss,
)
from fastnst.models.vgg import VGGFeatures


def np_gram(f: np.ndarray) -> np.ndarray:
    b, c, h, w = f.shape
    flat = f.reshape(b, c, h * w).astype(np.float64)
    return np.einsum("bci,bdi->bcd", flat, flat) / (c * h * w)


def test_gram_matches_numpy():
    f = torch.randn(2, 5, 6, 7)
    np.testing.assert_allclose(gram_matrix(f).numpy(), np_gram(f.numpy()), rtol=1e-5, atol=1e-6)


def test_gram_stays_fp32_and_finite_where_fp16_overflows():
    f = (torch.rand(1, 4, 128, 128) * 300).half()  # squares summed over 16k pixels overflow fp16 (65504)
    assert not torch.isfinite(torch.bmm(f.view(1, 4, -1), f.view(1, 4, -1).transpose(1, 2))).all()
    g = gram_matrix(f)
    assert g.dtype == torch.float32 and torch.isfinite(g).all()
    np.testing.assert_allclose(g.numpy(), np_gram(f.float().numpy()), rtol=1e-5)


def test_gram_is_fp32_under_bf16_autocast():
    f = torch.randn(2, 8, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = gram_matrix(f)
    assert g.dtype == torch.float32
    np.testing.assert_allclose(g.numpy(), np_gram(f.numpy()), rtol=1e-5, atol=1e-6)


def test_content_and_style_losses_match_numpy_with_layer_weights():
    torch.manual_seed(0)
    feats = {"a": torch.randn(2, 3, 4, 4), "b": torch.randn(2, 6, 2, 2)}
    targets = {"a": torch.randn(2, 3, 4, 4), "b": torch.randn(2, 6, 2, 2)}
    weights = {"a": 0.5, "b": 2.0}
    expected_content = sum(w * np.mean((feats[k].numpy() - targets[k].numpy()) ** 2) for k, w in weights.items())
    np.testing.assert_allclose(content_loss(feats, targets, weights).item(), expected_content, rtol=1e-5)

    grams = {k: gram_matrix(torch.randn(1, v.shape[1], 5, 5)) for k, v in feats.items()}  # one style for the batch
    expected_style = sum(
        w * np.mean((np_gram(feats[k].numpy()) - np.broadcast_to(grams[k].numpy(), (2,) + grams[k].shape[1:])) ** 2)
        for k, w in weights.items())
    np.testing.assert_allclose(style_loss(feats, grams, weights).item(), expected_style, rtol=1e-5)


def test_style_loss_accepts_one_target_per_batch_item():
    feats = {"a": torch.randn(3, 4, 5, 5)}
    per_item = gram_matrix(torch.randn(3, 4, 5, 5))
    expected = np.mean((np_gram(feats["a"].numpy()) - per_item.numpy()) ** 2)
    np.testing.assert_allclose(style_loss(feats, {"a": per_item}, {"a": 1.0}).item(), expected, rtol=1e-5)


def test_tv_loss_matches_numpy_and_handles_one_pixel_sides():
    x = torch.rand(2, 3, 5, 6)
    a = x.numpy().astype(np.float64)
    expected = np.mean((a[:, :, 1:] - a[:, :, :-1]) ** 2) + np.mean((a[..., 1:] - a[..., :-1]) ** 2)
    np.testing.assert_allclose(tv_loss(x).item(), expected, rtol=1e-5)
    strip = torch.rand(1, 3, 1, 6)
    s = strip.numpy().astype(np.float64)
    np.testing.assert_allclose(tv_loss(strip).item(), np.mean((s[..., 1:] - s[..., :-1]) ** 2), rtol=1e-5)
    assert tv_loss(torch.rand(1, 3, 1, 1)).item() == 0


def test_losses_never_mutate_their_inputs():
    torch.manual_seed(1)
    feats = {"a": torch.randn(2, 3, 4, 4)}
    targets = {"a": torch.randn(2, 3, 4, 4)}
    image = torch.rand(2, 3, 8, 8)
    before = [t.clone() for t in (feats["a"], targets["a"], image)]
    gram_matrix(feats["a"])
    content_loss(feats, targets, {"a": 1.0})
    style_loss(feats, {"a": gram_matrix(targets["a"])}, {"a": 1.0})
    tv_loss(image)
    for b, a in zip(before, (feats["a"], targets["a"], image)):
        assert torch.equal(a, b)


def test_perceptual_losses_compose_the_parts_and_give_gradients():
    torch.manual_seed(0)
    vgg = VGGFeatures("vgg16", ["relu1_2", "relu2_2"])
    spec = LossSpec(content_layers="relu2_2", style_layers="relu1_2,relu2_2:0.5", content_weight=2.0,
                    style_weight=3.0, tv_weight=4.0)
    content, style = torch.rand(2, 3, 16, 16), torch.rand(1, 3, 20, 20)
    image = torch.rand(2, 3, 16, 16, requires_grad=True)
    losses = perceptual_losses(vgg, image, content_targets(vgg, content, spec), style_grams(vgg, style, spec), spec)
    feats = vgg(image)
    expected_content = 2.0 * content_loss(feats, {"relu2_2": vgg(content)["relu2_2"]}, {"relu2_2": 1.0})
    style_feats = vgg(style)
    expected_style = 3.0 * (style_loss(feats, {"relu1_2": gram_matrix(style_feats["relu1_2"])}, {"relu1_2": 1.0})
                            + 0.5 * style_loss(feats, {"relu2_2": gram_matrix(style_feats["relu2_2"])},
                                               {"relu2_2": 1.0}))
    torch.testing.assert_close(losses["content"], expected_content)
    torch.testing.assert_close(losses["style"], expected_style)
    torch.testing.assert_close(losses["tv"], 4.0 * tv_loss(image))
    torch.testing.assert_close(losses["total"], losses["content"] + losses["style"] + losses["tv"])
    losses["total"].backward()
    assert image.grad.abs().sum() > 0


def test_layer_weight_parsing():
    assert parse_layer_weights("relu1_1, relu2_1:0.5") == {"relu1_1": 1.0, "relu2_1": 0.5}
    with pytest.raises(ConfigError, match="relu2_1:x"):
        parse_layer_weights("relu2_1:x")
    with pytest.raises(ConfigError, match="no layers"):
        parse_layer_weights(" , ")
    with pytest.raises(ConfigError, match="style-weight must be >= 0"):
        LossSpec(style_weight=-1)
    assert LossSpec(content_layers="relu2_2", style_layers="relu1_2,relu2_2").layers == ("relu2_2", "relu1_2")
