"""The image transformation network of Johnson et al. (2016).

Value range, once for the whole package: images are float tensors of shape
(B, 3, H, W), RGB, with values in **0–1**. The network's output is in the same
range but is not clamped: training sees the raw output, and whoever turns it into
pixels clamps it (``fastnst.images.to_pil`` does).

Architecture (for the default spec): a 9×9 conv to 32 channels, two stride-2 3×3
convs to 64 and 128, five residual blocks of 128, two nearest-neighbour ×2
upsamplings each followed by a 3×3 conv (to 64, then 32), and a final 9×9 conv to
3 channels. Every conv uses reflection padding and every conv but the last is
followed by an affine InstanceNorm and a ReLU. The layer widths and the number of
residual blocks come from a ``TransformerSpec`` so a lighter network is a one-line
change; ``SPECS`` names the ones we ship.

Several styles in one network (Dumoulin et al. 2017, "conditional instance
norm"): with ``num_styles`` N > 1 every InstanceNorm holds one (scale, shift)
pair per style, (N, C) each, and everything else is shared. The forward then
takes style weights (B, N): a one-hot row picks a style, any convex mix blends
the styles' norm parameters (``ConditionalInstanceNorm``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fastnst.models.spec import (  # noqa: F401 - re-exported: the network's shape lives beside it
    SPECS,
    NormStats,
    TransformerSpec,
    get_spec,
    macs_per_pixel,
)
from fastnst.models.spec import padded_size as spec_padded_size


def padded_size(n: int) -> int:
    """Smallest size >= ``n`` the network accepts (``fastnst.models.spec.padded_size``), traceable for export."""
    return spec_padded_size(n, torch.sym_max)




class ConditionalInstanceNorm(nn.Module):
    """InstanceNorm with one (scale, shift) pair per style: ``weight`` and ``bias`` are (N, C).

    ``forward(x, style)`` takes style weights (B, N) (one-hot, or any mix) and
    normalises each image with its own mix of the rows, ``style @ weight``. The
    mix is computed as a sum of products, so a one-hot row reproduces its
    style's parameters bit for bit. The per-image parameters go through one
    ``batch_norm`` over (1, B·C) channels, the very call ``nn.InstanceNorm2d``
    makes, so a multi-style network costs what a single-style one does. (An
    exported graph computes it differently: ``fastnst.export`` replaces the norms.)
    """

    def __init__(self, channels: int, num_styles: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features, self.num_styles, self.eps = channels, num_styles, eps
        self.weight = nn.Parameter(torch.ones(num_styles, channels))
        self.bias = nn.Parameter(torch.zeros(num_styles, channels))

    def affine(self, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) style weights (a tensor or an array) → per-image (scale, shift), each (B, C)."""
        style = torch.as_tensor(style, dtype=self.weight.dtype, device=self.weight.device)[:, :, None]
        return (style * self.weight).sum(dim=1), (style * self.bias).sum(dim=1)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        scale, shift = self.affine(style)
        b, c = x.shape[:2]
        scale, shift = scale.expand(b, c).reshape(b * c), shift.expand(b, c).reshape(b * c)
        y = F.batch_norm(x.reshape(1, b * c, *x.shape[2:]), None, None, scale, shift, training=True, eps=self.eps)
        return y.reshape(x.shape)


