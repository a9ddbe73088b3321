"""Turn a model trained by ``fastnst train`` into a bundled style: ``checkpoints/<name>.safetensors`` + its card.

    python scripts/bundle_style.py runs/starry_night.safetensors            # name from the style image
    python scripts/bundle_style.py runs/wave.safetensors --quality runs/quality.json
    python scripts/bundle_style.py --merge checkpoints/starry_night.safetensors checkpoints/wave.safetensors ... \
        --quality runs/quality.json          # the all-styles file, from the bundled singles

``--merge`` joins bundled single-style files trained on one trunk (``fastnst train
--init``) into one conditional-instance-norm file (``fastnst convert --merge``: its
record keeps each part's training record whole, and the thumbnails come along),
and writes its card: a table of the styles with their steps, time and style
ratios, pointing to each style's card.

The bundled file stores fp16 weights (3.4 MB instead of 6.7 MB for the default
network; they load as fp32) and one thumbnail of each style image, which the
demo's contact sheet and the gallery show (added here when the trained file
has none). The card ``checkpoints/<name>.md`` is written from what the model
file records: the painting (``PAINTINGS``), the training data, the exact command,
steps, time, hardware and final losses. ``--quality`` adds the quality-bar
figures that ``scripts/eval_styles.py`` wrote.

A style trained in stages gets every stage's command. One taken out of a joint
run (``fastnst convert JOINT --select STYLE``; the --init of that run joined
every style's file before it) gets its own stages' commands, the merge, the
joint run and the select: the other styles' files come from their own cards.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from fastnst.checkpoint import load_model, read_info, save_model
from fastnst.convert import ConvertConfig, convert_model
from fastnst.files import atomic_path
from fastnst.images import encode_thumbnail
from fastnst.train.config import (
    TrainConfig,
    inherited_from,
    joint_part,
    model_style_images,
    option_flag,
    training_stages,
)

REPO = Path(__file__).resolve().parents[1]

# Painting, painter (life), year: all in the public domain (their painters died long ago).
PAINTINGS = {
    "starry_night": ("The Starry Night", "Vincent van Gogh (1853–1890)", "1889"),
    "wave": ("The Great Wave off Kanagawa", "Katsushika Hokusai (1760–1849)", "c. 1831"),
    "the_scream": ("The Scream", "Edvard Munch (1863–1944)", "1893"),
    "composition_vii": ("Composition VII", "Wassily Kandinsky (1866–1944)", "1913"),
    "the_shipwreck_of_the_minotaur": ("The Shipwreck of the Minotaur", "J. M. W. Turner (1775–1851)", "c. 1810"),
}


# The trunk the bundled styles share: pytorch/examples' rain_princess network, converted.
TRUNK_CREDIT = ("the rain_princess network of pytorch/examples' fast_neural_style (BSD-3-Clause, Copyright (c) 2017 "
                "Pytorch contributors; the licence is in checkpoints/NOTICE.md), converted by `fastnst convert`")


TRUNK_COMMAND = "fastnst convert ../shared/data/models/rain_princess.pth -o rain_princess.safetensors"


def _show(path: str) -> str:
    """``path`` as seen from the repository root when it is in the data folder beside it (``../shared/...``) or in
    the repository, else as recorded: the card's command runs as written from the repository root."""
    for root, shown in ((REPO.parent / "shared", Path("..") / "shared"), (REPO, Path("."))):
        try:
            return str(shown / Path(path).resolve().relative_to(root.resolve()))
        except ValueError:
            continue
    return path


def stage_names(name: str, count: int) -> list[str]:
    """The file each stage writes: ``<name>-stage1.safetensors``, ..., the last one ``<name>.safetensors``."""
    return [stage_file(name, i + 1) for i in range(count - 1)] + [f"{name}.safetensors"]


def stage_file(name: str, number: int) -> str:
    """The file of stage ``number`` (from 1) of a style when a later stage writes ``<name>.safetensors``."""
    return f"{name}-stage{number}.safetensors"


