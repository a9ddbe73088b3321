"""Backends: what runs the network. There is one stylization engine and several backends.

The engine (``fastnst.engine``) owns files, batching, tiling, blending and colour;
a backend only turns a batch of images into stylized images. Every backend takes
and returns CPU ``torch.float32`` tensors (B, 3, H, W) in 0–1 (outputs unclamped),
so the engine never needs to know which runtime computed them.

``norm_stats`` support is what lets the engine tile a large photo seamlessly:
``norm_stats(batch)`` measures every InstanceNorm's statistics (on a downscaled
copy of the whole photo) and ``run(tile, norm_stats=...)`` applies them to a tile.
See ``fastnst.models.transformer.NormStats``.

Multi-style models (``info.spec.num_styles`` N > 1): the engine sets the
backend's ``style`` attribute once, to style weights (N,) float (one-hot or a
convex mix, see ``fastnst.styles``); ``run``, ``norm_stats`` and ``region_sums``
all use it (None: the first style). Single-style backends ignore it.
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
    style: torch.Tensor | None  # (N,) style weights for multi-style models; None: the first style

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
    "openvino": "fastnst.backends.openvino:OpenVinoBackend",
}
AUTO = "auto"
BACKEND_CHOICES = (AUTO, *BACKENDS)
# The keyword options of each backend's ``from_file`` the engine may pass (the others take none),
# and the ``dtype`` values each accepts.
BACKEND_OPTIONS: dict[str, tuple[str, ...]] = {"torch": ("dtype", "channels_last", "compile"), "openvino": ("dtype",)}
BACKEND_DTYPES: dict[str, tuple[str, ...]] = {"torch": ("fp32", "bf16", "fp16"), "openvino": ("fp32", "bf16")}
# The Python package each backend needs.
RUNTIMES = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}


def backend_class(name: str) -> type:
    """The class implementing backend ``name``; an unknown name lists the valid ones."""
    try:
        module, _, cls = BACKENDS[name].partition(":")
    except KeyError:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}") from None
    return getattr(importlib.import_module(module), cls)


def runtime_version(name: str) -> str | None:
    """The installed version of backend ``name``'s runtime, or None when it cannot be imported."""
    from importlib import metadata

    try:
        module = importlib.import_module(RUNTIMES[name])
    except ImportError:
        return None
    try:
        return metadata.version(RUNTIMES[name])
    except metadata.PackageNotFoundError:
        return str(getattr(module, "__version__", "unknown"))


def choose_backend(model: str | Path, device: str = "auto", torch_options: bool = False) -> tuple[str, str]:
    """What ``--backend auto`` runs ``model`` with, and why (one line).

    * ``torch_options``: the torch-only options were asked for (``channels_last``,
      ``compile``, ``dtype`` fp16) → torch;
    * the device is (or ``auto`` finds) CUDA or MPS → torch (onnxruntime for a
      ``.onnx`` file, which torch cannot read);
    * the CPU → OpenVINO when installed: bf16 on AMX/AVX512-BF16 CPUs, and fp32
      OpenVINO is faster than eager torch too (``scripts/bench_stylize.py --only
      backends``); a ``.onnx`` file without OpenVINO → onnxruntime;
    * the CPU without OpenVINO, a model file → torch: eager fp32 with the malloc fix
      measured 299 ms at 481×321 and 3.7 s at 1920×1080 against ONNX Runtime's
      315 ms and 4.3 s (issue 9, an idle Xeon), and it needs no ONNX export first
      (4–10 s). On a loaded 2-core EPYC ONNX Runtime measured 1.1–1.9x faster, so
      a long run on a .onnx file is where onnxruntime pays.
    """
    from fastnst.device import resolve_device

    is_onnx = Path(model).suffix.lower() == ".onnx"
    if torch_options and not is_onnx:
        return "torch", "torch-only options were given (--channels-last, --compile or --dtype fp16)"
    kind = resolve_device(device).type
    if kind != "cpu":
        return ("onnxruntime", f"{kind} and a .onnx file") if is_onnx else ("torch", f"device {kind}")
    if runtime_version("openvino") is not None:
        return "openvino", "the CPU, and OpenVINO is installed (the fastest CPU runtime)"
    if is_onnx:
        return "onnxruntime", "the CPU, a .onnx file, and OpenVINO is not installed"
    return "torch", "the CPU, and OpenVINO is not installed (pip install fastnst[openvino] to stylize faster)"
