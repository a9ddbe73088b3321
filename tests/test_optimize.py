"""Pixel optimisation (``fastnst optimize``): losses fall, the reported losses are the training losses of the
image, init/multi-style/multi-scale/save-every/history behave, and bad inputs give one clear line."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from fastnst.cli import main
from fastnst.color import luminance
from fastnst.errors import ConfigError, ImageError
from fastnst.images import load_image, to_tensor
from fastnst.losses import LossSpec, content_targets, perceptual_losses, style_grams
from fastnst.optimize import OptimizeConfig, optimize
from fastnst.pretrained import load_loss_network
from fastnst.score import blended_grams

from conftest import SHARED, gradient_image, requires_shared

pytestmark = pytest.mark.usefixtures("one_thread")


def stripes(width: int, height: int, phase: int = 0) -> Image.Image:
    """A style picture unlike the content: coloured stripes and a checkerboard."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([(np.sin((x + phase) / 2) > 0) * 255, (np.sin(y / 3) > 0) * 200,
                       ((x + y + phase) % 8 < 4) * 255], -1)
    return Image.fromarray(pixels.astype(np.uint8))


@pytest.fixture
def files(tmp_path, vgg_file):
    """Content (40×32), two styles (32×32), random VGG16 weights to relu2_2, and a loss spec for them."""
    content = tmp_path / "content.png"
    gradient_image(40, 32).save(content)
    style_a, style_b = tmp_path / "a.png", tmp_path / "b.png"
    stripes(32, 32).save(style_a)
    stripes(32, 32, phase=3).rotate(90).save(style_b)
    weights = vgg_file()
    spec = LossSpec(vgg="vgg16", vgg_weights=str(weights), content_layers="relu2_2",
                    style_layers="relu1_2,relu2_2", content_weight=1.0, style_weight=1000.0, tv_weight=1.0)
    cli = ["--vgg", "vgg16", "--vgg-weights", str(weights), "--content-layers", "relu2_2",
           "--style-layers", "relu1_2,relu2_2", "--content-weight", "1", "--style-weight", "1000",
           "--tv-weight", "1", "--device", "cpu"]
    return {"content": content, "a": style_a, "b": style_b, "spec": spec, "cli": cli, "dir": tmp_path}


def config(files, **kw) -> OptimizeConfig:
    base = dict(content=str(files["content"]), styles=(str(files["a"]),), output=str(files["dir"] / "out.png"),
                loss=files["spec"], iterations=12, size=40, device="cpu")
    return OptimizeConfig(**{**base, **kw})


def direct_losses(files, image: torch.Tensor, styles=("a",), blend=(1.0,), style_side=40) -> dict[str, float]:
    """The training loss code on ``image`` (1, 3, 32, 40), computed here from scratch."""
    spec = files["spec"]
    vgg = load_loss_network(spec)
    content = to_tensor(Image.open(files["content"]).convert("RGB"))[None]  # already 40×32: no resize
    grams = None
    for name, w in zip(styles, blend):
        style = Image.open(files[name]).convert("RGB").resize((style_side, style_side), Image.Resampling.LANCZOS)
        g = style_grams(vgg, to_tensor(style)[None], spec)
        grams = {k: w * v for k, v in g.items()} if grams is None else {k: grams[k] + w * v for k, v in g.items()}
    with torch.no_grad():
        losses = perceptual_losses(vgg, image, content_targets(vgg, content, spec), grams, spec)
    return {k: float(v) for k, v in losses.items()}


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_loss_decreases_and_reported_losses_are_the_training_losses(files, optimizer):
    result = optimize(config(files, optimizer=optimizer, iterations=25))
    totals = [entry["total"] for entry in result.history]
    assert len(totals) == 25 and [e["iteration"] for e in result.history] == list(range(1, 26))
    assert all(b <= a for a, b in zip(totals, totals[1:]))  # each entry: the best image so far
    assert totals[-1] < 0.75 * totals[0] and result.final["style"] < 0.6 * result.history[0]["style"]
    assert result.history[0]["content"] == 0  # the start is the content photo itself
    direct = direct_losses(files, result.image)
    for name in ("content", "style", "tv", "total"):
        assert result.final[name] == pytest.approx(direct[name], rel=1e-4, abs=1e-7)
    assert result.image.shape == (1, 3, 32, 40) and 0 <= result.image.min() and result.image.max() <= 1
    saved = load_image(result.output)
    assert saved.shape == (3, 32, 40)
    assert (saved - result.image[0]).abs().max() <= 0.5 / 255 + 1e-6


def test_lbfgs_counts_evaluations_and_its_steps(files):
    lbfgs = optimize(config(files, iterations=20))
    assert lbfgs.stages[0]["evaluations"] == 20
    assert 1 <= lbfgs.stages[0]["lbfgs_steps"] <= 20


