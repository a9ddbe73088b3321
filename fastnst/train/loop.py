"""Training a style model: style image(s) + a folder of photos → a ``TransformerNet`` model file.

``fit(TrainConfig)`` is the one training loop; ``fastnst train`` only fills the
config. ``fit`` reads top to bottom: build the run (``TrainingRun``: devices,
data, networks, loss targets, optimiser, resume), then for every batch one
optimiser step and the hooks that watch it (progress and TensorBoard, the
caller's callback, the periodic checkpoint), then the model file.

What a step optimises (Johnson et al. 2016): the transformation network turns a
batch of photos (B, 3, S, S, 0–1) into stylized images; the frozen VGG loss
network scores them (clamped to 0–1 as saved, ``fastnst.losses.as_saved``, unless
``loss_on_raw_output``) with ``fastnst.losses.perceptual_losses`` against the
photo's own content activations (computed without gradients, by a VGG cut at the
deepest content layer) and the style images' Gram matrices (computed once, in
fp32). Adam updates only the transformation network (only the new styles' norm
rows when adding styles to a model with ``init``, unless ``init_trains="all"``).
With several styles each batch item draws one and is scored against that
style's Grams (``fastnst.train.styles``).

Robustness: a resumable checkpoint (model, optimiser, scheduler, grad scaler,
step, epoch position, RNG states, config) is written atomically every
``checkpoint_every`` steps, on SIGINT/SIGTERM and at the end; ``resume`` continues
exactly where it stopped (``EpochBatchSampler`` rebuilds the data order from the
seed and the epoch). A non-finite loss stops the run before it can poison the
weights, naming the step and the last good checkpoint. Everything the model file
needs from the style images (thumbnails) is read at the start.

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
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch

from fastnst.checkpoint import ModelInfo, load_training_state, read_info, save_model, save_training_state
from fastnst.device import describe_device, keep_freed_memory
from fastnst.errors import FastNSTError
from fastnst.files import probe_writable, remove_temporaries_of, show_path
from fastnst.images import encode_thumbnail
from fastnst.losses import (
    MOTION,
    LossSpec,
    as_saved,
    content_targets,
    perceptual_losses,
    random_motion,
    temporal_loss,
    warp,
)
from fastnst.models.transformer import TransformerNet, get_spec
from fastnst.models.vgg import VGGFeatures
from fastnst.pretrained import load_loss_network
from fastnst.records import dumps_record, loads_record
from fastnst.styles import pick_styles, style_names
from fastnst.train import distributed, rng
from fastnst.train.config import DEFAULT_EPOCHS, TrainConfig
from fastnst.train.data import EpochBatchSampler, PhotoDataset, find_images, make_loader, split_holdout, start_epoch
from fastnst.train.monitor import LOSSES, Monitor, load_samples
from fastnst.train.resume import check_resumable, resume_path, step_totals
from fastnst.train.styles import StyleTargets, training_network

log = logging.getLogger(__name__)

Hook = Callable[[int, dict[str, float]], None]


class TrainingInterrupted(FastNSTError):
    """SIGINT/SIGTERM stopped the run after a checkpoint was saved (the CLI exits with 130)."""


class TrainingDiverged(FastNSTError):
    """The loss became NaN or infinite; the weights were not updated with it."""


def fit(config: TrainConfig, callback: Hook | None = None) -> Path:
    """Train a style model as ``config`` says, write it to ``config.output`` and return that path.

    ``callback(step, metrics)`` runs on rank 0 after every optimiser step with the
    losses (``content``, ``style``, ``tv``, ``total``, averaged over ranks) and ``lr``.
    Raises ``TrainingInterrupted`` on SIGINT/SIGTERM (after saving a checkpoint)
    and ``TrainingDiverged`` on a non-finite loss.
    """
    run = TrainingRun(config)
    batches = run.batches()
    try:
        hooks = [run.monitor.after_step, *([callback] if callback else []), run.periodic_checkpoint]
        with distributed.StopRequests() as stop:
            for content in batches:
                metrics = run.train_step(content)
                if run.main:
                    for hook in hooks:
                        hook(run.step, metrics)
                run.stop_if_asked(stop)
        return run.finish()
    finally:
        batches.close()
        run.close()


def checkpoint_path(output: str | Path) -> Path:
    """Where the resumable checkpoint of a run writing ``output`` goes: ``MODEL.ckpt.pt`` beside it."""
    output = Path(output)
    return output.with_name(output.stem + ".ckpt.pt")


class TrainingRun:
    """Everything one run of ``fit`` holds, built in order by the constructor: data, networks, resume, watching.

    ``step``, ``epoch`` and ``batch_in_epoch`` are where the run is; each method
    is one part of the loop (``batches``, ``train_step``, ``periodic_checkpoint``,
    ``stop_if_asked``, ``finish``).
    """

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.monitor = None
        self.rank, self.world, self.device = distributed.start(config.device)
        self.main = self.rank == 0
        if self.device.type == "cpu":
            keep_freed_memory()
        self.ckpt_path = checkpoint_path(config.output)
        if self.main:
            _check_output_folder(Path(config.output))
        self.step = self.epoch = self.batch_in_epoch = 0
        self.last_good: Path | None = None
        self.seconds_before = 0.0  # training time of the runs this one resumes
        # The --init model's header, read now (its file may change before the end): the model file keeps its
        # training record, so every stage of a model trained in stages can be run again, and its thumbnails.
        init_info = read_info(config.init) if config.init else None
        self.init_record = init_info.config if init_info else None
        self._data()
        self._networks()
        self._resume()
        self._wrap()
        self.thumbnails = _thumbnails(config, init_info)  # now: the style images may be gone by the end of a run
        self.monitor = Monitor(self.total_steps, self.step, self.world * config.batch_size, config.log_every,
                               config.logdir, config.sample_every,
                               load_samples(self.sample_paths, config.image_size) if self.main else None,
                               self._stylize_samples, enabled=self.main)
        log.log(logging.INFO if self.main else logging.DEBUG, "training %s on %d photos (%d held out) on %s x%d: "
                "steps %d..%d, batch %d per process, %d batches per epoch; checkpoint %s", config.spec,
                len(self.dataset), len(self.sample_paths), self.device, self.world, self.step, self.total_steps,
                config.batch_size, self.sampler.batches_per_epoch, self.ckpt_path)
        self.model.train()
        self.loop_start = time.perf_counter()

    # -- set-up ------------------------------------------------------------------------------------

    def _data(self) -> None:
        config = self.config
        rng.seed_everything(config.seed)
        photos = find_images(config.data)
        if config.sample_images:
            train_photos, self.sample_paths = photos, [Path(p) for p in config.sample_images]
        else:
            train_photos, self.sample_paths = split_holdout(photos, config.holdout)
        self.dataset = PhotoDataset(train_photos, config.image_size, config.crop_size, config.seed)
        self.sampler = EpochBatchSampler(len(self.dataset), config.batch_size, config.seed, self.rank, self.world)
        if self.sampler.replacement and self.main:
            log.warning("only %d training photo(s) for a global batch of %d: drawing batches with replacement "
                        "(one batch per epoch); add photos for a model that generalises",
                        len(self.dataset), config.batch_size * self.world)
        self.loader = make_loader(self.dataset, self.sampler, config.workers, pin_memory=self.device.type == "cuda")
        self.total_steps = config.steps or (config.epochs or DEFAULT_EPOCHS) * self.sampler.batches_per_epoch
        self.step_totals = [[0, self.total_steps]]
        self.resume_changes: list = []  # [step, {option: value before}] for each resume that changed options

    def _networks(self) -> None:
        config, spec, device = self.config, self.config.loss, self.device
        self.model, self.names, first_new = training_network(get_spec(config.spec), style_names(
            config.style, config.style_names), config.init, config.keep_init_styles)
        self.model = self.model.to(device)
        self.vgg = load_loss_network(spec, device)
        self.content_vgg = _content_network(self.vgg, spec)
        # Grams of each style image, (1, C, C) per layer and style, fp32, once; the draw of a style per item.
        self.styles = StyleTargets(self.vgg, config, first_new, self.model.spec.num_styles, spec, device, self.rank)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        for net in (self.model, self.vgg, self.content_vgg):
            net.to(memory_format=self.memory_format)
        self.optimizer = torch.optim.Adam(self.styles.parameters(self.model, config.lr), lr=config.lr,
                                          fused=device.type in ("cpu", "cuda"))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_factor(config.lr_decay,
                                                                                      self.total_steps))
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
        self.autocast = (torch.autocast(device.type, dtype=torch.bfloat16 if config.amp == "bf16" else torch.float16)
                         if config.amp != "none" else nullcontext())
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def _resume(self) -> None:
        path = resume_path(self.config, self.ckpt_path)
        if path is None:
            return
        state = load_training_state(path)
        changed = check_resumable(state, self.config, path, self.model.spec)
        for name in ("model", "optimizer", "scheduler", "scaler"):
            getattr(self, name).load_state_dict(state[name])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        rng.set_rng_state(state["rng"])
        self.seconds_before = float(state.get("train_seconds", 0.0))
        self.step_totals = step_totals(state, self.step, self.total_steps, self.sampler.batches_per_epoch)
        self.resume_changes = json.loads(state.get("resume_changes", "[]")) + ([[self.step, changed]] if changed
                                                                                else [])
        if "init_record" in state:
            self.init_record = loads_record(state["init_record"])
        self.last_good = path
        if self.main:
            log.warning("resumed from %s at step %d (epoch %d, batch %d)", path, self.step, self.epoch,
                        self.batch_in_epoch)
        remove_temporaries_of(self.ckpt_path, Path(self.config.output))

    def _wrap(self) -> None:
        """The networks the steps call: DDP across ranks, ``torch.compile`` when asked."""
        train_model = self.model
        if self.world > 1:
            train_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.run_model, self.run_vgg, self.run_content_vgg = train_model, self.vgg, self.content_vgg
        if self.config.compile:
            self.run_model, self.run_vgg, self.run_content_vgg = (
                torch.compile(m) for m in (train_model, self.vgg, self.content_vgg))

    # -- the loop ----------------------------------------------------------------------------------

    def batches(self) -> Iterator[torch.Tensor]:
        """Content batches on the device from where the run stands to ``total_steps``; each epoch a fresh shuffle."""
        while self.step < self.total_steps:
            start_epoch(self.loader, self.epoch, self.batch_in_epoch)
            for content in self.loader:
                yield content.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
                if self.step >= self.total_steps:
                    return
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    def train_step(self, content: torch.Tensor) -> dict[str, float]:
        """One optimiser step on ``content``; the losses (averaged over ranks) and the learning rate."""
        spec = self.config.loss
        style, grams, item_weights = self.styles.for_step(self.step, content.shape[0])
        with self.autocast:
            stylized, temporal = self._stylize(content, style)
            targets = content_targets(self.run_content_vgg, content, spec)
            losses = perceptual_losses(self.run_vgg, stylized, targets, grams, spec, item_weights=item_weights)
            losses["temporal"] = temporal
            losses["total"] = losses["total"] + temporal
        # Every rank must agree before backward, or DDP's gradient all-reduce would hang.
        values = torch.stack([losses[name].detach().float() for name in LOSSES])
        non_finite = (~values.isfinite()).any()[None].float()
        summed = distributed.sum_over_ranks(torch.cat([values, non_finite]), self.world)
        if summed[-1] > 0:
            where = f"last good checkpoint: {self.last_good}" if self.last_good else "no checkpoint was saved yet"
            raise TrainingDiverged(f"the loss became non-finite at step {self.step + 1} ({where}); resume from it "
                                   "with a lower --lr or without --amp fp16")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["total"]).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        self.batch_in_epoch += 1
        return {**dict(zip(LOSSES, (summed[:-1] / self.world).tolist())), "lr": self.optimizer.param_groups[0]["lr"]}

    def _stylize(self, content: torch.Tensor, style: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The stylized batch and the weighted temporal term (0 without ``temporal_weight``).

        With the term, the batch and a copy moved by this step's random motions
        (``fastnst.losses.random_motion``, drawn from the seed and the step, so a
        resumed run draws the same) go through the network in one pass.
        """
        weight = self.config.temporal_weight
        if not weight:
            return self._output(content, style), content.new_zeros((), dtype=torch.float32)
        batch = content.shape[0]
        draws = rng.generator((self.config.seed * 1_000_033 + self.rank) * 10_000_079 + self.step)
        theta = random_motion(batch, draws).to(content.device)
        noise = MOTION["noise"] * torch.randn(content.shape, generator=draws)
        moved = (warp(content, theta, padding="reflection")[0] + noise.to(content.device)).clamp(0, 1)
        both = self._output(torch.cat([content, moved.to(content.dtype)]),
                            None if style is None else torch.cat([style, style]))
        stylized, stylized_moved = both[:batch], both[batch:]
        return stylized, weight * temporal_loss(stylized, stylized_moved, theta)

    def _output(self, content: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        """The network's output as the losses see it: clamped as saved (``as_saved``) unless the run asks for raw."""
        raw = self.run_model(content, style=style)
        return raw if self.config.loss_on_raw_output else as_saved(raw)

    def periodic_checkpoint(self, step: int, metrics: dict[str, float]) -> None:
        """The checkpoint hook: every ``checkpoint_every`` steps (rank 0). A checkpoint that cannot be written
        (a full disk) is a warning: the previous one stays, and training goes on."""
        if self.config.checkpoint_every and step % self.config.checkpoint_every == 0:
            try:
                self.last_good = self.checkpoint()
            except OSError as exc:
                log.warning("could not write the checkpoint at step %d (%s); %s", step, exc.strerror or exc,
                            f"the one of {self.last_good} is kept" if self.last_good else "none was saved yet")

    def stop_if_asked(self, stop: distributed.StopRequests) -> None:
        """After SIGINT/SIGTERM on any rank: checkpoint (rank 0) and raise ``TrainingInterrupted``."""
        if distributed.sum_over_ranks(torch.tensor([float(stop.signal is not None)]), self.world)[0] > 0:
            if self.main:
                self.checkpoint()
            distributed.barrier(self.world)
            raise TrainingInterrupted(f"stopped by {stop.name} after step {self.step}; checkpoint saved to "
                                      f"{self.ckpt_path}: continue with --resume {self.ckpt_path}")

    # -- saving ------------------------------------------------------------------------------------

    def checkpoint(self) -> Path:
        """Write the resumable state (tensors and primitives only) atomically beside the model."""
        return save_training_state(self.ckpt_path, {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "rng": rng.rng_state(),
            "config": json.dumps(asdict(self.config), default=str), "spec": self.model.spec.to_dict(),
            "train_seconds": self.train_seconds(), "init_record": dumps_record(self.init_record),
            "step_totals": json.dumps(self.step_totals), "resume_changes": json.dumps(self.resume_changes),
        })

    def train_seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.loop_start

    def finish(self) -> Path:
        """The last checkpoint (so ``--resume auto --steps MORE`` carries on) and the model file (rank 0)."""
        config = self.config
        if self.main:
            self.checkpoint()
            record = {"held_out": [str(p) for p in self.sample_paths], "steps_done": self.step,
                      "step_totals": self.step_totals, "resume_changes": self.resume_changes,
                      "train_seconds": round(self.train_seconds(), 3), "final_losses": self.monitor.last_means or None,
                      "init_record": self.init_record,
                      "hardware": describe_device(self.device) + (f" x{self.world} processes" if self.world > 1
                                                                  else "")}
            model, names, thumbnails = self._to_save()
            save_model(config.output, model, styles=names, config={**asdict(config), **record},
                       thumbnails=thumbnails)
            log.info("wrote %s after %d steps", config.output, self.step)
        distributed.barrier(self.world)
        return Path(config.output)

    def _to_save(self) -> tuple[TransformerNet, tuple[str, ...], tuple[str, ...]]:
        """The network, style names and thumbnails the model file gets: with ``init``, only the new styles unless
        ``keep_init_styles`` (one new style: a single-style file that loads alone)."""
        first = self.styles.first
        if self.config.init is None or self.config.keep_init_styles or first == 0:
            return self.model, self.names, self.thumbnails
        return pick_styles(self.model, self.names, self.thumbnails, range(first, self.model.spec.num_styles))

    def close(self) -> None:
        """Close the progress bar and TensorBoard, stop the loader's worker processes, leave the process group."""
        if self.monitor is not None:
            self.monitor.close()
        self.loader = None  # its persistent workers stop now, not when the interpreter exits
        distributed.stop()

    @torch.no_grad()
    def _stylize_samples(self, photos: torch.Tensor) -> torch.Tensor:
        with self.autocast:
            return self.model(photos.to(self.device), style=self.styles.for_samples(len(photos), self.device)
                              ).float().cpu()


# -- set-up helpers ------------------------------------------------------------------------------

def _check_output_folder(output: Path) -> None:
    """The model's folder must be writable now, not found unwritable at the first checkpoint hours later."""
    try:
        probe_writable(output.parent)
    except OSError as exc:
        raise FastNSTError(f"{show_path(output.parent)}: cannot write the model there ({exc.strerror or exc}); "
                           "choose another -o or fix the folder's permissions") from None


def _thumbnails(config: TrainConfig, init_info: ModelInfo | None) -> tuple[str, ...]:
    """One thumbnail per style of the model: the ``init`` model's own (if it has them), then the style images'."""
    old = ()
    if init_info is not None:
        old = init_info.thumbnails
        if not old:
            return ()
    return (*old, *(encode_thumbnail(path) for path in config.style))


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
