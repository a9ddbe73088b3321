"""Training a style model: one style image + a folder of photos → a ``TransformerNet`` model file.

``fit(TrainConfig)`` is the one training loop; ``fastnst train`` only fills the
config. Read ``fit`` top to bottom: set-up (devices, data, networks, loss
targets, optimiser), resume, then the loop, then the model file.

What the loop optimises (Johnson et al. 2016): the transformation network turns
a batch of photos (B, 3, S, S, 0–1) into stylized images; the frozen VGG loss
network scores them with ``fastnst.losses.perceptual_losses`` against the
photo's own content activations (computed without gradients, by a VGG cut at the
deepest content layer) and the style image's Gram matrices (computed once, in
fp32). Adam updates only the transformation network.

Several styles (``fastnst.styles``): with N style images the network carries N
styles (conditional instance norm); each batch item draws one and is scored
against that style's Grams. ``init`` adds the style images to an existing model,
training only the new styles' norm rows.

Robustness: a resumable checkpoint (model, optimiser, scheduler, grad scaler,
step, epoch position, RNG states, config) is written atomically every
``checkpoint_every`` steps, on SIGINT/SIGTERM and at the end; ``resume`` continues
exactly where it stopped (``EpochBatchSampler`` rebuilds the data order from the
seed and the epoch). A non-finite loss stops the run before it can poison the
weights, naming the step and the last good checkpoint.

The model file carries the whole config and what the run measured: held-out
photos, steps done, the last logged window's mean losses, the training time
(summed over resumed runs) and the hardware.

Scale-out: started by ``torchrun --nproc_per_node N`` the same loop runs
DistributedDataParallel (gloo on CPU, NCCL on CUDA): every rank draws its own
shard of each epoch, ``batch_size`` is per rank, and rank 0 alone writes
checkpoints, logs and the model.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from fastnst import distributed, rng
from fastnst.checkpoint import load_training_state, read_info, save_model, save_training_state
from fastnst.data import EpochBatchSampler, PhotoDataset, find_images, make_loader, split_holdout, start_epoch
from fastnst.device import DEVICE_CHOICES, describe_device, keep_freed_memory
from fastnst.errors import ConfigError, FastNSTError, ModelFileError
from fastnst.files import TEMP_MARKER
from fastnst.images import encode_thumbnail
from fastnst.losses import LossSpec, content_targets, perceptual_losses
from fastnst.models.transformer import TransformerSpec, get_spec
from fastnst.models.vgg import VGGFeatures
from fastnst.monitor import LOSSES, Monitor, load_samples
from fastnst.pretrained import load_loss_network
from fastnst.styles import StyleTargets, style_names, training_network

log = logging.getLogger(__name__)

AMP_CHOICES = ("none", "bf16", "fp16")
LR_DECAYS = ("none", "linear", "cosine")
DEFAULT_EPOCHS = 2  # pytorch/examples' default: two passes over COCO (~40k steps of 4)

# Options that may change when a run is resumed without making it a different run.
RESUMABLE_CHANGES = {"resume", "steps", "epochs", "checkpoint_every", "logdir", "log_every", "sample_every",
                     "sample_images", "workers", "device", "compile"}


@dataclass(frozen=True)
class TrainConfig:
    """Options of ``fastnst train``; saved whole (``asdict``) in the model file and every checkpoint.

    ``style`` holds the style images, one per style the model carries;
    ``style_names`` names them (default: the file stems) and ``style_weights``
    gives each its style-loss weight (default ``loss.style_weight`` for all).
    ``init`` is a model file the styles are added to (only their norm rows
    train). ``crop_size`` trains on random squares of the photos scaled to
    ``image_size`` (centre squares without it). ``steps`` and ``epochs`` are
    exclusive; with neither, training runs ``DEFAULT_EPOCHS`` epochs. ``batch_size`` is per
    process under torchrun. ``resume`` is a checkpoint path or ``"auto"`` (the
    checkpoint beside ``output`` if there is one, else a fresh start).
    """

    style: tuple[str, ...]
    data: str
    output: str
    spec: str = "johnson"
    loss: LossSpec = field(default_factory=LossSpec)
    image_size: int = 256
    crop_size: int | None = None
    style_size: int | None = None
    batch_size: int = 4
    lr: float = 1e-3
    lr_decay: str = "none"
    steps: int | None = None
    epochs: int | None = None
    seed: int = 42
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"
    workers: int = 2
    logdir: str | None = None
    log_every: int = 10
    sample_every: int = 500
    sample_images: tuple[str, ...] = ()
    holdout: int = 4
    checkpoint_every: int = 500
    resume: str | None = None
    style_names: tuple[str, ...] = ()
    style_weights: tuple[float, ...] = ()
    init: str | None = None

    def __post_init__(self) -> None:
        style = (self.style,) if isinstance(self.style, (str, Path)) else tuple(self.style)
        object.__setattr__(self, "style", tuple(str(s) for s in style))
        object.__setattr__(self, "sample_images", tuple(str(s) for s in self.sample_images))
        object.__setattr__(self, "data", str(self.data))
        object.__setattr__(self, "output", str(self.output))
        if isinstance(self.loss, dict):
            object.__setattr__(self, "loss", LossSpec(**self.loss))
        object.__setattr__(self, "style_names", tuple(str(s) for s in self.style_names))
        object.__setattr__(self, "style_weights", tuple(float(w) for w in self.style_weights))
        if not self.style:
            raise ConfigError("give at least one --style image")
        style_names(self.style, self.style_names)
        if self.style_weights and (len(self.style_weights) != len(self.style) or min(self.style_weights) < 0):
            raise ConfigError(f"--style-weight: give one weight >= 0, or one per --style image ({len(self.style)}), "
                              f"got {list(self.style_weights)}")
        if not self.output.endswith(".safetensors"):
            raise ConfigError(f"-o {self.output}: the model file must end in .safetensors")
        get_spec(self.spec)
        for name, value in (("batch_size", self.batch_size), ("log_every", self.log_every)):
            if value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if self.image_size < 16:
            raise ConfigError(f"--image-size must be at least 16 pixels, got {self.image_size}")
        if self.crop_size is not None and not 16 <= self.crop_size <= self.image_size:
            raise ConfigError(f"--crop-size must be between 16 and --image-size ({self.image_size}), "
                              f"got {self.crop_size}")
        if self.style_size is not None and self.style_size < 16:
            raise ConfigError(f"--style-size must be at least 16 pixels, got {self.style_size}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ConfigError(f"--lr must be a positive number, got {self.lr}")
        if self.steps is not None and self.epochs is not None:
            raise ConfigError("give --steps or --epochs, not both")
        for name in ("steps", "epochs"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
        for name in ("workers", "sample_every", "checkpoint_every", "holdout"):
            value = getattr(self, name)
            if value < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0 (0 turns it off), got {value}")
        if self.amp not in AMP_CHOICES:
            raise ConfigError(f"unknown --amp {self.amp!r}; choose one of {', '.join(AMP_CHOICES)}")
        if self.lr_decay not in LR_DECAYS:
            raise ConfigError(f"unknown --lr-decay {self.lr_decay!r}; choose one of {', '.join(LR_DECAYS)}")
        if self.device.split(":")[0] not in DEVICE_CHOICES:
            raise ConfigError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICE_CHOICES)}")


class TrainingInterrupted(FastNSTError):
    """SIGINT/SIGTERM stopped the run after a checkpoint was saved (the CLI exits with 130)."""


class TrainingDiverged(FastNSTError):
    """The loss became NaN or infinite; the weights were not updated with it."""


def _thumbnails(config: TrainConfig) -> tuple[str, ...]:
    """One thumbnail per style of the model: the ``init`` model's own (if it has them), then the style images'."""
    old = ()
    if config.init is not None:
        old = read_info(config.init).thumbnails
        if not old:
            return ()
    return (*old, *(encode_thumbnail(path) for path in config.style))


def checkpoint_path(output: str | Path) -> Path:
    """Where the resumable checkpoint of a run writing ``output`` goes: ``MODEL.ckpt.pt`` beside it."""
    output = Path(output)
    return output.with_name(output.stem + ".ckpt.pt")


def fit(config: TrainConfig, callback: Callable[[int, dict[str, float]], None] | None = None) -> Path:
    """Train a style model as ``config`` says, write it to ``config.output`` and return that path.

    ``callback(step, metrics)`` runs on rank 0 after every optimiser step with the
    losses (``content``, ``style``, ``tv``, ``total``, averaged over ranks) and ``lr``.
    Raises ``TrainingInterrupted`` on SIGINT/SIGTERM (after saving a checkpoint)
    and ``TrainingDiverged`` on a non-finite loss.
    """
    rank, world, device = distributed.start(config.device)
    main = rank == 0
    if device.type == "cpu":
        keep_freed_memory()
    monitor = None
    try:
        # ---- data ---------------------------------------------------------------------------
        rng.seed_everything(config.seed)
        photos = find_images(config.data)
        if config.sample_images:
            train_photos, sample_paths = photos, [Path(p) for p in config.sample_images]
        else:
            train_photos, sample_paths = split_holdout(photos, config.holdout)
        dataset = PhotoDataset(train_photos, config.image_size, config.crop_size, config.seed)
        sampler = EpochBatchSampler(len(dataset), config.batch_size, config.seed, rank, world)
        if sampler.replacement and main:
            log.warning("only %d training photo(s) for a global batch of %d: drawing batches with replacement "
                        "(one batch per epoch); add photos for a model that generalises",
                        len(dataset), config.batch_size * world)
        loader = make_loader(dataset, sampler, config.workers, pin_memory=device.type == "cuda")
        total_steps = config.steps or (config.epochs or DEFAULT_EPOCHS) * sampler.batches_per_epoch
        ckpt_path = checkpoint_path(config.output)
        resume_from = _resume_path(config, ckpt_path)
        state = load_training_state(resume_from) if resume_from is not None else None

        # ---- networks, loss targets, optimiser ------------------------------------------------
        spec = config.loss
        model, names, first_new = training_network(get_spec(config.spec), style_names(config.style,
                                                                                     config.style_names), config.init)
        model = model.to(device)
        vgg = load_loss_network(spec, device)
        content_vgg = _content_network(vgg, spec)
        # Grams of each style image, (1, C, C) per layer and style, fp32, once; the draw of a style per item.
        styles = StyleTargets(vgg, config, first_new, model.spec.num_styles, spec, device, rank)
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        for net in (model, vgg, content_vgg):
            net.to(memory_format=memory_format)
        optimizer = torch.optim.Adam(styles.parameters(model), lr=config.lr, fused=device.type in ("cpu", "cuda"))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config.lr_decay, total_steps))
        scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
        autocast = (torch.autocast(device.type, dtype=torch.bfloat16 if config.amp == "bf16" else torch.float16)
                    if config.amp != "none" else nullcontext())
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        # ---- resume ---------------------------------------------------------------------------
        step = epoch = batch_in_epoch = 0
        last_good = None
        seconds_before = 0.0  # training time of the runs this one resumes
        if state is not None:
            _check_resumable(state, config, resume_from, model.spec)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
            rng.set_rng_state(state["rng"])
            seconds_before = float(state.get("train_seconds", 0.0))
            last_good = resume_from
            log.info("resumed from %s at step %d (epoch %d, batch %d)", resume_from, step, epoch, batch_in_epoch)
            _remove_stale_temporaries(ckpt_path, Path(config.output))
            del state

        train_model = model
        if world > 1:
            train_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        run_model, run_vgg, run_content_vgg = train_model, vgg, content_vgg
        if config.compile:
            run_model, run_vgg, run_content_vgg = (torch.compile(m) for m in (train_model, vgg, content_vgg))

        def save_checkpoint() -> Path:
            return save_training_state(ckpt_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "rng": rng.rng_state(),
                "config": json.dumps(asdict(config), default=str), "spec": model.spec.to_dict(),
                "train_seconds": train_seconds(),
            })

        def train_seconds() -> float:
            return seconds_before + time.perf_counter() - loop_start

        @torch.no_grad()
        def stylize_samples(photos: torch.Tensor) -> torch.Tensor:
            with autocast:
                return model(photos.to(device), style=styles.for_samples(len(photos), device)).float().cpu()

        # ---- watching -------------------------------------------------------------------------
        monitor = Monitor(total_steps, step, world * config.batch_size, config.log_every, config.logdir,
                          config.sample_every, load_samples(sample_paths, config.image_size) if main else None,
                          stylize_samples, enabled=main)
        log.log(logging.INFO if main else logging.DEBUG, "training %s on %d photos (%d held out) on %s x%d: steps "
                "%d..%d, batch %d per process, %d batches per epoch; checkpoint %s", config.spec, len(dataset),
                len(sample_paths), device, world, step, total_steps, config.batch_size, sampler.batches_per_epoch,
                ckpt_path)

        # ---- the loop -------------------------------------------------------------------------
        model.train()
        loop_start = time.perf_counter()
        with distributed.StopRequests() as stop:
            while step < total_steps:
                start_epoch(loader, epoch, batch_in_epoch)
                for content in loader:
                    content = content.to(device, non_blocking=True).contiguous(memory_format=memory_format)
                    with autocast:
                        if styles.multi:  # each item its own style: one-hot weights, Grams and loss weight
                            style, grams, weights = styles.draw(step, content.shape[0])
                            stylized = run_model(content, style=style)
                            targets = content_targets(run_content_vgg, content, spec)
                            losses = styles.losses(run_vgg, stylized, targets, grams, weights)
                        else:
                            stylized = run_model(content)
                            targets = content_targets(run_content_vgg, content, spec)
                            losses = perceptual_losses(run_vgg, stylized, targets, styles.grams, spec)

                    # Every rank must agree before backward, or DDP's gradient all-reduce would hang.
                    values = torch.stack([losses[name].detach().float() for name in LOSSES])
                    non_finite = (~values.isfinite()).any()[None].float()
                    summed = distributed.sum_over_ranks(torch.cat([values, non_finite]), world)
                    if summed[-1] > 0:
                        where = f"last good checkpoint: {last_good}" if last_good else "no checkpoint was saved yet"
                        raise TrainingDiverged(f"the loss became non-finite at step {step + 1} ({where}); resume "
                                               "from it with a lower --lr or without --amp fp16")

                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(losses["total"]).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    step += 1
                    batch_in_epoch += 1

                    if main:
                        metrics = dict(zip(LOSSES, (summed[:-1] / world).tolist()))
                        metrics["lr"] = optimizer.param_groups[0]["lr"]
                        monitor.after_step(step, metrics)
                        if callback is not None:
                            callback(step, metrics)
                        if config.checkpoint_every and step % config.checkpoint_every == 0:
                            last_good = save_checkpoint()
                    if distributed.sum_over_ranks(torch.tensor([float(stop.signal is not None)]), world)[0] > 0:
                        if main:
                            save_checkpoint()
                        distributed.barrier(world)
                        raise TrainingInterrupted(f"stopped by {stop.name} after step {step}; checkpoint saved to "
                                                  f"{ckpt_path}: continue with --resume {ckpt_path}")
                    if step >= total_steps:
                        break
                else:  # the epoch ran out: the next one is a fresh shuffle
                    epoch, batch_in_epoch = epoch + 1, 0

        # ---- the model file ---------------------------------------------------------------------
        if main:
            save_checkpoint()  # lets `--resume auto --steps MORE` carry on from here
            record = {"held_out": [str(p) for p in sample_paths], "steps_done": step,
                      "train_seconds": round(train_seconds(), 3), "final_losses": monitor.last_means or None,
                      "hardware": describe_device(device) + (f" x{world} processes" if world > 1 else "")}
            save_model(config.output, model, styles=names, config={**asdict(config), **record},
                       thumbnails=_thumbnails(config))
            log.info("wrote %s after %d steps", config.output, step)
        distributed.barrier(world)
        return Path(config.output)
    finally:
        if monitor is not None:
            monitor.close()
        distributed.stop()


# -- set-up helpers ------------------------------------------------------------------------------

def _content_network(vgg: VGGFeatures, spec: LossSpec) -> VGGFeatures:
    """The loss network cut after the deepest content layer, for the no-gradient content pass.

    The content targets need only relu2_2 (by default), a third of VGG16-to-relu4_3's
    cost; running the full network for them would waste that.
    """
    net = VGGFeatures(vgg.arch, list(spec.content_layers), vgg.flavour)
    wanted = net.state_dict()
    net.load_state_dict({key: value for key, value in vgg.state_dict().items() if key in wanted})
    return net.to(vgg.mean.device)


def _lr_factor(decay: str, total_steps: int) -> Callable[[int], float]:
    """Learning-rate multiplier per step: constant, or a linear or cosine decay to zero at the last step."""
    def factor(step: int) -> float:
        progress = min(step / max(total_steps, 1), 1.0)
        if decay == "linear":
            return 1.0 - progress
        if decay == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0
    return factor


def _resume_path(config: TrainConfig, ckpt_path: Path) -> Path | None:
    if config.resume is None:
        return None
    if config.resume == "auto":
        if ckpt_path.is_file():
            return ckpt_path
        log.info("--resume auto: no checkpoint at %s, starting from scratch", ckpt_path)
        return None
    return Path(config.resume)


def _check_resumable(state: dict, config: TrainConfig, path: Path, spec: TransformerSpec) -> None:
    """Refuse a checkpoint of another network; warn about options that changed since it was written."""
    if state.get("spec") != spec.to_dict():
        raise ModelFileError(path, f"holds a network of spec {state.get('spec')}, this run trains {spec.to_dict()} "
                                   f"(--spec {config.spec}, {spec.num_styles} style(s)); use the same --spec and "
                                   "styles or another output")
    saved = json.loads(state.get("config", "{}"))
    now = json.loads(json.dumps(asdict(config), default=str))
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k])
    if changed:
        log.warning("resuming %s with changed option(s) %s: the run will not match an uninterrupted one",
                    path, ", ".join(changed))


def _remove_stale_temporaries(*targets: Path) -> None:
    """Delete half-written files a killed run left beside the checkpoint and the model."""
    for target in targets:
        for tmp in target.parent.glob(f"{TEMP_MARKER}{target.stem}-*{target.suffix}"):
            tmp.unlink(missing_ok=True)