def command_line(config: dict, output: str, init: str | None = None) -> str:
    """The ``fastnst train`` command that runs ``config`` (its ``steps`` set), writing ``output``; its ``--init``
    model by file name (``init`` when given: the previous stage's file; ``TRUNK_COMMAND`` makes the bundled
    styles' trunk)."""
    init = init or (Path(config["init"]).name if config.get("init") else None)
    train = TrainConfig.from_record({**config, "output": output, "init": init})
    return " ".join(["fastnst train", *train.command(_show, inherited_from(config.get("init_record") or {}))])


def _step_totals(config: dict) -> list[list[int]]:
    """The run's ``[step, total]`` learning-rate schedules (one unless it was resumed with more steps)."""
    return config.get("step_totals") or [[0, config["steps_done"]]]


def stage_commands(config: dict, output: str, init: str | None = None) -> list[str]:
    """The commands of one run: its first ``--steps``, then ``--resume auto --steps TOTAL`` for each extension."""
    totals, lines = _step_totals(config), []
    for i, (start, total) in enumerate(totals):
        if i and start != totals[i - 1][1]:
            lines.append(f"# stopped at step {start} (Ctrl-C) before resuming with --steps {total}")
        lines.append(command_line({**as_run(config, start), "steps": total, "epochs": None}, output, init)
                     + (" --resume auto" if i else ""))
    return lines


def as_run(config: dict, step: int) -> dict:
    """The run's record as it stood from ``step`` on: options a later resume changed (``resume_changes``, each
    with the values before) go back to what they were."""
    record = dict(config)
    for at, before in reversed(config.get("resume_changes") or []):
        if at > step:
            record.update(before)
    return record


def joint_files(number: int) -> tuple[str, str]:
    """The files of the ``number``-th (from 1) joint stage's commands: its --init (every style's file before it,
    merged) and its output: ``joint-start.safetensors`` and ``joint.safetensors``, then ``joint2-...``."""
    stem = "joint" if number == 1 else f"joint{number}"
    return f"{stem}-start.safetensors", f"{stem}.safetensors"


def commands(chain: list[dict], name: str) -> list[str]:
    """Every command that makes ``<name>.safetensors`` again, from the trunk through each stage of ``chain``
    (``training_stages``); a joint stage's are its merge, run and select (``joint_commands``)."""
    outputs = stage_names(name, len(chain))
    root = chain[0].get("init")
    lines = [TRUNK_COMMAND] if root and Path(root).name == "rain_princess.safetensors" else []
    for i, stage in enumerate(chain):
        if i and joint_part(stage) is not None:
            lines += joint_commands(stage, chain[i - 1], outputs[i - 1], outputs[i], _joint_number(chain, i))
        else:
            lines += stage_commands(stage, outputs[i], outputs[i - 1] if i else None)
    return lines


def _joint_number(chain: list[dict], index: int) -> int:
    """Which joint stage (from 1) of ``chain`` its stage ``index`` is."""
    return sum(joint_part(stage) is not None for stage in chain[1:index + 1])


def joint_commands(joint: dict, own: dict, own_file: str, output: str, number: int = 1) -> list[str]:
    """A joint stage's commands: merge every style's file before it (this style's, ``own``, is ``own_file``; the
    others' by the commands of their cards), train them together, take this style out into ``output``."""
    before, (start, trained) = joint["init_record"], joint_files(number)
    files = [own_file if part is own else stage_file(Path(model_style_images(part)[0]).stem,
                                                     len(training_stages(part))) for part in before["parts"]]
    # The bundled all-styles file is always fp16 (bundle_style --merge); merges from before convert recorded
    # "half" were that file.
    half = " --half" if before.get("half", True) else ""
    return [f"# {', '.join(f for f in files if f != own_file)}: by the first commands of their cards",
            f"fastnst convert --merge {' '.join(files)}{half} -o {start}",
            *stage_commands(joint, trained, start),
            f"fastnst convert {trained} --select {joint['selected_styles'][0]} -o {output}"]


