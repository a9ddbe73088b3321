"""fastnst: fast feed-forward neural style transfer.

Images everywhere in the API are RGB arrays or tensors (B, 3, H, W) or
(3, H, W), float in 0–1 (see ``fastnst.models.transformer``).

The public API is importable from here; each name is loaded on first use, so
``import fastnst`` (and ``fastnst --version``, or stylizing with OpenVINO) does
not pay for PyTorch until something needs it.
"""

from __future__ import annotations

import importlib

from fastnst.version import __version__

# name → the module that defines it.
_API = {
    "Stylizer": "fastnst.stylize", "StylizeConfig": "fastnst.stylize", "stylize_files": "fastnst.stylize",
    "stylize_dataset": "fastnst.ray",
    "TrainConfig": "fastnst.train", "fit": "fastnst.train",
    "ExportConfig": "fastnst.export", "export_onnx": "fastnst.export",
    "OptimizeConfig": "fastnst.optimize", "optimize": "fastnst.optimize",
    "ScoreConfig": "fastnst.score", "score_images": "fastnst.score",
    "ConvertConfig": "fastnst.convert", "convert_model": "fastnst.convert",
    "ModelInfo": "fastnst.checkpoint", "load_model": "fastnst.checkpoint", "save_model": "fastnst.checkpoint",
    "read_info": "fastnst.checkpoint",
    "ConfigError": "fastnst.errors", "FastNSTError": "fastnst.errors", "ImageError": "fastnst.errors",
    "ModelFileError": "fastnst.errors", "WeightsError": "fastnst.errors",
    "load_image": "fastnst.images", "open_image": "fastnst.images", "save_image": "fastnst.images",
    "LossSpec": "fastnst.losses", "perceptual_losses": "fastnst.losses", "style_targets": "fastnst.losses",
    "SPECS": "fastnst.models.spec", "TransformerSpec": "fastnst.models.spec", "get_spec": "fastnst.models.spec",
    "TransformerNet": "fastnst.models.transformer", "VGGFeatures": "fastnst.models.vgg",
    "load_vgg": "fastnst.pretrained", "resolve_device": "fastnst.device",
    "VideoConfig": "fastnst.video", "stylize_video": "fastnst.video",
}

__all__ = ["__version__", *sorted(_API)]


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fastnst' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
