"""The OpenVINO backend: the fastest way to stylize on a CPU, in bf16 where the CPU has it.

The network reaches OpenVINO as ONNX: a ``.onnx`` file written by ``fastnst
export`` is read as it is, and a fastnst ``.safetensors`` or pytorch/examples
``.pth`` model is exported once and cached (``fastnst.backends.graph_cache``),
so a second run starts without PyTorch. OpenVINO's compiled graphs are cached
too (its ``CACHE_DIR``, beside the ONNX cache). The tiling graphs (statistics,
fixed statistics, region sums) come from ``fastnst.backends.onnx_graph``, so
every ONNX-based runtime tiles alike.

**Precision** (``dtype``): ``fp32`` (``INFERENCE_PRECISION_HINT`` f32, within
~0.1 of 255 of PyTorch fp32) or ``bf16`` (convolutions in bfloat16, 2–7× faster).
The rule for the default: *the fastest precision whose output is visually
lossless* — at every size from 256² to 4K, ≥ 40 dB PSNR against fp32 and a
smaller error than saving the fp32 result as JPEG at quality 95 already adds
(≈31 dB on stylized photos) — on every CPU where that was measured. That is
bf16 where OpenVINO runs it natively (``BF16`` in the CPU's
``OPTIMIZATION_CAPABILITIES``) on AMX and on AMD's AVX512-BF16 (both measured
faster than fp32), fp32 elsewhere: on plain AVX2, and on an Intel Xeon with
AVX512-BF16 but no AMX, where OpenVINO's bf16 ran 0.58–0.62× its fp32
(``scripts/bench_stylize.py --only backends``; tests check the rule's quality
half on real weights at 481×321 and 1080p).

Where bf16's error came from, and the fix: nearly all of it is the first
convolution. bfloat16 keeps 8 significant bits, so a 0–1 pixel value is
rounded by up to half a grey level before the 9×9 conv, and rounding that
conv's weights costs as much again; InstanceNorm then amplifies the noise in
smooth areas (avril.jpg: 44.5 dB at 1080p, 41.9 dB at 4K, max error 50/255).
``exact_first_conv`` feeds the graph pixel values 0–255 instead (whole numbers
up to 256 are exact in bf16) with the 1/255 folded into the weights, and splits
those weights into a bf16 part and the bf16 rounding of the remainder, two convs
whose sum carries ~16 significant bits. The first conv is 5% of the network's
multiply-adds; with it exact, bf16 measured 50.3–54.2 dB from 481×321 to 4K.

Compiling: each graph is compiled once with dynamic batch, height and width
(``static_shapes=False``, the default), as fast per image as a fixed-size graph
and no compiling per new size. ``static_shapes=True`` compiles one graph per
input shape instead, kept in an LRU of ``cache_size`` entries.

Threads: the first use of OpenVINO's numpy bindings from two threads at once can
deadlock in pybind11's one-time initialisation (``../shared/repro``), so that
initialisation and one warm-up inference happen when the backend is built, on
the building thread, before any concurrent use.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import numpy as np

from fastnst.backends import BACKENDS
from fastnst.backends.graph_cache import cache_dir, cached_onnx
from fastnst.backends.onnx_graph import OnnxGraphBackend, read_onnx
from fastnst.device import check_device, cpu_count, fast_cpu_bf16
from fastnst.errors import ConfigError, FastNSTError, ModelFileError, first_line
from fastnst.onnx_format import INPUT_NAME, info_from_metadata

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install fastnst[openvino]"
# fastnst dtype name → OpenVINO's INFERENCE_PRECISION_HINT.
PRECISIONS = {"fp32": "f32", "bf16": "bf16"}
DEFAULT_CACHE_SIZE = 8


def openvino():
    """The ``openvino`` module, its numpy bindings initialised on this thread; else a one-line ``ConfigError``."""
    try:
        import openvino as ov
    except ImportError:
        raise ConfigError(f"the openvino backend needs OpenVINO, which is not installed: {INSTALL_HINT} "
                          "(or choose --backend torch or onnxruntime)") from None
    _initialise_bindings(ov)
    return ov


@lru_cache(maxsize=1)
def _initialise_bindings(ov) -> None:
    """pybind11's lazy numpy-API set-up, done once here rather than racing in two inference threads."""
    ov.Type.f32.to_dtype()


