"""``fastnst video``: stylize video files, keeping their sound."""

from __future__ import annotations

import argparse

from fastnst.cli.options import add_look, add_runtime, add_sources, positive_int, summary


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1 (0 off), got {text}")
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
    from fastnst.video.config import DEFAULT_CRF, DEFAULT_SEGMENT_SECONDS, DEFAULT_TEMPORAL_BLEND, X264_PRESETS

    add_sources(p, "video files, folders searched for videos, or glob patterns")
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
    add_look(g, "video")
    g = p.add_argument_group("speed")
    add_runtime(g, "frames")
    g.add_argument("--batch-size", type=positive_int, help="GPU: frames per forward pass (default 8; 1 on the CPU)")


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
    return summary(report)
