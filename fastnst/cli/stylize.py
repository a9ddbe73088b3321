"""``fastnst stylize``: the photo-library command."""

from __future__ import annotations

import argparse

from fastnst.cli.options import add_look, add_runtime, add_sources, positive_int, summary
from fastnst.errors import ConfigError


def _shard(text: str) -> tuple[int, int]:
    from fastnst.stylize.inputs import parse_shard

    try:
        return parse_shard(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_stylize(sub: argparse._SubParsersAction, options: bool = True) -> None:
    p = sub.add_parser("stylize", help="stylize image files, folders and globs with a model",
                       description="Stylize images with a trained model. Folders are searched recursively and "
                                   "mirrored under OUT_DIR: one folder given, its tree goes directly under OUT_DIR "
                                   "(holiday/ -o styled/ writes styled/IMG_1.jpg); several inputs keep their own "
                                   "top folders. A file goes to the top of OUT_DIR. Inputs are never overwritten: an "
                                   "OUT_DIR holding input photos is refused. Existing outputs are skipped unless "
                                   "--overwrite, so a killed run resumes; bad inputs are named and skipped (exit "
                                   "code 1).")
    p.set_defaults(run=_run_stylize)
    if not options:
        return
    from fastnst.images import DEFAULT_MAX_PIXELS
    from fastnst.stylize.config import DEFAULT_GPU_BATCH, DEFAULT_STALL_SECONDS
    from fastnst.stylize.inputs import FORMATS
    from fastnst.stylize.tiling import TILE_STATS

    add_sources(p, "image files, folders or glob patterns ('a/**/*.jpg')")
    g = p.add_argument_group("output")
    g.add_argument("--format", default="same", choices=FORMATS, help="output format (default: as the input)")
    g.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality 1-100 (default 95)")
    g.add_argument("--max-size", type=positive_int, help="downsize the long side to this many pixels first")
    g.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse images with more pixels (default {DEFAULT_MAX_PIXELS:,})")
    g.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    g.add_argument("--report", metavar="FILE.jsonl", help="write one JSON line per input with its status")
    g = p.add_argument_group("look")
    add_look(g, "photo")
    g = p.add_argument_group("speed and memory")
    add_runtime(g, "photos")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="torch: NHWC memory layout (default: on for CUDA, off on CPU where it is no faster)")
    g.add_argument("--compile", action="store_true", help="torch: torch.compile the network (slow first batch)")
    g.add_argument("--batch-size", type=positive_int,
                   help=f"photos of equal size per forward pass (default 1 on CPU, {DEFAULT_GPU_BATCH} on GPU)")
    g.add_argument("--tile-size", type=positive_int,
                   help="photos over N×N pixels are stylized in tiles of at most N×N (default: an eighth of the "
                        "free memory per pass, 1024-4096; 1024 takes about 1 GB); lower it if memory runs out")
    g.add_argument("--tile-stats", choices=TILE_STATS, default="exact",
                   help="statistics shared by the tiles: exact (default: the untiled result, about 6 extra "
                        "passes) or from a downscaled copy (thumbnail: one small extra pass, a visibly "
                        "different tone)")
    g.add_argument("--workers", type=positive_int, default=2, help="decoding and encoding threads (default 2)")
    g.add_argument("--shard", type=_shard, metavar="I/N",
                   help="take share I of N (I from 0) of the inputs; under torchrun RANK/WORLD_SIZE are used")
    g.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run on a Ray cluster (pip install 'fastnst[ray]'): alone, a new local one; 'auto' joins "
                        "the running one; or ray://HOST:10001 / HOST:6379. Same outputs, report and exit codes; "
                        "every node must see the model, inputs and OUT_DIR at the same paths")
    g.add_argument("--ray-actors", type=positive_int, metavar="N",
                   help="with --ray: model copies (default: one per node on CPUs, sized to the smallest node; "
                        "one per GPU)")
    g.add_argument("--stall-warning", type=float, default=DEFAULT_STALL_SECONDS, metavar="SECONDS",
                   help=f"name on stderr any photo still decoding, computing or encoding after this long, and "
                        f"again each time the wait doubles (default {DEFAULT_STALL_SECONDS:g})")


def _run_stylize(args: argparse.Namespace) -> int:
    from fastnst.stylize import StylizeConfig, stylize_files

    config = StylizeConfig(
        model=args.model, inputs=tuple(args.inputs), output_dir=args.output_dir, backend=args.backend,
        device=args.device, dtype=args.dtype, channels_last=args.channels_last, compile=args.compile,
        format=args.format, quality=args.quality, max_size=args.max_size, max_pixels=args.max_pixels,
        overwrite=args.overwrite, batch_size=args.batch_size, tile_size=args.tile_size,
        tile_stats=args.tile_stats, strength=args.strength,
        preserve_color=args.preserve_color, workers=args.workers, streams=args.streams, shard=args.shard,
        report=args.report, style=args.style, style_mix=args.style_mix, stall_seconds=args.stall_warning,
        stroke_scale=args.stroke_scale)
    if args.ray_actors and not args.ray:
        raise ConfigError("--ray-actors needs --ray (the local pipeline's own knobs are --streams and --workers)")
    if args.ray:
        from fastnst.ray import stylize_with_ray

        report = stylize_with_ray(config, None if args.ray == "local" else args.ray, actors=args.ray_actors)
    else:
        report = stylize_files(config)
    return summary(report)