def test_init_image_and_noise_set_the_start_loss(files, tmp_path):
    init = tmp_path / "init.png"
    gradient_image(80, 64, seed=5).rotate(180).save(init)  # another size: resized to 40×32
    result = optimize(config(files, init=str(init), iterations=3))
    resized = to_tensor(Image.open(init).convert("RGB").resize((40, 32), Image.Resampling.LANCZOS))[None]
    assert result.history[0]["total"] == pytest.approx(direct_losses(files, resized)["total"], rel=1e-4)
    assert result.history[0]["content"] > 0

    noisy = optimize(config(files, init="noise", seed=3, iterations=3))
    noise = torch.rand((1, 3, 32, 40), generator=torch.Generator().manual_seed(3))
    assert noisy.history[0]["total"] == pytest.approx(direct_losses(files, noise)["total"], rel=1e-4)
    content_start = optimize(config(files, iterations=3)).history[0]["total"]
    assert noisy.history[0]["total"] > 2 * content_start


def test_blended_grams_are_the_weighted_sum_and_one_zero_equals_the_single_style(files):
    spec = files["spec"]
    vgg = load_loss_network(spec)
    a, b = Image.open(files["a"]).convert("RGB"), Image.open(files["b"]).convert("RGB")
    ga, gb = (style_grams(vgg, to_tensor(img)[None], spec) for img in (a, b))
    only_a = blended_grams(vgg, [a, b], [1.0, 0.0], 32, spec)
    mixed = blended_grams(vgg, [a, b], [0.7, 0.3], 32, spec)
    for name in spec.style_layers:
        torch.testing.assert_close(only_a[name], ga[name])
        torch.testing.assert_close(mixed[name], 0.7 * ga[name] + 0.3 * gb[name])


def test_multi_style_blend_through_optimize(files):
    single = optimize(config(files, iterations=4))
    blend_one_zero = optimize(config(files, styles=(str(files["a"]), str(files["b"])), style_blend="2,0",
                                     iterations=4))
    assert [e["total"] for e in blend_one_zero.history] == pytest.approx([e["total"] for e in single.history],
                                                                          rel=1e-5)
    mixed = optimize(config(files, styles=(str(files["a"]), str(files["b"])), style_blend="0.7,0.3",
                            iterations=2))
    content = to_tensor(Image.open(files["content"]).convert("RGB"))[None]
    expected = direct_losses(files, content, styles=("a", "b"), blend=(0.7, 0.3))["style"]
    assert mixed.history[0]["style"] == pytest.approx(expected, rel=1e-4)


def test_multi_scale_sizes_split_and_output(files):
    result = optimize(config(files, scales=2, iterations=9, size=48))
    sizes = {(e["stage"], e["width"], e["height"]) for e in result.history}
    assert sizes == {(0, 24, 19), (1, 48, 38)}  # 40×32 → long side 48 → 48×38 (round(38.4)); half: 24×19
    assert [s["evaluations"] for s in result.stages] == [4, 5]  # equal shares, remainder to full size
    assert [s["style_long_side"] for s in result.stages] == [24, 48]
    assert Image.open(result.output).size == (48, 38)
    assert [e["iteration"] for e in result.history] == list(range(1, 10))


def test_multi_scale_refuses_a_first_scale_too_small_for_the_layers(files):
    with pytest.raises(ConfigError, match="first of 6 scales is 1x1 px, too small for relu2_2"):
        optimize(config(files, scales=6, iterations=8))


def test_save_every_and_history_json(files, tmp_path):
    result = optimize(config(files, iterations=7, save_every=3, history=str(tmp_path / "h" / "losses.json")))
    assert [p.name for p in result.intermediates] == ["out-00003.png", "out-00006.png"]
    for path in result.intermediates:
        assert Image.open(path).size == (40, 32)
    data = json.loads((tmp_path / "h" / "losses.json").read_text())
    assert data["config"]["iterations"] == 7 and data["config"]["loss"]["style_weight"] == 1000.0
    assert data["history"] == result.history and data["final"] == result.final
    assert data["output"] == str(result.output)
    assert not list(tmp_path.rglob(".fastnst-tmp-*"))


def test_preserve_color_keeps_the_photo_chroma(files):
    result = optimize(config(files, iterations=6, preserve_color=True))
    content = to_tensor(Image.open(files["content"]).convert("RGB"))[None]
    out = result.image
    inside = ((out > 0.001) & (out < 0.999)).all(dim=1, keepdim=True).expand_as(out)
    chroma_out, chroma_in = out - luminance(out), content - luminance(content)
    torch.testing.assert_close(chroma_out[inside], chroma_in[inside], atol=1e-5, rtol=0)
    plain = optimize(config(files, iterations=6))
    assert not torch.allclose(plain.image - luminance(plain.image), chroma_in, atol=1e-2)


