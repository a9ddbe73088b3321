"""The ONNX Runtime backend: parity with the torch backend, tiling with fixed statistics, bad input, real weights."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from fastnst.backends import Backend, backend_class, onnx_graph
from fastnst.backends.onnxruntime import BackendInputError, OnnxRuntimeBackend, provider_device, providers_for
from fastnst.backends.torch import TorchBackend
from fastnst.checkpoint import load_model
from fastnst.cli import main
from fastnst.errors import ConfigError, ModelFileError
from fastnst.export import FP16_TOLERANCE, ExportConfig, export_onnx, verify_tolerance
from fastnst.images import load_image

from conftest import SHARED, psnr, requires_shared


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    from test_export import shared_exports  # the same files, exported once per session

    return shared_exports(tmp_path_factory)


@pytest.fixture(scope="module")
def torch_backend(exports):
    return TorchBackend(exports["net"], "cpu")


def backend(exports, key: str) -> OnnxRuntimeBackend:
    return backend_class("onnxruntime").from_file(exports[key].path, device="cpu")


def quantized(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to 8-bit levels, so a uint8 graph sees exactly what the torch backend sees."""
    return (x * 255).round() / 255


def test_registered_and_implements_the_protocol(exports):
    b = backend(exports, "float")
    assert isinstance(b, OnnxRuntimeBackend) and isinstance(b, Backend) and b.name == "onnxruntime"
    assert b.info.spec == exports["net"].spec and b.info.styles == ("test-style",) and b.info.source == "onnx"
    assert b.info.config == {"steps": 3} and b.providers == ["CPUExecutionProvider"]


@pytest.mark.parametrize("key", ["float", "uint8", "fp16"])
@pytest.mark.parametrize("shape", [(1, 3, 31, 45), (3, 3, 16, 9)])
def test_run_matches_the_torch_backend_whatever_the_graph_io(exports, torch_backend, key, shape):
    torch.manual_seed(5)
    x = quantized(torch.rand(*shape))
    got = backend(exports, key).run(x)
    expected = torch_backend.run(x)
    assert got.dtype == torch.float32 and got.shape == x.shape and got.device.type == "cpu"
    if key == "uint8":  # 8-bit output of the clamped image
        expected, tolerance = expected.clamp(0, 1), verify_tolerance("uint8", False) / 255
    else:
        tolerance = FP16_TOLERANCE if key == "fp16" else 1e-4
    assert (got - expected).abs().max().item() <= tolerance


@pytest.mark.parametrize("key", ["float", "uint8", "fp16"])
def test_tiling_with_fixed_statistics_matches_the_torch_backend(exports, torch_backend, key):
    b = backend(exports, key)
    torch.manual_seed(6)
    whole = quantized(torch.rand(1, 3, 40, 52))
    stats, expected_stats = b.norm_stats(whole), torch_backend.norm_stats(whole)
    assert len(stats) == len(expected_stats) == 11
    stat_tolerance = 2e-2 if key == "fp16" else 1e-4  # fp16 convs before each norm
    for (mean, var), (expected_mean, expected_var) in zip(stats, expected_stats):
        assert mean.shape == expected_mean.shape and var.dtype == torch.float32
        torch.testing.assert_close(mean, expected_mean, rtol=stat_tolerance, atol=stat_tolerance)
        torch.testing.assert_close(var, expected_var, rtol=stat_tolerance, atol=stat_tolerance)
    # Tiles (a batch of 2, statistics of batch 1) normalised with the whole image's statistics.
    tiles = torch.stack([whole[0, :, :24, :28], whole[0, :, 16:, 24:]])
    got = b.run(tiles, norm_stats=expected_stats)
    expected = torch_backend.run(tiles, norm_stats=expected_stats)
    tolerance = {"float": 1e-4, "uint8": verify_tolerance("uint8", False) / 255, "fp16": FP16_TOLERANCE}[key]
    assert (got - (expected.clamp(0, 1) if key == "uint8" else expected)).abs().max().item() <= tolerance
    # The fixed statistics really replace the tiles' own: without them the result differs.
    assert (b.run(tiles) - got).abs().max().item() > 10 * tolerance


def test_statistics_of_the_image_itself_reproduce_the_plain_run(exports):
    b = backend(exports, "float")
    x = torch.rand(2, 3, 21, 34)
    torch.testing.assert_close(b.run(x, norm_stats=b.norm_stats(x)), b.run(x), rtol=1e-4, atol=1e-4)


def test_the_exported_file_stays_image_in_image_out(exports):
    b = backend(exports, "float")
    b.norm_stats(torch.rand(1, 3, 16, 16))
    model = onnx.load(str(exports["float"].path))
    assert [i.name for i in model.graph.input] == ["image"] and [o.name for o in model.graph.output] == ["styled"]
    stats, fixed = onnx_graph.stats_graph(model), onnx_graph.fixed_stats_graph(model)
    assert len(stats.graph.output) == 22 and len(fixed.graph.input) == 1 + 22
    assert not any(n.op_type == "InstanceNormalization" for n in fixed.graph.node)


