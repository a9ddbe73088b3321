"""Losses against independent numpy computations; purity; fp32 Grams under autocast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastnst.errors import ConfigError
from fastnst.losses import (
    MOTION,
    VGG_WEIGHTS_ENV,
    LossSpec,
    as_saved,
    content_loss,
    content_targets,
    gram_matrix,
    parse_layer_weights,
    parse_scales,
    perceptual_losses,
    random_motion,
    style_grams,
    style_loss,
    temporal_loss,
    tv_loss,
    warp,
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


def test_gram_of_bf16_activations_is_fp32_within_bf16_rounding_and_differentiable():
    # What a VGG under bf16 autocast hands the style loss: bf16 activations of 100s over many pixels.
    f = (torch.rand(2, 6, 64, 64) * 200).bfloat16().requires_grad_(True)
    g = gram_matrix(f)
    assert g.dtype == torch.float32
    exact = np_gram(f.detach().float().numpy())
    np.testing.assert_allclose(g.detach().numpy(), exact, rtol=2 ** -7)
    g.sum().backward()  # d(Σ G)/dF = 2 · (Σ_d F_d) / (C·H·W), per pixel
    flat = f.detach().float().reshape(2, 6, -1)
    expected = 2 * flat.sum(1, keepdim=True).expand_as(flat) / (6 * 64 * 64)
    np.testing.assert_allclose(f.grad.float().reshape(2, 6, -1).numpy(), expected.numpy(), rtol=2 ** -6)


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
    as_saved(image * 2)
    for b, a in zip(before, (feats["a"], targets["a"], image)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_as_saved_is_the_clamped_image_with_the_gradient_of_the_unclamped_one(dtype):
    image = torch.tensor([[-0.5, 0.0, 0.3], [1.0, 1.7, 0.999]], dtype=dtype).requires_grad_(True)
    weights = torch.tensor([[2.0, -1.0, 3.0], [0.5, -4.0, 7.0]], dtype=dtype)
    out = as_saved(image)
    assert out.dtype == dtype
    assert out.tolist() == np.clip(image.detach().float().numpy(), 0, 1).astype(np.float32).tolist()
    (weights * out).sum().backward()
    assert torch.equal(image.grad, weights)  # a plain clamp would give 0 at -0.5 and 1.7


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


def _np_box_downscale(image: np.ndarray, k: int) -> np.ndarray:
    """(B, C, H, W) → k×k block means, the last partial block dropped: an independent downscale."""
    b, c, h, w = image.shape
    h, w = h // k * k, w // k * k
    return image[:, :, :h, :w].reshape(b, c, h // k, k, w // k, k).mean(axis=(3, 5))


def test_style_scales_one_is_the_single_scale_loss():
    torch.manual_seed(3)
    vgg = VGGFeatures("vgg16", ["relu1_2", "relu2_2"])
    plain = LossSpec(content_layers="relu2_2", style_layers="relu1_2,relu2_2", style_weight=7.0)
    scaled = LossSpec(content_layers="relu2_2", style_layers="relu1_2,relu2_2", style_weight=7.0, style_scales="1")
    assert scaled.style_scales == (1.0,) and parse_scales("1,0.5") == (1.0, 0.5)
    content, style, image = torch.rand(2, 3, 16, 16), torch.rand(1, 3, 24, 24), torch.rand(2, 3, 16, 16)
    a = perceptual_losses(vgg, image, content_targets(vgg, content, plain), style_grams(vgg, style, plain), plain)
    b = perceptual_losses(vgg, image, content_targets(vgg, content, scaled), style_grams(vgg, style, scaled), scaled)
    for key in ("content", "style", "tv", "total"):
        assert torch.equal(a[key], b[key])


def test_multi_scale_style_loss_averages_scales_and_its_gradient_runs_through_the_downscale():
    torch.manual_seed(4)
    vgg = VGGFeatures("vgg16", ["relu1_2", "relu2_2"])
    spec = LossSpec(content_layers="relu2_2", style_layers="relu1_2,relu2_2", content_weight=0.0, style_weight=5.0,
                    style_scales="1,0.5,0.25")
    style = torch.rand(1, 3, 32, 32)
    start = torch.rand(1, 3, 32, 32)
    image = start.clone().requires_grad_(True)
    losses = perceptual_losses(vgg, image, content_targets(vgg, image.detach(), spec), style_grams(vgg, style, spec),
                               spec)
    losses["style"].backward()

    # Independently: block means in numpy, then VGG and the single-scale style loss at each scale.
    reference = start.clone().requires_grad_(True)
    expected = 0
    for k in (1, 2, 4):
        kernel = torch.full((3, 1, k, k), 1.0 / (k * k))
        small = torch.nn.functional.conv2d(reference, kernel, stride=k, groups=3)  # box filter as a convolution
        np.testing.assert_allclose(small.detach().numpy(), _np_box_downscale(start.numpy(), k), rtol=1e-5,
                                   atol=1e-6)
        target = torch.from_numpy(_np_box_downscale(style.numpy(), k)).float()
        target_feats = vgg(target)
        grams = {n: gram_matrix(target_feats[n]) for n in spec.style_layers}
        expected = expected + style_loss(vgg(small), grams, spec.style_layers)
    expected = 5.0 * expected / 3
    expected.backward()
    torch.testing.assert_close(losses["style"], expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(image.grad, reference.grad, rtol=1e-3, atol=1e-8)

    # Only the ¼ scale: the gradient still reaches every pixel, through the 4×4 box filter.
    quarter = LossSpec(content_layers="relu2_2", style_layers="relu1_2", content_weight=0.0, style_scales="0.25")
    image.grad = None
    loss = perceptual_losses(vgg, image, content_targets(vgg, image.detach(), quarter),
                             style_grams(vgg, style, quarter), quarter)["style"]
    loss.backward()
    assert (image.grad != 0).float().mean() > 0.99
    # Within each 4×4 block the gradient is the same for every pixel (the box filter's adjoint).
    blocks = image.grad.reshape(1, 3, 8, 4, 8, 4)
    torch.testing.assert_close(blocks, blocks[:, :, :, :1, :, :1].expand_as(blocks))


def test_style_scales_are_validated():
    for bad in ("0", "1.5", "1,1", "", "a"):
        with pytest.raises(ConfigError, match="style-scales"):
            LossSpec(style_scales=bad)


def test_defaults_follow_the_loss_network_pytorch_examples_for_torchvision_the_recipe_for_caffe_vgg19(monkeypatch):
    examples = LossSpec()
    assert (examples.vgg_flavour, list(examples.style_layers), examples.content_weight, examples.style_weight,
            examples.style_scales) == ("torchvision", ["relu1_2", "relu2_2", "relu3_3", "relu4_3"], 1e5, 1e10, (1.0,))
    assert LossSpec(vgg="vgg19").style_weight == 1e10  # torchvision's VGG19: pytorch/examples' weights too
    caffe = LossSpec(vgg="vgg19", vgg_weights="weights/vgg19_caffe_block1-3.pth")
    assert (caffe.vgg_flavour, list(caffe.style_layers), list(caffe.content_layers), caffe.content_weight,
            caffe.style_weight, caffe.style_scales) == (
        "caffe", ["relu1_1", "relu2_1", "relu3_1"], ["relu2_2"], 1.0, 50.0, (1.0, 0.5, 0.25))
    assert LossSpec(vgg="vgg16", vgg_flavour="caffe").style_weight == 1e10  # the recipe is the Caffe VGG19's
    given = LossSpec(vgg="vgg19", vgg_flavour="caffe", style_weight=200.0, style_scales="1")
    assert (given.style_weight, given.style_scales, given.content_weight) == (200.0, (1.0,), 1.0)
    monkeypatch.setenv(VGG_WEIGHTS_ENV, "/models/vgg19-d01eb7cb.pth")  # the official Caffe file, from the variable
    assert LossSpec(vgg="vgg19").vgg_flavour == "caffe" and LossSpec(vgg="vgg19").style_weight == 50.0
    with pytest.raises(ConfigError, match="flavour"):
        LossSpec(vgg_flavour="bgr")


def shift_theta(dx: int, dy: int, width: int, height: int) -> torch.Tensor:
    """The affine matrix that moves an image's content by (dx, dy) whole pixels (right, down)."""
    return torch.tensor([[[1.0, 0.0, -2 * dx / width], [0.0, 1.0, -2 * dy / height]]])


