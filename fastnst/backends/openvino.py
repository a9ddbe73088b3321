"""The OpenVINO backend: the fastest way to stylize on a CPU, in bf16 where the CPU has it.

The network reaches OpenVINO as ONNX: a ``.onnx`` file written by ``fastnst
export`` is read as it is, and a fastnst ``.safetensors`` or pytorch/examples
``.pth`` model is exported in memory first (``fastnst.export.to_onnx``, a few
seconds, done once per model and process). The tiling graphs (statistics,
fixed statistics, region sums) are the ONNX Runtime backend's, derived from the
same graph (``fastnst.backends.onnxruntime``), so every ONNX-based runtime tiles
alike and the engine never knows which one ran.

Precision (``dtype``): ``fp32`` (OpenVINO's ``INFERENCE_PRECISION_HINT`` f32,
within ~0.1 of 255 of PyTorch fp32) or ``bf16`` (convolutions in bfloat16,
a few levels of 255 off). ``None`` picks bf16 only where OpenVINO runs it
natively (``BF16`` in the CPU's ``OPTIMIZATION_CAPABILITIES``) on AMX, where its
quality holds; fp32 elsewhere (see ``default_dtype``). ``tests/test_backend_openvino.py``
checks that the default keeps >= 50 dB PSNR against fp32 on rain_princess.

Compiling: each graph is compiled for the CPU once with dynamic batch, height
and width (``static_shapes=False``, the default), which measured as fast per
image as a graph compiled for one fixed size and costs no compilation per new
size, so a library of photos of many sizes compiles three graphs at most.
``static_shapes=True`` compiles one graph per input shape instead (a folder of
same-size photos compiles once), kept in an LRU of ``cache_size`` entries.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from fastnst.backends.onnxruntime import OnnxGraphBackend, _first_line, read_onnx
from fastnst.device import cpuinfo
from fastnst.errors import ConfigError, FastNSTError, ModelFileError
from fastnst.onnx_format import info_from_metadata

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install fastnst[openvino]"
# fastnst dtype name → OpenVINO's INFERENCE_PRECISION_HINT.
PRECISIONS = {"fp32": "f32", "bf16": "bf16"}
DEFAULT_CACHE_SIZE = 8
_EXPORTS: OrderedDict[str, bytes] = OrderedDict()  # sha256 of a model file → its ONNX export, serialized
_EXPORTS_KEPT = 4
_EXPORTS_LOCK = threading.Lock()


def openvino():
    """The ``openvino`` module, or a one-line ``ConfigError`` saying how to install it."""
    try:
        import openvino as ov
    except ImportError:
        raise ConfigError(f"the openvino backend needs OpenVINO, which is not installed: {INSTALL_HINT} "
                          "(or choose --backend torch or onnxruntime)") from None
    return ov


@lru_cache(maxsize=1)
def core():
    """One ``openvino.Core`` per process (it loads the CPU plugin, ~0.1 s)."""
    return openvino().Core()


@lru_cache(maxsize=1)
def cpu_capabilities() -> frozenset[str]:
    """What OpenVINO's CPU plugin says this CPU can do natively, e.g. ``{"FP32", "BF16", "INT8", ...}``."""
    return frozenset(str(c).upper() for c in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def cpu_name() -> str:
    return str(core().get_property("CPU", "FULL_DEVICE_NAME"))


@lru_cache(maxsize=1)
def has_amx() -> bool:
    """Whether the CPU has AMX bf16 tiles (Linux ``/proc/cpuinfo`` flag ``amx_bf16``; False where unknown)."""
    return "amx_bf16" in (cpuinfo("flags") or "").split()


def default_dtype() -> str:
    """bf16 where OpenVINO runs it natively **and** its quality was measured to hold, else fp32.

    OpenVINO's CPU capabilities must list ``BF16``, and the CPU must have AMX:
    there bf16 keeps 53–54 dB PSNR against fp32 (rain_princess). On AVX512-BF16
    without AMX (an AMD EPYC here) OpenVINO's bf16 measured only 46.6–53.2 dB on
    amber.jpg and 10 photos, 4 of the 11 under 50 dB, so fp32 stays the default
    there (``--dtype bf16`` still asks for it: about 2x faster).
    """
    return "bf16" if "BF16" in cpu_capabilities() and has_amx() else "fp32"


def _check_device(device: str | torch.device) -> None:
    kind = str(device).split(":", 1)[0]
    if kind not in ("auto", "cpu"):
        raise ConfigError(f"the openvino backend runs on the CPU; use --device cpu or auto, or --backend torch "
                          f"for {device}")


def exported_onnx(path: str | Path):
    """The ONNX export of a fastnst/pytorch-examples model file, made once per file content and process."""
    import onnx

    from fastnst.checkpoint import load_model
    from fastnst.export import to_onnx

    path = Path(path)
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        digest = None  # load_model names the problem
    with _EXPORTS_LOCK:
        data = _EXPORTS.get(digest) if digest else None
        if data is not None:
            _EXPORTS.move_to_end(digest)
            return onnx.load_from_string(data)
    net, info = load_model(path)
    start = time.perf_counter()
    model = to_onnx(net, info, config={"source": str(path), "for": "openvino"})
    log.info("exported %s to ONNX for OpenVINO in %.1f s", path, time.perf_counter() - start)
    if digest:
        with _EXPORTS_LOCK:
            _EXPORTS[digest] = model.SerializeToString()
            while len(_EXPORTS) > _EXPORTS_KEPT:
                _EXPORTS.popitem(last=False)
    return model


class OpenVinoBackend(OnnxGraphBackend):
    """Runs a fastnst ONNX graph with OpenVINO on the CPU; ``info`` comes from the graph's metadata.

    ``model`` is an ``onnx.ModelProto`` (``from_file`` reads or exports one).
    ``dtype`` ``fp32``/``bf16``/None (see the module docstring), ``threads`` the
    CPU threads OpenVINO uses (default: its own choice, all cores). Every graph
    kind (plain, statistics, fixed statistics, region sums) is compiled on first
    use. ``compiles`` and ``compile_seconds`` count what compiling cost so far.
    Safe to call from several threads at once (each gets its own infer request).
    """

    name = "openvino"

    def __init__(self, model, device: str | torch.device = "auto", path: str | Path = "<onnx>", *,
                 dtype: str | None = None, threads: int | None = None, static_shapes: bool = False,
                 cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        openvino()
        _check_device(device)
        if dtype is not None and dtype not in PRECISIONS:
            raise ConfigError(f"unknown dtype {dtype!r} for the openvino backend; choose one of "
                              f"{', '.join(PRECISIONS)}")
        if cache_size < 1:
            raise ConfigError(f"cache_size must be at least 1, got {cache_size}")
        self.path, self.threads = str(path), threads
        self.metadata = {p.key: p.value for p in model.metadata_props}
        self.info = info_from_metadata(self.metadata, path)
        self.io = self.metadata.get("io", "float")
        self.dtype = dtype or default_dtype()
        self.device = torch.device("cpu")
        self.static_shapes, self.cache_size = bool(static_shapes), cache_size
        self.compiles, self.compile_seconds = 0, 0.0
        self.streams = 1
        self._model = model
        self._graphs: dict[object, object] = {}  # graph kind → openvino.Model (dynamic shapes)
        self._compiled: OrderedDict[tuple, _Compiled] = OrderedDict()
        self._lock = threading.Lock()
        if not self.static_shapes:
            self._get("plain", None)  # fail now, not on the first image, if OpenVINO refuses the graph

    @classmethod
    def from_file(cls, path: str | Path, *, device: str | torch.device = "auto", dtype: str | None = None,
                  threads: int | None = None, static_shapes: bool = False) -> OpenVinoBackend:
        """A ``.onnx`` file from ``fastnst export``, or a ``.safetensors``/``.pth`` model exported in memory."""
        openvino()
        _check_device(device)
        model = read_onnx(path) if Path(path).suffix.lower() == ".onnx" else exported_onnx(path)
        return cls(model, device, path, dtype=dtype, threads=threads, static_shapes=static_shapes)

    def set_streams(self, streams: int) -> None:
        """Run whole photos as ``streams`` concurrent one-core OpenVINO streams (the engine's ``--streams``).

        OpenVINO's throughput mode: each caller thread's request runs on a stream
        of its own. On 2 cores, 481×321 photos went from 4.5 img/s (one request on
        both cores) to 6.3 img/s (two streams). The tiling graphs keep the latency
        mode, since a tiled photo runs alone.
        """
        if streams != self.streams:
            self.streams = int(streams)
            with self._lock:
                for key in [k for k in self._compiled if k[0] == "plain"]:
                    del self._compiled[key]

    # -- compiling ------------------------------------------------------------------------------

    def _graph(self, kind):
        """The openvino.Model of a graph kind: ``plain``, ``stats``, ``fixed`` or ``("region", k)``."""
        if kind not in self._graphs:
            proto = self._graph_proto(kind)
            try:
                self._graphs[kind] = core().read_model(proto.SerializeToString())
            except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with C++ context
                raise ModelFileError(self.path, f"OpenVINO {openvino().__version__} cannot read the graph "
                                                f"({_first_line(exc)})") from None
        return self._graphs[kind]

    def _get(self, kind, feeds: dict[str, np.ndarray] | None) -> _Compiled:
        """The compiled graph for ``kind`` (and, with ``static_shapes``, for the shapes of ``feeds``)."""
        shapes = None
        if self.static_shapes and feeds is not None:
            shapes = tuple(sorted((name, tuple(value.shape)) for name, value in feeds.items()))
        key = (kind, shapes)
        with self._lock:
            entry = self._compiled.get(key)
            if entry is not None:
                self._compiled.move_to_end(key)
                return entry
            model = self._graph(kind)
            if shapes is not None:
                model = model.clone()
                model.reshape({name: list(shape) for name, shape in shapes})
            config = {"INFERENCE_PRECISION_HINT": PRECISIONS[self.dtype], "PERFORMANCE_HINT": "LATENCY"}
            if kind == "plain" and self.streams > 1:
                config.update(PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=str(self.streams))
            if self.threads:
                config["INFERENCE_NUM_THREADS"] = int(self.threads)
            start = time.perf_counter()
            try:
                compiled = core().compile_model(model, "CPU", config)
            except Exception as exc:  # noqa: BLE001
                raise ModelFileError(self.path, f"OpenVINO {openvino().__version__} cannot compile the graph "
                                                f"({_first_line(exc)})") from None
            seconds = time.perf_counter() - start
            self.compiles += 1
            self.compile_seconds += seconds
            log.info("openvino: compiled %s graph%s (%s) in %.2f s", kind if isinstance(kind, str) else kind[0],
                     f" for {dict(shapes)}" if shapes else "", self.dtype, seconds)
            entry = self._compiled[key] = _Compiled(compiled)
            # One region graph at a time: each compiled graph keeps a tile's worth of buffers (~600 B/px),
            # and a tiled photo's statistics go through all of them layer by layer (2048² photo in 1024²
            # tiles: peak RSS 3.6 GB with eight cached, 1.7 GB with one).
            if isinstance(kind, tuple):
                for other in [k for k in self._compiled if isinstance(k[0], tuple) and k != key]:
                    del self._compiled[other]
            while len(self._compiled) > self.cache_size:
                self._compiled.popitem(last=False)
            return entry

    # -- running --------------------------------------------------------------------------------

    def _run(self, kind, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self._get(kind, feeds).infer(feeds)
        except FastNSTError:
            raise
        except Exception as exc:  # noqa: BLE001 - OpenVINO's errors carry multi-line C++ context
            shape = "x".join(map(str, next(iter(feeds.values())).shape))
            raise FastNSTError(f"{self.path}: OpenVINO failed on a {shape} input ({_first_line(exc)})") from None


class _Compiled:
    """A compiled graph and its idle infer requests: one request per concurrent caller, reused afterwards."""

    def __init__(self, compiled) -> None:
        self.compiled, self.idle, self.lock = compiled, [], threading.Lock()

    def infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self.lock:
            request = self.idle.pop() if self.idle else self.compiled.create_infer_request()
        try:
            request.infer(feeds, share_inputs=True)
            # Copies: the request's output buffers are overwritten by its next inference.
            return [np.array(request.get_output_tensor(i).data, copy=True) for i in range(len(self.compiled.outputs))]
        finally:
            with self.lock:
                self.idle.append(request)
