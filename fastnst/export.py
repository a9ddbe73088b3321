"""Exporting a style network to ONNX, and checking the export against PyTorch.

An exported file is meant to just work in another runtime (ONNX Runtime on a
server or phone, TensorRT, a browser), at any batch size and image size, with no
pre- or post-processing code to rewrite:

* the edge padding to a multiple of 4 (at least 8) and the crop back, as in
  ``TransformerNet.forward``, are inside the graph, so the output always has the
  input's size;
* ``io="float"``: input ``image`` float32 (B, 3, H, W) RGB in 0–1, output
  ``styled`` float32 (B, 3, H, W), unclamped (the package's convention);
  ``io="uint8"``: input uint8 (B, H, W, 3) RGB pixels as decoded, output uint8
  (B, H, W, 3); scaling, clamping and rounding (half to even, as
  ``fastnst.images.to_pil``) are inside the graph;
* ``fp16``: weights and activations in half precision (half the file size, for
  GPUs), but every InstanceNorm computed in float32: its variance over a whole
  image overflows or loses its small terms in fp16. The graph's inputs and
  outputs keep the dtypes above, so a consumer's code does not change;
* the file's ``metadata_props`` say what it is (``fastnst.onnx_format``);
* a multi-style network takes a second input ``style``, float32 (B, N) style
  weights, so one file serves every style and every mix.

The exporter is ``torch.onnx.export(dynamo=True)``: on this network it gives a
70-node (light spec) / 86-node (johnson) graph with native ``InstanceNormalization``
and reflect/edge ``Pad`` nodes, where the TorchScript exporter gives 320 / 404 nodes
(about 130 / 160 of them constants around the pads).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fastnst.checkpoint import ModelInfo, load_model
from fastnst.errors import ConfigError, FastNSTError, FileError, first_line
from fastnst.files import atomic_path
from fastnst.models.transformer import ConditionalInstanceNorm, TransformerNet
from fastnst.onnx_format import INPUT_NAME, IO_MODES, OUTPUT_NAME, STYLE_INPUT, onnx_metadata

log = logging.getLogger(__name__)

# The torch.export-based exporter writes opset 18 natively (older ones are refused);
# 18 is also the opset the most runtimes accept, and the graph is the same up to 26.
MIN_OPSET = 18
DEFAULT_OPSET = 18

# Verification: two sizes, the first odd (padding and crop in the graph), the second a batch of 2.
VERIFY_SHAPES = ((1, 67, 45), (2, 96, 128))
# Largest allowed |ONNX Runtime - PyTorch| as a fraction of the value range. fp32: both compute the
# same float32 ops in a different order. fp16: each of the ~16 layers rounds its weights and outputs
# to 11 significant bits (steps of 2^-11 relative), and the error grows through the layers; measured
# 1.4e-3 (rain_princess) to 4.3e-3 (random light weights), so 1e-2 (2.5 levels of an 8-bit output)
# leaves a margin while still catching a broken graph (a wrong layer moves the output by tenths).
FP32_TOLERANCE = 1e-3
FP16_TOLERANCE = 1e-2


@dataclass(frozen=True)
class ExportConfig:
    """Options of ``fastnst export``: which model, where to, and what the graph's interface is."""

    model: str
    output: str
    io: str = "float"
    fp16: bool = False
    opset: int = DEFAULT_OPSET
    verify: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", str(self.model))
        object.__setattr__(self, "output", str(self.output))
        if self.io not in IO_MODES:
            raise ConfigError(f"unknown --io {self.io!r}; choose one of {', '.join(IO_MODES)}")
        if not self.output.lower().endswith(".onnx"):
            raise ConfigError(f"{self.output}: the output of export must end in .onnx")
        if Path(self.output).resolve() == Path(self.model).resolve():
            raise ConfigError(f"{self.output}: the output would overwrite the model; choose another name")
        top = max_runtime_opset()
        if not MIN_OPSET <= self.opset <= top:
            raise ConfigError(f"--opset {self.opset}: choose {MIN_OPSET}–{top} (the exporter writes opset "
                              f"{MIN_OPSET} or later; onnxruntime {_ort().__version__} runs up to {top})")


@dataclass(frozen=True)
class Check:
    """One verification run: input shape (B, 3, H, W) and max |ONNX Runtime - PyTorch| in output units."""

    shape: tuple[int, ...]
    max_abs: float


