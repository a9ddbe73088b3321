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


def _add_loss_options(p: argparse.ArgumentParser, style_weights: bool = False) -> None:
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


def _loss_spec(args: argparse.Namespace):
    """A ``LossSpec`` from the options of ``_add_loss_options``; unset options keep the defaults."""
    from fastnst.losses import LossSpec

    given = {name: getattr(args, name) for name in ("content_layers", "style_layers", "content_weight",
                                                     "style_weight", "tv_weight")}
    return LossSpec(vgg=args.vgg, vgg_weights=args.vgg_weights, vgg_flavour=args.vgg_flavour,
                    **{k: v for k, v in given.items() if v is not None})


# -- info --------------------------------------------------------------------------------------

def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show what a model file holds, or which backends this machine has",
                       description="Print a model file's network spec, parameter count, styles and training "
                                   "config (fastnst .safetensors or pytorch/examples .pth); with --backends, "
                                   "the backends installed here and what --backend auto picks.")
    p.add_argument("model", nargs="?", help="model file")
    p.add_argument("--backends", action="store_true",
                   help="list the backends (torch, onnxruntime, openvino), whether each is installed, and what "
                        "--backend auto picks here for a model file and for a .onnx file")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(run=_run_info)


def _backends_summary() -> dict:
    """What ``fastnst info --backends`` reports: each backend's runtime version (None: missing) and auto's picks."""
    from fastnst.backends import BACKEND_DTYPES, BACKENDS, choose_backend, runtime_version
    from fastnst.device import resolve_device

    backends = {}
    for name in BACKENDS:
        version = runtime_version(name)
        entry = {"installed": version is not None, "version": version,
                 "dtypes": list(BACKEND_DTYPES.get(name, ()))}
        if name == "openvino" and version is not None:
            from fastnst.backends.openvino import cpu_capabilities, cpu_name, default_dtype

            entry.update(cpu=cpu_name(), capabilities=sorted(cpu_capabilities()), default_dtype=default_dtype())
        elif name == "openvino":
            entry["install"] = "pip install fastnst[openvino]"
        backends[name] = entry
    picks = {}
    for kind, example in (("model file", "model.safetensors"), (".onnx file", "model.onnx")):
        backend, why = choose_backend(example)
        picks[kind] = {"backend": backend, "why": why}
    return {"device": str(resolve_device("auto")), "backends": backends, "auto": picks}