@pytest.mark.parametrize("kw, message", [
    ({"style_blend": "1,2,3"}, "3 weight(s) but there are 1 style"),
    ({"style_blend": "-1"}, "must be finite and >= 0"),
    ({"style_blend": "0"}, "all zero"),
    ({"style_blend": "a"}, "one number per style"),
    ({"styles": ()}, "no style image"),
    ({"optimizer": "sgd"}, "unknown optimizer"),
    ({"lr": 0.0}, "--lr must be > 0"),
    ({"iterations": 2, "scales": 3}, "every scale needs at least one iteration"),
    ({"output": "x.txt"}, "cannot save as .txt"),
    ({"save_every": -1}, "--save-every must be >= 0"),
    ({"style_size": 0}, "--style-size must be a positive"),
])
def test_config_validation(files, kw, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config(files, **kw)


def test_default_lr_depends_on_the_optimizer(files):
    assert config(files).lr == 1.0 and config(files, optimizer="adam").lr == 0.05
    assert replace(config(files), lr=0.5).lr == 0.5


def test_missing_and_broken_inputs_raise_image_errors_naming_the_role(files, tmp_path):
    with pytest.raises(ImageError, match="no such file.*content image"):
        optimize(config(files, content=str(tmp_path / "nope.jpg")))
    junk = tmp_path / "junk.jpg"
    junk.write_text("not an image")
    with pytest.raises(ImageError, match=r"junk.jpg: not an image.*\(the style image\)"):
        optimize(config(files, styles=(str(junk),)))


# -- through the command line --------------------------------------------------------------------

def test_help(capsys):
    assert main(["optimize", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "usage: fastnst optimize" in out and "counted as function evaluations" in out


def test_cli_default_run_then_score_reproduces_the_final_loss(files, capsys):
    out = files["dir"] / "styled.png"
    assert main(["optimize", str(files["content"]), str(files["a"]), "-o", str(out), "--iterations", "8",
                 "--size", "40", *files["cli"]]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote {out} (40x32) and {out.with_suffix('.json')}: 8 iterations in ")
    final = json.loads(out.with_suffix(".json").read_text())["final"]
    assert f"loss total {final['total']:.6g}" in printed
    assert main(["score", "--content", str(files["content"]), "--style", str(files["a"]), str(out), "--json",
                 *files["cli"]]) == 0
    scored = json.loads(capsys.readouterr().out)["images"][0]
    for name in ("content", "style", "total"):  # the saved file is rounded to 8 bits
        assert scored[name] == pytest.approx(final[name], rel=0.03)


def test_cli_every_option(files, tmp_path, capsys):
    out, history = tmp_path / "o" / "mix.jpg", tmp_path / "hist.json"
    assert main(["optimize", str(files["content"]), "--style", str(files["a"]), str(files["b"]),
                 "--style-blend", "0.7,0.3", "-o", str(out), "--optimizer", "adam", "--lr", "0.05",
                 "--iterations", "6", "--init", "noise", "--seed", "1", "--size", "36", "--style-size", "30",
                 "--scales", "2", "--save-every", "2", "--history", str(history), "--preserve-color",
                 *files["cli"]]) == 0
    data = json.loads(history.read_text())
    cfg = data["config"]
    assert (cfg["optimizer"], cfg["lr"], cfg["init"], cfg["seed"], cfg["scales"]) == ("adam", 0.05, "noise", 1, 2)
    assert cfg["style_blend"] == [0.7, 0.3] and cfg["preserve_color"] and cfg["style_size"] == 30
    assert [s["style_long_side"] for s in data["stages"]] == [15, 30]
    assert Image.open(out).size == (36, 29)
    assert sorted(p.name for p in out.parent.iterdir()) == ["mix-00002.jpg", "mix-00004.jpg", "mix.jpg"]
    assert Image.open(out.parent / "mix-00002.jpg").size == (18, 14)  # written during the half-size scale

    init = tmp_path / "fast-output.png"
    gradient_image(40, 32, seed=9).save(init)
    out2 = tmp_path / "refined.png"
    assert main(["optimize", str(files["content"]), str(files["a"]), "-o", str(out2), "--init", str(init),
                 "--iterations", "3", "--size", "40", "--lbfgs-history", "4", *files["cli"]]) == 0
    data = json.loads(out2.with_suffix(".json").read_text())
    assert data["config"]["init"] == str(init) and data["config"]["lbfgs_history"] == 4
    assert data["history"][0]["total"] == pytest.approx(direct_losses(files, to_tensor(Image.open(init)))["total"],
                                                        rel=1e-4)


def test_cli_grayscale_style_is_accepted(files, tmp_path):
    """A grayscale (mode L) style file is its RGB copy: the same optimization to the byte."""
    gray, rgb = tmp_path / "gray.png", tmp_path / "rgb.png"
    stripes(32, 32).convert("L").save(gray)
    Image.open(gray).convert("RGB").save(rgb)
    assert Image.open(gray).mode == "L"
    for style in (gray, rgb):
        assert main(["optimize", str(files["content"]), str(style), "-o", str(tmp_path / f"{style.stem}-out.png"),
                     "--iterations", "2", "--size", "32", *files["cli"]]) == 0
    out_gray, out_rgb = (np.asarray(Image.open(tmp_path / f"{n}-out.png")) for n in ("gray", "rgb"))
    assert np.array_equal(out_gray, out_rgb) and not np.array_equal(out_gray, np.asarray(
        Image.open(files["content"]).convert("RGB").resize(out_gray.shape[1::-1])))


@pytest.mark.parametrize("case, code, message", [
    ("missing content", 1, "{dir}/nope.jpg: no such file (the content image)"),
    ("non-image style", 1,
     "{dir}/notes.txt: not an image in a format fastnst reads (JPEG, PNG, WEBP, TIFF, BMP, GIF) (the style image)"),
    ("missing init", 1, "{dir}/gone.png: no such file (the --init image)"),
    ("no style", 2, "no style image: give STYLE after CONTENT, or --style FILE ..."),
    ("blend count", 2, "--style-blend has 1 weight(s) but there are 2 style image(s)"),
    ("blend negative", 2, "--style-blend weights must be finite and >= 0, got 1.0,-0.5"),
    ("too many scales", 2, "the first of 7 scales is 1x1 px, too small for relu2_2"),
    ("bad output", 2, "{dir}/out.txt: cannot save as .txt"),
    ("missing weights", 1, "{dir}/none.pth: VGG weight file not found"),
])
def test_cli_errors_are_one_line(files, tmp_path, capsys, case, code, message):
    (tmp_path / "notes.txt").write_text("hello")
    content, a, b, d = str(files["content"]), str(files["a"]), str(files["b"]), str(tmp_path)
    out = ["-o", f"{d}/out.png", "--iterations", "7", "--size", "40"]
    args = {
        "missing content": [f"{d}/nope.jpg", a, *out],
        "non-image style": [content, a, f"{d}/notes.txt", *out],
        "missing init": [content, a, *out, "--init", f"{d}/gone.png"],
        "no style": [content, *out],
        "blend count": [content, a, b, "--style-blend", "1", *out],
        "blend negative": [content, a, b, "--style-blend", "1,-0.5", *out],
        "too many scales": [content, a, *out, "--scales", "7"],
        "bad output": [content, a, "-o", f"{d}/out.txt"],
        "missing weights": [content, a, *out, *files["cli"], "--vgg-weights", f"{d}/none.pth"],
    }[case]
    if case != "missing weights":
        args += files["cli"]
    assert main(["optimize", *args]) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("fastnst optimize: error: ")
    assert message.format(dir=d) in err
    assert not (tmp_path / "out.png").exists()


def test_cli_usage_errors_exit_2(files, capsys):
    base = ["optimize", str(files["content"]), str(files["a"]), "-o", "x.png"]
    assert main([*base, "--optimizer", "sgd"]) == 2
    assert main([*base, "--iterations", "0"]) == 2
    assert main(["optimize", str(files["content"]), str(files["a"])]) == 2  # no -o
    assert "invalid choice" in capsys.readouterr().err


@requires_shared
def test_real_caffe_weights_and_a_real_grayscale_style(tmp_path):
    """The documented real-weights configuration lowers the loss, also with a grayscale style (escher_sphere)."""
    out = tmp_path / "escher.png"
    assert main(["optimize", str(SHARED / "content" / "amber.jpg"), str(SHARED / "style" / "escher_sphere.jpg"),
                 "-o", str(out), "--size", "64", "--iterations", "10", "--device", "cpu", "--vgg", "vgg19",
                 "--vgg-weights", str(SHARED / "vgg" / "vgg19_caffe_block1-3.pth"), "--content-layers", "relu2_2",
                 "--style-layers", "relu1_1,relu2_1,relu3_1", "--content-weight", "1", "--style-weight", "300",
                 "--tv-weight", "1e4"]) == 0
    history = json.loads(out.with_suffix(".json").read_text())["history"]
    assert history[-1]["total"] < 0.5 * history[0]["total"]
    assert Image.open(SHARED / "style" / "escher_sphere.jpg").mode == "L" and Image.open(out).mode == "RGB"
