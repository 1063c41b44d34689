"""The page of ``alexnet serve`` in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``)
driven by Selenium opens it on 127.0.0.1, uploads images through the file input, and must show the API's top-5 and,
next to it, the API's Grad-CAM overlay (served with ``--explain``), decoded and drawn by the browser.

Set ``ALEXNET_SERVE_SCREENSHOT=docs/serve.png`` to keep the screenshot (it always goes to the test's temp dir).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

pytest.importorskip("fastapi", reason="alexnet serve needs pip install 'alexnet[serve]'")
httpx = pytest.importorskip("httpx", reason="the API check needs httpx (pip install 'alexnet[dev]')")
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="the browser test needs selenium (pip install 'alexnet[dev]')"
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip(
        "the browser test needs Chromium and its driver (Debian: apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

import alexnet  # noqa: E402
from alexnet.serve.app import create_app  # noqa: E402
from alexnet.serve.config import ServeConfig  # noqa: E402
from tests.test_serve import CLASSES, live_server  # noqa: E402
from tests.test_serve import model_path as model_path  # noqa: E402 (a fixture, shared)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[Path]:
    """Two drawn pictures (a JPEG and a PNG) and a text file that is not an image."""
    root = tmp_path_factory.mktemp("browser")
    out = []
    for name, colour, shape in [("sunset.jpg", (238, 120, 40), "ellipse"), ("lake.png", (40, 110, 200), "rect")]:
        img = Image.new("RGB", (160, 120), (250, 245, 235))
        draw = ImageDraw.Draw(img)
        getattr(draw, "ellipse" if shape == "ellipse" else "rectangle")((30, 20, 130, 100), fill=colour)
        img.save(root / name)
        out.append(root / name)
    (root / "notes.txt").write_text("not an image")
    out.append(root / "notes.txt")
    return out


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=760,1040", "--force-prefers-reduced-motion"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_the_page_shows_the_apis_top5_for_uploaded_images(browser, model_path, pictures, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    predictor = alexnet.load(model_path, device="cpu")
    # One image per forward pass: the page uploads in parallel, and an image batched with another comes out of the
    # CPU kernels a few 1e-8 away from the same image alone (see alexnet.serve.batching); here the page is on trial.
    config = ServeConfig(max_batch=1, decode_threads=1, explain=True)
    with live_server(create_app(predictor, config, model_path=str(model_path))) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: d.find_element(By.ID, "name").text == "tiny")
        assert "3 classes" in browser.find_element(By.ID, "model").text
        # keyboard: the first Tab reaches the file input (the "Choose images" button)
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
        assert browser.switch_to.active_element.get_attribute("id") == "files"

        browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in pictures))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card:not([data-state=pending])")) == 3)
        cards = {c.find_element(By.TAG_NAME, "h2").text: c for c in browser.find_elements(By.CSS_SELECTOR, ".card")}
        assert set(cards) == {p.name for p in pictures}

        for picture in pictures[:2]:
            card = cards[picture.name]
            assert card.get_attribute("data-state") == "done"
            shown = [(li.get_attribute("data-class"), float(li.get_attribute("data-probability")))
                     for li in card.find_elements(By.CSS_SELECTOR, ".top li")]  # fmt: skip
            r = httpx.post(url + "/predict", files=[("file", (picture.name, picture.read_bytes()))])
            assert shown == [(t["class"], t["probability"]) for t in r.json()["results"][0]["top"]]
            assert len(shown) == len(CLASSES)  # top-5 of a 3-class model: all three
            first = card.find_element(By.CSS_SELECTOR, ".top li")
            assert first.text.split() == [shown[0][0], f"{100 * shown[0][1]:.1f}%"]  # the label and the percentage

        # Grad-CAM next to the top-5: the API's overlay for that file, drawn (decoded, 64 x 64 px) by the browser
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card[data-cam]")) == 2)
        for picture in pictures[:2]:
            card = cards[picture.name]
            assert card.get_attribute("data-cam") == "done"
            overlay = card.find_element(By.CSS_SELECTOR, ".cam img")
            r = httpx.post(url + "/explain", files=[("file", (picture.name, picture.read_bytes()))])
            assert overlay.get_attribute("src") == r.json()["results"][0]["overlay"]
            drawn = browser.execute_script("return [arguments[0].complete, arguments[0].naturalWidth]", overlay)
            assert drawn == [True, 64]
            assert (
                overlay.rect["width"] > 0 and overlay.rect["x"] > card.find_element(By.CSS_SELECTOR, ".top").rect["x"]
            )

        error = cards["notes.txt"]
        assert error.get_attribute("data-state") == "error"
        assert "notes.txt: not an image" in error.find_element(By.CSS_SELECTOR, ".error").text
        assert error.get_attribute("data-cam") is None  # no overlay for a file that was refused

        assert browser.execute_script("return document.querySelectorAll('.card img[src^=\"blob:\"]').length") >= 2
        browser.execute_script("document.activeElement.blur(); document.querySelector('details').open = true")
        shot = tmp_path / "serve.png"
        browser.save_screenshot(str(shot))
        browser.set_window_size(390, 844)  # a phone: nothing wider than the screen
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    assert shot.stat().st_size > 0
    keep = os.environ.get("ALEXNET_SERVE_SCREENSHOT")
    if keep:  # for the docs: 64 colours are plenty for flat bars and text, and a third of the bytes
        Image.open(shot).quantize(64).save(keep, optimize=True)
    print(f"screenshot: {shot}")
