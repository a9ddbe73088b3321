"""Shared fixtures: tiny models, random VGG weight files, and the ../shared data when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastnst.checkpoint import save_model
from fastnst.images import psnr  # noqa: F401 - the tests' image comparison
from fastnst.models.transformer import SPECS, TransformerNet
from fastnst.models.vgg import VGGFeatures

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"

requires_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"real data folder {SHARED} is absent (it sits beside the checkout in dev and CI)")


def pytest_configure(config):
    """Ctrl-C works in the commands the tests start, however the suite itself was started.

    A shell starts background jobs (``pytest ... &``, nohup) with SIGINT ignored,
    and an ignored signal stays ignored in every child process: the tests that
    interrupt a child would then see it run on. A Python handler is not
    inherited, so with one here the children start with the default disposition.
    """
    import signal

    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True, scope="session")
def _session_cache(tmp_path_factory):
    """One graph cache for the whole run (OpenVINO's compiled-graph cache is set once per process)."""
    import os

    os.environ["FASTNST_CACHE_DIR"] = str(tmp_path_factory.mktemp("fastnst-cache"))
    os.environ["CUDA_VISIBLE_DEVICES"] = ""


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch, tmp_path):
    """Tests touch nothing outside their folder and never download.

    An attempted download fails as if offline and the hub cache is empty; the
    graph cache (``FASTNST_CACHE_DIR``) is the session's own and GPUs are hidden
    (``_session_cache``; a test that needs a GPU is marked and unhides it).
    """
    import urllib.error

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("FASTNST_VGG_WEIGHTS", raising=False)


@pytest.fixture
def one_thread():
    """Torch on one thread for the test, restored afterwards (modules opt in with ``pytestmark``).

    Tiny images gain nothing from a second thread, and on a loaded 2-core machine
    OpenMP's waiting threads make every small operation many times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def unwritable_folder(tmp_path, monkeypatch) -> Path:
    """An existing folder nothing can be written into, even when the tests run as root.

    Root ignores the 0o555 mode, so for root temporary files refused there the
    way the kernel refuses everyone else (``atomic_path`` writes through ``mkstemp``).
    """
    import os
    import tempfile

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:
        real = tempfile.mkstemp

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and Path(dir) == locked:
                raise PermissionError(13, "Permission denied", str(dir))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    return locked


@pytest.fixture
def light_net() -> TransformerNet:
    torch.manual_seed(0)
    return TransformerNet(SPECS["light"]).eval()


@pytest.fixture
def model_file(tmp_path, light_net) -> Path:
    return save_model(tmp_path / "light.safetensors", light_net, styles=["test-style"], config={"steps": 3})


@pytest.fixture
def duo_file(tmp_path) -> Path:
    """A random two-style network ("warm", "cool") whose styles clearly differ (random norm rows), with a
    thumbnail per style."""
    from fastnst.images import encode_thumbnail

    torch.manual_seed(1)
    net = TransformerNet(SPECS["light"].with_styles(2)).eval()
    with torch.no_grad():
        for _, norm in net.norm_layers():
            norm.weight.copy_(1 + 0.5 * torch.randn_like(norm.weight))
            norm.bias.copy_(0.5 * torch.randn_like(norm.bias))
    thumbnails = []
    for seed in (1, 2):
        gradient_image(48, 32, seed).save(tmp_path / f"style{seed}.png")
        thumbnails.append(encode_thumbnail(tmp_path / f"style{seed}.png"))
    return save_model(tmp_path / "duo.safetensors", net, styles=["warm", "cool"], thumbnails=tuple(thumbnails))


def random_vgg_state(arch: str, upto: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random ``features.*`` weights of ``arch`` up to layer ``upto``, scaled to keep activations sane."""
    torch.manual_seed(seed)
    net = VGGFeatures(arch, [upto])
    state = {}
    for key, value in net.state_dict().items():
        fan_in = value[0].numel() if value.dim() > 1 else 1
        state[key] = torch.randn_like(value) * (2.0 / fan_in) ** 0.5 if value.dim() > 1 else torch.rand_like(value) * .1
    return state


@pytest.fixture
def vgg_file(tmp_path):
    """Factory: write random VGG weights up to a layer to a file and return its path."""

    def make(arch: str = "vgg16", upto: str = "relu2_2", name: str | None = None, extra: dict | None = None) -> Path:
        path = tmp_path / (name or f"{arch}-{upto}.pth")
        torch.save({**random_vgg_state(arch, upto), **(extra or {})}, path)
        return path

    return make


def gradient_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A small RGB test picture: smooth gradients plus noise, so every channel varies."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / max(width - 1, 1), y / max(height - 1, 1), (x + y) / max(width + height - 2, 1)], -1)
    pixels = np.clip(base * 200 + rng.integers(0, 55, size=base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)
