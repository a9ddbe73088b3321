"""Model files: round trip, metadata, fp16, atomic writes, and every way a file can be bad."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from fastnst.checkpoint import FORMAT_VERSION, load_model, read_info, save_model
from fastnst.cli import main
from fastnst.convert import ConvertConfig, convert_model
from fastnst.errors import ConfigError, ImageError, ModelFileError
from fastnst.files import TEMP_MARKER
from fastnst.images import decode_thumbnail, encode_thumbnail, to_uint8
from fastnst.models.transformer import SPECS, TransformerNet

from conftest import gradient_image, psnr


def test_round_trip_rebuilds_the_network_from_the_file_alone(model_file, light_net):
    model, info = load_model(model_file)
    assert info.spec == SPECS["light"] and info.styles == ("test-style",) and info.config == {"steps": 3}
    assert info.format_version == FORMAT_VERSION
    x = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(model(x), light_net(x), rtol=0, atol=0)
    assert not model.training


def test_half_precision_file_is_half_the_size_and_loads_as_fp32(tmp_path, light_net):
    full = save_model(tmp_path / "full.safetensors", light_net)
    half = save_model(tmp_path / "half.safetensors", light_net, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    model, _ = load_model(half)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), light_net(x), rtol=0, atol=2e-2)


def test_metadata_is_readable_without_the_network(model_file):
    assert read_info(model_file).styles == ("test-style",)


def test_model_files_get_ordinary_permissions(model_file):
    umask = os.umask(0)
    os.umask(umask)
    assert model_file.stat().st_mode & 0o777 == 0o666 & ~umask  # readable by others, like any new file


def test_writes_are_atomic_and_leave_nothing_behind_on_failure(tmp_path, light_net, monkeypatch):
    path = save_model(tmp_path / "m.safetensors", light_net, styles=["first"])
    original = path.read_bytes()

    def broken(self, data):  # the disk fills up half-way through the write
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", broken)
    with pytest.raises(OSError, match="disk full"):
        save_model(path, light_net, styles=["second"])
    assert path.read_bytes() == original
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_MARKER)]


def test_output_must_be_safetensors(tmp_path, light_net):
    with pytest.raises(ConfigError, match=r"\.safetensors"):
        save_model(tmp_path / "m.pth", light_net)


class _Exploit:
    """A pickle payload that creates a file when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.conv2d.weight": _Exploit(marker)}, path)
    with pytest.raises(ModelFileError) as err:
        load_model(path)
    assert "refused" in str(err.value) and "evil.pth" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()
    # The payload is real: an unsafe load in a separate process does create the file.
    code = f"import torch; torch.load({str(path)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert marker.exists()


def test_plain_pickle_without_torch_is_also_refused(tmp_path):
    marker = tmp_path / "pwned2"
    path = tmp_path / "evil.model"
    path.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(ModelFileError, match="evil.model: cannot load"):
        load_model(path)
    assert not marker.exists()


def test_truncated_file_is_one_line_naming_it(model_file):
    data = model_file.read_bytes()
    model_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError) as err:
        load_model(model_file)
    message = str(err.value)
    assert message.startswith(str(model_file)) and "\n" not in message


def test_wrong_architecture_names_the_mismatch(tmp_path, light_net):
    path = save_model(tmp_path / "m.safetensors", light_net)
    # Same tensors, but metadata claiming the default (wider) network.
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    meta["spec"] = json.dumps({"channels": [32, 64, 128], "num_residual": 3})
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(ModelFileError, match=r"has shape \(16, 3, 9, 9\), the network needs \(32, 3, 9, 9\)"):
        load_model(path)
    del tensors["residual.0.conv1.weight"]
    meta["spec"] = json.dumps(SPECS["light"].to_dict())
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(ModelFileError, match="missing 1 tensor.*residual.0.conv1.weight"):
        load_model(path)


