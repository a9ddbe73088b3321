"""A messy photo library, a flaky disk and hostile files: nothing lost, nothing run, one line per problem.

Every case is built in the test's folder. For each the run must end with the right exit
code, no traceback, one line naming the file and the problem, no temporary file left, every
good photo written at its size, and no input changed (checksums before and after).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastnst.checkpoint import ModelInfo, load_model, read_info, save_model, torch_is_safe_for_pickles
from fastnst.cli import main
from fastnst.errors import ModelFileError
from fastnst.files import TEMP_MARKER, atomic_path, lock_folder
from fastnst.images import open_image
from fastnst.models.transformer import SPECS, TransformerNet
from fastnst.stylize.tiling import plan

import image_corpus as corpus
from conftest import REPO

pytestmark = pytest.mark.usefixtures("one_thread")


def checksums(folder: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()
            and not p.is_symlink()}


def stylize(*args: str) -> list[str]:
    return ["stylize", *args, "--backend", "torch"]


def one_line_per_problem(err: str) -> list[str]:
    """The WARNING lines of a run's stderr, after checking there is no traceback."""
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("WARNING: ")]


# -- data loss and silent skips ------------------------------------------------------------------------

def test_inputs_are_never_overwritten(tmp_path, model_file, capsys):
    holiday = tmp_path / "holiday"
    holiday.mkdir()
    for name in ("a.jpg", "b.jpg", "c.png"):
        corpus.make_rgb(holiday, name)
    before = checksums(holiday)
    for extra in (["--overwrite"], ["--format", "jpg"], []):
        code = main(stylize("-m", str(model_file), *map(str, sorted(holiday.glob("*.jpg"))), str(holiday / "c.png"),
                            "-o", str(holiday), *extra))
        err = capsys.readouterr().err
        assert code == 1 and "holds the input photos" in err and len(err.strip().splitlines()) == 1
    assert main(stylize("-m", str(model_file), str(holiday), "-o", str(holiday), "--overwrite")) == 1
    assert "inside the output folder" in capsys.readouterr().err  # the folder is its own output folder
    assert checksums(holiday) == before
    linked = tmp_path / "out"
    linked.mkdir()
    os.link(holiday / "a.jpg", linked / "a.jpg")  # a hard link: the output *is* the input
    assert main(stylize("-m", str(model_file), str(holiday / "a.jpg"), "-o", str(linked), "--overwrite")) == 1
    assert "is the input photo" in capsys.readouterr().err and checksums(holiday) == before


def test_an_input_folder_inside_the_output_folder_is_named_not_skipped(tmp_path, model_file, capsys, monkeypatch):
    holiday = tmp_path / "holiday"
    holiday.mkdir()
    corpus.make_rgb(holiday, "a.jpg")
    monkeypatch.chdir(tmp_path)
    assert main(stylize("-m", str(model_file), "holiday", "-o", ".")) == 1
    lines = one_line_per_problem(capsys.readouterr().err)
    assert len(lines) == 1 and "holiday" in lines[0] and "inside the output folder" in lines[0]


def _unprivileged(code: str, folder: Path) -> subprocess.CompletedProcess:
    """Run Python ``code`` as a process that file permissions apply to: as root, one without the capabilities
    that let root read any file (``setpriv``); otherwise the user itself."""
    prefix = []
    if os.geteuid() == 0:
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "FASTNST_CACHE_DIR": str(folder / "cache")}
    return subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=env, cwd=folder)


@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("setpriv") is None,
                    reason="as root this needs setpriv (util-linux) to drop the right to read any file")
def test_an_unreadable_subfolder_is_a_failure_in_stylize_and_a_warning_in_training(model_file):
    folder = Path(tempfile.mkdtemp())
    try:
        library = folder / "library"
        (library / "closed").mkdir(parents=True)
        corpus.make_rgb(library, "a.jpg")
        corpus.make_rgb(library / "closed", "b.jpg")
        (library / "closed").chmod(0o000)
        shutil.copy(model_file, folder / "m.safetensors")
        done = _unprivileged("import sys; from fastnst.cli import main; sys.exit(main(['stylize', '-m', "
                             "'m.safetensors', 'library', '-o', 'out', '--backend', 'torch']))", folder)
        assert done.returncode == 1, done.stderr
        lines = one_line_per_problem(done.stderr)
        assert len(lines) == 1 and "closed" in lines[0] and "cannot list this folder (Permission denied)" in lines[0]
        assert "done 1, skipped 0 (already there), failed 1" in done.stderr
        found = _unprivileged("from fastnst.train.data import find_images; print(len(find_images('library')))",
                              folder)
        assert found.stdout.strip() == "1" and "cannot list" in found.stderr and "closed" in found.stderr
    finally:
        (folder / "library" / "closed").chmod(0o755)
        shutil.rmtree(folder)


