"""``TrainConfig``: every option of ``fastnst train``, validated once, saved whole in the model file."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from fastnst.device import check_device
from fastnst.errors import ConfigError
from fastnst.losses import LossSpec
from fastnst.models.spec import get_spec
from fastnst.styles import style_names

AMP_CHOICES = ("none", "bf16", "fp16")
LR_DECAYS = ("none", "linear", "cosine")
INIT_TRAINS = ("rows", "all")
DEFAULT_EPOCHS = 2  # pytorch/examples' default: two passes over COCO (~40k steps of 4)

# Options that may change when a run is resumed without making it a different run.
RESUMABLE_CHANGES = {"resume", "output", "steps", "epochs", "checkpoint_every", "logdir", "log_every",
                     "sample_every", "sample_images", "workers", "device", "compile"}
# Options that only say how a run is watched or where it runs, not what it trains: left out of ``command()``.
_NOT_IN_COMMAND = {"resume", "checkpoint_every", "logdir", "log_every", "sample_every", "workers", "device"}
# What ``fastnst train --init MODEL`` takes from MODEL's own training when the command leaves it unset, so a new
# style is trained the way the model's styles were (docs/recipe.md): the sizes, the optimiser and the loss.
INHERITED = ("image_size", "crop_size", "style_size", "batch_size", "lr", "lr_decay")
# What a record written before an option existed means by leaving it out (where that is not the option's default).
UNRECORDED = {"loss_on_raw_output": True}
# Options whose command-line default is not a value a run records but one the machine resolves (``--amp auto``):
# a command leaving them out would train differently elsewhere, so ``TrainConfig.command`` always writes them.
COMMAND_LINE_DEFAULTS = {"amp": "auto"}
INHERITED_LOSS = ("vgg", "vgg_flavour", "content_layers", "style_layers", "content_weight", "style_weight",
                  "tv_weight", "style_scales")


@dataclass(frozen=True)
class TrainConfig:
    """Options of ``fastnst train``; saved whole (``asdict``) in the model file and every checkpoint.

    ``style`` holds the style images, one per style the model carries;
    ``style_names`` names them (default: the file stems) and ``style_weights``
    gives each its style-loss weight (default ``loss.style_weight`` for all).
    ``init`` is a trained model file whose shared weights the new styles use
    (only their norm rows train, or every weight with ``init_trains="all"``);
    the output holds the new styles alone, or ``init``'s styles and the new
    ones with ``keep_init_styles``. ``crop_size`` trains on random squares of
    the photos scaled to ``image_size`` (centre squares without it).
    ``steps`` and ``epochs`` are exclusive; with neither, training runs
    ``DEFAULT_EPOCHS`` epochs. ``batch_size`` is per process under torchrun.
    ``resume`` is a checkpoint path or ``"auto"`` (the checkpoint beside
    ``output`` if there is one, else a fresh start).
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
    keep_init_styles: bool = False
    init_trains: str = "rows"  # with init: the new styles' norm rows alone, or every weight (``scaled_groups``)
    temporal_weight: float = 0.0  # the temporal-consistency term (``fastnst.losses.temporal_loss``); 0: off
    loss_on_raw_output: bool = False  # the losses see the raw output, not it clamped as saved (``losses.as_saved``)

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
        check_device(self.device)
        if not (math.isfinite(self.temporal_weight) and self.temporal_weight >= 0):
            raise ConfigError(f"--temporal-weight must be >= 0 and finite (0 turns it off), got {self.temporal_weight}")
        if self.keep_init_styles and self.init is None:
            raise ConfigError("--keep-init-styles keeps the styles of the --init model: give --init MODEL")
        if self.init_trains not in INIT_TRAINS:
            raise ConfigError(f"unknown --init-trains {self.init_trains!r}; choose one of {', '.join(INIT_TRAINS)}")
        if self.init_trains == "all" and (self.init is None or self.keep_init_styles):
            raise ConfigError("--init-trains all fine-tunes every weight of the --init model: give --init MODEL, "
                              "and not --keep-init-styles (the kept styles would change with the shared weights)")

    @classmethod
    def from_record(cls, record: dict) -> TrainConfig:
        """The config a model file recorded (``ModelInfo.config``), without the run's own record (steps done, ...)."""
        names = {f.name for f in fields(cls)}
        return cls(**{**UNRECORDED, **{k: v for k, v in record.items() if k in names}})

    def command(self, show: Callable[[str], str] = str, inherited: tuple[dict, dict] = ({}, {})) -> list[str]:
        """The ``fastnst train`` arguments that train this model again (what a model card prints).

        Everything that decides the weights is written, the command line's defaults
        left out (``--amp`` is always written: its default, auto, depends on the machine); how the
        run is watched or where it runs (logging, checkpoints, workers, device) is
        not. ``show`` rewrites file paths (e.g. relative to the repository).
        ``inherited``: what the ``--init`` model gives an option left out
        (``inherited_from`` its record); such an option is written unless it is
        that value too, or the run would take it.
        """
        default, loss = TrainConfig(style=self.style, data="", output="m.safetensors"), self.loss
        # The loss network is written when it is not the default; the rest when it is not that network's default.
        default_loss = LossSpec(vgg=loss.vgg, vgg_weights=loss.vgg_weights)
        argv = ["--style", *map(show, self.style), "--data", show(self.data), "-o", show(self.output)]
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("style", "data", "output", "loss") or f.name in _NOT_IN_COMMAND or not _differs(
                    f.name, value, COMMAND_LINE_DEFAULTS.get(f.name, getattr(default, f.name)), inherited[0]):
                continue
            argv += _option(f.name, value, show if f.name in ("init", "sample_images") else str)
        for f in fields(loss):
            value = getattr(loss, f.name)
            reference = LossSpec() if f.name in ("vgg", "vgg_weights") else default_loss
            if _differs(f.name, value, getattr(reference, f.name), inherited[1]) and \
                    not (f.name == "style_weight" and self.style_weights):
                argv += _option(f.name, value, show if f.name == "vgg_weights" else str)
        if self.style_weights:
            names = style_names(self.style, self.style_names)
            argv += ["--style-weight", ",".join(f"{n}={w:g}" for n, w in zip(names, self.style_weights))]
        return argv


