"""`fastnst stylize --ray`: the local pipeline's outputs, report and exit codes on a Ray cluster, and its faults.

One local Ray cluster (2 CPUs, no dashboard, a small object store) serves the
whole module; every Ray run is checked against the local pipeline's run of the
same command in this process. Tests that need Ray are skipped without it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fastnst.cli import main
from fastnst.errors import ConfigError, FastNSTError
from fastnst.files import TEMP_MARKER
from fastnst.ray import ROWS_PER_SLOT, Layout, plan_layout
from fastnst.stylize import StylizeConfig
from fastnst.stylize.photo import Record

import image_corpus as corpus
from conftest import REPO, gradient_image

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="Ray is not installed (pip install 'fastnst[ray]')")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")  # Ray's own, about its own settings
ACTOR_TITLE = "MapBatches(PhotoWorker)"  # in the process title Ray gives a Ray Data actor


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail the test instead of hanging: SIGALRM interrupts the main thread after ``seconds``."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, _session_cache):
    """A local Ray cluster for the module, started once (its start-up takes seconds) and shut down after."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'fastnst[ray]')")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # no network; the actors inherit this and the graph cache folder
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with deadline(180):
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False,
                 _temp_dir=str(tmp_path_factory.mktemp("ray")))
    yield ray
    ray.shutdown()
    for sig, handler in handlers.items():  # ray.init installs its own; the other test modules expect the default
        signal.signal(sig, handler)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    import torch

    from fastnst.checkpoint import save_model
    from fastnst.models.transformer import SPECS, TransformerNet

    torch.manual_seed(0)
    net = TransformerNet(SPECS["light"]).eval()
    return save_model(tmp_path_factory.mktemp("model") / "light.safetensors", net, styles=["test"], config={})


def photo_folder(folder: Path, count: int, size=(96, 64)) -> Path:
    """``count`` photos of three sizes (JPEG and PNG), one in a subfolder, one whose name is not UTF-8."""
    (folder / "sub").mkdir(parents=True)
    for i in range(count):
        width, height = size[0] + 8 * (i % 3), size[1]
        name = f"{i:02d}.jpg" if i % 2 else f"{i:02d}.png"
        gradient_image(width, height, seed=i).save(folder / ("sub" if i == 1 else ".") / name)
    gradient_image(40, 30, seed=99).save(folder / os.fsdecode(b"caf\xe9.jpg"))  # an old camera's Latin-1 name
    return folder


def stylize(*args: str | Path) -> int:
    with deadline(300):
        return main(["stylize", *map(str, args)])


def outputs(folder: Path) -> dict[Path, bytes]:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name[0] != "."}


def report_rows(path: Path, out: Path) -> list[dict]:
    """The report's rows, output paths relative to ``out`` so two runs' reports compare."""
    rows = [json.loads(line) for line in path.read_text(encoding="ascii").splitlines()]
    for row in rows:
        if row["output"] is not None:
            row["output"] = str(Path(row["output"]).relative_to(out.resolve()))
    return sorted(rows, key=lambda row: row["input"])


def temporaries(folder: Path) -> list[Path]:
    return list(folder.rglob(TEMP_MARKER + "*"))


# -- without a cluster ------------------------------------------------------------------------------

def _config(**options) -> StylizeConfig:
    return StylizeConfig(model="m.safetensors", inputs=("in",), output_dir="out", **options)