def test_foreign_and_future_files(tmp_path):
    foreign = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ModelFileError, match="not a fastnst model"):
        load_model(foreign)
    future = tmp_path / "future.safetensors"
    save_model(future, TransformerNet(SPECS["light"]))
    from safetensors import safe_open

    with safe_open(str(future), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(future), metadata={**meta, "format_version": str(FORMAT_VERSION + 1)})
    with pytest.raises(ModelFileError, match="newer than this fastnst"):
        load_model(future)
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "absent.safetensors")


def _metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()


def test_a_repeated_nested_record_is_written_once_and_read_back_whole(tmp_path, light_net):
    # As in a style trained in joint stages: every part of a merged start carries the same earlier start.
    start = {"steps_done": 300, "style": ["a.jpg"], "notes": "x" * 3000}
    stage = {"init_record": {"parts": [{"style": [f"{n}.jpg"], "init_record": start} for n in "abcde"]}}
    config = {"steps_done": 5, "init_record": {"parts": [{"style": [f"{n}.jpg"], "init_record": stage}
                                                         for n in "abcde"]}}
    path = save_model(tmp_path / "deep.safetensors", light_net, config=config)
    assert read_info(path).config == config and load_model(path)[1].config == config
    meta = _metadata(path)
    plain = len(json.dumps(config))
    assert plain > 25 * 3000 and len(meta["config"]) + len(meta["records"]) < 2 * 3000, "each record written once"
    assert meta["format_version"] == str(FORMAT_VERSION)
    small = save_model(tmp_path / "small.safetensors", light_net, config={"steps_done": 5})
    assert "records" not in _metadata(small)  # nothing repeated: the config as it always was


def test_a_version_1_file_reads_and_bad_record_references_are_refused(tmp_path, light_net):
    path = save_model(tmp_path / "m.safetensors", light_net, config={"steps_done": 2})
    tensors = load_model(path)[0].state_dict()
    meta = _metadata(path)
    old = tmp_path / "v1.safetensors"
    save_file(tensors, str(old), metadata={**meta, "format_version": "1"})
    assert read_info(old).config == {"steps_done": 2} and read_info(old).format_version == 1
    for records, config in [({}, {"init_record": {"$record": "gone"}}),  # missing
                            ({"r": {"next": {"$record": "r"}}}, {"init_record": {"$record": "r"}}),  # circular
                            ({"r": [1, 2]}, {"init_record": {"$record": "r"}})]:  # not a record
        bad = tmp_path / "bad.safetensors"
        save_file(tensors, str(bad), metadata={**meta, "config": json.dumps(config), "records": json.dumps(records)})
        with pytest.raises(ModelFileError, match="corrupt fastnst metadata"):
            read_info(bad)


