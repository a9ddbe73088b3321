"""Option helpers shared by several commands: positive integers, the loss-network options, style weights.

One syntax for weights across commands: a mix of styles is ``--style-mix NAME=W,...``
(stylize, optimize, score) and a loss weight is ``--style-weight W`` (train: also
``NAME=W,...``, one loss weight per style). The old spellings (``--style-blend
W1,W2``, ``--style-weight W1 W2``) still work for one release, with a deprecation line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def strength(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1 (1 = full style, 0 = the input), got {text}")
    return value


def add_sources(p: argparse.ArgumentParser, inputs_help: str) -> None:
    """INPUT..., -m/--model and -o/--output-dir: the arguments of the commands that stylize files."""
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=inputs_help)
    p.add_argument("-m", "--model", required=True,
                   help="model file (.safetensors, pytorch/examples .pth, or .onnx from fastnst export)")
    p.add_argument("-o", "--output-dir", required=True, metavar="OUT_DIR", help="folder for the results")


def add_look(g: argparse._ArgumentGroup, what: str) -> None:
    """--strength, --preserve-color, --stroke-scale, --style, --style-mix (``what``: photo, video)."""
    g.add_argument("--strength", type=strength, default=1.0,
                   help=f"blend with the {what}: 1 full style (default), 0 none")
    g.add_argument("--preserve-color", action="store_true",
                   help=f"keep the {what}'s colours (transfer luminance only)")
    g.add_argument("--stroke-scale", type=float, default=1.0, metavar="S",
                   help="brush strokes S times larger (2, 3: stylized at 1/S size, with the full-resolution "
                        "pass's fine detail added back) or finer (0.5: stylized at twice the size); 0.25-8, "
                        "default 1")
    g.add_argument("--style", metavar="NAME|INDEX", help="multi-style models: the style to use (default the first; "
                                                        "`fastnst info MODEL` lists them)")
    g.add_argument("--style-mix", metavar="NAME=W,...",
                   help="multi-style models: blend styles, e.g. starry=0.7,wave=0.3 (weights >= 0, normalised)")


def add_runtime(g: argparse._ArgumentGroup, what: str) -> None:
    """--backend, --device, --dtype, --streams (``what``: photos, frames)."""
    from fastnst.backends import BACKEND_CHOICES, DTYPE_CHOICES
    from fastnst.device import DEVICE_CHOICES

    g.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                   help="runtime (default auto: torch on GPUs; on the CPU openvino when installed, else torch, or "
                        "onnxruntime for a .onnx file; `fastnst info --backends` says what it picks here)")
    g.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    g.add_argument("--dtype", choices=DTYPE_CHOICES,
                   help="torch: fp32 (default, exact) or bf16/fp16 autocast (a few levels of 255 off); openvino: "
                        "fp32 or bf16 (2-7x faster; the default on CPUs with native bf16 (AMX, AVX512-BF16), where "
                        "it keeps >= 50 dB PSNR against fp32 up to 4K; fp32 elsewhere)")
    g.add_argument("--streams", type=positive_int,
                   help=f"CPU: {what} stylized at once, one core each (default: one per core with openvino, as "
                        f"its throughput streams; 1 with torch, where one at a time on all cores is as fast)")


def summary(report) -> int:
    """The last lines of a stylize or video run on stderr; the exit code (1 when an input failed)."""
    print(f"done {report.done}, skipped {report.skipped} (already there), failed {len(report.failed)}",
          file=sys.stderr)
    if report.report_path is not None:
        print(f"report: {report.report_path}", file=sys.stderr)
    return 1 if report.failed else 0


def deprecated(args: argparse.Namespace, old: str, new: str) -> None:
    """Note that an old spelling was used: one line on stderr once the command has run (not when it fails on
    a bad value, where the error is the one line), saying what to write instead."""
    args.notices.append(f"fastnst: {old} is deprecated and will be removed in the next release; write {new}")


def add_style_mix(p: argparse.ArgumentParser) -> None:
    """``--style-mix NAME=W,...`` for commands blending style image files (``--style-blend`` deprecated)."""
    p.add_argument("--style-mix", metavar="NAME=W,...",
                   help="blend the style images: each image's file name (without suffix) or index with a weight "
                        ">= 0, normalised, e.g. starry=0.7,wave=0.3 (default: equal)")
    p.add_argument("--style-blend", metavar="W1,W2,...", help=argparse.SUPPRESS)


def style_mix_weights(args: argparse.Namespace, styles: Sequence[str]):
    """The blend weights of ``styles`` from ``--style-mix`` (or the deprecated ``--style-blend``); None: equal."""
    from fastnst.errors import ConfigError
    from fastnst.styles import resolve_style, style_names

    if args.style_blend is not None:
        if args.style_mix is not None:
            raise ConfigError("give --style-mix only (--style-blend is its old spelling)")
        deprecated(args, "--style-blend W1,W2,...", "--style-mix NAME=W,...")
        return args.style_blend
    if args.style_mix is None:
        return None
    names = style_names(styles) if len({str(s) for s in styles}) == len(styles) else [str(i) for i in styles]
    return tuple(float(w) for w in resolve_style(names, mix=args.style_mix))


def add_loss_options(p: argparse.ArgumentParser, style_weights: bool = False) -> None:
    """The loss-network options shared by train, optimize and score (defaults: ``LossSpec``'s).

    ``style_weights``: ``--style-weight`` also takes ``NAME=W,...``, one loss weight per style (train).
    """
    from fastnst.models.vgg import ARCHS
    from fastnst.pretrained import ENV_VAR, FLAVOUR_CHOICES

    g = p.add_argument_group("loss network", "VGG activations and loss weights (layer lists: relu1_2,relu2_2:0.5). "
                                             "Unset, they are pytorch/examples' for the torchvision VGGs and the "
                                             "recipe of docs/recipe.md for the Caffe VGG19")
    g.add_argument("--vgg", choices=sorted(ARCHS), help="loss network (default vgg16)")
    g.add_argument("--vgg-weights", metavar="PATH",
                   help=f"VGG weight file (default: ${ENV_VAR}, else the official download)")
    g.add_argument("--vgg-flavour", choices=FLAVOUR_CHOICES,
                   help="preprocessing the weights expect (auto: caffe if the file name says so)")
    g.add_argument("--content-layers", help="content layers[:weight] (default relu2_2)")
    g.add_argument("--style-layers", help="style layers[:weight] (default relu1_2,relu2_2,relu3_3,relu4_3; Caffe "
                                          "VGG19: relu1_1,relu2_1,relu3_1)")
    g.add_argument("--content-weight", type=float, help="content loss weight (default 1e5; Caffe VGG19: 1)")
    if style_weights:
        g.add_argument("--style-weight", nargs="+", metavar="W|NAME=W,...",
                       help="style loss weight (default 1e10; Caffe VGG19: 50), or one per style: "
                            "starry=50,wave=30")
    else:
        g.add_argument("--style-weight", type=float, help="style loss weight (default 1e10; Caffe VGG19: 50)")
    g.add_argument("--tv-weight", type=float, help="total-variation weight (default 0)")
    g.add_argument("--style-scales", metavar="S,S,...",
                   help="take the style loss also on the image downscaled by these factors, averaged "
                        "(larger brush strokes; default 1; Caffe VGG19: 1,0.5,0.25)")


def loss_spec(args: argparse.Namespace):
    """A ``LossSpec`` from the options of ``add_loss_options``; unset options keep the defaults."""
    from fastnst.losses import LossSpec

    given = {name: getattr(args, name) for name in ("vgg", "vgg_flavour", "content_layers", "style_layers",
                                                     "content_weight", "style_weight", "tv_weight", "style_scales")}
    return LossSpec(vgg_weights=args.vgg_weights, **{k: v for k, v in given.items() if v is not None})


def per_style_weights(args: argparse.Namespace, names: Sequence[str]) -> tuple[float | None, tuple[float, ...]]:
    """``args.style_weight`` as (one loss weight for all styles or None, per-style weights or ()).

    ``W`` → (W, ()); ``a=W1,b=W2`` → (None, weights in style order; every style
    needs one); ``W1 W2 ...`` (deprecated) → (None, weights in order).
    """
    from fastnst.errors import ConfigError
    from fastnst.styles import parse_style_mix

    values = args.style_weight
    if not values:
        return None, ()
    if len(values) > 1:
        deprecated(args, "--style-weight W1 W2 ...", "--style-weight NAME=W1,NAME=W2")
        return None, tuple(_number(v) for v in values)
    if "=" not in values[0]:
        return _number(values[0]), ()
    given = parse_style_mix(values[0])
    unknown, missing = sorted(set(given) - set(names)), [n for n in names if n not in given]
    if unknown or missing:
        raise ConfigError(f"--style-weight {values[0]!r}: give one weight per style by name ({', '.join(names)}); "
                          f"{'unknown ' + ', '.join(unknown) if unknown else 'missing ' + ', '.join(missing)}")
    return None, tuple(given[n] for n in names)


def _number(text: str) -> float:
    from fastnst.errors import ConfigError

    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--style-weight {text!r}: write a number, or NAME=W,... for one weight per style") from None