@pytest.mark.parametrize("nodes, options, actors, expected", [
    ([(2, 0)], {}, None, Layout(1, 2, 0.0, 2 * ROWS_PER_SLOT)),  # one actor per node, all its CPUs
    ([(16, 0)] * 4, {}, None, Layout(4, 16, 0.0, 16 * ROWS_PER_SLOT)),
    ([(8, 0), (32, 0)], {}, None, Layout(5, 8, 0.0, 8 * ROWS_PER_SLOT)),  # sized to the smallest node
    ([(16, 0)] * 4, {}, 8, Layout(8, 8, 0.0, 8 * ROWS_PER_SLOT)),  # --ray-actors splits the CPUs
    ([(2, 0)], {}, 4, Layout(4, 1, 0.0, ROWS_PER_SLOT)),  # never less than one CPU an actor
    ([(32, 4), (32, 4)], {}, None, Layout(8, 2, 1.0, 8 * ROWS_PER_SLOT)),  # one per GPU, --workers CPUs each
    ([(32, 4)], {"batch_size": 3}, 8, Layout(8, 2, 0.5, 3 * ROWS_PER_SLOT)),  # GPUs shared
    ([(8, 0.5)], {}, None, Layout(1, 2, 0.5, 8 * ROWS_PER_SLOT)),  # half a GPU is still one actor
    ([(32, 4)], {"device": "cpu"}, None, Layout(1, 32, 0.0, 32 * ROWS_PER_SLOT)),  # GPUs left alone when asked
    ([(32, 4)], {"backend": "openvino"}, None, Layout(1, 32, 0.0, 32 * ROWS_PER_SLOT)),  # a CPU-only backend
    ([(0, 0), (4, 0)], {}, None, Layout(1, 4, 0.0, 4 * ROWS_PER_SLOT)),  # a head node that runs nothing
])
def test_layout_follows_the_cluster(nodes, options, actors, expected):
    assert plan_layout(nodes, _config(**options), actors) == expected


def test_layout_refuses_impossible_clusters_in_one_line():
    with pytest.raises(ConfigError, match="no GPU"):
        plan_layout([(8, 0)], _config(device="cuda"))
    with pytest.raises(ConfigError, match="at least 1"):
        plan_layout([(8, 0)], _config(), 0)
    with pytest.raises(FastNSTError, match="no node with a CPU"):
        plan_layout([(0, 0)], _config())


def test_report_records_survive_the_trip_through_json():
    """The actors send ``Record.to_json()``; the driver rebuilds the record from it, unchanged."""
    records = [Record("a.jpg", "/o/a.jpg", "done", width=3, height=2, tiles=1),
               Record(os.fsdecode(b"caf\xe9.jpg"), "/o/x.jpg", "skipped"),
               Record("bad.jpg", None, "failed", "not an image")]
    assert [Record(**json.loads(r.to_json())) for r in records] == records


def test_the_actor_stacks_photos_of_equal_size_and_answers_each_row_in_order(tmp_path, model):
    """``PhotoWorker`` called directly (no cluster): passes of ``--batch-size`` photos of one size, a row each."""
    pa = pytest.importorskip("pyarrow", reason="pyarrow comes with Ray Data (pip install 'fastnst[ray]')")
    from fastnst.ray import PhotoWorker

    folder = tmp_path / "photos"
    folder.mkdir()
    sizes = [(40, 30), (40, 30), (24, 16), (40, 30)]
    sources = [corpus.make_rgb(folder, f"{i}.png", size=size) for i, size in enumerate(sizes)]
    sources.insert(2, corpus.make_text_as_jpg(folder))
    out = tmp_path / "out"
    out.mkdir()
    config = StylizeConfig(model=str(model), inputs=("unused",), output_dir=str(out), backend="torch", batch_size=2)
    worker = PhotoWorker(config, str(out.resolve()), cpus=1)
    passes = []
    run = worker.stylizer.stylize_pixels
    worker.stylizer.stylize_pixels = lambda pixels: passes.append(pixels.shape) or run(pixels)
    table = pa.table({"source": [os.fsencode(p) for p in sources],
                      "target": [os.fsencode(out / f"{p.stem}.png") for p in sources]})
    rows = worker(table).to_pylist()
    assert sorted(passes) == [(1, 16, 24, 3), (1, 30, 40, 3), (2, 30, 40, 3)]
    assert [r["status"] for r in rows] == ["done", "done", "failed", "done", "done"]
    assert [Record(**json.loads(r["record"])).input for r in rows] == [str(p) for p in sources]
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png", "2.png", "3.png"]


