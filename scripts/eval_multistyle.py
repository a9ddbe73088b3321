"""Does one network carrying N styles match N single-style networks? Per-style style loss on held-out photos.

    # train everything (a 3-style model for N x K steps, one single-style model per style for K steps), then judge
    python scripts/eval_multistyle.py --styles ../shared/data/style/a.jpg ../shared/data/style/b.jpg \\
        ../shared/data/style/c.jpg --steps-per-style 300 --image-size 256 --out runs/multistyle
    # or judge models trained before (same style order)
    python scripts/eval_multistyle.py --styles A B C --multi multi.safetensors --single a.safetensors b.safetensors \\
        c.safetensors --out runs/multistyle

The multi-style model sees each style on about 1/N of its batch items, so it trains
N x K steps to give every style about as many images as a single-style model gets in
K steps. Both use the same loss (by default the Caffe VGG19 of ../shared/data with
style relu1_1,relu2_1,relu3_1, content relu2_2, weights 1/1), data, seed and
held-out photos. For each style it prints the median weighted style loss
(``fastnst.losses``, the training code) of the held-out photos stylized by the
multi-style model and by that style's own model, and their ratio (issue target:
multi / single <= 1.15); then the style losses of a 50/50 mix of the first two
styles against each of them. ``--out`` gets the models and a contact sheet:
photo | each style by the multi-style model | the mix | each single-style model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fastnst.checkpoint import load_model
from fastnst.images import load_style_image, save_image
from fastnst.losses import LossSpec, content_targets, perceptual_losses, style_targets
from fastnst.pretrained import load_loss_network
from fastnst.train import TrainConfig, fit
from fastnst.train.data import load_photo

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TARGET = 1.15


def _train(args: argparse.Namespace, styles: list[str], steps: int, output: Path) -> Path:
    loss = LossSpec(vgg="vgg19", vgg_weights=args.vgg_weights, vgg_flavour="caffe", content_layers="relu2_2",
                    style_layers="relu1_1,relu2_1,relu3_1", content_weight=args.content_weight,
                    style_weight=args.style_weight)
    config = TrainConfig(style=tuple(styles), data=args.data, output=str(output), spec=args.spec, loss=loss,
                         image_size=args.image_size, batch_size=args.batch_size, lr=args.lr, steps=steps,
                         seed=args.seed, amp=args.amp, workers=args.workers, holdout=args.holdout,
                         sample_every=0, checkpoint_every=0, log_every=max(1, steps // 10))
    start = time.perf_counter()
    path = fit(config)
    print(f"trained {path.name}: {len(styles)} style(s), {steps} steps in {time.perf_counter() - start:.0f} s",
          flush=True)
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--styles", nargs="+", required=True, help="style images, in the multi-style model's order")
    parser.add_argument("--multi", help="a trained multi-style model (default: train one)")
    parser.add_argument("--single", nargs="+", help="trained single-style models, one per style (default: train)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the models and the contact sheet")
    parser.add_argument("--data", default=str(SHARED / "photos"), help="training photos (default ../shared/data)")
    parser.add_argument("--vgg-weights", default=str(SHARED / "vgg" / "vgg19_caffe_block1-3.pth"))
    parser.add_argument("--steps-per-style", type=int, default=300, help="K (default 300)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--content-weight", type=float, default=1.0)
    parser.add_argument("--style-weight", type=float, default=1.0)
    parser.add_argument("--spec", default="johnson")
    parser.add_argument("--amp", default="none", help="none or bf16 (about 2x faster on AMX and AMD EPYC CPUs)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--holdout", type=int, default=8, help="photos held out of training and judged (default 8)")
    return parser


def judge(multi, singles, config: dict, styles: list[str]) -> tuple[dict[str, list[list[float]]], list[torch.Tensor]]:
    """Style losses of the held-out photos: by the multi-style model per style, by each single-style model, of the
    photo itself, and of a 50/50 mix of the first two styles against each; and the contact sheet's rows."""
    n, spec = len(styles), LossSpec(**config["loss"])
    vgg = load_loss_network(spec)
    grams = [style_targets(vgg, [load_style_image(s, config.get("style_size"))], spec) for s in styles]
    mix = torch.zeros(n)
    mix[:2] = 0.5
    losses: dict[str, list[list[float]]] = {key: [[] for _ in range(n)] for key in ("multi", "single", "photo", "mix")}
    rows = []
    with torch.no_grad():
        for path in config["held_out"]:
            photo = load_photo(path, config["image_size"])[None]
            targets = content_targets(vgg, photo, spec)
            by_multi = [multi(photo, style=F.one_hot(torch.tensor(i), n).float()).clamp(0, 1) for i in range(n)]
            by_single = [net(photo).clamp(0, 1) for net in singles]
            blended = multi(photo, style=mix).clamp(0, 1)
            for i in range(n):
                for key, image in (("multi", by_multi[i]), ("single", by_single[i]), ("photo", photo),
                                   ("mix", blended)):
                    if key != "mix" or i < 2:
                        losses[key][i].append(perceptual_losses(vgg, image, targets, grams[i], spec)["style"].item())
            rows.append(torch.cat([photo[0], *(b[0] for b in by_multi), blended[0], *(b[0] for b in by_single)], 2))
    return losses, rows


