"""The web page at ``/``, driven in headless Chromium against the real server and models:
locate mode (queries, boxes, threshold, download) and describe mode (boxes drawn with the
mouse, captions).

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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import sceneloc
from sceneloc.demo import demo_scene
from sceneloc.results import PALETTE
from sceneloc.server import create_app

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed: pip install -e '.[dev]'"
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium executable on PATH: install Debian's package (apt-get install chromium)",
)

PHONE = {"width": 390, "height": 844}


@contextmanager
def serving(app) -> Iterator[str]:
    """``app`` served by uvicorn on 127.0.0.1, in a thread; yields its URL."""
    import uvicorn

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
def grounder():
    return sceneloc.load("native-synth", device="cpu")


@pytest.fixture(scope="module")
def base_url(grounder):
    """The real app with the bundled ``native-synth`` model, which locates only."""
    with serving(create_app(grounder)) as url:
        yield url


@pytest.fixture(scope="module")
def describer(florence2_dir):
    return sceneloc.load(str(florence2_dir), task="describe", device="cpu")


@pytest.fixture(scope="module")
def describe_url(grounder, describer):
    """``native-synth`` locating, a tiny Florence-2 describing."""
    with serving(create_app(grounder, describer=describer)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


def open_page(browser, url):
    context = browser.new_context(base_url=url, accept_downloads=True)
    page = context.new_page()
    page.goto("/")
    return context, page


@pytest.fixture
def page(browser, base_url):
    context, page = open_page(browser, base_url)
    yield page
    context.close()


@pytest.fixture
def describe_page(browser, describe_url):
    context, page = open_page(browser, describe_url)
    page.get_by_label("Describe").check()
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
    located = {index: answer["results"][index]["candidates"][0]["box"] for index in found}
    assert_drawn_at(page, answer["image"]["width"], located)


def assert_drawn_at(page, width, boxes):
    """The page shows exactly ``boxes`` ({colour index: [x1, y1, x2, y2] in pixels of an
    image ``width`` wide}), each in its colour, numbered, where it belongs on the picture."""
    shown = page.locator("#boxes .box")
    assert shown.count() == len(boxes)
    picture = page.locator("#picture").bounding_box()
    scale = picture["width"] / width
    for box, (index, (x1, y1, x2, _)) in zip(shown.all(), boxes.items()):
        colour = box.evaluate("e => getComputedStyle(e).borderTopColor")
        assert colour == rgb(PALETTE[index])
        assert box.inner_text() == str(index + 1)
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


def test_describe_mode_needs_a_model_that_describes(page):
    describe = page.get_by_label("Describe")
    sync_api.expect(describe).to_be_disabled()
    sync_api.expect(page.locator(".mode")).to_contain_text("--describe-model")


def draw(page, start, end):
    """Drag the mouse from ``start`` to ``end``, fractions of the picture's displayed size."""
    shown = page.locator("#picture").bounding_box()

    def at(x: float, y: float) -> tuple[float, float]:
        return shown["x"] + x * shown["width"], shown["y"] + y * shown["height"]

    page.mouse.move(*at(*start))
    page.mouse.down()
    page.mouse.move(*at(*end), steps=4)
    page.mouse.up()


def press_describe(page):
    with page.expect_response("**/v1/describe") as reply:
        page.get_by_role("button", name="Describe").click()
    assert reply.value.ok, reply.value.text()
    return reply.value.json()


def captions_listed(page) -> list[str]:
    return page.locator("#results li .caption").all_inner_texts()


def test_boxes_drawn_with_the_mouse_are_described(describe_page, describer):
    page = describe_page
    scene = demo_scene()
    width, height = scene.image.size
    page.set_input_files("#file", png_upload(scene.image))
    draw(page, (0.1, 0.2), (0.4, 0.5))
    draw(page, (0.6, 0.3), (1.2, 0.7))  # past the picture's right edge: stops there
    sync_api.expect(page.locator("#boxes .box.pending")).to_have_count(2)
    answer = press_describe(page)

    boxes = [region["box"] for region in answer["regions"]]  # as sent: whole pixels
    for box, (fx1, fy1, fx2, fy2) in zip(boxes, [(0.1, 0.2, 0.4, 0.5), (0.6, 0.3, 1.0, 0.7)]):
        assert box == pytest.approx([fx1 * width, fy1 * height, fx2 * width, fy2 * height], abs=1.5)
    assert boxes[1][2] == width

    # The captions listed, numbered like the boxes drawn, are the API's for these boxes.
    expected = describer.describe(scene.image, boxes).to_dict()
    assert answer["regions"] == expected["regions"]
    sync_api.expect(page.locator("#results li")).to_have_count(2)
    assert captions_listed(page) == [region["caption"] for region in expected["regions"]]
    sync_api.expect(page.locator("#boxes .box.pending")).to_have_count(0)
    assert_drawn_at(page, width, dict(enumerate(boxes)))
    sync_api.expect(page.locator("[aria-live]")).to_contain_text("Described 2 regions")
    assert download_json(page) == answer

    # Back in locate mode the queries come back and the regions go; describe keeps them.
    page.get_by_label("Locate").check()
    sync_api.expect(page.get_by_label("Queries, one per line")).to_be_visible()
    sync_api.expect(page.locator("#boxes .box")).to_have_count(0)
    page.get_by_label("Describe").check()
    assert captions_listed(page) == [region["caption"] for region in expected["regions"]]


def test_without_boxes_the_model_finds_the_regions(describe_page, describer):
    page = describe_page
    scene = demo_scene()
    page.set_input_files("#file", png_upload(scene.image))
    draw(page, (0.1, 0.1), (0.3, 0.3))
    page.get_by_role("button", name="Clear boxes").click()
    sync_api.expect(page.locator("#boxes .box")).to_have_count(0)
    answer = press_describe(page)  # with no box: the regions the model finds
    expected = describer.describe(scene.image).to_dict()
    assert answer["regions"] == expected["regions"]
    assert captions_listed(page) == [region["caption"] for region in expected["regions"]]
    regions = [region["box"] for region in expected["regions"]]
    assert_drawn_at(page, scene.image.width, dict(enumerate(regions)))


def test_describe_errors_are_announced(describe_page):
    page = describe_page
    page.set_input_files("#file", {"name": "x.png", "mimeType": "image/png", "buffer": b"not"})
    with page.expect_response("**/v1/describe") as reply:
        page.get_by_role("button", name="Describe").click()
    assert reply.value.status == 400
    sync_api.expect(page.locator("[aria-live]")).to_have_text(reply.value.json()["error"])
    assert page.locator("#results li").count() == 0