@dataclass(frozen=True)
class ExportResult:
    """What ``export_onnx`` wrote and measured; ``checks`` is empty when verification was skipped."""

    path: Path
    opset: int
    nodes: int
    op_counts: dict[str, int]
    size_bytes: int
    export_seconds: float
    checks: tuple[Check, ...] = ()
    tolerance: float | None = None
    value_range: str = "0-1"
    metadata: dict[str, str] = field(default_factory=dict)


class VerificationError(FastNSTError):
    """The exported graph is invalid or disagrees with PyTorch beyond the tolerance."""


def _ort():
    import onnxruntime

    return onnxruntime


@lru_cache(maxsize=1)
def max_runtime_opset() -> int:
    """The newest default-domain opset the installed ONNX Runtime accepts (probed with a 1-node model)."""
    import onnx
    from onnx import TensorProto, helper

    ort = _ort()
    options = ort.SessionOptions()
    options.log_severity_level = 4
    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [value],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    for opset in range(onnx.defs.onnx_opset_version(), MIN_OPSET - 1, -1):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
        try:
            ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - any refusal means "not this opset"
            continue
        return opset
    return MIN_OPSET - 1


class _ExportNorm(nn.Module):
    """What every InstanceNorm of an exported network becomes: ONNX's own InstanceNormalization.

    A plain norm keeps its scale and shift inside the node. A conditional
    (several-style) norm becomes a unit InstanceNormalization followed by its
    rows mixed by the ``style`` input (B, N), since ONNX has no per-image norm
    parameters. ``float32`` computes the normalisation in fp32 inside an fp16
    graph (statistics over millions of pixels overflow half precision).
    """

    def __init__(self, norm: nn.Module, float32: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(norm.weight.detach().float().clone(), requires_grad=False)
        self.bias = nn.Parameter(norm.bias.detach().float().clone(), requires_grad=False)
        self.eps, self.float32, self.conditional = norm.eps, float32, isinstance(norm, ConditionalInstanceNorm)

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        y = x.float() if self.float32 else x
        if not self.conditional:
            return F.instance_norm(y, weight=self.weight.to(y.dtype), bias=self.bias.to(y.dtype),
                                   eps=self.eps).to(x.dtype)
        channels = self.weight.shape[1]
        y = F.instance_norm(y, weight=y.new_ones(channels), bias=y.new_zeros(channels), eps=self.eps).to(x.dtype)
        mix = style.to(self.weight.dtype)[:, :, None]
        scale, shift = (mix * self.weight).sum(dim=1), (mix * self.bias).sum(dim=1)
        return y * scale[..., None, None].to(x.dtype) + shift[..., None, None].to(x.dtype)


class ExportGraph(nn.Module):
    """What the exported graph computes: the I/O conversion of ``io`` around a copy of ``net``.

    ``io="float"``: (B, 3, H, W) float32 in 0–1 → (B, 3, H, W) float32, unclamped.
    ``io="uint8"``: (B, H, W, 3) uint8 → (B, H, W, 3) uint8 (clamped to 0–1, × 255, rounded).
    ``fp16`` runs the network in half precision with float32 InstanceNorms.
    ``style`` (multi-style networks): (B, N) float32 style weights.
    """

    def __init__(self, net: TransformerNet, io: str = "float", fp16: bool = False) -> None:
        super().__init__()
        if io not in IO_MODES:
            raise ConfigError(f"unknown io {io!r}; choose one of {', '.join(IO_MODES)}")
        self.io, self.dtype = io, torch.float16 if fp16 else torch.float32
        self.net = copy.deepcopy(net).float().eval()
        if fp16:
            self.net.half()
        for module in list(self.net.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, ConditionalInstanceNorm) or (fp16 and isinstance(child, nn.InstanceNorm2d)):
                    setattr(module, name, _ExportNorm(child, float32=fp16))

    def forward(self, image: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).float() / 255.0 if self.io == "uint8" else image
        y = self.net(x.to(self.dtype), style=style).float()
        if self.io == "uint8":
            return (y.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1)
        return y


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's own warnings and log lines (torchvision absent, deprecations, conversions)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR + 10)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def to_onnx(net: TransformerNet, info: ModelInfo | None = None, io: str = "float", fp16: bool = False,
            opset: int = DEFAULT_OPSET, config: dict | None = None):
    """Export ``net`` to an in-memory ``onnx.ModelProto`` with dynamic batch, height and width.

    Raises ``FastNSTError`` (one line) when the exporter fails.
    """
    graph = ExportGraph(net, io, fp16).eval()
    # Batch 2 and odd sizes, so that the tracer specialises none of the three dimensions.
    if io == "uint8":
        example = torch.randint(0, 256, (2, 67, 45, 3), dtype=torch.uint8)
        dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("height"), 2: torch.export.Dim("width")}
    else:
        example = torch.rand(2, 3, 67, 45)
        dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    args, names, shapes = (example,), [INPUT_NAME], (dims,)
    if net.spec.num_styles > 1:
        args, names, shapes = (example, example_styles(2, net.spec.num_styles)), [*names, STYLE_INPUT], \
            (dims, {0: dims[0]})
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(graph, args, dynamo=True, opset_version=opset, verbose=False,
                                        input_names=names, output_names=[OUTPUT_NAME],
                                        dynamic_shapes=shapes, optimize=True)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; the user needs one line
        raise FastNSTError(f"torch.onnx.export failed at opset {opset} ({first_line(exc)})") from None
    model = program.model_proto
    got = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if got != opset:
        raise FastNSTError(f"torch.onnx.export wrote opset {got} instead of {opset}; choose --opset {got}")
    _tidy(model, io)
    info = info or ModelInfo(spec=net.spec)
    styles = ", ".join(info.styles) or "unnamed style"
    model.doc_string = f"fastnst style network ({styles}): {INPUT_NAME} -> {OUTPUT_NAME}; see metadata_props"
    meta = onnx_metadata(info, io, fp16, opset, config)
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    return model


