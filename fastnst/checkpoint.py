"""fastnst model files: one format, one safe loader, atomic writes.

A model file is a ``.safetensors`` file (tensors only, nothing executable) whose
string metadata holds JSON:

=================  ==========================================================
``format``         ``"fastnst-model"``
``format_version`` ``"1"`` — bumped on incompatible change; old versions get a
                   named converter here, never ad-hoc patches in the loader
``spec``           the ``TransformerSpec`` (``{"channels": [...], ...}``;
                   ``num_styles`` only for a multi-style network)
``styles``         list of style names, one per style the network carries (in
                   the order of the norms' rows for a multi-style network)
``config``         the training configuration (``asdict(TrainConfig)``) or ``{}``
``thumbnails``     optional: one small base64 JPEG per style, of its style image
                   (``fastnst.images.encode_thumbnail``), for contact sheets
``value_range``    ``"0-1"``: input and output range of the network
``fastnst_version`` the package version that wrote the file
=================  ==========================================================

``load_model`` also reads pytorch/examples ``fast_neural_style`` checkpoints
(``.pth`` / ``.model``) with ``torch.load(weights_only=True)`` — a pickle that
tries to run code is refused — and converts them with
``convert_pytorch_examples``.

Resumable *training* checkpoints (``MODEL.ckpt.pt``, written by ``fastnst train``)
are a separate format: ``save_training_state`` / ``load_training_state``, a
``torch.save`` dict of tensors and primitives only (format
``"fastnst-train-state"``, its own version), read back with ``weights_only=True``.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fastnst import __version__
from fastnst.errors import ConfigError, ModelFileError
from fastnst.files import atomic_path
from fastnst.models.transformer import TransformerNet, TransformerSpec

log = logging.getLogger(__name__)

FORMAT = "fastnst-model"
FORMAT_VERSION = 1
VALUE_RANGE = "0-1"
PICKLE_SUFFIXES = (".pth", ".pt", ".model", ".ckpt")


@dataclass(frozen=True)
class ModelInfo:
    """What a model file says about itself, besides the weights."""

    spec: TransformerSpec
    styles: tuple[str, ...] = ()
    config: dict = field(default_factory=dict)
    fastnst_version: str = __version__
    format_version: int = FORMAT_VERSION
    source: str = "fastnst"  # or "pytorch-examples" for a converted legacy file
    thumbnails: tuple[str, ...] = ()  # base64 JPEGs of the style images, one per style, or none

    def to_metadata(self) -> dict[str, str]:
        thumbnails = {"thumbnails": json.dumps(list(self.thumbnails))} if self.thumbnails else {}
        return {**thumbnails,
            "format": FORMAT,
            "format_version": str(self.format_version),
            "spec": json.dumps(self.spec.to_dict()),
            "styles": json.dumps(list(self.styles)),
            "config": json.dumps(self.config, default=str),
            "value_range": VALUE_RANGE,
            "fastnst_version": self.fastnst_version,
        }


def save_model(path: str | Path, model: TransformerNet, styles: list[str] | tuple[str, ...] = (),
               config: dict | None = None, half: bool = False, thumbnails: tuple[str, ...] = ()) -> Path:
    """Write ``model`` as a fastnst model file, atomically. ``half`` stores fp16 weights (half the size).

    ``thumbnails``: none, or one ``encode_thumbnail`` text per style the network carries.
    """
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


@dataclass(frozen=True)
class ConvertConfig:
    """Options of ``fastnst convert``: a legacy (or fastnst) model file re-saved as a fastnst file.

    ``merge``: instead of ``source``, two or more model files that share all
    their non-norm weights, written as one multi-style model (``fastnst.styles.merge_models``).
    ``style_name``: one name, or one per style of the output.
    """

    source: str | None
    output: str
    style_name: str | tuple[str, ...] | None = None
    half: bool = False
    merge: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "merge", tuple(str(m) for m in self.merge))
        if isinstance(self.style_name, (list, tuple)):
            object.__setattr__(self, "style_name", tuple(self.style_name) or None)
        if not str(self.output).endswith(".safetensors"):
            raise ConfigError(f"{self.output}: the output of convert must end in .safetensors")
        if (self.source is None) == (not self.merge):
            raise ConfigError("give one SOURCE model to convert, or --merge A B ... (not both)")
        if self.merge and len(self.merge) < 2:
            raise ConfigError("--merge needs at least two model files")


def convert_model(config: ConvertConfig) -> Path:
    """Load ``config.source`` (or the ``merge`` files) with the safe loader and write a fastnst model file."""
    from fastnst.styles import check_unique, merge_models

    if config.merge:
        loaded = [load_model(path) for path in config.merge]
        model = merge_models([(net, Path(path).name) for (net, _), path in zip(loaded, config.merge)])
        styles = tuple(name for (net, info), path in zip(loaded, config.merge)
                       for name in (info.styles if len(info.styles) == net.spec.num_styles else
                                    [f"{Path(path).stem}{i}" for i in range(net.spec.num_styles)]))
        extra = {"merged_from": [Path(p).name for p in config.merge]}
        thumbnails = sum((info.thumbnails for _, info in loaded), ())
        if not all(info.thumbnails for _, info in loaded):
            thumbnails = ()  # all or nothing: one per style
    else:
        model, info = load_model(config.source)
        styles, extra = info.styles, {**info.config, "converted_from": Path(config.source).name,
                                      "source_format": info.source}
        thumbnails = info.thumbnails
    if config.style_name:
        names = (config.style_name,) if isinstance(config.style_name, str) else config.style_name
        if len(names) != model.spec.num_styles:
            raise ConfigError(f"--style-name gives {len(names)} name(s); the model has {model.spec.num_styles} "
                              "style(s): give one per style, in order")
        styles = names
    check_unique(styles)
    return save_model(config.output, model, styles=styles, config=extra, half=config.half, thumbnails=thumbnails)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[TransformerNet, ModelInfo]:
    """Rebuild the network a file describes, in eval mode on ``device``, with its ``ModelInfo``.

    Reads fastnst ``.safetensors`` files and pytorch/examples pickles. Every
    problem (missing, truncated, unsafe, foreign or wrong-shaped file) raises
    ``ModelFileError`` naming the file and the mismatch.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "no such model file")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        state = convert_pytorch_examples(_load_pickle(path), path)
        info = ModelInfo(spec=_infer_spec(state, path), styles=(path.stem,), source="pytorch-examples")
    else:
        state, info = _load_safetensors(path)
    model = TransformerNet(info.spec)
    _load_state(model, state, path)
    return model.to(device).eval(), info


