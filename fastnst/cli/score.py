"""``fastnst score``: the content, style and TV losses of finished images."""

from __future__ import annotations

import argparse
import json
import sys

from fastnst.cli.options import add_loss_options, add_style_mix, loss_spec, positive_int, style_mix_weights


def add_score(sub: argparse._SubParsersAction, options: bool = True) -> None:
    p = sub.add_parser("score", help="content, style and TV losses of stylized images",
                       description="Measure the content, style and total-variation losses of images under a loss "
                                   "configuration, with the training loss code: compares fast-network outputs and "
                                   "optimized images on the same footing. The content photo is resized to each "
                                   "image's size; the style to --style-size (default: each image's long side).")
    p.set_defaults(run=_run_score)
    if not options:
        return
    from fastnst.device import DEVICE_CHOICES

    p.add_argument("images", nargs="+", metavar="IMAGE", help="stylized images to score")
    p.add_argument("--content", required=True, help="content photo the images were made from")
    p.add_argument("--style", dest="styles", action="append", required=True, metavar="FILE",
                   help="style image; repeat for a blend (--style a.jpg --style b.jpg)")
    add_style_mix(p)
    p.add_argument("--style-size", type=positive_int, help="long side of the style image(s) (default: each image's)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    add_loss_options(p)


def _run_score(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from fastnst.score import ScoreConfig, score_images

    config = ScoreConfig(images=tuple(args.images), content=args.content, styles=tuple(args.styles),
                         style_blend=style_mix_weights(args, args.styles), loss=loss_spec(args),
                         style_size=args.style_size,
                         device=args.device)
    report = score_images(config)
    if args.json:
        print(json.dumps({"loss": asdict(config.loss), "images": report.rows,
                          "failed": [{"image": path, "error": why} for path, why in report.failed]}, indent=2))
    else:
        print(f"{'image':40} {'size':>9} {'content':>11} {'style':>11} {'tv':>11} {'total':>11}   unweighted "
              "content / style / tv")
        for row in report.rows:
            raw = row["unweighted"]
            print(f"{row['image']:40} {row['width']:>4}x{row['height']:<4} {row['content']:11.5g} "
                  f"{row['style']:11.5g} {row['tv']:11.5g} {row['total']:11.5g}   "
                  f"{raw['content']:.5g} / {raw['style']:.5g} / {raw['tv']:.5g}")
    if report.failed:
        print(f"scored {len(report.rows)}, failed {len(report.failed)}", file=sys.stderr)
    return 1 if report.failed else 0
