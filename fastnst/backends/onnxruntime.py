"""The ONNX Runtime backend: runs a file written by ``fastnst export`` without PyTorch doing the math.

Whatever the file's interface (``io`` float or uint8, fp32 or fp16), the backend
takes and returns float32 (B, 3, H, W) in 0–1 like every backend and converts
at the boundary (a uint8 file rounds its input to 8 bits and returns 8-bit
results). Tiling uses the graphs ``fastnst.backends.onnx_graph`` derives from
the file's own.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fastnst.backends import BACKENDS
from fastnst.backends.onnx_graph import (  # noqa: F401 - BackendInputError, read_onnx: part of this backend's API
    BackendInputError,
    OnnxGraphBackend,
    read_onnx,
)
from fastnst.device import check_device
from fastnst.errors import ConfigError, FastNSTError, ModelFileError, first_line
from fastnst.onnx_format import INPUT_NAME, info_from_metadata

log = logging.getLogger(__name__)

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


def providers_for(device: str = "auto") -> list:
    """ONNX Runtime execution providers for a fastnst device name: CUDA (if asked or auto and present), then CPU.

    ``cuda:N`` pins CUDA to GPU N (a provider with ``device_id``; a torchrun rank
    gets its own GPU this way), plain ``cuda`` and ``auto`` take ONNX Runtime's default GPU.
    """
    import onnxruntime as ort

    kind, _, index = check_device(str(device)).partition(":")
    available = ort.get_available_providers()
    if kind == "mps":
        raise ConfigError("the onnxruntime backend does not run on MPS; use --device cpu or auto")
    if kind == "cuda" and CUDA not in available:
        raise ConfigError("device 'cuda' requested but this onnxruntime has no CUDA execution provider "
                          "(install onnxruntime-gpu); use --device cpu or auto")
    if index:
        return [(CUDA, {"device_id": int(index)}), CPU]
    if kind == "cuda" or (kind == "auto" and CUDA in available):
        return [CUDA, CPU]
    return [CPU]


def provider_device(provider) -> str:
    """The torch name of the device an execution provider runs on: ``cpu``, ``cuda`` or ``cuda:N``."""
    name, options = provider if isinstance(provider, tuple) else (provider, {})
    if name != CUDA:
        return "cpu"
    return f"cuda:{options['device_id']}" if "device_id" in options else "cuda"


class OnnxRuntimeBackend(OnnxGraphBackend):
    """Runs an exported fastnst ONNX graph with ONNX Runtime; ``info`` comes from the file's metadata.

    ``model`` is an ``onnx.ModelProto`` (``from_file`` reads one). ``threads``
    sets ONNX Runtime's intra-op thread count (default: its own choice, one per
    physical core). Sessions for the tiling graphs are built on first use.
    """

    name = "onnxruntime"
    dtypes = BACKENDS["onnxruntime"].dtypes
    options = BACKENDS["onnxruntime"].options

    def __init__(self, model, device: str = "auto", path: str | Path = "<onnx>",
                 threads: int | None = None) -> None:
        self.path, self.threads = str(path), threads
        self._proto = model
        self.metadata = {p.key: p.value for p in model.metadata_props}
        self.info = info_from_metadata(self.metadata, path)
        self.providers = providers_for(str(device))
        self.device = provider_device(self.providers[0])
        self.device_type = self.device.split(":")[0]
        self._sessions: dict[str, object] = {}
        self._session("plain")  # fail now, not on the first image, if ONNX Runtime refuses the graph

    @classmethod
    def from_file(cls, path: str | Path, *, device: str = "auto", dtype: str | None = None,
                  threads: int | None = None) -> OnnxRuntimeBackend:
        """Load a ``.onnx`` file written by ``fastnst export``; anything else is a ``ModelFileError``.

        ``dtype`` must be None: the file's precision is its own (``fastnst export --fp16``).
        """
        if dtype is not None:
            raise ConfigError(f"--dtype {dtype}: the onnxruntime backend runs the file's own precision; drop it")
        return cls(read_onnx(path), device, path, threads)

    def _run(self, kind, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        session = self._session(kind)
        try:
            return session.run(None, feeds)
        except Exception as exc:  # noqa: BLE001 - ORT's exceptions carry multi-line C++ context
            shape = "x".join(map(str, feeds[INPUT_NAME].shape))
            raise FastNSTError(f"{self.path}: onnxruntime failed on a {shape} input ({first_line(exc)})") from None

    def _session(self, kind):
        if kind not in self._sessions:
            import onnxruntime as ort

            model = self._graph_proto(kind)
            options = ort.SessionOptions()
            options.log_severity_level = 3  # errors only: no notes about unused initializers
            if self.threads:
                options.intra_op_num_threads = self.threads
            try:
                self._sessions[kind] = ort.InferenceSession(model.SerializeToString(), options,
                                                            providers=self.providers)
            except Exception as exc:  # noqa: BLE001
                raise ModelFileError(self.path, f"onnxruntime {ort.__version__} cannot run it "
                                                f"({first_line(exc)})") from None
        return self._sessions[kind]
