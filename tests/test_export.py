"""ONNX export: dynamic sizes, uint8 and fp16 graphs, metadata, verification, bad input, the CLI.

Exporting takes seconds, so each kind of graph is exported once per module
(``exports``) and every test reads the files. The ONNX Runtime backend, which
runs these files, is tested in ``test_backend_onnxruntime.py``.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, numpy_helper
from torch import nn

import fastnst.export as export
from fastnst import __version__
from fastnst.checkpoint import save_model
from fastnst.cli import main
from fastnst.errors import ConfigError, FileError, ModelFileError
from fastnst.export import ExportConfig, VerificationError, export_onnx, verify_onnx
from fastnst.models.transformer import SPECS, TransformerNet
from fastnst.onnx_format import info_from_metadata


def light_model(seed: int = 0) -> TransformerNet:
    """A light network with random InstanceNorm scales and shifts, so every norm differs from the identity."""
    torch.manual_seed(seed)
    net = TransformerNet(SPECS["light"]).eval()
    for module in net.modules():
        if isinstance(module, nn.InstanceNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.2, 0.2)
    return net


_EXPORTS: dict = {}


def shared_exports(tmp_path_factory) -> dict:
    """The light network, its model file, and its float / uint8 / fp16 exports (``ExportResult``s).

    Made once per test session: ``test_backend_onnxruntime.py`` runs the same files.
    """
    if not _EXPORTS:
        folder = tmp_path_factory.mktemp("export")
        net = light_model()
        model = save_model(folder / "light.safetensors", net, styles=["test-style"], config={"steps": 3})
        results = {}
        for key, io, fp16 in (("float", "float", False), ("uint8", "uint8", False), ("fp16", "float", True)):
            config = ExportConfig(model=model, output=folder / f"light-{key}.onnx", io=io, fp16=fp16)
            results[key] = export_onnx(config)
        _EXPORTS.update(net=net, model=model, folder=folder, **results)
    return _EXPORTS


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return shared_exports(tmp_path_factory)


def session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def torch_output(net: TransformerNet, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return net(x).numpy()


# -- the float graph ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 3, 257, 383), (4, 3, 512, 512), (1, 3, 1080, 1920),
                                   (1, 3, 1, 1), (2, 3, 5, 7), (3, 3, 33, 18)])
def test_one_float_export_runs_at_any_batch_and_size(exports, shape):
    torch.manual_seed(1)
    x = torch.rand(*shape)
    got = session(exports["float"].path).run(["styled"], {"image": x.numpy()})[0]
    assert got.shape == shape and got.dtype == np.float32
    np.testing.assert_allclose(got, torch_output(exports["net"], x), atol=1e-4, rtol=0)


def test_the_float_graph_is_compact_and_declares_dynamic_dims(exports):
    result = exports["float"]
    model = onnx.load(str(result.path))
    ops = result.op_counts
    assert sum(ops.values()) == result.nodes == len(model.graph.node)
    assert ops["InstanceNormalization"] == 3 + 2 * SPECS["light"].num_residual + 2
    assert ops["Conv"] == ops["InstanceNormalization"] + 1
    # One Pad per conv plus the edge pad, and only ~20 nodes of size arithmetic for the pad and crop in all
    # (the TorchScript exporter wraps every reflection pad in shape arithmetic: 250 extra nodes here).
    assert ops["Pad"] == ops["Conv"] + 1
    layers = sum(ops[op] for op in ("Pad", "Conv", "InstanceNormalization", "Relu", "Resize"))
    assert result.nodes - layers - SPECS["light"].num_residual <= 30
    assert "Constant" not in ops and "ConstantOfShape" not in ops
    for value, dims in ((model.graph.input[0], ["batch", 3, "height", "width"]),
                        (model.graph.output[0], ["batch", 3, "height", "width"])):
        assert value.type.tensor_type.elem_type == TensorProto.FLOAT
        assert [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim] == dims
    # The exporter's debug annotations (stack traces with local paths) are gone.
    assert b"stack_trace" not in result.path.read_bytes()
    assert result.size_bytes == result.path.stat().st_size


def test_metadata_describes_the_file(exports):
    model = onnx.load(str(exports["float"].path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["format"] == "fastnst-onnx" and meta["fastnst_version"] == __version__
    assert json.loads(meta["styles"]) == ["test-style"]
    assert json.loads(meta["spec"]) == SPECS["light"].to_dict()
    assert meta["io"] == "float" and meta["value_range"] == "0-1" and meta["layout"] == "NCHW"
    assert meta["precision"] == "fp32"
    assert int(meta["opset"]) == export.DEFAULT_OPSET == next(o.version for o in model.opset_import if o.domain == "")
    assert json.loads(meta["export_config"])["io"] == "float"
    info = info_from_metadata(meta)
    assert info.spec == SPECS["light"] and info.styles == ("test-style",) and info.config == {"steps": 3}
    uint8_meta = {p.key: p.value for p in onnx.load(str(exports["uint8"].path)).metadata_props}
    assert uint8_meta["io"] == "uint8" and uint8_meta["value_range"] == "0-255" and uint8_meta["layout"] == "NHWC"


def test_export_result_reports_verification_at_two_sizes(exports):
    result = exports["float"]
    assert len(result.checks) == 2 and len({c.shape for c in result.checks}) == 2
    assert {c.shape[0] for c in result.checks} == {1, 2}
    assert all(0 <= c.max_abs <= result.tolerance == 1e-3 for c in result.checks)


# -- uint8 and fp16 ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 37, 53), (2, 64, 48), (1, 3, 2)])
def test_uint8_graph_takes_and_gives_pixels(exports, shape):
    batch, height, width = shape
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, size=(batch, height, width, 3), dtype=np.uint8)
    got = session(exports["uint8"].path).run(["styled"], {"image": pixels})[0]
    assert got.dtype == np.uint8 and got.shape == pixels.shape
    # Independent: 0–1 NCHW through torch, then clamp, scale and round to pixels.
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    expected = np.clip(torch_output(exports["net"], x), 0, 1).transpose(0, 2, 3, 1) * 255
    diff = np.abs(got.astype(np.float64) - expected)
    assert diff.max() <= 0.5 + 1e-3 * 255
    assert np.mean(np.abs(got.astype(int) - np.round(expected)) > 0) < 0.01  # rounding ties only
    model = onnx.load(str(exports["uint8"].path))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8 and dims == ["batch", "height",
                                                                                             "width", 3]


def test_fp16_graph_is_half_size_with_float32_instance_norms(exports):
    fp16, fp32 = exports["fp16"], exports["float"]
    assert fp16.size_bytes < 0.55 * fp32.size_bytes
    model = onnx.load(str(fp16.path))
    types = {t.name: t.data_type for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    norms = [n for n in model.graph.node if n.op_type == "InstanceNormalization"]
    assert all(types[n.input[1]] == TensorProto.FLOAT16 for n in convs)
    assert norms and all(types[n.input[1]] == TensorProto.FLOAT for n in norms)
    # I/O stays float32, so a consumer's code does not change.
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    torch.manual_seed(3)
    x = torch.rand(2, 3, 45, 61)
    got = session(fp16.path).run(["styled"], {"image": x.numpy()})[0]
    diff = np.abs(got - torch_output(exports["net"], x)).max()
    assert 0 < diff <= export.FP16_TOLERANCE  # really half precision, and within the stated tolerance
    assert fp16.tolerance == export.FP16_TOLERANCE and all(c.max_abs <= fp16.tolerance for c in fp16.checks)


# -- verification ---------------------------------------------------------------------------------

def tampered(path, name: str = "decoder.2.conv.bias", delta: float = 0.01) -> onnx.ModelProto:
    """The exported model with ``delta`` added to one initializer."""
    model = onnx.load(str(path))
    (tensor,) = [t for t in model.graph.initializer if t.name == name]
    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) + np.float32(delta), name))
    return model


def test_verification_catches_a_wrong_graph(exports):
    with pytest.raises(VerificationError, match=r"differs from PyTorch by 0\.01 at 1x3x67x45 \(tolerance 0\.001"):
        verify_onnx(tampered(exports["float"].path), exports["net"])
    # ... and a graph onnx.checker rejects.
    broken = onnx.load(str(exports["float"].path))
    broken.graph.node[-1].input[0] = "no_such_tensor"
    with pytest.raises(VerificationError, match="onnx.checker rejects"):
        verify_onnx(broken, exports["net"])
    # The untouched file passes, from its path as well.
    assert len(verify_onnx(exports["float"].path, exports["net"])) == 2


def test_failed_verification_writes_nothing_and_no_verify_writes(exports, monkeypatch, capsys, tmp_path):
    # The slow export step hands back a wrong graph; the rest of the command runs for real.
    monkeypatch.setattr(export, "to_onnx", lambda *a, **k: tampered(exports["float"].path))
    out = tmp_path / "wrong.onnx"
    assert main(["export", str(exports["model"]), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "differs from PyTorch by 0.01" in err and "tolerance 0.001" in err
    assert list(tmp_path.iterdir()) == []
    assert main(["export", str(exports["model"]), "-o", str(out), "--no-verify"]) == 0
    assert "not verified" in capsys.readouterr().out and out.is_file()


# -- the command line and bad input -------------------------------------------------------------

def test_cli_export_uint8_fp16_at_another_opset(exports, capsys, tmp_path):
    out = tmp_path / "sub" / "style.onnx"
    assert main(["export", str(exports["model"]), "-o", str(out), "--io", "uint8", "--fp16", "--opset", "21"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "verified with onnxruntime" in printed and "0-255" in printed
    model = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    assert (meta["io"], meta["precision"], meta["opset"]) == ("uint8", "fp16", "21")
    assert next(o.version for o in model.opset_import if o.domain == "") == 21
    pixels = np.random.default_rng(4).integers(0, 256, size=(2, 21, 30, 3), dtype=np.uint8)
    got = session(out).run(["styled"], {"image": pixels})[0]
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    expected = np.clip(torch_output(exports["net"], x), 0, 1).transpose(0, 2, 3, 1) * 255
    assert got.dtype == np.uint8 and np.abs(got - expected).max() <= export.verify_tolerance("uint8", True)


def test_help_lists_the_options(capsys):
    assert main(["export", "--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--io", "--fp16", "--opset", "--no-verify", "--output"):
        assert option in text


@pytest.mark.parametrize("opset", [17, 99])
def test_an_opset_onnx_runtime_cannot_run_is_a_usage_error(exports, opset, capsys, tmp_path):
    assert main(["export", str(exports["model"]), "-o", str(tmp_path / "x.onnx"), "--opset", str(opset)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--opset {opset}: choose 18–" in err and "onnxruntime" in err
    top = int(err.split("runs up to ")[1].rstrip(")"))
    model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []), ir_version=10,
                                   opset_imports=[onnx.helper.make_opsetid("", top + 1)])
    with pytest.raises(Exception, match="opset"):  # the reported limit is ONNX Runtime's own
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_bad_inputs_are_one_line_each(exports, capsys, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    other = tmp_path / "classifier.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    cases = [
        ([str(text), "-o", str(tmp_path / "a.onnx")], 1, str(text)),
        ([str(other), "-o", str(tmp_path / "a.onnx")], 1, "not a pytorch/examples fast_neural_style model"),
        ([str(exports["float"].path), "-o", str(tmp_path / "b.onnx")], 1, "light-float.onnx"),
        ([str(tmp_path / "missing.safetensors"), "-o", str(tmp_path / "c.onnx")], 1, "no such model file"),
        ([str(exports["model"]), "-o", str(blocker / "d.onnx")], 1, "is a file, not a folder"),
        ([str(exports["model"]), "-o", str(tmp_path)], 2, "must end in .onnx"),
        ([str(exports["model"]), "-o", str(tmp_path / "e.pt")], 2, "must end in .onnx"),
    ]
    for argv, code, needle in cases:
        assert main(["export", *argv]) == code, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("fastnst export: error:") and needle in err and len(err.splitlines()) == 1, err
    assert main(["export", str(exports["model"]), "-o", "x.onnx", "--io", "float16"]) == 2
    assert not any(p.suffix == ".onnx" for p in tmp_path.rglob("*"))


def test_config_checks_and_api_errors(exports, tmp_path):
    with pytest.raises(ConfigError, match="unknown --io"):
        ExportConfig(model="m.safetensors", output="m.onnx", io="rgb")
    with pytest.raises(ConfigError, match="would overwrite the model"):
        ExportConfig(model=tmp_path / "m.onnx", output=tmp_path / "m.onnx")
    with pytest.raises(ModelFileError, match="not a readable"):
        export_onnx(ExportConfig(model=exports["float"].path, output=tmp_path / "x.onnx"))
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(FileError, match="is a folder"):
        export_onnx(ExportConfig(model=exports["model"], output=tmp_path / "dir.onnx"))
