"""The shape of a transformation network, in plain Python (no PyTorch).

What the stylization engine needs to know about a network without running it:
its widths and depth (``TransformerSpec``), the input sizes it accepts
(``padded_size``), how many InstanceNorms it has and what a pixel costs. The
network itself is ``fastnst.models.transformer.TransformerNet``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from fastnst.errors import ConfigError

# The network halves the resolution twice and doubles it twice, so inputs are
# padded to a multiple of 4. The 3×3 reflection pads of the residual blocks need
# at least 2 pixels at quarter resolution, hence at least 8 pixels at full size.
SIZE_MULTIPLE = 4
MIN_SIZE = 8
# Bounds a model file's spec must respect before anything is built from it: far above any real
# network (the default is 32/64/128 and 5 blocks), far below what would exhaust memory.
MAX_CHANNELS, MAX_RESIDUAL, MAX_STYLES = 1024, 64, 4096


@dataclass(frozen=True)
class TransformerSpec:
    """Shape of a transformation network.

    ``channels`` are the widths after the first conv and after each downsampling
    (the decoder mirrors them); ``num_residual`` is the number of residual blocks
    at the narrowest resolution; ``num_styles`` the styles its InstanceNorms carry.
    """

    channels: tuple[int, int, int] = (32, 64, 128)
    num_residual: int = 5
    num_styles: int = 1

    def __post_init__(self) -> None:
        try:
            channels = tuple(_whole(c, "channels") for c in self.channels)
        except TypeError:
            raise ConfigError(f"spec channels must be three positive widths, got {self.channels!r}") from None
        object.__setattr__(self, "channels", channels)
        if len(channels) != 3 or any(not 1 <= c <= MAX_CHANNELS for c in channels):
            raise ConfigError(f"spec channels must be three widths from 1 to {MAX_CHANNELS}, got {self.channels}")
        object.__setattr__(self, "num_residual", _whole(self.num_residual, "num_residual"))
        object.__setattr__(self, "num_styles", _whole(self.num_styles, "num_styles"))
        if not 0 <= self.num_residual <= MAX_RESIDUAL:
            raise ConfigError(f"spec num_residual must be 0 to {MAX_RESIDUAL}, got {self.num_residual}")
        if not 1 <= self.num_styles <= MAX_STYLES:
            raise ConfigError(f"spec num_styles must be 1 to {MAX_STYLES}, got {self.num_styles}")

    def to_dict(self) -> dict:
        """JSON-ready form; ``num_styles`` only when > 1, so single-style files keep their exact metadata."""
        out = {"channels": list(self.channels), "num_residual": self.num_residual}
        if self.num_styles > 1:
            out["num_styles"] = self.num_styles
        return out

    def with_styles(self, num_styles: int) -> TransformerSpec:
        """The same network carrying ``num_styles`` styles."""
        return dataclasses.replace(self, num_styles=num_styles)

    @classmethod
    def from_dict(cls, data: dict) -> TransformerSpec:
        """Rebuild a spec from ``to_dict`` output; unknown keys are an error, missing ones default."""
        if not isinstance(data, dict):
            raise ConfigError(f"a network spec is a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown network spec field(s) {unknown}; known: {sorted(known)}")
        kwargs = dict(data)
        if "channels" in kwargs:
            if not isinstance(kwargs["channels"], (list, tuple)):
                raise ConfigError(f"spec channels must be a list of three widths, got {kwargs['channels']!r}")
            kwargs["channels"] = tuple(kwargs["channels"])
        return cls(**kwargs)


def _whole(value, name: str) -> int:
    """``value`` as an int when it is a whole number (not a bool, float or string), else ``ConfigError``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"spec {name} must be whole numbers, got {value!r}")
    return int(value)


NormStats = list
"""Per InstanceNorm layer, in forward order: (mean, var) of its input, each (B, C) or (1, C) — numpy arrays or
torch tensors (``fastnst.backends`` says which kind where)."""


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


def padded_size(n, maximum: Callable = max):
    """Smallest size >= ``n`` the network accepts: a multiple of 4, at least 8.

    ``maximum`` is ``torch.sym_max`` inside the network, so an exported graph keeps
    the rule for every input size instead of the one it was traced with.
    """
    return maximum(MIN_SIZE, (n + SIZE_MULTIPLE - 1) // SIZE_MULTIPLE * SIZE_MULTIPLE)


def norm_count(spec: TransformerSpec) -> int:
    """How many InstanceNorms the network has: three in the encoder, two per residual block, two in the decoder."""
    return 3 + 2 * spec.num_residual + 2


def parameter_shapes(spec: TransformerSpec) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor a model file of this spec holds, by state-dict key.

    What a file's header is checked against before any network is built from it.
    """
    c1, c2, c3 = spec.channels
    n = spec.num_styles
    norm = (lambda c: (c,)) if n == 1 else (lambda c: (n, c))
    shapes: dict[str, tuple[int, ...]] = {}

    def layer(prefix: str, conv: str, cin: int, cout: int, kernel: int, norm_name: str | None) -> None:
        shapes[f"{prefix}.{conv}.weight"] = (cout, cin, kernel, kernel)
        shapes[f"{prefix}.{conv}.bias"] = (cout,)
        if norm_name:
            shapes[f"{prefix}.{norm_name}.weight"] = shapes[f"{prefix}.{norm_name}.bias"] = norm(cout)

    for i, (cin, cout, k) in enumerate(((3, c1, 9), (c1, c2, 3), (c2, c3, 3))):
        layer(f"encoder.{i}", "conv", cin, cout, k, "norm")
    for i in range(spec.num_residual):
        layer(f"residual.{i}", "conv1", c3, c3, 3, "norm1")
        layer(f"residual.{i}", "conv2", c3, c3, 3, "norm2")
    for i, (cin, cout, k, has_norm) in enumerate(((c3, c2, 3, True), (c2, c1, 3, True), (c1, 3, 9, False))):
        layer(f"decoder.{i}", "conv", cin, cout, k, "norm" if has_norm else None)
    return shapes


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
