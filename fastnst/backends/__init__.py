"""Backends: what runs the network. There is one stylization engine and several backends.

The engine (``fastnst.stylize``) owns files, batching, tiling, blending and
colour; a backend only turns a batch of images into stylized images. This
module is the written contract between them (``Backend``), the registry of
backends, and the rule ``--backend auto`` follows. It imports no runtime, so
choosing a backend never loads one that is not used.

**Arrays.** Backends take a (B, 3, H, W) float batch in 0–1, as a numpy array or
a CPU torch tensor, and return float32 (B, 3, H, W), unclamped, of the same kind
(numpy in, numpy out: the engine works in numpy, so the OpenVINO path never
imports PyTorch). ``as_array`` and ``like`` do the conversions at the boundary.

**Statistics** (``NormStats``: per InstanceNorm, in forward order, (mean, var),
each (B, C) or (1, C)) are what lets the engine tile a large photo seamlessly:
``norm_stats(batch)`` measures them, ``region_sums`` adds them up tile by tile
(``fastnst.stylize.tiling.exact_stats``), and ``run(tile, norm_stats=...)``
applies them to a tile.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from fastnst.checkpoint import ModelInfo
from fastnst.errors import ConfigError
from fastnst.models.spec import NormStats


@runtime_checkable
class Backend(Protocol):
    """Everything the engine asks of a backend; every backend implements all of it.

    Class attributes: ``name``; ``dtypes``, the ``--dtype`` values it takes (empty:
    none, e.g. an ONNX file's precision is its own); ``options``, the torch-only
    keyword options of ``from_file`` it takes besides ``device`` and ``dtype``.

    Instance attributes: ``info`` (the model file's ``ModelInfo``), ``device_type``
    (``"cpu"``, ``"cuda"`` or ``"mps"``), ``device`` (the device itself, as torch
    names it: ``"cuda:1"`` where an index was given, so the engine sizes tiles by
    that GPU's free memory, not the current one's; a string or a ``torch.device``), ``style`` (multi-style models: (N,)
    float32 style weights, one-hot or a convex mix, set by the engine once before
    running; None: the first style; single-style backends ignore it),
    ``concurrent`` (whether ``run`` may be called from several threads at once)
    and ``default_streams`` (photos to run at once on the CPU when the user does
    not say: OpenVINO's throughput streams, one per core; 1 elsewhere).
    """

    name: ClassVar[str]
    dtypes: ClassVar[tuple[str, ...]]
    options: ClassVar[tuple[str, ...]]
    info: ModelInfo
    device_type: str
    device: Any
    style: np.ndarray | None
    concurrent: bool
    default_streams: int

    @classmethod
    def from_file(cls, path: str | Path, *, device: str = "auto", dtype: str | None = None, **options) -> Backend:
        """Build the backend from a model file it understands (``ModelFileError`` otherwise)."""
        ...

    def run(self, batch, norm_stats: NormStats | None = None):
        """(B, 3, H, W) float in 0–1 → (B, 3, H, W) float32, unclamped, same size and kind."""
        ...

    def norm_stats(self, batch) -> NormStats:
        """Statistics of every InstanceNorm's input for ``batch`` (as ``TransformerNet.compute_norm_stats``)."""
        ...

    def region_sums(self, batch, known: NormStats, region: tuple[int, int, int, int]
                    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Per-channel sum and sum of squares (float64, (C,)) and count of the input of InstanceNorm ``len(known)``.

        The network runs on ``batch`` with ``known`` fixing the statistics of the
        InstanceNorms before that one, and stops there. Only rows ``y0:y1`` and
        columns ``x0:x1`` of ``region`` (full-resolution pixels of the padded
        input, multiples of 4) are counted, mapped to that layer's resolution.
        """
        ...

    def set_streams(self, streams: int) -> None:
        """The engine will call ``run`` from up to ``streams`` threads at once (one core each on the CPU)."""
        ...


@dataclass(frozen=True)
class Registration:
    """What the engine knows about a backend without importing it: the one place each backend declares
    its class (``module:Class``, imported only when used), the Python package it needs, the ``--dtype``
    values it takes and its torch-only keyword options. The classes read their ``dtypes`` and
    ``options`` from here."""

    target: str
    runtime: str
    dtypes: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


BACKENDS: dict[str, Registration] = {
    "torch": Registration("fastnst.backends.torch:TorchBackend", "torch", ("fp32", "bf16", "fp16"),
                          ("channels_last", "compile")),
    "onnxruntime": Registration("fastnst.backends.onnxruntime:OnnxRuntimeBackend", "onnxruntime"),
    "openvino": Registration("fastnst.backends.openvino:OpenVinoBackend", "openvino", ("fp32", "bf16")),
}
AUTO = "auto"
BACKEND_CHOICES = (AUTO, *BACKENDS)
DTYPE_CHOICES = tuple(sorted({d for entry in BACKENDS.values() for d in entry.dtypes}))


def backend_class(name: str) -> type:
    """The class implementing backend ``name``; an unknown name lists the valid ones."""
    try:
        module, _, cls = BACKENDS[name].target.partition(":")
    except KeyError:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}") from None
    return getattr(importlib.import_module(module), cls)


def check_backend_options(backend: str, dtype: str | None = None, channels_last: bool | None = None,
                          compile: bool = False) -> None:
    """A one-line ``ConfigError`` when ``backend`` is unknown or does not take the options given."""
    if backend not in BACKEND_CHOICES:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    if dtype is not None and dtype not in DTYPE_CHOICES:
        raise ConfigError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_CHOICES)}")
    if backend == AUTO:
        return
    if dtype is not None and dtype not in BACKENDS[backend].dtypes:
        takes = f"takes {', '.join(BACKENDS[backend].dtypes)}" if BACKENDS[backend].dtypes else \
            "takes none: an ONNX file's precision is its own (fastnst export --fp16)"
        raise ConfigError(f"--dtype {dtype} is not an option of the {backend} backend ({takes}); drop it or "
                          "choose another --backend")
    given = [name for name, value in (("--channels-last", channels_last is not None), ("--compile", compile))
             if value and name.lstrip("-").replace("-", "_") not in BACKENDS[backend].options]
    if given:
        raise ConfigError(f"{' and '.join(given)}: torch backend options, not options of the {backend} backend; drop "
                          f"them or use --backend torch")


def installed(name: str) -> bool:
    """Whether backend ``name``'s runtime can be found, without importing it."""
    module = BACKENDS[name].runtime
    if module in sys.modules:
        return sys.modules[module] is not None  # None: an import of it was blocked
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def runtime_version(name: str) -> str | None:
    """The installed version of backend ``name``'s runtime, or None when it cannot be imported."""
    from importlib import metadata

    runtime = BACKENDS[name].runtime
    try:
        module = importlib.import_module(runtime)
    except ImportError:
        return None
    try:
        return metadata.version(runtime)
    except metadata.PackageNotFoundError:
        return str(getattr(module, "__version__", "unknown"))


def choose_backend(model: str | Path, device: str = "auto", torch_options: bool = False) -> tuple[str, str]:
    """What ``--backend auto`` runs ``model`` with, and why (one line).

    * ``torch_options``: the torch-only options were asked for (``channels_last``,
      ``compile``, ``dtype`` fp16) → torch;
    * the device is (or ``auto`` finds) CUDA or MPS → torch (onnxruntime for a
      ``.onnx`` file, which torch cannot read);
    * the CPU → OpenVINO when installed: the fastest CPU runtime, in bf16 where
      the CPU has it (``scripts/bench_stylize.py --only backends``); a ``.onnx``
      file without OpenVINO → onnxruntime;
    * the CPU without OpenVINO, a model file → torch (no ONNX export needed).

    ``auto`` is resolved without importing PyTorch when the machine has no GPU
    at all (``fastnst.device.accelerator_possible``).
    """
    from fastnst.device import accelerator_possible, resolve_device

    is_onnx = Path(model).suffix.lower() == ".onnx"
    if torch_options and not is_onnx:
        return "torch", "torch-only options were given (--channels-last, --compile or --dtype fp16)"
    kind = device.split(":", 1)[0]
    if kind == "auto":
        kind = resolve_device("auto").type if accelerator_possible() else "cpu"
    if kind != "cpu":
        return ("onnxruntime", f"{kind} and a .onnx file") if is_onnx else ("torch", f"device {kind}")
    if installed("openvino"):
        return "openvino", "the CPU, and OpenVINO is installed (the fastest CPU runtime)"
    if is_onnx:
        return "onnxruntime", "the CPU, a .onnx file, and OpenVINO is not installed"
    return "torch", "the CPU, and OpenVINO is not installed (pip install fastnst[openvino] to stylize faster)"


def as_array(x: Any, dtype=np.float32) -> np.ndarray:
    """A numpy array of ``x`` (numpy, a CPU torch tensor, anything array-like), as ``dtype``, C-contiguous."""
    if type(x).__module__.startswith("torch"):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=dtype)


def like(reference: Any, array: np.ndarray):
    """``array`` as the kind ``reference`` is: a torch tensor for a torch tensor, else the numpy array itself."""
    if type(reference).__module__.startswith("torch"):
        return sys.modules["torch"].from_numpy(np.ascontiguousarray(array))
    return array


def region_moments(x: np.ndarray, region: tuple[int, int, int, int], full_height: int
                   ) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-channel sum and sum of squares (float64, (C,)) and pixel count of ``x`` (B, C, h, w) inside ``region``.

    ``region`` is (y0, y1, x0, x1) in full-resolution pixels of the padded input
    (multiples of 4); ``x`` may be at a lower resolution, ``full_height // h``
    times smaller, and the region is mapped to it. What every backend's
    ``region_sums`` returns (``fastnst.stylize.tiling.exact_stats`` adds them up).
    """
    factor = full_height // x.shape[-2]
    y0, y1, x0, x1 = (v // factor for v in region)
    values = np.asarray(x[..., y0:y1, x0:x1], dtype=np.float64)
    count = values.shape[0] * values.shape[2] * values.shape[3]
    return values.sum(axis=(0, 2, 3)), np.square(values).sum(axis=(0, 2, 3)), count
