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
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fastnst.errors import ConfigError

# The network halves the resolution twice and doubles it twice, so inputs are
# padded to a multiple of 4. The 3×3 reflection pads of the residual blocks need
# at least 2 pixels at quarter resolution, hence at least 8 pixels at full size.
SIZE_MULTIPLE = 4
MIN_SIZE = 8


@dataclass(frozen=True)
class TransformerSpec:
    """Shape of a transformation network.

    ``channels`` are the widths after the first conv and after each downsampling
    (the decoder mirrors them); ``num_residual`` is the number of residual blocks
    at the narrowest resolution.
    """

    channels: tuple[int, int, int] = (32, 64, 128)
    num_residual: int = 5

    def __post_init__(self) -> None:
        channels = tuple(int(c) for c in self.channels)
        object.__setattr__(self, "channels", channels)
        if len(channels) != 3 or any(c < 1 for c in channels):
            raise ConfigError(f"spec channels must be three positive widths, got {self.channels}")
        if self.num_residual < 0:
            raise ConfigError(f"spec num_residual must be >= 0, got {self.num_residual}")

    def to_dict(self) -> dict:
        return {"channels": list(self.channels), "num_residual": self.num_residual}

    @classmethod
    def from_dict(cls, data: dict) -> TransformerSpec:
        """Rebuild a spec from ``to_dict`` output; unknown keys are an error, missing ones default."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown network spec field(s) {unknown}; known: {sorted(known)}")
        kwargs = dict(data)
        if "channels" in kwargs:
            kwargs["channels"] = tuple(kwargs["channels"])
        return cls(**kwargs)


SPECS: dict[str, TransformerSpec] = {
    # Johnson et al. / pytorch/examples: 1,679,235 parameters, 153,792 multiply-adds per pixel.
    "johnson": TransformerSpec(),
    # About 8x fewer multiply-adds: for CPUs, previews and phones.
    "light": TransformerSpec(channels=(16, 32, 64), num_residual=3),
}


def get_spec(name: str) -> TransformerSpec:
    """Look up a named spec; an unknown name raises ``ConfigError`` listing the valid ones."""
    try:
        return SPECS[name]
    except KeyError:
        raise ConfigError(f"unknown network spec {name!r}; choose one of {', '.join(sorted(SPECS))}") from None


def padded_size(n: int) -> int:
    """Smallest size >= ``n`` the network accepts: a multiple of 4, at least 8."""
    return torch.sym_max(MIN_SIZE, (n + SIZE_MULTIPLE - 1) // SIZE_MULTIPLE * SIZE_MULTIPLE)


NormStats = list[tuple[torch.Tensor, torch.Tensor]]
"""Per InstanceNorm layer, in forward order: (mean, var) of its input, each (B, C) or (1, C)."""


class _Norms:
    """Runs each InstanceNorm of one forward pass: normally, recording its statistics, or with fixed ones.

    Fixed statistics are what makes tiled stylization seamless: every tile of a
    large photo is normalised with the statistics of the whole photo (measured
    on a downscaled copy) instead of its own, so tiles do not differ in tone.
    """

    def __init__(self, fixed: NormStats | None = None, record: bool = False) -> None:
        self.fixed, self.record, self.recorded, self.index = fixed, record, [], 0

    def __call__(self, norm: nn.InstanceNorm2d, x: torch.Tensor) -> torch.Tensor:
        if self.record:
            var, mean = torch.var_mean(x.float(), dim=(2, 3), unbiased=False)
            self.recorded.append((mean, var))
        if self.fixed is None:
            return norm(x)
        if self.index >= len(self.fixed):
            raise ValueError(f"norm_stats has {len(self.fixed)} entries, the network has more InstanceNorms")
        mean, var = self.fixed[self.index]
        self.index += 1
        scale = norm.weight * torch.rsqrt(var + norm.eps)  # (B, C)
        shift = norm.bias - mean * scale
        return x * scale[..., None, None].to(x.dtype) + shift[..., None, None].to(x.dtype)


class ConvNormReLU(nn.Module):
    """Reflection-padded conv, then optionally affine InstanceNorm and ReLU.

    ``upsample`` doubles the resolution (nearest neighbour) before the conv: this
    replaces transposed convolutions, which leave checkerboard artefacts.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, *, upsample: bool = False,
                 norm: bool = True) -> None:
        super().__init__()
        self.upsample = upsample
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, padding_mode="reflect")
        self.norm = nn.InstanceNorm2d(cout, affine=True) if norm else None

    def forward(self, x: torch.Tensor, norms: _Norms) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = self.conv(x)
        if self.norm is not None:
            x = F.relu(norms(self.norm, x))
        return x


class ResidualBlock(nn.Module):
    """Two 3×3 conv + InstanceNorm layers with an identity shortcut (no ReLU after the sum)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect")
        self.norm1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect")
        self.norm2 = nn.InstanceNorm2d(channels, affine=True)

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
    """

    def __init__(self, spec: TransformerSpec | None = None) -> None:
        super().__init__()
        self.spec = spec or TransformerSpec()
        c1, c2, c3 = self.spec.channels
        self.encoder = nn.ModuleList([
            ConvNormReLU(3, c1, 9),
            ConvNormReLU(c1, c2, 3, stride=2),
            ConvNormReLU(c2, c3, 3, stride=2),
        ])
        self.residual = nn.ModuleList(ResidualBlock(c3) for _ in range(self.spec.num_residual))
        self.decoder = nn.ModuleList([
            ConvNormReLU(c3, c2, 3, upsample=True),
            ConvNormReLU(c2, c1, 3, upsample=True),
            ConvNormReLU(c1, 3, 9, norm=False),
        ])

    def forward(self, x: torch.Tensor, norm_stats: NormStats | None = None) -> torch.Tensor:
        return self._run(x, _Norms(fixed=norm_stats))

    def compute_norm_stats(self, x: torch.Tensor) -> NormStats:
        """Statistics of every InstanceNorm input for ``x`` (typically a downscaled whole image)."""
        norms = _Norms(record=True)
        self._run(x, norms)
        return norms.recorded

    def _run(self, x: torch.Tensor, norms: _Norms) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_h, pad_w = padded_size(h) - h, padded_size(w) - w
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        for layer in (*self.encoder, *self.residual, *self.decoder):
            x = layer(x, norms)
        return x[..., :h, :w]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def macs_per_pixel(spec: TransformerSpec) -> int:
    """Multiply-adds per output pixel of a forward pass (convs only), for throughput figures.

    The default spec costs 153,792: the number the benchmarks divide by.
    """
    c1, c2, c3 = spec.channels
    # Each conv's cost per output pixel, scaled by its resolution relative to the output.
    full = 3 * c1 * 81 + c1 * 3 * 81 + c2 * c1 * 9  # 9×9 in, 9×9 out, last upsampling conv
    half = (c1 * c2 * 9 + c3 * c2 * 9) / 4  # stride-2 conv to c2, first upsampling conv
    quarter = (c2 * c3 * 9 + spec.num_residual * 2 * c3 * c3 * 9) / 16  # stride-2 conv to c3, residuals
    return int(full + half + quarter)
