"""Backends: what runs the network. There is one stylization engine and several backends.

The engine (``fastnst.engine``) owns files, batching, tiling, blending and colour;
a backend only turns a batch of images into stylized images. Every backend takes
and returns CPU ``torch.float32`` tensors (B, 3, H, W) in 0–1 (outputs unclamped),
so the engine never needs to know which runtime computed them.

``norm_stats`` support is what lets the engine tile a large photo seamlessly:
``norm_stats(batch)`` measures every InstanceNorm's statistics (on a downscaled
copy of the whole photo) and ``run(tile, norm_stats=...)`` applies them to a tile.
See ``fastnst.models.transformer.NormStats``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from fastnst.checkpoint import ModelInfo
from fastnst.errors import ConfigError
from fastnst.models.transformer import NormStats


@runtime_checkable
class Backend(Protocol):
    """The interface every backend implements.

    Each backend class also offers ``from_file(path, *, device="auto")`` building
    it from a model file it understands, and carries ``info`` (the file's
    ``ModelInfo``: spec, style names, ...). Options only one runtime has (the
    torch backend's ``dtype``, ``channels_last``, ``compile``) are extra keyword
    arguments of that backend's ``from_file``; the engine passes them to it alone.
    """

    name: str
    info: ModelInfo

    @classmethod
    def from_file(cls, path: str | Path, *, device: str = "auto") -> Backend:
        """Build the backend from a model file it understands (``ModelFileError`` otherwise)."""
        ...

    def run(self, batch: torch.Tensor, norm_stats: NormStats | None = None) -> torch.Tensor:
        """(B, 3, H, W) float32 in 0–1 → (B, 3, H, W) float32, unclamped, same size."""
        ...

    def norm_stats(self, batch: torch.Tensor) -> NormStats:
        """Statistics of every InstanceNorm for ``batch`` (see ``TransformerNet.compute_norm_stats``)."""
        ...


# name → "module:class", imported only when asked for so optional runtimes stay optional.
BACKENDS: dict[str, str] = {
    "torch": "fastnst.backends.torch:TorchBackend",
    "onnxruntime": "fastnst.backends.onnxruntime:OnnxRuntimeBackend",
}


def backend_class(name: str) -> type:
    """The class implementing backend ``name``; an unknown name lists the valid ones."""
    try:
        module, _, cls = BACKENDS[name].partition(":")
    except KeyError:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}") from None
    return getattr(importlib.import_module(module), cls)
