"""Pretrained weights for the VGG loss network: a local file, or a hash-checked download.

Where the weights come from, first match wins:

1. an explicit path (``--vgg-weights PATH``);
2. the ``FASTNST_VGG_WEIGHTS`` environment variable;
3. the official file, fetched once with ``torch.hub.load_state_dict_from_url``
   (SHA-256 prefix checked, cached under ``$TORCH_HOME/hub/checkpoints``):
   torchvision's ImageNet VGGs, or the Caffe VGGs converted by Justin Johnson.

A file may hold a whole torchvision VGG, only its ``features.*`` keys, or only the
layers up to the deepest one a run needs. Its flavour (preprocessing) comes from
``flavour=`` or, with ``"auto"``, from the file name: names containing ``caffe`` or
the official Caffe file names are Caffe weights, anything else torchvision's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from fastnst.errors import WeightsError, first_line
from fastnst.losses import VGG_WEIGHTS_ENV, LossSpec, vgg_weights_source
from fastnst.models.vgg import FLAVOURS, VGGFeatures, detect_flavour, resolve_flavour  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

ENV_VAR = VGG_WEIGHTS_ENV

URLS: dict[tuple[str, str], str] = {
    ("vgg16", "torchvision"): "https://download.pytorch.org/models/vgg16-397923af.pth",
    ("vgg19", "torchvision"): "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    ("vgg16", "caffe"): "https://web.eecs.umich.edu/~justincj/models/vgg16-00b39a1b.pth",
    ("vgg19", "caffe"): "https://web.eecs.umich.edu/~justincj/models/vgg19-d01eb7cb.pth",
}

FLAVOUR_CHOICES = ("auto", *FLAVOURS)


def load_vgg(arch: str, layers: list[str] | tuple[str, ...], weights: str | Path | None = None,
             flavour: str = "auto", device: torch.device | str = "cpu") -> VGGFeatures:
    """Build a frozen ``VGGFeatures`` up to the deepest of ``layers`` with pretrained weights.

    Raises ``WeightsError`` (one line) when the file is missing or unreadable, lacks
    a layer the run needs, or the download fails.
    """
    source = vgg_weights_source(weights)
    flavour = resolve_flavour(flavour, source)
    net = VGGFeatures(arch, layers, flavour)
    if source is None:
        state, origin = _download(arch, flavour), URLS[(arch, flavour)]
    else:
        state, origin = _read_file(source), source
    state = _features_only(state)
    missing = [key for key in net.required_keys() if key not in state]
    if missing:
        layer = net.layer_of_key(missing[0])
        raise WeightsError(f"{origin}: has no weights for {layer} ({missing[0]}); it is needed for layers "
                           f"{', '.join(net.layers)}: use a file that covers {layer} or choose shallower layers")
    wrong = [key for key in net.required_keys() if state[key].shape != net.state_dict()[key].shape]
    if wrong:
        key = wrong[0]
        raise WeightsError(f"{origin}: {key} has shape {tuple(state[key].shape)}, {arch} needs "
                           f"{tuple(net.state_dict()[key].shape)}: is this a {arch} weight file?")
    net.load_state_dict({key: state[key].float() for key in net.required_keys()})
    log.info("VGG loss network: %s (%s flavour) up to %s from %s", arch, flavour, net.layers, origin)
    return net.to(device)


def load_loss_network(spec: LossSpec, device: torch.device | str = "cpu") -> VGGFeatures:
    """The frozen VGG a ``LossSpec`` asks for, built up to the deepest layer its losses read."""
    return load_vgg(spec.vgg, spec.layers, spec.vgg_weights, spec.vgg_flavour, device)


def _features_only(state: dict) -> dict[str, torch.Tensor]:
    """Keep the convolution weights under ``features.N.*`` (also accepting a saved bare ``features``)."""
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        if key.startswith("features."):
            out[key] = value
        elif key.split(".", 1)[0].isdigit():
            out["features." + key] = value
    return out


def _read_file(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{path}: VGG weight file not found (check --vgg-weights or ${ENV_VAR})")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(p))
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to decode is the same user problem
        reason = first_line(exc)
        raise WeightsError(f"{path}: not a readable VGG weight file ({reason[:200]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: holds a {type(state).__name__}, expected a state dict of tensors")
    return state


def _download(arch: str, flavour: str) -> dict:
    url = URLS[(arch, flavour)]
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", check_hash=True, weights_only=True,
                                                  progress=False)
    except Exception as exc:  # noqa: BLE001 - network, hash and disk errors all need the same advice
        reason = first_line(exc)
        hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
        raise WeightsError(
            f"could not fetch {arch} {flavour} weights from {url} ({reason[:160]}); download that file into "
            f"{hub_dir} or pass --vgg-weights PATH (or set {ENV_VAR})") from None