def test_fastnst_imports_no_ray_until_a_ray_run():
    code = ("import sys; import fastnst, fastnst.cli, fastnst.stylize, fastnst.ray; "
            "from fastnst.cli import build_parser; build_parser(['stylize']).parse_args("
            "['stylize', 'x', '-m', 'm', '-o', 'o', '--ray']); print('ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_without_ray_the_command_says_how_to_install_it(tmp_path, monkeypatch, capsys, model):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    photos = photo_folder(tmp_path / "photos", 1)
    assert stylize(photos, "-m", model, "-o", tmp_path / "out", "--ray") == 2
    assert "pip install 'fastnst[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not outputs(tmp_path / "out")


def test_ray_actors_alone_is_a_usage_error(tmp_path, capsys, model):
    assert stylize(tmp_path, "-m", model, "-o", tmp_path / "out", "--ray-actors", "2") == 2
    assert "--ray-actors needs --ray" in capsys.readouterr().err


# -- on the cluster ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def library(tmp_path_factory, cluster, model):
    """One library with a bad photo among good ones, stylized locally and with --ray; the runs' folders and codes."""
    root = tmp_path_factory.mktemp("library")
    photos = photo_folder(root / "photos", 7)
    corpus.make_text_as_jpg(photos)
    corpus.make_truncated(photos, ".png")
    runs = {}
    for name, extra in (("local", []), ("ray", ["--ray"])):
        out = root / f"out-{name}"
        code = stylize(photos, "-m", model, "-o", out, "--report", root / f"{name}.jsonl", *extra)
        runs[name] = (out, root / f"{name}.jsonl", code)
    return photos, runs


@needs_ray
def test_ray_writes_the_local_pipelines_bytes_to_the_same_paths(library):
    _, runs = library
    local, ray = outputs(runs["local"][0]), outputs(runs["ray"][0])
    assert len(local) == 8 and os.fsdecode(b"caf\xe9.jpg") in {p.name for p in local}
    assert ray.keys() == local.keys()
    assert all(ray[p] == local[p] for p in local)
    assert not temporaries(runs["ray"][0])


@needs_ray
def test_a_bad_photo_is_one_failure_row_and_exit_code_1_and_the_rest_is_done(library):
    _, runs = library
    (local_out, local_report, local_code), (ray_out, ray_report, ray_code) = runs["local"], runs["ray"]
    assert local_code == ray_code == 1
    rows = report_rows(ray_report, ray_out)
    assert rows == report_rows(local_report, local_out)  # the same rows, sizes and reasons
    failed = {Path(r["input"]).name: r["reason"] for r in rows if r["status"] == "failed"}
    assert failed.keys() == {"notes.jpg", "truncated.png"} and "not an image" in failed["notes.jpg"]
    assert [r["status"] for r in rows].count("done") == 8 and len(rows) == 10


@needs_ray
def test_a_rerun_skips_what_is_done_and_redoes_only_what_is_missing(library, tmp_path, model, capsys):
    photos, runs = library
    out = tmp_path / "out"
    assert stylize(photos, "-m", model, "-o", out, "--ray") == 1
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file() and p.name[0] != "."}
    capsys.readouterr()
    assert stylize(photos, "-m", model, "-o", out, "--ray") == 1
    assert "done 0, skipped 8 (already there), failed 2" in capsys.readouterr().err
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file() and p.name[0] != "."}
    assert after == before  # not one output rewritten
    # An interrupted driver: two outputs never written, one half-written temporary left behind.
    gone = sorted(before)[:2]
    for path in gone:
        path.unlink()
    (gone[0].parent / f"{TEMP_MARKER}{gone[0].stem}-0123abcd{gone[0].suffix}").write_bytes(b"half")
    assert stylize(photos, "-m", model, "-o", out, "--ray", "--report", tmp_path / "r.jsonl") == 1
    assert "done 2, skipped 6 (already there), failed 2" in capsys.readouterr().err
    assert outputs(out) == outputs(runs["local"][0]) and not temporaries(out)


