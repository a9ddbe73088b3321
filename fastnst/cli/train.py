"""``fastnst train``: training a style model."""

from __future__ import annotations

import argparse
import logging
import sys

from fastnst.cli.options import add_loss_options, loss_spec, per_style_weights, positive_int

log = logging.getLogger(__name__)

_TRAIN_EPILOG = """\
loss defaults depend on the VGG: pytorch/examples' (content 1e5, style 1e10 on relu1_2..relu4_3) for
the torchvision flavour; the recipe of docs/recipe.md for the Caffe VGG19 (--vgg vgg19 --vgg-flavour
caffe, or a weight file with caffe in its name): style relu1_1,relu2_1,relu3_1 at scales 1,0.5,0.25,
content relu2_2, content weight 1, style weight 50.
Your own painting in minutes on a CPU, on the shared weights of a bundled model:
  fastnst train --init checkpoints/all_styles.safetensors --style my_painting.jpg --data photos/
                -o my_painting.safetensors --steps 300
(the sizes, learning rate and loss come from the model's training)
Under torchrun --nproc_per_node N the same command trains with DistributedDataParallel
(--batch-size is per process). Ctrl-C saves a checkpoint; continue with --resume auto."""


def add_train(sub: argparse._SubParsersAction, options: bool = True) -> None:
    p = sub.add_parser("train", help="train a style model from a style image and a folder of photos",
                       description="Train a feed-forward style network (Johnson et al. 2016) on a folder of "
                                   "photos for one style image and write it as a .safetensors model file.",
                       epilog=_TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(run=_run_train)
    if not options:
        return
    from fastnst.device import DEVICE_CHOICES
    from fastnst.models.transformer import SPECS
    from fastnst.train.config import AMP_CHOICES, COMMAND_LINE_DEFAULTS, DEFAULT_EPOCHS, INIT_TRAINS, LR_DECAYS

    p.add_argument("--style", required=True, nargs="+", metavar="IMAGE",
                   help="the style image; several make one model carrying all of them (conditional instance norm)")
    p.add_argument("--style-name", nargs="+", metavar="NAME", help="names of the styles (default: the file stems)")
    p.add_argument("--init", metavar="MODEL",
                   help="train the --style image(s) on this trained model's shared weights, only their norm rows "
                        "(minutes on a CPU; see --init-trains); options left unset are taken from MODEL's own "
                        "training (sizes, lr, loss); the output holds the new style(s) alone")
    p.add_argument("--keep-init-styles", action="store_true",
                   help="with --init: the output also carries MODEL's styles, exactly as they are")
    p.add_argument("--init-trains", choices=INIT_TRAINS, default="rows",
                   help="with --init: what trains, the new styles' norm rows (default) or all: every weight, "
                        "each layer's lr scaled by its weights' size (fine-tuning MODEL's shared weights too; "
                        "slower per step, more capacity)")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="folder of training photos, searched recursively (e.g. COCO train2014/)")
    p.add_argument("-o", "--output", required=True, metavar="MODEL",
                   help="model file to write (.safetensors); the resumable checkpoint goes beside it "
                        "as MODEL.ckpt.pt")
    p.add_argument("--spec", choices=sorted(SPECS), default="johnson", help="network size (default johnson)")
    p.add_argument("--image-size", type=positive_int,
                   help="photos are scaled so their short side is SIZE; without --crop-size the centre "
                        "SIZE x SIZE square trains (default 256)")
    p.add_argument("--crop-size", type=positive_int,
                   help="train on a random CROP x CROP square of each scaled photo, a new one every epoch "
                        "(e.g. --image-size 512 --crop-size 256: many more distinct images from a small "
                        "folder, at the scale of 512-pixel photos)")
    p.add_argument("--style-size", type=positive_int,
                   help="resize the style image so its long side is exactly this before taking its Grams (up or "
                        "down, as optimize and score do; default: as is)")
    p.add_argument("--batch-size", type=positive_int, help="photos per step and process (default 4)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default 1e-3)")
    p.add_argument("--lr-decay", choices=LR_DECAYS,
                   help="decay the learning rate to 0 over the run (default none)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=positive_int, help="optimiser steps to train")
    length.add_argument("--epochs", type=positive_int,
                        help=f"passes over the photos (default {DEFAULT_EPOCHS} when --steps is not given)")
    p.add_argument("--temporal-weight", type=float, default=0.0, metavar="W",
                   help="for video: also stylize a slightly moved, noisy copy of each batch and penalise where its "
                        "stylization differs from the moved stylization (less flicker; about 1.4x the step time; "
                        "default 0: off; see docs/recipe.md for values)")
    p.add_argument("--loss-on-raw-output", action="store_true",
                   help="take the losses on the network's raw output, not on it clamped to 0-1 as a saved picture "
                        "is (how earlier fastnst runs trained; docs/recipe.md, t14)")
    p.add_argument("--seed", type=int, default=42, help="seed of weights and data order (default 42)")
    p.add_argument("--amp", choices=("auto", *AMP_CHOICES), default=COMMAND_LINE_DEFAULTS["amp"],
                   help="mixed precision (default auto: bf16 where it is the faster arithmetic, i.e. CPUs with "
                        "AMX, AMD CPUs with AVX512-BF16 and CUDA GPUs that support it, else none; the model file "
                        "records which)")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory layout (try on GPUs)")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks (slow start)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--workers", type=int, default=2, help="photo-decoding processes (default 2; 0: in-process)")
    p.add_argument("--logdir", metavar="DIR", help="write TensorBoard logs (losses, lr, images/s, samples) here")
    p.add_argument("--log-every", type=positive_int, default=10, help="log losses every N steps (default 10)")
    p.add_argument("--sample-every", type=int, default=500,
                   help="TensorBoard grid of sample stylizations every N steps (default 500; 0: off)")
    p.add_argument("--sample-images", nargs="+", metavar="IMAGE",
                   help="photos for the sample grid (default: --holdout photos held out from --data)")
    p.add_argument("--holdout", type=int, default=4,
                   help="photos held out of training as samples when --sample-images is not given (default 4)")
    p.add_argument("--checkpoint-every", type=int, default=500,
                   help="write the resumable checkpoint every N steps (default 500; 0: only at the end/on Ctrl-C)")
    p.add_argument("--resume", metavar="PATH|auto",
                   help="continue from a checkpoint; auto: the one beside -o if it exists, else start afresh")
    add_loss_options(p, style_weights=True)