def norm_affine(norm: nn.Module, style: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) an InstanceNorm applies: (C,) for a plain one, (B, C) for a conditional one and ``style``."""
    if isinstance(norm, ConditionalInstanceNorm):
        return norm.affine(style)
    return norm.weight, norm.bias


def fixed_norm(norm: nn.Module, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
               style: torch.Tensor | None = None) -> torch.Tensor:
    """InstanceNorm ``norm`` applied to ``x`` with given statistics (B or 1, C) instead of its own."""
    weight, bias = norm_affine(norm, style)
    scale = weight * torch.rsqrt(var + norm.eps)  # (B, C)
    shift = bias - mean * scale
    return x * scale[..., None, None].to(x.dtype) + shift[..., None, None].to(x.dtype)


def style_weights(num_styles: int, style: torch.Tensor | None, batch: int, device: torch.device | None = None
                  ) -> torch.Tensor | None:
    """Style weights as the network wants them: (B, N) float32, or None for a single-style network.

    ``style`` is (N,) (the same for every image), (B, N) or (1, N); None means
    the first style. Weights are used as given (callers normalise mixes).
    """
    if num_styles == 1:
        if style is not None and torch.as_tensor(style).shape[-1] != 1:
            raise ValueError(f"style weights of shape {tuple(torch.as_tensor(style).shape)} for a single-style network")
        return None
    if style is None:
        style = F.one_hot(torch.tensor(0), num_styles)
    style = torch.as_tensor(style, dtype=torch.float32, device=device)
    if style.dim() == 1:
        style = style[None]
    if style.dim() != 2 or style.shape[1] != num_styles or style.shape[0] not in (1, batch):
        raise ValueError(f"style weights of shape {tuple(style.shape)}: expected ({num_styles},), "
                         f"(1, {num_styles}) or ({batch}, {num_styles})")
    return style.expand(batch, num_styles)


class _Norms:
    """Runs each InstanceNorm of one forward pass: normally, recording its statistics, or with fixed ones.

    Fixed statistics are what makes tiled stylization seamless: every tile of a
    large photo is normalised with the statistics of the whole photo (see
    ``fastnst.tiling``) instead of its own, so tiles do not differ in tone.
    ``style`` (B, N) feeds the conditional InstanceNorms of a multi-style network.
    """

    def __init__(self, fixed: NormStats | None = None, record: bool = False,
                 style: torch.Tensor | None = None) -> None:
        self.fixed, self.record, self.recorded, self.index = fixed, record, [], 0
        self.style = style

    def __call__(self, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.record:
            var, mean = torch.var_mean(x.float(), dim=(2, 3), unbiased=False)
            self.recorded.append((mean, var))
        if self.fixed is None:
            return norm(x) if self.style is None else norm(x, self.style)
        if self.index >= len(self.fixed):
            raise ValueError(f"norm_stats has {len(self.fixed)} entries, the network has more InstanceNorms")
        mean, var = self.fixed[self.index]
        self.index += 1
        return fixed_norm(norm, x, mean, var, self.style)


class _Reached(Exception):
    """Ends a forward pass at the InstanceNorm ``norm_input`` asked for, carrying that norm's input."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.x = x


