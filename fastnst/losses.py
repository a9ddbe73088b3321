"""Perceptual losses of neural style transfer: content, Gram-matrix style and total variation.

Pure functions: they read tensors and never modify them. Training, pixel
optimisation (``fastnst optimize``) and scoring (``fastnst score``) all call
``perceptual_losses``, so a loss value means the same thing everywhere.

Normalisation (fixed, so weights transfer between image sizes and batch sizes):

* Gram matrix of a (B, C, H, W) activation: ``F Fᵀ / (C·H·W)``, shape (B, C, C);
* content loss: mean squared error between activations, per layer, weighted sum;
* style loss: mean squared error between Gram matrices, per layer, weighted sum;
* total variation: mean squared difference of horizontally and vertically
  neighbouring pixels (on the 0–1 image), summed over the two directions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from fastnst.errors import ConfigError


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) activations → (B, C, C) Gram matrices divided by C·H·W, always in fp32.

    Under fp16 autocast the sum over H·W overflows (activations of 100s squared
    over 65k pixels), so the product is computed with autocast off in fp32.
    """
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w).float()
    with torch.autocast(device_type=flat.device.type, enabled=False):
        gram = torch.bmm(flat, flat.transpose(1, 2))
    return gram / (c * h * w)


def content_loss(features: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor],
                 weights: Mapping[str, float]) -> torch.Tensor:
    """Σ_layer weight · MSE(features[layer], targets[layer]), computed in fp32."""
    terms = [w * F.mse_loss(features[name].float(), targets[name].float()) for name, w in weights.items()]
    return torch.stack(terms).sum()


def style_loss(features: Mapping[str, torch.Tensor], target_grams: Mapping[str, torch.Tensor],
               weights: Mapping[str, float]) -> torch.Tensor:
    """Σ_layer weight · MSE(gram(features[layer]), target_grams[layer]).

    ``target_grams[layer]`` is (1, C, C) — one style for the whole batch — or
    (B, C, C), one per batch item (several styles in one batch).
    """
    terms = []
    for name, w in weights.items():
        gram = gram_matrix(features[name])
        target = target_grams[name].to(gram.dtype).expand_as(gram)
        terms.append(w * F.mse_loss(gram, target))
    return torch.stack(terms).sum()


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Total variation of a (B, C, H, W) image: mean squared neighbour difference, both directions.

    An image one pixel high or wide has no pairs in that direction, which
    contributes zero.
    """
    image = image.float()
    loss = image.new_zeros(())
    if image.shape[-2] > 1:
        loss = loss + (image[..., 1:, :] - image[..., :-1, :]).pow(2).mean()
    if image.shape[-1] > 1:
        loss = loss + (image[..., :, 1:] - image[..., :, :-1]).pow(2).mean()
    return loss


def parse_layer_weights(text: str | Mapping[str, float]) -> dict[str, float]:
    """``"relu1_1,relu2_1:0.5"`` → ``{"relu1_1": 1.0, "relu2_1": 0.5}`` (weight 1 when omitted)."""
    if isinstance(text, Mapping):
        return {str(k): float(v) for k, v in text.items()}
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, weight = item.partition(":")
        try:
            out[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise ConfigError(f"bad layer weight {item!r}: write layer or layer:weight, e.g. relu2_1:0.5") from None
    if not out:
        raise ConfigError(f"no layers in {text!r}: give comma-separated names like relu1_2,relu2_2")
    return out


@dataclass(frozen=True)
class LossSpec:
    """Which VGG layers feed which loss, and how the three losses are weighted.

    Defaults follow pytorch/examples (VGG16 activations, weights for the
    torchvision flavour). Layer weights multiply each layer's term inside its loss.
    ``vgg``, ``vgg_weights`` and ``vgg_flavour`` say which loss network computes the
    activations (see ``fastnst.pretrained.load_vgg``; ``None`` weights: the
    environment variable or the official download).

    The flavours see images at different scales (Caffe: 0–255 minus mean), so
    their activations, and the useful content/style weights, differ by orders of
    magnitude: tune the weights per flavour.
    """

    vgg: str = "vgg16"
    vgg_weights: str | None = None
    vgg_flavour: str = "auto"
    content_layers: Mapping[str, float] = field(default_factory=lambda: {"relu2_2": 1.0})
    style_layers: Mapping[str, float] = field(
        default_factory=lambda: {"relu1_2": 1.0, "relu2_2": 1.0, "relu3_3": 1.0, "relu4_3": 1.0})
    content_weight: float = 1e5
    style_weight: float = 1e10
    tv_weight: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "content_layers", parse_layer_weights(self.content_layers))
        object.__setattr__(self, "style_layers", parse_layer_weights(self.style_layers))
        for name in ("content_weight", "style_weight", "tv_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")

    @property
    def layers(self) -> tuple[str, ...]:
        """Every VGG layer either loss reads, without repeats."""
        return tuple(dict.fromkeys([*self.content_layers, *self.style_layers]))


def style_grams(vgg: torch.nn.Module, style: torch.Tensor, spec: LossSpec) -> dict[str, torch.Tensor]:
    """Target Gram matrices of a (B, 3, H, W) style batch, one (B, C, C) per style layer, no gradient."""
    with torch.no_grad():
        features = vgg(style)
        return {name: gram_matrix(features[name]) for name in spec.style_layers}


def content_targets(vgg: torch.nn.Module, content: torch.Tensor, spec: LossSpec) -> dict[str, torch.Tensor]:
    """Content-layer activations of a (B, 3, H, W) content batch, no gradient."""
    with torch.no_grad():
        features = vgg(content)
        return {name: features[name] for name in spec.content_layers}


def perceptual_losses(vgg: torch.nn.Module, image: torch.Tensor, content: Mapping[str, torch.Tensor],
                      grams: Mapping[str, torch.Tensor], spec: LossSpec) -> dict[str, torch.Tensor]:
    """Weighted content, style and TV losses of ``image`` (B, 3, H, W, 0–1) and their sum.

    ``content`` comes from ``content_targets`` and ``grams`` from ``style_grams``.
    Returns scalar tensors ``content``, ``style``, ``tv`` (already multiplied by
    their weights) and ``total``; gradients flow to ``image``.
    """
    features = vgg(image)
    losses = {
        "content": spec.content_weight * content_loss(features, content, spec.content_layers),
        "style": spec.style_weight * style_loss(features, grams, spec.style_layers),
        "tv": spec.tv_weight * tv_loss(image),
    }
    losses["total"] = losses["content"] + losses["style"] + losses["tv"]
    return losses
