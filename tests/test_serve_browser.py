"""The web page in a real browser: headless Chromium, driven by Selenium, against a real uvicorn server.

A phone-sized window loads the page, uploads a photo, picks a model and a style
and waits for the painting; the result must be the photo's size, differ from
it, and be what ``Stylizer`` gives for that style. Skips when Chromium,
chromedriver or Selenium are absent (Debian: ``apt-get install chromium
chromium-driver``; ``pip install selenium``).
"""

from __future__ import annotations

import base64
import io
import shutil
import threading
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="fastnst serve needs FastAPI: pip install 'fastnst[serve]'")
pytest.importorskip("uvicorn", reason="fastnst serve needs uvicorn: pip install 'fastnst[serve]'")
pytest.importorskip("selenium", reason="the browser test needs Selenium: pip install selenium")

import uvicorn  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from fastnst.serve import ServeConfig, create_app  # noqa: E402
from fastnst.serve.app import listen, url  # noqa: E402
from fastnst.stylize import Stylizer  # noqa: E402

from conftest import gradient_image  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on PATH (Debian: apt-get install chromium)"),
    pytest.mark.skipif(CHROMEDRIVER is None,
                       reason="no chromedriver on PATH (Debian: apt-get install chromium-driver)"),
]
WAIT = 60  # seconds: starting the server and the browser, and the painting, on a loaded machine
PHONE = (390, 844)  # a phone's screen in CSS pixels


@pytest.fixture
def server(model_file, duo_file):
    """A real uvicorn server on a free loopback port, in a thread; its URL."""
    config = ServeConfig(models=(str(model_file), str(duo_file)), backend="torch", port=0, timeout=WAIT)
    app = create_app(config)
    sock = listen(config)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    yield url(sock)
    server.should_exit = True
    thread.join(WAIT)
    sock.close()


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium in a phone-sized window with a fresh profile, nothing fetched from the network."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.add_experimental_option("mobileEmulation", {"deviceMetrics": {"width": PHONE[0], "height": PHONE[1],
                                                                          "pixelRatio": 1}})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    yield driver
    driver.quit()


# The shown result's pixels, as the browser decoded them, through a canvas (the page's policy lets it fetch
# nothing but its own server, so the blob: URL cannot be read with fetch).
READ_PIXELS = """
const image = arguments[0], canvas = document.createElement("canvas");
canvas.width = image.naturalWidth;
canvas.height = image.naturalHeight;
canvas.getContext("2d").drawImage(image, 0, 0);
return canvas.toDataURL("image/png").split(",")[1];
"""


def test_the_page_stylizes_a_photo_in_a_phone_sized_browser(server, browser, duo_file, tmp_path):
    photo = gradient_image(160, 120, seed=5)
    photo.save(tmp_path / "photo.jpg", quality=95)
    wait = WebDriverWait(browser, WAIT)
    browser.get(server)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#styles .style"))
    Select(browser.find_element(By.ID, "model")).select_by_value("duo")
    browser.find_element(By.ID, "file").send_keys(str(tmp_path / "photo.jpg"))
    browser.find_element(By.CSS_SELECTOR, '#styles .style[data-style="cool"]').click()
    browser.find_element(By.ID, "go").click()
    after = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#after[data-done]"))
    size = browser.execute_script("const a = arguments[0]; return [a.naturalWidth, a.naturalHeight];", after)
    browser.save_screenshot(str(tmp_path / "page.png"))

    assert tuple(size) == photo.size
    assert after.get_attribute("data-style") == "cool"
    shown = browser.execute_script(READ_PIXELS, after)
    got = np.asarray(Image.open(io.BytesIO(base64.b64decode(shown))).convert("RGB"), np.float64)
    sent = np.asarray(Image.open(tmp_path / "photo.jpg").convert("RGB"), np.float64)
    cool, warm = (np.asarray(Stylizer(duo_file, backend="torch", style=s).stylize_image(Image.fromarray(
        sent.astype(np.uint8))), np.float64) for s in ("cool", "warm"))
    assert np.abs(got - sent).mean() > 10  # painted, not the photo
    assert np.abs(got - cool).mean() < 3 < np.abs(got - warm).mean()  # with the style picked (JPEG-close)

    download = browser.find_element(By.ID, "download")
    assert download.get_attribute("href") == after.get_attribute("src")
    assert download.get_attribute("download") == "photo-cool.jpg"
    assert "Done" in browser.find_element(By.ID, "status").text
    width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth];")
    assert width == [PHONE[0], PHONE[0]], "the page is not laid out for a phone's width"
    assert (tmp_path / "page.png").stat().st_size > 1000
