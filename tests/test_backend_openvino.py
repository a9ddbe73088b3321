"""The OpenVINO backend: parity with torch at any size, tiling (thumbnail and exact), the compile cache,
`--backend auto`, `fastnst info --backends`, life without OpenVINO, and quality on real weights."""

from __future__ import annotations

import json
import sys
import threading

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import fastnst.backends.openvino as ov_backend
from fastnst.backends import Backend, backend_class, choose_backend
from fastnst.backends.openvino import OpenVinoBackend
from fastnst.backends.torch import TorchBackend
from fastnst.checkpoint import load_model, save_model
from fastnst.cli import main
from fastnst.errors import ConfigError
from fastnst.export import to_onnx
from fastnst.models.spec import norm_count
from fastnst.models.transformer import SPECS, TransformerNet
from fastnst.stylize import StylizeConfig, Stylizer
from fastnst.stylize.tiling import exact_stats, tile_context


@pytest.fixture(scope="module")
def light(tmp_path_factory):
    """The light network, its model file, its ONNX export as a file, and fp32 / bf16 backends built once."""
    folder = tmp_path_factory.mktemp("openvino")
    torch.manual_seed(0)
    net = TransformerNet(SPECS["light"]).eval()
    model = save_model(folder / "light.safetensors", net, styles=["test-style"], config={"steps": 3})
    proto = to_onnx(net, load_model(model)[1])
    onnx_path = folder / "light.onnx"
    onnx.save(proto, onnx_path)
    return {"net": net, "model": model, "onnx": onnx_path, "folder": folder, "torch": TorchBackend(net, "cpu"),
            "fp32": OpenVinoBackend.from_file(onnx_path, dtype="fp32"),
            "bf16": OpenVinoBackend.from_file(onnx_path, dtype="bf16")}


def pixels_of(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def test_registered_and_implements_the_protocol(light):
    b = light["fp32"]
    assert backend_class("openvino") is OpenVinoBackend and isinstance(b, Backend) and b.name == "openvino"
    assert b.info.spec == light["net"].spec and b.info.styles == ("test-style",) and b.info.config == {"steps": 3}
    assert b.device_type == "cpu" and (b.dtype, light["bf16"].dtype) == ("fp32", "bf16")


@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (1, 3, 31, 45), (3, 3, 16, 9), (2, 3, 67, 45)])
def test_fp32_matches_torch_and_bf16_is_close_at_any_size(light, shape):
    torch.manual_seed(1)
    x = torch.rand(*shape)
    expected = light["torch"].run(x)
    got = light["fp32"].run(x)
    assert got.shape == x.shape and got.dtype == torch.float32
    assert (got - expected).abs().max().item() <= 1e-4
    diff = (light["bf16"].run(x) - expected).abs().max().item()
    assert diff < 0.1 and (diff > 1e-4 or x[0, 0].numel() < 100)  # bfloat16 really, and still the same picture


