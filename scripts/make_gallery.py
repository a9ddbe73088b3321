"""The README's gallery, ``docs/gallery.jpg``: every bundled style on Grace Hopper's portrait.

    python scripts/make_gallery.py                   # checkpoints/*.safetensors -> docs/gallery.jpg

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
    args = parser.parse_args(argv)
    photo_path = sample_photo()
    if photo_path is None:
        print("needs matplotlib's grace_hopper.jpg: pip install matplotlib", file=sys.stderr)
        return 1
    photo = load_image(photo_path)
    columns = []
    for model_path, style, label, thumbnail in bundled_styles(args.models):
        result = Stylizer(model_path, backend="torch", style=style)(photo[None])[0]
        columns.append((label, thumbnail, result.float().clamp(0, 1)))
    if not columns:
        print(f"no model files in {args.models}", file=sys.stderr)
        return 1
    sheet = contact_sheet(photo, columns, cell=args.cell)
    for quality in (90, 85, 80, 75, 70, 60, 50):
        save_image(sheet, args.output, quality=quality)
        if args.output.stat().st_size <= args.max_bytes:
            break
    print(f"wrote {args.output}: {sheet.width}x{sheet.height}, {args.output.stat().st_size / 1e3:.0f} kB "
          f"(JPEG quality {quality}), {len(columns)} style(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