def _tidy(model, io: str) -> None:
    """Name the output's dimensions like the input's and drop the exporter's debug annotations.

    The annotations carry source file paths and stack traces of the exporting machine.
    """
    names = ("batch", "height", "width", 3) if io == "uint8" else ("batch", 3, "height", "width")
    for value in (*model.graph.input, *model.graph.output):
        if value.name == STYLE_INPUT:
            value.type.tensor_type.shape.dim[0].dim_param = "batch"
            continue
        for dim, name in zip(value.type.tensor_type.shape.dim, names):
            if isinstance(name, str):
                dim.dim_param = name
            else:
                dim.dim_value = name
    for item in (*model.graph.node, *model.graph.value_info, *model.graph.input, *model.graph.output,
                 *model.graph.initializer):
        del item.metadata_props[:]
    del model.graph.metadata_props[:]
    # Weights keep the model file's names ("decoder.2.conv.bias", not the wrapper's "net.decoder...").
    renamed = {t.name: t.name[len("net."):] for t in model.graph.initializer if t.name.startswith("net.")}
    for tensor in (*model.graph.initializer, *model.graph.value_info):
        tensor.name = renamed.get(tensor.name, tensor.name)
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)


def op_histogram(model) -> dict[str, int]:
    """Node count per op type, most frequent first."""
    return dict(Counter(node.op_type for node in model.graph.node).most_common())


def probe_images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Deterministic photo-like test images (B, 3, H, W) in 0–1: smooth gradients and waves plus noise."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, height)[:, None]
    x = torch.linspace(0, 1, width)[None, :]
    out = []
    for _ in range(batch):
        phase = torch.rand(3, 1, 1, generator=gen) * 6.28
        waves = 0.5 + 0.3 * torch.sin(7 * x + 5 * y + phase) * torch.cos(3 * x - 4 * y)
        noise = 0.1 * torch.rand(3, height, width, generator=gen)
        out.append((0.9 * waves + noise).clamp(0, 1))
    return torch.stack(out)


def example_styles(batch: int, num_styles: int, seed: int = 0) -> torch.Tensor:
    """(B, N) style weights for checks: image 0 a one-hot row (style ``seed`` mod N), the others random mixes."""
    gen = torch.Generator().manual_seed(seed)
    weights = torch.rand(batch, num_styles, generator=gen)
    weights[0] = F.one_hot(torch.tensor(seed % num_styles), num_styles)
    return weights / weights.sum(dim=1, keepdim=True)


