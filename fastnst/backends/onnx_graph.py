"""What every runtime of an exported fastnst ONNX graph shares: reading it, the tiling graphs, the conversions.

Tiling (``norm_stats`` and ``run(..., norm_stats=...)``) needs graphs the
exported file does not hold, and should not: a consumer of the file feeds only
an image. They are derived here, in memory, from the file's own graph, whose
InstanceNormalization nodes appear in forward order:

* the *statistics* graph outputs, for each InstanceNorm, the mean and (biased)
  variance of its input, shaped (B, C);
* the *fixed* graph takes those as extra inputs (batch B or 1) and replaces each
  InstanceNormalization by ``x * scale + shift`` with
  ``scale = gamma / sqrt(var + eps)`` and ``shift = beta - mean * scale``, exactly
  as ``TransformerNet.forward(x, norm_stats=...)`` does;
* the *region* graph ``k`` is the fixed graph cut at the input of InstanceNorm
  ``k`` (only norms before it fixed), for exact statistics added up tile by tile
  (``region_sums``, as ``TransformerNet.norm_input``).

So the file stays the plain image-in, image-out graph, and tiles agree with the
torch backend's. ``OnnxGraphBackend`` holds all of this for ONNX Runtime
(``fastnst.backends.onnxruntime``) and OpenVINO (``fastnst.backends.openvino``).
The ``onnx`` package is imported only when a derived graph is first needed.
"""

from __future__ import annotations

import copy
import logging
import os
import stat
from pathlib import Path

import numpy as np

from fastnst.backends import as_array, like, region_moments
from fastnst.checkpoint import check_model_path
from fastnst.errors import FastNSTError, ModelFileError, first_line
from fastnst.models.spec import NormStats, padded_size
from fastnst.onnx_format import INPUT_NAME, STYLE_INPUT

log = logging.getLogger(__name__)

_AXES = "fastnst_axes_hw"  # initializer [2, 3]: the spatial axes of NCHW


class BackendInputError(FastNSTError, ValueError):
    """A batch or statistics handed to the backend have the wrong type, rank, shape or dtype."""


MAX_EXTERNAL_BYTES = 2**32  # far above any style network (7 MB), far below what would exhaust memory


def read_onnx(path: str | Path):
    """The ``onnx.ModelProto`` of a file; a missing, unreadable or unsafe file is a ``ModelFileError``.

    Only a regular file is opened (a pipe or a device would hang or fill
    memory). External tensor data is read only from regular files inside the
    model's own folder (no ``..``, no absolute path, no symlink), within the
    file and at most ``MAX_EXTERNAL_BYTES`` in all.
    """
    import onnx

    path = Path(path)
    if not path.exists():
        raise ModelFileError(path, "no such ONNX file")
    check_model_path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors have several types
        raise ModelFileError(path, f"not a readable ONNX file ({first_line(exc)})") from None
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        _check_external(path, external)
        try:
            onnx.load_external_data_for_model(model, str(path.parent))
        except Exception as exc:  # noqa: BLE001 - missing or short files raise several types
            raise ModelFileError(path, f"cannot read its external data ({first_line(exc)})") from None
    return model


def _check_external(path: Path, tensors) -> None:
    """Refuse external data that lies outside the model's folder, behind a symlink, or past its file's end."""
    total = 0
    for tensor in tensors:
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = Path(info.get("location", ""))
        target = path.parent / location
        if not info.get("location") or location.is_absolute() or ".." in location.parts or target.is_symlink():
            raise ModelFileError(path, f"tensor {tensor.name} keeps its data at {str(location)!r}, outside the "
                                       "model's folder or behind a link; refused")
        try:
            size = os.lstat(target).st_size if stat.S_ISREG(os.lstat(target).st_mode) else -1
        except OSError:
            raise ModelFileError(path, f"tensor {tensor.name}: its data file {location} is missing") from None
        offset, length = int(info.get("offset", 0)), int(info.get("length", size))
        total += length
        if size < 0 or offset < 0 or length < 0 or offset + length > size or total > MAX_EXTERNAL_BYTES:
            raise ModelFileError(path, f"tensor {tensor.name}: its external data ({location}, {length:,} bytes at "
                                       f"{offset:,}) is not inside a regular file of a sane size; refused")


