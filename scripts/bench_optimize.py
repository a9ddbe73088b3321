"""Benchmark pixel optimisation (``fastnst optimize``) against one fast-network forward, and its loss curve.

Prints, measured side by side in one run (the variants interleaved A B A B ..., medians reported, since
other processes may load the machine):

1. seconds per optimisation iteration (one VGG forward+backward and optimizer update: what ``--iterations``
   counts) at each size, through the real ``optimize`` code, and the seconds of one fast-network forward
   (``TransformerNet``, default spec, random weights) at the same size; the speed ratio of one forward
   against 100 / 300 / 500 iterations (Johnson et al. report ~200x / 600x / 1000x on a GPU with VGG16 to
   relu4_3). Two loss networks: the real Caffe VGG19 to relu3_1 used here, and the paper's VGG16 to relu4_3
   (random weights: the time does not depend on the values);
2. the loss curve of ``optimize`` on amber x mosaic with the real Caffe VGG19: total loss after 50, 100 and
   200 iterations, single-scale and with ``--scales 2`` (each with its wall time).

    python scripts/bench_optimize.py                       # full run (~15 min on 2 idle cores)
    python scripts/bench_optimize.py --sizes 128 --curve-size 128 --curve 20,40 --reps 3   # quick check
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from fastnst.losses import LossSpec
from fastnst.models.transformer import SPECS, TransformerNet
from fastnst.optimize import OptimizeConfig, optimize

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CAFFE = SHARED / "vgg" / "vgg19_caffe_block1-3.pth"
CONTENT = SHARED / "content" / "amber.jpg"
STYLE = SHARED / "style" / "mosaic.jpg"

# The loss configuration documented for the real Caffe weights (see the README section).
CAFFE_LOSS = dict(vgg="vgg19", vgg_flavour="caffe", content_layers="relu2_2",
                  style_layers="relu1_1,relu2_1,relu3_1", content_weight=1.0, style_weight=300.0, tv_weight=1e4)
PAPER_LOSS = dict(vgg="vgg16", vgg_flavour="torchvision", content_layers="relu2_2",
                  style_layers="relu1_2,relu2_2,relu3_3,relu4_3")


def random_weights(folder: Path, arch: str, upto: str) -> Path:
    """A VGG weight file with random values (timing only) for when the real one is absent or too shallow."""
    from fastnst.models.vgg import VGGFeatures

    torch.manual_seed(0)
    path = folder / f"{arch}-{upto}-random.pth"
    # He-scaled, so activations keep their size through the layers (tiny values would hit slow denormals).
    state = {k: torch.randn_like(v) * (2.0 / v[0].numel()) ** 0.5 if v.dim() > 1 else torch.zeros_like(v)
             for k, v in VGGFeatures(arch, [upto]).state_dict().items()}
    torch.save(state, path)
    return path


def square_images(folder: Path, size: int) -> tuple[Path, Path]:
    """amber and mosaic cropped square (so the optimised image is size x size), or generated stand-ins."""
    from PIL import Image

    out = []
    for src, name in ((CONTENT, "content"), (STYLE, "style")):
        path = folder / f"{name}-{size}.png"
        if src.is_file():
            img = Image.open(src).convert("RGB")
            side = min(img.size)
            img.crop((0, 0, side, side)).save(path)
        else:
            torch.manual_seed(len(name))
            Image.fromarray((torch.rand(size, size, 3) * 255).byte().numpy()).save(path)
        out.append(path)
    return out[0], out[1]


def seconds_per_iteration(loss: LossSpec, content: Path, style: Path, size: int, out: Path, n: int = 6) -> float:
    """Steady-state seconds per optimisation iteration, from the progress callback's timestamps."""
    stamps: list[float] = []
    config = OptimizeConfig(content=str(content), styles=(str(style),), output=str(out), loss=loss,
                            iterations=n, size=size, device="cpu")
    optimize(config, progress=lambda entry: stamps.append(time.perf_counter()))
    return (stamps[-1] - stamps[1]) / (len(stamps) - 2)  # skip the first evaluation (warm-up)


def seconds_per_forward(net: TransformerNet, size: int) -> float:
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        start = time.perf_counter()
        net(x)
        return time.perf_counter() - start


