"""``fastnst serve``: every endpoint and error through Starlette's test client, the engine's queue and batches,
and the command line. Results are checked against ``Stylizer`` run directly with the same options."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="fastnst serve needs FastAPI: pip install 'fastnst[serve]'")
pytest.importorskip("python_multipart", reason="fastnst serve needs python-multipart: pip install 'fastnst[serve]'")

from fastapi.testclient import TestClient  # noqa: E402 - only once FastAPI is known to be installed

from fastnst.checkpoint import read_info  # noqa: E402
from fastnst.cli import main  # noqa: E402
from fastnst.errors import ConfigError  # noqa: E402
from fastnst.serve import ServeConfig, create_app  # noqa: E402
from fastnst.serve.engine import Engine, Options  # noqa: E402
from fastnst.styles import resolve_style  # noqa: E402
from fastnst.stylize import Stylizer  # noqa: E402

from conftest import REPO, gradient_image  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
WAIT = 20  # seconds any wait in these tests may take before it fails instead of hanging


@pytest.fixture
def make_client(model_file, duo_file):
    """Factory: a started test client (and its app) serving ``light`` and ``duo`` with the torch backend."""
    clients = []

    def make(**options) -> tuple[TestClient, object]:
        options = {"timeout": WAIT, **options}
        config = ServeConfig(models=(str(model_file), str(duo_file)), backend="torch", **options)
        app = create_app(config)
        client = TestClient(app).__enter__()
        clients.append(client)
        return client, app

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()[0]


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


PHOTO = gradient_image(60, 44, seed=3)


def expected(model, photo=PHOTO, **options) -> np.ndarray:
    """What the Stylizer gives for ``photo`` with ``options``, computed without the service."""
    return np.asarray(Stylizer(model, backend="torch", **options).stylize_image(photo), dtype=np.int16)


def result(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=np.int16)


# -- stylizing --------------------------------------------------------------------------------------

@pytest.mark.parametrize("query, options", [
    ("model=light", {}),
    ("model=duo&style=cool&strength=0.6", {"style": "cool", "strength": 0.6}),
    ("model=duo&style=1&preserve_color=true", {"style": "cool", "preserve_color": True}),
    ("model=duo&style_mix=warm%3D0.7%2Ccool%3D0.3&stroke_scale=2", {"style_mix": "warm=0.7,cool=0.3",
                                                                     "stroke_scale": 2.0}),
])
def test_the_result_is_what_the_stylizer_gives_for_the_same_options(client, model_file, duo_file, query, options):
    model = model_file if "light" in query else duo_file
    response = client.post(f"/v1/stylize?{query}&format=png", content=png(PHOTO),
                           headers={"content-type": "image/png"})
    assert response.headers["content-type"] == "image/png"
    got, want = result(response), expected(model, **options)
    assert got.shape == want.shape == (44, 60, 3)
    assert np.abs(got - want).max() <= 1
    assert np.abs(got - np.asarray(PHOTO, np.int16)).mean() > 5  # and it is not the photo


def test_a_multipart_upload_gives_the_same_result_as_a_raw_body(client):
    raw = client.post("/v1/stylize?model=duo&style=warm&format=png", content=png(PHOTO))
    form = client.post("/v1/stylize?model=duo&style=warm&format=png",
                       files={"image": ("photo.png", png(PHOTO), "image/png")})
    assert np.array_equal(result(raw), result(form))


def test_the_default_model_is_the_first_and_styles_differ(client, model_file, duo_file):
    default = result(client.post("/v1/stylize?format=png", content=png(PHOTO)))
    assert np.abs(default - expected(model_file)).max() <= 1
    warm = result(client.post("/v1/stylize?model=duo&format=png", content=png(PHOTO)))
    cool = result(client.post("/v1/stylize?model=duo&style=cool&format=png", content=png(PHOTO)))
    assert np.abs(warm - expected(duo_file, style="warm")).max() <= 1
    assert np.abs(warm - cool).mean() > 1


@pytest.mark.parametrize("fmt, media, magic", [("jpg", "image/jpeg", b"\xff\xd8\xff"), ("png", "image/png", b"\x89PNG"),
                                               ("webp", "image/webp", b"RIFF")])
def test_output_formats_carry_their_content_type(client, fmt, media, magic):
    response = client.post(f"/v1/stylize?format={fmt}&quality=80", content=png(PHOTO))
    assert response.status_code == 200 and response.headers["content-type"] == media
    assert response.content.startswith(magic)
    assert Image.open(io.BytesIO(response.content)).size == PHOTO.size


def test_max_size_downsizes_the_long_side_and_exif_orientation_is_applied(client):
    response = client.post("/v1/stylize?max_size=30&format=png", content=png(PHOTO))
    assert Image.open(io.BytesIO(response.content)).size == (30, 22)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to view
    buffer = io.BytesIO()
    PHOTO.save(buffer, format="JPEG", exif=exif)
    response = client.post("/v1/stylize?format=png", content=buffer.getvalue())
    assert Image.open(io.BytesIO(response.content)).size == (44, 60)


# -- the other endpoints ----------------------------------------------------------------------------

def test_models_lists_names_styles_and_thumbnails(client, duo_file):
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert list(models) == ["light", "duo"]
    assert models["light"]["styles"] == [{"name": "test-style", "thumbnail": None}]
    duo = models["duo"]
    assert [s["name"] for s in duo["styles"]] == ["warm", "cool"] and duo["default_style"] == "warm"
    for style, stored in zip(duo["styles"], read_info(duo_file).thumbnails):
        prefix, data = style["thumbnail"].split(",", 1)
        assert prefix == "data:image/jpeg;base64" and data == stored
        assert Image.open(io.BytesIO(base64.b64decode(data))).format == "JPEG"


def test_healthz_and_the_openapi_description(client):
    assert client.get("/healthz").json() == {"status": "ok", "models": ["light", "duo"]}
    operation = client.get("/openapi.json").json()["paths"]["/v1/stylize"]["post"]
    assert {"multipart/form-data", "image/jpeg", "image/png", "image/webp"} <= set(operation["requestBody"]["content"])
    assert {p["name"] for p in operation["parameters"]} == {"model", "style", "style_mix", "strength", "preserve_color",
                                                             "stroke_scale", "max_size", "format", "quality"}


def test_metrics_count_requests_latency_queue_and_images(client):
    client.post("/v1/stylize", content=png(PHOTO))
    client.post("/v1/stylize", content=b"not an image")
    client.get("/healthz")
    text = client.get("/metrics").text
    values = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\S+) (\S+)$", text, re.M)}
    assert values['fastnst_requests_total{endpoint="/v1/stylize",status="200"}'] == 1
    assert values['fastnst_requests_total{endpoint="/v1/stylize",status="400"}'] == 1
    assert values['fastnst_requests_total{endpoint="/healthz",status="200"}'] == 1
    buckets = [v for k, v in values.items() if k.startswith('fastnst_request_seconds_bucket{endpoint="/v1/stylize"')]
    assert buckets == sorted(buckets) and buckets[-1] == 2  # cumulative, +Inf = every request
    assert values['fastnst_request_seconds_count{endpoint="/v1/stylize"}'] == 2
    assert values["fastnst_images_total"] == 1 and values["fastnst_images_per_second"] > 0
    assert values["fastnst_queue_depth"] == 0 and values["fastnst_requests_in_flight"] == 0


def test_the_page_is_one_self_contained_file(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    links = re.findall(r"""(?:src|href|url)\s*[=(]\s*["']?([^"')\s>]+)""", response.text)
    assert not [link for link in links if link.startswith(("http:", "https:", "//"))]
    assert 'id="file"' in response.text and "v1/stylize" in response.text


# -- bad input --------------------------------------------------------------------------------------

def bomb_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A valid PNG header declaring ``width`` × ``height`` pixels, with almost no data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def gif() -> bytes:
    buffer = io.BytesIO()
    PHOTO.save(buffer, format="GIF")
    return buffer.getvalue()


@pytest.mark.parametrize("body, status, words", [
    (bomb_png(), 413, "decompression bomb"),
    (b"hello, not an image", 400, "not an image in a format fastnst reads (JPEG, PNG, WEBP)"),
    (gif(), 400, "not an image in a format fastnst reads (JPEG, PNG, WEBP)"),
    (png(PHOTO)[:300], 400, "cannot decode"),
    (b"", 400, "no image"),
])
def test_bad_images_are_refused_with_a_named_problem(client, body, status, words):
    start = time.perf_counter()
    response = client.post("/v1/stylize", content=body)
    assert response.status_code == status and words in response.json()["detail"]
    assert time.perf_counter() - start < 5  # a bomb is refused from its header, never decoded


def test_pixels_and_bytes_over_the_limits_are_413(make_client):
    client, _ = make_client(max_pixels=1000, max_upload_mb=0.01)
    response = client.post("/v1/stylize", content=png(PHOTO))
    assert response.status_code == 413 and "60x44 = 2,640 pixels" in response.json()["detail"]
    big = png(gradient_image(120, 120))  # over 30 KB of noise, over 0.01 MB
    assert client.post("/v1/stylize", content=big).status_code == 413
    chunks = (big[i:i + 1000] for i in range(0, len(big), 1000))  # no Content-Length: counted while read
    response = client.post("/v1/stylize", content=chunks)
    assert response.status_code == 413 and "limit of 0.01 MB" in response.json()["detail"]
    form = client.post("/v1/stylize", files={"image": ("big.png", big, "image/png")})
    assert form.status_code == 413


def test_a_photo_too_wide_for_webp_is_refused_before_computing(client, monkeypatch):
    monkeypatch.setattr(client.app.state.engine, "compute", lambda group: pytest.fail("computed"))
    wide = png(Image.new("RGB", (16384, 2), (90, 120, 200)))
    response = client.post("/v1/stylize?format=webp", content=wide)
    assert response.status_code == 422 and "16384x2 is larger than webp can hold" in response.json()["detail"]


def test_a_multipart_body_without_the_image_field_is_400(client):
    response = client.post("/v1/stylize", files={"photo": ("x.png", png(PHOTO), "image/png")})
    assert response.status_code == 400 and "'image'" in response.json()["detail"]


@pytest.mark.parametrize("query, status, words", [
    ("model=nope", 404, "no model 'nope'; this server has light, duo"),
    ("model=duo&style=sepia", 404, "model 'duo': style: the model has no style 'sepia'; its styles are 0=warm, 1=cool"),
    ("model=duo&style=7", 404, "no style '7'"),
    ("model=duo&style_mix=warm%3D1%2Csepia%3D1", 404, "no style 'sepia'"),
    ("model=duo&style=warm&style_mix=cool%3D1", 422, "not both"),
    ("model=duo&style_mix=warm", 422, "NAME=WEIGHT"),
    ("model=duo&style_mix=warm%3D0", 422, "sum to 0"),
    ("strength=1.5", 422, "strength: Input should be less than or equal to 1"),
    ("stroke_scale=0.1", 422, "stroke_scale"),
    ("format=gif", 422, "format"),
    ("quality=0", 422, "quality"),
    ("max_size=0", 422, "max_size"),
    ("preserve_color=maybe", 422, "preserve_color"),
])
def test_bad_parameters_and_unknown_names(client, query, status, words):
    response = client.post(f"/v1/stylize?{query}", content=png(PHOTO))
    assert response.status_code == status and words in response.json()["detail"], response.text


def test_bad_requests_among_good_ones_affect_only_themselves(client, model_file):
    bodies = [png(PHOTO), bomb_png(), png(PHOTO), b"junk", png(PHOTO)[:200], png(PHOTO)]
    responses: list = [None] * len(bodies)

    def send(i: int) -> None:
        responses[i] = client.post("/v1/stylize?format=png", content=bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert [r.status_code for r in responses] == [200, 413, 200, 400, 400, 200]
    for i in (0, 2, 5):
        assert np.abs(result(responses[i]) - expected(model_file)).max() <= 1


# -- the queue: full, slow, failing -----------------------------------------------------------------

def blocked(engine, monkeypatch) -> tuple[threading.Event, threading.Event]:
    """Make the engine's passes wait for ``release``; ``started`` is set when one begins."""
    started, release, compute = threading.Event(), threading.Event(), engine.compute

    def slow(group):
        started.set()
        release.wait(WAIT)
        return compute(group)

    monkeypatch.setattr(engine, "compute", slow)
    return started, release


def test_a_full_queue_answers_503_with_retry_after_and_recovers(make_client, monkeypatch):
    client, app = make_client(queue_size=1)
    started, release = blocked(app.state.engine, monkeypatch)
    first: dict = {}
    thread = threading.Thread(target=lambda: first.update(response=client.post("/v1/stylize", content=png(PHOTO))))
    thread.start()
    try:
        assert started.wait(WAIT)
        response = client.post("/v1/stylize", content=png(PHOTO))
        assert response.status_code == 503 and int(response.headers["retry-after"]) >= 1
        assert "busy" in response.json()["detail"]
    finally:
        release.set()
        thread.join(WAIT)
    assert first["response"].status_code == 200
    assert client.post("/v1/stylize", content=png(PHOTO)).status_code == 200


def test_a_request_past_the_timeout_is_504_and_the_next_one_works(make_client, monkeypatch):
    client, app = make_client(timeout=1.0)
    engine = app.state.engine
    started, release = blocked(engine, monkeypatch)
    try:
        response = client.post("/v1/stylize", content=png(PHOTO))
        assert response.status_code == 504 and "not done within 1 s" in response.json()["detail"]
        assert started.is_set()
    finally:
        release.set()
    deadline = time.monotonic() + WAIT
    while engine.active and time.monotonic() < deadline:  # the abandoned pass finishes, its result is dropped
        time.sleep(0.05)
    assert client.post("/v1/stylize", content=png(PHOTO)).status_code == 200


def run_jobs(engine: Engine, jobs: list[tuple[str, np.ndarray, Options]]) -> list[np.ndarray]:
    """Submit every job at once to a started engine; their results, in order."""
    async def submit():
        waiting = [engine.stylize(engine.model(name), pixels, options) for name, pixels, options in jobs]
        return await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), WAIT)

    engine.start()
    try:
        return asyncio.run(submit())
    finally:
        engine.stop()


def test_equal_jobs_are_batched_and_a_failed_batch_fails_only_its_bad_job(model_file, duo_file, monkeypatch):
    config = ServeConfig(models=(str(model_file), str(duo_file)), backend="torch", batch_size=4, batch_wait_ms=1000)
    engine = Engine.load(config)
    sizes, compute = [], engine.compute

    def spy(group):
        sizes.append(len(group))
        if any(job.pixels[0, 0, 0] == 0 for job in group):  # the poisoned photo's pass fails
            raise RuntimeError("simulated failure")
        return compute(group)

    monkeypatch.setattr(engine, "compute", spy)
    photo, poisoned = np.asarray(PHOTO).copy(), np.asarray(PHOTO).copy()
    photo[0, 0, 0], poisoned[0, 0, 0] = 1, 0
    results = run_jobs(engine, [("light", photo, Options())] * 3 + [("light", poisoned, Options())])
    assert sizes == [4, 1, 1, 1, 1]  # one batch of four; when it failed, each photo alone
    want = expected(model_file, Image.fromarray(photo))
    for got in results[:3]:
        assert np.abs(got.astype(np.int16) - want).max() <= 1
    assert "the network failed on a 60x44 photo (simulated failure)" in str(results[3])


def test_different_sizes_and_options_are_never_batched_together(model_file, duo_file, monkeypatch):
    engine = Engine.load(ServeConfig(models=(str(model_file), str(duo_file)), backend="torch", batch_size=8,
                                     batch_wait_ms=1000))
    sizes, compute = [], engine.compute
    monkeypatch.setattr(engine, "compute", lambda group: sizes.append(len(group)) or compute(group))
    small = np.asarray(PHOTO.resize((30, 22)))
    jobs = [("duo", np.asarray(PHOTO), Options()), ("duo", small, Options()), ("duo", np.asarray(PHOTO), Options()),
            ("duo", np.asarray(PHOTO), Options(strength=0.5))]
    results = run_jobs(engine, jobs)
    assert sorted(sizes) == [1, 1, 2]
    assert np.abs(results[3].astype(np.int16) - expected(duo_file, strength=0.5)).max() <= 1


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_concurrent_requests_with_different_options_never_interfere(model_file, duo_file, backend):
    if backend == "openvino":
        pytest.importorskip("openvino")
    engine = Engine.load(ServeConfig(models=(str(duo_file),), backend=backend, workers=2))
    assert engine.workers == 2
    looks = [Options(), Options(style=(0.0, 1.0)), Options(strength=0.3, preserve_color=True, style=(0.0, 1.0)),
             Options(stroke_scale=2.0, style=(0.5, 0.5))]
    jobs = [("duo", np.asarray(PHOTO), looks[i % len(looks)]) for i in range(12)]
    results = run_jobs(engine, jobs)
    reference = Stylizer(duo_file, backend=backend)
    reference.backend.set_streams(2)  # OpenVINO compiles its graph for two streams, as the engine's
    for (_, _, look), got in zip(jobs, results):
        mix = None if look.style is None else dict(enumerate(look.style))
        reference.backend.style = resolve_style(reference.style_names, mix=mix)
        reference.strength, reference.preserve_color = look.strength, look.preserve_color
        reference.stroke_scale = look.stroke_scale
        want = np.asarray(reference.stylize_image(PHOTO), np.int16)
        assert np.abs(got.astype(np.int16) - want).max() <= 1, look


# -- the API key and CORS ---------------------------------------------------------------------------

KEY = "k" * 24


def test_the_api_key_guards_the_api_but_not_the_page_or_health(make_client):
    client, _ = make_client(api_key=KEY)
    for path in ("/v1/models", "/metrics"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer wrong-key-wrong-key"}).status_code == 401
        assert client.get(path, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert client.get(path, headers={"X-API-Key": KEY}).status_code == 200
    response = client.post("/v1/stylize", content=png(PHOTO))
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer KEY" in response.json()["detail"]
    assert client.post("/v1/stylize", content=png(PHOTO), headers={"X-API-Key": KEY}).status_code == 200
    assert client.get("/").status_code == 200 and client.get("/healthz").status_code == 200


def test_cors_is_off_unless_an_origin_is_given(make_client):
    origin = "https://photos.example.org"
    preflight = {"Origin": origin, "Access-Control-Request-Method": "POST"}
    closed, _ = make_client()
    assert "access-control-allow-origin" not in closed.get("/v1/models", headers={"Origin": origin}).headers
    assert "access-control-allow-origin" not in closed.options("/v1/stylize", headers=preflight).headers
    open_, _ = make_client(cors_origins=(origin,))
    assert open_.get("/v1/models", headers={"Origin": origin}).headers["access-control-allow-origin"] == origin
    answer = open_.options("/v1/stylize", headers=preflight)
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == origin
    other = open_.get("/v1/models", headers={"Origin": "https://elsewhere.example.org"})
    assert "access-control-allow-origin" not in other.headers


# -- configuration and the command line -------------------------------------------------------------

@pytest.mark.parametrize("options, words", [
    ({"host": "0.0.0.0"}, "--api-key"),
    ({"host": "192.168.1.5"}, "--insecure"),
    ({"api_key": "short"}, "at least 16 characters"),
    ({"port": 70000}, "--port"),
    ({"queue_size": 0}, "--queue-size"),
    ({"timeout": 0}, "--timeout"),
    ({"workers": 0}, "--workers"),
    ({"cors_origins": ("example.org",)}, "https://"),
    ({"backend": "tensorrt"}, "unknown backend"),
    ({"models": ("missing.safetensors",)}, "does not exist"),
])
def test_serve_config_refuses_bad_options_in_one_line(model_file, options, words):
    options = {"models": (str(model_file),), **options}
    with pytest.raises(ConfigError, match=re.escape(words)) as error:
        ServeConfig(**options)
    assert "\n" not in str(error.value)


def test_serve_config_accepts_exposure_with_a_key_or_insecure_and_defaults_to_the_bundled_models(model_file, tmp_path):
    assert ServeConfig(models=(str(model_file),), host="0.0.0.0", api_key=KEY).exposed is False
    assert ServeConfig(models=(str(model_file),), host="0.0.0.0", insecure=True).exposed is True
    assert ServeConfig(models=(str(model_file),), host="::1").exposed is False
    bundled = sorted((REPO / "checkpoints").glob("*.safetensors"))
    if bundled:
        assert ServeConfig().model_names == tuple(p.stem for p in bundled)
    twin = tmp_path / "twin"
    twin.mkdir()
    copy = twin / model_file.name
    copy.write_bytes(model_file.read_bytes())
    with pytest.raises(ConfigError, match="both named 'light'"):
        ServeConfig(models=(str(model_file), str(copy)))


def test_help_lists_serve_without_importing_fastapi_or_torch():
    code = ("import sys; from fastnst.cli import main; main(['--help']); main(['serve', '--help']); "
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "serve" in done.stdout and "--max-upload-mb" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_the_command_refuses_an_exposed_host_without_a_key(model_file, capsys):
    assert main(["serve", "-m", str(model_file), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastnst serve: error:") and "--api-key" in err and len(err.splitlines()) == 1


def test_the_command_serves_until_interrupted(model_file, tmp_path):
    import signal

    command = [sys.executable, "-m", "fastnst", "serve", "-m", str(model_file), "--backend", "torch", "--port", "0"]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(server.stderr.readline, "")), daemon=True)
        reader.start()
        deadline = time.monotonic() + 60
        while not any("http://" in line for line in lines) and time.monotonic() < deadline and server.poll() is None:
            time.sleep(0.1)
        address = re.search(r"http://[\d.]+:\d+/", "".join(lines))
        assert address, "".join(lines)
        with urllib.request.urlopen(address.group(0) + "healthz", timeout=WAIT) as answer:
            assert answer.status == 200 and b'"light"' in answer.read()
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=WAIT) == 130
        reader.join(WAIT)
        assert "fastnst serve: interrupted" in "".join(lines)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=WAIT)
