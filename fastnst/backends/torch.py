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
  sizes share one compiled graph). It costs a compilation at the first batch.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.nn.functional as F

from fastnst.checkpoint import ModelInfo, load_model
from fastnst.device import keep_freed_memory, resolve_device
from fastnst.errors import ConfigError
from fastnst.models.transformer import NormStats, TransformerNet, fixed_norm, padded_size, style_weights
from fastnst.tiling import region_moments

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class TorchBackend:
    """Runs ``net`` on ``device`` without autograd; inputs and outputs are CPU float32 tensors (B, 3, H, W).

    ``no_grad`` rather than ``inference_mode``: callers may modify the results in place.
    ``style`` (multi-style models): the style weights (N,) every image is stylized
    with, set once before running (see ``fastnst.backends.Backend``); None is the first style.
    """

    name = "torch"
    style: torch.Tensor | None = None

    def __init__(self, net: TransformerNet, device: str | torch.device = "auto", info: ModelInfo | None = None, *,
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

    @classmethod
    def from_file(cls, path: str | Path, *, device: str | torch.device = "auto", dtype: str = "fp32",
                  channels_last: bool | None = None, compile: bool = False) -> TorchBackend:
        """Load a fastnst ``.safetensors`` or pytorch/examples ``.pth`` model file."""
        net, info = load_model(path)
        return cls(net, device, info, dtype=dtype, channels_last=channels_last, compile=compile)

    def _input(self, batch: torch.Tensor) -> torch.Tensor:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return batch.to(self.device, torch.float32).contiguous(memory_format=fmt)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.dtype])

    @torch.no_grad()
    def run(self, batch: torch.Tensor, norm_stats: NormStats | None = None) -> torch.Tensor:
        stats = None if norm_stats is None else [(m.to(self.device), v.to(self.device)) for m, v in norm_stats]
        x = self._input(batch)
        height, width = x.shape[-2:]
        if self.compiled:
            # The padding the network would add itself, added here: the compiled graph then only sees
            # multiples of 4 and is not compiled again for each remainder of the size modulo 4.
            x = F.pad(x, (0, padded_size(width) - width, 0, padded_size(height) - height), mode="replicate")
        with self._autocast():
            out = self._forward(x, norm_stats=stats, style=self._style(x))
        return out[..., :height, :width].float().cpu().contiguous()

    @torch.no_grad()
    def norm_stats(self, batch: torch.Tensor) -> NormStats:
        with self._autocast():
            x = self._input(batch)
            stats = self.net.compute_norm_stats(x, style=self._style(x))
        return [(m.float().cpu(), v.float().cpu()) for m, v in stats]

    @torch.no_grad()
    def region_sums(self, batch: torch.Tensor, known: NormStats, region: tuple[int, int, int, int]
                    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Per-channel sum and sum of squares (float64, (C,)) and count of the input of InstanceNorm ``len(known)``.

        The network runs on ``batch`` with ``known`` fixing the statistics of
        the InstanceNorms before it, and stops there. Only rows ``y0:y1`` and
        columns ``x0:x1`` of ``region`` (full-resolution pixels of the padded
        input, multiples of 4) are counted, mapped to that layer's resolution. This
        optional capability lets ``fastnst.tiling.exact_stats`` add up a large
        image's exact statistics tile by tile.
        """
        x = self._input(batch)
        height, width = x.shape[-2:]
        x = F.pad(x, (0, padded_size(width) - width, 0, padded_size(height) - height), mode="replicate")
        probe = _Probe([(m.to(self.device), v.to(self.device)) for m, v in known], region, x.shape[-2],
                       self._style(x))
        try:
            with self._autocast():
                for layer in (*self.net.encoder, *self.net.residual, *self.net.decoder):
                    x = layer(x, probe)
        except _Measured:
            s1, s2, count = probe.result
            return s1.cpu(), s2.cpu(), count
        raise ValueError(f"the network has {len(known)} InstanceNorms, no InstanceNorm number {len(known)}")

    def _style(self, x: torch.Tensor) -> torch.Tensor | None:
        """``style`` as (B, N) weights on the device (None for a single-style network)."""
        return style_weights(self.net.spec.num_styles, self.style, x.shape[0], self.device)


class _Measured(Exception):
    """Raised by ``_Probe`` to end a forward pass as soon as the wanted statistics are taken."""


class _Probe:
    """Stands in for ``fastnst.models.transformer._Norms``: fixed statistics up to one layer, then a measurement."""

    def __init__(self, known: NormStats, region: tuple[int, int, int, int], full_height: int,
                 style: torch.Tensor | None = None) -> None:
        self.known, self.region, self.full_height, self.index = known, region, full_height, 0
        self.style = style
        self.result: tuple[torch.Tensor, torch.Tensor, int] | None = None

    def __call__(self, norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.index < len(self.known):
            mean, var = self.known[self.index]
            self.index += 1
            return fixed_norm(norm, x, mean, var, self.style)
        self.result = region_moments(x, self.region, self.full_height)
        raise _Measured

