"""The stylization engine: the Stylizer API, its options, and `fastnst stylize` over a library of every bad file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from fastnst.backends.torch import TorchBackend
from fastnst.cli import main
from fastnst.errors import ConfigError
from fastnst.files import TEMP_MARKER
from fastnst.images import open_image, to_pil, to_tensor
from fastnst.models.transformer import TransformerNet
from fastnst.stylize import StylizeConfig, Stylizer, stylize_files

import image_corpus as corpus
from conftest import REPO, gradient_image


def _expected(net: TransformerNet, path) -> np.ndarray:
    """The pixels a stylized file must hold: the network's output on the decoded photo, rounded like to_pil."""
    with torch.no_grad():
        return np.asarray(to_pil(net(to_tensor(open_image(path))[None]).clamp(0, 1)))


class SpyBackend:
    """A torch backend that records the batch shapes it was asked to run, and can fail on one size."""

    name = "spy"

    def __init__(self, net: TransformerNet, fail_on: tuple[int, int] | None = None) -> None:
        self.inner = TorchBackend(net, "cpu")
        self.info, self.calls, self.fail_on = self.inner.info, [], fail_on

    def run(self, batch, norm_stats=None):
        self.calls.append(tuple(batch.shape))
        if tuple(batch.shape[-2:]) == self.fail_on:
            raise RuntimeError("out of memory (simulated)\nsecond line")
        return self.inner.run(batch, norm_stats)

    def norm_stats(self, batch):
        return self.inner.norm_stats(batch)

    def __getattr__(self, name):  # the rest of the backend contract: the torch backend's
        return getattr(self.inner, name)


pytestmark = pytest.mark.usefixtures("one_thread")


# -- the Python API -----------------------------------------------------------------------------

