"""Benchmarks of the stylization engine, measured side by side in one run.

    python scripts/bench_stylize.py                       # everything (about 30-60 min on 2 cores)
    python scripts/bench_stylize.py --only e2e --photos 60

Sections (real rain_princess weights from ../shared/data, loaded with ``load_model``):

* ``e2e``: images/s over ../shared/data/photos for (a) a naive loop as pytorch/examples' eval
  does it (PIL open, to tensor, forward, save; one photo at a time) in a process of its own,
  (a') the same loop in this process, where glibc's malloc is tuned as fastnst does it,
  (b) the engine (``stylize_files``) and (c) the engine's network alone on the same photos
  already decoded (compute only). The photos are cut into chunks and the three run interleaved per chunk,
  so a change in machine load hits all three. Targets: b >= 1.5 a, b >= 0.9 c.
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
  OpenVINO's compiling costs (dynamic shapes vs one graph per shape). Target: the default CPU
  path >= 5x eager fp32 at >= 50 dB.
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
from fastnst.engine import StylizeConfig, Stylizer, default_streams
from fastnst.images import open_image, to_tensor, to_uint8
from fastnst.models.transformer import macs_per_pixel
from fastnst.pipeline import stylize_files
from fastnst.tiling import plan, tile_context

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
MODEL = SHARED / "models" / "rain_princess.pth"


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


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


def naive_process(model: Path, photos: list[Path], out: Path) -> float:
    """Seconds of ``naive_loop`` in a fresh Python process, as a user runs pytorch/examples' eval.

    A process of its own: the engine's process has glibc told to keep freed memory
    (``fastnst.device.keep_freed_memory``), which a plain script does not have. The
    time excludes start-up and model loading.
    """
    command = [sys.executable, __file__, "--naive-child", str(model), str(out), *map(str, photos)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(result.stdout.split()[-1])


def _naive_child(argv: list[str]) -> int:
    model, out, photos = Path(argv[0]), Path(argv[1]), [Path(p) for p in argv[2:]]
    net = load_model(model)[0].eval()
    seconds = _timed(lambda: naive_loop(net, photos, out))
    print(seconds)
    return 0


def compute_only(stylizer: Stylizer, decoded: list[torch.Tensor], streams: int) -> None:
    """The engine's network work on already decoded photos, with its parallelism and no file I/O."""
    def one(pixels: torch.Tensor) -> None:
        stylizer.stylize(pixels[None], stylizer.empty_like_pixels(pixels[None]))

    if streams == 1:
        for pixels in decoded:
            one(pixels)
        return
    threads = torch.get_num_threads()
    with ThreadPoolExecutor(streams, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        list(pool.map(one, decoded))
    torch.set_num_threads(threads)


def bench_e2e(args: argparse.Namespace, model: Path, out: Path) -> dict:
    photos = sorted((SHARED / "photos").glob("*.jpg"))[: args.photos]
    start = time.perf_counter()
    stylizer = Stylizer(model, device="cpu")  # the default backend: auto
    load_seconds = time.perf_counter() - start
    torch_stylizer = Stylizer(model, device="cpu", backend="torch")
    streams = default_streams(stylizer)  # the engine's default (set on the backend by stylize_files)
    chunks = [photos[i::args.chunks] for i in range(args.chunks)]
    for path in photos:
        path.read_bytes()  # every variant reads from the page cache
    times = {"naive": [], "naive tuned": [], "engine": [], "engine torch": [], "compute": []}
    net = load_model(model)[0].eval()
    for number, chunk in enumerate(chunks):
        decoded = [torch.from_numpy(np.array(open_image(p))).permute(2, 0, 1) for p in chunk]
        target = out / f"e2e-{number}"
        config = StylizeConfig(model=str(model), inputs=tuple(map(str, chunk)), output_dir=str(target / "engine"),
                               overwrite=True, quality=95)
        (target / "naive").mkdir(parents=True, exist_ok=True)
        runs = {
            "naive": lambda chunk=chunk, target=target: naive_process(model, chunk, target / "naive"),
            "naive tuned": lambda chunk=chunk, target=target: naive_loop(net, chunk, target / "naive"),
            "engine": lambda config=config: stylize_files(config, stylizer),
            "engine torch": lambda config=config: stylize_files(config, torch_stylizer),
            "compute": lambda decoded=decoded: compute_only(stylizer, decoded, streams),
        }
        for name, run in runs.items():
            seconds = run() if name == "naive" else _timed(run)
            times[name].append(seconds)
            print(f"  chunk {number + 1}/{len(chunks)} {name:11} {len(chunk) / seconds:6.3f} img/s", flush=True)
    rates = {k: len(photos) / sum(v) for k, v in times.items()}
    per_chunk = [times["naive"][i] / times["engine"][i] for i in range(len(chunks))]
    share = [times["compute"][i] / times["engine"][i] for i in range(len(chunks))]
    pixels = sum(Image.open(p).size[0] * Image.open(p).size[1] for p in photos)
    print(f"e2e: {len(photos)} photos, {pixels / len(photos) / 1e3:.0f} kpx average, streams {streams}; engine = "
          f"fastnst stylize's default backend (auto: {stylizer.backend.name}"
          f"{' ' + stylizer.backend.dtype if stylizer.backend.name == 'openvino' else ''}), loaded in "
          f"{load_seconds:.1f} s (not in the rates: export and compile, once per run)")
    for name, rate in rates.items():
        print(f"  {name:11} {rate:6.3f} img/s")
    print(f"  engine / naive   {rates['engine'] / rates['naive']:.2f}x (median per chunk "
          f"{statistics.median(per_chunk):.2f}x)  target >= 1.5x")
    print(f"  engine / naive in this process {rates['engine'] / rates['naive tuned']:.2f}x")
    with_load = len(photos) / (sum(times["engine"]) + load_seconds)
    print(f"  engine / naive with the model load {with_load / rates['naive']:.2f}x  (issue 9 target: default "
          f"backend >= 4x naive)")
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

def _backend_child(argv: list[str]) -> int:
    """Child process: seconds of ``repeats`` torch fp32 forwards of a height×width image, after a warm-up."""
    model, height, width, repeats = Path(argv[0]), int(argv[1]), int(argv[2]), int(argv[3])
    backend = TorchBackend(load_model(model)[0], "cpu")
    x = _bench_photo(height, width)
    backend.run(x)
    print(" ".join(str(_timed(lambda: backend.run(x))) for _ in range(repeats)))
    return 0


def _bench_photo(height: int, width: int) -> torch.Tensor:
    """A real photo at exactly height×width, (1, 3, H, W) in 0–1."""
    name = "photos/bsds500_val_101085.jpg" if width < 1000 else "content/avril.jpg"
    photo = open_image(SHARED / name)
    return to_tensor(photo.resize((width, height), Image.Resampling.LANCZOS))[None]


def bench_backends(args: argparse.Namespace, model: Path) -> None:
    import os

    from fastnst.backends import runtime_version
    from fastnst.backends.onnxruntime import OnnxRuntimeBackend
    from fastnst.export import to_onnx

    net, info = load_model(model)
    macs = macs_per_pixel(info.spec)
    start = time.perf_counter()
    proto = to_onnx(net, info)
    print(f"backends: ONNX export of {model.name} (in memory, for onnxruntime/openvino) "
          f"{time.perf_counter() - start:.1f} s")
    variants = {"torch fp32, glibc default malloc": None, "torch fp32 (malloc fix)": TorchBackend(net, "cpu"),
                "torch bf16": TorchBackend(load_model(model)[0], "cpu", dtype="bf16"),
                "onnxruntime fp32": OnnxRuntimeBackend(proto, "cpu")}
    has_openvino = runtime_version("openvino") is not None
    if has_openvino:
        from fastnst.backends.openvino import OpenVinoBackend, default_dtype

        for dtype in ("fp32", "bf16"):
            start = time.perf_counter()
            variants[f"openvino {dtype}"] = OpenVinoBackend(proto, dtype=dtype)
            print(f"  openvino {dtype}: read and compiled (dynamic shapes) in {time.perf_counter() - start:.2f} s")
        default = f"openvino {default_dtype()}"
    else:
        print("  openvino is not installed: pip install fastnst[openvino]")
        default = "torch fp32 (malloc fix)"
    env = {**os.environ, "MALLOC_MMAP_MAX_": "65536"}  # glibc's own default; its presence turns the fix off
    for height, width in ((321, 481), (1080, 1920)):
        x = _bench_photo(height, width)
        first = {}
        for name, backend in variants.items():
            if backend is not None:
                first[name] = _timed(lambda backend=backend, x=x: backend.run(x))  # warm-up; first run at this size
        reference = to_uint8(variants["torch fp32 (malloc fix)"].run(x)).numpy()
        outputs = {name: to_uint8(b.run(x)).numpy() for name, b in variants.items() if b is not None}
        seconds = {name: [] for name in variants}
        repeats = args.repeats + 2 if width < 1000 else args.repeats
        for _ in range(repeats):
            for name, backend in variants.items():
                if backend is None:
                    command = [sys.executable, __file__, "--backend-child", str(model), str(height), str(width), "1"]
                    result = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
                    seconds[name].append(float(result.stdout.split()[-1]))
                else:
                    seconds[name].append(_timed(lambda backend=backend, x=x: backend.run(x)))
        eager = statistics.median(seconds["torch fp32 (malloc fix)"])
        print(f"backends at {width}x{height}, batch 1, median of {repeats} interleaved runs "
              f"({torch.get_num_threads()} threads):")
        for name in variants:
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
            print(f"  {name:32} {ms:8.0f} ms  {gflops:6.1f} GFLOP/s  {eager * 1e3 / ms:5.2f}x eager fp32"
                  f"{quality}{mark}")
        if has_openvino:
            print("  first run at this size (dynamic shapes, nothing to compile): " + ", ".join(
                f"{name} {first[name] * 1e3:.0f} ms" for name in variants if name.startswith("openvino")))
    if has_openvino:
        _bench_compile_cost(proto)


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
    from fastnst.styles import add_styles

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
    pixels = torch.from_numpy(np.array(mosaic)).permute(2, 0, 1)[None]
    untiled = Stylizer(model, tile_size=2048)
    whole = untiled.stylize(pixels, untiled.empty_like_pixels(pixels))[0].permute(1, 2, 0).numpy()
    (out / "tiling").mkdir(parents=True, exist_ok=True)
    Image.fromarray(whole).save(out / "tiling" / "untiled.png")
    for tile_stats in ("thumbnail", "exact"):
        stylizer = Stylizer(model, tile_size=1024, tile_stats=tile_stats)
        start = time.perf_counter()
        tiled = stylizer.stylize(pixels, stylizer.empty_like_pixels(pixels))[0].permute(1, 2, 0).numpy()
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
    parser.add_argument("--only", default="e2e,efficiency,backends,rss,tiling,multistyle",
                        help="comma-separated sections")
    parser.add_argument("--photos", type=int, default=206, help="how many of the photos for e2e")
    parser.add_argument("--chunks", type=int, default=4, help="interleaving chunks for e2e")
    parser.add_argument("--repeats", type=int, default=3, help="repeats for efficiency (1080p: one fewer)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    parser.add_argument("--peak", type=float, default=340.0,
                        help="nominal fp32 matmul peak in GFLOP/s (default 340: measured on the project's CPU "
                             "machines; torch's own 2048² matmul reaches only about half of it there)")
    parser.add_argument("--out", type=Path, help="keep outputs here (default: a temporary folder)")
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
        if "e2e" in sections:
            bench_e2e(args, model, out)
        if "efficiency" in sections:
            bench_efficiency(args, model)
        if "backends" in sections:
            bench_backends(args, model)
        if "rss" in sections:
            bench_rss(args, model, out)
        if "tiling" in sections:
            bench_tiling(args, model, out)
        if "multistyle" in sections:
            bench_multistyle(args, model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
