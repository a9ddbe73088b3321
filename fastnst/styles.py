"""Several styles in one model: naming them, choosing and mixing them, training and merging them.

A multi-style network (``TransformerSpec.num_styles`` N > 1, conditional
instance norm) shares every convolution between its styles; a style is one row
of (scale, shift) in each InstanceNorm. So:

* **choosing** a style at inference is a weight vector (N,): one-hot for one
  style, a convex mix to blend them (``resolve_style`` turns ``--style`` /
  ``--style-mix`` into it, with a one-line error listing the model's styles);
* **training** several styles at once draws a style per batch item
  (``StyleDraw``, a pure function of the seed, the rank and the step, so a
  resumed run draws what an uninterrupted one would) and scores each item
  against its own style's Gram matrices (``style_batch_losses``);
* **adding** a style to a trained model trains only the new rows of the norms
  (``add_styles`` + ``train_only_rows``): the old styles' outputs stay bit-identical;
* **merging** model files works only when all their shared weights are equal
  (``merge_models``); separately trained models share nothing to merge.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from fastnst.errors import ConfigError, FastNSTError
from fastnst.images import load_image
from fastnst.losses import LossSpec, content_loss, gram_matrix, style_grams, tv_loss
from fastnst.models.transformer import ConditionalInstanceNorm, TransformerNet, TransformerSpec

log = logging.getLogger(__name__)


class MergeError(FastNSTError):
    """Model files that cannot become one multi-style model (their shared weights differ)."""


# -- names and choice -------------------------------------------------------------------------------

def style_names(paths: Sequence[str | Path], names: Sequence[str] = ()) -> tuple[str, ...]:
    """Names of the styles of ``paths``: ``names`` if given (one per path), else the file stems; unique."""
    names = tuple(str(n) for n in names) or tuple(Path(p).stem for p in paths)
    if len(names) != len(paths):
        raise ConfigError(f"--style-name gives {len(names)} name(s) for {len(paths)} style image(s); give one per "
                          "--style image, in the same order")
    check_unique(names)
    return names


def check_unique(names: Sequence[str]) -> None:
    duplicates = sorted({n for n in names if list(names).count(n) > 1})
    if duplicates:
        raise ConfigError(f"style name(s) {', '.join(duplicates)} appear more than once; every style needs its own "
                          "name: set them with --style-name")


def model_style_names(styles: Sequence[str], num_styles: int) -> tuple[str, ...]:
    """A model's style names as recorded, or ``style0``, ``style1``, ... when the file does not name them all."""
    return tuple(styles) if len(styles) == num_styles else tuple(f"style{i}" for i in range(num_styles))


def _listing(names: Sequence[str]) -> str:
    return ", ".join(f"{i}={name}" for i, name in enumerate(names))


def parse_style_mix(text: str) -> dict[str, float]:
    """``"starry=0.7,wave=0.3"`` → ``{"starry": 0.7, "wave": 0.3}`` (not yet checked against a model)."""
    mix: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.rpartition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = None
        if not sep or not name.strip() or weight is None:
            raise ConfigError(f"--style-mix {text!r}: write NAME=WEIGHT pairs separated by commas, "
                              "e.g. starry=0.7,wave=0.3")
        mix[name.strip()] = mix.get(name.strip(), 0.0) + weight
    if not mix:
        raise ConfigError("--style-mix is empty: give NAME=WEIGHT pairs, e.g. starry=0.7,wave=0.3")
    return mix


def resolve_style(names: Sequence[str], style: int | str | None = None,
                  mix: str | Mapping[str | int, float] | None = None) -> torch.Tensor | None:
    """The style weights (N,) float32 a model with styles ``names`` should use, or None for its default.

    ``style`` is a name or an index (an ``int`` or a digit string); ``mix`` is
    ``"a=0.7,b=0.3"`` or a mapping of names or indices to weights >= 0, normalised
    to sum 1. Both None: None (the first style). Errors are one-line
    ``ConfigError``s listing the model's styles.
    """
    if style is not None and mix is not None:
        raise ConfigError("give --style or --style-mix, not both")
    if style is None and mix is None:
        return None
    n = len(names)
    if style is not None:
        return F.one_hot(torch.tensor(_index(names, style, "--style")), n).float()
    items = parse_style_mix(mix) if isinstance(mix, str) else dict(mix)
    weights = torch.zeros(n, dtype=torch.float64)
    for key, value in items.items():
        value = float(value)
        if not value >= 0 or value == float("inf"):
            raise ConfigError(f"--style-mix: weight {value} for {key!r}; weights must be finite and >= 0")
        weights[_index(names, key, "--style-mix")] += value
    if weights.sum() <= 0:
        raise ConfigError("--style-mix: the weights sum to 0; give at least one positive weight")
    return (weights / weights.sum()).float()