def _extended(config: dict) -> str:
    """How a run resumed with more steps went on (its learning-rate decay restarted), or nothing."""
    totals, changes = _step_totals(config), config.get("resume_changes") or []
    changed = "".join(f"; from step {at:,} with {', '.join(map(option_flag, sorted(before)))} changed"
                      for at, before in changes)
    if len(totals) == 1:
        return f" ({changed[2:]})" if changed else ""
    return (f" (asked for {totals[0][1]:,} steps, then resumed with " + ", then ".join(
        f"`--steps {total}` at step {start:,}" for start, total in totals[1:]) +
        f"; the {_schedule(config)} went on from the factor at each of those steps{changed})")


def totals(config: dict) -> tuple[int, float | None]:
    """(steps, training seconds) over every stage; seconds None when a stage did not record its time."""
    return _chain_totals(training_stages(config))


def _chain_totals(chain: list[dict]) -> tuple[int, float | None]:
    seconds = [stage.get("train_seconds") for stage in chain]
    return sum(stage["steps_done"] for stage in chain), (None if None in seconds else sum(seconds))


def _where(chain: list[dict]) -> str:
    """Where the stages ran: `` on MACHINE``, or each stage's when they differ (a stage may have had more threads)."""
    shown = [stage.get("hardware") or "the CPU machine (2 cores) of the project" for stage in chain]
    if len(set(shown)) == 1:
        return f" on {shown[0]}"
    return ": " + "; ".join(f"stage {i + 1} {stage.get('train_seconds', 0) / 3600:.2f} h on {where}"
                            for i, (stage, where) in enumerate(zip(chain, shown)))


def _schedule(config: dict) -> str:
    return "constant" if config["lr_decay"] == "none" else f"{config['lr_decay']} decay"


def _scales(config: dict) -> str:
    return "scales " + ", ".join(f"{s:g}" for s in config["loss"].get("style_scales", [1]))


def _shared_weights(chain: list[dict]) -> str:
    """The card's line on the trunk: frozen (only the norm rows trained) or fine-tuned in some stages."""
    tuned = [str(i + 1) for i, stage in enumerate(chain) if stage.get("init_trains") == "all"]
    what = "(everything but this style's norm rows, which alone trained)" if not tuned else \
        f"(everything but this style's norm rows), fine-tuned in stage {', '.join(tuned)} from"
    return f"- Shared weights {what}: `{Path(chain[0]['init']).name}`, {TRUNK_CREDIT}."


def _weight(config: dict) -> str:
    return f"{config['loss']['style_weight']:g}"


def _agreed(chain: list[dict], show: Callable[[dict], str]) -> str | None:
    """``show(stage)`` when every stage of ``chain`` gives the same, else None."""
    shown = {show(stage) for stage in chain}
    return shown.pop() if len(shown) == 1 else None


def _precision(stage: dict) -> str:
    return "fp32" if stage.get("amp", "none") == "none" else f"autocast {stage['amp']}"


def _precisions(chain: list[dict]) -> str:
    """Which stages trained in which precision, e.g. "autocast bf16 (stages 1-5), fp32 (stage 6)"; the precision
    alone where every stage agrees."""
    runs: list[list] = []  # [precision, first stage, last stage]
    for number, stage in enumerate(chain, 1):
        if runs and runs[-1][0] == _precision(stage):
            runs[-1][2] = number
        else:
            runs.append([_precision(stage), number, number])
    if len(runs) == 1:
        return runs[0][0]
    return ", ".join(f"{p} (stage{'s' if a != b else ''} {a}{f'-{b}' if a != b else ''})" for p, a, b in runs)


def _cropping(config: dict) -> str:
    crop = config.get("crop_size")
    return f"a random {crop} px square cropped, a new one each epoch" if crop else "centre-cropped"