def read_info(path: str | Path) -> ModelInfo:
    """The metadata of a fastnst model file, read from its header alone (the weights stay on disk)."""
    return _load_safetensors(Path(path), weights=False)[1]


def _load_safetensors(path: Path, weights: bool = True) -> tuple[dict[str, torch.Tensor], ModelInfo]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()} if weights else {}
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a bad header
        raise ModelFileError(path, f"not a readable .safetensors file ({_reason(exc)}); "
                                   "is it truncated, or a .pth to load by its own suffix?") from None
    if meta.get("format") != FORMAT:
        raise ModelFileError(path, "a safetensors file without fastnst metadata; it is not a fastnst model")
    version = int(meta.get("format_version", "0"))
    if version > FORMAT_VERSION:
        raise ModelFileError(path, f"format version {version} is newer than this fastnst understands "
                                   f"({FORMAT_VERSION}); upgrade fastnst")
    try:
        info = ModelInfo(
            spec=TransformerSpec.from_dict(json.loads(meta["spec"])),
            styles=tuple(json.loads(meta.get("styles", "[]"))),
            config=json.loads(meta.get("config", "{}")),
            fastnst_version=meta.get("fastnst_version", "unknown"),
            format_version=version,
            thumbnails=tuple(json.loads(meta.get("thumbnails", "[]"))),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelFileError(path, f"corrupt fastnst metadata ({_reason(exc)})") from None
    return state, info


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's note about old pickle protocols
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncation, zip errors and refused globals all end here
        reason = _reason(exc)
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            reason = "it contains Python objects that would run code on loading; refused (only tensors are loaded)"
        raise ModelFileError(path, f"cannot load: {reason}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(path, "does not hold a state dict of tensors")
    return state


TRAIN_STATE_FORMAT = "fastnst-train-state"
TRAIN_STATE_VERSION = 1


def save_training_state(path: str | Path, state: dict) -> Path:
    """Write a resumable training checkpoint atomically (``torch.save`` of a dict).

    ``state`` may hold only tensors, numbers, strings, bools, None and lists,
    tuples and dicts of them, so that ``load_training_state`` can read it back
    with ``weights_only=True``. The format name and version are added here.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": TRAIN_STATE_FORMAT, "format_version": TRAIN_STATE_VERSION, **state}, tmp)
    return path


def load_training_state(path: str | Path) -> dict:
    """Read a checkpoint written by ``save_training_state`` (safely: tensors and primitives only).

    Raises ``ModelFileError`` for a missing, truncated or foreign file, or one
    written by a newer fastnst.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "no such training checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncation, zip errors and refused globals all end here
        raise ModelFileError(path, f"cannot load the training checkpoint ({_reason(exc)})") from None
    if not isinstance(state, dict) or state.get("format") != TRAIN_STATE_FORMAT:
        raise ModelFileError(path, "not a fastnst training checkpoint (resume from the .ckpt.pt file that "
                                   "fastnst train writes beside the model)")
    if int(state.get("format_version", 0)) > TRAIN_STATE_VERSION:
        raise ModelFileError(path, f"training checkpoint version {state['format_version']} is newer than this "
                                   f"fastnst understands ({TRAIN_STATE_VERSION}); upgrade fastnst")
    return state


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


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


def convert_pytorch_examples(state: dict[str, torch.Tensor], path: str | Path = "<state dict>"
                             ) -> dict[str, torch.Tensor]:
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
    out: dict[str, torch.Tensor] = {}
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


def _infer_spec(state: dict[str, torch.Tensor], path: Path) -> TransformerSpec:
    """Read the widths and residual count of a converted network off its weight shapes."""
    try:
        channels = tuple(int(state[f"encoder.{i}.conv.weight"].shape[0]) for i in range(3))
    except KeyError as exc:
        raise ModelFileError(path, f"missing layer {exc.args[0]}") from None
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("residual.")}
    return TransformerSpec(channels=channels, num_residual=len(blocks))


def _load_state(model: TransformerNet, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s) e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected e.g. {unexpected[0]}")
        raise ModelFileError(path, f"does not match the network its metadata describes: {'; '.join(parts)}")
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise ModelFileError(path, f"{key} has shape {tuple(state[key].shape)}, the network needs "
                                       f"{tuple(tensor.shape)}")
    model.load_state_dict({k: v.float() for k, v in state.items()})
