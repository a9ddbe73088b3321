"""Scoring images under a loss configuration, and the style/content targets optimisation shares.

``fastnst score`` measures the content, style and total-variation losses of any
image (a fast network's output, an optimised image, the photo itself) with the
very functions training uses (``fastnst.losses.perceptual_losses``), so a fast
model and pixel optimisation can be compared on the same footing.

The target helpers below are also what ``fastnst optimize`` builds its targets
with, so ``score`` run on an optimised image with the same options reproduces the
loss the optimisation reports (up to 8-bit rounding of the saved file):

* the content image is resized (Lanczos) to exactly the scored image's size;
* each style image is resized so its long side is ``style_size`` (default: the
  scored image's long side) and its Gram matrices are blended with the
  ``style_blend`` weights (normalised to sum to 1).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from PIL import Image

from fastnst.device import DEVICE_CHOICES, resolve_device
from fastnst.errors import ConfigError, ImageError
from fastnst.images import DEFAULT_MAX_PIXELS, open_image, resize_to, scaled_size, to_tensor
from fastnst.losses import (
    LossSpec,
    check_image_size,
    content_targets,
    downscale,
    perceptual_losses,
    scale_key,
    style_loss,
    style_targets,
)

log = logging.getLogger(__name__)

LOSS_NAMES = ("content", "style", "tv")


def parse_blend(text: str | Sequence[float] | None, count: int) -> tuple[float, ...]:
    """``"0.7,0.3"`` (or a sequence) → weights for ``count`` styles, normalised to sum to 1.

    ``None`` gives equal weights. Raises ``ConfigError`` for non-numbers, a count
    that differs from the number of styles, negative weights, or all zeros.
    """
    if text is None:
        return (1.0 / count,) * count
    if isinstance(text, str):
        try:
            values = [float(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise ConfigError(f"--style-blend {text!r}: write one number per style image, e.g. 0.7,0.3") from None
    else:
        values = [float(v) for v in text]
    if len(values) != count:
        raise ConfigError(f"--style-blend has {len(values)} weight(s) but there are {count} style image(s): "
                          "give one weight per style, in the same order")
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ConfigError(f"--style-blend weights must be finite and >= 0, got {','.join(map(str, values))}")
    total = sum(values)
    if total <= 0:
        raise ConfigError("--style-blend weights are all zero: give at least one positive weight")
    return tuple(v / total for v in values)


def content_batch(content: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """The content photo resized to ``size`` = (width, height) → (1, 3, H, W) in 0–1."""
    return to_tensor(resize_to(content, size))[None]


def blended_grams(vgg: torch.nn.Module, styles: Sequence[Image.Image], weights: Sequence[float], long_side: int,
                  spec: LossSpec, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Target Grams Σᵢ wᵢ·Gram(styleᵢ) of PIL style images, each resized so its long side is ``long_side``.

    ``fastnst.losses.style_targets`` with ``blend``; with weights (1, 0) it
    equals the first style's Grams exactly (a weight of 0 skips its image).
    """
    kept = [(style, w) for style, w in zip(styles, weights) if w != 0]
    images = [to_tensor(resize_to(style, scaled_size(*style.size, long_side)))[None].to(device) for style, _ in kept]
    return style_targets(vgg, images, spec, blend=[w for _, w in kept])


def read_image(path: str | Path, max_pixels: int | None, role: str) -> Image.Image:
    """``open_image`` whose error names the role (content, style, init) of the file."""
    try:
        return open_image(path, max_pixels)
    except ImageError as exc:
        raise ImageError(exc.path, f"{exc.reason} (the {role} image)") from None


@dataclass(frozen=True)
class ScoreConfig:
    """Options of ``fastnst score``: which images to score, against which content and style, with which losses."""

    images: tuple[str, ...]
    content: str
    styles: tuple[str, ...]
    style_blend: tuple[float, ...] | str | None = None
    loss: LossSpec = field(default_factory=LossSpec)
    style_size: int | None = None
    device: str = "auto"
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", tuple(str(i) for i in self.images))
        object.__setattr__(self, "styles", tuple(str(s) for s in self.styles))
        if not self.images:
            raise ConfigError("no images to score: name one or more image files")
        if not self.styles:
            raise ConfigError("no style image: give --style FILE (several for a blend)")
        object.__setattr__(self, "style_blend", parse_blend(self.style_blend, len(self.styles)))
        if self.style_size is not None and self.style_size < 1:
            raise ConfigError(f"--style-size must be a positive number of pixels, got {self.style_size}")
        if self.device.split(":")[0] not in DEVICE_CHOICES:
            raise ConfigError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICE_CHOICES)}")


