"""The ``fastnst`` command line: parse arguments into config dataclasses and call the library.

This is the only module that prints or exits. Exit codes: 0 success, 1 a run
finished but some inputs failed (each named on stderr) or the run could not be
done, 2 a usage error (bad option or value).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from fastnst import __version__
from fastnst.errors import ConfigError, FastNSTError

log = logging.getLogger("fastnst")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _add_loss_options(p: argparse.ArgumentParser) -> None:
    """The loss-network options shared by train, optimize and score (defaults: ``LossSpec``'s)."""
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
    g.add_argument("--style-weight", type=float, help="style loss weight (default 1e10)")
    g.add_argument("--tv-weight", type=float, help="total-variation weight (default 0)")


def _loss_spec(args: argparse.Namespace):
    """A ``LossSpec`` from the options of ``_add_loss_options``; unset options keep the defaults."""
    from fastnst.losses import LossSpec

    given = {name: getattr(args, name) for name in ("content_layers", "style_layers", "content_weight",
                                                     "style_weight", "tv_weight")}
    return LossSpec(vgg=args.vgg, vgg_weights=args.vgg_weights, vgg_flavour=args.vgg_flavour,
                    **{k: v for k, v in given.items() if v is not None})


# -- info --------------------------------------------------------------------------------------

def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show what a model file holds",
                       description="Print a model file's network spec, parameter count, styles and training "
                                   "config (fastnst .safetensors or pytorch/examples .pth).")
    p.add_argument("model", help="model file")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(run=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    from fastnst.checkpoint import load_model
    from fastnst.models.transformer import macs_per_pixel

    model, info = load_model(args.model)
    summary = {
        "file": args.model,
        "source": info.source,
        "format_version": info.format_version,
        "fastnst_version": info.fastnst_version,
        "spec": info.spec.to_dict(),
        "parameters": model.num_parameters(),
        "macs_per_pixel": macs_per_pixel(info.spec),
        "value_range": "0-1",
        "styles": list(info.styles),
        "config": info.config,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for key, value in summary.items():
        if key == "config":
            continue
        print(f"{key:16} {value:,}" if isinstance(value, int) else f"{key:16} {value}")
    if info.config:
        print("config")
        for key, value in info.config.items():
            print(f"  {key:22} {value}")
    return 0


# -- convert -----------------------------------------------------------------------------------

def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="turn a pytorch/examples model into a fastnst model file",
                       description="Convert a pytorch/examples fast_neural_style checkpoint (.pth/.model, loaded "
                                   "safely with weights_only) into a fastnst .safetensors model file.")
    p.add_argument("source", help="pytorch/examples .pth or .model file (or a fastnst file to re-save)")
    p.add_argument("-o", "--output", required=True, help="output .safetensors file")
    p.add_argument("--style-name", help="style name stored in the file (default: the source file's stem)")
    p.add_argument("--half", action="store_true", help="store fp16 weights (half the size)")
    p.set_defaults(run=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from fastnst.checkpoint import ConvertConfig, convert_model

    config = ConvertConfig(source=args.source, output=args.output, style_name=args.style_name, half=args.half)
    path = convert_model(config)
    print(f"wrote {path}")
    return 0


# -- stylize -----------------------------------------------------------------------------------

def _add_stylize(sub: argparse._SubParsersAction) -> None:
    from fastnst.device import DEVICE_CHOICES
    from fastnst.engine import FORMATS
    from fastnst.images import DEFAULT_MAX_PIXELS

    p = sub.add_parser("stylize", help="stylize image files and folders with a model",
                       description="Stylize images with a trained model. Folders are searched recursively and "
                                   "mirrored under OUT_DIR; existing outputs are skipped unless --overwrite.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("-m", "--model", required=True, help="model file (.safetensors, or pytorch/examples .pth)")
    p.add_argument("-o", "--output-dir", required=True, metavar="OUT_DIR", help="folder for the results")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--format", default="same", choices=FORMATS, help="output format (default: as the input)")
    p.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality 1-100 (default 95)")
    p.add_argument("--max-size", type=_positive_int, help="downsize the long side to this many pixels first")
    p.add_argument("--max-pixels", type=_positive_int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse images with more pixels (default {DEFAULT_MAX_PIXELS:,})")
    p.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    p.set_defaults(run=_run_stylize)


def _run_stylize(args: argparse.Namespace) -> int:
    from fastnst.engine import StylizeConfig, stylize_files

    config = StylizeConfig(model=args.model, inputs=tuple(args.inputs), output_dir=args.output_dir,
                           device=args.device, format=args.format, quality=args.quality, max_size=args.max_size,
                           max_pixels=args.max_pixels, overwrite=args.overwrite)
    report = stylize_files(config)
    print(f"done {len(report.done)}, skipped {len(report.skipped)} (already there), failed {len(report.failed)}",
          file=sys.stderr)
    return 1 if report.failed else 0


# -- entry point -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastnst", description="Fast neural style transfer.")
    parser.add_argument("--version", action="version", version=f"fastnst {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("-q", "--quiet", action="store_true", help="only log errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_info, _add_convert, _add_stylize):
        add(sub)
    return parser


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger("fastnst")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: list[str] | None = None) -> int:
    """Run the ``fastnst`` command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) and usage errors (2)
        return int(exc.code or 0)
    _setup_logging(args.verbose, args.quiet)
    try:
        return args.run(args)
    except ConfigError as exc:
        print(f"fastnst {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FastNSTError as exc:
        print(f"fastnst {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"fastnst {args.command}: interrupted", file=sys.stderr)
        return 130
