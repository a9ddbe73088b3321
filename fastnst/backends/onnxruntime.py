"""The ONNX Runtime backend: runs a file written by ``fastnst export`` without PyTorch doing the math.

Whatever the file's interface (``io`` float or uint8, fp32 or fp16), the backend
takes and returns CPU float32 tensors (B, 3, H, W) in 0–1 like every backend and
converts at the boundary (a uint8 file rounds its input to 8 bits and returns
8-bit results).

Tiling (``norm_stats`` and ``run(..., norm_stats=...)``) needs two graphs the
exported file does not hold, and should not: a consumer of the file feeds only
an image. Both are derived here, in memory, from the file's own graph, whose
InstanceNormalization nodes appear in forward order:

* the *statistics* graph outputs, for each InstanceNorm, the mean and (biased)
  variance of its input, shaped (B, C);
* the *fixed* graph takes those as extra inputs (batch B or 1) and replaces each
  InstanceNormalization by ``x * scale + shift`` with
  ``scale = gamma / sqrt(var + eps)`` and ``shift = beta - mean * scale``, exactly
  as ``TransformerNet.forward(x, norm_stats=...)`` does.

* the *region* graph ``k`` is the fixed graph cut at the input of InstanceNorm
  ``k`` (only norms before it fixed), for exact statistics added up tile by tile
  (``region_sums``, as ``TorchBackend.region_sums``).

So the file stays the plain image-in, image-out graph, and tiles agree with the
torch backend's. ``OnnxGraphBackend`` holds all of this for every runtime of
such a graph (ONNX Runtime here, OpenVINO in ``fastnst.backends.openvino``).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import torch

from fastnst.device import DEVICE_CHOICES
from fastnst.errors import ConfigError, FastNSTError, ModelFileError
from fastnst.models.transformer import NormStats, padded_size, style_weights
from fastnst.onnx_format import INPUT_NAME, STYLE_INPUT, info_from_metadata
from fastnst.tiling import region_moments

log = logging.getLogger(__name__)

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
_AXES = "fastnst_axes_hw"  # initializer [2, 3]: the spatial axes of NCHW


class BackendInputError(FastNSTError, ValueError):
    """A batch or statistics handed to the backend have the wrong type, rank, shape or dtype."""


def providers_for(device: str | torch.device = "auto") -> list[str]:
    """ONNX Runtime execution providers for a fastnst device name: CUDA (if asked or auto and present), then CPU."""
    import onnxruntime as ort

    name = str(device)
    kind = name.split(":", 1)[0]
    if kind not in DEVICE_CHOICES:
        raise ConfigError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    available = ort.get_available_providers()
    if kind == "mps":
        raise ConfigError("the onnxruntime backend does not run on MPS; use --device cpu or auto")
    if kind == "cuda" and CUDA not in available:
        raise ConfigError("device 'cuda' requested but this onnxruntime has no CUDA execution provider "
                          "(install onnxruntime-gpu); use --device cpu or auto")
    if kind == "cuda" or (kind == "auto" and CUDA in available):
        return [CUDA, CPU]
    return [CPU]


def read_onnx(path: str | Path):
    """The ``onnx.ModelProto`` of a file; a missing or unreadable file is a ``ModelFileError``."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "no such ONNX file")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors have several types
        raise ModelFileError(path, f"not a readable ONNX file ({_first_line(exc)})") from None