class OnnxGraphBackend:
    """What the backends that run an exported fastnst ONNX graph share: the conversions and the tiling graphs.

    A subclass sets ``name``, ``path``, ``metadata`` (the file's metadata props),
    ``info`` and either ``_proto`` (an ``onnx.ModelProto``) or ``onnx_path``
    (read on first need), and implements ``_run(kind, feeds)`` running the
    ``plain`` graph, the ``stats`` graph (``stats_graph``), the ``fixed`` graph
    (``fixed_stats_graph``) or a ``("region", k)`` graph on numpy feeds. A
    multi-style graph also gets the ``style`` input, from ``style`` (N,) weights
    (None: the first style). ``input_scale`` is what the graph's float input is
    multiplied by (255 where a runtime rewrote the graph to take pixel values).
    """

    name = "onnx"
    path = "<onnx>"
    metadata: dict[str, str] = {}
    style = None
    default_streams = 1
    concurrent = True
    device_type = device = "cpu"
    input_scale = 1.0
    onnx_path: str | None = None
    _proto = None

    @property
    def io(self) -> str:
        """The file's interface: ``float`` (NCHW 0–1) or ``uint8`` (NHWC pixels)."""
        return self.metadata.get("io", "float")

    @property
    def model(self):
        """The ``onnx.ModelProto`` (read from ``onnx_path`` the first time a derived graph needs it)."""
        if self._proto is None:
            self._proto = read_onnx(self.onnx_path)
        return self._proto

    def set_streams(self, streams: int) -> None:
        """One session serves any number of threads; nothing to change (OpenVINO overrides this)."""

    # -- running --------------------------------------------------------------------------------

    def run(self, batch, norm_stats: NormStats | None = None):
        """(B, 3, H, W) float in 0–1 → (B, 3, H, W) float32, same size and kind (unclamped for float io)."""
        x = self._check_batch(batch)
        feeds = {INPUT_NAME: self._to_graph(x), **self._style_feeds(x.shape[0])}
        if norm_stats is None:
            return like(batch, self._from_graph(self._run("plain", feeds)[0]))
        feeds.update(self._stats_feeds(norm_stats, x.shape[0]))
        return like(batch, self._from_graph(self._run("fixed", feeds)[0]))

    def norm_stats(self, batch) -> NormStats:
        """(mean, var) of every InstanceNorm's input for ``batch``, each (B, C) float32, of the batch's kind."""
        x = self._check_batch(batch)
        outputs = self._run("stats", {INPUT_NAME: self._to_graph(x), **self._style_feeds(x.shape[0])})
        return [(like(batch, outputs[i]), like(batch, outputs[i + 1])) for i in range(0, len(outputs), 2)]

    def region_sums(self, batch, known: NormStats, region: tuple[int, int, int, int]
                    ) -> tuple[np.ndarray, np.ndarray, int]:
        """See ``fastnst.backends.Backend.region_sums``, through ``region_graph`` (cut at that norm's input)."""
        x = self._check_batch(batch)
        index = len(known)
        if index >= len(norm_widths(self.model)):
            raise ValueError(f"the network has {index} InstanceNorms, no InstanceNorm number {index}")
        feeds = {INPUT_NAME: self._to_graph(x), **self._stats_feeds(known, x.shape[0], partial=True),
                 **(self._style_feeds(x.shape[0]) if index > 0 else {})}  # the first norm's input needs no style
        features = self._run(("region", index), feeds)[0]
        return region_moments(features, region, padded_size(x.shape[-2]))

    def _graph_proto(self, kind):
        """The ONNX graph of a kind: ``plain`` (the file's), ``stats``, ``fixed`` or ``("region", k)``."""
        if isinstance(kind, tuple):
            return region_graph(self.model, kind[1])
        return {"plain": lambda m: m, "stats": stats_graph, "fixed": fixed_stats_graph}[kind](self.model)

    def _run(self, kind, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    # -- conversions at the boundary -------------------------------------------------------------

    def _check_batch(self, batch) -> np.ndarray:
        shape = tuple(getattr(batch, "shape", ()))
        if not hasattr(batch, "shape") or not hasattr(batch, "dtype"):
            raise BackendInputError(f"{self.name} backend: expected a (B, 3, H, W) float array, got "
                                    f"{type(batch).__name__}")
        if len(shape) != 4 or shape[1] != 3:
            raise BackendInputError(f"{self.name} backend: expected a (B, 3, H, W) batch of RGB images, got shape "
                                    f"{shape}")
        if "float" not in str(batch.dtype):
            raise BackendInputError(f"{self.name} backend: expected float values in 0–1, got {batch.dtype} "
                                    "(divide 8-bit pixels by 255)")
        if 0 in shape:
            raise BackendInputError(f"{self.name} backend: empty batch of shape {shape}")
        return as_array(batch)

    def _to_graph(self, batch: np.ndarray) -> np.ndarray:
        if self.io == "uint8":
            return np.ascontiguousarray(np.rint(np.clip(batch, 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1))
        return batch * np.float32(self.input_scale) if self.input_scale != 1 else batch

    def _from_graph(self, array: np.ndarray) -> np.ndarray:
        if self.io == "uint8":
            return np.ascontiguousarray(array.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255)
        return np.ascontiguousarray(array, dtype=np.float32)

    def _style_feeds(self, batch_size: int) -> dict[str, np.ndarray]:
        """The ``style`` feed (B, N) of a multi-style graph; nothing for a single-style one."""
        num_styles = self.info.spec.num_styles
        if num_styles == 1:
            return {}
        weights = np.eye(num_styles, dtype=np.float32)[0] if self.style is None else as_array(self.style)
        if weights.ndim == 1:
            weights = weights[None]
        if weights.ndim != 2 or weights.shape[1] != num_styles or weights.shape[0] not in (1, batch_size):
            raise BackendInputError(f"{self.name} backend: style weights of shape {weights.shape}: expected "
                                    f"({num_styles},), (1, {num_styles}) or ({batch_size}, {num_styles})")
        return {STYLE_INPUT: np.ascontiguousarray(np.broadcast_to(weights, (batch_size, num_styles)))}

    def _stats_feeds(self, norm_stats: NormStats, batch_size: int, partial: bool = False) -> dict[str, np.ndarray]:
        """Feeds ``norm_mean_i``/``norm_var_i``; ``partial``: the first ``len(norm_stats)`` norms only."""
        widths = norm_widths(self.model)
        if len(norm_stats) > len(widths) or (len(norm_stats) != len(widths) and not partial):
            raise BackendInputError(f"norm_stats has {len(norm_stats)} entries, the network has {len(widths)} "
                                    "InstanceNorms: compute them with this model's norm_stats()")
        feeds = {}
        for i, ((mean, var), width) in enumerate(zip(norm_stats, widths)):
            for name, value in (("mean", mean), ("var", var)):
                value = as_array(value)
                if value.ndim == 1:
                    value = value[None]
                if value.ndim != 2 or value.shape[1] != width or value.shape[0] not in (1, batch_size):
                    raise BackendInputError(f"norm_stats[{i}] {name} has shape {tuple(value.shape)}, expected "
                                            f"(1, {width}) or ({batch_size}, {width})")
                feeds[f"norm_{name}_{i}"] = value
        return feeds


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
