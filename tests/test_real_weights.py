"""Checks against the real models and weights in ../shared (skipped with a reason when absent)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from fastnst.cli import main
from fastnst.pretrained import load_vgg

from conftest import SHARED, psnr, requires_shared

pytestmark = requires_shared


def test_rain_princess_through_the_cli_matches_the_official_output(tmp_path):
    model = tmp_path / "rain_princess.safetensors"
    assert main(["convert", str(SHARED / "models" / "rain_princess.pth"), "-o", str(model)]) == 0
    out = tmp_path / "out"
    assert main(["stylize", "-m", str(model), str(SHARED / "content" / "amber.jpg"), "-o", str(out),
                 "--format", "png", "--backend", "torch"]) == 0
    result = np.asarray(Image.open(out / "amber.png").convert("RGB"))
    reference = np.asarray(Image.open(SHARED / "reference" / "amber-rain-princess.jpg").convert("RGB"))
    assert result.shape == reference.shape
    assert psnr(result, reference) >= 27.5


def test_real_caffe_vgg19_file_loads_and_recognises_content():
    vgg = load_vgg("vgg19", ["relu1_1", "relu2_1", "relu3_1"], SHARED / "vgg" / "vgg19_caffe_block1-3.pth")
    assert vgg.flavour == "caffe"
    from fastnst.images import load_image

    a = load_image(SHARED / "content" / "amber.jpg", max_size=256)[None, :, :96, :96]
    shifted = torch.roll(a, 2, dims=-1)
    other = load_image(SHARED / "content" / "chicago.jpg", max_size=256)[None, :, :96, :96]
    fa, fs, fo = vgg(a)["relu3_1"], vgg(shifted)["relu3_1"], vgg(other)["relu3_1"]
    # Real features: a slightly shifted photo stays far closer than a different photo.
    assert (fa - fs).pow(2).mean() < 0.5 * (fa - fo).pow(2).mean()
