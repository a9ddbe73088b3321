"""``fastnst export``: ONNX export with verification."""

from __future__ import annotations

import argparse


def add_export(sub: argparse._SubParsersAction, options: bool = True) -> None:
    p = sub.add_parser("export", help="export a model to ONNX, verified against ONNX Runtime",
                       description="Export a model to one .onnx file that runs at any batch size and image size "
                                   "(padding and crop inside the graph), then check it with onnx.checker and "
                                   "ONNX Runtime against PyTorch on two image sizes.")
    p.set_defaults(run=_run_export)
    if not options:
        return
    from fastnst.export import DEFAULT_OPSET, IO_MODES

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