def train_config(args: argparse.Namespace):
    """The ``TrainConfig`` the parsed options describe (with ``--init``, unset ones from that model's training)."""
    from fastnst.styles import style_names
    from fastnst.train import TrainConfig
    from fastnst.train.config import INHERITED

    names = style_names(args.style, args.style_name or ())
    args.style_weight, weights = per_style_weights(args, names)  # one for all: LossSpec's
    options = {name: getattr(args, name) for name in INHERITED}
    if args.init:
        _inherit(args, options, per_style=bool(weights))
    return TrainConfig(
        style=tuple(args.style), style_names=tuple(args.style_name or ()), init=args.init,
        keep_init_styles=args.keep_init_styles, init_trains=args.init_trains, style_weights=weights,
        data=args.data, output=args.output, spec=args.spec, loss=loss_spec(args), steps=args.steps,
        epochs=args.epochs, seed=args.seed, amp=_amp(args), channels_last=args.channels_last, compile=args.compile,
        device=args.device, workers=args.workers,
        logdir=args.logdir, log_every=args.log_every, sample_every=args.sample_every,
        sample_images=tuple(args.sample_images or ()), holdout=args.holdout,
        checkpoint_every=args.checkpoint_every, resume=args.resume, temporal_weight=args.temporal_weight,
        loss_on_raw_output=args.loss_on_raw_output,
        **{name: value for name, value in options.items() if value is not None})


def _amp(args: argparse.Namespace) -> str:
    """``--amp`` as given, or for ``auto`` what this machine runs faster (``fastnst.device.default_amp``)."""
    if args.amp != "auto":
        return args.amp
    from fastnst.device import default_amp, resolve_device

    amp = default_amp(resolve_device(args.device))
    log.info("--amp auto: %s on this machine (give --amp to choose)", amp)
    return amp


def _inherit(args: argparse.Namespace, options: dict, per_style: bool) -> None:
    """Fill the options the command left unset from the ``--init`` model's own training, and say which."""
    from fastnst.train.config import inherited_options

    train, loss = inherited_options(args.init)
    taken = []
    sized_by_user = options["image_size"] is not None  # then the init model's crop (of its own size) does not fit
    for name, value in train.items():
        if options[name] is None and not (name == "crop_size" and sized_by_user):
            options[name] = value
            taken.append(f"{name}={value}")
    for name, value in loss.items():
        if getattr(args, name) is None and not (name == "style_weight" and per_style):
            setattr(args, name, value)
            taken.append(f"{name}={value}")
    if taken:
        log.info("from %s's training: %s (give an option to change it)", args.init, ", ".join(taken))


def _run_train(args: argparse.Namespace) -> int:
    from fastnst.device import torchrun_rank
    from fastnst.train import TrainingInterrupted, fit

    config = train_config(args)
    try:
        path = fit(config)
    except TrainingInterrupted as exc:
        print(f"fastnst train: {exc}", file=sys.stderr)
        return 130
    if torchrun_rank()[0] == 0:  # under torchrun, one line from rank 0
        print(f"wrote {path}")
    return 0
