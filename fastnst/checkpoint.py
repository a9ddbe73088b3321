"""fastnst model files: one format, one safe loader, atomic writes.

A model file is a ``.safetensors`` file (tensors only, nothing executable) whose
string metadata holds JSON:

=================  ==========================================================
``format``         ``"fastnst-model"``
``format_version`` ``"2"`` — bumped on incompatible change; old versions get a
                   named converter here, never ad-hoc patches in the loader
                   (version 1 files are read as they are: they have no ``records``)
``spec``           the ``TransformerSpec`` (``{"channels": [...], ...}``;
                   ``num_styles`` only for a multi-style network)
``styles``         list of style names, one per style the network carries (in
                   the order of the norms' rows for a multi-style network)
``config``         the training configuration (``asdict(TrainConfig)``) or ``{}``;
                   a nested record that occurs more than once is written as
                   ``{"$record": ID}`` (format 2)
``records``        format 2, optional: ID → that record, written once (``fastnst.records``: a style
                   trained in joint stages carries each stage's merged start
                   in every part, so its history would otherwise grow fivefold
                   a stage: 0.05 → 0.8 MB in two stages); read back, each
                   record is one object wherever it is referred to
``thumbnails``     optional: one small base64 JPEG per style, of its style image
                   (``fastnst.images.encode_thumbnail``), for contact sheets
``value_range``    ``"0-1"``: input and output range of the network
``fastnst_version`` the package version that wrote the file
=================  ==========================================================

Reading is in two steps, so a hostile file costs nothing: ``read_info`` parses
the header alone (bounded in size, no PyTorch) and checks the spec against the
shapes the header declares; only then does ``load_model`` read the weights,
refuses non-finite ones, and builds the network.

``load_model`` also reads pytorch/examples ``fast_neural_style`` checkpoints
(``.pth`` / ``.model``) with ``torch.load(weights_only=True)`` — a pickle that
tries to run code is refused — renaming their layers and rescaling them to the
0–1 range (``convert_pytorch_examples``). ``fastnst.convert`` turns them into model files.

Resumable *training* checkpoints (``MODEL.ckpt.pt``, written by ``fastnst train``)
are a separate format: ``save_training_state`` / ``load_training_state``, a
``torch.save`` dict of tensors and primitives only (format
``"fastnst-train-state"``, its own version), read back with ``weights_only=True``.

PyTorch is imported only by the functions that build networks or read pickles.
"""

from __future__ import annotations

import json
import logging
import math
import re
import stat
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from fastnst.errors import ConfigError, ModelFileError, first_line
from fastnst.files import atomic_path
from fastnst.models.spec import TransformerSpec, parameter_shapes
from fastnst.records import expand_records, share_records
from fastnst.version import __version__

log = logging.getLogger(__name__)

FORMAT = "fastnst-model"
FORMAT_VERSION = 2
VALUE_RANGE = "0-1"
PICKLE_SUFFIXES = (".pth", ".pt", ".model", ".ckpt")
# A model file's JSON header (thumbnails included) is a few tens of KB; safetensors itself allows 100 MB.
MAX_HEADER_BYTES = 16 * 2**20
# The oldest PyTorch whose ``torch.load(weights_only=True)`` cannot be made to run code (CVE-2025-32434).
SAFE_TORCH = (2, 6)
_DTYPE_BYTES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}


@dataclass(frozen=True)
class ModelInfo:
    """What a model file says about itself, besides the weights."""

    spec: TransformerSpec
    styles: tuple[str, ...] = ()
    config: dict = field(default_factory=dict, repr=False)  # a joint history is huge as text (fastnst.records)
    fastnst_version: str = __version__
    format_version: int = FORMAT_VERSION
    source: str = "fastnst"  # or "pytorch-examples" for a converted legacy file
    thumbnails: tuple[str, ...] = ()  # base64 JPEGs of the style images, one per style, or none

    def to_metadata(self) -> dict[str, str]:
        thumbnails = {"thumbnails": json.dumps(list(self.thumbnails))} if self.thumbnails else {}
        config, records = share_records(self.config)
        return {**thumbnails, **({"records": json.dumps(records)} if records else {}),
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
            "spec": json.dumps(self.spec.to_dict()),
            "styles": json.dumps(list(self.styles)),
            "config": json.dumps(config),
            "value_range": VALUE_RANGE,
            "fastnst_version": self.fastnst_version,
        }