def test_wrong_input_gives_a_clear_error_not_an_ort_trace(exports):
    b = backend(exports, "float")
    cases = [
        (torch.rand(3, 8, 8), r"\(B, 3, H, W\).*got shape \(3, 8, 8\)"),
        (torch.rand(1, 4, 8, 8), r"got shape \(1, 4, 8, 8\)"),
        (torch.randint(0, 255, (1, 3, 8, 8), dtype=torch.uint8), r"float values in 0–1, got torch.uint8"),
        ([[0.5]], "got list"),
        (torch.rand(0, 3, 8, 8), "empty batch"),
    ]
    for batch, message in cases:
        with pytest.raises(BackendInputError, match=message) as info:
            b.run(batch)
        assert "ONNXRuntimeError" not in str(info.value) and len(str(info.value).splitlines()) == 1
    # numpy arrays and float64 are fine.
    x = np.random.default_rng(0).random((1, 3, 9, 11))
    torch.testing.assert_close(torch.from_numpy(b.run(x)), b.run(torch.from_numpy(x).float()))
    stats = b.norm_stats(torch.rand(1, 3, 16, 16))
    with pytest.raises(BackendInputError, match="norm_stats has 10 entries, the network has 11"):
        b.run(torch.rand(1, 3, 16, 16), norm_stats=stats[:-1])
    with pytest.raises(BackendInputError, match=r"norm_stats\[0\] mean has shape \(3, 16\)"):
        b.run(torch.rand(2, 3, 16, 16), norm_stats=[(torch.zeros(3, 16), v) for _, v in stats])


def test_bad_files_and_devices(exports, tmp_path, monkeypatch):
    with pytest.raises(ModelFileError, match="no such ONNX file"):
        OnnxRuntimeBackend.from_file(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07 this is not protobuf \xff\xff")
    with pytest.raises(ModelFileError, match="not a readable ONNX file"):
        OnnxRuntimeBackend.from_file(junk)
    foreign = tmp_path / "foreign.onnx"
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["image"], ["styled"])], "g",
                                   [onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, None)],
                                   [onnx.helper.make_tensor_value_info("styled", onnx.TensorProto.FLOAT, None)])
    onnx.save(onnx.helper.make_model(graph, ir_version=10), foreign)
    with pytest.raises(ModelFileError, match="without fastnst metadata"):
        OnnxRuntimeBackend.from_file(foreign)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert providers_for("auto") == providers_for("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(ConfigError, match="no CUDA execution provider"):
        OnnxRuntimeBackend.from_file(exports["float"].path, device="cuda")
    with pytest.raises(ConfigError, match="MPS"):
        providers_for("mps")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert providers_for("auto") == providers_for("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    # A torchrun rank's "cuda:1" must run on GPU 1, and the engine must size its tiles by GPU 1's memory.
    pinned = providers_for("cuda:1")
    assert pinned == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert [provider_device(p) for p in (pinned[0], "CUDAExecutionProvider", "CPUExecutionProvider")] == \
        ["cuda:1", "cuda", "cpu"]
    for bad in ("cuda:first", "cpu:0", "tpu"):
        with pytest.raises(ConfigError, match=f"unknown device '{bad}'"):
            providers_for(bad)


def test_stylize_through_the_cli_with_the_onnxruntime_backend(exports, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    pixels = np.random.default_rng(7).integers(0, 256, size=(37, 50, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(photo)
    out = tmp_path / "out"
    assert main(["stylize", "--backend", "onnxruntime", "-m", str(exports["float"].path), str(photo),
                 "-o", str(out)]) == 0, capsys.readouterr().err
    got = np.asarray(Image.open(out / "photo.png").convert("RGB")).astype(int)
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        expected = (exports["net"](x)[0].clamp(0, 1) * 255).round().permute(1, 2, 0).numpy()
    assert got.shape == pixels.shape and np.abs(got - expected).max() <= 1


def test_tiled_stylize_with_onnxruntime_matches_the_torch_backend(exports, tmp_path, monkeypatch):
    photo = tmp_path / "big.png"
    pixels = np.random.default_rng(8).integers(0, 256, size=(150, 230, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(photo)
    calls = []
    real = OnnxRuntimeBackend.norm_stats
    monkeypatch.setattr(OnnxRuntimeBackend, "norm_stats", lambda self, batch: calls.append(1) or real(self, batch))
    results = {}
    for name, model in (("onnxruntime", exports["float"].path), ("torch", exports["model"])):
        out = tmp_path / name
        # 150×230 is over 104² pixels: tiles, each normalised with statistics of the downscaled photo
        # (the default for onnxruntime, which cannot measure exact ones; torch is told to match).
        assert main(["stylize", "--backend", name, "-m", str(model), str(photo), "-o", str(out),
                     "--tile-size", "104", "--tile-stats", "thumbnail"]) == 0
        results[name] = np.asarray(Image.open(out / "big.png").convert("RGB")).astype(int)
    assert calls, "the engine did not tile"
    assert results["onnxruntime"].shape == pixels.shape
    assert np.abs(results["onnxruntime"] - results["torch"]).max() <= 1


@requires_shared
def test_rain_princess_through_onnx_runtime_matches_pytorch_and_the_official_output(tmp_path):
    source = SHARED / "models" / "rain_princess.pth"
    result = export_onnx(ExportConfig(model=source, output=tmp_path / "rain_princess.onnx"))
    assert all(c.max_abs <= 1e-3 for c in result.checks)
    image = load_image(SHARED / "content" / "amber.jpg")[None]
    net, info = load_model(source)
    onnx_out = OnnxRuntimeBackend.from_file(result.path, device="cpu").run(image)[0]
    torch_out = TorchBackend(net, "cpu", info).run(image)[0]

    def pixels(t):
        return (t.clamp(0, 1) * 255).round().permute(1, 2, 0).numpy()

    assert np.abs(pixels(onnx_out) - pixels(torch_out)).max() <= 1
    reference = np.asarray(Image.open(SHARED / "reference" / "amber-rain-princess.jpg").convert("RGB"))
    onnx_psnr, torch_psnr = psnr(pixels(onnx_out), reference), psnr(pixels(torch_out), reference)
    assert onnx_psnr >= 27.5 and abs(onnx_psnr - torch_psnr) < 0.01