def card(name: str, config: dict, styles: tuple[str, ...], size_mb: float, quality: dict | None,
         remark: str | None = None) -> str:
    losses = config.get("final_losses") or {}
    chain = training_stages(config)
    train_seconds = _chain_totals(chain)[1]
    staged = len(chain) > 1
    optimiser = "lr and seed as each stage says" if staged else \
        f"lr {config['lr']:g} ({_schedule(config)}), seed {config['seed']}"
    hours = f"{train_seconds / 3600:.2f} h ({train_seconds:,.0f} s)" if train_seconds else "not recorded"
    lines = [
        f"# {name}",
        "",
        f"**Style{'s' if len(chain[0]['style']) > 1 else ''}:** {paintings_line(chain[0]['style'])}; public domain. "
        "Style images "
        f"from `../shared/data/style` (not shipped), long side {config.get('style_size') or 'as is'} px for the "
        "style targets.",
        "",
        f"**File:** `checkpoints/{name}.safetensors`, {size_mb:.1f} MB, fp16 weights (load as fp32), "
        f"network `{config['spec']}`, style{'s' if len(styles) > 1 else ''} {', '.join(styles)}, with a "
        "thumbnail of each style image.",
        "",
        "## Training",
        "",
        f"- Data: `{_show(config['data'])}`, real photographs (100 BSDS500 val, 100 ImageNet samples, 6 others); "
        f"{len(config.get('held_out') or [])} held out for evaluation, the rest trained on; short side resized "
        f"to {config['image_size']} px and {'cropped as each stage says' if staged else _cropping(config)}, "
        f"batch {config['batch_size']}, a fresh shuffle "
        "each epoch.",
        f"- Loss network: {config['loss']['vgg'].upper()}, weights `{Path(config['loss']['vgg_weights']).name}` "
        f"(flavour {config['loss']['vgg_flavour']}); style "
        f"{', '.join(config['loss']['style_layers'])}, content {', '.join(config['loss']['content_layers'])}; "
        f"weights content {config['loss']['content_weight']:g}, style {_agreed(chain, _weight) or 'as each stage says'}"
        f", TV {config['loss']['tv_weight']:g}; style loss averaged over "
        f"{_agreed(chain, _scales) or 'the scales each stage says'}.",
        f"- Optimiser: Adam, {optimiser}, {_precisions(chain)}.",
        *steps_lines(chain),
        f"- Time: {hours}{_where(chain)}.",
        "- Final losses (mean of the last logged window): " + (", ".join(
            f"{k} {v:.4g}" for k, v in losses.items()) if losses else "see the training log"),
        *([_shared_weights(chain)] if chain[0].get("init") else []),
        *([f"- {remark}"] if remark else []),
        "",
        "```bash",
        *commands(chain, name),
        "```",
    ]
    if quality:
        lines += ["", "## Quality bar", "", *quality_lines(quality)]
    return "\n".join(lines) + "\n"


def steps_lines(chain: list[dict]) -> list[str]:
    """The card's steps: one line, or one per stage (what changed between them) for a model trained in stages."""
    steps = sum(stage["steps_done"] for stage in chain)
    images = sum(stage["steps_done"] * stage["batch_size"] for stage in chain)
    if len(chain) == 1:
        return [f"- Steps: {steps:,} ({images:,} images){_extended(chain[0])}."]
    lines = [f"- Steps: {steps:,} ({images:,} images) in {len(chain)} stages, each starting from the rows the "
             "stage before trained (the commands below):"]
    weights_differ = _agreed(chain, _weight) is None
    return lines + [f"  {i + 1}. {_stage_line(stage, weights_differ, _joint_number(chain, i))}."
                    for i, stage in enumerate(chain)]


def _stage_line(stage: dict, with_weight: bool, joint_number: int) -> str:
    """One stage of the card's steps: what it trained on, how, and (when it did) every weight."""
    return "".join([
        f"{stage['steps_done']:,} steps{_extended(stage)} on photos {_cropping(stage)}, lr {stage['lr']:g} "
        f"({_schedule(stage)}), seed {stage['seed']}, style loss at {_scales(stage)}",
        f", style weight {_weight(stage)}" if with_weight else "",
        ", every weight training (--init-trains all)" if stage.get("init_trains") == "all" else "",
        f", all {len(stage['style'])} styles of `{joint_files(joint_number)[0]}` together (each photo scored "
        "against one of them at random; the stage's time is theirs together)" if joint_part(stage) is not None
        else ""])