def report(losses: dict, styles: list[str], config: dict, multi_path: Path) -> None:
    print(f"\nper-style style loss on {len(config['held_out'])} held-out photos at {config['image_size']} px "
          f"(median; multi-style model {multi_path.name}, {config.get('steps_done')} steps; lower is more of the "
          "style)")
    print(f"  {'style':24} {'photo':>10} {'multi':>10} {'single':>10} {'multi/single':>13}")
    ratios = []
    for i, style in enumerate(styles):
        m, s, p = (statistics.median(losses[key][i]) for key in ("multi", "single", "photo"))
        ratios.append(m / s)
        print(f"  {Path(style).stem:24} {p:10.4g} {m:10.4g} {s:10.4g} {m / s:12.3f}x  "
              f"{'ok' if m / s <= TARGET else 'over'} (target <= {TARGET})")
    print(f"  worst ratio {max(ratios):.3f}, mean {statistics.mean(ratios):.3f}")
    if len(styles) >= 2:
        names = [Path(s).stem for s in styles[:2]]
        for i in range(2):
            print(f"  50/50 mix of {names[0]} and {names[1]}: style loss against {names[i]} "
                  f"{statistics.median(losses['mix'][i]):.4g} (pure {names[i]} "
                  f"{statistics.median(losses['multi'][i]):.4g}, photo {statistics.median(losses['photo'][i]):.4g})")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.single and len(args.single) != len(args.styles):
        print(f"--single: give one model per style ({len(args.styles)})", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    n, k = len(args.styles), args.steps_per_style
    multi_path = Path(args.multi) if args.multi else _train(args, args.styles, n * k, args.out / "multi.safetensors")
    single_paths = [Path(p) for p in args.single] if args.single else [
        _train(args, [style], k, args.out / f"single{i}-{Path(style).stem}.safetensors")
        for i, style in enumerate(args.styles)]
    multi, info = load_model(multi_path)
    if multi.spec.num_styles != n:
        print(f"{multi_path}: carries {multi.spec.num_styles} styles, --styles gives {n}", file=sys.stderr)
        return 2
    if not info.config.get("loss") or not info.config.get("held_out"):
        print(f"{multi_path}: no training config or no held-out photos in the file", file=sys.stderr)
        return 1
    losses, rows = judge(multi, [load_model(p)[0] for p in single_paths], info.config, args.styles)
    report(losses, args.styles, info.config, multi_path)
    sheet = args.out / "contact.png"
    save_image(torch.cat(rows, dim=1), sheet)
    print(f"wrote {sheet}: photo | {' | '.join(Path(s).stem for s in args.styles)} (multi) | mix | "
          f"{' | '.join(Path(s).stem for s in args.styles)} (single)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
