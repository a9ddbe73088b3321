"""Benchmark: PyTorch eager vs ONNX Runtime (fp32, fp16) on the same model, side by side in one run.

Exports the model (real rain_princess weights from ../shared when present, else a
random johnson network), prints export time and file size, then times eager
PyTorch and ONNX Runtime at each size with the variants interleaved (A B C A B C
...), so that other load on the machine hits all alike, and reports medians, the
eager/ORT ratio and each runtime's max difference from eager on 0–255.

    python scripts/bench_export.py                       # 256², 512², 1920×1080, 5 rounds
    python scripts/bench_export.py --sizes 256x256 --repeats 3 --no-fp16

Eager PyTorch suffers from glibc malloc at large sizes (up to 1.8× at ≥1024²), while
ONNX Runtime has its own arena; unless ``--plain-malloc``, the script re-runs itself
with MALLOC_MMAP_MAX_=0 and a high MALLOC_TRIM_THRESHOLD_ so eager gets its best case.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from fastnst.backends.onnxruntime import OnnxRuntimeBackend
from fastnst.checkpoint import load_model, save_model
from fastnst.export import ExportConfig, export_onnx
from fastnst.models.transformer import SPECS, TransformerNet

REPO = Path(__file__).resolve().parents[1]
REAL_MODEL = REPO.parent / "shared" / "data" / "models" / "rain_princess.pth"
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 34)}


def parse_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` → (height, width)."""
    width, _, height = text.lower().partition("x")
    return int(height), int(width)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help=f"model file (default {REAL_MODEL} if present, else random johnson weights)")
    p.add_argument("--sizes", nargs="+", default=["256x256", "512x512", "1920x1080"], help="WIDTHxHEIGHT")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per size (after one warm-up)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both runtimes")
    p.add_argument("--no-fp16", dest="fp16", action="store_false", help="skip the fp16 graph")
    p.add_argument("--plain-malloc", action="store_true", help="keep glibc's default malloc settings")
    args = p.parse_args()
    if not args.plain_malloc and any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})

    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        return bench(args, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def bench(args: argparse.Namespace, folder: Path) -> int:
    model = Path(args.model) if args.model else REAL_MODEL
    if not model.is_file():
        torch.manual_seed(0)
        model = save_model(folder / "johnson-random.safetensors", TransformerNet(SPECS["johnson"]))
    net, _ = load_model(model)
    net.eval()
    print(f"model {model} ({net.num_parameters():,} parameters); torch {torch.__version__}, "
          f"{args.threads} threads; malloc {'default' if args.plain_malloc else 'tuned'}; "
          f"load average {os.getloadavg()[0]:.1f} (other processes share the cores)")

    backends: dict[str, OnnxRuntimeBackend] = {}
    for precision in ("fp32", "fp16") if args.fp16 else ("fp32",):
        start = time.perf_counter()
        result = export_onnx(ExportConfig(model=model, output=folder / f"model-{precision}.onnx",
                                          fp16=precision == "fp16"))
        total = time.perf_counter() - start
        checks = ", ".join(f"{c.max_abs:.2g}" for c in result.checks)
        print(f"export {precision}: {result.export_seconds:.1f} s (with loading and verification {total:.1f} s), "
              f"{result.size_bytes / 1e6:.2f} MB, {result.nodes} nodes, verified max abs {checks} (0-1 range)")
        backends[f"ort-{precision}"] = OnnxRuntimeBackend.from_file(result.path, device="cpu", threads=args.threads)

    def eager(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return net(x)

    runners = {"eager": eager, **{name: b.run for name, b in backends.items()}}
    print(f"\n{'size':>10} " + " ".join(f"{name + ' ms':>12}" for name in runners)
          + " " + " ".join(f"{'eager/' + name:>15}" for name in backends)
          + " " + " ".join(f"{name + ' maxdiff':>16}" for name in backends))
    for size in args.sizes:
        height, width = parse_size(size)
        x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
        outputs = {name: run(x) for name, run in runners.items()}  # warm-up, and the outputs to compare
        times: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(args.repeats):
            for name, run in runners.items():
                start = time.perf_counter()
                run(x)
                times[name].append(time.perf_counter() - start)
        med = {name: statistics.median(t) * 1000 for name, t in times.items()}
        reference = (outputs["eager"].clamp(0, 1) * 255).round()
        diffs = {name: ((outputs[name].clamp(0, 1) * 255).round() - reference).abs().max().item() for name in backends}
        print(f"{size:>10} " + " ".join(f"{med[name]:12.1f}" for name in runners)
              + " " + " ".join(f"{med['eager'] / med[name]:14.2f}x" for name in backends)
              + " " + " ".join(f"{diffs[name]:16.0f}" for name in backends), flush=True)
    print("\nmaxdiff: max |ORT - eager| of the 8-bit images (0-255); medians of interleaved rounds; "
          f"load average now {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