def quality_lines(quality: dict) -> list[str]:
    """The card's quality section from ``scripts/eval_styles.py``'s figures for the model."""
    ratios = quality["ratios"]
    lines = [f"Style ratio (style loss of the stylized photo / of the photo itself, against the painting; median "
             f"over the 8 classic content photos at {quality['ratio_size']} px; bar <= 0.10 at every scale): "
             f"**{ratios['1']:.3f}** at scale 1, **{ratios['0.5']:.3f}** at ½, **{ratios['0.25']:.3f}** at ¼."]
    if "photos" in quality:
        lines += [
            "",
            f"Against optimization on {quality['photos']} held-out photo{'s' * (quality['photos'] != 1)} at "
            f"{quality['size']} px, the training's "
            "loss (`scripts/eval_styles.py`; median per photo):",
            "",
            "| | style loss | content loss | seconds per photo |",
            "|---|---|---|---|",
            f"| this model | {quality['model_style']:.4g} | {quality['model_content']:.4g} | "
            f"{quality['model_seconds']:.3f} |",
            f"| `fastnst optimize`, {quality['iterations']} L-BFGS evaluations | {quality['lbfgs_style']:.4g} | "
            f"{quality['lbfgs_content']:.4g} | {quality['lbfgs_seconds']:.1f} |",
            "",
            f"Style loss model / L-BFGS {quality['model_style'] / quality['lbfgs_style']:.2f} (bar <= 1; the model "
            f"is lower on {quality['model_wins']} of {quality['photos']}); time ratio "
            f"{quality['model_seconds'] / quality['lbfgs_seconds']:.5f} (bar < 0.01). Model: one torch fp32 "
            "forward pass, timed after a warm-up.",
        ]
    return lines


def paintings_line(style_paths: list[str]) -> str:
    paintings = []
    for path in style_paths:
        title, painter, year = PAINTINGS.get(Path(path).stem, (Path(path).stem, "unknown painter", "unknown year"))
        paintings.append(f"*{title}*, {painter}, {year} (`{Path(path).name}`)")
    return "; ".join(paintings)


def merged_card(name: str, styles: tuple[str, ...], parts: list[dict], size_mb: float, quality: dict) -> str:
    """The card of a file joining single-style models trained on one trunk."""
    rows, chains = [], [training_stages(part) for part in parts]
    for style, chain in zip(styles, chains):
        ratios = (quality.get(style) or {}).get("ratios")
        shown = " / ".join(f"{ratios[k]:.3f}" for k in ("1", "0.5", "0.25")) if ratios else "not measured"
        steps, seconds = _chain_totals(chain)
        hours = f"{seconds / 3600:.2f} h" if seconds else "not recorded"
        rows.append(f"| {style} | {steps:,} | {hours} | {shown} | [card]({style}.md) |")
    trained = " ".join(f"{style}.safetensors" for style in styles)
    lines = [
        f"# {name}",
        "",
        f"**Styles:** {paintings_line([chain[0]['style'][0] for chain in chains])}; public domain.",
        "",
        f"**File:** `checkpoints/{name}.safetensors`, {size_mb:.1f} MB, fp16 weights (load as fp32), network "
        f"`{parts[0]['spec']}`, styles {', '.join(styles)}, with a thumbnail of each style image.",
        "",
        f"One network, {len(styles)} styles (conditional instance norm): the single-style models joined by "
        "`fastnst convert --merge`. They share every weight but their instance-norm rows "
        f"(the trunk: {TRUNK_CREDIT}{_tuned(chains)}), so each style here gives the same picture as its single-style "
        "file, and "
        "`--style-mix` blends them in one pass.",
        "",
        "| style | steps | training time | style ratios 1 / ½ / ¼ (bar <= 0.10) | training and quality bar |",
        "|---|---|---|---|---|",
        *rows,
        *_joint_time(chains),
        "",
        "```bash",
        f"fastnst convert --merge {trained} -o {name}.safetensors   # each made by the commands of its card",
        f"fastnst stylize -m checkpoints/{name}.safetensors photos/ -o styled/ --style-mix "
        f"\"{styles[0]}=0.5,{styles[1]}=0.5\"",
        "```",
    ]
    return "\n".join(lines) + "\n"


