"""The web page at ``/``, driven in headless Chromium against the real server and model.

Needs Playwright's Python package (the ``dev`` extra) and a Chromium executable: Debian's
``chromium`` package, which the README's set-up (and so CI) installs where it is missing.
Playwright's own browser download is not used, so the test runs offline.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from sceneloc.demo import demo_scene
from sceneloc.results import PALETTE

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed: pip install -e '.[dev]'"
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium executable on PATH: install Debian's package (apt-get install chromium)",
)

PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def base_url():
    """The real app with the bundled ``native-synth`` model, served by uvicorn on 127.0.0.1."""
    import uvicorn

    import sceneloc
    from sceneloc.server import create_app

    app = create_app(sceneloc.load("native-synth", device="cpu"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, base_url):
    context = browser.new_context(base_url=base_url, accept_downloads=True)
    page = context.new_page()
    page.goto("/")
    yield page
    context.close()


def png_upload(image, name="scene.png"):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"name": name, "mimeType": "image/png", "buffer": buffer.getvalue()}


def rgb(hex_colour):
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def download_json(page):
    with page.expect_download() as info:
        page.get_by_role("button", name="Download JSON").click()
    assert info.value.suggested_filename == "scene.sceneloc.json"
    return json.loads(Path(info.value.path()).read_text())


def assert_boxes_drawn(page, answer, found):
    """One box per found query, in that query's colour, where the answer puts it."""
    boxes = page.locator("#boxes .box")
    assert boxes.count() == len(found)
    picture = page.locator("#picture").bounding_box()
    scale = picture["width"] / answer["image"]["width"]
    for box, index in zip(boxes.all(), found):
        colour = box.evaluate("e => getComputedStyle(e).borderTopColor")
        assert colour == rgb(PALETTE[index])
        x1, y1, x2, _ = answer["results"][index]["candidates"][0]["box"]
        drawn = box.bounding_box()
        assert abs(drawn["x"] - picture["x"] - x1 * scale) < 2
        assert abs(drawn["y"] - picture["y"] - y1 * scale) < 2
        assert abs(drawn["width"] - (x2 - x1) * scale) < 2


def test_boxes_scores_threshold_and_download(page):
    scene = demo_scene()
    queries = [scene.queries[0], scene.queries[3], scene.queries[4]]  # attribute, group, absent
    locate_requests = []
    page.on("request", lambda r: "/v1/locate" in r.url and locate_requests.append(r))

    models = page.evaluate("fetch('/v1/models').then(r => r.json())")
    slider = page.get_by_label("Threshold")
    page.set_input_files("#file", png_upload(scene.image))
    page.get_by_label("Queries, one per line").fill("\n".join(queries))
    with page.expect_response("**/v1/locate") as reply:
        page.get_by_role("button", name="Locate").click()
    answer = reply.value.json()
    page.wait_for_selector("#results li >> nth=2")

    threshold = float(slider.input_value())
    assert threshold == models["models"][0]["default_threshold"]
    assert [r["query"] for r in answer["results"]] == queries
    found = [i for i, r in enumerate(answer["results"]) if r["candidates"][0]["score"] >= threshold]
    assert found, "the bundled model should find something in its own kind of scene"

    assert_boxes_drawn(page, answer, found)

    # Each query's line shows its score (and a crop) or says "not found".
    items = page.locator("#results li")
    for index, result in enumerate(answer["results"]):
        item = items.nth(index)
        score = result["candidates"][0]["score"]
        if index in found:
            assert f"score {score:.2f}" in item.inner_text()
            assert item.locator("canvas").count() == 1
        else:
            assert "not found" in item.inner_text()

    # Download JSON: the answer at the slider's threshold.
    saved = download_json(page)
    assert saved["threshold"] == threshold
    assert saved["image"] == answer["image"] and saved["model"] == answer["model"]
    for index, (mine, theirs) in enumerate(zip(saved["results"], answer["results"])):
        assert mine["query"] == theirs["query"]
        assert mine["box"] == (theirs["candidates"][0]["box"] if index in found else None)
        assert all(c["score"] >= threshold for c in mine["candidates"])

    # The slider re-filters without asking the model again: one step above the weakest
    # found score hides that box; at its maximum (reached by keyboard) only answers
    # scored 1 (a saturated sigmoid) stay.
    scores = [r["candidates"][0]["score"] for r in answer["results"]]
    raised = round(math.floor(min(scores[i] for i in found) * 100) / 100 + 0.01, 2)
    slider.fill(str(raised))
    boxes = page.locator("#boxes .box")
    assert boxes.count() == sum(score >= raised for score in scores)
    assert boxes.count() < len(found)
    slider.press("End")
    assert slider.input_value() == "1"
    certain = [score >= 1 for score in scores]
    assert boxes.count() == sum(certain) < len(found)
    assert items.filter(has_text="not found").count() == len(queries) - sum(certain)
    saved = download_json(page)["results"]
    assert [r["box"] is not None for r in saved] == certain
    assert len(locate_requests) == 1

    # On a phone-sized screen the page fits the width, the picture and its boxes scale down.
    slider.fill(str(threshold))
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert page.locator("#picture").bounding_box()["width"] < answer["image"]["width"]
    assert_boxes_drawn(page, answer, found)


def test_api_errors_are_announced(page):
    page.set_input_files("#file", {"name": "x.png", "mimeType": "image/png", "buffer": b"not"})
    page.get_by_label("Queries, one per line").fill("the red circle")
    with page.expect_response("**/v1/locate") as reply:
        page.get_by_label("Queries, one per line").press("Control+Enter")
    assert reply.value.status == 400
    message = page.locator("[aria-live]")
    sync_api.expect(message).to_have_text(reply.value.json()["error"])
    assert page.locator("#boxes .box").count() == 0
