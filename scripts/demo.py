"""Offline demo: convert the official pytorch/examples rain_princess model and stylize a photo with it.

Run by ``make demo``. It uses the real model and photo from ../shared (beside the checkout),
runs the same two commands a user would (``fastnst convert`` then ``fastnst stylize``) and
reports how closely the result matches pytorch/examples' own output.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fastnst.cli import main

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
OUT = REPO / "demo-output"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def run() -> int:
    legacy = SHARED / "models" / "rain_princess.pth"
    photo = SHARED / "content" / "amber.jpg"
    if not legacy.is_file() or not photo.is_file():
        print(f"demo: needs {legacy} and {photo} (the ../shared data folder beside the checkout)", file=sys.stderr)
        return 1
    model = OUT / "rain_princess.safetensors"
    print(f"$ fastnst convert {legacy} -o {model}")
    if main(["convert", str(legacy), "-o", str(model)]) != 0:
        return 1
    print(f"$ fastnst stylize -m {model} {photo} -o {OUT} --overwrite")
    start = time.perf_counter()
    if main(["stylize", "-m", str(model), str(photo), "-o", str(OUT), "--overwrite"]) != 0:
        return 1
    seconds = time.perf_counter() - start
    result = np.asarray(Image.open(OUT / photo.name).convert("RGB"))
    reference = np.asarray(Image.open(SHARED / "reference" / "amber-rain-princess.jpg").convert("RGB"))
    print(f"stylized {photo.name} ({result.shape[1]}x{result.shape[0]}) in {seconds:.1f} s -> {OUT / photo.name}")
    print(f"PSNR against pytorch/examples' official output: {psnr(result, reference):.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(run())
