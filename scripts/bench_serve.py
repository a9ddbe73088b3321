"""Load test of ``fastnst serve`` on loopback, beside the same photos through ``Stylizer`` in this process.

    python scripts/bench_serve.py                          # 200 requests at 1, 4 and 16 clients
    python scripts/bench_serve.py --requests 8 --clients 1,4   # a quick smoke run

For each number of concurrent clients C, the same N photos (512×384 JPEGs cut from
../shared/data/content or ../shared/data/photos, encoded once) go through:

* **in-process**: C threads, each decoding a photo, ``Stylizer.stylize_pixels`` and encoding
  the result as JPEG, the backend's streams set as the server sets them;
* **service**: ``fastnst serve`` in a child process on 127.0.0.1 (a free port), C client
  threads each POSTing the photo's bytes on its own keep-alive connection and reading the JPEG.

It prints images/s and p50/p95 latency of each, side by side, and their ratios. Target: at 4
or more clients the service reaches >= 90% of the in-process images/s on the CPU. Bounded:
loopback only, at most 2000 requests and 64 clients per run, every wait with a timeout.
"""

from __future__ import annotations

import argparse
import http.client
import io
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from fastnst.device import cpu_count, cpuinfo
from fastnst.errors import ConfigError
from fastnst.serve import require_stack
from fastnst.stylize import Stylizer

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DEFAULT_MODEL = REPO / "checkpoints" / "starry_night.safetensors"
MAX_REQUESTS, MAX_CLIENTS = 2000, 64
WAIT = 300  # seconds: the server's start, and any one request


def photos(folder: Path | None, size: tuple[int, int], count: int = 16) -> list[bytes]:
    """Up to ``count`` photos cut to ``size`` (width, height) and encoded as JPEG q95, in memory."""
    folders = [folder] if folder else [SHARED / "content", SHARED / "photos"]
    files = [p for f in folders if f.is_dir() for p in sorted(f.iterdir()) if p.suffix.lower() in (".jpg", ".png")]
    if not files:
        raise SystemExit(f"no photos in {', '.join(map(str, folders))}; give --photos DIR")
    encoded = []
    for path in files[:count]:
        buffer = io.BytesIO()
        ImageOps.fit(Image.open(path).convert("RGB"), size).save(buffer, format="JPEG", quality=95)
        encoded.append(buffer.getvalue())
    return encoded


def timed(task, jobs: list, clients: int) -> tuple[float, list[float]]:
    """Run ``task(job)`` for every job on ``clients`` threads: (wall seconds, each job's seconds)."""
    def one(job) -> float:
        start = time.perf_counter()
        task(job)
        return time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(one, jobs, timeout=WAIT * len(jobs)))
    return time.perf_counter() - start, latencies


def in_process(stylizer: Stylizer):
    from fastnst.serve.app import encode  # the service's own encoder; needs fastnst[serve]

    def task(data: bytes) -> bytes:
        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        return encode(stylizer.stylize_pixels(pixels[None])[0], "jpg", 95)

    return task


class Server:
    """``fastnst serve`` in a child process on a free loopback port."""

    def __init__(self, model: Path, backend: str, queue_size: int) -> None:
        command = [sys.executable, "-m", "fastnst", "serve", "-m", str(model), "--backend", backend, "--port", "0",
                   "--queue-size", str(queue_size), "--timeout", str(WAIT)]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=REPO)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(iter(self.process.stderr.readline, "")), daemon=True).start()
        deadline = time.monotonic() + WAIT
        while self.port is None and self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.port is None:
            self.close()
            raise SystemExit("the server did not start:\n" + "".join(self.lines))
        self.local = threading.local()

    @property
    def port(self) -> int | None:
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", "".join(self.lines))
        return int(found.group(1)) if found else None

    def post(self, data: bytes) -> bytes:
        """One stylize request on this thread's keep-alive connection; the JPEG's bytes."""
        if not hasattr(self.local, "connection"):
            self.local.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT)
        connection = self.local.connection
        connection.request("POST", "/v1/stylize?format=jpg&quality=95", body=data,
                           headers={"Content-Type": "image/jpeg"})
        answer = connection.getresponse()
        body = answer.read()
        if answer.status != 200:
            raise SystemExit(f"the server answered {answer.status}: {body[:200]!r}")
        return body

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def summary(wall: float, latencies: list[float]) -> tuple[float, float, float]:
    """(images/s, p50 ms, p95 ms)."""
    p50, p95 = np.percentile(latencies, [50, 95]) * 1000
    return len(latencies) / wall, float(p50), float(p95)


def run(args: argparse.Namespace) -> int:
    try:
        require_stack()
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None
    width, height = (int(v) for v in args.size.lower().split("x"))
    encoded = photos(args.photos, (width, height))
    jobs = [encoded[i % len(encoded)] for i in range(args.requests)]
    stylizer = Stylizer(args.model, backend=args.backend)
    streams = stylizer.backend.default_streams if stylizer.backend.concurrent else 1
    stylizer.backend.set_streams(streams)
    print(f"CPU: {cpuinfo('model name') or 'unknown'}, {cpu_count()} cores; model {Path(args.model).name}, backend "
          f"{stylizer.backend.name}, {streams} stream(s); {args.requests} requests of {width}x{height} JPEG per run")
    server = Server(args.model, args.backend, max(32, 2 * max(args.clients)))
    try:
        local = in_process(stylizer)
        for job in encoded[:streams]:  # warm both: first passes at a new size compile or allocate
            local(job)
            server.post(job)
        print(f"{'clients':>7} | {'in-process img/s':>16} {'p50 ms':>8} {'p95 ms':>8} | {'service img/s':>13} "
              f"{'p50 ms':>8} {'p95 ms':>8} | {'ratio':>5}")
        for clients in args.clients:
            mine = summary(*timed(local, jobs, clients))
            served = summary(*timed(server.post, jobs, clients))
            print(f"{clients:>7} | {mine[0]:>16.2f} {mine[1]:>8.0f} {mine[2]:>8.0f} | {served[0]:>13.2f} "
                  f"{served[1]:>8.0f} {served[2]:>8.0f} | {served[0] / mine[0]:>5.2f}", flush=True)
    finally:
        server.close()
    print("ratio = service images/s / in-process images/s; target >= 0.90 at 4+ clients on the CPU")
    return 0


def clients_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or not all(1 <= v <= MAX_CLIENTS for v in values):
        raise argparse.ArgumentTypeError(f"give client counts 1-{MAX_CLIENTS} separated by commas, e.g. 1,4,16")
    return values


def requests_count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_REQUESTS:
        raise argparse.ArgumentTypeError(f"give 1-{MAX_REQUESTS} requests")
    return value


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model file (default %(default)s)")
    p.add_argument("--photos", type=Path, help="folder of photos (default ../shared/data/content, then photos)")
    p.add_argument("--requests", type=requests_count, default=200, help="requests per run (default 200)")
    p.add_argument("--clients", type=clients_list, default=[1, 4, 16], help="concurrent clients (default 1,4,16)")
    p.add_argument("--size", default="512x384", help="photo size WIDTHxHEIGHT (default 512x384)")
    p.add_argument("--backend", default="auto", help="runtime for both sides (default auto)")
    return run(p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
