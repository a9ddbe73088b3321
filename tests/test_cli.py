"""The command line, run in-process through ``main([...])``: every subcommand, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from fastnst.checkpoint import load_model
from fastnst.cli import main
from fastnst.files import TEMP_MARKER

import image_corpus as corpus
from conftest import REPO

SUBCOMMANDS = ["info", "convert", "stylize", "train", "export", "optimize", "score", "video", "serve"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_for_every_subcommand(command, capsys):
    assert main([command, "--help"]) == 0
    assert f"usage: fastnst {command}" in capsys.readouterr().out


def test_stylize_help_states_where_outputs_go(capsys):
    assert main(["stylize", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "one folder given, its tree goes directly under OUT_DIR (holiday/ -o styled/ writes " \
           "styled/IMG_1.jpg)" in text
    assert "several inputs keep their own top folders" in text and "Inputs are never overwritten" in text


def test_usage_errors_exit_2(capsys):
    assert main([]) == 2
    assert main(["nope"]) == 2
    assert main(["stylize", "-m", "x.safetensors"]) == 2
    assert "required" in capsys.readouterr().err


def test_info_text_and_json(model_file, capsys):
    assert main(["info", str(model_file)]) == 0
    out = capsys.readouterr().out
    assert "test-style" in out and "parameters" in out
    assert main(["info", "--json", str(model_file)]) == 0
    data = json.loads(capsys.readouterr().out)
    model, _ = load_model(model_file)
    assert data["parameters"] == model.num_parameters() and data["config"] == {"steps": 3}
    assert data["spec"] == {"channels": [16, 32, 64], "num_residual": 3}


def test_info_on_a_bad_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 10)
    assert main(["info", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastnst info: error:") and str(bad) in err and len(err.splitlines()) == 1


def test_convert_legacy_file_then_stylize(tmp_path, capsys):
    from test_transformer import _random_examples_state

    legacy = tmp_path / "legacy.model"
    torch.save(_random_examples_state(), legacy)
    out = tmp_path / "converted.safetensors"
    assert main(["convert", str(legacy), "-o", str(out), "--style-name", "noise"]) == 0
    model, info = load_model(out)
    assert info.styles == ("noise",) and info.config["source_format"] == "pytorch-examples"
    reference, _ = load_model(legacy)
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
    photo = corpus.make_rgb(tmp_path, "p.png", size=(13, 9))
    assert main(["stylize", "-m", str(out), str(photo), "-o", str(tmp_path / "styled")]) == 0
    assert Image.open(tmp_path / "styled" / "p.png").size == (13, 9)


def test_convert_refuses_a_non_model(tmp_path, capsys):
    junk = tmp_path / "junk.pth"
    torch.save({"fc.weight": torch.zeros(2)}, junk)
    assert main(["convert", str(junk), "-o", str(tmp_path / "x.safetensors")]) == 1
    assert "not a pytorch/examples fast_neural_style model" in capsys.readouterr().err
    assert main(["convert", str(junk), "-o", str(tmp_path / "x.pth")]) == 2


def test_stylize_files_and_folders_reports_bad_inputs_and_goes_on(tmp_path, model_file, capsys):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    good = [corpus.make_rgb(photos, "a.jpg", size=(21, 15)), corpus.make_rgb(photos / "sub", "b.png", size=(7, 5))]
    bad = [corpus.make_empty(photos), corpus.make_truncated(photos, ".png")]
    out = tmp_path / "out"
    single = corpus.make_rgb(tmp_path, "single.webp", size=(9, 9))
    rc = main(["stylize", "-m", str(model_file), str(photos), str(single), "-o", str(out), "--backend", "torch"])
    err = capsys.readouterr().err
    assert rc == 1
    for path in bad:
        assert any(line.startswith(f"WARNING: {path}:") for line in err.splitlines())
    assert "done 3, skipped 0 (already there), failed 2" in err
    assert Image.open(out / "photos" / "a.jpg").size == (21, 15)
    assert Image.open(out / "photos" / "sub" / "b.png").size == (7, 5)
    assert Image.open(out / "single.webp").size == (9, 9)
    assert not list(out.rglob(TEMP_MARKER + "*"))
    # Output pixels are the model's output for the decoded input.
    model, _ = load_model(model_file)
    from fastnst.images import open_image, to_pil, to_tensor

    with torch.no_grad():
        expected = np.asarray(to_pil(model(to_tensor(open_image(good[1]))[None]).clamp(0, 1)))
    assert np.array_equal(np.asarray(Image.open(out / "photos" / "sub" / "b.png")), expected)
    # A rerun skips what exists.
    assert main(["stylize", "-m", str(model_file), str(single), "-o", str(out)]) == 0
    assert "skipped 1" in capsys.readouterr().err


def test_stylize_with_a_missing_model_is_one_line(tmp_path, capsys):
    photo = corpus.make_rgb(tmp_path, "p.png")
    assert main(["stylize", "-m", str(tmp_path / "none.safetensors"), str(photo), "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert "none.safetensors: no such model file" in err and len(err.splitlines()) == 1


def test_console_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "fastnst", "--version"], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("fastnst ")