# Run in a child with a timeout: were any step to walk the history as a tree, it would not finish.
_HISTORY_CHECK = r"""
import json, sys
from pathlib import Path
from safetensors import safe_open
from fastnst.checkpoint import load_model, read_info, save_model
from fastnst.cli import main
from fastnst.convert import ConvertConfig, convert_model
from fastnst.onnx_format import info_from_metadata, onnx_metadata
from fastnst.records import dumps_record, loads_record

folder, crafted = Path(sys.argv[1]), Path(sys.argv[2])
net, _ = load_model(crafted)

def bottom(record: dict, read: bool) -> dict:
    for _ in range(40):
        assert record["a"] is record["b"] if read else record["a"] == record["b"]  # read: one object per record
        record = record["a"]
    return record


# A crafted nest: record i holds record i+1 twice, forty deep (2^40 copies as a tree).
assert bottom(read_info(crafted).config["init_record"], read=True) == {"x": "y" * 100}
assert main(["info", str(crafted)]) == 0 and main(["info", "--json", str(crafted)]) == 0
again = convert_model(ConvertConfig(source=str(crafted), output=str(folder / "again.safetensors")))
assert bottom(read_info(again).config["init_record"], read=False) == {"x": "y" * 100}  # small ones written inline

# Twelve joint stages as bundle_style builds them: each merge holds five styles taken out of one joint run
# whose --init was the merge before (5^12 copies of the first stage as a tree).
merged = {"parts": [{"steps_done": 1, "style": [f"{n}.jpg"]} for n in "abcde"], "half": True}
for stage in range(12):
    joint = {"steps_done": 600, "stage": stage, "notes": "x" * 3000, "init_record": merged}
    merged = {"parts": [{**joint, "selected_styles": [n]} for n in "abcde"], "half": True}
path = save_model(folder / "joint.safetensors", net, config=merged)
with safe_open(str(path), "pt") as f:
    meta = f.metadata()
assert len(meta["config"]) + len(meta["records"]) < 12 * 6 * 3200, "each record written once"
for config in (read_info(path).config, loads_record(dumps_record(merged)),
               info_from_metadata(onnx_metadata(read_info(path), "float", False, 17)).config):
    record, stages = config, []
    while "init_record" in record["parts"][2]:  # the lineage of the third style, stage by stage
        record = record["parts"][2]
        assert record["selected_styles"] == ["c"] and record["notes"] == "x" * 3000
        stages.append(record["stage"])
        record = record["init_record"]
    assert stages == list(range(11, -1, -1)) and record["parts"][2] == {"steps_done": 1, "style": ["c.jpg"]}
assert main(["info", "--json", str(path)]) == 0
print("ok")
"""


def test_a_history_repeated_at_every_level_costs_its_file_size_not_its_tree(tmp_path, light_net):
    path = save_model(tmp_path / "m.safetensors", light_net, config={"steps_done": 2})
    tensors, meta = load_model(path)[0].state_dict(), _metadata(path)
    laughs = {f"r{i}": {"a": {"$record": f"r{i + 1}"}, "b": {"$record": f"r{i + 1}"}} for i in range(40)}
    laughs["r40"] = {"x": "y" * 100}
    crafted = tmp_path / "crafted.safetensors"
    save_file(tensors, str(crafted), metadata={**meta, "config": json.dumps({"init_record": {"$record": "r0"}}),
                                               "records": json.dumps(laughs)})
    done = subprocess.run([sys.executable, "-c", _HISTORY_CHECK, str(tmp_path), str(crafted)], capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0 and done.stdout.rstrip().endswith("ok"), done.stderr[-3000:]


def test_style_thumbnails_travel_in_the_file_and_through_convert(tmp_path, light_net, capsys):
    style = tmp_path / "painting.png"
    gradient_image(300, 200, seed=3).save(style)
    thumbnail = encode_thumbnail(style)
    path = save_model(tmp_path / "t.safetensors", light_net, styles=["painting"], thumbnails=(thumbnail,))
    assert read_info(path).thumbnails == (thumbnail,)
    image = decode_thumbnail(thumbnail)
    assert image.shape == (3, 85, 128)  # long side 128, aspect kept
    expected = np.asarray(Image.open(style).resize((128, 85), Image.Resampling.LANCZOS))
    assert psnr(to_uint8(image).permute(1, 2, 0).numpy(), expected) > 30
    half = convert_model(ConvertConfig(source=str(path), output=str(tmp_path / "h.safetensors"), half=True))
    assert read_info(half).thumbnails == (thumbnail,)
    assert main(["info", "--json", str(half)]) == 0
    assert json.loads(capsys.readouterr().out)["thumbnails"] == [[128, 85]]
    assert read_info(save_model(tmp_path / "none.safetensors", light_net)).thumbnails == ()
    with pytest.raises(ConfigError, match="2 thumbnail"):
        save_model(tmp_path / "two.safetensors", light_net, thumbnails=(thumbnail, thumbnail))
    with pytest.raises(ImageError, match="t.safetensors: thumbnail 0: corrupt thumbnail"):
        decode_thumbnail("bm90IGEgSlBFRw==", "t.safetensors: thumbnail 0")
