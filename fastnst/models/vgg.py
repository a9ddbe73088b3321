"""The VGG loss network: named ReLU activations of a frozen VGG16 or VGG19.

Plain torch (no torchvision). The convolutional layers sit at the same indices as
in torchvision's ``vgg16().features`` / ``vgg19().features`` so the official state
dicts (``features.0.weight`` ...) load directly. Only the layers up to the deepest
requested activation are built, which saves memory and time (style transfer
rarely needs anything past relu4_x).

Input: (B, 3, H, W) RGB in 0–1, the package's value range. The preprocessing the
weights were trained with lives inside the module (``FLAVOURS``):

* ``torchvision``: RGB, 0–1, minus ImageNet mean, divided by ImageNet std;
* ``caffe``: BGR, 0–255, minus the Caffe mean [103.939, 116.779, 123.68] (B, G, R),
  no std division — the weights Johnson et al. and Gatys et al. used.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fastnst.errors import ConfigError

# Convolution widths per block; a max-pool follows every block but the last.
ARCHS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}

# mean and std in 0–1 units of the channel order the weights expect.
FLAVOURS: dict[str, dict] = {
    "torchvision": {"bgr": False, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
    "caffe": {"bgr": True, "mean": (103.939 / 255, 116.779 / 255, 123.68 / 255), "std": (1 / 255,) * 3},
}


# The official Caffe conversions (Justin Johnson's), recognised by name as Caffe weights.
CAFFE_FILE_NAMES = ("vgg16-00b39a1b.pth", "vgg19-d01eb7cb.pth")


def detect_flavour(path=None) -> str:
    """The flavour a weight file's name implies: ``caffe`` if it says so (or is an official Caffe file), otherwise
    ``torchvision`` (also for no file: the default download)."""
    if path is None:
        return "torchvision"
    name = Path(path).name.lower()
    return "caffe" if "caffe" in name or name in CAFFE_FILE_NAMES else "torchvision"


def resolve_flavour(flavour: str, path=None) -> str:
    """``flavour`` checked (``auto``, or one of ``FLAVOURS``), with ``auto`` read from the weight file's name."""
    if flavour == "auto":
        return detect_flavour(path)
    if flavour not in FLAVOURS:
        raise ConfigError(f"unknown VGG weight flavour {flavour!r}; choose one of auto, {', '.join(FLAVOURS)}")
    return flavour


def layer_names(arch: str) -> list[str]:
    """All activation names of ``arch`` in forward order: relu1_1, relu1_2, ..., relu5_x."""
    blocks = _arch(arch)
    return [f"relu{b + 1}_{i + 1}" for b, widths in enumerate(blocks) for i in range(len(widths))]


def _arch(arch: str) -> tuple[tuple[int, ...], ...]:
    try:
        return ARCHS[arch]
    except KeyError:
        raise ConfigError(f"unknown VGG {arch!r}; choose one of {', '.join(ARCHS)}") from None


def _layout(arch: str) -> list[tuple[str, int, int, int]]:
    """(kind, features index, in channels, out channels) for each module, torchvision's order."""
    layout, index, cin = [], 0, 3
    blocks = _arch(arch)
    for b, widths in enumerate(blocks):
        for i, cout in enumerate(widths):
            layout.append(("conv", index, cin, cout))
            layout.append((f"relu{b + 1}_{i + 1}", index + 1, cout, cout))
            index, cin = index + 2, cout
        if b < len(blocks) - 1:
            layout.append(("pool", index, cin, cin))
            index += 1
    return layout


class VGGFeatures(nn.Module):
    """Frozen VGG truncated after the deepest of ``layers``; ``forward`` returns ``{name: activation}``.

    Weights start random: load them with ``load_state_dict`` (see
    ``fastnst.pretrained.load_vgg`` for files and downloads). Parameters never
    require gradients, but gradients do flow through to the input image.
    """

    def __init__(self, arch: str, layers: list[str] | tuple[str, ...], flavour: str = "torchvision") -> None:
        super().__init__()
        valid = layer_names(arch)
        unknown = [name for name in layers if name not in valid]
        if unknown or not layers:
            raise ConfigError(f"unknown {arch} layer(s) {unknown or '(none given)'}; valid: {', '.join(valid)}")
        if flavour not in FLAVOURS:
            raise ConfigError(f"unknown VGG weight flavour {flavour!r}; choose one of {', '.join(FLAVOURS)}")
        self.arch, self.flavour, self.layers = arch, flavour, tuple(dict.fromkeys(layers))
        deepest = max(valid.index(name) for name in self.layers)

        modules, self._names = [], {}
        for kind, index, cin, cout in _layout(arch):
            if kind == "conv":
                modules.append(nn.Conv2d(cin, cout, 3, padding=1))
            elif kind == "pool":
                modules.append(nn.MaxPool2d(2, 2))
            else:
                modules.append(nn.ReLU(inplace=False))
                self._names[index] = kind
                if kind == valid[deepest]:
                    break
        self.features = nn.Sequential(*modules)

        spec = FLAVOURS[flavour]
        self.bgr = spec["bgr"]
        self.register_buffer("mean", torch.tensor(spec["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec["std"]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatures:
        # A loss network is always in eval mode, whatever its parent module does.
        return super().train(False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map 0–1 RGB to the input convention of this flavour's weights."""
        if self.bgr:
            x = x.flip(1)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        wanted = set(self.layers)
        out: dict[str, torch.Tensor] = {}
        x = self.normalize(x)
        for index, module in enumerate(self.features):
            x = module(x)
            name = self._names.get(index)
            if name in wanted:
                out[name] = x
        return out

    def required_keys(self) -> list[str]:
        """State-dict keys (``features.N.weight`` / ``.bias``) this truncated network needs."""
        return list(self.state_dict().keys())

    def layer_of_key(self, key: str) -> str:
        """The activation name a state-dict key feeds (``features.16.weight`` → ``relu3_4``)."""
        index = int(key.split(".")[1])
        return self._names[index + 1]
