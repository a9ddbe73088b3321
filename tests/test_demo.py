"""The offline demo, the gallery and the bundling of trained styles (scripts/demo.py, make_gallery.py,
bundle_style.py), with tiny models; and the bundled models in checkpoints/ themselves."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from fastnst.checkpoint import load_model, read_info, save_model
from fastnst.cli import main
from fastnst.images import decode_thumbnail, encode_thumbnail, load_image, to_tensor, to_uint8
from fastnst.losses import LossSpec
from fastnst.models.transformer import SPECS, TransformerNet, select_styles
from fastnst.train import TrainConfig, fit
from fastnst.train.config import model_style_images, training_stages

from conftest import REPO, gradient_image, psnr, requires_shared

sys.path.insert(0, str(REPO / "scripts"))
import bundle_style  # noqa: E402
import demo  # noqa: E402
import eval_styles  # noqa: E402
import make_gallery  # noqa: E402
import train_bundled  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
BUNDLED = sorted((REPO / "checkpoints").glob("*.safetensors"))


@pytest.fixture
def models(tmp_path):
    """A folder with a one-style and a two-style light model, each with style thumbnails; and a photo."""
    folder = tmp_path / "models"
    thumbs = []
    for i in range(3):
        path = tmp_path / f"painting{i}.png"
        gradient_image(60 + 10 * i, 40, seed=20 + i).save(path)
        thumbs.append(encode_thumbnail(path))
    torch.manual_seed(1)
    save_model(folder / "alpha.safetensors", TransformerNet(SPECS["light"]), styles=["alpha"],
               thumbnails=thumbs[:1])
    two = TransformerNet(SPECS["light"].with_styles(2))
    with torch.no_grad():
        for name, param in two.named_parameters():
            if "norm" in name:
                param.copy_(torch.randn_like(param) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
    save_model(folder / "pair.safetensors", two, styles=["left", "right"], thumbnails=thumbs[1:])
    photo = tmp_path / "portrait.png"
    gradient_image(48, 40, seed=5).save(photo)
    return {"folder": folder, "photo": photo, "thumbs": thumbs}


def _cell(sheet: np.ndarray, column: int, top: int, height: int, cell: int = 256, gap: int = 6) -> np.ndarray:
    left = gap + column * (cell + gap)
    return sheet[top:top + height, left:left + cell]


def test_demo_stylizes_with_every_bundled_style_and_writes_a_contact_sheet(models, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "sample_photo", lambda: models["photo"])
    out = tmp_path / "out"
    assert demo.run(models["folder"], out) == 0
    printed = capsys.readouterr().out
    assert "$ fastnst stylize -m" in printed and "--style right" in printed
    results = {name: out / name / "portrait.png" for name in ("alpha", "pair-left", "pair-right")}
    assert all(path.is_file() for path in results.values())
    sheet = np.asarray(Image.open(out / "contact_sheet.jpg").convert("RGB"))
    height, thumb_height, gap = round(256 * 40 / 48), 256 * 2 // 3, 6
    assert sheet.shape == (demo.LABEL_HEIGHT + thumb_height + height + 3 * gap, 4 * 256 + 5 * gap, 3)
    top = demo.LABEL_HEIGHT + thumb_height + 2 * gap
    photo = load_image(models["photo"])
    expected = [photo] + [load_image(path) for path in results.values()]
    for column, image in enumerate(expected):  # each cell shows its image, scaled to the cell
        cell = to_uint8(demo._fit(image, 256, height)).permute(1, 2, 0).numpy()
        assert psnr(_cell(sheet, column, top, height), cell) > 30, column
    for column, thumbnail in enumerate(models["thumbs"], start=1):  # the painting above each result
        cell = to_uint8(demo._fit(decode_thumbnail(thumbnail), 256, thumb_height)).permute(1, 2, 0).numpy()
        assert psnr(_cell(sheet, column, demo.LABEL_HEIGHT + gap, thumb_height), cell) > 30, column
    left, right = (np.asarray(Image.open(results[k]), np.float64) for k in ("pair-left", "pair-right"))
    assert np.abs(left - right).mean() > 5  # the two styles of one file really differ


def test_demo_says_what_is_missing(models, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "sample_photo", lambda: None)
    assert demo.run(models["folder"], tmp_path / "out") == 1
    assert "pip install matplotlib" in capsys.readouterr().err
    monkeypatch.setattr(demo, "sample_photo", lambda: models["photo"])
    assert demo.run(tmp_path / "empty", tmp_path / "out") == 1
    assert "no model files" in capsys.readouterr().err


def test_gallery_fits_its_byte_budget(models, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(make_gallery, "sample_photo", lambda: models["photo"])
    out = tmp_path / "gallery.jpg"
    argv = ["--models", str(models["folder"]), "-o", str(out), "--cell", "128"]
    assert make_gallery.main(argv) == 0
    assert "(JPEG quality 90)" in capsys.readouterr().out
    budget = out.stat().st_size * 9 // 10  # a tighter budget than quality 90 needs: the quality must drop
    assert make_gallery.main([*argv, "--max-bytes", str(budget)]) == 0
    assert "(JPEG quality 90)" not in capsys.readouterr().out
    image = Image.open(out)
    assert image.format == "JPEG" and image.width == 4 * 128 + 5 * 6 and out.stat().st_size <= budget


def test_bundling_writes_fp16_weights_thumbnails_and_a_card_whose_command_reproduces_the_model(
        tmp_path, vgg_file, monkeypatch, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        gradient_image(40 + 3 * i, 36, seed=i).save(photos / f"p{i}.jpg")
    style = tmp_path / "starry_night.png"
    gradient_image(48, 48, seed=100).save(style)
    loss = LossSpec(vgg="vgg16", vgg_weights=str(vgg_file("vgg16", "relu2_2")), content_layers="relu2_2",
                    style_layers="relu1_2:0.5,relu2_2", content_weight=1.0, style_weight=1e3, tv_weight=0.5)
    trained = fit(TrainConfig(style=(str(style),), data=str(photos), output=str(tmp_path / "run.safetensors"),
                              spec="light", loss=loss, image_size=40, crop_size=32, batch_size=2, steps=3, workers=0,
                              holdout=2, checkpoint_every=0, sample_every=0, log_every=1))
    out = tmp_path / "checkpoints"
    assert bundle_style.main([str(trained), "--out", str(out)]) == 0
    bundled = out / "starry_night.safetensors"
    assert f"wrote {bundled}" in capsys.readouterr().out
    with safe_open(str(bundled), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    info = read_info(bundled)
    assert info.thumbnails == (encode_thumbnail(style),) and info.config["steps_done"] == 3
    card = (out / "starry_night.md").read_text()
    assert "**Style:** *The Starry Night*, Vincent van Gogh (1853–1890), 1889 (`starry_night.png`)" in card
    losses = info.config["final_losses"]
    assert f"style {losses['style']:.4g}" in card and "Steps: 3 (6 images)" in card
    assert "resized to 40 px and a random 32 px square cropped" in card
    # The card's command, run as written (in a fresh folder), trains the same network again.
    command = next(line for line in card.splitlines() if line.startswith("fastnst train"))
    rerun = tmp_path / "rerun"
    rerun.mkdir()
    monkeypatch.chdir(rerun)
    assert main(shlex.split(command)[1:] + ["--workers", "0"]) == 0
    again, _ = load_model(rerun / "starry_night.safetensors")
    original, _ = load_model(trained)
    for key, value in original.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value, rtol=0, atol=0, msg=key)


def training_inputs(folder: Path, styles: dict[str, int], suffix: str = ".png") -> Path:
    """Five small photos in ``folder/photos`` (returned) and one picture per style, ``folder/<name><suffix>``,
    drawn with its seed."""
    photos = folder / "photos"
    photos.mkdir()
    for i in range(5):
        gradient_image(40 + 3 * i, 36, seed=i).save(photos / f"p{i}.jpg")
    for name, seed in styles.items():
        gradient_image(48, 48, seed=seed).save(folder / f"{name}{suffix}")
    return photos


def test_a_style_trained_in_stages_has_a_card_whose_commands_reproduce_every_stage(tmp_path, vgg_file, monkeypatch):
    photos = training_inputs(tmp_path, {"trunk_style": 7, "wave": 101})
    loss = LossSpec(vgg="vgg16", vgg_weights=str(vgg_file("vgg16", "relu2_2")), content_layers="relu2_2",
                    style_layers="relu2_2", style_weight=1e3)
    common = dict(data=str(photos), spec="light", image_size=40, batch_size=2, workers=0, holdout=1, loss=loss,
                  checkpoint_every=0, sample_every=0, style=(str(tmp_path / "wave.png"),))
    runs = tmp_path / "runs"
    trunk = fit(TrainConfig(**{**common, "style": (str(tmp_path / "trunk_style.png"),)},
                            output=str(runs / "trunk.safetensors"), steps=2))
    first = fit(TrainConfig(**common, output=str(runs / "a.safetensors"), steps=2, crop_size=24, init=str(trunk)))
    # The second stage ran 2 steps, then was resumed to 3: its linear decay went on from step 2's factor on the new
    # total, unlike a straight 3-step run; the record keeps both totals so the card can say how to get it again.
    # Its first part took the losses on the raw output, the resumed one on the output clamped as saved.
    second_stage = dict(**common, output=str(runs / "b.safetensors"), lr=2e-3, lr_decay="linear", seed=5,
                        init=str(first))
    fit(TrainConfig(**second_stage, steps=2, loss_on_raw_output=True))
    second = fit(TrainConfig(**second_stage, steps=3, resume="auto"))
    assert read_info(second).config["step_totals"] == [[0, 2], [2, 3]]
    straight = fit(TrainConfig(**{**second_stage, "output": str(runs / "straight.safetensors")}, steps=3))
    assert read_info(straight).config["step_totals"] == [[0, 3]]
    assert not torch.equal(load_model(straight)[0].state_dict()["residual.0.norm1.weight"],
                           load_model(second)[0].state_dict()["residual.0.norm1.weight"])
    out = tmp_path / "checkpoints"
    assert bundle_style.main([str(second), "--out", str(out)]) == 0
    card = (out / "wave.md").read_text()
    assert "Steps: 5 (10 images) in 2 stages" in card and "trunk.safetensors`" in card
    assert "1. 2 steps on photos a random 24 px square cropped" in card and " on photos centre-cropped, " \
        "lr 0.002 (linear decay), seed 5, style loss at scales 1." in card
    assert f"on {read_info(second).config['hardware']}." in card  # every stage on one machine: said once
    two = [{"hardware": "AMD EPYC, 1 thread", "train_seconds": 3600}, {"hardware": "GPU", "train_seconds": 1800}]
    assert bundle_style._where(two) == ": stage 1 1.00 h on AMD EPYC, 1 thread; stage 2 0.50 h on GPU"
    assert "2. 3 steps (asked for 2 steps, then resumed with `--steps 3` at step 2; the linear decay went on " in card
    assert "steps; from step 2 with --loss-on-raw-output changed)" in card
    commands = [line for line in card.splitlines() if line.startswith("fastnst train")]
    assert len(commands) == 3 and "-o wave-stage1.safetensors" in commands[0] and "--init trunk.safetensors" in \
        commands[0] and all("-o wave.safetensors" in c and "--init wave-stage1.safetensors" in c for c in commands[1:])
    assert "--steps 2 " in commands[1] and "--resume" not in commands[1] and "--steps 3 " in commands[2] and \
        commands[2].endswith(" --resume auto")
    assert "--loss-on-raw-output" in commands[1] and "--loss-on-raw-output" not in commands[2]
    # Run as written, in a fresh folder holding only the trunk: the stages give the same network again.
    rerun = tmp_path / "rerun"
    rerun.mkdir()
    shutil.copy(trunk, rerun / "trunk.safetensors")
    monkeypatch.chdir(rerun)
    for command in commands:
        assert main(shlex.split(command)[1:] + ["--workers", "0"]) == 0
    again, original = load_model(rerun / "wave.safetensors")[0], load_model(second)[0]
    for key, value in original.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_a_style_taken_out_of_a_joint_stage_has_a_card_whose_commands_reproduce_it(tmp_path, vgg_file, monkeypatch):
    photos = training_inputs(tmp_path, {"trunk_style": 7, "wave": 101, "starry_night": 100})
    loss = LossSpec(vgg="vgg16", vgg_weights=str(vgg_file("vgg16", "relu2_2")), content_layers="relu2_2",
                    style_layers="relu2_2", style_weight=1e3)
    common = dict(data=str(photos), spec="light", image_size=40, batch_size=2, workers=0, holdout=1, loss=loss,
                  checkpoint_every=0, sample_every=0)
    runs = tmp_path / "runs"

    def style(name: str) -> tuple[str]:
        return (str(tmp_path / f"{name}.png"),)

    trunk = fit(TrainConfig(**common, style=style("trunk_style"), output=str(runs / "trunk.safetensors"), steps=2))
    # wave in two stages, starry_night in one, both starting at lr 5e-3: the joint stage's --init gives lr 5e-3 to
    # a command that leaves --lr out, so its card must write the joint stage's default lr 1e-3.
    wave1 = fit(TrainConfig(**common, style=style("wave"), output=str(runs / "w1.safetensors"), steps=2, lr=5e-3,
                            crop_size=24, init=str(trunk)))
    wave = fit(TrainConfig(**common, style=style("wave"), output=str(runs / "w2.safetensors"), steps=1, lr=2e-3,
                           seed=5, init=str(wave1)))
    starry = fit(TrainConfig(**common, style=style("starry_night"), output=str(runs / "s1.safetensors"), steps=2,
                             lr=5e-3, init=str(trunk)))
    start = runs / "start.safetensors"
    assert main(["convert", "--merge", str(wave), str(starry), "--half", "-o", str(start)]) == 0
    joint = fit(TrainConfig(**common, style=style("wave") + style("starry_night"), output=str(runs / "j.safetensors"),
                            steps=2, seed=7, init=str(start), init_trains="all"))
    out = tmp_path / "checkpoints"
    for name in ("wave", "starry_night"):
        assert main(["convert", str(joint), "--select", name, "-o", str(runs / f"{name}.safetensors")]) == 0
        assert bundle_style.main([str(runs / f"{name}.safetensors"), "--out", str(out)]) == 0
    # A selected file keeps the joint run's record; what it holds is its own style (what eval_styles scores).
    record = read_info(runs / "starry_night.safetensors").config
    assert record["style"] == list(style("wave") + style("starry_night"))
    assert model_style_images(record) == list(style("starry_night"))
    assert model_style_images(read_info(joint).config) == record["style"]
    assert eval_styles.own_config(record).style == style("starry_night")
    card = (out / "wave.md").read_text()
    assert "*The Great Wave off Kanagawa*" in card and "Starry" not in card.split("## Training")[0]
    assert "Steps: 5 (10 images) in 3 stages" in card and "fine-tuned in stage 3 from: `trunk.safetensors`" in card
    assert "3. 2 steps on photos centre-cropped, lr 0.001 (constant), seed 7, style loss at scales 1, every " \
        "weight training (--init-trains all), all 2 styles of `joint-start.safetensors` together" in card
    lines = card.split("```bash\n")[1].split("\n```")[0].splitlines()
    assert lines[2:] == [
        "# starry_night-stage1.safetensors: by the first commands of their cards",
        "fastnst convert --merge wave-stage2.safetensors starry_night-stage1.safetensors --half -o "
        "joint-start.safetensors", lines[4], "fastnst convert joint.safetensors --select wave -o wave.safetensors"]
    assert "--init wave-stage1.safetensors" in lines[1] and "-o wave-stage2.safetensors" in lines[1]
    assert " --lr 0.001 " in lines[4] and "--init joint-start.safetensors --init-trains all" in lines[4]
    assert bundle_style.main(["--merge", str(out / "wave.safetensors"), str(out / "starry_night.safetensors"),
                              "--out", str(out)]) == 0
    merged = (out / "all_styles.md").read_text()
    assert "then fine-tuned in training" in merged and "| wave | 5 |" in merged and "| starry_night | 4 |" in merged
    assert "The last stage trained these styles together, 2 steps (0.00 h): its time is counted in each row." \
        in merged
    # Run as written in a fresh folder holding only the trunk: starry_night's own stage by its card, then wave's
    # card whole, then starry_night's last line; both give the bundled networks again, bit for bit.
    starry_lines = [line for line in (out / "starry_night.md").read_text().splitlines() if line.startswith("fastnst")]
    rerun = tmp_path / "rerun"
    rerun.mkdir()
    shutil.copy(trunk, rerun / "trunk.safetensors")
    monkeypatch.chdir(rerun)
    for command in [starry_lines[0], *(line for line in lines if line.startswith("fastnst")), starry_lines[-1]]:
        argv = shlex.split(command)[1:]
        assert main(argv + (["--workers", "0"] if argv[0] == "train" else [])) == 0, command
    for name in ("wave", "starry_night"):
        again, bundled = load_model(rerun / f"{name}.safetensors")[0], load_model(out / f"{name}.safetensors")[0]
        for key, value in bundled.state_dict().items():
            torch.testing.assert_close(again.state_dict()[key].half().float(), value, rtol=0, atol=0, msg=key)
    # A second joint stage from the bundled all-styles file (train_bundled.py --joint-from): the card goes back
    # through the first one, numbers the second's files, and its commands make the network again.
    joint2 = fit(TrainConfig(**common, style=style("wave") + style("starry_night"), steps=1, seed=8,
                             output=str(runs / "j2.safetensors"), init=str(out / "all_styles.safetensors"),
                             init_trains="all"))
    assert main(["convert", str(joint2), "--select", "wave", "-o", str(runs / "again" / "wave.safetensors")]) == 0
    assert bundle_style.main([str(runs / "again" / "wave.safetensors"), "--out", str(tmp_path / "second")]) == 0
    card = (tmp_path / "second" / "wave.md").read_text()
    assert "Steps: 6 (12 images) in 4 stages" in card and "fine-tuned in stage 3, 4 from" in card
    assert "4. 1 steps on photos centre-cropped, lr 0.001 (constant), seed 8, style loss at scales 1, every weight " \
        "training (--init-trains all), all 2 styles of `joint2-start.safetensors` together" in card
    again_lines = card.split("```bash\n")[1].split("\n```")[0].splitlines()
    assert again_lines[:len(lines)] == [*lines[:-1], "fastnst convert joint.safetensors --select wave -o "
                                        "wave-stage3.safetensors"]
    assert again_lines[len(lines):len(lines) + 2] == [
        "# starry_night-stage2.safetensors: by the first commands of their cards",
        "fastnst convert --merge wave-stage3.safetensors starry_night-stage2.safetensors --half -o "
        "joint2-start.safetensors"]
    assert "--init joint2-start.safetensors --init-trains all" in again_lines[-2] and \
        "-o joint2.safetensors" in again_lines[-2]
    assert again_lines[-1] == "fastnst convert joint2.safetensors --select wave -o wave.safetensors"
    rerun2 = tmp_path / "rerun2"
    rerun2.mkdir()
    shutil.copy(trunk, rerun2 / "trunk.safetensors")
    monkeypatch.chdir(rerun2)
    starry_select = "fastnst convert joint.safetensors --select starry_night -o starry_night-stage2.safetensors"
    for command in [starry_lines[0], *(line for line in again_lines if line.startswith("fastnst"))]:
        argv = shlex.split(command)[1:]
        assert main(argv + (["--workers", "0"] if argv[0] == "train" else [])) == 0, command
        if command.endswith("-o wave-stage3.safetensors"):  # starry_night's file by its own card's line
            assert main(shlex.split(starry_select)[1:]) == 0
    again, bundled = load_model(rerun2 / "wave.safetensors")[0], load_model(tmp_path / "second" / "wave.safetensors")[0]
    for key, value in bundled.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key].half().float(), value, rtol=0, atol=0, msg=key)
    second = tmp_path / "second"
    assert main(["convert", str(joint2), "--select", "starry_night", "-o", str(runs / "again" / "s.safetensors")]) == 0
    assert bundle_style.main([str(runs / "again" / "s.safetensors"), "--out", str(second)]) == 0
    assert bundle_style.main(["--merge", str(second / "wave.safetensors"), str(second / "starry_night.safetensors"),
                              "--out", str(second)]) == 0
    merged = (second / "all_styles.md").read_text()
    assert "The joint stages trained these styles together, one after the other, 2 steps (0.00 h) and 1 step " \
        "(0.00 h): their time is counted in each row." in merged


def test_train_bundled_runs_the_recipe_s_stages_in_turn_and_keeps_finished_ones(tmp_path, vgg_file):
    styles = tmp_path / "styles"
    styles.mkdir()
    photos = training_inputs(styles, {"trunk": 100, "wave": 101}, suffix=".jpg")
    vgg = vgg_file("vgg19", "relu3_1")
    trunk = fit(TrainConfig(style=(str(styles / "trunk.jpg"),), data=str(photos), spec="light",
                            output=str(tmp_path / "t.safetensors"),
                            loss=LossSpec(vgg="vgg19", vgg_weights=str(vgg), vgg_flavour="caffe"),
                            image_size=32, batch_size=2, steps=1, workers=0, holdout=0, checkpoint_every=0))
    argv = ["--photos", str(photos), "--styles", str(styles), "--vgg-weights", str(vgg), "--trunk", str(trunk),
            "--out", str(tmp_path / "out"), "--steps", "1", "2", "1", "--device", "cpu", "--amp", "none",
            "--workers", "0", "--only", "wave"]
    script = [sys.executable, str(REPO / "scripts" / "train_bundled.py"), *argv]
    done = subprocess.run(script, capture_output=True, text=True, timeout=600)  # 3 short trainings, one after another
    assert done.returncode == 0, done.stderr
    final = tmp_path / "out" / "runs" / "wave.safetensors"
    chain = training_stages(read_info(final).config)
    assert [stage["steps_done"] for stage in chain] == [1, 2, 1] and chain[0]["init"] == str(trunk)
    assert [(stage["crop_size"], stage["lr"], stage["loss"]["style_scales"]) for stage in chain] == [
        (256, 5e-3, [1, 0.5, 0.25]), (384, 2e-3, [1, 0.5, 0.25]), (384, 2e-3, [0.5, 0.25])]
    assert "wave stage 3: 1 steps" in done.stdout
    stamps = [p.stat().st_mtime_ns for p in sorted(final.parent.glob("*.safetensors"))]
    assert train_bundled.main(argv) == 0  # every stage finished: nothing trains again
    assert [p.stat().st_mtime_ns for p in sorted(final.parent.glob("*.safetensors"))] == stamps
    # Stage 4 (--joint-steps): every weight trains, from the style's own rows.
    done = subprocess.run([*script, "--joint-steps", "1"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    joint = tmp_path / "out" / "joint" / "wave.safetensors"
    record = read_info(joint).config
    assert (record["init"], record["init_trains"], record["steps_done"]) == (str(final), "all", 1)
    assert "joint stage: 1 steps" in done.stdout
    before, after = load_model(final)[0].state_dict(), load_model(joint)[0].state_dict()
    convs = [key for key, value in before.items() if value.dim() == 4]
    assert all(not torch.equal(before[key], after[key]) for key in convs), "the trunk trains in stage 4"


def test_bundling_the_all_styles_file_joins_styles_trained_on_one_trunk(tmp_path, vgg_file, capsys):
    photos = training_inputs(tmp_path, {"starry_night": 100, "wave": 101})
    loss = LossSpec(vgg="vgg16", vgg_weights=str(vgg_file("vgg16", "relu2_2")), content_layers="relu2_2",
                    style_layers="relu2_2", style_weight=1e3)
    common = dict(data=str(photos), spec="light", image_size=32, batch_size=2, workers=0, holdout=1,
                  checkpoint_every=0, sample_every=0)
    runs = tmp_path / "runs"
    first = fit(TrainConfig(style=(str(tmp_path / "starry_night.png"),), output=str(runs / "starry_night.safetensors"),
                            loss=loss, steps=3, **common))
    second = fit(TrainConfig(style=(str(tmp_path / "wave.png"),), output=str(runs / "wave.safetensors"), loss=loss,
                             steps=2, init=str(first), **common))  # its norm rows on the first one's trunk
    quality = tmp_path / "quality.json"
    quality.write_text(json.dumps({"cont-starry_night": {"ratios": {"1": 0.05, "0.5": 0.06, "0.25": 0.2}},
                                   "starry_night": {"ratios": {"1": 0.5, "0.5": 0.6, "0.25": 0.7}}}))
    out = tmp_path / "checkpoints"
    assert bundle_style.main(["--merge", str(first), str(second), "--out", str(out), "--quality", str(quality),
                              "--quality-prefix", "cont-"]) == 0  # eval_styles' names for device_bundled.sh's files
    merged, info = load_model(out / "all_styles.safetensors")
    assert info.styles == ("starry_night", "wave") and [part["steps_done"] for part in info.config["parts"]] == [3, 2]
    assert info.thumbnails == tuple(encode_thumbnail(tmp_path / f"{n}.png") for n in info.styles)
    for index, single in enumerate((first, second)):  # each style is exactly its single model (in fp16)
        alone = select_styles(merged, [index]).state_dict()
        for key, value in load_model(single)[0].state_dict().items():
            assert torch.equal(alone[key], value.half().float()), key
    card = (out / "all_styles.md").read_text()
    assert card.startswith("# all_styles\n") and "*The Great Wave off Kanagawa*" in card
    assert "| starry_night | 3 |" in card and "| 0.050 / 0.060 / 0.200 | [card](starry_night.md) |" in card
    assert "| wave | 2 |" in card and "| not measured | [card](wave.md) |" in card
    assert "fastnst convert --merge starry_night.safetensors wave.safetensors -o all_styles.safetensors" in card
    assert bundle_style.main(["--merge", str(first), str(out / "all_styles.safetensors"), "--out", str(tmp_path)]) == 1
    assert "--merge takes single-style models written by fastnst train" in capsys.readouterr().err


def test_the_sheet_shows_what_the_all_styles_file_adds_a_mix(models, tmp_path, monkeypatch):
    """With every style of a multi-style file also bundled alone, the file gets one column: its first two styles
    mixed evenly, both paintings above it."""
    pair, _ = load_model(models["folder"] / "pair.safetensors")
    for index, name in enumerate(("left", "right")):
        save_model(models["folder"] / f"{name}.safetensors", select_styles(pair, [index]), styles=[name],
                   thumbnails=[models["thumbs"][1 + index]])
    columns = demo.bundled_styles(models["folder"])
    assert [(m.stem, look, label) for m, look, label, _ in columns] == [
        ("alpha", {}, "alpha"), ("left", {}, "left"),
        ("pair", {"style_mix": "left=0.5,right=0.5"}, "pair: left + right"), ("right", {}, "right")]
    thumbnail = columns[2][3]
    left, right = (decode_thumbnail(t) for t in models["thumbs"][1:])
    assert thumbnail.shape[1] == min(left.shape[1], right.shape[1])
    assert thumbnail.shape[2] == sum(round(t.shape[2] * thumbnail.shape[1] / t.shape[1]) for t in (left, right))
    monkeypatch.setattr(demo, "sample_photo", lambda: models["photo"])
    assert demo.run(models["folder"], tmp_path / "out") == 0
    mixed = load_image(tmp_path / "out" / "pair-left0.5-right0.5" / "portrait.png")
    with torch.no_grad():
        expected = pair(load_image(models["photo"])[None], style=torch.tensor([[0.5, 0.5]]))[0].clamp(0, 1)
    assert psnr(to_uint8(mixed).float(), to_uint8(expected).float()) > 40


def test_at_least_three_bundled_styles_with_cards():
    assert len(BUNDLED) >= 3, f"checkpoints/ holds {len(BUNDLED)} bundled model(s); the project ships three or more"


@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_bundled_model_is_small_documented_and_really_stylizes(path):
    assert path.stat().st_size < 8e6
    model, info = load_model(path)
    records = info.config.get("parts") or [info.config]  # the all-styles file keeps each style's training record
    assert len(info.thumbnails) == model.spec.num_styles
    assert min(bundle_style.totals(record)[0] for record in records) >= 300  # over every stage of a style
    card = path.with_suffix(".md").read_text()
    assert card.startswith(f"# {path.stem}\n")
    assert "fastnst convert --merge" in card if "parts" in info.config else "fastnst train" in card
    json.dumps(info.config)  # the whole training record is plain data
    x = to_tensor(gradient_image(96, 64, seed=3))[None]
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    # Not a faint tint: the output departs from the photo by a large margin, and not uniformly.
    difference = (y.clamp(0, 1) - x).abs()
    assert difference.mean() > 0.08 and difference.std() > 0.03


def test_train_bundled_minutes_sizes_stage_4_by_a_probe_and_joint_from_skips_stages_1_to_3(tmp_path, vgg_file,
                                                                                          monkeypatch, capsys):
    styles = tmp_path / "styles"
    styles.mkdir()
    photos = training_inputs(styles, {"wave": 101}, suffix=".jpg")
    vgg = vgg_file("vgg19", "relu3_1")
    start = fit(TrainConfig(style=(str(styles / "wave.jpg"),), data=str(photos), spec="light",
                            output=str(tmp_path / "wave.safetensors"),
                            loss=LossSpec(vgg="vgg19", vgg_weights=str(vgg), vgg_flavour="caffe"),
                            image_size=32, batch_size=2, steps=1, workers=0, holdout=0, checkpoint_every=0))
    argv = ["--photos", str(photos), "--styles", str(styles), "--vgg-weights", str(vgg), "--trunk", "unused",
            "--out", str(tmp_path / "out"), "--device", "cpu", "--amp", "none", "--workers", "0", "--only", "wave",
            "--joint-from", str(start)]
    with pytest.raises(SystemExit):
        train_bundled.main(argv)  # --joint-from needs the stage's length: steps or minutes
    capsys.readouterr()
    monkeypatch.setattr(train_bundled, "PROBE_STEPS", 1)
    asked = []  # the probe is real; what fits in the time left is the next function's (tested below)
    monkeypatch.setattr(train_bundled, "affordable_steps", lambda *measured: asked.append(measured) or 2)
    assert train_bundled.main([*argv, "--minutes", "30"]) == 0
    (seconds_left, rate, start_up), = asked
    assert 0 < seconds_left <= 30 * 60 and rate > 0 and start_up >= 0
    assert "sized to 2 steps" in capsys.readouterr().out
    record = read_info(tmp_path / "out" / "joint" / "wave.safetensors").config
    assert (record["steps_done"], record["init"], record["init_trains"]) == (2, str(start), "all")
    assert not list((tmp_path / "out" / "runs").iterdir()), "stages 1-3 are skipped"
    assert not (tmp_path / "out" / "joint" / "probe").exists(), "the probe run is removed"
    monkeypatch.setattr(train_bundled, "affordable_steps", lambda *measured: 0)
    (tmp_path / "out" / "joint" / "wave.safetensors").unlink()
    assert train_bundled.main([*argv, "--minutes", "30"]) == 1  # no time left: said, and nothing trained
    assert "no time left" in capsys.readouterr().err
    assert not (tmp_path / "out" / "joint" / "wave.safetensors").exists()


def test_train_bundled_sizes_stage_4_to_the_time_left():
    minimum, finish = train_bundled.MIN_JOINT, train_bundled.FINISH_SECONDS
    # 10 minutes at 2 steps/s after a 20 s start-up: (600 - 20 - finish) s of steps, 5% kept in hand.
    assert train_bundled.affordable_steps(600, 2.0, 20) == int((600 - 20 - finish) * 2.0 * 0.95)
    seconds = finish + 5 + minimum / 0.95  # just enough at 1 step/s for the least worth a stage
    assert train_bundled.affordable_steps(seconds + 1, 1.0, 5) >= minimum
    assert train_bundled.affordable_steps(seconds - 2, 1.0, 5) == 0
    assert train_bundled.affordable_steps(10, 100.0, 30) == 0  # the start-up alone overruns


@requires_shared
def test_eval_styles_keeps_each_model_s_figures_and_optimizes_each_photo_once(tmp_path, vgg_file, capsys):
    photos = training_inputs(tmp_path, {"wave": 101})
    loss = LossSpec(vgg="vgg19", vgg_weights=str(vgg_file("vgg19", "relu3_1")), vgg_flavour="caffe",
                    style_weight=1e3)
    model = fit(TrainConfig(style=(str(tmp_path / "wave.png"),), data=str(photos), spec="light", loss=loss,
                            output=str(tmp_path / "wave.safetensors"), image_size=32, batch_size=2, steps=1,
                            workers=0, holdout=1, checkpoint_every=0, sample_every=0))
    two_styles = tmp_path / "two.safetensors"
    save_model(two_styles, TransformerNet(SPECS["light"].with_styles(2)), styles=["a", "b"])
    out = tmp_path / "eval"
    argv = ["--out", str(out), "--photos", "1", "--iterations", "3", "--size", "48", "--ratio-size", "48",
            "--device", "cpu", "--sheets", str(tmp_path / "sheets")]
    # The second file is refused, but the first one's figures are already kept.
    assert eval_styles.main([str(model), str(two_styles), *argv]) == 1
    quality = json.loads((out / "quality.json").read_text())["wave"]
    assert quality["photos"] == 1 and set(quality["ratios"]) == {"1", "0.5", "0.25"}
    assert quality["model_wins"] == int(quality["model_style"] <= quality["lbfgs_style"])
    # Where the gap lives: every layer at every scale; one photo's shares of the gap sum to 1.
    assert set(quality["terms"]) == {f"{layer}{at}" for layer in ("relu1_1", "relu2_1", "relu3_1")
                                     for at in ("", "@0.5", "@0.25")}
    assert sum(term["share"] for term in quality["terms"].values()) == pytest.approx(1.0, rel=1e-3)
    assert all(term["ratio"] > 0 for term in quality["terms"].values())
    assert "gap by term (model / L-BFGS, share of the gap): relu" in capsys.readouterr().out
    assert (tmp_path / "sheets" / "wave.jpg").is_file()
    # The optimization lowers the style loss below the photo's own (its first evaluation).
    history = json.loads(next((out / "lbfgs").glob("*.json")).read_text())
    evaluations = [entry for entry in history["history"] if "style" in entry]
    assert evaluations[-1]["style"] < evaluations[0]["style"]
    image = next((out / "lbfgs").glob("*.png"))
    stamp = image.stat().st_mtime_ns
    capsys.readouterr()
    assert eval_styles.main([str(model), *argv]) == 0  # a rerun scores against the kept optimization
    assert len((out / "lbfgs.jsonl").read_text().splitlines()) == 1 and image.stat().st_mtime_ns == stamp
    assert json.loads((out / "quality.json").read_text())["wave"]["lbfgs_style"] == quality["lbfgs_style"]
