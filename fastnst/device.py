"""Choosing the torch device: the one place that turns ``"auto"`` into a device."""

from __future__ import annotations

import torch

from fastnst.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Return the device to run on.

    ``"auto"`` picks CUDA, then Apple's MPS, then the CPU. An explicit device that
    is not available raises ``ConfigError`` rather than silently falling back, so a
    user who asked for a GPU learns they are not getting one. ``"cuda:1"`` style
    indices are accepted.
    """
    if isinstance(name, torch.device):
        return name
    kind = name.split(":", 1)[0]
    if kind not in DEVICE_CHOICES:
        raise ConfigError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available; use --device cpu or auto")
    if kind == "mps" and not _mps_available():
        raise ConfigError("device 'mps' requested but MPS is not available; use --device cpu or auto")
    return torch.device(name)
