"""Offline demo: every bundled style on a public-domain photo, and a contact sheet of the results.

Run by ``make demo`` on a fresh machine, with nothing but the checkout: it stylizes
Grace Hopper's portrait (a US Navy photograph in the public domain, shipped in
matplotlib's wheel as ``mpl-data/sample_data/grace_hopper.jpg``; ``make demo``
installs matplotlib with the ``demo`` extra) with each model in ``checkpoints/``
through the same command a user runs (``fastnst stylize``), then writes
``demo-output/contact_sheet.jpg``: the photo, and for each style its painting's
thumbnail (carried in the model file) above the stylized photo.

When the project's data folder ``../shared`` is beside the checkout it also
checks the converted pytorch/examples ``rain_princess`` model against that
project's own output (PSNR; a faithful implementation reaches about 28 dB).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from fastnst.checkpoint import read_info
from fastnst.cli import main
from fastnst.images import decode_thumbnail, load_image, psnr, save_image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
OUT = REPO / "demo-output"
LABEL_HEIGHT = 22


def sample_photo() -> Path | None:
    """matplotlib's copy of Grace Hopper's portrait (512x600), found without importing matplotlib."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    return path if path.is_file() else None


def bundled_styles(folder: Path) -> list[tuple[Path, dict, str, torch.Tensor | None]]:
    """The contact sheet's columns: (model file, look, label, thumbnail (3, h, w) or None) each.

    A single-style model is one column. A multi-style model adds a column for
    each style no single-style file in ``folder`` shows already (look
    ``{"style": name}``); when it has none of its own (the all-styles file joins
    the bundled singles), one column of what only it can do: an even mix of its
    first two styles (``{"style_mix": "a=0.5,b=0.5"}``), both paintings above it.
    """
    models = [(model, read_info(model)) for model in sorted(folder.glob("*.safetensors"))]
    shown = {info.styles[0] for _, info in models if len(info.styles) == 1}
    found = []
    for model, info in models:
        thumbnails = [decode_thumbnail(t, str(model)) for t in info.thumbnails] or [None] * len(info.styles)
        if len(info.styles) <= 1:
            found.append((model, {}, model.stem, thumbnails[0] if thumbnails else None))
            continue
        own = [(name, thumb) for name, thumb in zip(info.styles, thumbnails) if name not in shown]
        found += [(model, {"style": name}, f"{model.stem}: {name}", thumb) for name, thumb in own]
        if not own:
            (a, b), pair = info.styles[:2], thumbnails[:2]
            both = None if None in pair else _side_by_side(*pair)
            found.append((model, {"style_mix": f"{a}=0.5,{b}=0.5"}, f"{model.stem}: {a} + {b}", both))
    return found


def _side_by_side(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Two (3, h, w) images at the lower one's height, side by side."""
    height = min(left.shape[1], right.shape[1])
    scaled = [F.interpolate(i[None], size=(height, max(1, round(i.shape[2] * height / i.shape[1]))),
                            mode="bilinear", antialias=True, align_corners=False)[0] for i in (left, right)]
    return torch.cat(scaled, dim=2).clamp(0, 1)


def look_options(look: dict) -> list[str]:
    """``{"style_mix": "a=0.5,b=0.5"}`` → ``["--style-mix", "a=0.5,b=0.5"]``: the look as CLI options."""
    return [item for key, value in look.items() for item in (f"--{key.replace('_', '-')}", value)]


def _fit(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """(3, h, w) scaled to fit ``width`` x ``height`` and centred on white."""
    scale = min(width / image.shape[2], height / image.shape[1])
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[2] * scale)))
    resized = F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    canvas = torch.ones(3, height, width)
    top, left = (height - size[0]) // 2, (width - size[1]) // 2
    canvas[:, top:top + size[0], left:left + size[1]] = resized.clamp(0, 1)
    return canvas