def save_model(path: str | Path, model, styles: list[str] | tuple[str, ...] = (),
               config: dict | None = None, half: bool = False, thumbnails: tuple[str, ...] = ()) -> Path:
    """Write ``model`` (a ``TransformerNet``) as a fastnst model file, atomically. ``half`` stores fp16 weights.

    ``thumbnails``: none, or one ``encode_thumbnail`` text per style the network carries.
    """
    import torch
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"{path}: model files end in .safetensors")
    if styles and len(styles) != model.spec.num_styles:
        raise ConfigError(f"{path}: {len(styles)} style name(s) for a network carrying {model.spec.num_styles}")
    if thumbnails and len(thumbnails) != model.spec.num_styles:
        raise ConfigError(f"{path}: {len(thumbnails)} thumbnail(s) for a network carrying {model.spec.num_styles}")
    info = ModelInfo(spec=model.spec, styles=tuple(styles), config=dict(config or {}), thumbnails=tuple(thumbnails))
    dtype = torch.float16 if half else torch.float32
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        # Bytes into our temporary file: safetensors' own save_file would create it anew with mode 0600.
        tmp.write_bytes(save(tensors, metadata=info.to_metadata()))
    return path


def load_model(path: str | Path, device="cpu"):
    """Rebuild the network a file describes, in eval mode on ``device``: (``TransformerNet``, ``ModelInfo``).

    Reads fastnst ``.safetensors`` files and pytorch/examples pickles. Every
    problem (missing, truncated, unsafe, foreign, non-finite or wrong-shaped
    file) raises ``ModelFileError`` naming the file and the mismatch.
    """
    from fastnst.models.transformer import TransformerNet

    path = Path(path)
    check_model_path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        state = convert_pytorch_examples(_load_pickle(path), path)
        info = ModelInfo(spec=_infer_spec(state, path), styles=(path.stem,), source="pytorch-examples")
        _check_shapes(path, {k: tuple(v.shape) for k, v in state.items()}, info.spec)
    else:
        info = read_info(path)
        state = _load_tensors(path)
    _check_finite(path, state)
    model = TransformerNet(info.spec)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.to(device).eval(), info


def check_model_path(path: Path, max_bytes: int = 2**31) -> int:
    """The size of ``path`` when it is a regular file of a sane size; ``ModelFileError`` otherwise.

    A FIFO, a device such as ``/dev/zero`` or a folder would make a reader hang
    or fill memory, so only regular files are opened.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ModelFileError(path, "no such model file") from None
    except OSError as exc:
        raise ModelFileError(path, f"cannot read it ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ModelFileError(path, "not a regular file (a folder, pipe or device); give a model file")
    if info.st_size > max_bytes:
        raise ModelFileError(path, f"{info.st_size:,} bytes is far larger than any model file; refused")
    return info.st_size


def read_info(path: str | Path) -> ModelInfo:
    """The metadata of a fastnst model file, from its header alone (no weights read, no PyTorch).

    The spec is bounded (``fastnst.models.spec``) and checked against the
    tensors the header lists, so a crafted file is refused before anything is
    built from it.
    """
    path = Path(path)
    size = check_model_path(path)
    meta, tensors = read_header(path, size)
    info = _info_from_metadata(path, meta)
    _check_shapes(path, {name: tuple(entry["shape"]) for name, entry in tensors.items()}, info.spec)
    return info


def read_header(path: Path, size: int | None = None) -> tuple[dict[str, str], dict[str, dict]]:
    """A ``.safetensors`` file's metadata (str → str) and tensor table (name → dtype, shape, data_offsets).

    Parsed here rather than by safetensors so that its size, nesting and types
    are bounded and every problem is one ``ModelFileError`` line.
    """
    size = check_model_path(path) if size is None else size
    bad = "not a readable .safetensors file ({}); is it truncated, or a .pth to load by its own suffix?"
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("shorter than a header")
            (length,) = struct.unpack("<Q", head)
            if length > min(MAX_HEADER_BYTES, size - 8):
                raise ValueError(f"header length {length:,} bytes is impossible for this file")
            header = json.loads(f.read(length))
    except OSError as exc:
        raise ModelFileError(path, f"cannot read it ({exc.strerror or exc})") from None
    except (ValueError, RecursionError) as exc:
        raise ModelFileError(path, bad.format(first_line(exc))) from None
    if not isinstance(header, dict):
        raise ModelFileError(path, bad.format("the header is not a JSON object"))
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ModelFileError(path, bad.format("its metadata is not a map of strings"))
    for name, entry in header.items():
        if not (isinstance(entry, dict) and entry.get("dtype") in _DTYPE_BYTES and isinstance(entry.get("shape"), list)
                and all(isinstance(d, int) and 0 <= d < 2**31 for d in entry["shape"])
                and _fits(entry, size - 8 - length)):
            raise ModelFileError(path, bad.format(f"tensor {name!r} is not a float tensor inside the file"))
    return meta, header


def _fits(entry: dict, data_bytes: int) -> bool:
    """Whether a header entry's offsets are whole numbers inside the data and match its shape and dtype."""
    offsets = entry.get("data_offsets")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
        return False
    start, stop = offsets
    return 0 <= start <= stop <= data_bytes and stop - start == math.prod(entry["shape"]) * _DTYPE_BYTES[entry["dtype"]]