@pytest.fixture(scope="module")
def many(tmp_path_factory, cluster, model):
    """33 photos, enough for a run to be stopped midway, and their outputs from the local pipeline."""
    root = tmp_path_factory.mktemp("many")
    photos = photo_folder(root / "photos", 32, size=(320, 240))
    assert stylize(photos, "-m", model, "-o", root / "reference") == 0
    return photos, outputs(root / "reference")


@needs_ray
def test_a_killed_worker_loses_nothing_and_leaves_no_partial_file(many, model, tmp_path):
    photos, reference = many
    out = tmp_path / "out"
    killed, older = [], set(_actor_pids())  # actors of earlier runs may still be on their way out
    killer = threading.Thread(target=_kill_first_actor, args=(out, older, killed), daemon=True)
    killer.start()
    code = stylize(photos, "-m", model, "-o", out, "--ray", "--report", tmp_path / "r.jsonl")
    killer.join(timeout=10)
    assert killed and 0 < killed[0][1] < 33, f"no actor was killed mid-run: {killed}"
    assert code == 0
    assert outputs(out) == reference and not temporaries(out)
    rows = report_rows(tmp_path / "r.jsonl", out)
    assert len(rows) == 33 and {r["status"] for r in rows} <= {"done", "skipped"}  # the retry skips what was written


@needs_ray
def test_a_run_that_starts_its_own_cluster_gives_back_the_signal_handlers(tmp_path, model):
    """ray.init replaces the SIGINT/SIGTERM handlers; a run that started Ray puts the caller's back."""
    photos = photo_folder(tmp_path / "photos", 2)
    code = ("import signal; from fastnst.cli import main; "
            "handlers = lambda: [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]; before = handlers(); "
            f"code = main(['stylize', {str(photos)!r}, '-m', {str(model)!r}, '-o', {str(tmp_path / 'out')!r}, "
            "'--ray']); print(code, handlers() == before)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert done.stdout.split()[-2:] == ["0", "True"], done.stderr[-2000:]
    assert len(outputs(tmp_path / "out")) == len(list(photos.iterdir()))


@needs_ray
def test_an_interrupted_driver_resumes_where_it_stopped(cluster, many, model, tmp_path, capsys):
    """Ctrl-C on a driver joined to the running cluster: exit code 130, and the same command run again finishes."""
    photos, reference = many
    out = tmp_path / "out"
    command = [sys.executable, "-m", "fastnst", "stylize", str(photos), "-m", str(model), "-o", str(out),
               "--ray", cluster.get_runtime_context().gcs_address]
    driver = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE, text=True)
    stop = time.monotonic() + 240
    while time.monotonic() < stop and driver.poll() is None and len(outputs(out) if out.exists() else ()) < 2:
        time.sleep(0.005)
    driver.send_signal(signal.SIGINT)
    _, err = driver.communicate(timeout=120)
    written = len(outputs(out))
    assert driver.returncode == 130 and "interrupted" in err, err[-2000:]
    assert 0 < written < 33, "the run was not interrupted midway"
    assert stylize(photos, "-m", model, "-o", out, "--ray") == 0
    done, skipped = map(int, re.search(r"done (\d+), skipped (\d+)", capsys.readouterr().err).groups())
    assert done + skipped == 33 and skipped >= written
    assert outputs(out) == reference and not temporaries(out)


