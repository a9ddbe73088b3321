"""Perceptual losses of neural style transfer: content, Gram-matrix style and total variation.

Pure functions: they read tensors and never modify them. Training, pixel
optimisation (``fastnst optimize``) and scoring (``fastnst score``) all call
``perceptual_losses``, so a loss value means the same thing everywhere.

Normalisation (fixed, so weights transfer between image sizes and batch sizes):

* Gram matrix of a (B, C, H, W) activation: ``F Fᵀ / (C·H·W)``, shape (B, C, C);
* content loss: mean squared error between activations, per layer, weighted sum;
* style loss: mean squared error between Gram matrices, per layer, weighted sum;
* total variation: mean squared difference of horizontally and vertically
  neighbouring pixels (on the 0–1 image), summed over the two directions;
* temporal consistency (training only): mean squared difference, on the 0–1
  image, between the stylization moved by a small motion and the stylization of
  the photo moved by it (``temporal_loss``), over the pixels the motion keeps.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fastnst.errors import ConfigError


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) activations → (B, C, C) Gram matrices divided by C·H·W, always returned in fp32.

    fp16 activations are widened first: their sum over H·W overflows fp16
    (activations of 100s squared over 65k pixels). bf16 ones are multiplied as
    they are: bf16 has fp32's range, the product accumulates in fp32, and only
    its result is rounded to bf16 (relative error ~0.2%, far below what the
    loss resolves); on a CPU with bf16 instructions this is 2.3× faster than
    fp32, a tenth of a bf16 training step (``scripts/bench_train.py``).
    """
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    if flat.dtype != torch.bfloat16:
        flat = flat.float()
    with torch.autocast(device_type=flat.device.type, enabled=False):
        gram = torch.bmm(flat, flat.transpose(1, 2))
    return gram.float() / (c * h * w)


def content_loss(features: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor],
                 weights: Mapping[str, float]) -> torch.Tensor:
    """Σ_layer weight · MSE(features[layer], targets[layer]), computed in fp32."""
    terms = [w * F.mse_loss(features[name].float(), targets[name].float()) for name, w in weights.items()]
    return torch.stack(terms).sum()


def style_loss(features: Mapping[str, torch.Tensor], target_grams: Mapping[str, torch.Tensor],
               weights: Mapping[str, float], item_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_layer weight · MSE(gram(features[layer]), target_grams[layer]).

    ``target_grams[layer]`` is (1, C, C) — one style for the whole batch — or
    (B, C, C), one per batch item (several styles in one batch). With
    ``item_weights`` (B,) each item's layer-weighted Gram MSE is multiplied by
    its own weight and the batch mean taken (what a batch mixing styles needs).
    """
    per_item = 0
    for name, w in weights.items():
        gram = gram_matrix(features[name])
        target = target_grams[name].to(gram.dtype).expand_as(gram)
        per_item = per_item + w * (gram - target).pow(2).mean(dim=(1, 2))
    if item_weights is not None:
        per_item = item_weights.to(per_item.dtype) * per_item
    return per_item.mean()


def as_saved(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) network output → the same clamped to 0–1, as a saved picture holds it, with the gradient of
    the unclamped output.

    Training takes its losses on this by default: on the raw output, pixels outside 0–1 lower the loss and are
    then lost when the picture is saved (a starry_night trained that way scores 11–28% worse clamped than raw;
    docs/recipe.md, t14). A plain clamp has no gradient outside the range, so a pixel there would get no pull
    back; the gradient passes straight through instead.
    """
    return image + (image.clamp(0, 1) - image).detach()


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


# The small motions of the temporal term, as between two video frames: per item a shift of up to 2% of the image,
# a zoom of up to ±2%, a turn of up to 1°, and sensor noise of 1/100 (σ, on 0–1 pixels) on the moved photo.
MOTION = {"shift": 0.02, "zoom": 0.02, "degrees": 1.0, "noise": 0.01}


def random_motion(batch: int, generator: torch.Generator) -> torch.Tensor:
    """(B, 2, 3) affine matrices of small random motions (``MOTION``) in ``F.affine_grid``'s convention: the
    moved image at output point p shows the original at ``theta @ [p, 1]`` (coordinates in -1..1)."""
    draw = torch.rand(batch, 4, generator=generator) * 2 - 1  # uniform in -1..1: shift x, shift y, zoom, turn
    zoom = 1 + MOTION["zoom"] * draw[:, 2]
    turn = torch.deg2rad(MOTION["degrees"] * draw[:, 3])
    cos, sin = torch.cos(turn) / zoom, torch.sin(turn) / zoom
    shift = 2 * MOTION["shift"] * draw[:, :2]  # a fraction of the image is twice that in -1..1 coordinates
    return torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)


