"""The bundled styles' quality bar: how much each model looks like its painting, and against optimization.

    python scripts/eval_styles.py checkpoints/starry_night.safetensors checkpoints/wave.safetensors \\
        --out runs/quality --sheets docs/styles
    python scripts/eval_styles.py MODEL --out runs/quality --ratios-only    # the quick half (a minute a model)

Two measures per model, both with the model's own loss network (``fastnst.score``):

* **Style ratios** (``fastnst.score.style_ratios``): on the 8 classic content photos
  (``CLASSIC``, never used in training) at ``--ratio-size`` px (384), the style loss of
  the stylized photo over the photo's own against the painting at the model's style
  size, at scales 1, ½ and ¼ (style relu1_1, relu2_1, relu3_1; lower is more
  painting); the median per scale. Bar: <= 0.10 at every scale.
* **Against optimization** (Johnson et al.): on the model's held-out photos (recorded in
  the model file; ``--photos`` 20) at ``--size`` px (512), the model's style loss and
  ``fastnst optimize``'s after ``--iterations`` (100) L-BFGS evaluations from the
  photo, with the training's loss and weights, and both times. Bar: the model's loss
  <= the optimization's in < 1/100 of its time. Where they differ, per style layer and
  scale (``fastnst.score.style_terms``): the model's term over the optimization's and
  its share of the gap, medians over the photos (``terms`` in quality.json).

The optimizations are the slow part (a minute or more per photo on a CPU) and do not
depend on the model: each result is kept in ``OUT/lbfgs/`` (the image and a line of
``OUT/lbfgs.jsonl``) keyed by style image, photo, sizes, iterations and loss, so a
stopped run goes on where it was and a retrained model is judged without optimizing
again. ``OUT/quality.json`` gets the figures per model (``scripts/bundle_style.py
--quality`` puts them in the card); ``--sheets DIR`` writes ``DIR/<model>.jpg``:
photo | model | optimization for four held-out photos.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from fastnst.checkpoint import load_model
from fastnst.device import describe_device
from fastnst.files import atomic_path
from fastnst.images import load_style_image, resize_to, save_image, scaled_size
from fastnst.losses import style_targets
from fastnst.optimize import OptimizeConfig, optimize
from fastnst.pretrained import load_loss_network
from fastnst.score import score_tensor, style_ratios, style_terms
from fastnst.train.config import TrainConfig, model_style_images

REPO = Path(__file__).resolve().parents[1]
CONTENT = REPO.parent / "shared" / "data" / "content"
CLASSIC = ("tubingen", "golden_gate", "chicago", "brad_pitt", "amber", "stata", "venice-boat", "hoovertowernight")
RATIO_SCALES = (1.0, 0.5, 0.25)
BAR_RATIO = 0.10


def own_config(record: dict) -> TrainConfig:
    """The model's training config narrowed to its one style: a style taken out of a joint run (``fastnst convert
    --select``) keeps the run's record, whose style images (and per-style weights) are all the run's."""
    images, config = model_style_images(record), TrainConfig.from_record(record)
    if list(config.style) == images:
        return config
    index = list(config.style).index(images[0])
    loss = replace(config.loss, style_weight=config.style_weights[index]) if config.style_weights else config.loss
    return replace(config, style=tuple(images), style_names=(), style_weights=(), loss=loss)


def stylized(model, photo: torch.Tensor) -> torch.Tensor:
    """The model's output for ``photo``, quantised to 8 bits as a saved file would be."""
    with torch.no_grad():
        return torch.round(model(photo).clamp(0, 1) * 255) / 255