def test_torn_outputs_are_redone_and_writes_are_flushed(tmp_path, model_file, capsys, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.png", "b.png", "c.jpg"):
        corpus.make_rgb(photos, name, size=(20, 14))
    out = tmp_path / "out"
    assert main(stylize("-m", str(model_file), str(photos), "-o", str(out))) == 0
    good = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "a.png").write_bytes(b"")  # a power cut before the data reached the disk
    (out / "c.jpg").write_bytes(good["c.jpg"][: len(good["c.jpg"]) // 2])
    capsys.readouterr()
    assert main(stylize("-m", str(model_file), str(photos), "-o", str(out))) == 0
    assert "done 2, skipped 1 (already there)" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == good
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real(fd))
    with atomic_path(tmp_path / "x.txt") as tmp:
        tmp.write_text("data")
    assert any(s.endswith(".txt") for s in synced) and str(tmp_path) in synced  # the file, then its folder


def test_a_second_run_on_the_same_output_folder_is_refused_in_one_line(tmp_path, model_file, capsys):
    photo = corpus.make_rgb(tmp_path, "p.png")
    out = tmp_path / "out"
    out.mkdir()
    with lock_folder(out.resolve()):
        assert main(stylize("-m", str(model_file), str(photo), "-o", str(out))) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "another fastnst run" in err and str(os.getpid()) in err
    assert main(stylize("-m", str(model_file), str(photo), "-o", str(out))) == 0  # released: runs
    assert sorted(p.name for p in out.iterdir()) == ["p.png"]  # and the lock leaves nothing behind


def test_odd_names_keep_the_report_and_the_lines_whole(tmp_path, model_file, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    latin1 = os.fsdecode(b"caf\xe9.jpg")  # a name from an old camera: not UTF-8
    corpus.make_rgb(photos, latin1)
    (photos / "two\nlines.jpg").write_bytes(b"not an image")
    report = tmp_path / "report.jsonl"
    assert main(stylize("-m", str(model_file), str(photos), "-o", str(tmp_path / "out"), "--report", str(report))) == 1
    lines = one_line_per_problem(capsys.readouterr().err)
    assert len(lines) == 1 and "two\\nlines.jpg" in lines[0]
    rows = [json.loads(line) for line in report.read_text(encoding="ascii").splitlines()]
    assert {Path(r["input"]).name for r in rows} == {latin1, "two\nlines.jpg"}
    assert os.path.exists(os.fsencode(tmp_path / "out") + b"/caf\xe9.jpg")


def test_names_near_the_255_byte_limit(tmp_path, model_file, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    long_png = corpus.make_rgb(photos, "a" * 251 + ".png")  # 255 bytes: the temporary name must shrink
    too_long = corpus.make_rgb(photos, "b" * 251 + ".jpg")  # 255 bytes, but 256 as .webp
    assert main(stylize("-m", str(model_file), str(long_png), "-o", str(tmp_path / "out"))) == 0
    assert (tmp_path / "out" / long_png.name).is_file()
    assert main(stylize("-m", str(model_file), str(too_long), "-o", str(tmp_path / "w"), "--format", "webp")) == 1
    lines = one_line_per_problem(capsys.readouterr().err)
    assert len(lines) == 1 and "over the 255 a file name may have" in lines[0]
    assert not list(tmp_path.rglob(TEMP_MARKER + "*"))


# -- one line instead of a traceback ------------------------------------------------------------------

def test_filesystem_errors_on_one_input_are_that_input_s_failure(tmp_path, model_file, capsys):
    good = corpus.make_rgb(tmp_path, "good.png")
    name_too_long = str(tmp_path / ("x" * 300) / "p.jpg")  # stat() raises ENAMETOOLONG
    assert main(stylize("-m", str(model_file), str(good), name_too_long, "-o", str(tmp_path / "out"))) == 1
    err = capsys.readouterr().err
    lines = one_line_per_problem(err)
    assert len(lines) == 1 and "File name too long" in lines[0] and "done 1," in err


def test_an_internal_error_is_one_line_with_its_own_exit_code(tmp_path, model_file, capsys, monkeypatch):
    import fastnst.stylize.pipeline as pipeline

    monkeypatch.setattr(pipeline, "plan", lambda config: {}["no such key"])
    photo = corpus.make_rgb(tmp_path, "p.png")
    assert main(stylize("-m", str(model_file), str(photo), "-o", str(tmp_path / "out"))) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastnst stylize: error: internal error: KeyError") and "run with -v" in err
    assert len(err.splitlines()) == 1


def test_a_tree_1100_folders_deep(tmp_path, model_file, capsys):
    folder = tmp_path / "deep"
    path = folder
    path.mkdir()
    for _ in range(1100):  # one level at a time: pathlib's own parents=True recurses too deep for this
        path = path / "d"
        path.mkdir()
    corpus.make_rgb(path, "bottom.png", size=(8, 8))
    try:
        assert main(stylize("-m", str(model_file), str(folder), "-o", str(tmp_path / "out"))) == 0
        assert "done 1," in capsys.readouterr().err
        assert (tmp_path / "out" / path.relative_to(folder) / "bottom.png").is_file()
    finally:
        for top in (folder, tmp_path / "out"):  # bottom-up, one level at a time: rmtree recurses too deep
            _remove_chain(top)


def _remove_chain(top: Path) -> None:
    chain = [top]
    while (chain[-1] / "d").is_dir():
        chain.append(chain[-1] / "d")
    for folder in reversed(chain):
        for entry in folder.iterdir():
            if entry.is_file():
                entry.unlink()
        folder.rmdir()


def test_a_closed_pipe_ends_quietly(model_file):
    done = subprocess.run(f"{sys.executable} -m fastnst info {model_file} | head -1", shell=True, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.stdout.startswith("file") and "Traceback" not in done.stderr and "Error" not in done.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs (root only), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.decode().strip()[:80]}): the full-disk case needs "
                    "one")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_stops_the_run_early_in_one_line_per_kind_of_problem(tmp_path, model_file, capsys, small_disk,
                                                                          monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(30):
        corpus.make_rgb(photos, f"{i:02d}.png", size=(200, 150))  # noisy PNGs of ~90 KB: the disk holds ~10
    computed = []
    import fastnst.stylize.photo as photo

    real = photo.decode
    monkeypatch.setattr(photo, "decode", lambda job, config: computed.append(job) or real(job, config))
    before = checksums(photos)
    code = main(stylize("-m", str(model_model := model_file), str(photos), "-o", str(small_disk / "out"),
                        "--report", str(small_disk / "report.jsonl"), "--workers", "1"))
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and model_model
    assert "the disk holding" in err and "is full" in err
    assert len(computed) < 25  # stopped early, not all 30 computed for nothing
    assert "cannot write the report" in err or (small_disk / "report.jsonl").is_file()
    written = [p for p in (small_disk / "out").rglob("*.png")]
    assert written and all(open_image(p).size == (200, 150) for p in written)
    assert not list(small_disk.rglob(TEMP_MARKER + "*")) and checksums(photos) == before


# -- hostile files -------------------------------------------------------------------------------------

def test_only_the_documented_decoders_run(tmp_path, model_file, capsys):
    eps = tmp_path / "photo.jpg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    heic = tmp_path / "IMG_0001.HEIC"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic")
    (tmp_path / "clip.avif").write_bytes(b"\x00\x00\x00\x1cftypavif")
    (tmp_path / "DSC_0003.NEF").write_bytes(b"MM\x00*" + bytes(60))
    apple = tmp_path / "._IMG_0002.jpg"  # macOS AppleDouble metadata: skipped like any dot-file
    apple.write_bytes(b"\x00\x05\x16\x07")
    good = corpus.make_rgb(tmp_path, "good.png")
    code = main(stylize("-m", str(model_file), str(tmp_path), "-o", str(tmp_path / "out")))
    err = capsys.readouterr().err
    lines = one_line_per_problem(err)
    assert code == 1 and len(lines) == 4 and "done 1, skipped 0 (already there), failed 4" in err
    assert any("clip.avif" in line and "AVIF is not a format fastnst reads" in line for line in lines)
    assert any("DSC_0003.NEF" in line and "Nikon RAW is not a format fastnst reads" in line for line in lines)
    assert any("photo.jpg" in line and "not an image in a format fastnst reads" in line for line in lines)
    assert any("IMG_0001.HEIC" in line and "HEIC is not a format fastnst reads" in line for line in lines)
    assert (tmp_path / "out" / good.name).is_file()


def test_pickles_need_a_safe_torch():
    assert not torch_is_safe_for_pickles("2.5.1+cpu") and not torch_is_safe_for_pickles("1.13.0")
    assert torch_is_safe_for_pickles("2.6.0") and torch_is_safe_for_pickles("2.13.0+cpu")


def test_old_torch_refuses_pickles_at_run_time(tmp_path, monkeypatch):
    path = tmp_path / "m.pth"
    torch.save({"w": torch.zeros(1)}, path)
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    with pytest.raises(ModelFileError, match="cannot load pickles safely.*torch>=2.6"):
        load_model(path)


def _crafted(path: Path, meta: dict, tensors: dict[str, tuple[str, list[int]]] | None = None) -> Path:
    """A .safetensors file written by hand: a header and zero bytes of data for each tensor."""
    header, offset = {"__metadata__": meta}, 0
    for name, (dtype, shape) in (tensors or {}).items():
        size = int(np.prod(shape)) * {"F32": 4, "F16": 2}[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    data = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(data)) + data + b"\0" * offset)
    return path


