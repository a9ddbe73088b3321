"""The ONNX graph of each model file, exported once and kept in the user's cache folder.

Exporting a ``.safetensors`` or pytorch/examples model to ONNX (what OpenVINO
reads) takes seconds and PyTorch; the graph depends only on the file's bytes.
So the first run exports it (saying once that it does) and every later run —
in any process — reads it from ``cache_dir()/onnx/<sha256 of the model>-<fastnst
version>.onnx`` without importing PyTorch (another fastnst version exports its
own). Beside it, a ``.json`` of the same name holds the graph's metadata (what
``fastnst.onnx_format.info_from_metadata`` reads) and the sha256 of the
``.onnx`` file itself: a graph whose bytes do not match (a torn
write, a disk error, tampering) is never used, only exported again.

Both files are written under temporary names and renamed, the ``.onnx`` first,
so two processes exporting the same model at once both end with a whole,
matching pair (the last rename wins; the contents are identical).

The folder is ``$FASTNST_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/fastnst``,
else ``~/.cache/fastnst``; OpenVINO's compiled-graph cache lives beside it
(``openvino/``). Deleting the folder is always safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from fastnst.errors import ModelFileError
from fastnst.files import atomic_path
from fastnst.version import __version__

log = logging.getLogger(__name__)

CACHE_ENV = "FASTNST_CACHE_DIR"


def cache_dir() -> Path:
    """The folder fastnst caches derived files in (see the module docstring); created on first use."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fastnst"


def file_digest(path: str | Path) -> str:
    """The sha256 of a file's bytes (read in 1 MB pieces); ``ModelFileError`` when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise ModelFileError(path, f"cannot read it ({exc.strerror or exc})") from None
    return digest.hexdigest()


def cached_onnx(path: str | Path):
    """The ONNX graph of model file ``path`` and its metadata, exporting it on the first call.

    Returns (the cached ``.onnx`` path, metadata); where the cache cannot be
    written, (the in-memory ``onnx.ModelProto``, metadata) and a warning. The
    model file is read (and checked, ``fastnst.checkpoint``) only when the graph
    is not cached yet.
    """
    from fastnst.checkpoint import check_model_path

    path = Path(path)
    check_model_path(path)
    folder = cache_dir() / "onnx"
    digest = f"{file_digest(path)}-{__version__}"
    graph, sidecar = folder / f"{digest}.onnx", folder / f"{digest}.json"
    metadata = _read_valid(graph, sidecar)
    if metadata is not None:
        return graph, metadata
    return _export(path, graph, sidecar)


def _read_valid(graph: Path, sidecar: Path) -> dict[str, str] | None:
    """The cached metadata when both files exist and the graph's bytes match the recorded digest; else None."""
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
        if record.get("sha256") == file_digest(graph) and isinstance(record.get("metadata"), dict):
            return {str(k): str(v) for k, v in record["metadata"].items()}
    except (OSError, ValueError, ModelFileError, AttributeError):
        pass
    if graph.exists() or sidecar.exists():
        log.warning("ignoring a damaged cached graph %s; exporting the model again", graph)
    return None


def _export(path: Path, graph: Path, sidecar: Path):
    """Export ``path`` to ONNX (PyTorch) and cache it: (graph path or in-memory proto, metadata)."""
    from fastnst.checkpoint import load_model
    from fastnst.export import to_onnx

    log.warning("preparing %s for OpenVINO: exporting it to ONNX once (a few seconds); later runs read it from "
                "the cache %s", path.name, graph.parent)
    start = time.perf_counter()
    net, info = load_model(path)
    model = to_onnx(net, info, config={"source": path.name, "for": "openvino"})
    data = model.SerializeToString()
    metadata = {p.key: p.value for p in model.metadata_props}
    log.info("exported %s to ONNX in %.1f s", path.name, time.perf_counter() - start)
    try:
        with atomic_path(graph) as tmp:
            tmp.write_bytes(data)
        with atomic_path(sidecar) as tmp:
            tmp.write_text(json.dumps({"sha256": hashlib.sha256(data).hexdigest(), "source": str(path),
                                       "metadata": metadata}), encoding="utf-8")
    except OSError as exc:  # a read-only or full cache: run from memory this time
        log.warning("cannot write the graph cache %s (%s); the model will be exported again next run",
                    graph.parent, exc.strerror or exc)
        return model, metadata
    return graph, metadata
