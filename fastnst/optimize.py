"""Optimisation-based stylisation (Gatys et al. 2016): optimise an image's pixels against the perceptual losses.

The quality reference for the fast networks, and the quick way to preview a style
and its loss weights before training. The losses are the training ones
(``fastnst.losses.perceptual_losses`` on ``fastnst.pretrained.load_loss_network``),
the targets are built as ``fastnst.score`` builds them, so ``fastnst score`` on the
result reproduces the final loss reported here.

Choices, and why:

* **Iterations** count function evaluations: one iteration is one VGG forward
  and backward pass, the unit of cost, for L-BFGS and Adam alike, so a run of
  N iterations costs N passes whatever the optimizer. L-BFGS uses PyTorch's
  strong-Wolfe line search: without it the first curvature-scaled steps overshoot
  (the loss jumps a hundredfold before recovering); with it the loss falls
  monotonically and an L-BFGS step costs about 1.1–1.2 evaluations (the counts
  are reported per stage as ``evaluations`` and ``lbfgs_steps``). Gatys et al.
  ran L-BFGS without line search, where steps and evaluations coincide.
* **Pixel range.** Pixels are optimised directly and projected onto 0–1 (clamped)
  before every evaluation; gradient components that would push a pixel already
  at 0 or 1 further out are zeroed, so L-BFGS's curvature pairs describe steps
  that can actually be taken. A sigmoid/tanh reparametrisation would flatten the
  gradient of saturated pixels (a white sky would hardly move) and change the
  problem; with projection the loss minimised is exactly the loss of the saved
  image, which is what ``score`` measures.
* **The result** is the lowest-loss image evaluated (for L-BFGS that is its
  last accepted step; Adam's loss is not monotone).
* **Multi-scale** (``scales`` = N): stage k of N works at 1/2^(N-1-k) of the final
  size; each stage starts from the previous result upsampled (bilinear) and
  gets an equal share of ``iterations`` (the last stage takes the remainder),
  so ``iterations`` stays the total count while coarse iterations cost
  1/4^(N-1-k) as much. The style image is resized with the stage (its long side
  is ``style_size`` scaled by the same factor), so every stage sees the style's
  texture at the same scale relative to the image.
* **History.** One entry per evaluation (``iteration`` 1, 2, ... counted over all
  stages) with the losses of the lowest-loss image its stage has evaluated so
  far, at that stage's size; a stage's first evaluation is its start image.
  Losses are those of the optimised image, before ``preserve_color`` (a
  post-processing step, as in the stylization engine).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from fastnst.color import preserve_color
from fastnst.device import DEVICE_CHOICES, resolve_device
from fastnst.errors import ConfigError
from fastnst.files import atomic_path
from fastnst.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, resize_to, save_image, scaled_size, to_tensor
from fastnst.losses import LossSpec, check_image_size, content_targets, perceptual_losses
from fastnst.score import blended_grams, content_batch, parse_blend, read_image

log = logging.getLogger(__name__)

OPTIMIZERS = ("lbfgs", "adam")
# Default step sizes: L-BFGS scales its own steps (1 = PyTorch's default); Adam moves each
# pixel by about lr per iteration at first (0.05 ≈ 13 grey levels). On amber x mosaic at 128 px
# (Caffe VGG19), Adam with 0.01 / 0.02 / 0.05 reached 7.1e5 / 4.2e5 / 2.8e5 after 60 evaluations
# (L-BFGS: 1.7e5); 0.1 was only 3% better than 0.05 after 150 and noisier (higher TV).
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.05}


@dataclass(frozen=True)
class OptimizeConfig:
    """Options of ``fastnst optimize`` (see the module docstring for what each choice means).

    ``init`` is ``"content"``, ``"noise"`` (uniform 0–1, ``seed``) or an image path,
    resized to the first stage's size. ``size`` is the output's long side; the
    content photo is resized to it, up or down. ``style_size`` defaults to
    ``size``. ``history`` (the JSON of losses) defaults to ``output`` with the
    suffix ``.json``. ``save_every`` = N > 0 also writes ``<output stem>-<iteration>``
    images every N iterations.
    """

    content: str
    styles: tuple[str, ...]
    output: str
    style_blend: tuple[float, ...] | str | None = None
    loss: LossSpec = field(default_factory=LossSpec)
    optimizer: str = "lbfgs"
    iterations: int = 300
    lr: float | None = None
    lbfgs_history: int = 50
    init: str = "content"
    seed: int = 0
    size: int = 512
    style_size: int | None = None
    preserve_color: bool = False
    scales: int = 1
    save_every: int = 0
    history: str | None = None
    device: str = "auto"
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        object.__setattr__(self, "styles", tuple(str(s) for s in self.styles))
        if not self.styles:
            raise ConfigError("no style image: give at least one (STYLE or --style FILE ...)")
        object.__setattr__(self, "style_blend", parse_blend(self.style_blend, len(self.styles)))
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.lr is None:
            object.__setattr__(self, "lr", DEFAULT_LR[self.optimizer])
        if not self.lr > 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        for name in ("iterations", "size", "scales", "lbfgs_history"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        if self.iterations < self.scales:
            raise ConfigError(f"--iterations {self.iterations} is less than --scales {self.scales}: every scale "
                              "needs at least one iteration")
        if self.style_size is not None and self.style_size < 1:
            raise ConfigError(f"--style-size must be a positive number of pixels, got {self.style_size}")
        if self.save_every < 0:
            raise ConfigError(f"--save-every must be >= 0 (0: no intermediate images), got {self.save_every}")
        suffix = Path(self.output).suffix.lower()
        if suffix not in IMAGE_SUFFIXES or suffix == ".gif":
            raise ConfigError(f"{self.output}: cannot save as {suffix or '(no suffix)'}; use .png, .jpg, .webp, "
                              ".tif or .bmp")
        if self.device.split(":")[0] not in DEVICE_CHOICES:
            raise ConfigError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICE_CHOICES)}")

    @property
    def history_path(self) -> Path:
        return Path(self.history) if self.history else Path(self.output).with_suffix(".json")

    def stage_iterations(self) -> list[int]:
        """Iterations per stage, coarsest first: equal shares, the remainder to the full-size stage."""
        share = self.iterations // self.scales
        return [share] * (self.scales - 1) + [self.iterations - share * (self.scales - 1)]


@dataclass
class OptimizeResult:
    """What a run produced: the final image (1, 3, H, W, 0–1, after ``preserve_color``), the loss
    history (see the module docstring), per stage its size and evaluation (and L-BFGS step)
    counts, the files written and the wall time in seconds."""

    image: torch.Tensor
    history: list[dict]
    stages: list[dict]
    output: Path
    history_path: Path
    intermediates: list[Path]
    seconds: float

    @property
    def final(self) -> dict:
        """Losses of the final optimised image (the last history entry)."""
        return self.history[-1]


def _losses(vgg, image, content, grams, spec) -> dict[str, float]:
    """Evaluate ``perceptual_losses`` and back-propagate the total into ``image.grad``."""
    with torch.enable_grad():
        losses = perceptual_losses(vgg, image, content, grams, spec)
        losses["total"].backward()
    return {name: value.item() for name, value in losses.items()}


def _initial_image(config: OptimizeConfig, content: torch.Tensor, size: tuple[int, int],
                   img: Image.Image | None) -> torch.Tensor:
    """The starting image at ``size`` = (width, height): the content, noise or ``img`` (the ``--init`` file)."""
    if config.init == "content":
        return content.clone()
    if config.init == "noise":
        generator = torch.Generator().manual_seed(config.seed)
        return torch.rand(content.shape, generator=generator).to(content.device)
    if abs(img.width / img.height - size[0] / size[1]) > 0.02 * size[0] / size[1]:
        log.warning("%s: %dx%d has another aspect ratio than the output %dx%d; it is stretched",
                    config.init, img.width, img.height, *size)
    return to_tensor(resize_to(img, size))[None].to(content.device)


def _stage_sizes(config: OptimizeConfig, content_size: tuple[int, int]) -> list[tuple[int, int]]:
    final = scaled_size(*content_size, config.size)
    return [scaled_size(*final, max(1, round(config.size / 2 ** (config.scales - 1 - k))))
            for k in range(config.scales)]


def optimize(config: OptimizeConfig, progress: Callable[[dict], None] | None = None) -> OptimizeResult:
    """Stylise ``config.content`` by pixel optimisation; write the image and the loss-history JSON atomically.

    ``progress``, if given, is called with each new history entry. Raises
    ``ImageError`` for unreadable inputs, ``WeightsError`` when the VGG weights
    cannot be loaded and ``ConfigError`` when a stage is too small for the loss layers.
    """
    from fastnst.pretrained import load_loss_network

    start = time.perf_counter()
    device = resolve_device(config.device)
    spec = config.loss
    content_img = read_image(config.content, config.max_pixels, "content")
    style_imgs = [read_image(path, config.max_pixels, "style") for path in config.styles]
    init_img = None if config.init in ("content", "noise") else read_image(config.init, config.max_pixels, "--init")
    sizes = _stage_sizes(config, content_img.size)
    problem = check_image_size(*sizes[0], spec)
    if problem:
        raise ConfigError(f"the first of {config.scales} scales is {problem}: use fewer --scales or a larger --size")
    vgg = load_loss_network(spec, device)
    style_side = config.style_size or config.size

    history: list[dict] = []
    intermediates: list[Path] = []
    stages: list[dict] = []
    image: torch.Tensor | None = None
    bar = tqdm(total=config.iterations, desc="optimize", unit="it", disable=not sys.stderr.isatty())
    try:
        for stage, (size, steps) in enumerate(zip(sizes, config.stage_iterations())):
            content = content_batch(content_img, size).to(device)
            targets = content_targets(vgg, content, spec)
            side = max(1, round(style_side * max(size) / max(sizes[-1])))
            grams = blended_grams(vgg, style_imgs, config.style_blend, side, spec, device)
            if image is None:
                image = _initial_image(config, content, size, init_img)
            else:
                image = F.interpolate(image, size=(size[1], size[0]), mode="bilinear", align_corners=False)

            def evaluate(x: torch.Tensor, targets=targets, grams=grams) -> dict[str, float]:
                return _losses(vgg, x, targets, grams, spec)

            def on_eval(best: dict[str, float], best_image: torch.Tensor, stage=stage, size=size, content=content
                        ) -> None:
                entry = {"iteration": len(history) + 1, "stage": stage, "width": size[0], "height": size[1], **best}
                history.append(entry)
                if progress is not None:
                    progress(entry)
                bar.update(1)
                bar.set_postfix(total=f"{best['total']:.4g}", content=f"{best['content']:.3g}",
                                style=f"{best['style']:.3g}", tv=f"{best['tv']:.3g}", refresh=False)
                done = entry["iteration"]
                if config.save_every and done % config.save_every == 0 and done < config.iterations:
                    path = _intermediate_path(config, done)
                    save_image(_finish(config, content, best_image), path)
                    intermediates.append(path)

            image, info = _run_stage(config, image, steps, evaluate, on_eval)
            stages.append({"stage": stage, "width": size[0], "height": size[1], "style_long_side": side, **info})
            if info["evaluations"] < steps:
                log.info("stage %d stopped after %d of %d evaluations: no further progress", stage,
                         info["evaluations"], steps)
    finally:
        bar.close()

    final = _finish(config, content, image)
    output = save_image(final, config.output)
    seconds = time.perf_counter() - start
    report = {"config": asdict(config), "device": str(device), "seconds": seconds, "output": str(output),
              "final": history[-1], "stages": stages, "history": history}
    with atomic_path(config.history_path) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")
    return OptimizeResult(final.cpu(), history, stages, output, config.history_path, intermediates, seconds)


def _run_stage(config: OptimizeConfig, start: torch.Tensor, steps: int,
               evaluate: Callable[[torch.Tensor], dict[str, float]],
               on_eval: Callable[[dict[str, float], torch.Tensor], None]) -> tuple[torch.Tensor, dict]:
    """Optimise from ``start`` (1, 3, H, W) with at most ``steps`` evaluations; return the best image and counts.

    Every evaluation first projects the pixels onto 0–1, then computes the losses
    and gradient; gradient components that push a pixel already at 0 or 1 further
    out are zeroed, so L-BFGS's curvature pairs describe steps that can actually
    be taken. ``on_eval`` gets the lowest losses so far and that image after
    each evaluation.
    """
    # contiguous: L-BFGS views the gradient flat, and to_tensor gives a permuted layout.
    image = start.detach().clamp(0, 1).contiguous().requires_grad_(True)
    best_image = image.detach().clone()
    best: dict[str, float] = {}
    count = 0
    if config.optimizer == "lbfgs":
        opt: torch.optim.Optimizer = torch.optim.LBFGS(
            [image], lr=config.lr, max_iter=steps, max_eval=steps, history_size=config.lbfgs_history,
            tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe")
    else:
        opt = torch.optim.Adam([image], lr=config.lr)

    def closure() -> torch.Tensor:
        nonlocal best, count
        opt.zero_grad()
        with torch.no_grad():
            image.clamp_(0, 1)
        losses = evaluate(image)
        with torch.no_grad():
            grad = image.grad
            grad.masked_fill_(((image <= 0) & (grad > 0)) | ((image >= 1) & (grad < 0)), 0.0)
        count += 1
        if not best or losses["total"] < best["total"]:
            best = losses
            best_image.copy_(image.detach())
        on_eval(best, best_image)
        return torch.tensor(losses["total"])

    if config.optimizer == "lbfgs":
        opt.step(closure)
        info = {"evaluations": count, "lbfgs_steps": int(opt.state[image].get("n_iter", 0))}
    else:
        for _ in range(steps):
            closure()
            opt.step()
        info = {"evaluations": count}
    return best_image, info


def _finish(config: OptimizeConfig, content: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """The image as written: the optimised pixels, with the photo's colours when ``preserve_color``."""
    if config.preserve_color:
        content = F.interpolate(content, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return preserve_color(content, image)
    return image


def _intermediate_path(config: OptimizeConfig, iteration: int) -> Path:
    out = Path(config.output)
    return out.with_name(f"{out.stem}-{iteration:05d}{out.suffix}")
