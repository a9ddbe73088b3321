"""``ServeConfig``: every option of ``fastnst serve``, validated once.

The app (``fastnst.serve.app``) and the engine (``fastnst.serve.engine``) trust
it: every check of an option lives here, in ``__post_init__``. Defaults are for
one machine serving a few people: loopback only, 20 MB uploads, 24 megapixels
(a 6000 × 4000 photo), a minute per request, 32 requests in the service at once.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from fastnst.backends import AUTO, check_backend_options
from fastnst.device import check_device
from fastnst.errors import ConfigError

# The bundled style models of a source checkout: what ``fastnst serve`` serves without -m.
BUNDLED = Path(__file__).resolve().parents[2] / "checkpoints"
API_KEY_ENV = "FASTNST_API_KEY"
MIN_KEY_LENGTH = 16
DEFAULT_MAX_PIXELS = 24_000_000
DEFAULT_UPLOAD_MB = 20.0
DEFAULT_TIMEOUT = 60.0
DEFAULT_QUEUE_SIZE = 32
# How long a GPU batch waits for more photos of the same size: short next to a pass (tens of ms).
DEFAULT_BATCH_WAIT_MS = 5.0


def bundled_models(folder: Path = BUNDLED) -> tuple[str, ...]:
    """The ``.safetensors`` model files of ``folder`` (the repository's ``checkpoints/``), sorted; () if none."""
    return tuple(str(p) for p in sorted(folder.glob("*.safetensors"))) if folder.is_dir() else ()


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: assume the world can reach it
        return False


@dataclass(frozen=True)
class ServeConfig:
    """Options of ``fastnst serve``; see ``fastnst serve --help`` for each.

    ``models`` are model files, each served under its file stem (empty: every
    bundled model). ``queue_size`` bounds the requests in the service at once
    (uploading, waiting or computing); one more is answered 503. ``workers`` is
    the photos computed at once on the CPU (None: the backend's
    ``default_streams``); ``batch_size`` the photos of one size per pass (None:
    1 on the CPU, ``DEFAULT_GPU_BATCH`` on a GPU), gathered for at most
    ``batch_wait_ms``.
    """

    models: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port
    api_key: str | None = None
    insecure: bool = False  # allow a non-loopback host without an API key
    cors_origins: tuple[str, ...] = ()
    backend: str = AUTO
    device: str = "auto"
    max_upload_mb: float = DEFAULT_UPLOAD_MB
    max_pixels: int = DEFAULT_MAX_PIXELS
    timeout: float = DEFAULT_TIMEOUT  # seconds per request, from its arrival to its answer
    queue_size: int = DEFAULT_QUEUE_SIZE
    workers: int | None = None
    batch_size: int | None = None
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS

    def __post_init__(self) -> None:
        models = tuple(str(m) for m in self.models) or bundled_models()
        object.__setattr__(self, "models", models)
        object.__setattr__(self, "cors_origins", tuple(self.cors_origins))
        self._check_models()
        self._check_network()
        check_backend_options(self.backend)
        check_device(self.device)
        self._check_limits()

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def exposed(self) -> bool:
        """Whether anyone on the network may use the service: a non-loopback host and no API key."""
        return not is_loopback(self.host) and self.api_key is None

    @property
    def model_names(self) -> tuple[str, ...]:
        """The name each model is served under: its file stem, in the order given."""
        return tuple(Path(m).stem for m in self.models)

    def _check_models(self) -> None:
        if not self.models:
            raise ConfigError(f"no models to serve: give -m MODEL (the bundled models live in {BUNDLED}, which "
                              "only a source checkout has)")
        for model in self.models:
            if not Path(model).is_file():
                raise ConfigError(f"model file {model} does not exist; give the path of a model file")
        names = self.model_names
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"two model files are both named {twice[0]!r} (models are served by file name); "
                              "rename one")

    def _check_network(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be 0-65535 (0: any free port), got {self.port}")
        if self.api_key is not None and len(self.api_key) < MIN_KEY_LENGTH:
            raise ConfigError(f"the API key must be at least {MIN_KEY_LENGTH} characters; make one with "
                              "python -c 'import secrets; print(secrets.token_urlsafe(24))'")
        if self.exposed and not self.insecure:
            raise ConfigError(f"--host {self.host} can be reached from other machines: set --api-key (or "
                              f"${API_KEY_ENV}), or pass --insecure to serve it to anyone")
        for origin in self.cors_origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ConfigError(f"--cors-origin {origin!r} is not an origin; write it as "
                                  "https://example.org[:port] (or * for any)")

    def _check_limits(self) -> None:
        positive = {"--max-upload-mb": self.max_upload_mb, "--max-pixels": self.max_pixels,
                    "--timeout": self.timeout, "--queue-size": self.queue_size}
        for option, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{option} must be positive, got {value}")
        for option, value in (("--workers", self.workers), ("--batch-size", self.batch_size)):
            if value is not None and value < 1:
                raise ConfigError(f"{option} must be at least 1, got {value}")
        if not 0 <= self.batch_wait_ms <= 1000:
            raise ConfigError(f"--batch-wait-ms must be 0-1000, got {self.batch_wait_ms}")