def test_crafted_model_files_are_one_line_and_build_nothing(tmp_path, monkeypatch):
    built = []
    real_init = TransformerNet.__init__
    monkeypatch.setattr(TransformerNet, "__init__", lambda self, *a, **k: built.append(1) or real_init(self, *a, **k))
    good = ModelInfo(spec=SPECS["light"]).to_metadata()
    cases = {
        "version.safetensors": ({**good, "format_version": "1.5"}, "corrupt fastnst metadata"),
        "nested.safetensors": ({**good, "config": "[" * 100_000 + "]" * 100_000}, "corrupt fastnst metadata"),
        "wide.safetensors": ({**good, "spec": json.dumps({"channels": [8000] * 3})}, "channels must be three"),
        "deep.safetensors": ({**good, "spec": json.dumps({"num_residual": 10**8})}, "num_residual must be 0 to"),
        "styles.safetensors": ({**good, "spec": json.dumps({"num_styles": 10**9})}, "num_styles must be 1 to"),
        "float.safetensors": ({**good, "spec": json.dumps({"num_residual": 2.5})}, "whole numbers"),
        "shapes.safetensors": (good, "does not match the network its metadata describes"),
    }
    for name, (meta, message) in cases.items():
        path = _crafted(tmp_path / name, meta, {"encoder.0.conv.weight": ("F32", [16, 3, 9, 9])})
        with pytest.raises(ModelFileError, match=message) as error:
            load_model(path)
        assert "\n" not in str(error.value) and str(error.value).startswith(str(path))
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 10**12) + b"{}")  # a header length past the file's end
    with pytest.raises(ModelFileError, match="header length"):
        read_info(huge)
    assert built == []  # nothing was built from a crafted header


