"""Choosing the device (the one place that turns ``"auto"`` into a device) and tuning the CPU for it.

PyTorch is imported only to resolve a device: the CPU facts (``cpuinfo``,
``cpu_count``, ``accelerator_possible``) are read without it, so the OpenVINO
stylization path starts without loading PyTorch.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys

from fastnst.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def check_device(name: str) -> str:
    """``name`` if fastnst knows the device (``cpu``, ``cuda``, ``cuda:1``, ``mps``, ``auto``), else ``ConfigError``."""
    kind, colon, index = str(name).partition(":")
    if kind not in DEVICE_CHOICES or (colon and not (kind == "cuda" and index.isdigit())):
        raise ConfigError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)} "
                          "(cuda:N for GPU N)")
    return str(name)


def torchrun_rank(environ=None) -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; (0, 1, 0) alone.

    ``ConfigError`` when they are set but not whole numbers.
    """
    environ = os.environ if environ is None else environ
    try:
        return (int(environ.get("RANK", "0")), int(environ.get("WORLD_SIZE", "1")),
                int(environ.get("LOCAL_RANK", "0")))
    except ValueError:
        raise ConfigError(f"RANK={environ.get('RANK')!r} / WORLD_SIZE={environ.get('WORLD_SIZE')!r} / "
                          f"LOCAL_RANK={environ.get('LOCAL_RANK')!r} are not whole numbers; unset them or pass "
                          "--shard i/n") from None


def accelerator_possible() -> bool:
    """Whether this machine might have a GPU PyTorch can use; False means certainly the CPU, known without torch.

    CUDA needs the NVIDIA driver (``/proc/driver/nvidia`` or ``/dev/nvidia*``)
    and MPS a Mac; ROCm builds of PyTorch present AMD GPUs as CUDA through
    ``/dev/kfd``. Anywhere else ``--device auto`` is the CPU.
    """
    if sys.platform == "darwin" or not sys.platform.startswith("linux"):
        return True
    return os.path.exists("/proc/driver/nvidia") or bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.exists("/dev/kfd")


def cpu_count() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name="auto"):
    """Return the device to run on.

    ``"auto"`` picks CUDA, then Apple's MPS, then the CPU. An explicit device that
    is not available raises ``ConfigError`` rather than silently falling back, so a
    user who asked for a GPU learns they are not getting one. ``"cuda:1"`` style
    indices are accepted.
    """
    import torch

    if isinstance(name, torch.device):
        return name
    kind = check_device(name).split(":", 1)[0]
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


def describe_device(device) -> str:
    """A human name for a torch ``device``, recorded in model files: the GPU's name, or the CPU's model and threads."""
    import torch

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


def fast_cpu_bf16() -> bool | None:
    """Whether this CPU runs bf16 faster than fp32, by ``/proc/cpuinfo``; None where it cannot tell (not Linux).

    Measured (docs/recipe.md, training; the OpenVINO backend, inference): Intel's AMX
    and AMD's AVX512-BF16 (EPYC) run bf16 about 1.6-2x fp32; an Intel Xeon with
    AVX512-BF16 but no AMX runs it at 0.6x (its oneDNN bf16 kernels are slower
    than its fp32 ones); without AVX512-BF16, bf16 is emulated.
    """
    flags, vendor = cpuinfo("flags"), cpuinfo("vendor_id")
    if flags is None:
        return None
    flags = flags.split()
    return "amx_bf16" in flags or (vendor == "AuthenticAMD" and "avx512_bf16" in flags)


def default_amp(device) -> str:
    """The mixed precision ``fastnst train --amp auto`` picks for a ``torch.device``: "bf16" or "none".

    bf16 where it is the faster arithmetic: a CPU for which ``fast_cpu_bf16`` says so,
    a CUDA device that supports it natively (Ampere and later). fp32 elsewhere,
    including Apple's MPS and any CPU it cannot tell about.
    """
    if device.type == "cpu":
        return "bf16" if fast_cpu_bf16() else "none"
    if device.type == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "none"
    return "none"


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
