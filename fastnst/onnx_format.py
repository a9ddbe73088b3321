"""The interface and metadata of the ONNX files ``fastnst export`` writes.

Like ``fastnst.checkpoint`` for model files, this module owns what an exported
file promises, so the exporter (``fastnst.export``) and the runtime that reads it
(``fastnst.backends.onnxruntime``) agree without importing each other.

One input ``image`` and one output ``styled``, both with dynamic batch, height
and width (the output has the input's size):

* ``io="float"``: float32 (B, 3, H, W) RGB in 0–1, output unclamped;
* ``io="uint8"``: uint8 (B, H, W, 3) RGB pixels in and out.

A multi-style network (``spec.num_styles`` N > 1) has a second input ``style``,
float32 (B, N): per image, the weights of the styles (one-hot picks one, a
convex mix blends them); ``styles`` in the metadata names the N columns.

``metadata_props`` (all strings; JSON where structured):

=================  ==========================================================
``format``         ``"fastnst-onnx"``; ``format_version`` ``"1"``
``fastnst_version`` the package version that exported the file
``styles``         JSON list of style names
``spec``           the ``TransformerSpec`` as JSON
``io`` ``layout``  ``float``/``NCHW`` or ``uint8``/``NHWC``
``value_range``    ``"0-1"`` (float io) or ``"0-255"`` (uint8 io)
``precision``      ``fp32`` or ``fp16`` (I/O dtypes do not change with it)
``opset``          the default-domain opset
``input`` ``output`` one-line descriptions for a person reading the file
``model_config``   the source model's training config (JSON, its repeated records written once:
                   ``fastnst.records.dumps_record``); ``model_source``
``export_config``  ``asdict(ExportConfig)`` as JSON
=================  ==========================================================
"""

from __future__ import annotations

import json
from pathlib import Path

from fastnst.checkpoint import ModelInfo
from fastnst.errors import ModelFileError
from fastnst.models.spec import TransformerSpec
from fastnst.records import dumps_record, loads_record
from fastnst.version import __version__

IO_MODES = ("float", "uint8")
ONNX_FORMAT = "fastnst-onnx"
ONNX_FORMAT_VERSION = 1
INPUT_NAME, OUTPUT_NAME = "image", "styled"
STYLE_INPUT = "style"


def onnx_metadata(info: ModelInfo, io: str, fp16: bool, opset: int, config: dict | None = None) -> dict[str, str]:
    """The ``metadata_props`` of an exported file: enough to rebuild its ``ModelInfo`` and use it blind."""
    layout = "NHWC" if io == "uint8" else "NCHW"
    dtype = "uint8" if io == "uint8" else "float32"
    return {
        "format": ONNX_FORMAT,
        "format_version": str(ONNX_FORMAT_VERSION),
        "fastnst_version": __version__,
        "styles": json.dumps(list(info.styles)),
        "spec": json.dumps(info.spec.to_dict()),
        "io": io,
        "layout": layout,
        "value_range": "0-255" if io == "uint8" else "0-1",
        "precision": "fp16" if fp16 else "fp32",
        "opset": str(opset),
        "input": f"{INPUT_NAME}: {dtype} {layout} RGB, any batch and size" + (
            f"; {STYLE_INPUT}: float32 (batch, {info.spec.num_styles}) style weights, one-hot or a mix of "
            f"{', '.join(info.styles)}" if info.spec.num_styles > 1 else ""),
        "output": f"{OUTPUT_NAME}: {dtype} {layout} RGB, the input's size" + ("" if io == "uint8" else ", unclamped"),
        "model_config": dumps_record(info.config),
        "model_source": info.source,
        "export_config": json.dumps(config or {}),
    }


def info_from_metadata(meta: dict[str, str], path: str | Path = "<onnx>") -> ModelInfo:
    """Rebuild the ``ModelInfo`` of an exported file from its metadata; a foreign file is a ``ModelFileError``."""
    if meta.get("format") != ONNX_FORMAT:
        raise ModelFileError(path, "an ONNX file without fastnst metadata; export the model with `fastnst export`")
    try:
        version = int(meta.get("format_version", "0"))
        if version > ONNX_FORMAT_VERSION:
            raise ModelFileError(path, f"fastnst ONNX format {version} is newer than this fastnst understands "
                                  f"({ONNX_FORMAT_VERSION}); upgrade fastnst")
        return ModelInfo(spec=TransformerSpec.from_dict(json.loads(meta["spec"])),
                         styles=tuple(json.loads(meta.get("styles", "[]"))),
                         config=loads_record(meta.get("model_config", "{}")),
                         fastnst_version=meta.get("fastnst_version", "unknown"), source="onnx")
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelFileError(path, f"corrupt fastnst metadata in the ONNX file ({exc})") from None
