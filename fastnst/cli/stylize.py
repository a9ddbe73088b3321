"""``fastnst stylize``: the photo-library command."""

from __future__ import annotations

import argparse
import sys

from fastnst.cli.options import positive_int
from fastnst.errors import ConfigError


def _shard(text: str) -> tuple[int, int]:
    from fastnst.stylize.inputs import parse_shard

    try:
        return parse_shard(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _strength(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1 (1 = full style, 0 = the photo), got {text}")
    return value


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
    from fastnst.backends import BACKEND_CHOICES, DTYPE_CHOICES
    from fastnst.device import DEVICE_CHOICES
    from fastnst.images import DEFAULT_MAX_PIXELS
    from fastnst.stylize.config import DEFAULT_GPU_BATCH, DEFAULT_STALL_SECONDS
    from fastnst.stylize.inputs import FORMATS
    from fastnst.stylize.tiling import TILE_STATS

    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns ('a/**/*.jpg')")
    p.add_argument("-m", "--model", required=True,
                   help="model file (.safetensors, pytorch/examples .pth, or .onnx from fastnst export)")
    p.add_argument("-o", "--output-dir", required=True, metavar="OUT_DIR", help="folder for the results")
    g = p.add_argument_group("output")
    g.add_argument("--format", default="same", choices=FORMATS, help="output format (default: as the input)")
    g.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality 1-100 (default 95)")
    g.add_argument("--max-size", type=positive_int, help="downsize the long side to this many pixels first")
    g.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse images with more pixels (default {DEFAULT_MAX_PIXELS:,})")
    g.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    g.add_argument("--report", metavar="FILE.jsonl", help="write one JSON line per input with its status")
    g = p.add_argument_group("look")
    g.add_argument("--strength", type=_strength, default=1.0,
                   help="blend with the photo: 1 full style (default), 0 none")
    g.add_argument("--preserve-color", action="store_true", help="keep the photo's colours (transfer luminance only)")
    g.add_argument("--stroke-scale", type=float, default=1.0, metavar="S",
                   help="brush strokes S times larger (2, 3: stylized at 1/S size, with the full-resolution "
                        "pass's fine detail added back) or finer (0.5: stylized at twice the size); 0.25-8, "
                        "default 1")
    g.add_argument("--style", metavar="NAME|INDEX", help="multi-style models: the style to use (default the first; "
                                                        "`fastnst info MODEL` lists them)")
    g.add_argument("--style-mix", metavar="NAME=W,...",
                   help="multi-style models: blend styles, e.g. starry=0.7,wave=0.3 (weights >= 0, normalised)")
    g = p.add_argument_group("speed and memory")
    g.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                   help="runtime (default auto: torch on GPUs; on the CPU openvino when installed, else torch, or "
                        "onnxruntime for a .onnx file; `fastnst info --backends` says what it picks here)")
    g.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    g.add_argument("--dtype", choices=DTYPE_CHOICES,
                   help="torch: fp32 (default, exact) or bf16/fp16 autocast (a few levels of 255 off); openvino: "
                        "fp32 or bf16 (2-7x faster; the default on CPUs with native bf16 (AMX, AVX512-BF16), where "
                        "it keeps >= 50 dB PSNR against fp32 up to 4K; fp32 elsewhere)")
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
    g.add_argument("--streams", type=positive_int,
                   help="CPU: photos stylized at once, one core each (default: one per core with openvino, as "
                        "its throughput streams; 1 with torch, where one photo on all cores is as fast); tiled "
                        "photos always run one at a time on all cores")
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
    print(f"done {report.done}, skipped {report.skipped} (already there), failed {len(report.failed)}",
          file=sys.stderr)
    if report.report_path is not None:
        print(f"report: {report.report_path}", file=sys.stderr)
    return 1 if report.failed else 0