def synchronized(device: torch.device) -> float:
    """``time.perf_counter()`` once the device has finished its queued work (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def ratios(model, config: TrainConfig, vgg, args: argparse.Namespace) -> dict[str, float]:
    """Median style ratio per scale over the classic content photos."""
    spec = replace(config.loss, style_scales=RATIO_SCALES)
    style = load_style_image(config.style[0], config.style_size or args.ratio_size).to(args.device)
    per_scale: dict[float, list[float]] = {scale: [] for scale in RATIO_SCALES}
    for name in CLASSIC:
        photo = load_style_image(CONTENT / f"{name}.jpg", args.ratio_size).to(args.device)
        for scale, value in style_ratios(vgg, stylized(model, photo), photo, style, spec).items():
            per_scale[scale].append(value)
    return {f"{scale:g}": statistics.median(values) for scale, values in per_scale.items()}


def optimization(path: str, config: TrainConfig, args: argparse.Namespace, out: Path, cache: dict) -> dict:
    """The L-BFGS reference for one photo: from ``cache``, or run now and kept (image and line) at once."""
    spec, style_side = config.loss, config.style_size or args.size
    loss = json.dumps(asdict(replace(spec, vgg_weights=None)), sort_keys=True, default=str)
    key = f"{Path(config.style[0]).name}|{Path(path).name}|{args.size}|{style_side}|{args.iterations}|{loss}"
    if key in cache:
        return cache[key]
    image = out / "lbfgs" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    result = optimize(OptimizeConfig(content=path, styles=(config.style[0],), output=str(image), loss=spec,
                                     iterations=args.iterations, size=args.size, style_size=style_side,
                                     device=str(args.device)))
    cache[key] = {"key": key, "image": image.name, "seconds": result.seconds,
                  "evaluations": sum(stage.get("evaluations", 0) for stage in result.stages)}
    with (out / "lbfgs.jsonl").open("a") as lines:
        lines.write(json.dumps(cache[key]) + "\n")
    return cache[key]


def against_optimization(model, config: TrainConfig, held_out: list[str], vgg, args: argparse.Namespace,
                         out: Path) -> list[dict]:
    """One row per held-out photo: model and optimization style losses and seconds."""
    spec = config.loss
    style = load_style_image(config.style[0], config.style_size or args.size).to(args.device)
    grams = style_targets(vgg, [style], spec)
    cache_path = out / "lbfgs.jsonl"
    cache = {row["key"]: row for row in map(json.loads, cache_path.read_text().splitlines())} \
        if cache_path.is_file() else {}
    rows = []
    for path in held_out[:args.photos]:
        photo = load_style_image(path, args.size).to(args.device)
        reference = optimization(path, config, args, out, cache)
        optimized = load_style_image(out / "lbfgs" / reference["image"], args.size).to(args.device)
        with torch.no_grad():
            model(photo)  # warm-up: the first call at a size allocates
            start = synchronized(args.device)
            styled = stylized(model, photo)
            seconds = synchronized(args.device) - start
        ours, theirs = score_tensor(vgg, styled, photo, grams, spec), score_tensor(vgg, optimized, photo, grams, spec)
        rows.append({"photo": Path(path).name, "model_style": ours["style"], "lbfgs_style": theirs["style"],
                     "model_terms": style_terms(vgg, styled, grams, spec),
                     "lbfgs_terms": style_terms(vgg, optimized, grams, spec),
                     "model_content": ours["content"], "lbfgs_content": theirs["content"], "model_seconds": seconds,
                     "lbfgs_seconds": reference["seconds"], "lbfgs_evaluations": reference["evaluations"],
                     "lbfgs_image": reference["image"], "source": path})
        print(f"  {rows[-1]['photo']}: style {ours['style']:.4g} (model, {seconds:.2f} s) vs {theirs['style']:.4g} "
              f"(L-BFGS, {reference['seconds']:.0f} s)", flush=True)
    return rows


def contact_sheet(model, rows: list[dict], out: Path, path: Path, device: torch.device, height: int = 256) -> None:
    """photo | model | optimization, one row per photo (up to four), as a small JPEG."""
    from PIL import Image

    cells = []
    for row in rows[:4]:
        photo = load_style_image(row["source"], height * 2)
        images = [photo, stylized(model, photo.to(device)).cpu(),
                  load_style_image(out / "lbfgs" / row["lbfgs_image"], height * 2)]
        cells.append([resize_to(Image.fromarray((i[0].permute(1, 2, 0) * 255).round().byte().numpy()),
                                scaled_size(i.shape[-1], i.shape[-2], height)) for i in images])
    width = max(sum(c.width for c in row) for row in cells)
    sheet = Image.new("RGB", (width, height * len(cells)), "white")
    for y, row in enumerate(cells):
        x = 0
        for cell in row:
            sheet.paste(cell, (x, y * height + (height - cell.height) // 2))
            x += cell.width
    save_image(sheet, path, quality=85)


def summary(rows: list[dict]) -> dict:
    median = {key: statistics.median(row[key] for row in rows) for key in (
        "model_style", "lbfgs_style", "model_content", "lbfgs_content", "model_seconds", "lbfgs_seconds")}
    return {"photos": len(rows), "model_wins": sum(r["model_style"] <= r["lbfgs_style"] for r in rows), **median,
            "terms": gap_by_term(rows)}


def gap_by_term(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per style layer and scale (``fastnst.score.style_terms``' keys), medians over the photos: the model's term
    over the optimization's (``ratio``), and that term's share of the gap between their style losses (``share``;
    one photo's shares sum to 1). Where the model stands furthest from optimization, i.e. where a lever must act."""
    def share(row: dict, key: str) -> float:
        gap = row["model_style"] - row["lbfgs_style"]
        return (row["model_terms"][key] - row["lbfgs_terms"][key]) / gap if gap else 0.0
    return {key: {"ratio": statistics.median(r["model_terms"][key] / r["lbfgs_terms"][key] for r in rows),
                  "share": statistics.median(share(r, key) for r in rows)} for key in rows[0]["model_terms"]}


