"""``fastnst optimize``: stylize one photo by optimizing its pixels (Gatys et al.)."""

from __future__ import annotations

import argparse

from fastnst.cli.options import add_loss_options, add_style_mix, loss_spec, positive_int, style_mix_weights
from fastnst.errors import ConfigError


def add_optimize(sub: argparse._SubParsersAction, options: bool = True) -> None:
    p = sub.add_parser("optimize", help="stylize one photo by optimizing its pixels (Gatys et al.)",
                       description="Stylize CONTENT by optimizing the pixels of an image against the same content, "
                                   "style and total-variation losses as training. Writes OUT and a JSON of the "
                                   "loss history (OUT with .json). Slow but needs no trained model: the quality "
                                   "reference, and a preview of a style and its loss weights.")
    p.set_defaults(run=_run_optimize)
    if not options:
        return
    from fastnst.device import DEVICE_CHOICES
    from fastnst.optimize import OPTIMIZERS

    p.add_argument("content", help="content photo")
    p.add_argument("styles", nargs="*", metavar="STYLE", help="style image(s) (or use --style)")
    p.add_argument("--style", dest="more_styles", nargs="+", action="extend", default=[], metavar="FILE",
                   help="style image(s); several are blended (see --style-mix)")
    add_style_mix(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output image (.png, .jpg, .webp, ...)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="lbfgs",
                   help="lbfgs (default; strong-Wolfe line search) or adam")
    p.add_argument("--iterations", type=positive_int, default=300,
                   help="total iterations over all scales, counted as function evaluations (one VGG "
                        "forward+backward each): Adam makes one step per evaluation, L-BFGS's line search "
                        "~1.1-1.2 evaluations per step (default 300)")
    p.add_argument("--lr", type=float, help="step size (default: 1 for lbfgs, 0.05 for adam, in 0-1 pixel units)")
    p.add_argument("--lbfgs-history", type=positive_int, default=50,
                   help="L-BFGS curvature pairs kept (memory: 2 images each; default 50)")
    p.add_argument("--init", default="content", metavar="content|noise|IMAGE",
                   help="start from the content photo (default), uniform noise, or an image file (e.g. a fast "
                        "network's output; resized to the output size)")
    p.add_argument("--seed", type=int, default=0, help="noise seed for --init noise (default 0)")
    p.add_argument("--size", type=positive_int, default=512,
                   help="long side of the output in pixels; the photo is resized up or down to it (default 512)")
    p.add_argument("--style-size", type=positive_int, help="long side of the style image(s) (default: --size)")
    p.add_argument("--scales", type=positive_int, default=1,
                   help="multi-scale: start at 1/2^(N-1) of --size, upsample and refine, each scale getting an "
                        "equal share of --iterations (default 1)")
    p.add_argument("--preserve-color", action="store_true", help="keep the photo's colours (luminance transfer)")
    p.add_argument("--save-every", type=int, default=0, metavar="N",
                   help="also write OUT-<iteration> images every N iterations (default 0: none)")
    p.add_argument("--history", metavar="JSON", help="loss-history file (default: OUT with the suffix .json)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    add_loss_options(p)


def _run_optimize(args: argparse.Namespace) -> int:
    from fastnst.optimize import OptimizeConfig, optimize

    styles = tuple(args.styles) + tuple(args.more_styles)
    if not styles:
        raise ConfigError("no style image: give STYLE after CONTENT, or --style FILE ...")
    config = OptimizeConfig(
        content=args.content, styles=styles, output=args.output, style_blend=style_mix_weights(args, styles),
        loss=loss_spec(args), optimizer=args.optimizer, iterations=args.iterations, lr=args.lr,
        lbfgs_history=args.lbfgs_history, init=args.init, seed=args.seed, size=args.size,
        style_size=args.style_size, preserve_color=args.preserve_color, scales=args.scales,
        save_every=args.save_every, history=args.history, device=args.device)
    result = optimize(config)
    final = result.final
    print(f"wrote {result.output} ({final['width']}x{final['height']}) and {result.history_path}: "
          f"{config.iterations} iterations in {result.seconds:.1f} s; loss total {final['total']:.6g} = content "
          f"{final['content']:.6g} + style {final['style']:.6g} + tv {final['tv']:.6g}")
    return 0