def _joint_time(chains: list[list[dict]]) -> list[str]:
    """A note under the merged card's table when the styles trained together in a last stage: its time is in
    every row."""
    joints = {(_joint_number(chain, i), stage["steps_done"], stage.get("train_seconds") or 0)
              for chain in chains for i, stage in enumerate(chain) if i and joint_part(stage) is not None}
    if not joints:
        return []
    runs = [f"{steps:,} step{'s' if steps != 1 else ''} ({seconds / 3600:.2f} h)"
            for _, steps, seconds in sorted(joints)]
    if len(joints) == 1:
        return ["", f"The last stage trained these styles together, {runs[0]}: its time is counted in each row."]
    listed = ", ".join(runs[:-1]) + f" and {runs[-1]}"
    return ["", f"The joint stages trained these styles together, one after the other, {listed}: their time is "
                "counted in each row."]


def _tuned(chains: list[list[dict]]) -> str:
    """How the trunk changed after the conversion: nothing, or fine-tuned by a stage training every weight."""
    return ", then fine-tuned in training (see each card)" if any(
        stage.get("init_trains") == "all" for chain in chains for stage in chain) else ""


def bundle_merged(paths: list[Path], args: argparse.Namespace) -> int:
    """``fastnst convert --merge`` of bundled single-style files (fp16, with thumbnails), and the joined file's card."""
    for path in paths:
        info = read_info(path)
        if info.spec.num_styles != 1 or "steps_done" not in info.config or not info.thumbnails:
            print(f"{path}: --merge takes single-style models written by fastnst train, with their thumbnails "
                  "(bundle each first: scripts/bundle_style.py MODEL)", file=sys.stderr)
            return 1
    name = args.name or "all_styles"
    path = convert_model(ConvertConfig(source=None, output=str(args.out / f"{name}.safetensors"),
                                       merge=tuple(str(p) for p in paths), half=True))
    info = read_info(path)
    quality = _quality(args)
    card_path = args.out / f"{name}.md"
    with atomic_path(card_path) as tmp:
        Path(tmp).write_text(merged_card(name, info.styles, info.config["parts"], path.stat().st_size / 1e6,
                                         quality))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, styles {', '.join(info.styles)}) and {card_path}")
    return 0


def _quality(args: argparse.Namespace) -> dict:
    """``--quality``'s figures by model name (those under ``--quality-prefix``, the prefix taken off)."""
    if not args.quality:
        return {}
    figures, prefix = json.loads(args.quality.read_text()), args.quality_prefix
    return {key[len(prefix):]: value for key, value in figures.items() if key.startswith(prefix)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, nargs="?", help="a model file written by fastnst train")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="MODEL",
                        help="join these bundled single-style files (one trunk) into one file instead")
    parser.add_argument("--name", help="bundled name (default: the style image's file stem; all_styles with --merge)")
    parser.add_argument("--out", type=Path, default=REPO / "checkpoints", help="folder (default checkpoints/)")
    parser.add_argument("--quality", type=Path, help="quality.json written by scripts/eval_styles.py")
    parser.add_argument("--quality-prefix", default="", metavar="P",
                        help="the model's entry there is P<name> (scripts/device_bundled.sh scores files named "
                             "cont-<style>, fresh-<style> and old-<style>)")
    parser.add_argument("--remark", help="a line for the card's training section (e.g. what else ran beside it)")
    args = parser.parse_args(argv)
    if (args.model is None) == (args.merge is None):
        parser.error("give one MODEL, or --merge MODEL MODEL ...")
    if args.merge:
        return bundle_merged(args.merge, args)

    model, info = load_model(args.model)
    config = info.config
    if "steps_done" not in config:
        print(f"{args.model}: not a model written by fastnst train (no training config)", file=sys.stderr)
        return 1
    images = model_style_images(config)
    name = args.name or Path(images[0]).stem
    thumbnails = info.thumbnails or tuple(encode_thumbnail(path) for path in images)
    path = save_model(args.out / f"{name}.safetensors", model, styles=info.styles, config=config, half=True,
                      thumbnails=thumbnails)
    quality = _quality(args).get(name)
    card_path = args.out / f"{name}.md"
    with atomic_path(card_path) as tmp:
        Path(tmp).write_text(card(name, config, info.styles, path.stat().st_size / 1e6, quality, args.remark))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {card_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
