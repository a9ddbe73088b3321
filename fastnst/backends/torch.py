"""The PyTorch backend: runs a ``TransformerNet`` on CPU, CUDA or MPS.

Speed options live here, not in the engine, because only this runtime has them:

* ``dtype``: ``"fp32"`` (default), or ``"bf16"`` / ``"fp16"`` autocast (mixed
  precision: convolutions in 16 bits, statistics and outputs in float32).
  16-bit outputs differ from fp32 by a few levels of 255, which is why fp32
  stays the default; see ``scripts/bench_stylize.py`` for the figures.
* ``channels_last``: NHWC memory layout, which cuDNN's tensor-core kernels
  want. ``None`` turns it on for CUDA only: on the CPU (oneDNN) it measured no
  faster at 256² and slower at 1920×1080 (``scripts/bench_stylize.py``).
* ``compile``: ``torch.compile`` the forward (dynamic shapes, so photos of many
  sizes share one compiled graph). It costs a compilation at the first batch,
  and a compiled forward runs one photo at a time (``concurrent`` is False).

Streams: with ``set_streams(n)``, n > 1, each calling thread runs its photo on
one core (``torch.set_num_threads(1)`` in that thread); ``set_streams(1)``
gives the process its thread count back. With glibc keeping freed memory, one
photo on all cores measured as fast as one photo per core, so 1 is the default.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fastnst.backends import BACKENDS, like, region_moments
from fastnst.checkpoint import ModelInfo, load_model
from fastnst.device import keep_freed_memory, resolve_device
from fastnst.errors import ConfigError
from fastnst.models.transformer import NormStats, TransformerNet, padded_size, style_weights

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class TorchBackend:
    """Runs ``net`` on ``device`` without autograd; takes and returns CPU float32 (B, 3, H, W), numpy or torch.

    ``no_grad`` rather than ``inference_mode``: callers may modify the results in place.
    ``style`` (multi-style models): the style weights (N,) every image is stylized
    with, set once before running (see ``fastnst.backends.Backend``); None is the first style.
    """

    name = "torch"
    dtypes = BACKENDS["torch"].dtypes
    options = BACKENDS["torch"].options
    default_streams = 1
    style = None

    def __init__(self, net: TransformerNet, device="auto", info: ModelInfo | None = None, *,
                 dtype: str = "fp32", channels_last: bool | None = None, compile: bool = False) -> None:
        if dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            keep_freed_memory()
        self.dtype = dtype
        self.channels_last = self.device.type == "cuda" if channels_last is None else bool(channels_last)
        self.compiled = bool(compile)
        self.net = net.to(self.device).eval()
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self._forward = torch.compile(self.net, dynamic=True) if compile else self.net
        self.info = info or ModelInfo(spec=net.spec)
        self.streams, self._threads, self._local = 1, torch.get_num_threads(), threading.local()

    @classmethod
    def from_file(cls, path: str | Path, *, device="auto", dtype: str | None = None,
                  channels_last: bool | None = None, compile: bool = False) -> TorchBackend:
        """Load a fastnst ``.safetensors`` or pytorch/examples ``.pth`` model file."""
        net, info = load_model(path)
        return cls(net, device, info, dtype=dtype or "fp32", channels_last=channels_last, compile=compile)

    @property
    def device_type(self) -> str:
        return self.device.type

    @property
    def concurrent(self) -> bool:
        """A compiled forward is not thread-safe: one photo at a time."""
        return not self.compiled

    def set_streams(self, streams: int) -> None:
        if streams > 1 and self.streams == 1:
            self._threads = torch.get_num_threads()
        elif streams == 1 and self.streams > 1:
            torch.set_num_threads(self._threads)  # a worker's setting also changed the process default
        self.streams = int(streams)

    def _input(self, batch) -> torch.Tensor:
        if self.streams > 1 and not getattr(self._local, "one_core", False):
            torch.set_num_threads(1)
            self._local.one_core = True
        if isinstance(batch, np.ndarray):
            batch = torch.from_numpy(np.ascontiguousarray(batch))
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return batch.to(self.device, torch.float32).contiguous(memory_format=fmt)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.dtype])

    def _stats(self, norm_stats: NormStats | None) -> NormStats | None:
        if norm_stats is None:
            return None
        return [(torch.as_tensor(m).to(self.device), torch.as_tensor(v).to(self.device)) for m, v in norm_stats]

    @torch.no_grad()
    def run(self, batch, norm_stats: NormStats | None = None):
        x = self._input(batch)
        height, width = x.shape[-2:]
        if self.compiled:
            # The padding the network would add itself, added here: the compiled graph then only sees
            # multiples of 4 and is not compiled again for each remainder of the size modulo 4.
            x = F.pad(x, (0, padded_size(width) - width, 0, padded_size(height) - height), mode="replicate")
        with self._autocast():
            out = self._forward(x, norm_stats=self._stats(norm_stats), style=self._style(x))
        out = out[..., :height, :width].float().cpu().contiguous()
        return like(batch, out.numpy())

    @torch.no_grad()
    def norm_stats(self, batch) -> NormStats:
        x = self._input(batch)
        with self._autocast():
            stats = self.net.compute_norm_stats(x, style=self._style(x))
        return [(like(batch, m.float().cpu().numpy()), like(batch, v.float().cpu().numpy())) for m, v in stats]

    @torch.no_grad()
    def region_sums(self, batch, known: NormStats, region: tuple[int, int, int, int]
                    ) -> tuple[np.ndarray, np.ndarray, int]:
        """See ``fastnst.backends.Backend.region_sums``: the network stops at the input of norm ``len(known)``."""
        x = self._input(batch)
        with self._autocast():
            features = self.net.norm_input(x, self._stats(known), style=self._style(x))
        return region_moments(features.float().cpu().numpy(), region, padded_size(x.shape[-2]))

    def _style(self, x: torch.Tensor) -> torch.Tensor | None:
        """``style`` as (B, N) weights on the device (None for a single-style network)."""
        style = None if self.style is None else torch.as_tensor(np.asarray(self.style, np.float32))
        return style_weights(self.net.spec.num_styles, style, x.shape[0], self.device)
