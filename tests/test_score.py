"""``fastnst score``: agrees with the training loss code on the same inputs; resizing, blends, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_optimize import stripes

from fastnst.cli import main
from fastnst.errors import ConfigError, ImageError
from fastnst.images import to_tensor
from fastnst.losses import LossSpec, content_targets, perceptual_losses, style_grams, tv_loss
from fastnst.models.vgg import VGGFeatures
from fastnst.pretrained import load_loss_network
from fastnst.score import ScoreConfig, parse_blend, score_images, style_ratios, style_terms

from conftest import gradient_image, random_vgg_state

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def files(tmp_path, vgg_file):
    content, style, other = tmp_path / "content.png", tmp_path / "style.png", tmp_path / "other.png"
    gradient_image(40, 32).save(content)
    stripes(40, 24).save(style)  # long side 40: the scored 40×32 images need no style resize
    stripes(30, 30, phase=2).save(other)
    image = tmp_path / "image.png"
    gradient_image(40, 32, seed=7).save(image)
    weights = vgg_file()
    spec = LossSpec(vgg="vgg16", vgg_weights=str(weights), content_layers="relu2_2",
                    style_layers="relu1_2,relu2_2:0.5", content_weight=2.0, style_weight=300.0, tv_weight=5.0)
    cli = ["--vgg", "vgg16", "--vgg-weights", str(weights), "--content-layers", "relu2_2",
           "--style-layers", "relu1_2,relu2_2:0.5", "--content-weight", "2", "--style-weight", "300",
           "--tv-weight", "5", "--device", "cpu"]
    return {"content": content, "style": style, "other": other, "image": image, "spec": spec, "cli": cli,
            "dir": tmp_path}


def tensor(path) -> torch.Tensor:
    return to_tensor(Image.open(path).convert("RGB"))[None]


def training_losses(spec, image, content, style) -> dict[str, float]:
    vgg = load_loss_network(spec)
    with torch.no_grad():
        out = perceptual_losses(vgg, image, content_targets(vgg, content, spec), style_grams(vgg, style, spec), spec)
    return {k: float(v) for k, v in out.items()}


def test_score_equals_perceptual_losses_on_the_same_inputs(files):
    report = score_images(ScoreConfig(images=(str(files["image"]),), content=str(files["content"]),
                                      styles=(str(files["style"]),), loss=files["spec"], device="cpu"))
    (row,) = report.rows
    expected = training_losses(files["spec"], tensor(files["image"]), tensor(files["content"]), tensor(files["style"]))
    for name in ("content", "style", "tv", "total"):
        assert row[name] == pytest.approx(expected[name], rel=1e-5)
    assert row["unweighted"]["content"] == pytest.approx(expected["content"] / 2.0, rel=1e-5)
    assert row["unweighted"]["style"] == pytest.approx(expected["style"] / 300.0, rel=1e-5)
    assert row["unweighted"]["tv"] == pytest.approx(float(tv_loss(tensor(files["image"]))), rel=1e-5)
    assert (row["width"], row["height"]) == (40, 32) and row["content"] > 0 and row["style"] > 0


def test_content_is_resized_to_each_image_and_style_to_style_size(files, tmp_path):
    small = tmp_path / "small.png"
    gradient_image(20, 16, seed=3).save(small)
    report = score_images(ScoreConfig(images=(str(small),), content=str(files["content"]),
                                      styles=(str(files["style"]),), loss=files["spec"], style_size=20, device="cpu"))
    lanczos = Image.Resampling.LANCZOS
    content = to_tensor(Image.open(files["content"]).convert("RGB").resize((20, 16), lanczos))[None]
    style = to_tensor(Image.open(files["style"]).convert("RGB").resize((20, 12), lanczos))[None]
    expected = training_losses(files["spec"], tensor(small), content, style)
    assert report.rows[0]["total"] == pytest.approx(expected["total"], rel=1e-5)
    assert report.rows[0]["content"] == pytest.approx(expected["content"], rel=1e-5)


def test_a_zero_weight_still_gets_its_unweighted_value(files):
    from dataclasses import replace

    spec = replace(files["spec"], tv_weight=0.0)
    report = score_images(ScoreConfig(images=(str(files["image"]),), content=str(files["content"]),
                                      styles=(str(files["style"]),), loss=spec, device="cpu"))
    row = report.rows[0]
    assert row["tv"] == 0 and row["unweighted"]["tv"] == pytest.approx(float(tv_loss(tensor(files["image"]))))


def test_scoring_the_content_itself_has_no_content_loss_and_the_style_no_style_loss(files):
    report = score_images(ScoreConfig(images=(str(files["content"]), str(files["style"])),
                                      content=str(files["content"]), styles=(str(files["style"]),),
                                      loss=files["spec"], device="cpu"))
    assert report.rows[0]["content"] == 0 and report.rows[0]["style"] > 0
    assert report.rows[1]["style"] == pytest.approx(0, abs=1e-9) and report.rows[1]["content"] > 0


def test_blend_in_score(files):
    spec = files["spec"]
    report = score_images(ScoreConfig(images=(str(files["image"]),), content=str(files["content"]),
                                      styles=(str(files["style"]), str(files["other"])), style_blend="3,1",
                                      loss=spec, device="cpu"))
    vgg = load_loss_network(spec)
    other = to_tensor(Image.open(files["other"]).convert("RGB").resize((40, 40), Image.Resampling.LANCZOS))[None]
    ga, gb = style_grams(vgg, tensor(files["style"]), spec), style_grams(vgg, other, spec)
    grams = {k: 0.75 * ga[k] + 0.25 * gb[k] for k in ga}
    with torch.no_grad():
        expected = perceptual_losses(vgg, tensor(files["image"]), content_targets(vgg, tensor(files["content"]), spec),
                                     grams, spec)
    assert report.rows[0]["style"] == pytest.approx(float(expected["style"]), rel=1e-5)


def test_parse_blend():
    assert parse_blend(None, 2) == (0.5, 0.5)
    assert parse_blend("3,1", 2) == (0.75, 0.25)
    assert parse_blend([0, 2], 2) == (0.0, 1.0)
    for bad, message in (("1", "1 weight"), ("1,-1", ">= 0"), ("0,0", "all zero"), ("x,1", "one number"),
                         ("nan,1", "finite")):
        with pytest.raises(ConfigError, match=message):
            parse_blend(bad, 2)


def test_bad_images_are_reported_and_the_rest_scored(files, tmp_path):
    junk, tiny = tmp_path / "junk.png", tmp_path / "tiny.png"
    junk.write_bytes(b"nope")
    Image.new("RGB", (1, 5)).save(tiny)
    report = score_images(ScoreConfig(images=(str(junk), str(files["image"]), str(tiny), str(tmp_path / "gone.png")),
                                      content=str(files["content"]), styles=(str(files["style"]),),
                                      loss=files["spec"], device="cpu"))
    assert [row["image"] for row in report.rows] == [str(files["image"])]
    reasons = dict(report.failed)
    assert "not an image" in reasons[str(junk)] and "no such file" in reasons[str(tmp_path / "gone.png")]
    assert "1x5 px, too small for relu2_2 (needs at least 2 px per side)" == reasons[str(tiny)]


def test_unreadable_content_or_style_fails_the_run(files, tmp_path):
    with pytest.raises(ImageError, match="no such file.*content image"):
        score_images(ScoreConfig(images=(str(files["image"]),), content=str(tmp_path / "x.jpg"),
                                 styles=(str(files["style"]),), loss=files["spec"]))
    with pytest.raises(ConfigError, match="--style-size"):
        score_images(ScoreConfig(images=(str(files["image"]),), content=str(files["content"]),
                                 styles=(str(files["style"]),), loss=files["spec"], style_size=1))


# -- through the command line --------------------------------------------------------------------

def test_cli_table_and_json(files, capsys):
    args = ["score", "--content", str(files["content"]), "--style", str(files["style"]), str(files["image"]),
            str(files["content"]), *files["cli"]]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:6] == ["image", "size", "content", "style", "tv", "total"]
    assert str(files["image"]) in out[1] and "40x32" in out[1] and len(out) == 3
    assert main([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    expected = training_losses(files["spec"], tensor(files["image"]), tensor(files["content"]), tensor(files["style"]))
    assert data["images"][0]["total"] == pytest.approx(expected["total"], rel=1e-5)
    assert data["loss"]["style_layers"] == {"relu1_2": 1.0, "relu2_2": 0.5} and data["failed"] == []


def test_cli_grayscale_style_and_blend(files, tmp_path, capsys):
    """A grayscale style scores as its RGB copy, here in a 1,1 blend with another style."""
    gray, rgb = tmp_path / "gray.png", tmp_path / "rgb.png"
    stripes(40, 24).convert("L").save(gray)
    Image.open(gray).convert("RGB").save(rgb)
    scores = {}
    for name, styles in (("gray", [gray, files["style"]]), ("rgb", [rgb, files["style"]])):
        assert main(["score", "--content", str(files["content"]), *(a for s in styles for a in ("--style", str(s))),
                     "--style-blend", "1,1", "--style-size", "40", str(files["image"]), "--json", *files["cli"]]) == 0
        scores[name] = json.loads(capsys.readouterr().out)["images"][0]
    assert scores["gray"]["style"] > 0 and scores["gray"] == scores["rgb"]


def test_cli_errors(files, tmp_path, capsys):
    base = ["score", "--content", str(files["content"]), *files["cli"]]
    assert main([*base, "--style", str(files["style"]), str(files["image"]), str(tmp_path / "gone.png")]) == 1
    captured = capsys.readouterr()
    assert "gone.png: no such file" in captured.err and "scored 1, failed 1" in captured.err
    assert str(files["image"]) in captured.out
    assert main([*base, "--style", str(tmp_path / "nostyle.jpg"), str(files["image"])]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"fastnst score: error: {tmp_path / 'nostyle.jpg'}: no such file (the style image)"
    assert main([*base, "--style", str(files["style"]), "--style", str(files["other"]), "--style-blend", "1",
                 str(files["image"])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1 weight(s) but there are 2 style image(s)" in err
    assert main(["score", "--style", str(files["style"]), str(files["image"])]) == 2  # --content missing
    weights_gone = [*base[:3], "--vgg-weights", str(tmp_path / "none.pth"), "--style", str(files["style"]),
                    str(files["image"])]
    assert main(weights_gone) == 1
    assert "VGG weight file not found" in capsys.readouterr().err


def test_style_mix_names_the_styles_and_the_old_blend_spelling_says_it_is_deprecated(files, tmp_path, capsys):
    base = ["score", "--content", str(files["content"]), "--style", str(files["style"]), "--style",
            str(files["other"]), "--style-size", "40", str(files["image"]), "--json", *files["cli"]]
    stems = [Path(files[k]).stem for k in ("style", "other")]
    assert main([*base, "--style-mix", f"{stems[0]}=3,{stems[1]}=1"]) == 0
    out = capsys.readouterr()
    by_name = json.loads(out.out)["images"][0]["style"]
    assert "deprecated" not in out.err
    assert main([*base, "--style-mix", "0=0.75,1=0.25"]) == 0  # indices work too
    assert json.loads(capsys.readouterr().out)["images"][0]["style"] == pytest.approx(by_name, rel=1e-6)
    assert main([*base, "--style-blend", "3,1"]) == 0
    old = capsys.readouterr()
    assert json.loads(old.out)["images"][0]["style"] == pytest.approx(by_name, rel=1e-6)
    assert old.err.strip().splitlines() == ["fastnst: --style-blend W1,W2,... is deprecated and will be removed in "
                                            "the next release; write --style-mix NAME=W,..."]
    assert main([*base, "--style-mix", "nope=1"]) == 2
    assert "no style 'nope'" in capsys.readouterr().err


def gram_mse(vgg, image, style, layer, k):
    """Mean squared difference of the float64 Gram matrices (÷ C·H·W) of ``layer``, both images box-filtered by k."""
    small, target = (torch.nn.functional.avg_pool2d(t, k) if k > 1 else t for t in (image, style))
    a, b = vgg(small)[layer].double(), vgg(target)[layer].double()
    grams = [f.flatten(2) @ f.flatten(2).transpose(1, 2) / f[0].numel() for f in (a, b)]
    return float(((grams[0] - grams[1]) ** 2).mean())


@pytest.fixture
def small_vgg():
    """A random VGG16 to relu2_2 and a two-layer, two-scale style loss on it."""
    torch.manual_seed(5)
    vgg = VGGFeatures("vgg16", ["relu1_2", "relu2_2"])
    vgg.load_state_dict(random_vgg_state("vgg16", "relu2_2"))
    return vgg, LossSpec(style_layers="relu1_2,relu2_2:0.5", content_layers="relu2_2", style_weight=123.0,
                         style_scales="1,0.5")


def test_style_ratios_against_an_independent_gram_computation(small_vgg):
    vgg, spec = small_vgg
    photo, stylized, style = torch.rand(1, 3, 32, 40), torch.rand(1, 3, 32, 40), torch.rand(1, 3, 36, 36)
    ratios = style_ratios(vgg, stylized, photo, style, spec)
    assert style_ratios(vgg, photo, photo, style, spec) == {1.0: 1.0, 0.5: 1.0}

    def loss(image, k):  # Σ layer weight × mean squared Gram difference, the image and style box-filtered by k
        return sum(weight * gram_mse(vgg, image, style, layer, k)
                   for layer, weight in (("relu1_2", 1.0), ("relu2_2", 0.5)))

    with torch.no_grad():
        for scale, k in ((1.0, 1), (0.5, 2)):
            assert ratios[scale] == pytest.approx(loss(stylized, k) / loss(photo, k), rel=1e-4)


def test_style_terms_are_each_layer_and_scale_s_part_of_the_training_style_loss(small_vgg):
    vgg, spec = small_vgg
    image, style = torch.rand(1, 3, 32, 40), torch.rand(1, 3, 36, 36)
    grams = style_grams(vgg, style, spec)
    terms = style_terms(vgg, image, grams, spec)
    assert list(terms) == ["relu1_2", "relu2_2", "relu1_2@0.5", "relu2_2@0.5"]
    with torch.no_grad():
        total = perceptual_losses(vgg, image, content_targets(vgg, image, spec), grams, spec)["style"]
        assert sum(terms.values()) == pytest.approx(float(total), rel=1e-5)
        for key, value in terms.items():  # weight x layer weight x mean squared Gram difference / 2 scales
            layer, k = (key.split("@")[0], 2) if "@" in key else (key, 1)
            expected = 123.0 * (0.5 if layer == "relu2_2" else 1.0) * gram_mse(vgg, image, style, layer, k) / 2
            assert value == pytest.approx(expected, rel=1e-4), key