def contact_sheet(photo: torch.Tensor, columns: list[tuple[str, torch.Tensor | None, torch.Tensor]],
                  cell: int = 256, gap: int = 6) -> Image.Image:
    """The photo, then per style a column: label, style thumbnail (above), stylized photo (below).

    ``photo`` and the results are (3, H, W) 0–1; a missing thumbnail leaves its cell white.
    """
    height = round(cell * photo.shape[1] / photo.shape[2])
    thumb_height = cell * 2 // 3
    n = len(columns) + 1
    sheet = Image.new("RGB", (n * cell + (n + 1) * gap, LABEL_HEIGHT + thumb_height + height + 3 * gap), "white")
    draw = ImageDraw.Draw(sheet)
    top = LABEL_HEIGHT + thumb_height + 2 * gap
    sheet.paste(_pil(_fit(photo, cell, height)), (gap, top))
    draw.text((gap, 4), "photo", fill="black")
    for i, (label, thumbnail, result) in enumerate(columns, start=1):
        left = gap + i * (cell + gap)
        draw.text((left, 4), label, fill="black")
        if thumbnail is not None:
            sheet.paste(_pil(_fit(thumbnail, cell, thumb_height)), (left, LABEL_HEIGHT + gap))
        sheet.paste(_pil(_fit(result, cell, height)), (left, top))
    return sheet


def _pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def stylize_all(photo: Path, models: Path, out: Path) -> list[tuple[str, torch.Tensor | None, torch.Tensor]] | None:
    """Run ``fastnst stylize`` for every bundled style; the contact sheet's columns, or None on a failure."""
    columns = []
    for model, look, label, thumbnail in bundled_styles(models):
        folder = out / "-".join([model.stem, *(value.replace("=", "").replace(",", "-") for value in look.values())])
        argv = ["stylize", "-m", str(model), str(photo), "-o", str(folder), "--overwrite", *look_options(look)]
        print(f"$ fastnst {' '.join(argv)}", flush=True)
        start = time.perf_counter()
        if main(argv) != 0:
            return None
        print(f"  {time.perf_counter() - start:.1f} s", flush=True)
        columns.append((label, thumbnail, load_image(folder / photo.name)))
    return columns


def rain_princess_check(out: Path = OUT) -> None:
    """The converted pytorch/examples model against its project's output, when ../shared is there."""
    legacy, photo = SHARED / "models" / "rain_princess.pth", SHARED / "content" / "amber.jpg"
    if not legacy.is_file() or not photo.is_file():
        return
    model = out / "rain_princess.safetensors"
    print(f"$ fastnst convert {legacy} -o {model}")
    if main(["convert", str(legacy), "-o", str(model)]) != 0:
        return
    folder = out / "rain_princess"
    if main(["stylize", "-m", str(model), str(photo), "-o", str(folder), "--overwrite"]) != 0:
        return
    result = np.asarray(Image.open(folder / photo.name).convert("RGB"), np.float64)
    reference = np.asarray(Image.open(SHARED / "reference" / "amber-rain-princess.jpg").convert("RGB"), np.float64)
    quality = psnr(result, reference)
    print(f"rain_princess (pytorch/examples, converted) on {photo.name}: PSNR against that project's own "
          f"output {quality:.2f} dB")


def run(models: Path = REPO / "checkpoints", out: Path = OUT) -> int:
    photo = sample_photo()
    if photo is None:
        print("demo: needs matplotlib's sample photo grace_hopper.jpg: pip install matplotlib "
              "(make demo installs it)", file=sys.stderr)
        return 1
    if not bundled_styles(models):
        print(f"demo: no model files in {models}", file=sys.stderr)
        return 1
    columns = stylize_all(photo, models, out)
    if columns is None:
        return 1
    sheet = save_image(contact_sheet(load_image(photo), columns), out / "contact_sheet.jpg", quality=90)
    print(f"wrote {sheet}: {photo.name} and {len(columns)} style(s) ({', '.join(c[0] for c in columns)})")
    if models == REPO / "checkpoints":
        rain_princess_check(out)
    return 0


def main_cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=REPO / "checkpoints", help="folder of model files")
    parser.add_argument("--out", type=Path, default=OUT, help="output folder (default demo-output/)")
    args = parser.parse_args()
    return run(args.models, args.out)


if __name__ == "__main__":
    sys.exit(main_cli())