def _info_from_metadata(path: Path, meta: dict[str, str]) -> ModelInfo:
    if meta.get("format") != FORMAT:
        raise ModelFileError(path, "a safetensors file without fastnst metadata; it is not a fastnst model")
    try:
        version = int(meta.get("format_version", "0"))
        if version > FORMAT_VERSION:
            raise ModelFileError(path, f"format version {version} is newer than this fastnst understands "
                                       f"({FORMAT_VERSION}); upgrade fastnst")
        styles, thumbnails = json.loads(meta.get("styles", "[]")), json.loads(meta.get("thumbnails", "[]"))
        config = expand_records(json.loads(meta.get("config", "{}")), json.loads(meta.get("records", "{}")))
        if not (isinstance(styles, list) and all(isinstance(s, str) for s in styles) and isinstance(thumbnails, list)
                and all(isinstance(t, str) for t in thumbnails) and isinstance(config, dict)):
            raise ValueError("styles, thumbnails or config have the wrong type")
        return ModelInfo(spec=TransformerSpec.from_dict(json.loads(meta["spec"])), styles=tuple(styles),
                         config=config, fastnst_version=str(meta.get("fastnst_version", "unknown")),
                         format_version=version, thumbnails=tuple(thumbnails))
    except (KeyError, ValueError, TypeError, RecursionError) as exc:
        raise ModelFileError(path, f"corrupt fastnst metadata ({first_line(exc)})") from None


def _check_shapes(path: Path, shapes: dict[str, tuple[int, ...]], spec: TransformerSpec) -> None:
    """Refuse tensors that do not match the network ``spec`` describes, naming the first mismatch."""
    expected = parameter_shapes(spec)
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s) e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected e.g. {unexpected[0]}")
        raise ModelFileError(path, f"does not match the network its metadata describes: {'; '.join(parts)}")
    for key, shape in expected.items():
        if shapes[key] != shape:
            raise ModelFileError(path, f"{key} has shape {shapes[key]}, the network needs {shape}")


def _load_tensors(path: Path) -> dict:
    """The file's tensors, read as bytes (safetensors' own file API refuses paths that are not UTF-8)."""
    from safetensors.torch import load

    try:
        return load(path.read_bytes())
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a bad file
        raise ModelFileError(path, f"not a readable .safetensors file ({first_line(exc)}); is it truncated?") from None


def _check_finite(path: Path, state: dict) -> None:
    """Refuse NaN or infinite weights: they would turn every photo black and report it done."""
    import torch

    bad = next((key for key, value in state.items() if not bool(torch.isfinite(value).all())), None)
    if bad is not None:
        raise ModelFileError(path, f"{bad} holds NaN or infinite weights; the file is corrupt (retrain or re-export)")


def torch_is_safe_for_pickles(version: str | None = None) -> bool:
    """Whether this PyTorch's ``weights_only`` loading is safe (2.6 and later; CVE-2025-32434 before)."""
    if version is None:
        import torch

        version = torch.__version__
    numbers = re.match(r"(\d+)\.(\d+)", version)
    return bool(numbers) and tuple(int(n) for n in numbers.groups()) >= SAFE_TORCH


