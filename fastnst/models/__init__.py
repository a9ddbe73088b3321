"""Networks: the image transformation network and the VGG loss network. No I/O here."""

from fastnst.models.transformer import SPECS, TransformerNet, TransformerSpec, get_spec
from fastnst.models.vgg import VGGFeatures

__all__ = ["SPECS", "TransformerNet", "TransformerSpec", "VGGFeatures", "get_spec"]