def _run_info(args: argparse.Namespace) -> int:
    from fastnst.checkpoint import load_model
    from fastnst.models.transformer import macs_per_pixel

    if args.backends:
        summary = _backends_summary()
        if args.json:
            print(json.dumps(summary, indent=2))
            return 0
        print(f"device {summary['device']}")
        print(f"  {'backend':12} {'installed':12} dtypes")
        for name, entry in summary["backends"].items():
            if not entry["installed"]:
                print(f"  {name:12} {'no':12} ({entry.get('install', 'not importable')})")
                continue
            details = ", ".join(entry["dtypes"]) or "the .onnx file's own"
            if "default_dtype" in entry:
                details += (f" (default here {entry['default_dtype']}; CPU {entry['cpu']}: "
                            f"{', '.join(entry['capabilities'])})")
            print(f"  {name:12} {entry['version']:12} {details}")
        for kind, pick in summary["auto"].items():
            print(f"--backend auto picks {pick['backend']} for a {kind}: {pick['why']}")
        if args.model is None:
            return 0
    if args.model is None:
        raise ConfigError("give a MODEL file to describe, or --backends")
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
        if key == "styles":
            value = f"{len(value)}: " + ", ".join(f"{i}={n}" for i, n in enumerate(value)) if value else "(unnamed)"
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
    p.add_argument("source", nargs="?", help="pytorch/examples .pth or .model file (or a fastnst file to re-save)")
    p.add_argument("-o", "--output", required=True, help="output .safetensors file")
    p.add_argument("--merge", nargs="+", default=[], metavar="MODEL",
                   help="instead of SOURCE: model files sharing all non-norm weights (e.g. made with train --init), "
                        "written as one multi-style model")
    p.add_argument("--style-name", nargs="+", metavar="NAME",
                   help="style name(s) stored in the file, one per style (default: the source's names, or its stem)")
    p.add_argument("--half", action="store_true", help="store fp16 weights (half the size)")
    p.set_defaults(run=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from fastnst.checkpoint import ConvertConfig, convert_model

    config = ConvertConfig(source=args.source, output=args.output, style_name=args.style_name, half=args.half,
                           merge=tuple(args.merge))
    path = convert_model(config)
    print(f"wrote {path}")
    return 0


# -- stylize -----------------------------------------------------------------------------------

def _shard(text: str) -> tuple[int, int]:
    from fastnst.inputs import parse_shard

    try:
        return parse_shard(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _strength(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1 (1 = full style, 0 = the photo), got {text}")
    return value


def _add_stylize(sub: argparse._SubParsersAction) -> None:
    from fastnst.backends import BACKEND_CHOICES, BACKEND_DTYPES
    from fastnst.device import DEVICE_CHOICES
    from fastnst.engine import DEFAULT_GPU_BATCH, TILE_STATS
    from fastnst.images import DEFAULT_MAX_PIXELS
    from fastnst.inputs import FORMATS

    dtypes = sorted({d for values in BACKEND_DTYPES.values() for d in values})
    p = sub.add_parser("stylize", help="stylize image files, folders and globs with a model",
                       description="Stylize images with a trained model. Folders are searched recursively and "
                                   "mirrored under OUT_DIR; existing outputs are skipped unless --overwrite, so a "
                                   "killed run resumes; bad inputs are named and skipped (exit code 1).")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns ('a/**/*.jpg')")
    p.add_argument("-m", "--model", required=True,
                   help="model file (.safetensors, pytorch/examples .pth, or .onnx from fastnst export)")
    p.add_argument("-o", "--output-dir", required=True, metavar="OUT_DIR", help="folder for the results")
    g = p.add_argument_group("output")
    g.add_argument("--format", default="same", choices=FORMATS, help="output format (default: as the input)")
    g.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality 1-100 (default 95)")
    g.add_argument("--max-size", type=_positive_int, help="downsize the long side to this many pixels first")
    g.add_argument("--max-pixels", type=_positive_int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse images with more pixels (default {DEFAULT_MAX_PIXELS:,})")
    g.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    g.add_argument("--report", metavar="FILE.jsonl", help="write one JSON line per input with its status")
    g = p.add_argument_group("look")
    g.add_argument("--strength", type=_strength, default=1.0,
                   help="blend with the photo: 1 full style (default), 0 none")
    g.add_argument("--preserve-color", action="store_true", help="keep the photo's colours (transfer luminance only)")
    g.add_argument("--style", metavar="NAME|INDEX", help="multi-style models: the style to use (default the first; "
                                                        "`fastnst info MODEL` lists them)")
    g.add_argument("--style-mix", metavar="NAME=W,...",
                   help="multi-style models: blend styles, e.g. starry=0.7,wave=0.3 (weights >= 0, normalised)")
    g = p.add_argument_group("speed and memory")
    g.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                   help="runtime (default auto: torch on GPUs; on the CPU openvino when installed, else torch, or "
                        "onnxruntime for a .onnx file; `fastnst info --backends` says what it picks here)")
    g.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    g.add_argument("--dtype", choices=dtypes,
                   help="torch: fp32 (default, exact) or bf16/fp16 autocast (a few levels of 255 off); openvino: "
                        "fp32 or bf16 (about 2x faster, a few levels of 255 off; the default on AMX CPUs, where it "
                        "keeps >= 50 dB PSNR against fp32; fp32 elsewhere)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="torch: NHWC memory layout (default: on for CUDA, off on CPU where it is no faster)")
    g.add_argument("--compile", action="store_true", help="torch: torch.compile the network (slow first batch)")
    g.add_argument("--batch-size", type=_positive_int,
                   help=f"photos of equal size per forward pass (default 1 on CPU, {DEFAULT_GPU_BATCH} on GPU)")
    g.add_argument("--tile-size", type=_positive_int,
                   help="photos over N×N pixels are stylized in tiles of at most N×N (default: a quarter of the "
                        "free memory per pass, 1024-4096; 1024 takes about 1 GB); lower it if memory runs out")
    g.add_argument("--tile-stats", choices=TILE_STATS,
                   help="statistics shared by the tiles: exact (default: the untiled result, about 6 extra "
                        "passes) or from a downscaled copy (thumbnail: one small extra pass, a visibly "
                        "different tone)")
    g.add_argument("--workers", type=_positive_int, default=2, help="decoding and encoding threads (default 2)")
    g.add_argument("--streams", type=_positive_int, default=1,
                   help="CPU: photos stylized at once, one core each (default 1: one photo on all cores, "
                        "measured as fast); tiled photos always run one at a time on all cores")
    g.add_argument("--shard", type=_shard, metavar="I/N",
                   help="take share I of N (I from 0) of the inputs; under torchrun RANK/WORLD_SIZE are used")
    p.set_defaults(run=_run_stylize)


def _run_stylize(args: argparse.Namespace) -> int:
    from fastnst.engine import StylizeConfig
    from fastnst.pipeline import stylize_files

    config = StylizeConfig(
        model=args.model, inputs=tuple(args.inputs), output_dir=args.output_dir, backend=args.backend,
        device=args.device, dtype=args.dtype, channels_last=args.channels_last, compile=args.compile,
        format=args.format, quality=args.quality, max_size=args.max_size, max_pixels=args.max_pixels,
        overwrite=args.overwrite, batch_size=args.batch_size, tile_size=args.tile_size,
        tile_stats=args.tile_stats, strength=args.strength,
        preserve_color=args.preserve_color, workers=args.workers, streams=args.streams, shard=args.shard,
        report=args.report, style=args.style, style_mix=args.style_mix)
    report = stylize_files(config)
    print(f"done {report.done}, skipped {report.skipped} (already there), failed {len(report.failed)}",
          file=sys.stderr)
    if report.report_path is not None:
        print(f"report: {report.report_path}", file=sys.stderr)
    return 1 if report.failed else 0


# -- optimize ----------------------------------------------------------------------------------

def _add_optimize(sub: argparse._SubParsersAction) -> None:
    from fastnst.device import DEVICE_CHOICES
    from fastnst.optimize import OPTIMIZERS

    p = sub.add_parser("optimize", help="stylize one photo by optimizing its pixels (Gatys et al.)",
                       description="Stylize CONTENT by optimizing the pixels of an image against the same content, "
                                   "style and total-variation losses as training. Writes OUT and a JSON of the "
                                   "loss history (OUT with .json). Slow but needs no trained model: the quality "
                                   "reference, and a preview of a style and its loss weights.")
    p.add_argument("content", help="content photo")
    p.add_argument("styles", nargs="*", metavar="STYLE", help="style image(s) (or use --style)")
    p.add_argument("--style", dest="more_styles", nargs="+", action="extend", default=[], metavar="FILE",
                   help="style image(s); several are blended (see --style-blend)")
    p.add_argument("--style-blend", metavar="W1,W2,...",
                   help="blend weights of the style images' Gram matrices, one per style (normalised; default equal)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output image (.png, .jpg, .webp, ...)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="lbfgs",
                   help="lbfgs (default; strong-Wolfe line search) or adam")
    p.add_argument("--iterations", type=_positive_int, default=300,
                   help="total iterations over all scales, counted as function evaluations (one VGG "
                        "forward+backward each): Adam makes one step per evaluation, L-BFGS's line search "
                        "~1.1-1.2 evaluations per step (default 300)")
    p.add_argument("--lr", type=float, help="step size (default: 1 for lbfgs, 0.05 for adam, in 0-1 pixel units)")
    p.add_argument("--lbfgs-history", type=_positive_int, default=50,
                   help="L-BFGS curvature pairs kept (memory: 2 images each; default 50)")
    p.add_argument("--init", default="content", metavar="content|noise|IMAGE",
                   help="start from the content photo (default), uniform noise, or an image file (e.g. a fast "
                        "network's output; resized to the output size)")
    p.add_argument("--seed", type=int, default=0, help="noise seed for --init noise (default 0)")
    p.add_argument("--size", type=_positive_int, default=512,
                   help="long side of the output in pixels; the photo is resized up or down to it (default 512)")
    p.add_argument("--style-size", type=_positive_int, help="long side of the style image(s) (default: --size)")
    p.add_argument("--scales", type=_positive_int, default=1,
                   help="multi-scale: start at 1/2^(N-1) of --size, upsample and refine, each scale getting an "
                        "equal share of --iterations (default 1)")
    p.add_argument("--preserve-color", action="store_true", help="keep the photo's colours (luminance transfer)")
    p.add_argument("--save-every", type=int, default=0, metavar="N",
                   help="also write OUT-<iteration> images every N iterations (default 0: none)")
    p.add_argument("--history", metavar="JSON", help="loss-history file (default: OUT with the suffix .json)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    _add_loss_options(p)
    p.set_defaults(run=_run_optimize)


def _run_optimize(args: argparse.Namespace) -> int:
    from fastnst.optimize import OptimizeConfig, optimize

    styles = tuple(args.styles) + tuple(args.more_styles)
    if not styles:
        raise ConfigError("no style image: give STYLE after CONTENT, or --style FILE ...")
    config = OptimizeConfig(
        content=args.content, styles=styles, output=args.output, style_blend=args.style_blend,
        loss=_loss_spec(args), optimizer=args.optimizer, iterations=args.iterations, lr=args.lr,
        lbfgs_history=args.lbfgs_history, init=args.init, seed=args.seed, size=args.size,
        style_size=args.style_size, preserve_color=args.preserve_color, scales=args.scales,
        save_every=args.save_every, history=args.history, device=args.device)
    result = optimize(config)
    final = result.final
    print(f"wrote {result.output} ({final['width']}x{final['height']}) and {result.history_path}: "
          f"{config.iterations} iterations in {result.seconds:.1f} s; loss total {final['total']:.6g} = content "
          f"{final['content']:.6g} + style {final['style']:.6g} + tv {final['tv']:.6g}")
    return 0


# -- score -------------------------------------------------------------------------------------

def _add_score(sub: argparse._SubParsersAction) -> None:
    from fastnst.device import DEVICE_CHOICES

    p = sub.add_parser("score", help="content, style and TV losses of stylized images",
                       description="Measure the content, style and total-variation losses of images under a loss "
                                   "configuration, with the training loss code: compares fast-network outputs and "
                                   "optimized images on the same footing. The content photo is resized to each "
                                   "image's size; the style to --style-size (default: each image's long side).")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="stylized images to score")
    p.add_argument("--content", required=True, help="content photo the images were made from")
    p.add_argument("--style", dest="styles", action="append", required=True, metavar="FILE",
                   help="style image; repeat for a blend (--style a.jpg --style b.jpg)")
    p.add_argument("--style-blend", metavar="W1,W2,...", help="blend weights of several style images (default equal)")
    p.add_argument("--style-size", type=_positive_int, help="long side of the style image(s) (default: each image's)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    _add_loss_options(p)
    p.set_defaults(run=_run_score)


def _run_score(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from fastnst.score import ScoreConfig, score_images

    config = ScoreConfig(images=tuple(args.images), content=args.content, styles=tuple(args.styles),
                         style_blend=args.style_blend, loss=_loss_spec(args), style_size=args.style_size,
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


# -- export ------------------------------------------------------------------------------------

def _add_export(sub: argparse._SubParsersAction) -> None:
    from fastnst.export import DEFAULT_OPSET, IO_MODES

    p = sub.add_parser("export", help="export a model to ONNX, verified against ONNX Runtime",
                       description="Export a model to one .onnx file that runs at any batch size and image size "
                                   "(padding and crop inside the graph), then check it with onnx.checker and "
                                   "ONNX Runtime against PyTorch on two image sizes.")
    p.add_argument("model", help="model file (.safetensors, or pytorch/examples .pth)")
    p.add_argument("-o", "--output", required=True, help="output .onnx file (written atomically)")
    p.add_argument("--io", choices=IO_MODES, default="float",
                   help="float: NCHW float32 RGB in 0-1 in and out (default); uint8: NHWC uint8 RGB pixels in and "
                        "out, with scaling, clamping and rounding inside the graph")
    p.add_argument("--fp16", action="store_true",
                   help="half-precision weights and activations, InstanceNorm in fp32 (half the size, for GPUs)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                   help="check the graph with onnx.checker and ONNX Runtime vs PyTorch (default on)")
    p.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    import onnxruntime

    from fastnst.export import ExportConfig, export_onnx

    config = ExportConfig(model=args.model, output=args.output, io=args.io, fp16=args.fp16, opset=args.opset,
                          verify=args.verify)
    result = export_onnx(config)
    meta = result.metadata
    print(f"wrote {result.path}: {result.nodes} nodes, {result.size_bytes / 1e6:.1f} MB, opset {result.opset}, "
          f"{meta['precision']}, input {meta['input']}; exported in {result.export_seconds:.1f} s")
    if result.checks:
        diffs = ", ".join(f"{c.max_abs:.2g} at {'x'.join(map(str, c.shape))}" for c in result.checks)
        print(f"verified with onnxruntime {onnxruntime.__version__}: max |ONNX Runtime - PyTorch| {diffs} "
              f"(tolerance {result.tolerance:.3g} on {result.value_range})")
    else:
        print("not verified (--no-verify)")
    return 0


# -- train -------------------------------------------------------------------------------------

_TRAIN_EPILOG = """\
loss weights depend on the VGG flavour. The defaults (content 1e5, style 1e10) suit the torchvision
flavour (pytorch/examples). With the Caffe VGG19 (BGR 0-255 activations, far larger) use e.g.
  --vgg vgg19 --vgg-weights vgg19_caffe_block1-3.pth --style-layers relu1_1,relu2_1,relu3_1
  --content-layers relu2_2 --content-weight 1 --style-weight 1
(tested on 256 px crops for 600 steps; more style weight: stronger texture, less of the photo)
Under torchrun --nproc_per_node N the same command trains with DistributedDataParallel
(--batch-size is per process). Ctrl-C saves a checkpoint; continue with --resume auto."""


def _add_train(sub: argparse._SubParsersAction) -> None:
    from fastnst.device import DEVICE_CHOICES
    from fastnst.models.transformer import SPECS
    from fastnst.train import AMP_CHOICES, DEFAULT_EPOCHS, LR_DECAYS

    p = sub.add_parser("train", help="train a style model from a style image and a folder of photos",
                       description="Train a feed-forward style network (Johnson et al. 2016) on a folder of "
                                   "photos for one style image and write it as a .safetensors model file.",
                       epilog=_TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--style", required=True, nargs="+", metavar="IMAGE",
                   help="the style image; several make one model carrying all of them (conditional instance norm)")
    p.add_argument("--style-name", nargs="+", metavar="NAME", help="names of the styles (default: the file stems)")
    p.add_argument("--init", metavar="MODEL",
                   help="add the --style image(s) to this trained model, training only their norm parameters (the "
                        "model's other styles stay exactly as they are)")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="folder of training photos, searched recursively (e.g. COCO train2014/)")
    p.add_argument("-o", "--output", required=True, metavar="MODEL",
                   help="model file to write (.safetensors); the resumable checkpoint goes beside it "
                        "as MODEL.ckpt.pt")
    p.add_argument("--spec", choices=sorted(SPECS), default="johnson", help="network size (default johnson)")
    p.add_argument("--image-size", type=_positive_int, default=256,
                   help="training crops are SIZE x SIZE pixels (default 256)")
    p.add_argument("--style-size", type=_positive_int,
                   help="downsize the style image's long side to this before taking its Grams (default: as is)")
    p.add_argument("--batch-size", type=_positive_int, default=4, help="photos per step and process (default 4)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--lr-decay", choices=LR_DECAYS, default="none",
                   help="decay the learning rate to 0 over the run (default none)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=_positive_int, help="optimiser steps to train")
    length.add_argument("--epochs", type=_positive_int,
                        help=f"passes over the photos (default {DEFAULT_EPOCHS} when --steps is not given)")
    p.add_argument("--seed", type=int, default=42, help="seed of weights and data order (default 42)")
    p.add_argument("--amp", choices=AMP_CHOICES, default="none",
                   help="mixed precision: bf16 is about 2x faster on CPUs with AVX512-BF16/AMX (default none)")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory layout (try on GPUs)")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks (slow start)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--workers", type=int, default=2, help="photo-decoding processes (default 2; 0: in-process)")
    p.add_argument("--logdir", metavar="DIR", help="write TensorBoard logs (losses, lr, images/s, samples) here")
    p.add_argument("--log-every", type=_positive_int, default=10, help="log losses every N steps (default 10)")
    p.add_argument("--sample-every", type=int, default=500,
                   help="TensorBoard grid of sample stylizations every N steps (default 500; 0: off)")
    p.add_argument("--sample-images", nargs="+", metavar="IMAGE",
                   help="photos for the sample grid (default: --holdout photos held out from --data)")
    p.add_argument("--holdout", type=int, default=4,
                   help="photos held out of training as samples when --sample-images is not given (default 4)")
    p.add_argument("--checkpoint-every", type=int, default=500,
                   help="write the resumable checkpoint every N steps (default 500; 0: only at the end/on Ctrl-C)")
    p.add_argument("--resume", metavar="PATH|auto",
                   help="continue from a checkpoint; auto: the one beside -o if it exists, else start afresh")
    _add_loss_options(p, style_weights=True)
    p.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    import os

    from fastnst.train import TrainConfig, TrainingInterrupted, fit

    weights = tuple(args.style_weight or ())
    args.style_weight = weights[0] if len(weights) == 1 else None  # one value: LossSpec's; several: per style
    config = TrainConfig(
        style=tuple(args.style), style_names=tuple(args.style_name or ()), init=args.init,
        style_weights=weights if len(weights) > 1 else (), data=args.data, output=args.output, spec=args.spec,
        loss=_loss_spec(args),
        image_size=args.image_size, style_size=args.style_size, batch_size=args.batch_size, lr=args.lr,
        lr_decay=args.lr_decay, steps=args.steps, epochs=args.epochs, seed=args.seed, amp=args.amp,
        channels_last=args.channels_last, compile=args.compile, device=args.device, workers=args.workers,
        logdir=args.logdir, log_every=args.log_every, sample_every=args.sample_every,
        sample_images=tuple(args.sample_images or ()), holdout=args.holdout,
        checkpoint_every=args.checkpoint_every, resume=args.resume)
    try:
        path = fit(config)
    except TrainingInterrupted as exc:
        print(f"fastnst train: {exc}", file=sys.stderr)
        return 130
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line from rank 0
        print(f"wrote {path}")
    return 0


# -- entry point -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastnst", description="Fast neural style transfer.")
    parser.add_argument("--version", action="version", version=f"fastnst {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("-q", "--quiet", action="store_true", help="only log errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_info, _add_convert, _add_stylize, _add_optimize, _add_score, _add_export, _add_train):
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