@dataclass
class ScoreReport:
    """One row per scored image (``image``, ``width``, ``height``, weighted ``content``/``style``/``tv``/``total``
    and ``unweighted`` losses), and the images that could not be scored with the reason."""

    rows: list[dict] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def score_tensor(vgg: torch.nn.Module, image: torch.Tensor, content: torch.Tensor, grams: dict[str, torch.Tensor],
                 spec: LossSpec) -> dict:
    """Losses of one (1, 3, H, W) image against a (1, 3, H, W) content and target Grams, as floats.

    Weighted losses are ``perceptual_losses`` itself; the unweighted ones divide by
    each weight, or re-run with a weight of 1 where the weight is 0.
    """
    with torch.no_grad():
        weighted = perceptual_losses(vgg, image, content_targets(vgg, content, spec), grams, spec)
        row = {name: float(value) for name, value in weighted.items()}
        weights = {name: getattr(spec, f"{name}_weight") for name in LOSS_NAMES}
        raw = {name: row[name] / w for name, w in weights.items() if w > 0}
        if len(raw) < len(LOSS_NAMES):
            unit = replace(spec, content_weight=1.0, style_weight=1.0, tv_weight=1.0)
            again = perceptual_losses(vgg, image, content_targets(vgg, content, unit), grams, unit)
            raw.update({name: float(again[name]) for name in LOSS_NAMES if name not in raw})
    row["unweighted"] = {name: raw[name] for name in LOSS_NAMES}
    return row


def style_ratios(vgg: torch.nn.Module, stylized: torch.Tensor, photo: torch.Tensor, style: torch.Tensor,
                 spec: LossSpec) -> dict[float, float]:
    """How near the painting a stylization is, at each of ``spec.style_scales``: its style loss over the photo's.

    ``stylized`` and ``photo`` are (1, 3, H, W) in 0–1, ``style`` (1, 3, h, w),
    used as given (resize it first). 0 is the painting's texture exactly, 1 no
    nearer than the photo itself; the bundled styles' bar is 0.10 at 1, ½ and ¼
    (docs/recipe.md). Layer weights count; loss weights do not (they cancel).
    """
    with torch.no_grad():
        grams = style_targets(vgg, [style], spec)  # every scale's Grams at once
        ours, reference = (gram_errors(vgg, image, grams, spec) for image in (stylized, photo))
    return {scale: float(sum(ours[scale].values()) / sum(reference[scale].values())) for scale in spec.style_scales}


def style_terms(vgg: torch.nn.Module, image: torch.Tensor, grams: dict[str, torch.Tensor], spec: LossSpec
                ) -> dict[str, float]:
    """Each style layer's part, at each scale, of the weighted style loss of ``image`` (1, 3, H, W, 0–1).

    Keys are ``style_grams``' (``relu3_1@0.25``); the values sum to ``perceptual_losses``'
    style. Why: a total says how far a model is from the painting, the terms say where —
    for the bundled styles against optimization, mostly relu2_1 and relu3_1 at ½ and ¼
    (docs/recipe.md, "Where the gap lives").
    """
    with torch.no_grad():
        errors = gram_errors(vgg, image, grams, spec)
    return {scale_key(layer, scale): float(error) * spec.style_weight / len(spec.style_scales)
            for scale, layers in errors.items() for layer, error in layers.items()}


def gram_errors(vgg: torch.nn.Module, image: torch.Tensor, grams: dict[str, torch.Tensor], spec: LossSpec
                ) -> dict[float, dict[str, torch.Tensor]]:
    """Per scale, per style layer: the layer-weighted Gram MSE of ``image`` against ``grams``, before the loss
    weight — what ``style_ratios`` divides and ``style_terms`` weighs (the same ``style_loss`` training uses)."""
    errors = {}
    for scale in spec.style_scales:
        features = vgg(downscale(image, scale))
        errors[scale] = {layer: style_loss(features, {layer: grams[scale_key(layer, scale)]}, {layer: weight})
                         for layer, weight in spec.style_layers.items()}
    return errors


def score_images(config: ScoreConfig) -> ScoreReport:
    """Score every image of ``config``; unreadable or too-small images are reported and skipped.

    Raises ``ImageError`` when the content or a style image cannot be read, and
    ``WeightsError`` when the loss network cannot be loaded: no image could be
    scored then.
    """
    from fastnst.pretrained import load_loss_network

    device = resolve_device(config.device)
    spec = config.loss
    content = read_image(config.content, config.max_pixels, "content")
    styles = [read_image(path, config.max_pixels, "style") for path in config.styles]
    vgg = load_loss_network(spec, device)
    grams_by_side: dict[int, dict[str, torch.Tensor]] = {}
    report = ScoreReport()
    for path in config.images:
        try:
            img = open_image(path, config.max_pixels)
            problem = check_image_size(*img.size, spec)
            if problem:
                raise ImageError(path, problem)
            side = config.style_size or max(img.size)
            if side not in grams_by_side:
                grams_by_side[side] = blended_grams(vgg, styles, config.style_blend, side, spec, device)
            row = score_tensor(vgg, to_tensor(img)[None].to(device), content_batch(content, img.size).to(device),
                               grams_by_side[side], spec)
        except ImageError as exc:
            log.warning("%s: %s", path, exc.reason)
            report.failed.append((str(path), exc.reason))
            continue
        report.rows.append({"image": str(path), "width": img.width, "height": img.height, **row})
    return report