def test_non_finite_weights_are_refused_and_a_non_finite_output_fails_its_photo(tmp_path, light_net, capsys,
                                                                                monkeypatch):
    broken = TransformerNet(SPECS["light"])
    broken.load_state_dict(light_net.state_dict())
    with torch.no_grad():
        broken.decoder[2].conv.weight[0, 0, 0, 0] = float("nan")
    path = save_model(tmp_path / "nan.safetensors", broken)
    with pytest.raises(ModelFileError, match="decoder.2.conv.weight holds NaN or infinite weights"):
        load_model(path)
    model = save_model(tmp_path / "ok.safetensors", light_net)
    import fastnst.backends.torch as torch_backend

    real = torch_backend.TorchBackend.run
    monkeypatch.setattr(torch_backend.TorchBackend, "run", lambda self, batch, norm_stats=None:
                        real(self, batch, norm_stats) * float("nan"))
    photo = corpus.make_rgb(tmp_path, "p.png")
    assert main(stylize("-m", str(model), str(photo), "-o", str(tmp_path / "out"))) == 1
    lines = one_line_per_problem(capsys.readouterr().err)
    assert len(lines) == 1 and "NaN or infinite values" in lines[0] and not (tmp_path / "out" / "p.png").exists()


def test_onnx_external_data_stays_in_the_model_s_folder(tmp_path, light_net):
    import onnx

    from fastnst.backends.onnx_graph import read_onnx
    from fastnst.export import to_onnx

    proto = to_onnx(light_net)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 64)
    folder = tmp_path / "model"
    folder.mkdir()
    for location, message in (("../secret.bin", "outside the model's folder"), ("link.bin", "behind a link"),
                              ("data.bin", "not inside a regular file of a sane size")):
        model = onnx.ModelProto()
        model.CopyFrom(proto)
        tensor = model.graph.initializer[0]
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", "0"), ("length", str(10**12))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        path = folder / "m.onnx"
        path.write_bytes(model.SerializeToString())
        (folder / "data.bin").write_bytes(b"\0" * 64)
        if not (folder / "link.bin").exists():
            (folder / "link.bin").symlink_to(secret)
        with pytest.raises(ModelFileError, match=message):
            read_onnx(path)


