"""The bundled styles' quality bar: a trained network against 100 L-BFGS iterations of ``fastnst optimize``.

    python scripts/eval_bundled.py checkpoints/starry_night.safetensors checkpoints/wave.safetensors \\
        --photos 20 --size 512 --iterations 100 --out runs/quality

For each model and each of its held-out photos (recorded in the model file), at
``--size`` (long side): the network's stylization, timed (torch, fp32, after a
warm-up), and ``fastnst.optimize`` started from the photo with the model's own
loss network, layers and weights and the same style image at the training's
style size, timed. Both images are scored by ``fastnst.score.score_tensor`` (the
training's loss code) against the same Grams. Johnson et al. found a trained
network matches 50–100 L-BFGS iterations; the issue's bar: the model's style
loss <= the optimization's, in less than 1/100 of its time.

The optimizations are the slow part (minutes per photo on a CPU) and do not
depend on the model: each is appended to ``OUT/lbfgs.jsonl`` as it finishes,
keyed by style image, photo, sizes, iterations and loss, so a stopped run goes on
where it was and a retrained model is judged without optimizing again.
``OUT/quality.json`` holds the medians per model (``scripts/bundle_style.py
--quality`` puts them in the model card).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from fastnst.checkpoint import load_model
from fastnst.files import atomic_path
from fastnst.losses import LossSpec
from fastnst.optimize import OptimizeConfig, optimize
from fastnst.pretrained import load_loss_network
from fastnst.score import blended_grams, content_batch, read_image, scaled_size, score_tensor


def _cached(cache_path: Path) -> dict[str, dict]:
    if not cache_path.is_file():
        return {}
    rows = [json.loads(line) for line in cache_path.read_text().splitlines() if line.strip()]
    return {row["key"]: row for row in rows}


def _key(style: str, photo: str, spec: LossSpec, style_side: int, args: argparse.Namespace) -> str:
    """What an optimization result depends on (not on the model): style, photo, sizes, iterations, loss."""
    loss = json.dumps(asdict(spec), sort_keys=True, default=str)
    return f"{Path(style).name}|{Path(photo).name}|{args.size}|{style_side}|{args.iterations}|{loss}"


def evaluate(model_path: Path, args: argparse.Namespace, cache_path: Path) -> list[dict]:
    """One row per held-out photo: the model's and the optimization's losses and seconds."""
    model, info = load_model(model_path)
    config = info.config
    spec = LossSpec(**config["loss"])
    style = config["style"][0]
    style_side = config.get("style_size") or args.size
    vgg = load_loss_network(spec)
    grams = blended_grams(vgg, [read_image(style, None, "style")], [1.0], style_side, spec, torch.device("cpu"))
    cache = _cached(cache_path)
    rows = []
    for path in (config.get("held_out") or [])[:args.photos]:
        img = read_image(path, None, "content")
        content = content_batch(img, scaled_size(*img.size, args.size))
        key = _key(style, path, spec, style_side, args)
        if key not in cache:  # the slow part, kept on disk at once so a stopped run goes on from here
            with tempfile.TemporaryDirectory() as tmp:
                result = optimize(OptimizeConfig(content=path, styles=(style,), output=str(Path(tmp) / "o.png"),
                                                 loss=spec, iterations=args.iterations, size=args.size,
                                                 style_size=style_side, device="cpu"))
            theirs = score_tensor(vgg, result.image, content, grams, spec)
            cache[key] = {"key": key, "lbfgs_style": theirs["style"], "lbfgs_content": theirs["content"],
                          "lbfgs_seconds": result.seconds,
                          "lbfgs_evaluations": sum(stage.get("evaluations", 0) for stage in result.stages)}
            with cache_path.open("a") as log:
                log.write(json.dumps(cache[key]) + "\n")
        with torch.no_grad():
            model(content)  # warm-up: the first call at a size allocates
            start = time.perf_counter()
            styled = model(content).clamp(0, 1)
            model_seconds = time.perf_counter() - start
        ours = score_tensor(vgg, styled, content, grams, spec)
        row = {"photo": Path(path).name, "model_style": ours["style"], "model_content": ours["content"],
               "model_seconds": model_seconds, **{k: v for k, v in cache[key].items() if k != "key"}}
        print(f"{model_path.stem} {row['photo']}: style {row['model_style']:.4g} (model, {model_seconds:.2f} s) "
              f"vs {row['lbfgs_style']:.4g} (L-BFGS, {row['lbfgs_seconds']:.0f} s)", flush=True)
        rows.append(row)
    return rows


def summary(rows: list[dict], args: argparse.Namespace) -> dict:
    median = {key: statistics.median(row[key] for row in rows) for key in (
        "model_style", "model_content", "model_seconds", "lbfgs_style", "lbfgs_content", "lbfgs_seconds")}
    wins = sum(row["model_style"] <= row["lbfgs_style"] for row in rows)
    return {"photos": len(rows), "size": args.size, "iterations": args.iterations, "model_wins": wins, **median}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path, help="bundled (or trained) model files")
    parser.add_argument("--photos", type=int, default=20, help="held-out photos per model (default 20)")
    parser.add_argument("--size", type=int, default=512, help="long side of the photos (default 512)")
    parser.add_argument("--iterations", type=int, default=100, help="L-BFGS iterations (default 100)")
    parser.add_argument("--out", type=Path, required=True, help="folder for photos.jsonl and quality.json")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for model_path in args.models:
        rows = evaluate(model_path, args, args.out / "lbfgs.jsonl")
        if not rows:
            print(f"{model_path}: no held-out photos recorded in the model file", file=sys.stderr)
            return 1
        results[model_path.stem] = summary(rows, args)
    quality = args.out / "quality.json"
    old = json.loads(quality.read_text()) if quality.is_file() else {}
    with atomic_path(quality) as tmp:
        Path(tmp).write_text(json.dumps({**old, **results}, indent=2))
    print(f"\nquality bar on held-out photos at {args.size} px (medians; L-BFGS {args.iterations} iterations)")
    print(f"  {'model':16} {'photos':>6} {'style model':>12} {'style L-BFGS':>13} {'ratio':>6} {'wins':>5} "
          f"{'s model':>8} {'s L-BFGS':>9} {'time ratio':>11}")
    for name, q in results.items():
        print(f"  {name:16} {q['photos']:6d} {q['model_style']:12.4g} {q['lbfgs_style']:13.4g} "
              f"{q['model_style'] / q['lbfgs_style']:6.2f} {q['model_wins']:5d} {q['model_seconds']:8.3f} "
              f"{q['lbfgs_seconds']:9.1f} {q['model_seconds'] / q['lbfgs_seconds']:11.5f}")
    print(f"wrote {quality}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
