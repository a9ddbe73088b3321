"""Training against faults: the output folder, a full disk, odd seeds, foreign checkpoints, vanishing or hostile
style images and photos. Each ends in one line (or a warning and a finished model), never a traceback."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import torch
from PIL import Image
from test_train import make_config, setup  # noqa: F401 - the shared fixture

import fastnst.train.loop as loop
from fastnst.checkpoint import load_model, read_info, save_training_state
from fastnst.cli import main
from fastnst.train import checkpoint_path, fit
from fastnst.train.data import PhotoDataset

from conftest import gradient_image

pytestmark = pytest.mark.usefixtures("one_thread")


def base_cli(setup, output) -> list[str]:  # noqa: F811 - the fixture's value
    return ["train", "--style", str(setup["style"]), "--data", str(setup["photos"]), "-o", str(output), "--spec",
            "light", "--image-size", "32", "--batch-size", "2", "--workers", "0", "--vgg-weights", str(setup["vgg"]),
            "--style-layers", "relu1_2,relu2_2", "--content-weight", "1", "--style-weight", "1e3", "--steps", "2",
            "--sample-every", "0"]


def test_an_unwritable_output_folder_is_found_before_step_one(setup, unwritable_folder, capsys, monkeypatch):  # noqa: F811
    steps = []
    monkeypatch.setattr(loop.TrainingRun, "train_step", lambda self, content: steps.append(1))
    assert main(base_cli(setup, unwritable_folder / "m.safetensors")) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot write the model there" in err and steps == []


def test_a_full_disk_at_a_checkpoint_is_a_warning_and_the_run_finishes(setup, caplog, monkeypatch):  # noqa: F811
    real = loop.save_training_state
    calls = []

    def save(path, state):
        calls.append(state["step"])
        if state["step"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, state)

    monkeypatch.setattr(loop, "save_training_state", save)
    path = fit(make_config(setup, "full", steps=3, checkpoint_every=1))
    assert calls[:3] == [1, 2, 3] and load_model(path)[1].config["steps_done"] == 3
    warning = [r.getMessage() for r in caplog.records if "could not write the checkpoint" in r.getMessage()]
    assert len(warning) == 1 and "step 2" in warning[0] and "No space left on device" in warning[0]


def test_a_large_seed_with_several_styles_trains(setup, tmp_path):  # noqa: F811
    second = tmp_path / "second.png"
    gradient_image(40, 40, seed=3).save(second)
    path = fit(make_config(setup, "seed", style=(str(setup["style"]), str(second)), seed=20240101))
    assert load_model(path)[0].spec.num_styles == 2


def test_a_foreign_checkpoint_is_refused_in_one_line(setup, tmp_path, capsys):  # noqa: F811
    foreign = tmp_path / "foreign.ckpt.pt"
    save_training_state(foreign, {"step": 3, "spec": {"channels": [16, 32, 64], "num_residual": 3}})
    assert main([*base_cli(setup, tmp_path / "m.safetensors"), "--resume", str(foreign)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "a training checkpoint without model" in err


def test_a_style_image_deleted_during_the_run_still_gives_a_model(setup, tmp_path):  # noqa: F811
    style = tmp_path / "painting.png"
    gradient_image(48, 48, seed=9).save(style)
    path = fit(make_config(setup, "vanish", style=(str(style),), steps=3),
               callback=lambda step, metrics: style.unlink(missing_ok=True))
    assert not style.exists() and len(read_info(path).thumbnails) == 1


def test_bad_weights_and_style_images_are_one_line(setup, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "m.safetensors"
    assert main([*base_cli(setup, out), "--content-weight", "nan"]) == 2
    assert "content-weight must be >= 0 and finite" in capsys.readouterr().err
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1), (200, 30, 30)).save(tiny)  # relu2_2 sits behind one 2x2 max-pool
    args = base_cli(setup, out)
    args[args.index("--style") + 1] = str(tiny)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1x1 px, too small for relu2_2" in err
    huge = tmp_path / "huge.png"
    Image.new("RGB", (3000, 2000), (30, 30, 200)).save(huge)
    args[args.index("--style") + 1] = str(huge)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "3000x2000 px, too large" in err and "--style-size" in err


def test_resume_auto_says_it_resumed_at_default_verbosity(setup, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "m.safetensors"
    assert main([*base_cli(setup, out), "--resume", "auto"]) == 0
    capsys.readouterr()
    assert main([*base_cli(setup, out), "--resume", "auto", "--steps", "3"]) == 0
    assert f"resumed from {checkpoint_path(out)} at step 2" in capsys.readouterr().err


def test_an_elongated_or_crashing_photo_is_skipped_with_its_name(tmp_path, caplog, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    strip = folder / "strip.png"
    Image.fromarray(np.zeros((1, 100_000, 3), np.uint8)).save(strip)  # 1 x 100000: gigabytes at 256 px
    good = folder / "good.png"
    gradient_image(40, 40).save(good)
    odd = folder / "odd.png"
    gradient_image(40, 40, seed=2).save(odd)
    import fastnst.train.data as data

    real = data.open_image
    monkeypatch.setattr(data, "open_image", lambda path, *a: (_ for _ in ()).throw(RuntimeError("decoder bug"))
                        if path == odd else real(path, *a))
    dataset = PhotoDataset([strip, odd, good], 256, crop=128, seed=0)
    items = [dataset[i] for i in range(3)]
    assert all(item.shape == (3, 128, 128) and torch.isfinite(item).all() for item in items)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "strip.png" in messages and "too elongated" in messages
    assert "odd.png" in messages and "RuntimeError: decoder bug" in messages
