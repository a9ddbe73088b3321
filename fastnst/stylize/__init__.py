"""``fastnst stylize``: apply a trained model to arrays, images, files and whole photo libraries.

* ``stylizer.Stylizer`` — a model loaded once, any image size, strength and colour;
* ``pipeline.stylize_files`` — a photo library: workers, batching, atomic outputs, report;
* ``config.StylizeConfig`` — every option, validated once;
* ``tiling`` — tiles with context and shared InstanceNorm statistics, the default tile size;
* ``inputs`` — finding inputs, mirroring them under OUT_DIR safely, shards.

Nothing here imports PyTorch unless the torch backend runs.
"""

from fastnst.stylize.config import StylizeConfig
from fastnst.stylize.pipeline import StylizeReport, stylize_files
from fastnst.stylize.stylizer import Stylizer

__all__ = ["StylizeConfig", "StylizeReport", "Stylizer", "stylize_files"]