@lru_cache(maxsize=1)
def core():
    """One ``openvino.Core`` per process (it loads the CPU plugin), caching compiled graphs on disk."""
    ov_core = openvino().Core()
    folder = cache_dir() / "openvino"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        ov_core.set_property({"CACHE_DIR": str(folder)})
    except (OSError, RuntimeError) as exc:
        log.info("openvino: no compiled-graph cache (%s)", first_line(exc))
    return ov_core


@lru_cache(maxsize=1)
def cpu_capabilities() -> frozenset[str]:
    """What OpenVINO's CPU plugin says this CPU can do natively, e.g. ``{"FP32", "BF16", "INT8", ...}``."""
    return frozenset(str(c).upper() for c in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def cpu_name() -> str:
    return str(core().get_property("CPU", "FULL_DEVICE_NAME"))


def default_dtype() -> str:
    """bf16 where OpenVINO runs it natively and it was measured faster than fp32, else fp32 (the module
    docstring's rule): Intel's AVX512-BF16 without AMX runs OpenVINO's bf16 at 0.58-0.62x its fp32."""
    if "BF16" not in cpu_capabilities():
        return "fp32"
    return "fp32" if fast_cpu_bf16() is False else "bf16"  # None (not Linux): OpenVINO's word alone


def bf16_round(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even), returned as float32."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return rounded.view(np.float32)


def exact_first_conv(model) -> bool:
    """Rewrite an ``openvino.Model`` so its first convolution keeps fp32 accuracy under bf16; False if it cannot.

    The graph then takes pixel values 0–255 (exact in bf16) instead of 0–1: the
    1/255 moves into the weights, which are split into their bf16 rounding and
    the remainder (two convolutions, summed). Applies only where the first
    convolution's input comes from the image input through padding alone (a
    float-io graph), which is every graph ``fastnst export`` writes with ``--io float``.
    """
    ops = openvino().opset13
    conv = next((op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"), None)
    if conv is None:
        return False
    source = conv.input_value(0).get_node()
    while source.get_type_name() == "Pad":
        source = source.input_value(0).get_node()
    weights = conv.input_value(1).get_node()
    if source.get_type_name() != "Parameter" or source.get_friendly_name() != INPUT_NAME or \
            weights.get_type_name() != "Constant":
        return False
    w = weights.get_data().astype(np.float32) / np.float32(255)
    high = bf16_round(w)
    attrs = conv.get_attributes()
    data = conv.input_value(0)

    def convolution(values: np.ndarray):
        return ops.convolution(data, ops.constant(values), attrs["strides"], attrs["pads_begin"], attrs["pads_end"],
                               attrs["dilations"], attrs["auto_pad"].upper())

    total = ops.add(convolution(high), convolution(w - high))
    for target in list(conv.output(0).get_target_inputs()):
        target.replace_source_output(total.output(0))
    model.validate_nodes_and_infer_types()
    return True


class OpenVinoBackend(OnnxGraphBackend):
    """Runs a fastnst ONNX graph with OpenVINO on the CPU; ``info`` comes from the graph's metadata.

    ``model`` is an ``onnx.ModelProto`` or the path of a ``.onnx`` file (then
    ``metadata`` holds its metadata props; ``from_file`` builds either).
    ``dtype`` ``fp32``/``bf16``/None (see the module docstring), ``threads`` the
    CPU threads OpenVINO uses (default: its own choice, all cores); ``exact_input``
    False leaves a bf16 graph's first convolution as exported (for comparison
    only: ``exact_first_conv``). Every graph
    kind (plain, statistics, fixed statistics, region sums) is compiled on first
    use. ``compiles`` and ``compile_seconds`` count what compiling cost so far.
    Safe to call from several threads at once (each gets its own infer request).
    """

    name = "openvino"
    dtypes = BACKENDS["openvino"].dtypes
    options = BACKENDS["openvino"].options

    def __init__(self, model, device: str = "auto", path: str | Path = "<onnx>", *, dtype: str | None = None,
                 threads: int | None = None, static_shapes: bool = False, cache_size: int = DEFAULT_CACHE_SIZE,
                 metadata: dict[str, str] | None = None, exact_input: bool = True) -> None:
        openvino()
        if check_device(str(device)).split(":", 1)[0] not in ("auto", "cpu"):
            raise ConfigError(f"the openvino backend runs on the CPU; use --device cpu or auto, or --backend "
                              f"torch for {device}")
        if dtype is not None and dtype not in PRECISIONS:
            raise ConfigError(f"unknown dtype {dtype!r} for the openvino backend; choose one of "
                              f"{', '.join(PRECISIONS)}")
        if cache_size < 1:
            raise ConfigError(f"cache_size must be at least 1, got {cache_size}")
        self.path, self.threads = str(path), threads
        if isinstance(model, (str, Path)):
            self.onnx_path = str(model)
            self.metadata = dict(metadata) if metadata is not None else \
                {p.key: p.value for p in self.model.metadata_props}
        else:
            self._proto = model
            self.metadata = {p.key: p.value for p in model.metadata_props}
        self.info = info_from_metadata(self.metadata, path)
        self.dtype = dtype or default_dtype()
        self.device_type = self.device = "cpu"
        self.default_streams = cpu_count()
        self.static_shapes, self.cache_size, self.exact_input = bool(static_shapes), cache_size, bool(exact_input)
        self.compiles, self.compile_seconds = 0, 0.0
        self.streams = 1
        self.input_scale = 1.0
        self._graphs: dict[object, object] = {}  # graph kind → openvino.Model (dynamic shapes)
        self._compiled: OrderedDict[tuple, _Compiled] = OrderedDict()
        self._lock = threading.Lock()
        self._graph("plain")  # decides input_scale; fails now, not on the first image, if OpenVINO refuses it
        if not self.static_shapes:
            self.run(np.zeros((1, 3, 8, 8), np.float32))  # the warm-up inference, on this thread

    @classmethod
    def from_file(cls, path: str | Path, *, device: str = "auto", dtype: str | None = None,
                  threads: int | None = None, static_shapes: bool = False) -> OpenVinoBackend:
        """A ``.onnx`` file from ``fastnst export``, or a ``.safetensors``/``.pth`` model through the graph cache."""
        openvino()
        if Path(path).suffix.lower() == ".onnx":
            return cls(read_onnx(path), device, path, dtype=dtype, threads=threads, static_shapes=static_shapes)
        graph, metadata = cached_onnx(path)
        return cls(graph, device, path, dtype=dtype, threads=threads, static_shapes=static_shapes,
                   metadata=metadata)

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
            try:
                if kind == "plain" and self._proto is None:
                    model = core().read_model(self.onnx_path)  # no onnx package needed for the plain graph
                else:
                    model = core().read_model(self._graph_proto(kind).SerializeToString())
            except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with C++ context
                raise ModelFileError(self.path, f"OpenVINO {openvino().__version__} cannot read the graph "
                                                f"({first_line(exc)})") from None
            exact = self.exact_input and self.dtype == "bf16" and self.io == "float" and exact_first_conv(model)
            if kind == "plain":
                self.input_scale = 255.0 if exact else 1.0
            elif exact != (self.input_scale == 255.0):
                raise FastNSTError(f"{self.path}: the {kind} graph and the plain graph disagree on their input")
            self._graphs[kind] = model
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
            entry = self._compiled[key] = self._compile(kind, model, shapes)
            # One region graph at a time: each compiled graph keeps a tile's worth of buffers (~600 B/px),
            # and a tiled photo's statistics go through all of them layer by layer (2048² photo in 1024²
            # tiles: peak RSS 3.6 GB with eight cached, 1.7 GB with one).
            if isinstance(kind, tuple):
                for other in [k for k in self._compiled if isinstance(k[0], tuple) and k != key]:
                    del self._compiled[other]
            while len(self._compiled) > self.cache_size:
                self._compiled.popitem(last=False)
            return entry

    def _compile(self, kind, model, shapes) -> _Compiled:
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
                                            f"({first_line(exc)})") from None
        seconds = time.perf_counter() - start
        self.compiles += 1
        self.compile_seconds += seconds
        log.info("openvino: compiled %s graph%s (%s) in %.2f s", kind if isinstance(kind, str) else kind[0],
                 f" for {dict(shapes)}" if shapes else "", self.dtype, seconds)
        return _Compiled(compiled)

    # -- running --------------------------------------------------------------------------------

    def _run(self, kind, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self._get(kind, feeds).infer(feeds)
        except FastNSTError:
            raise
        except Exception as exc:  # noqa: BLE001 - OpenVINO's errors carry multi-line C++ context
            shape = "x".join(map(str, next(iter(feeds.values())).shape))
            raise FastNSTError(f"{self.path}: OpenVINO failed on a {shape} input ({first_line(exc)})") from None


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