def test_stylizer_matches_the_network_for_tensors_and_pil(model_file, light_net):
    stylizer = Stylizer(model_file, device="cpu", backend="torch")
    x = torch.rand(2, 3, 21, 34)
    with torch.no_grad():
        expected = light_net(x).clamp(0, 1)
    torch.testing.assert_close(stylizer(x), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(stylizer(x[0]), expected[0], atol=1e-5, rtol=0)
    image = gradient_image(19, 13)
    out = stylizer.stylize_image(image)
    assert out.size == (19, 13) and out.mode == "RGB"
    with torch.no_grad():
        reference = to_pil(light_net(to_tensor(image)[None]).clamp(0, 1))
    assert np.array_equal(np.asarray(out), np.asarray(reference))
    nhwc = Stylizer(model_file, channels_last=True)
    assert nhwc.backend.channels_last and not stylizer.backend.channels_last  # the CPU default is NCHW
    assert nhwc.backend.net.encoder[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(nhwc(x), expected, atol=1e-5, rtol=0)


def test_strength_and_preserve_color_against_plain_arithmetic(light_net):
    x = torch.rand(1, 3, 16, 20) * 0.6 + 0.2
    with torch.no_grad():
        styled = light_net(x)
    half = Stylizer(light_net, strength=0.25)(x)
    torch.testing.assert_close(half, (0.75 * x + 0.25 * styled).clamp(0, 1), atol=1e-5, rtol=0)
    kept = Stylizer(light_net, preserve_color=True)(x)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    expected = (x + ((styled * luma).sum(1, keepdim=True) - (x * luma).sum(1, keepdim=True))).clamp(0, 1)
    torch.testing.assert_close(kept, expected, atol=1e-5, rtol=0)
    assert torch.equal(Stylizer(light_net, strength=0.0)(x), x)
    with pytest.raises(ConfigError, match="strength"):
        Stylizer(light_net, strength=1.5)


def test_with_options_gives_a_view_with_its_own_options_and_the_same_network(light_net):
    x = torch.rand(1, 3, 16, 20) * 0.6 + 0.2
    with torch.no_grad():
        styled = light_net(x)
    base = Stylizer(light_net)
    view = base.with_options(strength=0.25)
    torch.testing.assert_close(view(x), (0.75 * x + 0.25 * styled).clamp(0, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(base(x), styled.clamp(0, 1), atol=1e-5, rtol=0)  # the base kept strength 1
    assert view.backend is not base.backend and view.backend.net is base.backend.net
    with pytest.raises(ConfigError, match="strength"):
        base.with_options(strength=2.0)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_autocast_is_close_to_fp32(light_net, dtype):
    x = torch.rand(1, 3, 32, 40)
    fp32 = Stylizer(light_net)(x)
    half = Stylizer(TransformerNet(light_net.spec).eval().requires_grad_(False), dtype=dtype)
    half.backend.net.load_state_dict(light_net.state_dict())
    diff = (half(x) - fp32).abs().max().item()
    assert 0 < diff < 0.1  # really computed in 16 bits, and still the same picture
    with pytest.raises(ConfigError, match="unknown dtype"):
        Stylizer(light_net, dtype="int8")


def test_compile_option_runs_the_forward_through_torch_compile(light_net, monkeypatch):
    compiled = []
    real = torch.compile

    def compile_eager(model, **kwargs):  # dynamo tracing without inductor's C++ build, to keep the test fast
        compiled.append(kwargs)
        return real(model, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", compile_eager)
    x = torch.rand(1, 3, 24, 28)
    expected = Stylizer(light_net, compile=False)(x)
    stylizer = Stylizer(light_net, compile=True)
    torch.testing.assert_close(stylizer(x), expected, atol=1e-5, rtol=0)
    assert compiled == [{"dynamic": True}]


def test_backend_choice_goes_through_the_registry(model_file):
    with pytest.raises(ConfigError, match="unknown backend 'nope'"):
        Stylizer(model_file, backend="nope")
    with pytest.raises(ConfigError, match="torch backend options"):
        StylizeConfig(model="m", inputs=("x",), output_dir="o", backend="onnxruntime", compile=True)
    assert Stylizer(model_file, backend="torch").backend.name == "torch"


def test_config_validation_messages():
    base = {"model": "m", "inputs": ("x",), "output_dir": "o"}
    for field, value, message in [("strength", 2.0, "--strength"), ("batch_size", 0, "--batch-size"),
                                  ("tile_size", 10, "--tile-size"), ("shard", (2, 2), "shard 2/2"),
                                  ("format", "gif", "unknown format"), ("workers", 0, "--workers")]:
        with pytest.raises(ConfigError, match=message):
            StylizeConfig(**base, **{field: value})
    with pytest.raises(ConfigError, match="no inputs"):
        StylizeConfig(model="m", inputs=(), output_dir="o")


# -- the command line over a library --------------------------------------------------------------

def test_library_with_every_kind_of_bad_file(tmp_path, model_file, light_net, capsys, monkeypatch):
    library = tmp_path / "library"
    good, bad = corpus.make_library(library)
    locked = corpus.make_rgb(library, "locked.png")
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads chmod-000 files anyway; refuse the way the kernel does for others
        real_open = Image.open

        def refuse(fp, *args, **kwargs):
            if str(fp) == str(locked):
                raise PermissionError(13, "Permission denied", str(locked))
            return real_open(fp, *args, **kwargs)

        monkeypatch.setattr(Image, "open", refuse)
    bad[locked] = "permission denied"
    out = tmp_path / "out"
    report = tmp_path / "report.jsonl"
    rc = main(["stylize", "-m", str(model_file), str(library), "-o", str(out), "--report", str(report),
               "--backend", "torch"])
    err = capsys.readouterr().err
    assert rc == 1
    warnings = [line for line in err.splitlines() if line.startswith("WARNING: ")]
    assert len(warnings) == len(bad)
    for path, reason in bad.items():
        assert any(line.startswith(f"WARNING: {path}: ") and reason in line for line in warnings), path
    assert f"done {len(good)}, skipped 0 (already there), failed {len(bad)}" in err
    for path, size in good.items():
        relative = path.relative_to(library)  # one folder given: its tree goes directly under OUT_DIR
        target = (out / relative).with_suffix(".png" if path.suffix == ".gif" else path.suffix)
        with Image.open(target) as result:
            assert result.size == size and result.mode == "RGB", path
    assert not list(out.rglob(TEMP_MARKER + "*"))
    assert len(list(p for p in out.rglob("*") if p.is_file())) == len(good)
    exif6 = out / "exif6.jpg"
    expected = _expected(light_net, library / "exif6.jpg")
    assert np.abs(np.asarray(Image.open(exif6), np.int16) - expected).mean() < 3  # JPEG-encoded result
    png = out / "nested" / "deeper" / "deep.png"
    assert np.array_equal(np.asarray(Image.open(png)), _expected(light_net, library / "nested/deeper/deep.png"))
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert sorted(r["input"] for r in lines) == sorted(str(p) for p in [*good, *bad])
    statuses = {r["input"]: r for r in lines}
    assert statuses[str(locked)]["status"] == "failed" and statuses[str(locked)]["reason"] == "permission denied"
    strip = statuses[str(library / "strip.png")]
    assert (strip["status"], strip["width"], strip["height"], strip["tiles"]) == ("done", 1, 4000, 1)


def test_unwritable_output_folder_fails_before_any_work(tmp_path, model_file, capsys, unwritable_folder):
    photo = corpus.make_rgb(tmp_path, "p.png")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the output folder should be")
    assert main(["stylize", "-m", str(tmp_path / "missing-model.safetensors"), str(photo),
                 "-o", str(blocker / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastnst stylize: error: ") and "output folder cannot be written" in err
    assert len(err.splitlines()) == 1 and "missing-model" not in err  # checked before even loading the model
    locked = unwritable_folder
    assert main(["stylize", "-m", str(model_file), str(photo), "-o", str(locked)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"fastnst stylize: error: {locked}: the output folder cannot be written (Permission denied); "
                   "choose another -o/--output-dir or fix its permissions")
    assert not list(locked.iterdir())


def test_rerun_skips_overwrite_redoes_and_stale_temporaries_go(tmp_path, model_file, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        corpus.make_rgb(folder, f"{i}.png", size=(12, 10))
    out = tmp_path / "out"
    args = ["stylize", "-m", str(model_file), str(folder), "-o", str(out)]
    assert main(args) == 0
    first = {p: p.read_bytes() for p in out.rglob("*.png")}
    stale = out / f"{TEMP_MARKER}1-0badcafe.png"
    stale.write_bytes(b"half a file")
    (out / "1.png").unlink()
    capsys.readouterr()
    assert main(args) == 0
    assert "done 1, skipped 2 (already there), failed 0" in capsys.readouterr().err
    assert not stale.exists() and {p: p.read_bytes() for p in out.rglob("*.png")} == first
    assert main([*args, "--overwrite"]) == 0
    assert "done 3, skipped 0" in capsys.readouterr().err


def test_formats_quality_and_max_size(tmp_path, model_file, light_net):
    photo = corpus.make_rgb(tmp_path, "p.png", size=(60, 40))
    for fmt in ("jpg", "webp", "png"):
        assert main(["stylize", "-m", str(model_file), str(photo), "-o", str(tmp_path / fmt), "--format", fmt]) == 0
        with Image.open(tmp_path / fmt / f"p.{fmt}") as result:
            assert result.format == {"jpg": "JPEG", "webp": "WEBP", "png": "PNG"}[fmt] and result.size == (60, 40)
    assert main(["stylize", "-m", str(model_file), str(photo), "-o", str(tmp_path / "q"), "--format", "jpg",
                 "--quality", "20"]) == 0
    assert (tmp_path / "q" / "p.jpg").stat().st_size < (tmp_path / "jpg" / "p.jpg").stat().st_size
    assert main(["stylize", "-m", str(model_file), str(photo), "-o", str(tmp_path / "small"), "--max-size", "30"]) == 0
    assert Image.open(tmp_path / "small" / "p.png").size == (30, 20)
    assert main(["stylize", "-m", str(model_file), str(photo), "-o", str(tmp_path / "limit"),
                 "--max-pixels", "1000"]) == 1


def test_strength_preserve_color_tiles_and_dtype_through_the_cli(tmp_path, model_file, light_net):
    photo = tmp_path / "big.png"
    gradient_image(30, 24).resize((300, 240), Image.Resampling.BICUBIC).save(photo)
    args = ["stylize", "-m", str(model_file), str(photo), "--backend", "torch"]
    assert main([*args, "-o", str(tmp_path / "whole")]) == 0
    assert main([*args, "-o", str(tmp_path / "tiled"), "--tile-size", "128", "--tile-stats", "thumbnail"]) == 0
    assert main([*args, "-o", str(tmp_path / "exact"), "--tile-size", "128"]) == 0  # exact is the default
    whole = np.asarray(Image.open(tmp_path / "whole" / "big.png"), np.float64)
    tiled = np.asarray(Image.open(tmp_path / "tiled" / "big.png"), np.float64)
    exact = np.asarray(Image.open(tmp_path / "exact" / "big.png"), np.float64)
    assert tiled.shape == exact.shape == whole.shape == (240, 300, 3)
    assert np.abs(exact - whole).max() <= 1 and np.abs(tiled - whole).max() > 1
    assert main([*args, "-o", str(tmp_path / "soft"), "--strength", "0", "--preserve-color"]) == 0
    original = np.asarray(Image.open(photo), np.int16)
    assert np.abs(np.asarray(Image.open(tmp_path / "soft" / "big.png"), np.int16) - original).max() <= 1
    assert main([*args, "-o", str(tmp_path / "bf16"), "--dtype", "bf16", "--channels-last", "--device", "cpu",
                 "--workers", "1"]) == 0
    bf16 = np.asarray(Image.open(tmp_path / "bf16" / "big.png"), np.float64)
    assert np.abs(bf16 - whole).mean() < 4
    assert main([*args, "-o", str(tmp_path / "batched"), "--batch-size", "2", "--streams", "1"]) == 0
    assert np.abs(np.asarray(Image.open(tmp_path / "batched" / "big.png"), np.float64) - whole).max() <= 1
    assert main([*args, "-o", str(tmp_path / "x"), "--compile", "--streams", "2"]) == 2
    assert main([*args, "-o", str(tmp_path / "x"), "--strength", "1.5"]) == 2
    assert main([*args, "-o", str(tmp_path / "x"), "--backend", "nope"]) == 2
    assert main([*args, "-o", str(tmp_path / "x"), "--shard", "3/3"]) == 2


def test_equal_sizes_are_batched_and_failures_stay_per_batch(tmp_path, light_net, model_file):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(7):
        corpus.make_rgb(folder, f"a{i}.png", size=(20, 16))
    for i in range(2):
        corpus.make_rgb(folder, f"b{i}.png", size=(9, 9))
    corpus.make_rgb(folder, "c.png", size=(11, 5))
    spy = SpyBackend(light_net, fail_on=(5, 11))
    config = StylizeConfig(model=str(model_file), inputs=(str(folder),), output_dir=str(tmp_path / "out"),
                           batch_size=3)
    report = stylize_files(config, Stylizer(spy))
    assert report.done == 9 and [path for path, _ in report.failed] == [str(folder / "c.png")]
    assert report.failed[0][1] == "the network failed (out of memory (simulated))"
    assert sorted(spy.calls) == sorted([(3, 3, 16, 20)] * 2 + [(1, 3, 16, 20), (2, 3, 9, 9), (1, 3, 5, 11)])
    for i in range(7):
        got = np.asarray(Image.open(tmp_path / "out" / f"a{i}.png"), np.int16)
        assert np.abs(got - _expected(light_net, folder / f"a{i}.png")).max() <= 1  # oneDNN may round a batch
        # of N differently from N single images in the last bit: hence batch size 1 on the CPU by default


def test_one_streams_rule_requested_else_default_capped_and_one_unless_concurrent():
    backend = TorchBackend(TransformerNet(), "cpu")
    backend.default_streams = 4  # as OpenVINO on a 4-core CPU
    stylizer = Stylizer(backend)
    assert [stylizer.stream_count(None), stylizer.stream_count(None, most=2), stylizer.stream_count(None, most=0),
            stylizer.stream_count(3, most=2)] == [4, 2, 1, 3]  # a request is taken as given
    backend.compiled = True  # a compiled torch forward is not thread-safe
    assert not backend.concurrent and stylizer.stream_count(None) == stylizer.stream_count(8) == 1


def test_parallel_streams_match_one_stream_and_leave_the_thread_setting_alone(tmp_path, model_file):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        corpus.make_rgb(folder, f"{i}.png", size=(40 + 4 * i, 30))
    gradient_image(17, 13).resize((170, 130)).save(folder / "large.png")  # tiled with --tile-size 128
    torch.set_num_threads(2)  # the fixture restores it
    for streams in ("1", "2"):
        assert main(["stylize", "-m", str(model_file), str(folder), "-o", str(tmp_path / streams), "--streams", streams,
                     "--tile-size", "128", "--backend", "torch"]) == 0
    assert torch.get_num_threads() == 2
    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert seen == [2]
    for name in [f"{i}.png" for i in range(3)] + ["large.png"]:
        one = np.asarray(Image.open(tmp_path / "1" / name), np.int16)
        two = np.asarray(Image.open(tmp_path / "2" / name), np.int16)
        assert one.shape == two.shape and np.abs(one - two).max() <= 1  # one core or two per photo: same result


def test_shards_split_one_job_through_cli_and_torchrun_environment(tmp_path, model_file, monkeypatch, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(10):
        corpus.make_rgb(folder, f"{i}.png", size=(8, 8))
    out = tmp_path / "out"
    base = ["stylize", "-m", str(model_file), str(folder), "-o", str(out), "--report", str(tmp_path / "r.jsonl")]
    assert main([*base, "--shard", "0/2"]) == 0
    first = {p.name for p in out.rglob("*.png")}
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(base) == 0
    everything = {p.name for p in out.rglob("*.png")}
    assert everything == {f"{i}.png" for i in range(10)} and 0 < len(first) < 10
    shard0 = (tmp_path / "r.shard0of2.jsonl").read_text().splitlines()
    shard1 = (tmp_path / "r.shard1of2.jsonl").read_text().splitlines()
    assert len(shard0) == len(first) and len(shard0) + len(shard1) == 10


def test_odd_decoder_and_writer_failures_are_reported_not_fatal(tmp_path, model_file, monkeypatch):
    import fastnst.stylize.photo as pipeline

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("ok.png", "decoder-bug.png", "disk-full.png"):
        corpus.make_rgb(folder, name, size=(8, 8))
    real_open, real_save = pipeline.open_image, pipeline.save_image

    def open_image(path, *args):
        if path.name == "decoder-bug.png":
            raise IndexError("list index out of range")
        return real_open(path, *args)

    def save_image(image, path, **kwargs):
        if path.name == "disk-full.png":
            raise OSError(28, "No space left on device")
        return real_save(image, path, **kwargs)

    monkeypatch.setattr(pipeline, "open_image", open_image)
    monkeypatch.setattr(pipeline, "save_image", save_image)
    report = stylize_files(StylizeConfig(model=str(model_file), inputs=(str(folder),), output_dir=str(tmp_path / "o")))
    reasons = dict(report.failed)
    assert report.done == 1
    assert reasons[str(folder / "decoder-bug.png")] == "cannot decode (IndexError: list index out of range)"
    assert "No space left on device" in reasons[str(folder / "disk-full.png")]


# -- kill and resume ----------------------------------------------------------------------------------

def test_killed_run_resumes_to_byte_identical_outputs(tmp_path, model_file):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(40):
        gradient_image(160 + 4 * (i % 3), 120, seed=i).save(folder / (f"{i:02d}.jpg" if i % 2 else f"{i:02d}.png"))
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    command = [sys.executable, "-m", "fastnst", "stylize", "-m", str(model_file), str(folder), "--streams", "2",
               "--backend", "torch"]
    assert main(command[3:] + ["-o", str(reference)]) == 0
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}  # as the reference run in this process
    process = subprocess.Popen([*command, "-o", str(resumed)], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if len(list(resumed.rglob("[0-9]*.*"))) >= 6:
            break
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = list(resumed.rglob("[0-9]*.*"))
    assert process.returncode == -signal.SIGKILL and 0 < len(written) < 40, "the run was not killed midway"
    resume = subprocess.run([*command, "-o", str(resumed)], env=env, capture_output=True, text=True, timeout=300)
    assert resume.returncode == 0, resume.stderr
    assert f"skipped {len(written)} (already there)" in resume.stderr
    expected = {p.relative_to(reference): p.read_bytes() for p in reference.rglob("*") if p.is_file()}
    got = {p.relative_to(resumed): p.read_bytes() for p in resumed.rglob("*") if p.is_file()}
    assert len(expected) == 40 and got.keys() == expected.keys()  # no temporaries left either
    assert all(got[k] == expected[k] for k in expected)


def test_each_backend_translates_exactly_its_registered_dtypes():
    from fastnst.backends import BACKENDS
    from fastnst.backends.torch import DTYPES

    assert tuple(DTYPES) == BACKENDS["torch"].dtypes == TorchBackend.dtypes
    openvino = pytest.importorskip("fastnst.backends.openvino", reason="openvino is not installed")
    assert tuple(openvino.PRECISIONS) == BACKENDS["openvino"].dtypes == openvino.OpenVinoBackend.dtypes


def _pil_resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(3, H, W) float → (3, h, w): each channel through Pillow's bilinear filter, as mode "F"."""
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(c, np.float32), mode="F").resize(
        (shape[1], shape[0]), Image.Resampling.BILINEAR)) for c in image])


def test_stroke_scale_stylizes_smaller_and_adds_the_full_resolution_detail_back(light_net):
    photo = np.asarray(gradient_image(53, 37, seed=5), np.float32).transpose(2, 0, 1) / 255

    def net(image):
        with torch.no_grad():
            return light_net(torch.from_numpy(np.ascontiguousarray(image))[None])[0].numpy()

    for scale in (2.0, 3.0, 0.5):
        small = (round(37 / scale), round(53 / scale))
        expected = _pil_resize(net(_pil_resize(photo, small)), (37, 53))
        if scale > 1:
            fine = net(photo)
            expected = expected + fine - _pil_resize(_pil_resize(fine, small), (37, 53))
        result = Stylizer(light_net, stroke_scale=scale)(photo)
        assert result.shape == photo.shape
        np.testing.assert_allclose(result, np.clip(expected, 0, 1), atol=2e-5)
    with pytest.raises(ConfigError, match="stroke"):
        Stylizer(light_net, stroke_scale=20)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
def test_stroke_scale_keeps_the_photo_size_on_every_backend(tmp_path, model_file, light_net, backend):
    if backend == "openvino":
        pytest.importorskip("openvino", reason="the OpenVINO backend needs pip install 'fastnst[openvino]'")
    photos = [corpus.make_rgb(tmp_path, f"p{w}.png", size=(w, h)) for w, h in ((61, 43), (20, 90))]
    out = tmp_path / "out"
    dtype, model = ["--dtype", "fp32"], model_file
    if backend == "onnxruntime":  # it runs exported files, in their own precision
        dtype, model = [], tmp_path / "light.onnx"
        assert main(["export", str(model_file), "-o", str(model)]) == 0
    assert main(["stylize", "-m", str(model), *map(str, photos), "-o", str(out), "--backend", backend,
                 *dtype, "--stroke-scale", "2.5"]) == 0
    plain = Stylizer(light_net)
    for photo in photos:
        with Image.open(photo) as src, Image.open(out / photo.name) as result:
            assert result.size == src.size
            # Larger strokes: a different picture from the plain stylization, and still not the photo.
            styled = np.asarray(result, np.float32)
            assert np.abs(styled - np.asarray(plain.stylize_image(src), np.float32)).mean() > 1
            assert np.abs(styled - np.asarray(src.convert("RGB"), np.float32)).mean() > 1