@needs_ray
def test_batches_of_equal_sizes_as_on_gpus(library, model, tmp_path, capsys):
    """--batch-size 2 (the GPU actors' path, here on the CPU): every photo once, the local pipeline's pixels give
    or take a level (batches may be grouped differently, and round differently), the same report rows."""
    import numpy as np
    from PIL import Image

    photos, runs = library
    out = tmp_path / "out"
    options = ["-m", model, "--batch-size", "2", "--backend", "torch", "--format", "png"]  # torch: fp32, as on GPUs
    assert stylize(photos, *options, "-o", out, "--ray", "--report", tmp_path / "r.jsonl") == 1
    local = tmp_path / "local"
    assert stylize(photos, *options, "-o", local, "--report", tmp_path / "l.jsonl") == 1
    got, expected = outputs(out), outputs(local)
    assert got.keys() == expected.keys() and len(got) == 8
    for name in expected:
        a, b = (np.asarray(Image.open(folder / name), np.int16) for folder in (out, local))
        assert a.shape == b.shape and np.abs(a - b).max() <= 1, name
    assert report_rows(tmp_path / "r.jsonl", out) == report_rows(tmp_path / "l.jsonl", local)


def _kill_first_actor(out: Path, older: set[int], killed: list, timeout: float = 120) -> None:
    """SIGKILL this run's photo actor once its first output exists; record (pid, outputs written then)."""
    stop = time.monotonic() + timeout
    pid = None
    while time.monotonic() < stop and pid is None:
        pid = next(iter(set(_actor_pids()) - older), None)
        time.sleep(0.01)
    while time.monotonic() < stop and pid is not None:
        written = len([p for p in out.rglob("*") if p.is_file() and p.name[0] != "."]) if out.exists() else 0
        if written:
            os.kill(pid, signal.SIGKILL)
            killed.append((pid, written))
            return
        time.sleep(0.002)


def _actor_pids() -> list[int]:
    """Processes of this test session's cluster (they share its graph cache folder) running the photo actor."""
    mine = f"FASTNST_CACHE_DIR={os.environ['FASTNST_CACHE_DIR']}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and ACTOR_TITLE.encode() in (entry / "cmdline").read_bytes() \
                    and mine in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
    return pids


@needs_ray
@pytest.mark.parametrize("name", ["broken.safetensors", "broken.pth"])  # refused on the driver; in the actor
def test_a_model_that_cannot_load_is_the_local_pipelines_one_line_error(cluster, tmp_path, capsys, name):
    photos = photo_folder(tmp_path / "photos", 1)
    broken = tmp_path / name
    broken.write_bytes(b"not a model")
    errors = []
    for extra in ([], ["--ray"]):
        assert stylize(photos, "-m", broken, "-o", tmp_path / "out", *extra) == 1
        errors.append(capsys.readouterr().err.strip().splitlines()[-1])
    assert errors[0].startswith("fastnst stylize: error: ") and errors[1] == errors[0]


@needs_ray
def test_stylize_dataset_takes_a_users_dataset_of_paths(cluster, model, tmp_path):
    """str or bytes paths, extra columns, an upstream stage that needs a CPU while the actors hold both."""
    from fastnst.ray import records, stylize_dataset

    photos = sorted(photo_folder(tmp_path / "photos", 3).rglob("*.*"))
    out = tmp_path / "out"
    rows = [{"source": str(p), "target": str(out / f"{i}.png"), "album": "x"} for i, p in enumerate(photos)]
    dataset = cluster.data.from_items(rows).map(lambda row: row)  # a task stage before the actors
    config = StylizeConfig(model=str(model), inputs=("unused",), output_dir=str(out))
    with deadline(180):
        got = list(records(stylize_dataset(dataset, config)))
    assert {(r.input, r.output, r.status) for r in got} == {(row["source"], row["target"], "done") for row in rows}
    assert sorted(p.name for p in out.iterdir() if p.name[0] != ".") == ["0.png", "1.png", "2.png", "3.png"]
    with pytest.raises(ConfigError, match="lacks column.*target"):
        stylize_dataset(cluster.data.from_items([{"source": "a.jpg"}]), config)
