"""Training several styles in one network, and adding styles to a trained one.

* **training** several styles at once draws a style per batch item
  (``StyleDraw``, a pure function of the seed, the rank and the step, so a
  resumed run draws what an uninterrupted one would) and scores each item
  against its own style's Gram matrices (``perceptual_losses`` with ``item_weights``);
* **adding** a style to a trained model (``fastnst train --init``) trains only
  the new rows of the norms (``add_styles`` + ``train_only_rows``): the old
  styles' outputs stay bit-identical; or, with ``--init-trains all``, every
  weight, each layer at a learning rate in proportion to its size
  (``scaled_groups``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from fastnst.checkpoint import load_model
from fastnst.errors import ConfigError
from fastnst.images import load_style_image
from fastnst.losses import LossSpec, style_targets
from fastnst.models.transformer import (
    ConditionalInstanceNorm,
    TransformerNet,
    TransformerSpec,
    norm_rows,
    with_norm_rows,
)
from fastnst.styles import check_unique, model_style_names
from fastnst.train import rng

log = logging.getLogger(__name__)

MAX_STYLE_PIXELS = 2048 * 2048


class StyleDraw:
    """Which style each batch item is trained on: uniformly among ``choices``, a function of (seed, rank, step).

    ``__call__(step, batch)`` returns the item indices (B,) and the one-hot
    style weights (B, N) for the network. Keyed on the step alone, so a resumed
    run draws exactly what an uninterrupted one would.
    """

    def __init__(self, choices: Sequence[int], num_styles: int, seed: int, rank: int = 0) -> None:
        self.choices = torch.tensor(list(choices), dtype=torch.long)
        self.num_styles, self.seed, self.rank = num_styles, seed, rank

    def __call__(self, step: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = rng.generator((self.seed * 1_000_003 + self.rank) * 10_000_019 + step)
        picks = self.choices[torch.randint(len(self.choices), (batch,), generator=generator)]
        return picks, F.one_hot(picks, self.num_styles).float()


def target_grams(vgg: torch.nn.Module, paths: Sequence[str], style_size: int | None, spec: LossSpec,
                 device: torch.device) -> dict[str, torch.Tensor]:
    """Gram matrices of every style image (``fastnst.losses.style_targets``): (S, C, C) fp32 per key, in ``paths``
    order, each image loaded by the one style-size rule (``fastnst.images.load_style_image``).

    A style image over ``MAX_STYLE_PIXELS`` is refused with the fix (``--style-size``): the loss network's
    activations of a 12000×8000 painting would need tens of GB.
    """
    images = []
    for path in paths:
        image = load_style_image(path, style_size)
        if image.shape[-1] * image.shape[-2] > MAX_STYLE_PIXELS:
            raise ConfigError(f"{path}: the style image is {image.shape[-1]}x{image.shape[-2]} px, too large for the "
                              "loss network's memory; give --style-size (e.g. 512; at most 2048)")
        images.append(image.to(device))
    return style_targets(vgg, images, spec)


def training_network(spec: TransformerSpec, names: tuple[str, ...], init: str | None, keep_init: bool = False
                     ) -> tuple[TransformerNet, tuple[str, ...], int]:
    """The network a run trains, all its style names, and the index of its first trained style.

    Without ``init``: a fresh ``spec`` network carrying ``names`` (0). With
    ``init``: that model file's network grown by ``names`` (its own spec wins),
    the first new style's index being its old style count. A new style named
    like one of the init model's starts from that style's rows (it goes on
    training), any other from the mean of its rows. The new names must differ
    from the init model's only when its styles are kept in the output
    (``keep_init``); otherwise a clashing old name is marked ``NAME (init)``.
    """
    if init is None:
        return TransformerNet(spec.with_styles(len(names))), names, 0
    base, info = load_model(init)
    old = model_style_names(info.styles, base.spec.num_styles)
    if keep_init:
        check_unique(old + names)
    starts = [old.index(name) if name in old else None for name in names]
    log.info("adding style(s) %s to %s (styles %s)%s", ", ".join(names), init, ", ".join(old),
             "".join(f"; {name} starts from its rows there" for name, at in zip(names, starts) if at is not None))
    if not keep_init:
        old = tuple(f"{name} (init)" if name in names else name for name in old)
    return add_styles(base, len(names), starts), old + names, base.spec.num_styles


class StyleTargets:
    """What a training run needs to know about its styles: targets, weights, the draw, what trains.

    ``grams`` are the style images' Grams, (S, C, C) per layer for the S
    trained styles (network styles ``first:``); ``multi`` says whether the
    network carries several styles, in which case ``for_step(step, batch)``
    gives the one-hot style weights (B, N), each item's Grams (B, C, C) and its
    style-loss weight (B,), which ``fastnst.losses.perceptual_losses`` scores.
    """

    def __init__(self, vgg: torch.nn.Module, config, first: int, num_styles: int, spec: LossSpec,
                 device: torch.device, rank: int = 0) -> None:
        self.first, self.num_styles = first, num_styles
        self.multi, self.trains = num_styles > 1, config.init_trains if config.init else None  # None: everything
        self.grams = target_grams(vgg, config.style, config.style_size, spec, device)
        weights = config.style_weights or (spec.style_weight,) * len(config.style)
        self.weights = torch.tensor(weights, dtype=torch.float32, device=device)
        self._draw = StyleDraw(range(first, num_styles), num_styles, config.seed, rank)

    def parameters(self, model: TransformerNet, lr: float) -> list[torch.nn.Parameter] | list[dict]:
        """What the optimiser updates: everything, only the new styles' norm rows when adding styles, or (fine-tuning
        a trained model) everything in ``scaled_groups`` of ``lr``."""
        if self.trains == "rows":
            return train_only_rows(model, self.first)
        return scaled_groups(model, lr) if self.trains == "all" else list(model.parameters())

    def for_step(self, step: int, batch: int):
        """What step ``step`` scores a batch of ``batch`` photos against: (style weights (B, N) or None, target
        Grams, per-item style-loss weights (B,) or None). One style: None, its Grams, None (the spec's weight)."""
        if not self.multi:
            return None, self.grams, None
        return self.draw(step, batch)

    def draw(self, step: int, batch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        picks, style = self._draw(step, batch)
        items = (picks - self.first).to(self.weights.device)
        return style.to(self.weights.device), {k: g[items] for k, g in self.grams.items()}, self.weights[items]

    def for_samples(self, count: int, device: torch.device) -> torch.Tensor | None:
        """Style weights for the sample grid: the trained styles in turn (None for a single-style network)."""
        if not self.multi:
            return None
        picks = self.first + torch.arange(count) % (self.num_styles - self.first)
        return F.one_hot(picks, self.num_styles).float().to(device)


def add_styles(model: TransformerNet, count: int, starts: Sequence[int | None] = ()) -> TransformerNet:
    """A copy of ``model`` with ``count`` more styles; new style ``i`` starts at the rows of old style
    ``starts[i]``, or (None, or no ``starts``) at the mean of the old rows.

    The shared weights and the old rows are copied exactly, so the old styles'
    outputs do not change.
    """
    starts = list(starts) or [None] * count

    def new_rows(rows: torch.Tensor) -> torch.Tensor:
        mean = rows.mean(dim=0)
        return torch.stack([mean if at is None else rows[at] for at in starts])

    return with_norm_rows(model, {key: torch.cat([rows, new_rows(rows)]) for key, rows in norm_rows(model).items()})


def scaled_groups(model: TransformerNet, lr: float) -> list[dict]:
    """Adam parameter groups for fine-tuning every weight of a trained network: the norm rows (first group) at the
    run's lr, each convolution's weight and bias at the lr times its weight's RMS over the median convolution's.

    Adam moves every weight by about the lr per step whatever its size. The converted pytorch/examples networks
    (the bundled trunk) keep their 0–255 training in their first and last layers: the first layer's weights are
    ~250x larger than the others, the last's ~200x smaller (RMS ~40 and ~0.001 against ~0.17), so one lr would
    freeze the first and blow up the last. Scaled, every layer moves by the same fraction of its size (the
    schedule then multiplies every group's lr alike).
    """
    total = len(list(model.parameters()))
    convs = [module for module in model.modules() if isinstance(module, torch.nn.Conv2d)]
    sizes = torch.stack([conv.weight.detach().float().pow(2).mean().sqrt() for conv in convs])
    median = sizes.median().clamp_min(1e-12)
    rows = [param for _, norm in model.norm_layers() for param in norm.parameters()]
    groups = [{"params": rows, "lr": lr}]
    for conv, size in zip(convs, sizes.tolist()):
        groups.append({"params": list(conv.parameters()), "lr": lr * max(size, 1e-12) / median.item()})
    covered = sum(len(group["params"]) for group in groups)
    if covered != total:
        raise ConfigError(f"{type(model).__name__}: {covered} of its {total} parameters are "
                          "in a convolution or a norm; --init-trains all does not know how to scale the rest")
    return groups


def train_only_rows(model: TransformerNet, first: int) -> list[torch.nn.Parameter]:
    """Freeze ``model`` but the norm rows ``first:`` (the new styles); returns the parameters to optimise.

    The other rows get a zero gradient (a hook), so Adam leaves them exactly
    as they are (its moments stay 0 and so does its step).
    """
    for param in model.parameters():
        param.requires_grad_(False)
    trainable = []
    for _, norm in model.norm_layers():
        if not isinstance(norm, ConditionalInstanceNorm):
            raise ConfigError("only a multi-style network can train some styles alone")
        for param in (norm.weight, norm.bias):
            param.requires_grad_(True)
            param.register_hook(lambda grad: torch.cat([torch.zeros_like(grad[:first]), grad[first:]]))
            trainable.append(param)
    return trainable
