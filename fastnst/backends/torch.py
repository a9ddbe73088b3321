"""The PyTorch backend: runs a ``TransformerNet`` on CPU, CUDA or MPS."""

from __future__ import annotations

from pathlib import Path

import torch

from fastnst.checkpoint import ModelInfo, load_model
from fastnst.device import resolve_device
from fastnst.models.transformer import NormStats, TransformerNet


class TorchBackend:
    """Runs ``net`` on ``device`` without autograd; inputs and outputs are CPU float32 tensors.

    ``no_grad`` rather than ``inference_mode``: callers may modify the results in place.
    """

    name = "torch"

    def __init__(self, net: TransformerNet, device: str | torch.device = "auto", info: ModelInfo | None = None
                 ) -> None:
        self.device = resolve_device(device)
        self.net = net.to(self.device).eval()
        self.info = info or ModelInfo(spec=net.spec)

    @classmethod
    def from_file(cls, path: str | Path, *, device: str | torch.device = "auto") -> TorchBackend:
        """Load a fastnst ``.safetensors`` or pytorch/examples ``.pth`` model file."""
        net, info = load_model(path)
        return cls(net, device, info)

    @torch.no_grad()
    def run(self, batch: torch.Tensor, norm_stats: NormStats | None = None) -> torch.Tensor:
        stats = None if norm_stats is None else [(m.to(self.device), v.to(self.device)) for m, v in norm_stats]
        return self.net(batch.to(self.device, torch.float32), norm_stats=stats).float().cpu()

    @torch.no_grad()
    def norm_stats(self, batch: torch.Tensor) -> NormStats:
        stats = self.net.compute_norm_stats(batch.to(self.device, torch.float32))
        return [(m.float().cpu(), v.float().cpu()) for m, v in stats]