def keep(results: dict, quality: Path) -> None:
    """Merge ``results`` into ``quality`` (JSON, model name -> figures), replacing the file at once."""
    old = json.loads(quality.read_text()) if quality.is_file() else {}
    with atomic_path(quality) as tmp:
        Path(tmp).write_text(json.dumps({**old, **results}, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path, help="single-style model files trained by fastnst train")
    parser.add_argument("--out", type=Path, required=True, help="folder for lbfgs/, lbfgs.jsonl and quality.json")
    parser.add_argument("--photos", type=int, default=20, help="held-out photos per model (default 20)")
    parser.add_argument("--size", type=int, default=512, help="long side against optimization (default 512)")
    parser.add_argument("--iterations", type=int, default=100, help="L-BFGS evaluations (default 100)")
    parser.add_argument("--ratio-size", type=int, default=384, help="long side for the style ratios (default 384)")
    parser.add_argument("--ratios-only", action="store_true", help="skip the optimization half")
    parser.add_argument("--sheets", type=Path, help="write a contact sheet per model here (e.g. docs/styles)")
    parser.add_argument("--device", type=torch.device, default=torch.device("cpu"),
                        help="where the models and optimizations run (default cpu; e.g. cuda)")
    args = parser.parse_args(argv)
    if not CONTENT.is_dir():
        print(f"eval_styles: the classic content photos are not at {CONTENT}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    results, quality = {}, args.out / "quality.json"
    for path in args.models:
        model, info = load_model(path, args.device)
        if model.spec.num_styles != 1 or not info.config.get("loss"):
            print(f"eval_styles: {path}: give a single-style model trained by fastnst train "
                  "(fastnst convert --select extracts one)", file=sys.stderr)
            return 1
        config = own_config(info.config)
        vgg = load_loss_network(config.loss, args.device)
        print(f"{path.stem}:", flush=True)
        result = {"ratios": ratios(model, config, vgg, args), "ratio_size": args.ratio_size,
                  "hardware": describe_device(args.device)}
        print("  style ratios " + " ".join(f"{k}: {v:.3f}" for k, v in result["ratios"].items()), flush=True)
        if not args.ratios_only:
            rows = against_optimization(model, config, list(info.config.get("held_out") or []), vgg, args, args.out)
            result.update(size=args.size, iterations=args.iterations, **summary(rows))
            print("  gap by term (model / L-BFGS, share of the gap): " + ", ".join(
                f"{key} {v['ratio']:.2f}x {v['share']:.0%}" for key, v in
                sorted(result["terms"].items(), key=lambda item: -item[1]["share"])), flush=True)
            if args.sheets:
                contact_sheet(model, rows, args.out, args.sheets / f"{path.stem}.jpg", args.device)
        results[path.stem] = result
        keep(results, quality)  # after each model: a stopped run keeps what it measured
    print(f"\nmodel{'':12} {'ratio 1':>8} {'ratio 1/2':>9} {'ratio 1/4':>9}  {'style/L-BFGS':>12} {'wins':>5} "
          f"{'time ratio':>10}")
    for name, q in results.items():
        r = q["ratios"]
        versus = (f"{q['model_style'] / q['lbfgs_style']:12.2f} {q['model_wins']:2d}/{q['photos']:<2d} "
                  f"{q['model_seconds'] / q['lbfgs_seconds']:10.5f}") if "photos" in q else ""
        passed = all(v <= BAR_RATIO for v in r.values())
        print(f"{name:17} {r['1']:8.3f} {r['0.5']:9.3f} {r['0.25']:9.3f}  {versus}  "
              f"{'ratios pass' if passed else 'ratios fail'}")
    print(f"wrote {quality}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
