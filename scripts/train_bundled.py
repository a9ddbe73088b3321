"""Train every bundled style in one go on one CUDA GPU, then make the single-style and all-styles files.

    python scripts/train_bundled.py --photos ../shared/data/photos \\
        --vgg-weights ../shared/data/vgg/vgg19_caffe_block1-3.pth --trunk rain_princess.safetensors --out runs/bundled
    python scripts/train_bundled.py ... --device cpu --steps 2 2 2     # a smoke run anywhere

The recipe is docs/recipe.md's: each style's instance-norm rows trained on the frozen
trunk (``fastnst train --init TRUNK``; the trunk is pytorch/examples' rain_princess
network, ``fastnst convert rain_princess.pth -o rain_princess.safetensors``) against
the Caffe VGG19's recipe loss (style relu1_1-relu3_1, weight 50), batch 4, bf16
autocast, 20 photos held out, in three stages, each starting from the rows the one
before trained (``--init`` of the previous stage's file, whose record the next keeps):

1. 256-px crops of photos scaled to 384 px, style loss at scales 1, ½, ¼, Adam lr 5e-3
   decaying linearly, seed 42 (``STAGE_STEPS[0]`` steps);
2. the whole 384-px photos (the ¼ branch sees 96 px, not 64), lr 2e-3, seed 43;
3. as 2, the style loss at ½ and ¼ only (the scale-1 ratio has room to spare, ¼ has not);
4. with ``--joint-steps N``: every style at once in the all-styles file, every weight
   training (``--init-trains all``: the trunk too, each layer's lr scaled to its size;
   each style goes on from its own rows), lr 1e-3, stage 3's data, the style loss at 1, ½
   and ¼ again (with the trunk training, a scale left out of the loss drifts: t11 in
   docs/recipe.md; this is t12's command); then each style is taken out of it as a
   single-style file (``OUT/joint/``). The norm rows alone
   stay 10-20x above L-BFGS's style loss (docs/recipe.md); this is the step with room
   (the bundled models: 2,100 CPU steps, 5.1-8.4x).

Every stage takes its losses on the output clamped as saved, ``fastnst train``'s default
since t14 in docs/recipe.md (8.37 -> 7.13x for starry_night against the raw output's 8.17x
in the same 200 steps); the bundled models' stages 1-3 and their first 2,100 joint steps
took them on the raw output (their cards' commands say ``--loss-on-raw-output``).

One chain of ``fastnst train`` processes per style, the styles all at once on the
one GPU (each is small: a 1.7 M-parameter network and VGG19 to relu3_1, so together
they fill the device far better than one at a time), each resumable (``--resume auto``:
run the script again after an interruption; finished stages are kept). At the end:
per style and stage its steps, images/s and time; the single-style files
(``OUT/runs/<style>.safetensors``: with ``--init`` a run writes its new style alone)
and ``OUT/all_styles.safetensors`` (``fastnst convert --merge``: the styles share the
trunk, so they join into one conditional-instance-norm network). Then
``scripts/eval_styles.py`` and ``scripts/bundle_style.py`` make the cards.

``--minutes M`` ends the whole run in about M minutes: stage 4 gets what stages 1-3 leave,
its steps sized by a 30-step probe of the stage on the device (printed, for a resume);
``--joint-from FILE`` skips stages 1-3 and trains stage 4 from an existing all-styles file
(``checkpoints/all_styles.safetensors``: the bundled models trained on). ``scripts/device_bundled.sh``
runs both side by side on a lent GPU and scores them (DEVELOPERS.md).

Sized for a large GPU: at 1,200 + 300 + 150 steps of 4 (6,600 images a style, half of
them whole 384-px photos) the five runs need ~45,000 image-steps of 256 px; at an
H100-class GPU's ~60 images/s for each of five concurrent runs this is a few minutes.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from bundle_style import stage_names  # scripts/, beside this file

from fastnst.checkpoint import read_info

REPO = Path(__file__).resolve().parents[1]
STYLES = ("starry_night", "wave", "the_scream", "composition_vii", "the_shipwreck_of_the_minotaur")
RECIPE = ["--image-size", "384", "--style-size", "384", "--lr-decay", "linear", "--batch-size", "4", "--holdout", "20",
          "--vgg", "vgg19", "--vgg-flavour", "caffe"]
STAGES = (["--crop-size", "256", "--lr", "5e-3", "--seed", "42", "--style-scales", "1,0.5,0.25"],
          ["--crop-size", "384", "--lr", "2e-3", "--seed", "43", "--style-scales", "1,0.5,0.25"],
          ["--crop-size", "384", "--lr", "2e-3", "--seed", "43", "--style-scales", "0.5,0.25"])
STAGE_STEPS = (1200, 300, 150)
PROBE_STEPS, MIN_JOINT, FINISH_SECONDS = 30, 100, 20  # --minutes: the probe, the least worth a stage, the end
JOINT = ["--crop-size", "384", "--lr", "1e-3", "--seed", "44", "--style-scales", "1,0.5,0.25", "--init-trains", "all"]


def outputs(style: str, args: argparse.Namespace) -> list[Path]:
    """The file each stage writes (``scripts/bundle_style.py``'s names): ``<style>-stage1``, ..., ``<style>``."""
    return [args.out / "runs" / name for name in stage_names(style, len(STAGES))]


def command(style: str, stage: int, args: argparse.Namespace) -> list[str]:
    """The ``fastnst train`` command of one style's stage (0-based): ``--init`` the trunk, then the stage before."""
    init = args.trunk if stage == 0 else outputs(style, args)[stage - 1]
    return train_command(init, [style], outputs(style, args)[stage], [*STAGES[stage], "--steps",
                                                                      str(args.steps[stage])], args)


def train_command(init: Path, styles: list[str], output: Path, options: list[str], args: argparse.Namespace
                  ) -> list[str]:
    """``fastnst train --init INIT`` of ``styles`` writing ``output``, the recipe and ``options`` (resumable)."""
    return [sys.executable, "-m", "fastnst", "-v", "train", "--init", str(init),
            "--style", *(str(args.styles / f"{style}.jpg") for style in styles), "--data", str(args.photos),
            "-o", str(output), *RECIPE, *options, "--amp", args.amp, "--device", args.device,
            "--workers", str(args.workers), "--vgg-weights", str(args.vgg_weights), "--checkpoint-every", "100",
            "--log-every", "50", "--resume", "auto"]


def probe(start: Path, args: argparse.Namespace, log) -> tuple[float, float] | None:
    """(steps/s, start-up seconds) of stage 4 on this device, from a ``PROBE_STEPS`` run (removed after); None
    if it failed. The rate counts the first, slow steps (allocation, cuDNN's search), so it errs low."""
    folder = args.out / "joint" / "probe"
    shutil.rmtree(folder, ignore_errors=True)
    began = time.perf_counter()
    command = train_command(start, args.only, folder / "probe.safetensors", [*JOINT, "--steps", str(PROBE_STEPS)],
                            args)
    if subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
        return None
    seconds = read_info(folder / "probe.safetensors").config["train_seconds"]
    shutil.rmtree(folder, ignore_errors=True)
    return PROBE_STEPS / seconds, time.perf_counter() - began - seconds


def affordable_steps(seconds_left: float, rate: float, start_up: float) -> int:
    """Stage-4 steps that end within ``seconds_left`` at ``rate`` steps/s after ``start_up`` (imports, the VGG,
    the photo workers) and ``FINISH_SECONDS`` (writing, selecting), with 5% to spare; 0 below ``MIN_JOINT``."""
    steps = int((seconds_left - start_up - FINISH_SECONDS) * rate * 0.95)
    return steps if steps >= MIN_JOINT else 0


def joint_steps(start: Path, args: argparse.Namespace, log) -> int:
    """``--joint-steps``, or with ``--minutes`` the steps the probe says fit before the deadline (0: none, said)."""
    if args.joint_steps:
        return args.joint_steps
    measured = probe(start, args, log)
    if measured is None:
        print(f"joint stage: the probe run failed, see {log.name}", file=sys.stderr)
        return 0
    steps = affordable_steps(args.deadline - time.perf_counter(), *measured)
    print(f"joint stage: probe {measured[0]:.3g} steps/s, {measured[1]:.0f} s start-up: sized to {steps} steps",
          flush=True)
    if not steps:
        print(f"joint stage: no time left for {MIN_JOINT} steps before the --minutes deadline; skipped",
              file=sys.stderr)
    return steps


def joint_stage(start: Path, args: argparse.Namespace) -> int:
    """Stage 4: every style and weight of ``start`` trained together, then one single-style file per style."""
    folder = args.out / "joint"
    folder.mkdir(exist_ok=True)
    output = folder / ("all_styles.safetensors" if len(args.only) > 1 else f"{args.only[0]}.safetensors")
    started = time.perf_counter()
    with (folder / "joint.log").open("a") as log:
        steps = joint_steps(start, args, log)
        if not steps:
            return 1
        if subprocess.run(train_command(start, args.only, output, [*JOINT, "--steps", str(steps)], args),
                          stdout=log, stderr=subprocess.STDOUT).returncode != 0:
            print(f"joint stage: failed, see {folder / 'joint.log'}", file=sys.stderr)
            return 1
    config = read_info(output).config
    print(f"joint stage: {config['steps_done']} steps, "
          f"{config['steps_done'] * config['batch_size'] / config['train_seconds']:.1f} img/s, "
          f"{time.perf_counter() - started:.0f} s wall, on {config['hardware']}")
    if len(args.only) > 1:
        for style in args.only:
            subprocess.run([sys.executable, "-m", "fastnst", "convert", str(output), "--select", style,
                            "-o", str(folder / f"{style}.safetensors")], check=True)
    return 0


def run_style(style: str, args: argparse.Namespace, failed: list[str]) -> None:
    """One style's stages in turn (a finished stage's file is kept); a failed stage stops the style."""
    with (args.out / "runs" / f"{style}.log").open("a") as log:
        for stage, output in enumerate(outputs(style, args)):
            if output.is_file() and read_info(output).config.get("steps_done") == args.steps[stage]:
                continue
            if subprocess.run(command(style, stage, args), stdout=log, stderr=subprocess.STDOUT).returncode != 0:
                failed.append(style)
                return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, required=True, help="training photos (e.g. ../shared/data/photos)")
    parser.add_argument("--styles", type=Path, default=REPO.parent / "shared" / "data" / "style",
                        help="folder of the style images <style>.jpg (default ../shared/data/style)")
    parser.add_argument("--vgg-weights", type=Path, required=True, help="Caffe VGG19 weights (to relu3_1 at least)")
    parser.add_argument("--trunk", type=Path, required=True, help="the converted rain_princess model file")
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs, logs and model files")
    parser.add_argument("--steps", type=int, nargs=len(STAGES), default=list(STAGE_STEPS), metavar="N",
                        help=f"steps of each stage (default {' '.join(map(str, STAGE_STEPS))})")
    parser.add_argument("--device", default="cuda", help="default cuda; cpu for a smoke run")
    parser.add_argument("--amp", default="bf16", choices=("bf16", "fp16", "none"))
    parser.add_argument("--workers", type=int, default=4, help="photo-decoding processes per run (default 4)")
    parser.add_argument("--only", nargs="+", choices=STYLES, default=list(STYLES), help="train only these styles")
    parser.add_argument("--joint-steps", type=int, default=0, metavar="N",
                        help="then N steps of stage 4, every style and weight together (default 0: none; "
                             "the bundled models had 2100)")
    parser.add_argument("--minutes", type=float, metavar="M",
                        help="end within about M minutes: stage 4 gets the time stages 1-3 leave, its steps "
                             "sized by a 30-step probe (printed: give them as --joint-steps to resume a stopped run)")
    parser.add_argument("--joint-from", type=Path, metavar="FILE",
                        help="skip stages 1-3: stage 4 goes on from this all-styles file (e.g. "
                             "checkpoints/all_styles.safetensors), which holds the --only styles in that order")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    args.deadline = start + 60 * args.minutes if args.minutes else None
    if args.minutes and args.joint_steps:
        parser.error("give --minutes or --joint-steps, not both")
    if args.joint_from and not (args.minutes or args.joint_steps):
        parser.error("--joint-from trains stage 4 alone: give its --joint-steps or --minutes")
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    if args.joint_from:
        return joint_stage(args.joint_from, args)
    failed: list[str] = []
    threads = [threading.Thread(target=run_style, args=(style, args, failed)) for style in args.only]
    for style, thread in zip(args.only, threads):
        thread.start()
        print(f"started {style}: log {args.out / 'runs' / (style + '.log')}", flush=True)
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    for style in args.only:
        if style in failed:
            print(f"{style}: failed, see {args.out / 'runs' / (style + '.log')}", file=sys.stderr)
            continue
        for stage, output in enumerate(outputs(style, args)):
            config = read_info(output).config
            images = config["steps_done"] * config["batch_size"]
            print(f"{style} stage {stage + 1}: {config['steps_done']} steps, "
                  f"{images / config['train_seconds']:.1f} img/s, {config['train_seconds']:.0f} s training, "
                  f"on {config['hardware']}")
    print(f"all runs: {wall:.0f} s wall")
    if failed:
        return 1
    singles = [outputs(style, args)[-1] for style in args.only]
    merged = args.out / "all_styles.safetensors"
    if len(singles) > 1:
        subprocess.run([sys.executable, "-m", "fastnst", "convert", "--merge", *map(str, singles),
                        "-o", str(merged)], check=True)
    return joint_stage(merged if len(singles) > 1 else singles[0], args) if args.joint_steps or args.minutes else 0


if __name__ == "__main__":
    sys.exit(main())