def _differs(name: str, value, default, inherited: dict) -> bool:
    """Whether a command must write option ``name`` to get ``value``: left out, it is the default, or what the
    ``--init`` model gives (``inherited``) where it gives one; compared as written (a list is a tuple). None
    (e.g. no crop) has no spelling: the default it is, or ``--image-size`` keeps the init's crop out."""
    written = _option(name, value, str)
    return value is not None and (written != _option(name, default, str) or
                                  written != _option(name, inherited.get(name, default), str))


def option_flag(name: str) -> str:
    """The ``fastnst train`` flag of config field ``name`` (``style_names`` → ``--style-name``)."""
    return "--" + {"style_names": "style-name", "style_weights": "style-weight", "vgg_flavour": "vgg-flavour"}.get(
        name, name.replace("_", "-"))


def _option(name: str, value, show: Callable[[str], str]) -> list[str]:
    """One config field as command-line words (``fastnst.cli.train``'s spelling of it)."""
    flag = option_flag(name)
    if isinstance(value, bool):
        return [flag] if value else []
    if name == "style_weights":
        return []  # written with the style names by ``TrainConfig.command``
    if isinstance(value, dict):  # layer weights
        return [flag, ",".join(k if w == 1 else f"{k}:{w:g}" for k, w in value.items())]
    if isinstance(value, (tuple, list)):
        return [flag, ",".join(f"{v:g}" for v in value)] if name == "style_scales" else [flag, *map(show, value)]
    return [flag, f"{value:g}" if isinstance(value, float) else show(str(value))]


def training_stages(record: dict) -> list[dict]:
    """The training records of a model trained in stages, oldest first (``[record]`` for one run).

    A run with ``--init`` keeps the init model's record whole (``init_record``);
    when that model was trained by ``fastnst train`` on the same style image(s),
    it is the stage before (its rows went on training). A style taken out of a
    joint run (``fastnst convert --select``) whose init joined single-style
    models (``--merge``) goes back through its own part of that init: its
    stages, then the joint one. Any other init model is the trunk the first
    stage started from.
    """
    before = record.get("init_record")
    if (part := joint_part(record)) is not None:
        return [*training_stages(part), record]
    if isinstance(before, dict) and before.get("steps_done") is not None and \
            [Path(p).name for p in before.get("style", ())] == [Path(p).name for p in record.get("style", ())]:
        return [*training_stages(before), record]
    return [record]


def joint_part(record: dict) -> dict | None:
    """For one style selected from a run of several (``selected_styles``) whose ``--init`` was a merged file
    (``parts``): the part holding that style's image, i.e. the style before the joint run (itself taken out of
    an earlier joint run when the merged file was the bundled all-styles one); else None."""
    before, images = record.get("init_record"), model_style_images(record)
    if not record.get("selected_styles") or len(images) != 1 or not isinstance(before, dict) or \
            not isinstance(before.get("parts"), list):
        return None
    return next((part for part in before["parts"] if isinstance(part, dict) and part.get("steps_done") is not None
                 and [Path(p).name for p in model_style_images(part)] == [Path(images[0]).name]), None)


def model_style_images(record: dict) -> list[str]:
    """The style images of the styles a model file holds, in order: its training's (``style``), or of those
    ``fastnst convert --select`` kept (``selected_styles``: the record stays the whole run's)."""
    images = list(record.get("style", ()))
    if not record.get("selected_styles"):
        return images
    names = style_names(images, record.get("style_names", ()))
    return [images[names.index(name)] for name in record["selected_styles"] if name in names]


def inherited_options(init: str | Path) -> tuple[dict, dict]:
    """(training options, loss options) that model file ``init`` recorded for ``INHERITED`` and ``INHERITED_LOSS``
    (``inherited_from``); the VGG weight file only where it exists on this machine."""
    from fastnst.checkpoint import read_info

    train, loss_options = inherited_from(read_info(init).config)
    weights = loss_options.pop("vgg_weights", None)
    if weights and Path(weights).is_file():
        loss_options["vgg_weights"] = weights
    return train, loss_options


def inherited_from(record: dict) -> tuple[dict, dict]:
    """What ``fastnst train --init`` takes from a model that recorded ``record``: (training options, loss options).

    Empty for a model that recorded no training (a converted pytorch/examples
    file). A file joining several trainings (``fastnst convert --merge``, e.g. the
    bundled all-styles file) gives what all of them agree on. A style trained in
    stages (``training_stages``) gives its first stage's options: a new style
    starts the way that one started.
    """
    parts = [r for r in record.get("parts", [record]) if isinstance(r, dict) and isinstance(r.get("loss"), dict)]
    if not parts or len(parts) < len(record.get("parts", [record])):
        return {}, {}
    records = [training_stages(part)[0] for part in parts]  # how each style began, not how it was finished

    def agreed(key: str, loss: bool) -> object:
        values = [(r["loss"] if loss else r).get(key) for r in records]
        return values[0] if all(v == values[0] for v in values) else None

    train = {k: v for k in INHERITED if (v := agreed(k, False)) is not None}
    loss_options = {k: v for k in (*INHERITED_LOSS, "vgg_weights") if (v := agreed(k, True)) is not None}
    return train, loss_options