def _index(names: Sequence[str], key: int | str, option: str) -> int:
    if isinstance(key, str) and key in names:
        return list(names).index(key)
    if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
        if 0 <= int(key) < len(names):
            return int(key)
    raise ConfigError(f"{option}: the model has no style {key!r}; its styles are {_listing(names)}")


def describe(weights: torch.Tensor | None, names: Sequence[str]) -> str:
    """``"starry"`` or ``"starry 70% + wave 30%"`` for log lines and reports."""
    if weights is None:
        return names[0] if names else "the model's style"
    parts = [(name, float(w)) for name, w in zip(names, weights) if w > 0]
    if len(parts) == 1:
        return parts[0][0]
    return " + ".join(f"{name} {w:.0%}" for name, w in parts)


# -- training -----------------------------------------------------------------------------------------

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
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.rank) * 10_000_019 + step)
        picks = self.choices[torch.randint(len(self.choices), (batch,), generator=generator)]
        return picks, F.one_hot(picks, self.num_styles).float()


def target_grams(vgg: torch.nn.Module, paths: Sequence[str], style_size: int | None, spec: LossSpec,
                 device: torch.device) -> dict[str, torch.Tensor]:
    """Gram matrices of every style image, stacked per layer: (S, C, C) fp32, in ``paths`` order.

    Each image keeps its own size (a batch would force one), so they are run one by one.
    """
    per_style = [style_grams(vgg, load_image(path, max_size=style_size)[None].to(device), spec) for path in paths]
    return {name: torch.cat([grams[name] for grams in per_style]) for name in spec.style_layers}


def style_batch_losses(vgg: torch.nn.Module, image: torch.Tensor, content: Mapping[str, torch.Tensor],
                       grams: Mapping[str, torch.Tensor], item_weights: torch.Tensor, spec: LossSpec
                       ) -> dict[str, torch.Tensor]:
    """``fastnst.losses.perceptual_losses`` for a batch mixing styles: each item has its targets and weight.

    ``grams`` hold (B, C, C) per layer, the Grams of each item's style;
    ``item_weights`` (B,) are the items' style-loss weights (``spec.style_weight``
    is not used). With equal weights w this equals ``perceptual_losses`` with
    ``style_weight`` w: the style term is the mean over items of w_i times the
    item's layer-weighted Gram MSE.
    """
    features = vgg(image)
    per_item = 0
    for name, w in spec.style_layers.items():
        gram = gram_matrix(features[name])
        per_item = per_item + w * (gram - grams[name].to(gram.dtype)).pow(2).mean(dim=(1, 2))
    losses = {
        "content": spec.content_weight * content_loss(features, content, spec.content_layers),
        "style": (item_weights.to(per_item.dtype) * per_item).mean(),
        "tv": spec.tv_weight * tv_loss(image),
    }
    losses["total"] = losses["content"] + losses["style"] + losses["tv"]
    return losses


def training_network(spec: TransformerSpec, names: tuple[str, ...], init: str | None
                     ) -> tuple[TransformerNet, tuple[str, ...], int]:
    """The network a run trains, all its style names, and the index of its first trained style.

    Without ``init``: a fresh ``spec`` network carrying ``names`` (0). With
    ``init``: that model file's network grown by ``names`` (its own spec wins),
    the first new style's index being its old style count.
    """
    from fastnst.checkpoint import load_model

    if init is None:
        return TransformerNet(spec.with_styles(len(names))), names, 0
    base, info = load_model(init)
    old = model_style_names(info.styles, base.spec.num_styles)
    check_unique(old + names)
    log.info("adding style(s) %s to %s (styles %s); only their norm rows train", ", ".join(names), init,
             ", ".join(old))
    return add_styles(base, len(names)), old + names, base.spec.num_styles