class _StopAt(_Norms):
    """``_Norms`` with the first ``len(fixed)`` norms fixed, stopping the pass at the input of the next one."""

    def __call__(self, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.index == len(self.fixed):
            raise _Reached(x)
        return super().__call__(norm, x)


def _instance_norm(channels: int, num_styles: int) -> nn.Module:
    if num_styles == 1:
        return nn.InstanceNorm2d(channels, affine=True)
    return ConditionalInstanceNorm(channels, num_styles)


class ConvNormReLU(nn.Module):
    """Reflection-padded conv, then optionally affine InstanceNorm and ReLU.

    ``upsample`` doubles the resolution (nearest neighbour) before the conv: this
    replaces transposed convolutions, which leave checkerboard artefacts.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, *, upsample: bool = False,
                 norm: bool = True, num_styles: int = 1) -> None:
        super().__init__()
        self.upsample = upsample
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, padding_mode="reflect")
        self.norm = _instance_norm(cout, num_styles) if norm else None

    def forward(self, x: torch.Tensor, norms: _Norms) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = self.conv(x)
        if self.norm is not None:
            x = F.relu(norms(self.norm, x))
        return x


class ResidualBlock(nn.Module):
    """Two 3×3 conv + InstanceNorm layers with an identity shortcut (no ReLU after the sum)."""

    def __init__(self, channels: int, num_styles: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect")
        self.norm1 = _instance_norm(channels, num_styles)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect")
        self.norm2 = _instance_norm(channels, num_styles)

    def forward(self, x: torch.Tensor, norms: _Norms) -> torch.Tensor:
        y = F.relu(norms(self.norm1, self.conv1(x)))
        return x + norms(self.norm2, self.conv2(y))


class TransformerNet(nn.Module):
    """Feed-forward style network: (B, 3, H, W) in 0–1 → (B, 3, H, W), unclamped ~0–1.

    Any H×W works, including odd sizes and 1×1: the input is edge-padded at the
    bottom and right to ``padded_size`` and the output cropped back, so the output
    always has exactly the input's size.

    ``norm_stats`` (from ``compute_norm_stats``) replaces every InstanceNorm's
    own statistics; see ``_Norms`` for why tiling needs it.

    ``style`` (multi-style networks, ``spec.num_styles`` N > 1): style weights
    (N,) for every image or (B, N) per image, one-hot or a convex mix; None is
    the first style. A single-style network ignores it (it may be None or (1,)).
    """

    def __init__(self, spec: TransformerSpec | None = None) -> None:
        super().__init__()
        self.spec = spec or TransformerSpec()
        c1, c2, c3 = self.spec.channels
        n = self.spec.num_styles
        self.encoder = nn.ModuleList([
            ConvNormReLU(3, c1, 9, num_styles=n),
            ConvNormReLU(c1, c2, 3, stride=2, num_styles=n),
            ConvNormReLU(c2, c3, 3, stride=2, num_styles=n),
        ])
        self.residual = nn.ModuleList(ResidualBlock(c3, n) for _ in range(self.spec.num_residual))
        self.decoder = nn.ModuleList([
            ConvNormReLU(c3, c2, 3, upsample=True, num_styles=n),
            ConvNormReLU(c2, c1, 3, upsample=True, num_styles=n),
            ConvNormReLU(c1, 3, 9, norm=False),
        ])

    def forward(self, x: torch.Tensor, norm_stats: NormStats | None = None,
                style: torch.Tensor | None = None) -> torch.Tensor:
        return self._run(x, _Norms(fixed=norm_stats, style=self._style(style, x)))

    def compute_norm_stats(self, x: torch.Tensor, style: torch.Tensor | None = None) -> NormStats:
        """Statistics of every InstanceNorm input for ``x`` (typically a downscaled whole image)."""
        norms = _Norms(record=True, style=self._style(style, x))
        self._run(x, norms)
        return norms.recorded

    def norm_input(self, x: torch.Tensor, known: NormStats, style: torch.Tensor | None = None) -> torch.Tensor:
        """The input of InstanceNorm number ``len(known)`` for ``x``, the norms before it fixed to ``known``.

        (B, C, h, w) at that layer's resolution (the padded input's divided by 1, 2
        or 4). The pass stops there, so measuring an early layer is cheap: this is
        how a large image's exact statistics are added up tile by tile
        (``fastnst.stylize.tiling.exact_stats``).
        """
        try:
            self._run(x, _StopAt(fixed=list(known), style=self._style(style, x)))
        except _Reached as reached:
            return reached.x
        raise ValueError(f"the network has {len(self.norm_layers())} InstanceNorms, no InstanceNorm number "
                         f"{len(known)}")

    def _style(self, style: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
        return style_weights(self.spec.num_styles, style, x.shape[0], x.device)

    def norm_layers(self) -> list[tuple[str, nn.Module]]:
        """(name, module) of every InstanceNorm, in forward order: the layers that carry the styles."""
        kinds = (nn.InstanceNorm2d, ConditionalInstanceNorm)
        return [(name, m) for name, m in self.named_modules() if isinstance(m, kinds)]

    def _run(self, x: torch.Tensor, norms: _Norms) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_h, pad_w = padded_size(h) - h, padded_size(w) - w
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        for layer in (*self.encoder, *self.residual, *self.decoder):
            x = layer(x, norms)
        return x[..., :h, :w]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def norm_rows(model: TransformerNet) -> dict[str, torch.Tensor]:
    """The tensors that carry ``model``'s styles, by state-dict key, each (num_styles, C).

    Every InstanceNorm's weight and bias; a single-style network's plain (C,)
    affine parameters come back as one row. Everything else is shared by all styles.
    """
    state = model.state_dict()
    keys = [f"{name}.{p}" for name, _ in model.norm_layers() for p in ("weight", "bias")]
    return {key: state[key] if state[key].dim() == 2 else state[key][None] for key in keys}


def with_norm_rows(model: TransformerNet, rows: dict[str, torch.Tensor]) -> TransformerNet:
    """A new network with ``model``'s shared weights and these style rows (``norm_rows``' keys, (S, C) each).

    S, the rows' first dimension, is the new network's style count; S = 1 gives
    a single-style network (plain InstanceNorms). Every tensor is copied, so the
    new network and ``model`` never share storage.
    """
    count = len(next(iter(rows.values())))
    new = TransformerNet(model.spec.with_styles(count)).to(next(model.parameters()).device)
    state = {key: (rows[key] if count > 1 else rows[key][0]) if key in rows else value
             for key, value in model.state_dict().items()}
    new.load_state_dict({key: value.detach().clone() for key, value in state.items()})
    return new


def select_styles(model: TransformerNet, indices: Sequence[int]) -> TransformerNet:
    """A network carrying only the styles ``indices`` of ``model`` (in that order), everything else shared.

    Each style is its norm rows, so the picked styles' outputs are bit-identical
    to ``model``'s; one index gives a single-style network (plain InstanceNorms),
    which loads and runs like any single-style model.
    """
    indices = list(indices)
    if not indices or any(not 0 <= i < model.spec.num_styles for i in indices):
        raise ValueError(f"style indices {indices} for a network of {model.spec.num_styles} style(s)")
    return with_norm_rows(model, {key: rows[indices] for key, rows in norm_rows(model).items()}).eval()
