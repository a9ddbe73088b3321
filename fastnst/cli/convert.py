"""``fastnst convert``: a pytorch/examples model (or several models) → a fastnst model file."""

from __future__ import annotations

import argparse


def add_convert(sub: argparse._SubParsersAction, options: bool = True) -> None:
    p = sub.add_parser("convert", help="turn a pytorch/examples model into a fastnst model file",
                       description="Convert a pytorch/examples fast_neural_style checkpoint (.pth/.model, loaded "
                                   "safely with weights_only) into a fastnst .safetensors model file.")
    p.set_defaults(run=_run_convert)
    if not options:
        return
    p.add_argument("source", nargs="?", help="pytorch/examples .pth or .model file (or a fastnst file to re-save)")
    p.add_argument("-o", "--output", required=True, help="output .safetensors file")
    p.add_argument("--merge", nargs="+", default=[], metavar="MODEL",
                   help="instead of SOURCE: model files sharing all non-norm weights (e.g. made with train --init), "
                        "written as one multi-style model")
    p.add_argument("--select", nargs="+", default=[], metavar="STYLE",
                   help="keep only these styles (names or indices, in this order) of a multi-style model; one gives "
                        "a single-style file that loads alone")
    p.add_argument("--style-name", nargs="+", metavar="NAME",
                   help="style name(s) stored in the file, one per style (default: the source's names, or its stem)")
    p.add_argument("--half", action="store_true", help="store fp16 weights (half the size)")


def _run_convert(args: argparse.Namespace) -> int:
    from fastnst.convert import ConvertConfig, convert_model

    config = ConvertConfig(source=args.source, output=args.output, style_name=args.style_name, half=args.half,
                           merge=tuple(args.merge), select=tuple(args.select))
    path = convert_model(config)
    print(f"wrote {path}")
    return 0
