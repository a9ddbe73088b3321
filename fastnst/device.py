"""Choosing the torch device (the one place that turns ``"auto"`` into a device) and tuning the CPU for it."""

from __future__ import annotations

import ctypes
import os
import sys

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


def describe_device(device: torch.device) -> str:
    """A human name for ``device``, recorded in model files: the GPU's name, or the CPU's model and thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"{cpuinfo('model name') or 'CPU'}, {threads} thread{'s' if threads != 1 else ''}"
    return str(device)


def cpuinfo(field: str) -> str | None:
    """The first ``field`` of Linux's ``/proc/cpuinfo`` (``"model name"``, ``"flags"``); None where unknown."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as lines:
            for line in lines:
                key, _, value = line.partition(":")
                if key.strip() == field:
                    return value.strip()
    except OSError:
        pass
    return None


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of handing it back to the OS (Linux).

    A forward pass allocates and frees the same large activations (tens of MB)
    again and again. By default glibc serves such blocks with mmap and unmaps them
    when freed, so every pass faults in fresh zeroed pages, which costs eager CPU
    inference and training up to half their time (``scripts/bench_stylize.py``
    measures it). The process keeps its peak memory instead. Called by the torch
    backend and by training when they run on the CPU; idempotent. Setting
    ``MALLOC_MMAP_MAX_`` yourself turns it off. Returns whether it was applied.
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_MAX_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return False
