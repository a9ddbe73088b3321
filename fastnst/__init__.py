"""fastnst: fast feed-forward neural style transfer.

Images everywhere in the API are float tensors (B, 3, H, W) or (3, H, W), RGB,
values in 0–1 (see ``fastnst.models.transformer``).
"""

__version__ = "0.1.0"

from fastnst.checkpoint import ModelInfo, load_model, save_model  # noqa: E402
from fastnst.device import resolve_device  # noqa: E402
from fastnst.errors import (  # noqa: E402
    ConfigError,
    FastNSTError,
    ImageError,
    ModelFileError,
    WeightsError,
)
from fastnst.images import load_image, open_image, save_image  # noqa: E402
from fastnst.losses import LossSpec, perceptual_losses  # noqa: E402
from fastnst.models.transformer import SPECS, TransformerNet, TransformerSpec, get_spec  # noqa: E402
from fastnst.models.vgg import VGGFeatures  # noqa: E402
from fastnst.pretrained import load_vgg  # noqa: E402

__all__ = [
    "SPECS", "ConfigError", "FastNSTError", "ImageError", "LossSpec", "ModelFileError", "ModelInfo",
    "TransformerNet", "TransformerSpec", "VGGFeatures", "WeightsError", "__version__", "get_spec", "load_image",
    "load_model", "load_vgg", "open_image", "perceptual_losses", "resolve_device", "save_image", "save_model",
]
