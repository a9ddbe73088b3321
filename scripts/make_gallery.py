"""The README's gallery, ``docs/gallery.jpg``: every bundled style on Grace Hopper's portrait.

    python scripts/make_gallery.py                   # checkpoints/*.safetensors -> docs/gallery.jpg
    python scripts/make_gallery.py --strokes checkpoints/starry_night.safetensors   # -> docs/stroke_scale.jpg

``--strokes MODEL`` makes the stroke-size example instead: one style at
``--stroke-scale`` 1, 2 and 3 on a 1680-px photo (avril.jpg from
../shared/data/content), each column showing the whole photo and a detail at
full resolution.

The same contact sheet as ``make demo`` (photo; per style its painting's thumbnail
above the stylized photo), made with the API at ``--cell`` pixels per column and
saved as JPEG, lowering the quality until the file is under ``--max-bytes`` (1 MB)
so the repository stays small. The photo is public domain (US Navy), found in
matplotlib's wheel; the paintings are public domain.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from demo import bundled_styles, contact_sheet, sample_photo

from fastnst.images import load_image, save_image
from fastnst.stylize import Stylizer

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=REPO / "checkpoints")
    parser.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "gallery.jpg")
    parser.add_argument("--cell", type=int, default=320, help="column width in pixels (default 320)")
    parser.add_argument("--max-bytes", type=int, default=1_000_000)
    parser.add_argument("--strokes", type=Path, metavar="MODEL", help="the stroke-size example with this model")
    args = parser.parse_args(argv)
    if args.strokes:
        return stroke_example(args)
    photo_path = sample_photo()
    if photo_path is None:
        print("needs matplotlib's grace_hopper.jpg: pip install matplotlib", file=sys.stderr)
        return 1
    photo = load_image(photo_path)
    columns = []
    for model_path, look, label, thumbnail in bundled_styles(args.models):
        result = Stylizer(model_path, backend="torch", **look)(photo[None])[0]
        columns.append((label, thumbnail, result.float().clamp(0, 1)))
    if not columns:
        print(f"no model files in {args.models}", file=sys.stderr)
        return 1
    sheet = contact_sheet(photo, columns, cell=args.cell)
    quality = save_within(sheet, args.output, args.max_bytes)
    print(f"wrote {args.output}: {sheet.width}x{sheet.height}, {args.output.stat().st_size / 1e3:.0f} kB "
          f"(JPEG quality {quality}), {len(columns)} style(s)")
    return 0


def save_within(sheet, path: Path, max_bytes: int) -> int:
    """Save ``sheet`` as JPEG at the highest of a few qualities that fits ``max_bytes``; that quality."""
    for quality in (90, 85, 80, 75, 70, 60, 50):
        save_image(sheet, path, quality=quality)
        if path.stat().st_size <= max_bytes:
            break
    return quality


def stroke_example(args: argparse.Namespace) -> int:
    """One style at stroke scales 1, 2, 3 on a 1680-px photo: the whole photo above, a full-resolution detail
    (the centre, ``--cell`` pixels wide) below, per column."""
    import torch

    source = REPO.parent / "shared" / "data" / "content" / "avril.jpg"  # the largest there: 1680x1050
    if not source.is_file():
        print(f"needs {source} (the shared data folder beside the checkout)", file=sys.stderr)
        return 1
    photo = load_image(source, max_size=2000)
    height, width = photo.shape[1:]
    top, left = height // 2 - args.cell // 2, width // 2 - args.cell // 2
    detail = (slice(None), slice(top, top + args.cell), slice(left, left + args.cell))
    columns = []
    for scale in (1, 2, 3):
        result = Stylizer(args.strokes, backend="torch", stroke_scale=scale)(photo[None])[0].float().clamp(0, 1)
        columns.append((f"--stroke-scale {scale}", result, result[detail]))
    sheet = contact_sheet(photo[detail], columns, cell=args.cell)
    output = args.output if args.output != REPO / "docs" / "gallery.jpg" else REPO / "docs" / "stroke_scale.jpg"
    quality = save_within(sheet, output, args.max_bytes)
    print(f"wrote {output}: {sheet.width}x{sheet.height} (JPEG quality {quality}); photo {width}x{height}, "
          f"{torch.get_num_threads()} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
