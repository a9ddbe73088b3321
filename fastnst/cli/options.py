"""Option helpers shared by several commands: positive integers and the loss-network options."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_loss_options(p: argparse.ArgumentParser, style_weights: bool = False) -> None:
    """The loss-network options shared by train, optimize and score (defaults: ``LossSpec``'s).

    ``style_weights``: ``--style-weight`` takes one value or one per style image (train).
    """
    from fastnst.models.vgg import ARCHS
    from fastnst.pretrained import ENV_VAR, FLAVOUR_CHOICES

    g = p.add_argument_group("loss network", "VGG activations and loss weights (layer lists: relu1_2,relu2_2:0.5)")
    g.add_argument("--vgg", choices=sorted(ARCHS), default="vgg16", help="loss network (default vgg16)")
    g.add_argument("--vgg-weights", metavar="PATH",
                   help=f"VGG weight file (default: ${ENV_VAR}, else the official download)")
    g.add_argument("--vgg-flavour", choices=FLAVOUR_CHOICES, default="auto",
                   help="preprocessing the weights expect (auto: caffe if the file name says so)")
    g.add_argument("--content-layers", help="content layers[:weight] (default relu2_2)")
    g.add_argument("--style-layers", help="style layers[:weight] (default relu1_2,relu2_2,relu3_3,relu4_3)")
    g.add_argument("--content-weight", type=float, help="content loss weight (default 1e5)")
    if style_weights:
        g.add_argument("--style-weight", type=float, nargs="+", metavar="W",
                       help="style loss weight (default 1e10), or one per --style image")
    else:
        g.add_argument("--style-weight", type=float, help="style loss weight (default 1e10)")
    g.add_argument("--tv-weight", type=float, help="total-variation weight (default 0)")
    g.add_argument("--style-scales", metavar="S,S,...",
                   help="take the style loss also on the image downscaled by these factors, averaged "
                        "(e.g. 1,0.5,0.25: larger brush strokes; default 1)")


def loss_spec(args: argparse.Namespace):
    """A ``LossSpec`` from the options of ``add_loss_options``; unset options keep the defaults."""
    from fastnst.losses import LossSpec

    given = {name: getattr(args, name) for name in ("content_layers", "style_layers", "content_weight",
                                                     "style_weight", "tv_weight", "style_scales")}
    return LossSpec(vgg=args.vgg, vgg_weights=args.vgg_weights, vgg_flavour=args.vgg_flavour,
                    **{k: v for k, v in given.items() if v is not None})