def verify_onnx(model, net: TransformerNet, io: str = "float", fp16: bool = False,
                shapes: tuple[tuple[int, int, int], ...] = VERIFY_SHAPES) -> tuple[Check, ...]:
    """Check an exported graph with ``onnx.checker``, then run it with ONNX Runtime (CPU) against PyTorch.

    ``model`` is a ``ModelProto``, serialized bytes or a path. The reference is
    ``net`` in float32 (also for fp16 graphs: the check measures what half
    precision costs), fed exactly the pixels the graph gets; for uint8 graphs it
    is compared before rounding, so the tolerance grows by the 0.5 that rounding
    may add. Raises ``VerificationError`` with one line naming the size and the
    difference; returns one ``Check`` per size. A multi-style graph gets a
    one-hot style for the first image of each batch and random mixes for the others.
    """
    import onnx

    proto = model if isinstance(model, onnx.ModelProto) else onnx.load_from_string(
        model if isinstance(model, bytes) else Path(model).read_bytes())
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # noqa: BLE001 - ValidationError and shape-inference errors alike
        raise VerificationError(f"onnx.checker rejects the exported graph: {first_line(exc)}") from None
    ort = _ort()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise VerificationError(f"onnxruntime {ort.__version__} cannot load the exported graph: "
                                f"{first_line(exc)}") from None
    tolerance = verify_tolerance(io, fp16)
    reference_net = copy.deepcopy(net).float().eval()
    checks = []
    for seed, (batch, height, width) in enumerate(shapes):
        images = probe_images(batch, height, width, seed)
        if io == "uint8":
            pixels = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
            feed, images = pixels.numpy(), pixels.permute(0, 3, 1, 2).float() / 255
        else:
            feed = images.numpy()
        feeds, style = {INPUT_NAME: feed}, None
        if net.spec.num_styles > 1:
            style = example_styles(batch, net.spec.num_styles, seed)
            feeds[STYLE_INPUT] = style.numpy()
        with torch.no_grad():
            expected = reference_net(images, style=style)
        if io == "uint8":
            expected = (expected.clamp(0, 1) * 255).permute(0, 2, 3, 1)
        try:
            got = session.run([OUTPUT_NAME], feeds)[0]
        except Exception as exc:  # noqa: BLE001
            raise VerificationError(f"onnxruntime failed on a {batch}x3x{height}x{width} input: "
                                    f"{first_line(exc)}") from None
        if got.shape != tuple(expected.shape):
            raise VerificationError(f"ONNX Runtime output shape {got.shape} for a {batch}x3x{height}x{width} input; "
                                    f"PyTorch gives {tuple(expected.shape)}")
        diff = float(np.abs(got.astype(np.float64) - expected.double().numpy()).max())
        checks.append(Check((batch, 3, height, width), diff))
        if not diff <= tolerance:
            raise VerificationError(
                f"ONNX Runtime differs from PyTorch by {diff:.3g} at {batch}x3x{height}x{width} "
                f"(tolerance {tolerance:.3g} for {io} io, {'fp16' if fp16 else 'fp32'}); the export is wrong")
    return tuple(checks)


def verify_tolerance(io: str, fp16: bool) -> float:
    """Largest allowed max |ONNX Runtime - PyTorch| in the graph's output units (see FP32/FP16_TOLERANCE)."""
    fraction = FP16_TOLERANCE if fp16 else FP32_TOLERANCE
    return fraction * 255 + 0.5 if io == "uint8" else fraction


def export_onnx(config: ExportConfig) -> ExportResult:
    """Export the model file ``config.model`` to ``config.output`` (written atomically), verified unless asked not.

    Errors are one line: ``ModelFileError`` for a file that is not a model,
    ``FileError`` for an output that cannot be written, ``VerificationError``
    when the graph disagrees with PyTorch (nothing is written then).
    """
    output = Path(config.output)
    _check_writable(output)
    net, info = load_model(config.model)
    start = time.perf_counter()
    model = to_onnx(net, info, config.io, config.fp16, config.opset, config=asdict(config))
    seconds = time.perf_counter() - start
    data = model.SerializeToString()
    checks: tuple[Check, ...] = ()
    if config.verify:
        checks = verify_onnx(model, net, config.io, config.fp16)
        log.info("verified %s: %s", output, ", ".join(f"{'x'.join(map(str, c.shape))}: {c.max_abs:.3g}"
                                                      for c in checks))
    try:
        with atomic_path(output) as tmp:
            tmp.write_bytes(data)
    except OSError as exc:
        raise FileError(output, f"cannot write ({exc.strerror or exc})") from None
    return ExportResult(path=output, opset=config.opset, nodes=len(model.graph.node), op_counts=op_histogram(model),
                        size_bytes=len(data), export_seconds=seconds, checks=checks,
                        tolerance=verify_tolerance(config.io, config.fp16) if config.verify else None,
                        value_range="0-255" if config.io == "uint8" else "0-1",
                        metadata={p.key: p.value for p in model.metadata_props})


def _check_writable(path: Path) -> None:
    """Fail before the (slow) export when ``path`` cannot be written: a folder, or no writable folder."""
    if path.is_dir():
        raise FileError(path, "is a folder; give a file name ending in .onnx")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise FileError(path, f"cannot create it: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise FileError(path, f"cannot write there: folder {ancestor} is not writable")
