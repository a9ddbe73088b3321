"""Training speed and memory: a plain pytorch/examples-style step against fastnst's ``fit``, side by side.

    python scripts/bench_train.py [--rounds 3] [--steps 5] [--variants baseline,fastnst-fp32,fastnst-bf16]

Setting (the issue's): batch 4, 256² crops, the ``johnson`` network, VGG16 up to
relu4_3 with random weights (style relu1_2,relu2_2,relu3_3,relu4_3, content
relu2_2, weights 1e5 / 1e10), Adam 1e-3, CPU.

* ``baseline``: the straightforward step of pytorch/examples' fast_neural_style:
  eager fp32, the full VGG run separately on the output and on the content batch,
  Gram matrices and MSEs written out plainly, ``torch.optim.Adam`` defaults.
* ``fastnst-*``: ``fastnst.train.fit`` itself (data loading from files included,
  ``--workers 0``) with the options in the name.
* ``recipe-bf16`` / ``recipe-fp32``: what the bundled styles train with (docs/recipe.md):
  a new style's norm rows on a trained trunk (``--init``; a random one here), the Caffe
  VGG19 to relu3_1 (random weights) with its default loss (style at scales 1, ½, ¼),
  random 256² crops of photos scaled to 384 px, style image at 384 px, batch 4.
  Target: ``recipe-bf16`` >= 3x ``baseline`` (issue 18). ``recipe-all-bf16``: the same with
  ``--init-trains all`` (every weight trains; not in the default set). ``recipe-fp32-cl``,
  ``recipe-fp32-compile``, ``recipe-fp32-cl-compile``: recipe-fp32 with ``--channels-last``,
  ``--compile`` or both (not in the default set; docs/recipe.md has what they measured).

Every run is a fresh subprocess (so its peak RSS is its own); the variants are
interleaved A B C A B C ... and the medians reported, because other processes
share the machine. Both start from the same weights and see the same batches, so
their losses are printed side by side as a check that the fast path trains the
same way.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SEED = 42
BATCH, SIZE = 4, 256
STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
CONTENT_WEIGHT, STYLE_WEIGHT = 1e5, 1e10
VARIANTS = {
    "baseline": {},
    "fastnst-fp32": {"amp": "none"},
    "fastnst-bf16": {"amp": "bf16"},
    "fastnst-bf16-cl": {"amp": "bf16", "channels_last": True},
    "recipe-bf16": {"amp": "bf16"},
    "recipe-fp32": {"amp": "none"},
    "recipe-all-bf16": {"amp": "bf16", "init_trains": "all"},
    "recipe-fp32-cl": {"amp": "none", "channels_last": True},
    "recipe-fp32-compile": {"amp": "none", "compile": True},
    "recipe-fp32-cl-compile": {"amp": "none", "channels_last": True, "compile": True},
}


def prepare(folder: Path) -> None:
    """Random VGG16 weights to relu4_3 (He-scaled), 16 noisy gradient photos and a style image."""
    from fastnst.models.vgg import VGGFeatures

    torch.manual_seed(0)
    state = {}
    for key, value in VGGFeatures("vgg16", ["relu4_3"]).state_dict().items():
        fan_in = value[0].numel() if value.dim() > 1 else 1
        state[key] = torch.randn_like(value) * (2 / fan_in) ** 0.5 if value.dim() > 1 else torch.zeros_like(value)
    torch.save(state, folder / "vgg16-random.pth")
    caffe = {k: torch.randn_like(v) * (2 / v[0].numel()) ** 0.5 * 255 ** -0.5 if v.dim() > 1 else torch.zeros_like(v)
             for k, v in VGGFeatures("vgg19", ["relu3_1"]).state_dict().items()}
    torch.save(caffe, folder / "vgg19-random-caffe.pth")  # "caffe" in the name: that flavour and its recipe
    from fastnst.checkpoint import save_model
    from fastnst.models.transformer import TransformerNet

    save_model(folder / "trunk.safetensors", TransformerNet(), styles=["trunk"])
    rng = np.random.default_rng(0)
    (folder / "photos").mkdir()
    for i in range(17):
        y, x = np.mgrid[0:300, 0:400]
        base = np.stack([np.sin(x / (20 + i)), np.cos(y / (15 + i)), np.sin((x + y) / 30)], -1) * 90 + 128
        pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / "photos" / f"p{i:02d}.jpg", quality=92)
    Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(folder / "style.png")


def run_baseline(folder: Path, steps: int) -> tuple[list[float], list[float]]:
    """pytorch/examples' training step, written the plain way. Returns (step end times, losses)."""
    import torch.nn.functional as F

    from fastnst.images import load_image
    from fastnst.models.transformer import TransformerNet
    from fastnst.models.vgg import VGGFeatures
    from fastnst.train.data import EpochBatchSampler, PhotoDataset, find_images, split_holdout

    torch.manual_seed(SEED)
    transformer = TransformerNet()
    vgg = VGGFeatures("vgg16", STYLE_LAYERS)
    vgg.load_state_dict(torch.load(folder / "vgg16-random.pth", weights_only=True))
    optimizer = torch.optim.Adam(transformer.parameters(), 1e-3)

    def gram(y):
        b, ch, h, w = y.size()
        features = y.view(b, ch, w * h)
        return features.bmm(features.transpose(1, 2)) / (ch * h * w)

    style = load_image(folder / "style.png")[None]
    gram_style = [gram(f) for f in vgg(style).values()]
    # The very batches fit() draws, preloaded (data loading is not what is compared).
    photos = split_holdout(find_images(folder / "photos"), 4)[0]
    dataset, sampler = PhotoDataset(photos, SIZE), EpochBatchSampler(len(photos), BATCH, SEED)
    order, epoch = [], 0
    while len(order) < steps:  # epoch after epoch, as fit() draws them
        sampler.set_epoch(epoch)
        order += list(sampler)
        epoch += 1
    batches = [torch.stack([dataset[i] for i in b]) for b in order[:steps]]

    times, losses = [], []
    for x in batches:
        optimizer.zero_grad()
        y = transformer(x)
        features_y = vgg(y)
        features_x = vgg(x)
        content_loss = CONTENT_WEIGHT * F.mse_loss(features_y["relu2_2"], features_x["relu2_2"])
        style_loss = 0.0
        for ft_y, gm_s in zip(features_y.values(), gram_style):
            style_loss = style_loss + F.mse_loss(gram(ft_y), gm_s[:len(x)].expand(len(x), -1, -1))
        total = content_loss + STYLE_WEIGHT * style_loss
        total.backward()
        optimizer.step()
        losses.append(total.item())
        times.append(time.perf_counter())
    return times, losses