def warp(images: torch.Tensor, theta: torch.Tensor, padding: str = "zeros") -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` (B, C, H, W) moved by ``theta`` (B, 2, 3), bilinear; and a (B, 1, H, W) mask of the output pixels
    whose source lies inside the image (1) rather than off its edge (0; filled per ``padding``)."""
    theta = theta.to(device=images.device, dtype=torch.float32)
    with torch.autocast(device_type=images.device.type, enabled=False):  # sampling positions need fp32
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        moved = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode=padding, align_corners=False)
    # Inside means between the outermost pixel centres, where bilinear sampling reads no padding.
    limit = grid.new_tensor([1 - 1 / images.shape[-1], 1 - 1 / images.shape[-2]])
    inside = (grid.abs() <= limit).all(dim=-1, keepdim=True).permute(0, 3, 1, 2)
    return moved, inside.to(moved.dtype)


def temporal_loss(stylized: torch.Tensor, stylized_moved: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """How much stylizing a moved photo differs from moving the photo's stylization (both (B, 3, H, W), 0–1).

    ``stylized_moved`` is the stylization of the photo moved by ``theta``
    (``warp``); a network whose output follows the photo's motion scores 0. The
    mean squared difference is taken over the pixels the motion keeps inside the
    image, so the edge the motion uncovers does not count. Gradients flow into
    both stylizations. This is the training side of video stability: the
    network learns to stylize the same content the same way after a small
    motion and some noise, which is what flickers from frame to frame.
    """
    moved, inside = warp(stylized, theta)
    squared = (moved - stylized_moved.float()).pow(2) * inside
    return squared.sum() / (inside.sum() * stylized.shape[1]).clamp(min=1)


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


def parse_scales(value: str | float | Sequence[float]) -> tuple[float, ...]:
    """``"1,0.5,0.25"`` (or numbers) → ``(1.0, 0.5, 0.25)``: the image scales the style loss is taken at.

    Each scale is in (0, 1] and appears once; their order is kept.
    """
    items = value.split(",") if isinstance(value, str) else ([value] if isinstance(value, (int, float)) else value)
    try:
        scales = tuple(float(item) for item in items if str(item).strip())
    except ValueError:
        raise ConfigError(f"--style-scales {value!r}: write numbers in (0, 1] separated by commas, "
                          "e.g. 1,0.5,0.25") from None
    if not scales or any(not (0 < s <= 1) for s in scales) or len(set(scales)) != len(scales):
        raise ConfigError(f"--style-scales {value!r}: give distinct numbers in (0, 1], e.g. 1,0.5,0.25")
    return scales


def scale_key(layer: str, scale: float) -> str:
    """The key of a style layer's Gram at one scale: ``relu2_1`` at scale 1, ``relu2_1@0.5`` at ½."""
    return layer if scale == 1 else f"{layer}@{scale:g}"


def downscale(image: torch.Tensor, scale: float) -> torch.Tensor:
    """(B, 3, H, W) → the image ``scale`` times smaller, antialiased and differentiable (the style pyramid).

    A scale of 1/k (k whole) is a k×k box filter (``avg_pool2d``: exact, cheap,
    and it runs under bf16 autocast on the CPU); any other scale is an
    antialiased bilinear resize computed in fp32. Sides never drop below 1.
    """
    if scale == 1:
        return image
    k = round(1 / scale)
    if abs(k * scale - 1) < 1e-9 and min(image.shape[-2:]) >= k:
        return F.avg_pool2d(image, k)
    size = [max(1, round(side * scale)) for side in image.shape[-2:]]
    with torch.autocast(device_type=image.device.type, enabled=False):
        return F.interpolate(image.float(), size=size, mode="bilinear", antialias=True, align_corners=False)


VGG_WEIGHTS_ENV = "FASTNST_VGG_WEIGHTS"  # a local VGG weight file used when --vgg-weights is not given

# Layers, weights and scales by loss network, for what a LossSpec leaves unset. The torchvision VGGs get
# pytorch/examples' choice (weights for 0–1 ImageNet-normalised activations). The Caffe VGG19 gets the recipe
# found in docs/recipe.md: its 0–255 activations make Grams thousands of times larger, so the weights are
# small, and the style is also taken at ½ and ¼ scale for the painting's larger strokes.
EXAMPLES_LOSS = {"content_layers": "relu2_2", "style_layers": "relu1_2,relu2_2,relu3_3,relu4_3",
                 "content_weight": 1e5, "style_weight": 1e10, "style_scales": (1.0,)}
CAFFE_VGG19_LOSS = {"content_layers": "relu2_2", "style_layers": "relu1_1,relu2_1,relu3_1",
                    "content_weight": 1.0, "style_weight": 50.0, "style_scales": (1.0, 0.5, 0.25)}


def vgg_weights_source(path: str | None) -> str | None:
    """The local VGG weight file a run uses: ``path``, else ``$FASTNST_VGG_WEIGHTS``, else None (the download)."""
    return str(path) if path else os.environ.get(VGG_WEIGHTS_ENV) or None


def loss_defaults(vgg: str, flavour: str) -> dict:
    """The layers, weights and scales a ``vgg`` network of ``flavour`` (caffe, torchvision) is used with by default."""
    return dict(CAFFE_VGG19_LOSS if (vgg, flavour) == ("vgg19", "caffe") else EXAMPLES_LOSS)


@dataclass(frozen=True)
class LossSpec:
    """Which VGG layers feed which loss, and how the three losses are weighted.

    ``vgg``, ``vgg_weights`` and ``vgg_flavour`` say which loss network computes
    the activations (see ``fastnst.pretrained.load_vgg``; ``None`` weights: the
    environment variable or the official download). ``auto`` flavour is resolved
    here from the weight file's name (``fastnst.models.vgg.detect_flavour``), and
    the layers, loss weights and style scales left as None take that network's
    defaults (``loss_defaults``): pytorch/examples' for the torchvision VGGs, the
    recipe of docs/recipe.md for the Caffe VGG19. Layer weights multiply each
    layer's term inside its loss.

    The flavours see images at different scales (Caffe: 0–255 minus mean), so
    their activations, and the useful content/style weights, differ by orders of
    magnitude: tune the weights per flavour.
    """

    vgg: str = "vgg16"
    vgg_weights: str | None = None
    vgg_flavour: str = "auto"
    content_layers: Mapping[str, float] | str | None = None
    style_layers: Mapping[str, float] | str | None = None
    content_weight: float | None = None
    style_weight: float | None = None
    tv_weight: float = 0.0
    style_scales: tuple[float, ...] | str | None = None

    def __post_init__(self) -> None:
        from fastnst.models.vgg import resolve_flavour

        flavour = resolve_flavour(self.vgg_flavour, vgg_weights_source(self.vgg_weights))
        object.__setattr__(self, "vgg_flavour", flavour)
        for name, value in loss_defaults(self.vgg, flavour).items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        object.__setattr__(self, "content_layers", parse_layer_weights(self.content_layers))
        object.__setattr__(self, "style_layers", parse_layer_weights(self.style_layers))
        object.__setattr__(self, "style_scales", parse_scales(self.style_scales))
        for name in ("content_weight", "style_weight", "tv_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0 and finite, got {value}")

    @property
    def layers(self) -> tuple[str, ...]:
        """Every VGG layer either loss reads, without repeats."""
        return tuple(dict.fromkeys([*self.content_layers, *self.style_layers]))


def style_grams(vgg: torch.nn.Module, style: torch.Tensor, spec: LossSpec) -> dict[str, torch.Tensor]:
    """Target Gram matrices of a (B, 3, H, W) style batch, no gradient: one (B, C, C) per style layer and scale.

    Keys are ``scale_key(layer, scale)``; at each of ``spec.style_scales`` the
    style image is downscaled exactly as the stylized image is in ``perceptual_losses``.
    """
    grams = {}
    with torch.no_grad():
        for scale in spec.style_scales:
            features = vgg(downscale(style, scale))
            grams.update({scale_key(name, scale): gram_matrix(features[name]) for name in spec.style_layers})
    return grams


def style_targets(vgg: torch.nn.Module, styles, spec: LossSpec, blend=None) -> dict[str, torch.Tensor]:
    """The target Grams of the style images ``styles`` ((1, 3, H, W) tensors, each its own size): the one way
    train, optimize, score and the evaluation scripts build them.

    Per key of ``style_grams``: (S, C, C), one row per style in order (a batch
    mixing styles indexes them); with ``blend`` (S weights summing to 1) the
    weighted sum (1, C, C), which is what a mix of styles is asked to match.
    Each image must be large enough for the deepest layer (``check_image_size``).
    """
    for image in styles:
        problem = check_image_size(image.shape[-1], image.shape[-2], spec)
        if problem:
            raise ConfigError(f"a style image is {problem}: use a larger --style-size (or a larger image)")
    per_style = [style_grams(vgg, image, spec) for image in styles]
    stacked = {key: torch.cat([grams[key] for grams in per_style]) for key in per_style[0]}
    if blend is None:
        return stacked
    weights = torch.as_tensor(list(blend), dtype=torch.float32)
    return {key: (weights.to(g.device)[:, None, None] * g).sum(0, keepdim=True) for key, g in stacked.items()}


def check_image_size(width: int, height: int, spec: LossSpec) -> str | None:
    """Why a ``width``×``height`` image is too small for the loss layers, or None when it is fine.

    A ``reluB_i`` activation sits behind B-1 max-pools, so an image side shorter
    than 2 ** (B-1) pixels would pool down to nothing.
    """
    from fastnst.models.vgg import layer_names

    valid = layer_names(spec.vgg)
    deepest = max(spec.layers, key=lambda name: valid.index(name) if name in valid else -1)
    need = 2 ** (int(deepest[4:].split("_")[0]) - 1)
    if min(width, height) >= need:
        return None
    return f"{width}x{height} px, too small for {deepest} (needs at least {need} px per side)"


def content_targets(vgg: torch.nn.Module, content: torch.Tensor, spec: LossSpec) -> dict[str, torch.Tensor]:
    """Content-layer activations of a (B, 3, H, W) content batch, no gradient."""
    with torch.no_grad():
        features = vgg(content)
        return {name: features[name] for name in spec.content_layers}


def perceptual_losses(vgg: torch.nn.Module, image: torch.Tensor, content: Mapping[str, torch.Tensor],
                      grams: Mapping[str, torch.Tensor], spec: LossSpec, item_weights: torch.Tensor | None = None
                      ) -> dict[str, torch.Tensor]:
    """Weighted content, style and TV losses of ``image`` (B, 3, H, W, 0–1) and their sum.

    ``content`` comes from ``content_targets`` and ``grams`` from ``style_grams``
    (Grams (1, C, C), or (B, C, C) for a batch mixing styles). The style loss is
    the mean over ``spec.style_scales`` of the style loss of ``image`` downscaled
    to that scale (inside the graph, so gradients flow through the pyramid).
    ``item_weights`` (B,): each item's style-loss weight, in place of
    ``spec.style_weight`` (several styles in one batch, each with its own weight).
    Returns scalar tensors ``content``, ``style``, ``tv`` (already multiplied by
    their weights) and ``total``; gradients flow to ``image``.
    """
    features = vgg(image)
    style = 0
    for scale in spec.style_scales:
        scaled = features if scale == 1 else vgg(downscale(image, scale))
        targets = {name: grams[scale_key(name, scale)] for name in spec.style_layers}
        style = style + style_loss(scaled, targets, spec.style_layers, item_weights)
    style_weight = 1.0 if item_weights is not None else spec.style_weight
    losses = {
        "content": spec.content_weight * content_loss(features, content, spec.content_layers),
        "style": style_weight * style / len(spec.style_scales),
        "tv": spec.tv_weight * tv_loss(image),
    }
    losses["total"] = losses["content"] + losses["style"] + losses["tv"]
    return losses