def speed(args: argparse.Namespace, tmp: Path) -> None:
    net = TransformerNet(SPECS["johnson"]).eval()
    losses = {"caffe vgg19->relu3_1": LossSpec(**CAFFE_LOSS, vgg_weights=str(CAFFE if CAFFE.is_file() else
                                                                             random_weights(tmp, "vgg19", "relu3_1"))),
              "paper vgg16->relu4_3": LossSpec(**PAPER_LOSS, vgg_weights=str(random_weights(tmp, "vgg16",
                                                                                           "relu4_3")))}
    print(f"\n== speed: one iteration vs one fast-network forward (median of {args.reps}, interleaved) ==")
    print(f"{'size':>5} {'loss network':22} {'s/iteration':>12} {'s/forward':>10} {'100 it':>8} {'300 it':>8} "
          f"{'500 it':>8}")
    for size in args.sizes:
        content, style = square_images(tmp, size)
        seconds_per_forward(net, size)  # warm-up
        times: dict[str, list[float]] = {"forward": [], **{name: [] for name in losses}}
        for _ in range(args.reps):
            for name, loss in losses.items():
                times["forward"].append(seconds_per_forward(net, size))
                times[name].append(seconds_per_iteration(loss, content, style, size, tmp / "speed.png"))
        fwd = statistics.median(times["forward"])
        for name in losses:
            it = statistics.median(times[name])
            ratios = " ".join(f"{n * it / fwd:7.0f}x" for n in (100, 300, 500))
            print(f"{size:>4}² {name:22} {it:12.3f} {fwd:10.4f} {ratios}", flush=True)


def curve(args: argparse.Namespace, tmp: Path) -> None:
    if not (CAFFE.is_file() and CONTENT.is_file() and STYLE.is_file()):
        print(f"\n(loss curve skipped: needs {CAFFE}, {CONTENT} and {STYLE})")
        return
    loss = LossSpec(**CAFFE_LOSS, vgg_weights=str(CAFFE))
    print(f"\n== loss curve: amber x mosaic, {args.curve_size} px, Caffe VGG19, L-BFGS ==")
    print(f"{'run':28} {'iterations':>10} {'total':>12} {'content':>11} {'style':>11} {'tv':>8} {'wall s':>8} "
          f"{'L-BFGS steps':>12}")

    def run(iterations: int, scales: int):
        """The result, and the wall time (from the start, setup included) at each evaluation."""
        config = OptimizeConfig(content=str(CONTENT), styles=(str(STYLE),), output=str(tmp / "curve.png"),
                                loss=loss, iterations=iterations, size=args.curve_size, scales=scales, device="cpu")
        start = time.perf_counter()
        stamps: list[float] = []
        result = optimize(config, progress=lambda entry: stamps.append(time.perf_counter() - start))
        return result, stamps

    def show(name: str, n: int, entry: dict, wall: float, steps: int | str) -> None:
        print(f"{name:28} {n:>10} {entry['total']:12.5g} {entry['content']:11.5g} {entry['style']:11.5g} "
              f"{entry['tv']:8.3g} {wall:8.1f} {steps!s:>12}", flush=True)

    longest = max(args.curve)
    single, stamps = run(longest, 1)
    for n in args.curve:  # the first n evaluations of the longest run are exactly those of a run of n
        show("single scale", n, single.history[n - 1], stamps[n - 1],
             single.stages[0]["lbfgs_steps"] if n == longest else "")
    for n in args.curve:
        multi, stamps = run(n, 2)
        show("--scales 2 (half, then full)", n, multi.final, stamps[-1],
             "+".join(str(s["lbfgs_steps"]) for s in multi.stages))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="square sizes for the speed part")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions per size (median reported)")
    parser.add_argument("--curve-size", type=int, default=384, help="long side for the loss curve (default 384)")
    parser.add_argument("--curve", type=lambda t: sorted(int(x) for x in t.split(",")), default=[50, 100, 200],
                        help="iteration counts for the loss curve (default 50,100,200)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-curve", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; Caffe VGG19 "
          f"{'found' if CAFFE.is_file() else 'absent (random weights for timing)'}")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_speed:
            speed(args, Path(tmp))
        if not args.skip_curve:
            curve(args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