def test_model_files_are_exported_once_per_content(light, monkeypatch, tmp_path):
    import fastnst.export

    calls = []
    real = fastnst.export.to_onnx
    monkeypatch.setattr(fastnst.export, "to_onnx", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = torch.rand(1, 3, 19, 23)
    first = OpenVinoBackend.from_file(light["model"], dtype="fp32")
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(light["model"].read_bytes())
    second = OpenVinoBackend.from_file(copy, dtype="fp32")
    assert len(calls) <= 1  # the second file has the same bytes: no second export
    assert first.info.styles == ("test-style",)
    torch.testing.assert_close(first.run(x), light["fp32"].run(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(second.run(x), light["fp32"].run(x), atol=1e-6, rtol=0)


def test_statistics_and_region_sums_match_torch(light):
    b, reference = light["fp32"], light["torch"]
    whole = torch.rand(1, 3, 40, 52)
    for (mean, var), (em, ev) in zip(b.norm_stats(whole), reference.norm_stats(whole)):
        torch.testing.assert_close(mean, em, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(var, ev, atol=1e-4, rtol=1e-4)
    tiles = torch.stack([whole[0, :, :24, :28], whole[0, :, 16:, 24:]])
    stats = reference.norm_stats(whole)
    assert (b.run(tiles, norm_stats=stats) - reference.run(tiles, norm_stats=stats)).abs().max() <= 1e-4
    image = torch.rand(3, 120, 150)
    spec = light["net"].spec
    got = exact_stats(image, tile_size=104, context=tile_context(spec), count=norm_count(spec),
                      region_sums=b.region_sums)
    expected = light["net"].compute_norm_stats(image[None])
    assert len(got) == len(expected) == norm_count(spec)
    for (mean, var), (em, ev) in zip(got, expected):
        mean, var = torch.from_numpy(mean), torch.from_numpy(var)
        torch.testing.assert_close(mean, em, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(var, ev, atol=1e-4, rtol=1e-4)


def test_tiled_exact_equals_untiled_and_thumbnail_differs(light):
    image = torch.rand(1, 3, 120, 150)
    untiled = Stylizer(light["net"])(image)
    exact = Stylizer(light["fp32"], tile_size=104)
    assert exact.tile_stats == "exact"  # the default where the backend has region_sums
    assert (exact(image) - untiled).abs().max().item() <= 1e-3
    thumbnail = Stylizer(light["fp32"], tile_size=104, tile_stats="thumbnail")(image)
    assert (thumbnail - untiled).abs().max().item() > 1e-2


def test_compile_cache_dynamic_and_per_shape_lru(light):
    dynamic = OpenVinoBackend.from_file(light["onnx"], dtype="fp32")
    for size in ((16, 16), (17, 30), (33, 21), (16, 16)):
        dynamic.run(torch.rand(1, 3, *size))
    assert dynamic.compiles == 1  # one graph for every size
    static = OpenVinoBackend(onnx.load(str(light["onnx"])), dtype="fp32", static_shapes=True, cache_size=2)
    x = torch.rand(1, 3, 20, 24)
    for _ in range(3):
        torch.testing.assert_close(static.run(x), light["fp32"].run(x), atol=1e-5, rtol=0)
    assert static.compiles == 1  # same-size photos compile once
    static.run(torch.rand(1, 3, 24, 20))
    static.run(torch.rand(2, 3, 24, 20))
    assert static.compiles == 3 and len(static._compiled) == 2  # bounded: the oldest shape was dropped
    static.run(x)
    assert static.compiles == 4 and static.compile_seconds > 0
    with pytest.raises(ConfigError, match="cache_size"):
        OpenVinoBackend(onnx.load(str(light["onnx"])), cache_size=0)


def test_concurrent_callers_get_their_own_requests(light):
    b = light["fp32"]
    inputs = [torch.rand(1, 3, 30 + i, 40) for i in range(4)]
    expected = [b.run(x) for x in inputs]
    results = [None] * 4

    def work(i):
        results[i] = b.run(inputs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(r, e) for r, e in zip(results, expected))


def test_stylize_cli_with_openvino_sizes_tiles_batches_strength_and_colour(light, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for name, (h, w) in {"odd.png": (37, 51), "a.png": (24, 32), "b.png": (24, 32), "big.png": (120, 150)}.items():
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(folder / name)
    base = ["stylize", "--backend", "openvino", "--dtype", "fp32", "-m", str(light["model"]), str(folder)]
    torch_base = ["stylize", "--backend", "torch", "-m", str(light["model"]), str(folder)]
    # Equal sizes batched, odd sizes, a tiled photo (exact statistics, the default), then strength and colour.
    for name, extra in {"plain": ["--batch-size", "2", "--tile-size", "104"],
                        "look": ["--strength", "0.6", "--preserve-color"]}.items():
        assert main([*base, "-o", str(tmp_path / "ov" / name), *extra]) == 0, capsys.readouterr().err
        assert main([*torch_base, "-o", str(tmp_path / "pt" / name), *extra]) == 0
        for photo in ("odd.png", "a.png", "b.png", "big.png"):
            got = pixels_of(tmp_path / "ov" / name / photo)
            expected = pixels_of(tmp_path / "pt" / name / photo)
            assert got.shape == expected.shape and np.abs(got - expected).max() <= 1, (name, photo)
    plain, look = pixels_of(tmp_path / "ov/plain/a.png"), pixels_of(tmp_path / "ov/look/a.png")
    assert np.abs(plain - look).mean() > 5  # strength and colour really changed the picture
    # bf16 through the CLI: close to fp32, and the default dtype works without saying.
    assert main([*base[:4], "bf16", *base[5:], "-o", str(tmp_path / "bf16")]) == 0
    assert np.abs(pixels_of(tmp_path / "bf16/a.png") - plain).mean() < 4
    assert main(["stylize", "--backend", "openvino", "-m", str(light["onnx"]), str(folder / "odd.png"),
                 "-o", str(tmp_path / "onnx")]) == 0


def test_backend_options_are_checked_in_one_line(light, tmp_path, capsys):
    photo = tmp_path / "p.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photo)
    base = ["stylize", "-m", str(light["model"]), str(photo), "-o", str(tmp_path / "o")]
    for extra, message in [(["--backend", "openvino", "--compile"], "--compile: torch backend options"),
                           (["--backend", "openvino", "--dtype", "fp16"], "--dtype fp16 is not an option of the "
                                                                          "openvino backend (takes fp32, bf16)"),
                           (["--backend", "onnxruntime", "--dtype", "bf16"], "its own"),
                           (["--backend", "openvino", "--device", "mps"], "runs on the CPU")]:
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        errors = [line for line in err.splitlines() if not line.startswith("WARNING: preparing")]  # first export
        assert len(errors) == 1 and message in errors[0], err
    with pytest.raises(ConfigError, match="unknown dtype 'int8'"):
        StylizeConfig(model="m", inputs=("x",), output_dir="o", backend="openvino", dtype="int8")
    assert StylizeConfig(model="m", inputs=("x",), output_dir="o").backend == "auto"


def test_auto_picks_as_stated(light, monkeypatch):
    assert choose_backend(light["model"])[0] == "openvino" and choose_backend(light["onnx"])[0] == "openvino"
    assert Stylizer(light["model"]).backend.name == "openvino"
    assert choose_backend(light["model"], torch_options=True)[0] == "torch"
    assert Stylizer(light["model"], channels_last=False).backend.name == "torch"  # a torch-only option
    assert Stylizer(light["model"], dtype="fp16").backend.name == "torch"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr("fastnst.device.accelerator_possible", lambda: True)  # as on a machine with a GPU
    assert choose_backend(light["model"])[0] == "torch" and choose_backend(light["onnx"])[0] == "onnxruntime"


def test_default_dtype_is_bf16_where_openvino_runs_it_natively_and_faster(monkeypatch):
    # (OpenVINO's capabilities, /proc/cpuinfo's flags and vendor, the default): measured on each kind of CPU.
    cases = [({"FP32", "BF16"}, "avx512f avx512_bf16 amx_bf16 amx_tile", "GenuineIntel", "bf16"),  # AMX
             ({"FP32", "BF16"}, "avx512f avx512_bf16", "AuthenticAMD", "bf16"),  # AMD EPYC (Zen 4)
             ({"FP32", "BF16"}, "avx512f avx512_bf16", "GenuineIntel", "fp32"),  # bf16 0.6x fp32 there
             ({"FP32"}, "avx2 fma", "GenuineIntel", "fp32"),
             ({"FP32", "BF16"}, None, None, "bf16")]  # no /proc/cpuinfo: OpenVINO's word alone
    for caps, flags, vendor, expected in cases:
        monkeypatch.setattr(ov_backend, "cpu_capabilities", lambda caps=caps: frozenset(caps))
        monkeypatch.setattr("fastnst.device.cpuinfo", lambda field, info={"flags": flags, "vendor_id": vendor}:
                            info.get(field))
        assert ov_backend.default_dtype() == expected, (caps, flags, vendor)


def test_info_backends_lists_runtimes_and_the_auto_pick(capsys):
    assert main(["info", "--backends"]) == 0
    out = capsys.readouterr().out
    for name in ("torch", "onnxruntime", "openvino"):
        assert f"  {name} " in out
    assert "--backend auto picks openvino for a model file" in out
    assert main(["info", "--backends", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["auto"]["model file"]["backend"] == "openvino"
    assert summary["backends"]["openvino"]["default_dtype"] == ov_backend.default_dtype()
    assert summary["backends"]["torch"]["installed"] and summary["device"] == "cpu"
    assert main(["info"]) == 2 and "--backends" in capsys.readouterr().err


def test_everything_works_without_openvino(light, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    assert choose_backend(light["model"])[0] == "torch" and choose_backend(light["onnx"])[0] == "onnxruntime"
    assert Stylizer(light["model"]).backend.name == "torch"
    assert Stylizer(light["onnx"]).backend.name == "onnxruntime"
    photo = tmp_path / "p.png"
    Image.fromarray(np.full((9, 11, 3), 128, np.uint8)).save(photo)
    assert main(["stylize", "-m", str(light["model"]), str(photo), "-o", str(tmp_path / "auto")]) == 0
    capsys.readouterr()
    assert main(["stylize", "--backend", "openvino", "-m", str(light["model"]), str(photo),
                 "-o", str(tmp_path / "ov")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install fastnst[openvino]" in err
    assert main(["info", "--backends"]) == 0
    out = capsys.readouterr().out
    assert "pip install fastnst[openvino]" in out and "--backend auto picks torch for a model file" in out


def test_streams_run_photos_as_openvino_throughput_streams(light, tmp_path, monkeypatch):
    from fastnst.stylize import StylizeConfig, Stylizer, stylize_files

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(4)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, size=(24 + 4 * i, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    monkeypatch.setattr(ov_backend, "cpu_count", lambda: 3)
    stylizer = Stylizer(light["model"], backend="openvino", dtype="fp32")
    assert stylizer.backend.default_streams == 3  # one stream per core on the CPU
    assert Stylizer(light["net"], backend="torch").backend.default_streams == 1
    outputs = {}
    for streams in (1, 2):
        out = tmp_path / str(streams)
        config = StylizeConfig(model=str(light["model"]), inputs=(str(folder),), output_dir=str(out), streams=streams)
        told = []
        real_set_streams = stylizer.backend.set_streams
        monkeypatch.setattr(stylizer.backend, "set_streams",
                            lambda n, told=told, real=real_set_streams: told.append(n) or real(n))
        assert not stylize_files(config, stylizer).failed
        assert told == [streams, 1]  # the run's streams, then back to one photo at a time
        outputs[streams] = {p.name: pixels_of(p) for p in sorted((tmp_path / str(streams)).rglob("*.png"))}
    assert outputs[1].keys() == outputs[2].keys() and len(outputs[1]) == 4
    for name, pixels in outputs[1].items():
        assert np.abs(pixels - outputs[2][name]).max() <= 1
        expected = to_uint8_image(light["net"], folder / name)
        assert np.abs(pixels - expected).max() <= 1


def to_uint8_image(net, path) -> np.ndarray:
    x = torch.from_numpy(pixels_of(path)).permute(2, 0, 1).float()[None] / 255
    with torch.no_grad():
        return (net(x).clamp(0, 1)[0].permute(1, 2, 0) * 255).round().int().numpy()