def _load_pickle(path: Path) -> dict:
    import torch

    if not torch_is_safe_for_pickles():
        raise ModelFileError(path, f"PyTorch {torch.__version__} cannot load pickles safely (CVE-2025-32434); "
                                   f"upgrade to torch>={'.'.join(map(str, SAFE_TORCH))} or use a .safetensors file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's note about old pickle protocols
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncation, zip errors and refused globals all end here
        reason = first_line(exc)
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            reason = "it contains Python objects that would run code on loading; refused (only tensors are loaded)"
        raise ModelFileError(path, f"cannot load: {reason}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(path, "does not hold a state dict of tensors")
    return state


# pytorch/examples layer name → fastnst layer name.
_EXAMPLES_LAYERS = {
    "conv1.conv2d": "encoder.0.conv", "in1": "encoder.0.norm",
    "conv2.conv2d": "encoder.1.conv", "in2": "encoder.1.norm",
    "conv3.conv2d": "encoder.2.conv", "in3": "encoder.2.norm",
    "deconv1.conv2d": "decoder.0.conv", "in4": "decoder.0.norm",
    "deconv2.conv2d": "decoder.1.conv", "in5": "decoder.1.norm",
    "deconv3.conv2d": "decoder.2.conv",
}
_EXAMPLES_RESIDUAL = re.compile(r"res(\d+)\.(conv1\.conv2d|conv2\.conv2d|in1|in2)\.(weight|bias)$")
_RESIDUAL_PARTS = {"conv1.conv2d": "conv1", "conv2.conv2d": "conv2", "in1": "norm1", "in2": "norm2"}


def convert_pytorch_examples(state: dict, path: str | Path = "<state dict>") -> dict:
    """Convert a pytorch/examples ``TransformerNet`` state dict into fastnst's layout and value range.

    Renames the layers, drops the InstanceNorm ``running_mean`` / ``running_var``
    (and ``num_batches_tracked``) that older PyTorch versions saved, and rescales
    the network from 0–255 to 0–1 images: the first conv's weights are multiplied
    by 255 (it now sees x/255) and the last conv's weights and bias divided by 255.
    Both changes are exact, so the converted network computes the same picture.
    A dict already in fastnst's layout is returned unchanged.
    """
    if any(key.startswith("encoder.") for key in state):
        return dict(state)
    if "conv1.conv2d.weight" not in state:
        raise ModelFileError(path, "not a pytorch/examples fast_neural_style model (no conv1.conv2d.weight)")
    out: dict = {}
    for key, value in state.items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        layer, _, param = key.rpartition(".")
        match = _EXAMPLES_RESIDUAL.match(key)
        if match:
            block, part, param = match.groups()
            out[f"residual.{int(block) - 1}.{_RESIDUAL_PARTS[part]}.{param}"] = value.float()
        elif layer in _EXAMPLES_LAYERS:
            out[f"{_EXAMPLES_LAYERS[layer]}.{param}"] = value.float()
        else:
            raise ModelFileError(path, f"unexpected key {key!r} for a pytorch/examples model")
    out["encoder.0.conv.weight"] = out["encoder.0.conv.weight"] * 255.0
    out["decoder.2.conv.weight"] = out["decoder.2.conv.weight"] / 255.0
    out["decoder.2.conv.bias"] = out["decoder.2.conv.bias"] / 255.0
    return out


def _infer_spec(state: dict, path: Path) -> TransformerSpec:
    """Read the widths and residual count of a converted network off its weight shapes."""
    try:
        channels = tuple(int(state[f"encoder.{i}.conv.weight"].shape[0]) for i in range(3))
    except KeyError as exc:
        raise ModelFileError(path, f"missing layer {exc.args[0]}") from None
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("residual.")}
    return TransformerSpec(channels=channels, num_residual=len(blocks))


TRAIN_STATE_FORMAT = "fastnst-train-state"
TRAIN_STATE_VERSION = 1


def save_training_state(path: str | Path, state: dict) -> Path:
    """Write a resumable training checkpoint atomically (``torch.save`` of a dict).

    ``state`` may hold only tensors, numbers, strings, bools, None and lists,
    tuples and dicts of them, so that ``load_training_state`` can read it back
    with ``weights_only=True``. The format name and version are added here.
    """
    import torch

    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": TRAIN_STATE_FORMAT, "format_version": TRAIN_STATE_VERSION, **state}, tmp)
    return path


def load_training_state(path: str | Path) -> dict:
    """Read a checkpoint written by ``save_training_state`` (safely: tensors and primitives only).

    Raises ``ModelFileError`` for a missing, truncated or foreign file, or one
    written by a newer fastnst.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "no such training checkpoint")
    if not torch_is_safe_for_pickles():
        raise ModelFileError(path, f"PyTorch {torch.__version__} cannot load pickles safely; upgrade to "
                                   f"torch>={'.'.join(map(str, SAFE_TORCH))}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncation, zip errors and refused globals all end here
        raise ModelFileError(path, f"cannot load the training checkpoint ({first_line(exc)})") from None
    if not isinstance(state, dict) or state.get("format") != TRAIN_STATE_FORMAT:
        raise ModelFileError(path, "not a fastnst training checkpoint (resume from the .ckpt.pt file that "
                                   "fastnst train writes beside the model)")
    if int(state.get("format_version", 0)) > TRAIN_STATE_VERSION:
        raise ModelFileError(path, f"training checkpoint version {state['format_version']} is newer than this "
                                   f"fastnst understands ({TRAIN_STATE_VERSION}); upgrade fastnst")
    return state
