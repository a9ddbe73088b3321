"""Train every bundled style in one go on one CUDA GPU, then make the single-style and all-styles files.

    python scripts/train_bundled.py --photos ../shared/data/photos \\
        --vgg-weights ../shared/data/vgg/vgg19_caffe_block1-3.pth --trunk rain_princess.safetensors --out runs/bundled
    python scripts/train_bundled.py ... --device cpu --steps 20        # a smoke run anywhere

The recipe is docs/recipe.md's: each style's instance-norm rows trained on the frozen
trunk (``fastnst train --init TRUNK``; the trunk is pytorch/examples' rain_princess
network, ``fastnst convert rain_princess.pth -o rain_princess.safetensors``) against
the Caffe VGG19's recipe loss (its defaults: style relu1_1-relu3_1 at scales 1, ½, ¼,
weight 50), 256-px crops of photos scaled to 384 px, style images at 384 px, Adam
lr 5e-3 decaying linearly, batch 4, bf16 autocast, 20 photos held out, seed 42.

One ``fastnst train`` process per style, all at once on the one GPU (each is small:
a 1.7 M-parameter network and VGG19 to relu3_1 on 256-px crops, so together they
fill the device far better than one at a time), each resumable (``--resume auto``:
run the script again after an interruption). At the end: per style its steps,
images/s and wall time; the single-style files (``OUT/runs/<style>.safetensors``: with
``--init`` a run writes its new style alone) and ``OUT/all_styles.safetensors``
(``fastnst convert --merge``: the styles share the trunk, so they join into one
conditional-instance-norm network). Then
``scripts/eval_styles.py`` and ``scripts/bundle_style.py`` make the cards.

Sized for a large GPU: at 1,200 steps of 4 (4,800 images a style) the five runs
need ~24,000 image-steps; at an H100-class GPU's ~60 images/s for each of five
concurrent runs this is a few minutes. Raise ``--steps`` for longer training.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from fastnst.checkpoint import read_info

REPO = Path(__file__).resolve().parents[1]
STYLES = ("starry_night", "wave", "the_scream", "composition_vii", "the_shipwreck_of_the_minotaur")
RECIPE = ["--image-size", "384", "--crop-size", "256", "--style-size", "384", "--lr", "5e-3", "--lr-decay", "linear",
          "--batch-size", "4", "--seed", "42", "--holdout", "20", "--vgg", "vgg19", "--vgg-flavour", "caffe"]


def command(style: str, args: argparse.Namespace) -> list[str]:
    """The ``fastnst train`` command of one style."""
    return [sys.executable, "-m", "fastnst", "-v", "train", "--init", str(args.trunk),
            "--style", str(args.styles / f"{style}.jpg"), "--data", str(args.photos),
            "-o", str(args.out / "runs" / f"{style}.safetensors"), *RECIPE, "--steps", str(args.steps),
            "--amp", args.amp, "--device", args.device, "--workers", str(args.workers),
            "--vgg-weights", str(args.vgg_weights), "--checkpoint-every", "100", "--log-every", "50",
            "--resume", "auto"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, required=True, help="training photos (e.g. ../shared/data/photos)")
    parser.add_argument("--styles", type=Path, default=REPO.parent / "shared" / "data" / "style",
                        help="folder of the style images <style>.jpg (default ../shared/data/style)")
    parser.add_argument("--vgg-weights", type=Path, required=True, help="Caffe VGG19 weights (to relu3_1 at least)")
    parser.add_argument("--trunk", type=Path, required=True, help="the converted rain_princess model file")
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs, logs and model files")
    parser.add_argument("--steps", type=int, default=1200, help="steps per style (default 1200)")
    parser.add_argument("--device", default="cuda", help="default cuda; cpu for a smoke run")
    parser.add_argument("--amp", default="bf16", choices=("bf16", "fp16", "none"))
    parser.add_argument("--workers", type=int, default=4, help="photo-decoding processes per run (default 4)")
    parser.add_argument("--only", nargs="+", choices=STYLES, default=list(STYLES), help="train only these styles")
    args = parser.parse_args(argv)
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    runs = {}
    for style in args.only:
        log = (args.out / "runs" / f"{style}.log").open("a")
        runs[style] = (subprocess.Popen(command(style, args), stdout=log, stderr=subprocess.STDOUT), log)
        print(f"started {style}: log {log.name}", flush=True)
    failed = []
    for style, (process, log) in runs.items():
        if process.wait() != 0:
            failed.append(style)
        log.close()
    wall = time.perf_counter() - start
    for style in args.only:
        if style in failed:
            print(f"{style}: failed, see {args.out / 'runs' / (style + '.log')}", file=sys.stderr)
            continue
        config = read_info(args.out / "runs" / f"{style}.safetensors").config
        images = config["steps_done"] * config["batch_size"]
        print(f"{style}: {config['steps_done']} steps, {images / config['train_seconds']:.1f} img/s, "
              f"{config['train_seconds']:.0f} s training, on {config['hardware']}")
    print(f"all runs: {wall:.0f} s wall")
    if failed:
        return 1
    singles = [str(args.out / "runs" / f"{style}.safetensors") for style in args.only]
    if len(singles) > 1:
        subprocess.run([sys.executable, "-m", "fastnst", "convert", "--merge", *singles,
                        "-o", str(args.out / "all_styles.safetensors")], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