def run_fastnst(folder: Path, steps: int, variant: str) -> tuple[list[float], list[float]]:
    from fastnst.losses import LossSpec
    from fastnst.train import TrainConfig, fit

    options = dict(VARIANTS[variant])
    if variant.startswith("recipe"):
        loss = LossSpec(vgg="vgg19", vgg_weights=str(folder / "vgg19-random-caffe.pth"))
        options.update(init=str(folder / "trunk.safetensors"), image_size=384, crop_size=256, style_size=384,
                       lr=5e-3, lr_decay="linear")
    else:
        loss = LossSpec(vgg="vgg16", vgg_weights=str(folder / "vgg16-random.pth"),
                        style_layers=",".join(STYLE_LAYERS), content_layers="relu2_2",
                        content_weight=CONTENT_WEIGHT, style_weight=STYLE_WEIGHT)
        options.update(image_size=SIZE)
    config = TrainConfig(style=(str(folder / "style.png"),), data=str(folder / "photos"),
                         output=str(folder / f"out-{os.getpid()}.safetensors"), loss=loss, batch_size=BATCH,
                         steps=steps, seed=SEED, workers=0, checkpoint_every=0, sample_every=0, **options)
    times, losses = [], []

    def record(step, metrics):
        times.append(time.perf_counter())
        losses.append(metrics["total"])

    fit(config, callback=record)
    return times, losses


def worker(variant: str, folder: Path, steps: int, warmup: int) -> None:
    start = time.perf_counter()
    if variant == "baseline":
        times, losses = run_baseline(folder, steps + warmup)
    else:
        times, losses = run_fastnst(folder, steps + warmup, variant)
    timed = np.diff(times[warmup - 1:]) if warmup else np.diff([start, *times])
    print(json.dumps({"images_per_s": BATCH * len(timed) / float(np.sum(timed)), "losses": losses,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run (after --warmup)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--variants", default="baseline,fastnst-fp32,fastnst-bf16,recipe-bf16,recipe-fp32",
                        help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, Path(args.folder), args.steps, args.warmup)
        return 0

    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}")
    from fastnst.device import cpuinfo

    print(f"CPU: {cpuinfo('model name') or 'unknown'}; flags: "
          f"{', '.join(f for f in ('avx512_bf16', 'amx_bf16') if f in (cpuinfo('flags') or '').split()) or 'no bf16'}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu capability "
          f"{torch.backends.cpu.get_cpu_capability()}; batch {BATCH}, {SIZE}x{SIZE}, johnson net, VGG16 to relu4_3 "
          f"(random) for the baseline and fastnst-*; the recipe as its docstring says; {args.rounds} rounds x "
          f"{args.steps} timed steps after {args.warmup} warm-up")
    results: dict[str, list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prepare(folder)
        for r in range(args.rounds):
            for variant in variants:
                done = subprocess.run([sys.executable, __file__, "--worker", variant, "--folder", str(folder),
                                       "--steps", str(args.steps), "--warmup", str(args.warmup)],
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    print(done.stderr[-3000:], file=sys.stderr)
                    return 1
                result = json.loads(done.stdout.strip().splitlines()[-1])
                results[variant].append(result)
                print(f"  round {r + 1} {variant:16} {result['images_per_s']:.3f} img/s  "
                      f"peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)

    base = statistics.median(r["images_per_s"] for r in results[variants[0]])
    print(f"\n{'variant':16} {'img/s':>8} {'x ' + variants[0]:>14} {'peak RSS MB':>12}   losses step 1 / last")
    for variant in variants:
        speed = statistics.median(r["images_per_s"] for r in results[variant])
        rss = statistics.median(r["peak_rss_mb"] for r in results[variant])
        losses = results[variant][0]["losses"]
        print(f"{variant:16} {speed:8.3f} {speed / base:14.2f} {rss:12.0f}   {losses[0]:.5g} / {losses[-1]:.5g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
