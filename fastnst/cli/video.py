"""``fastnst video``: stylize video files, keeping their sound."""

from __future__ import annotations

import argparse
import sys

from fastnst.cli.options import positive_int


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1 (0 off), got {text}")
    return value


def _strength(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1 (1 = full style, 0 = the video), got {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def add_video(sub: argparse._SubParsersAction, options: bool = True) -> None:
    p = sub.add_parser("video", help="stylize video files and folders of videos with a model",
                       description="Stylize videos with a trained model: same frame rate and timestamps, sound "
                                   "copied unchanged, H.264 output in the input's container (MP4 for containers "
                                   "that cannot hold it). A killed run resumes at its last finished segment; "
                                   "existing outputs are skipped unless --overwrite; bad inputs are named and "
                                   "skipped (exit code 1). Needs pip install fastnst[video].")
    p.set_defaults(run=_run_video)
    if not options:
        return
    from fastnst.backends import BACKEND_CHOICES, DTYPE_CHOICES
    from fastnst.device import DEVICE_CHOICES
    from fastnst.video.config import DEFAULT_CRF, DEFAULT_SEGMENT_SECONDS, DEFAULT_TEMPORAL_BLEND, X264_PRESETS

    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video files, or folders searched for videos")
    p.add_argument("-m", "--model", required=True,
                   help="model file (.safetensors, pytorch/examples .pth, or .onnx from fastnst export)")
    p.add_argument("-o", "--output-dir", required=True, metavar="OUT_DIR", help="folder for the results")
    g = p.add_argument_group("output")
    g.add_argument("--max-size", type=positive_int, help="downsize the long side to this many pixels first")
    g.add_argument("--crf", type=int, default=DEFAULT_CRF,
                   help=f"H.264 quality: 0 lossless, {DEFAULT_CRF} visually transparent (default), 23 smaller")
    g.add_argument("--preset", choices=X264_PRESETS, default="medium",
                   help="H.264 encoder speed: faster presets make larger files (default medium)")
    g.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    g.add_argument("--report", metavar="FILE.jsonl", help="write one JSON line per input with its status")
    g.add_argument("--segment-seconds", type=_seconds, default=DEFAULT_SEGMENT_SECONDS, metavar="S",
                   help=f"finished work is kept in segments of S seconds: a killed run resumes at the last "
                        f"whole one (default {DEFAULT_SEGMENT_SECONDS:g})")
    g = p.add_argument_group("look")
    g.add_argument("--temporal-blend", type=_fraction, default=DEFAULT_TEMPORAL_BLEND, metavar="A",
                   help=f"share of the previous stylized frame, moved by optical flow, kept in each new frame "
                        f"where the motion is reliable (less flicker); 0 stylizes every frame on its own "
                        f"(default {DEFAULT_TEMPORAL_BLEND:g})")
    g.add_argument("--strength", type=_strength, default=1.0,
                   help="blend with the video: 1 full style (default), 0 none")
    g.add_argument("--preserve-color", action="store_true", help="keep the video's colours (luminance only)")
    g.add_argument("--stroke-scale", type=float, default=1.0, metavar="S",
                   help="brush strokes S times larger (2, 3) or finer (0.5); 0.25-8, default 1")
    g.add_argument("--style", metavar="NAME|INDEX", help="multi-style models: the style to use (default the first)")
    g.add_argument("--style-mix", metavar="NAME=W,...", help="multi-style models: blend styles, e.g. "
                                                             "starry=0.7,wave=0.3")
    g = p.add_argument_group("speed")
    g.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                   help="runtime (default auto: torch on GPUs, openvino on the CPU when installed)")
    g.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    g.add_argument("--dtype", choices=DTYPE_CHOICES, help="as for fastnst stylize (default: the backend's)")
    g.add_argument("--batch-size", type=positive_int, help="GPU: frames per forward pass (default 8; 1 on the CPU)")
    g.add_argument("--streams", type=positive_int,
                   help="CPU: frames stylized at once, one core each (default: one per core with openvino, 1 "
                        "with torch)")


def _run_video(args: argparse.Namespace) -> int:
    from fastnst.video import VideoConfig, stylize_video

    config = VideoConfig(
        model=args.model, inputs=tuple(args.inputs), output_dir=args.output_dir, backend=args.backend,
        device=args.device, dtype=args.dtype, style=args.style, style_mix=args.style_mix, strength=args.strength,
        preserve_color=args.preserve_color, stroke_scale=args.stroke_scale, max_size=args.max_size,
        batch_size=args.batch_size, streams=args.streams, overwrite=args.overwrite, crf=args.crf,
        preset=args.preset, temporal_blend=args.temporal_blend, segment_seconds=args.segment_seconds,
        report=args.report)
    report = stylize_video(config)
    print(f"done {report.done}, skipped {report.skipped} (already there), failed {len(report.failed)}",
          file=sys.stderr)
    if report.report_path is not None:
        print(f"report: {report.report_path}", file=sys.stderr)
    return 1 if report.failed else 0