def test_a_pipe_or_a_device_as_the_model_fails_at_once(tmp_path, capsys):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    photo = corpus.make_rgb(tmp_path, "p.png")
    for model in (fifo, Path("/dev/zero")):
        for backend in ("torch", "openvino"):
            if backend == "openvino":
                pytest.importorskip("openvino", reason="openvino is not installed")
            assert main(["stylize", "-m", str(model), str(photo), "-o", str(tmp_path / "o"), "--backend",
                         backend]) == 1
            err = capsys.readouterr().err
            assert "not a regular file" in err and len(err.strip().splitlines()) == 1


# -- memory ----------------------------------------------------------------------------------------------

def test_thin_images_stay_within_the_tile_budget(tmp_path, model_file, capsys):
    for height, width in ((1, 1_000_000), (1_000_000, 2), (3, 70_000)):
        tiles = plan(height, width, 1408, 60)
        for t in tiles:
            from fastnst.models.spec import padded_size

            assert padded_size(t.y1 - t.y0) * padded_size(t.x1 - t.x0) <= 1408 * 1408 * 1.01
    strip = tmp_path / "strip.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1, 30_000, 3), dtype=np.uint8)).save(strip)
    assert main(stylize("-m", str(model_file), str(strip), "-o", str(tmp_path / "out"), "--tile-size", "256")) == 0
    assert Image.open(tmp_path / "out" / "strip.png").size == (30_000, 1)


def test_sixteen_bit_images_are_scaled_without_a_float_copy():
    from fastnst.images import to_rgb

    values = np.arange(0, 65536, 7, dtype=np.uint16)[None]
    rgb = np.asarray(to_rgb(Image.fromarray(values)))[..., 0]
    assert np.array_equal(rgb, np.round(values.astype(np.float64) / 257.0).astype(np.uint8))


@pytest.mark.parametrize("width, fmt", [(17000, "webp"), (66000, "jpg")])  # WebP holds 16383 a side, JPEG 65535
def test_encoder_limits_are_found_before_the_compute(tmp_path, model_file, capsys, monkeypatch, width, fmt):
    wide = tmp_path / "wide.png"
    Image.new("RGB", (width, 8), (90, 120, 200)).save(wide)
    import fastnst.backends.torch as torch_backend

    runs = []
    real = torch_backend.TorchBackend.run
    monkeypatch.setattr(torch_backend.TorchBackend, "run", lambda self, *a, **k: runs.append(1) or real(self, *a, **k))
    assert main(stylize("-m", str(model_file), str(wide), "-o", str(tmp_path / "out"), "--format", fmt)) == 1
    lines = one_line_per_problem(capsys.readouterr().err)
    name = {"webp": "WEBP", "jpg": "JPEG"}[fmt]
    assert len(lines) == 1 and f"larger than {name} can hold" in lines[0] and runs == []


def test_info_prints_a_model_whose_name_is_not_utf8(tmp_path, model_file):
    odd = os.fsencode(tmp_path) + b"/mod\xe8le.safetensors"
    with open(odd, "wb") as handle:
        handle.write(model_file.read_bytes())
    done = subprocess.run([sys.executable, "-m", "fastnst", "info", odd], capture_output=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONIOENCODING": "utf-8:strict"})
    assert done.returncode == 0, done.stderr
    assert b"mod\\udce8le.safetensors" in done.stdout and b"Traceback" not in done.stderr