def test_warp_by_whole_pixels_is_a_shift_and_the_mask_marks_the_uncovered_edge():
    image = torch.rand(1, 3, 12, 16)
    moved, inside = warp(image, shift_theta(3, -2, 16, 12))
    # Independent: the content moves 3 right and 2 up; the 3 left columns and 2 bottom rows come from off the image.
    expected = np.zeros((1, 3, 12, 16), np.float32)
    expected[..., :10, 3:] = image.numpy()[..., 2:, :13]
    mask = np.zeros((1, 1, 12, 16), np.float32)
    mask[..., :10, 3:] = 1
    np.testing.assert_array_equal(inside.numpy(), mask)
    np.testing.assert_allclose((moved * inside).numpy(), expected, atol=1e-6)


def test_temporal_loss_is_zero_for_a_stylization_that_follows_motion_and_the_mse_otherwise():
    photo = torch.rand(2, 3, 20, 24)
    theta = torch.cat([shift_theta(2, 1, 24, 20), shift_theta(-1, 3, 24, 20)])
    moved_photo = warp(photo, theta)[0]

    def follows(x):  # a per-pixel "stylization": moving commutes with it
        return x.flip(1).sqrt()

    assert temporal_loss(follows(photo), follows(moved_photo), theta).item() < 1e-12
    # A stylization that ignores motion (it draws a fixed pattern): the loss is the MSE over the kept pixels.
    pattern = torch.rand(1, 3, 20, 24).expand(2, -1, -1, -1)
    _, inside = warp(pattern, theta)
    moved_pattern = warp(pattern, theta)[0]
    keep = inside.expand(-1, 3, -1, -1).bool().numpy()
    expected = np.mean(((moved_pattern - pattern).numpy()[keep]).astype(np.float64) ** 2)
    np.testing.assert_allclose(temporal_loss(pattern, pattern, theta).item(), expected, rtol=1e-5)
    stylized = pattern.clone().requires_grad_(True)
    temporal_loss(stylized, pattern, theta).backward()
    assert stylized.grad.abs().sum() > 0


def test_random_motions_are_small_repeatable_and_varied():
    a = random_motion(64, torch.Generator().manual_seed(3))
    assert torch.equal(a, random_motion(64, torch.Generator().manual_seed(3)))
    linear, shift = a[:, :, :2], a[:, :, 2]
    scale = torch.linalg.det(linear).sqrt()  # 1/zoom
    assert ((1 / scale - 1).abs() <= MOTION["zoom"] + 1e-6).all() and (1 / scale - 1).abs().max() > MOTION["zoom"] / 2
    assert (shift.abs() <= 2 * MOTION["shift"] + 1e-6).all() and shift.abs().max() > MOTION["shift"]
    turn = torch.rad2deg(torch.atan2(linear[:, 1, 0], linear[:, 0, 0]))
    assert (turn.abs() <= MOTION["degrees"] + 1e-4).all() and turn.abs().max() > MOTION["degrees"] / 2