class OnnxGraphBackend:
    """What the backends that run an exported fastnst ONNX graph share: the conversions and the tiling graphs.

    A subclass sets ``name``, ``path``, ``io`` (the file's ``float`` or ``uint8``)
    and ``_model`` (the ``onnx.ModelProto``), and implements ``_run(kind, feeds)``
    running the ``plain`` graph, the ``stats`` graph (``stats_graph``) or the
    ``fixed`` graph (``fixed_stats_graph``) on numpy feeds. A multi-style graph
    also gets the ``style`` input, from ``style`` (N,) weights (None: the first style).
    """

    name = "onnx"
    path = "<onnx>"
    io = "float"
    style = None
    _model = None

    # -- running --------------------------------------------------------------------------------

    def run(self, batch: torch.Tensor, norm_stats: NormStats | None = None) -> torch.Tensor:
        """(B, 3, H, W) float in 0–1 → (B, 3, H, W) float32 on the CPU, same size (unclamped for float io)."""
        batch = self._check_batch(batch)
        feeds = {INPUT_NAME: self._to_graph(batch), **self._style_feeds(batch.shape[0])}
        if norm_stats is None:
            return self._from_graph(self._run("plain", feeds)[0])
        feeds.update(self._stats_feeds(norm_stats, batch.shape[0]))
        return self._from_graph(self._run("fixed", feeds)[0])

    def norm_stats(self, batch: torch.Tensor) -> NormStats:
        """(mean, var) of every InstanceNorm's input for ``batch``, each (B, C) float32 on the CPU."""
        batch = self._check_batch(batch)
        outputs = self._run("stats", {INPUT_NAME: self._to_graph(batch), **self._style_feeds(batch.shape[0])})
        return [(torch.from_numpy(outputs[i]), torch.from_numpy(outputs[i + 1])) for i in range(0, len(outputs), 2)]

    def region_sums(self, batch: torch.Tensor, known: NormStats, region: tuple[int, int, int, int]
                    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Per-channel sum and sum of squares (float64, (C,)) and count of the input of InstanceNorm ``len(known)``.

        The same capability as ``TorchBackend.region_sums`` (see there), through
        ``region_graph``: the graph cut at that InstanceNorm's input, the ones
        before it fixed to ``known``. It lets the engine tile with exact statistics.
        """
        batch = self._check_batch(batch)
        index = len(known)
        if index >= len(norm_widths(self._model)):
            raise ValueError(f"the network has {index} InstanceNorms, no InstanceNorm number {index}")
        feeds = {INPUT_NAME: self._to_graph(batch), **self._stats_feeds(known, batch.shape[0], partial=True),
                 **(self._style_feeds(batch.shape[0]) if index > 0 else {})}  # the first norm's input needs no style
        x = self._run(("region", index), feeds)[0]
        return region_moments(torch.from_numpy(x), region, padded_size(batch.shape[-2]))

    def _graph_proto(self, kind):
        """The ONNX graph of a kind: ``plain`` (the file's), ``stats``, ``fixed`` or ``("region", k)``."""
        if isinstance(kind, tuple):
            return region_graph(self._model, kind[1])
        return {"plain": lambda m: m, "stats": stats_graph, "fixed": fixed_stats_graph}[kind](self._model)

    def _run(self, kind, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    # -- conversions at the boundary -------------------------------------------------------------

    def _check_batch(self, batch) -> torch.Tensor:
        if isinstance(batch, np.ndarray):
            batch = torch.from_numpy(batch)
        if not isinstance(batch, torch.Tensor):
            raise BackendInputError(f"{self.name} backend: expected a (B, 3, H, W) float tensor, got "
                                    f"{type(batch).__name__}")
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise BackendInputError(f"{self.name} backend: expected a (B, 3, H, W) batch of RGB images, got shape "
                                    f"{tuple(batch.shape)}")
        if not batch.is_floating_point():
            raise BackendInputError(f"{self.name} backend: expected float values in 0–1, got {batch.dtype} "
                                    "(divide 8-bit pixels by 255)")
        if batch.numel() == 0:
            raise BackendInputError(f"onnxruntime backend: empty batch of shape {tuple(batch.shape)}")
        return batch.detach().to("cpu", torch.float32)

    def _to_graph(self, batch: torch.Tensor) -> np.ndarray:
        if self.io == "uint8":
            batch = (batch.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
        return np.ascontiguousarray(batch.numpy())

    def _from_graph(self, array: np.ndarray) -> torch.Tensor:
        out = torch.from_numpy(np.ascontiguousarray(array))
        if self.io == "uint8":
            out = out.permute(0, 3, 1, 2).float().div_(255.0)
        return out.float().contiguous()

    def _style_feeds(self, batch_size: int) -> dict[str, np.ndarray]:
        """The ``style`` feed (B, N) of a multi-style graph; nothing for a single-style one."""
        num_styles = self.info.spec.num_styles
        if num_styles == 1:
            return {}
        try:
            weights = style_weights(num_styles, self.style, batch_size)
        except ValueError as exc:
            raise BackendInputError(f"{self.name} backend: {exc}") from None
        return {STYLE_INPUT: np.ascontiguousarray(weights.numpy(), dtype=np.float32)}

    def _stats_feeds(self, norm_stats: NormStats, batch_size: int, partial: bool = False) -> dict[str, np.ndarray]:
        """Feeds ``norm_mean_i``/``norm_var_i``; ``partial``: the first ``len(norm_stats)`` norms only."""
        widths = norm_widths(self._model)
        if len(norm_stats) > len(widths) or (len(norm_stats) != len(widths) and not partial):
            raise BackendInputError(f"norm_stats has {len(norm_stats)} entries, the network has {len(widths)} "
                                    "InstanceNorms: compute them with this model's norm_stats()")
        feeds = {}
        for i, ((mean, var), width) in enumerate(zip(norm_stats, widths)):
            for name, value in (("mean", mean), ("var", var)):
                value = torch.as_tensor(value).detach().to("cpu", torch.float32)
                if value.dim() == 1:
                    value = value[None]
                if value.dim() != 2 or value.shape[1] != width or value.shape[0] not in (1, batch_size):
                    raise BackendInputError(f"norm_stats[{i}] {name} has shape {tuple(value.shape)}, expected "
                                            f"(1, {width}) or ({batch_size}, {width})")
                feeds[f"norm_{name}_{i}"] = np.ascontiguousarray(value.numpy())
        return feeds


class OnnxRuntimeBackend(OnnxGraphBackend):
    """Runs an exported fastnst ONNX graph with ONNX Runtime; ``info`` comes from the file's metadata.

    ``model`` is an ``onnx.ModelProto`` (``from_file`` reads one). ``threads``
    sets ONNX Runtime's intra-op thread count (default: its own choice, one per
    physical core). Sessions for the tiling graphs are built on first use.
    """

    name = "onnxruntime"

    def __init__(self, model, device: str | torch.device = "auto", path: str | Path = "<onnx>",
                 threads: int | None = None) -> None:
        self.path, self.threads = str(path), threads
        self.metadata = {p.key: p.value for p in model.metadata_props}
        self.info = info_from_metadata(self.metadata, path)
        self.io = self.metadata.get("io", "float")
        self.providers = providers_for(device)
        self._model = model
        self._sessions: dict[str, object] = {}
        self._session("plain")  # fail now, not on the first image, if ONNX Runtime refuses the graph

    @classmethod
    def from_file(cls, path: str | Path, *, device: str | torch.device = "auto", threads: int | None = None
                  ) -> OnnxRuntimeBackend:
        """Load a ``.onnx`` file written by ``fastnst export``; anything else is a ``ModelFileError``."""
        return cls(read_onnx(path), device, path, threads)

    def _run(self, kind, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        session = self._session(kind)
        try:
            return session.run(None, feeds)
        except Exception as exc:  # noqa: BLE001 - ORT's exceptions carry multi-line C++ context
            shape = "x".join(map(str, feeds[INPUT_NAME].shape))
            raise FastNSTError(f"{self.path}: onnxruntime failed on a {shape} input ({_first_line(exc)})") from None

    def _session(self, kind):
        if kind not in self._sessions:
            import onnxruntime as ort

            model = self._graph_proto(kind)
            options = ort.SessionOptions()
            options.log_severity_level = 3  # errors only: no notes about unused initializers
            if self.threads:
                options.intra_op_num_threads = self.threads
            try:
                self._sessions[kind] = ort.InferenceSession(model.SerializeToString(), options,
                                                            providers=self.providers)
            except Exception as exc:  # noqa: BLE001
                raise ModelFileError(self.path, f"onnxruntime {ort.__version__} cannot run it "
                                                f"({_first_line(exc)})") from None
        return self._sessions[kind]


# -- the tiling graphs, derived from the exported one -----------------------------------------------

def _norm_nodes(model) -> list:
    nodes = [n for n in model.graph.node if n.op_type == "InstanceNormalization"]
    if not nodes:
        raise FastNSTError("the ONNX graph has no InstanceNormalization nodes; tiling with fixed statistics "
                           "needs a graph written by `fastnst export`")
    return nodes


def norm_widths(model) -> list[int]:
    """Channel count of each InstanceNormalization, in forward order (from its scale initializer)."""
    sizes = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    return [sizes[node.input[1]] for node in _norm_nodes(model)]


def _axes_initializer():
    from onnx import numpy_helper

    return numpy_helper.from_array(np.array([2, 3], dtype=np.int64), _AXES)


def stats_graph(model):
    """A copy of ``model`` whose outputs are (mean, var) of every InstanceNorm's input, each (B, C)."""
    from onnx import TensorProto, helper

    out = copy.deepcopy(model)
    out.graph.initializer.append(_axes_initializer())
    del out.graph.output[:]
    for i, (node, width) in enumerate(zip(_norm_nodes(out), norm_widths(out))):
        x, p = node.input[0], f"fastnst_stats_{i}"
        out.graph.node.extend([
            helper.make_node("ReduceMean", [x, _AXES], [f"{p}_mean4"], keepdims=1),
            helper.make_node("Sub", [x, f"{p}_mean4"], [f"{p}_centred"]),
            helper.make_node("Mul", [f"{p}_centred", f"{p}_centred"], [f"{p}_square"]),
            helper.make_node("ReduceMean", [f"{p}_square", _AXES], [f"norm_var_{i}"], keepdims=0),
            helper.make_node("Squeeze", [f"{p}_mean4", _AXES], [f"norm_mean_{i}"]),
        ])
        for name in (f"norm_mean_{i}", f"norm_var_{i}"):
            out.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", width]))
    _prune(out)
    return out


def fixed_stats_graph(model):
    """A copy of ``model`` taking inputs ``norm_mean_i`` / ``norm_var_i`` (B or 1, C) in place of its own statistics."""
    from onnx import TensorProto, helper

    out = copy.deepcopy(model)
    out.graph.initializer.append(_axes_initializer())
    widths = norm_widths(out)
    nodes, i = [], -1
    for node in out.graph.node:
        if node.op_type != "InstanceNormalization":
            nodes.append(_copy(node))
            continue
        i += 1
        x, gamma, beta = node.input
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        p, mean, var = f"fastnst_fixed_{i}", f"norm_mean_{i}", f"norm_var_{i}"
        out.graph.initializer.append(helper.make_tensor(f"{p}_eps", TensorProto.FLOAT, [], [eps]))
        nodes += [
            helper.make_node("Add", [var, f"{p}_eps"], [f"{p}_var_eps"]),
            helper.make_node("Sqrt", [f"{p}_var_eps"], [f"{p}_std"]),
            helper.make_node("Div", [gamma, f"{p}_std"], [f"{p}_scale"]),
            helper.make_node("Mul", [mean, f"{p}_scale"], [f"{p}_mean_scaled"]),
            helper.make_node("Sub", [beta, f"{p}_mean_scaled"], [f"{p}_shift"]),
            helper.make_node("Unsqueeze", [f"{p}_scale", _AXES], [f"{p}_scale4"]),
            helper.make_node("Unsqueeze", [f"{p}_shift", _AXES], [f"{p}_shift4"]),
            helper.make_node("Mul", [x, f"{p}_scale4"], [f"{p}_scaled"]),
            helper.make_node("Add", [f"{p}_scaled", f"{p}_shift4"], list(node.output)),
        ]
        for name in (mean, var):
            out.graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["stats_batch", widths[i]]))
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def region_graph(model, index: int):
    """A copy of ``model`` cut at the input of InstanceNorm ``index``, the norms before it fixed.

    Inputs: ``image`` and ``norm_mean_i`` / ``norm_var_i`` for ``i < index`` (as
    ``fixed_stats_graph``); output: that InstanceNorm's input (B, C, h, w) at its
    own resolution (the padded image's divided by 1, 2 or 4). Only what the
    output needs is kept, so the graph stops there, as ``TorchBackend.region_sums`` does.
    """
    from onnx import TensorProto, helper

    name = _norm_nodes(model)[index].input[0]
    out = fixed_stats_graph(model)
    known = {f"norm_{kind}_{i}" for kind in ("mean", "var") for i in range(index)}
    # A multi-style graph's ``style`` input is used only after the first InstanceNorm: drop it before (some
    # runtimes drop unused inputs and then refuse the feed).
    known |= {INPUT_NAME} | ({STYLE_INPUT} if index > 0 else set())
    inputs = [_copy(i) for i in out.graph.input if i.name in known]
    del out.graph.input[:]
    out.graph.input.extend(inputs)
    elem = next((v.type.tensor_type.elem_type for v in model.graph.value_info if v.name == name), TensorProto.FLOAT)
    del out.graph.output[:]
    out.graph.output.append(helper.make_tensor_value_info(name, elem, None))
    _prune(out)
    return out


def _prune(model) -> None:
    """Drop the nodes and initializers no graph output depends on (nodes are in topological order)."""
    needed = {o.name for o in model.graph.output}
    kept = []
    for node in reversed(model.graph.node):
        if any(name in needed for name in node.output):
            kept.append(_copy(node))
            needed.update(node.input)
    del model.graph.node[:]
    model.graph.node.extend(reversed(kept))
    initializers = [_copy(t) for t in model.graph.initializer if t.name in needed]
    del model.graph.initializer[:]
    model.graph.initializer.extend(initializers)


def _copy(message):
    """A detached copy of a protobuf message, safe to keep after its container is cleared."""
    clone = type(message)()
    clone.CopyFrom(message)
    return clone


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:240] if text else type(exc).__name__
