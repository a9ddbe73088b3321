"""Watching a training run: a progress bar (or log lines), TensorBoard scalars and sample grids.

Only rank 0 watches. With stderr on a terminal a tqdm bar shows the step, ETA
and losses; otherwise (nohup, CI) an INFO line is logged every ``log_every``
steps. With a ``logdir`` TensorBoard gets ``loss/content``, ``loss/style``,
``loss/tv``, ``loss/total``, ``lr`` and ``images_per_s`` (over the last
``log_every`` steps, data loading included) and every ``sample_every`` steps a
``samples`` image: the validation photos on top, their stylizations below.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from fastnst.errors import ImageError
from fastnst.train.data import load_photo

log = logging.getLogger(__name__)

LOSSES = ("content", "style", "tv", "temporal", "total")


def load_samples(paths: list[Path], size: int) -> torch.Tensor | None:
    """The validation photos as (N, 3, size, size) in 0–1; unreadable ones are warned about and left out."""
    images = []
    for path in paths:
        try:
            images.append(load_photo(path, size))
        except ImageError as exc:
            log.warning("skipping sample image %s", exc)
    return torch.stack(images) if images else None


def sample_grid(samples: torch.Tensor, styled: torch.Tensor) -> torch.Tensor:
    """(3, 2·S, N·S) in 0–1 from N photos and their N stylizations, each (N, 3, S, S)."""
    top = torch.cat(list(samples), dim=2)
    bottom = torch.cat(list(styled.float().clamp(0, 1)), dim=2)
    return torch.cat([top, bottom], dim=1)


class Monitor:
    """Progress, logs and TensorBoard for one run; ``enabled=False`` (ranks > 0) makes it silent."""

    def __init__(self, total_steps: int, first_step: int, images_per_step: int, log_every: int,
                 logdir: str | None = None, sample_every: int = 0, samples: torch.Tensor | None = None,
                 stylize: Callable[[torch.Tensor], torch.Tensor] | None = None, enabled: bool = True) -> None:
        self.total_steps, self.images_per_step, self.log_every = total_steps, images_per_step, log_every
        self.sample_every, self.samples, self.stylize, self.enabled = sample_every, samples, stylize, enabled
        self.bar = tqdm(total=total_steps, initial=first_step, unit="step", desc="train", dynamic_ncols=True,
                        disable=not (enabled and sys.stderr.isatty()))
        self.writer = None
        if enabled and logdir:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(logdir)
        self._sums = dict.fromkeys(LOSSES, 0.0)
        self._steps, self._since = 0, time.perf_counter()
        self.last_means: dict[str, float] = {}  # the losses of the last logged window, for the model file

    def after_step(self, step: int, metrics: dict[str, float]) -> None:
        """Record one finished step (``metrics``: the losses and ``lr``); log and sample when due."""
        if not self.enabled:
            return
        self.bar.update(1)
        for name in LOSSES:
            self._sums[name] += metrics[name]
        self._steps += 1
        last = step == self.total_steps
        if step % self.log_every == 0 or last:
            self._log(step, {name: total / self._steps for name, total in self._sums.items()}, metrics["lr"])
        if self.writer is not None and self.samples is not None and self.stylize is not None and self.sample_every \
                and (step % self.sample_every == 0 or last):
            self.writer.add_image("samples", sample_grid(self.samples, self.stylize(self.samples)), step)

    def _log(self, step: int, means: dict[str, float], lr: float) -> None:
        images_per_s = self.images_per_step * self._steps / (time.perf_counter() - self._since)
        self.last_means = dict(means)
        self._sums = dict.fromkeys(LOSSES, 0.0)
        self._steps, self._since = 0, time.perf_counter()
        self.bar.set_postfix(loss=f"{means['total']:.4g}", content=f"{means['content']:.3g}",
                             style=f"{means['style']:.3g}", refresh=False)
        if self.bar.disable:
            log.info("step %d/%d  content %.4g  style %.4g  tv %.4g  temporal %.4g  total %.4g  lr %.3g  %.2f img/s",
                     step, self.total_steps, means["content"], means["style"], means["tv"], means["temporal"],
                     means["total"], lr, images_per_s)
        if self.writer is not None:
            for name, value in means.items():
                self.writer.add_scalar(f"loss/{name}", value, step)
            self.writer.add_scalar("lr", lr, step)
            self.writer.add_scalar("images_per_s", images_per_s, step)

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