class StyleTargets:
    """What a training run needs to know about its styles: targets, weights, the draw, what trains.

    ``grams`` are the style images' Grams, (S, C, C) per layer for the S
    trained styles (network styles ``first:``); ``multi`` says whether the
    network carries several styles, in which case ``draw(step, batch)`` gives
    the one-hot style weights (B, N), each item's Grams (B, C, C) and its
    style-loss weight (B,), and ``losses`` scores such a batch.
    """

    def __init__(self, vgg: torch.nn.Module, config, first: int, num_styles: int, spec: LossSpec,
                 device: torch.device, rank: int = 0) -> None:
        self.spec, self.first, self.num_styles = spec, first, num_styles
        self.multi, self.frozen = num_styles > 1, config.init is not None
        self.grams = target_grams(vgg, config.style, config.style_size, spec, device)
        weights = config.style_weights or (spec.style_weight,) * len(config.style)
        self.weights = torch.tensor(weights, dtype=torch.float32, device=device)
        self._draw = StyleDraw(range(first, num_styles), num_styles, config.seed, rank)

    def parameters(self, model: TransformerNet) -> list[torch.nn.Parameter]:
        """What the optimiser updates: everything, or only the new styles' norm rows when adding styles."""
        return train_only_rows(model, self.first) if self.frozen else list(model.parameters())

    def draw(self, step: int, batch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        picks, style = self._draw(step, batch)
        items = (picks - self.first).to(self.weights.device)
        return style.to(self.weights.device), {k: g[items] for k, g in self.grams.items()}, self.weights[items]

    def losses(self, vgg, image, content, grams, weights) -> dict[str, torch.Tensor]:
        return style_batch_losses(vgg, image, content, grams, weights, self.spec)

    def for_samples(self, count: int, device: torch.device) -> torch.Tensor | None:
        """Style weights for the sample grid: the trained styles in turn (None for a single-style network)."""
        if not self.multi:
            return None
        picks = self.first + torch.arange(count) % (self.num_styles - self.first)
        return F.one_hot(picks, self.num_styles).float().to(device)


def add_styles(model: TransformerNet, count: int) -> TransformerNet:
    """A copy of ``model`` with ``count`` more styles; each new row starts at the mean of the old rows.

    The shared weights and the old rows are copied exactly, so the old styles'
    outputs do not change.
    """
    spec = model.spec.with_styles(model.spec.num_styles + count)
    grown = TransformerNet(spec).to(next(model.parameters()).device)
    state = model.state_dict()
    new_state = {}
    for key, value in grown.state_dict().items():
        old = state[key]
        if value.shape == old.shape:
            new_state[key] = old
            continue
        rows = old if old.dim() == 2 else old[None]  # a plain InstanceNorm's (C,) is one row
        new_state[key] = torch.cat([rows, rows.mean(dim=0, keepdim=True).expand(count, -1)])
    grown.load_state_dict(new_state)
    return grown


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


# -- merging --------------------------------------------------------------------------------------------

def merge_models(models: Sequence[tuple[TransformerNet, str]]) -> TransformerNet:
    """One multi-style network from ``(network, file name)`` pairs whose shared weights are all identical.

    The styles come in order (a multi-style input contributes all its rows).
    Raises ``MergeError`` naming the first shared tensor that differs:
    separately trained models have different encoders and decoders, and a
    style's norm rows only work with the convolutions they were trained with.
    """
    first, first_name = models[0]
    norm_keys = {f"{name}.{p}" for name, _ in first.norm_layers() for p in ("weight", "bias")}
    base = first.state_dict()
    for net, name in models[1:]:
        if (net.spec.channels, net.spec.num_residual) != (first.spec.channels, first.spec.num_residual):
            raise MergeError(f"cannot merge {first_name} and {name}: different network shapes "
                             f"({first.spec.to_dict()} vs {net.spec.to_dict()})")
        state = net.state_dict()
        differing = next((k for k in base if k not in norm_keys and not torch.equal(base[k], state[k])), None)
        if differing is not None:
            raise MergeError(
                f"cannot merge {first_name} and {name}: their shared weights differ (e.g. {differing}); models "
                "trained separately share no encoder/decoder, so one's styles cannot run on the other's. Train "
                "one model with several --style images, or add a style to a model with "
                "`fastnst train --init MODEL --style NEW.jpg`")
    total = sum(net.spec.num_styles for net, _ in models)
    merged = TransformerNet(first.spec.with_styles(total))
    states = [net.state_dict() for net, _ in models]
    new_state = {}
    for key in merged.state_dict():
        if key in norm_keys:
            new_state[key] = torch.cat([s[key] if s[key].dim() == 2 else s[key][None] for s in states])
        else:
            new_state[key] = base[key]
    merged.load_state_dict(new_state)
    return merged.eval()
