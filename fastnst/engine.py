"""Stylization: apply a trained model to images and files.

``Stylizer`` loads a model once and stylizes tensors or PIL images;
``stylize_files`` runs it over a list of inputs (files or folders), mirroring the
input tree under the output folder, writing each result atomically and reporting
every bad input without stopping.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from fastnst.backends.torch import TorchBackend
from fastnst.device import DEVICE_CHOICES
from fastnst.errors import ConfigError, FastNSTError, ImageError
from fastnst.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    is_image_file,
    open_image,
    resize_long_side,
    save_image,
    to_pil,
    to_tensor,
)
from fastnst.models.transformer import TransformerNet

log = logging.getLogger(__name__)

FORMATS = ("same", "jpg", "png", "webp")


@dataclass(frozen=True)
class StylizeConfig:
    """Options of ``fastnst stylize``."""

    model: str
    inputs: tuple[str, ...]
    output_dir: str
    device: str = "auto"
    format: str = "same"
    quality: int = 95
    max_size: int | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    overwrite: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(str(i) for i in self.inputs))
        if not self.inputs:
            raise ConfigError("no inputs given: name image files or folders to stylize")
        if self.format not in FORMATS:
            raise ConfigError(f"unknown format {self.format!r}; choose one of {', '.join(FORMATS)}")
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"--quality must be 1–100, got {self.quality}")
        if self.max_size is not None and self.max_size < 1:
            raise ConfigError(f"--max-size must be a positive number of pixels, got {self.max_size}")
        if self.device.split(":")[0] not in DEVICE_CHOICES:
            raise ConfigError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICE_CHOICES)}")


@dataclass
class StylizeReport:
    """What a run did with each input: written, skipped (output existed) or failed (with the reason)."""

    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


class Stylizer:
    """A model loaded once, ready to stylize many images.

    ``model`` is a path to a model file (fastnst ``.safetensors`` or a
    pytorch/examples ``.pth``) or a ``TransformerNet``.
    """

    def __init__(self, model: str | Path | TransformerNet, device: str | torch.device = "auto") -> None:
        if isinstance(model, TransformerNet):
            self.backend = TorchBackend(model, device)
        else:
            self.backend = TorchBackend.from_file(model, device=device)
        self.info = self.backend.info

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) or (3, H, W) in 0–1 → stylized, same shape, clamped to 0–1, on the input's device."""
        single = images.dim() == 3
        batch = images[None] if single else images
        out = self.backend.run(batch.cpu()).clamp_(0, 1).to(images.device)
        return out[0] if single else out

    def stylize_image(self, image: Image.Image) -> Image.Image:
        """Stylize one RGB PIL image; the result has exactly its size."""
        return to_pil(self(to_tensor(image)))


def collect_inputs(inputs: tuple[str, ...] | list[str]) -> list[tuple[Path, Path]]:
    """Expand files and folders into (source, path relative to the output folder) pairs.

    A folder contributes every image below it, recursively, under the folder's own
    name; a file goes to the top of the output folder. A name that does not exist
    is still returned so that the run reports it as failed.
    """
    pairs: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for source in sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p)):
                pairs.append((source, Path(path.resolve().name) / source.relative_to(path)))
        else:
            pairs.append((path, Path(path.name)))
    return pairs


def output_path(relative: Path, output_dir: Path, fmt: str) -> Path:
    """Where the result for ``relative`` goes, with the suffix ``fmt`` asks for."""
    suffix = relative.suffix.lower()
    if fmt != "same":
        suffix = "." + fmt
    elif suffix not in IMAGE_SUFFIXES or suffix == ".gif":
        suffix = ".png"  # no writer for GIF; PNG keeps the pixels exact
    return output_dir / relative.with_suffix(suffix)


def stylize_files(config: StylizeConfig, stylizer: Stylizer | None = None) -> StylizeReport:
    """Stylize every input of ``config`` into ``config.output_dir``; bad inputs are reported, not fatal."""
    stylizer = stylizer or Stylizer(config.model, config.device)
    output_dir = Path(config.output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FastNSTError(f"{output_dir}: cannot create the output folder ({exc.strerror})") from None
    report = StylizeReport()
    pairs = collect_inputs(config.inputs)
    for source, relative in tqdm(pairs, desc="stylize", unit="img", disable=not sys.stderr.isatty()):
        target = output_path(relative, output_dir, config.format)
        if target.exists() and not config.overwrite:
            report.skipped.append(target)
            continue
        try:
            image = resize_long_side(open_image(source, config.max_pixels), config.max_size)
            save_image(stylizer.stylize_image(image), target, quality=config.quality)
        except (ImageError, OSError) as exc:
            reason = exc.reason if isinstance(exc, ImageError) else f"cannot write {target} ({exc})"
            log.warning("%s: %s", source, reason)
            report.failed.append((str(source), reason))
            continue
        report.done.append(target)
    return report
