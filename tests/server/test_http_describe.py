"""``POST /v1/describe`` in-process with a real (tiny Florence-2) model: answers equal the
Python API's, every bad input has its status, and describe shares locate's queue."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from serving import assert_error, post, running_server
from typer.testing import CliRunner

import sceneloc
from checkpoints.native import build_native
from sceneloc.cli import app as cli_app
from sceneloc.server import create_app
from test_images import huge_png_header, png_bytes

MAX_UPLOAD = 400_000
MAX_PIXELS = 1000 * 1000
BOXES = ["10,10,50,60", "60,15,200,80"]  # the second reaches past the 160x96 scene


@pytest.fixture(scope="module")
def describer(florence2_dir) -> sceneloc.Describer:
    return sceneloc.load(str(florence2_dir), task="describe", device="cpu")


@pytest.fixture(scope="module")
def client(florence2_dir):
    """The server of a model that locates and describes: it describes with its own weights."""
    grounder = sceneloc.load(str(florence2_dir), device="cpu")
    app = create_app(grounder, max_upload_bytes=MAX_UPLOAD, max_pixels=MAX_PIXELS)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def scene_png(scene) -> bytes:
    return png_bytes(scene)


def describe(client: TestClient, image: bytes | None, boxes=(), **fields):
    files = {"image": ("scene.png", image, "image/png")} if image is not None else None
    return client.post("/v1/describe", files=files, data={"box": list(boxes)} | fields)


def expected(answer: sceneloc.DescribeAnswer) -> dict:
    """The API's answer as the server gives it: named after the upload, without timing."""
    payload = answer.to_dict()
    return payload | {"image": payload["image"] | {"path": "scene.png"}}


def test_describe_answers_like_describe_json_plus_timing(client, describer, scene, scene_png):
    response = describe(client, scene_png, BOXES)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload.pop("timing_ms") > 0
    assert payload == expected(describer.describe(scene, BOXES))
    assert [r["box"] for r in payload["regions"]] == [[10, 10, 50, 60], [60, 15, 160, 80]]
    assert all(r["caption"].strip() for r in payload["regions"])


def test_without_boxes_the_model_finds_the_regions(client, describer, scene, scene_png):
    response = describe(client, scene_png)
    assert response.status_code == 200, response.text
    payload = response.json()
    del payload["timing_ms"]
    assert payload == expected(describer.describe(scene))


def test_generation_settings_are_honoured(client, describer, scene, scene_png):
    response = describe(client, scene_png, BOXES[:1], max_new_tokens="3", beams="1")
    assert response.status_code == 200, response.text
    shortened = describer.describe(scene, BOXES[:1], max_new_tokens=3, num_beams=1)
    assert response.json()["regions"] == expected(shortened)["regions"]


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        (["a,b,c,d"], "is not four numbers"),
        (["10,10,50"], "has 3 values, not four"),
        (["10,10,50,60,70"], "has 5 values, not four"),
        ([""], "is not four numbers"),
        (["nan,10,50,60"], "box 1 (nan, 10, 50, 60) is not four finite numbers"),
        (["10,10,50,60", "50,10,50,60"], "box 2 (50, 10, 50, 60) is empty"),
        (["10,60,50,10"], "is empty: need x2 > x1 and y2 > y1"),
        (["200,10,300,60"], "lies wholly outside the 160x96 image"),
    ],
)
def test_bad_boxes_are_400(client, scene_png, boxes, message):
    assert_error(describe(client, scene_png, boxes), 400, message)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_new_tokens": "0"}, "max_new_tokens: Input should be greater than or equal to 1"),
        ({"beams": "two"}, "beams: Input should be a valid integer"),
        ({"beams": "0"}, "beams: Input should be greater than or equal to 1"),
    ],
)
def test_malformed_fields_are_422(client, scene_png, fields, message):
    assert_error(describe(client, scene_png, BOXES, **fields), 422, message)


@pytest.mark.parametrize(
    ("image", "status", "message"),
    [
        (b"not an image at all", 400, "not an image"),
        (png_bytes(Image.new("RGB", (1100, 1000), "white")), 413, "pixels"),
        (huge_png_header(), 413, "pixels"),
        (os.urandom(MAX_UPLOAD + 1), 413, "limit of 400,000 bytes"),
        (None, 422, "image: Field required"),
    ],
)
def test_image_and_upload_errors_match_locate(client, image, status, message):
    assert_error(describe(client, image, BOXES), status, message)


def test_models_say_one_model_serves_both(client):
    (model,) = client.get("/v1/models").json()["models"]
    assert model["serves"] == ["locate", "describe"] == model["tasks"]
    assert "dense captions" in model["capabilities"]


def test_openapi_documents_describe(client):
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/v1/describe"]["post"]
    assert {"200", "400", "413", "422", "501", "503"} <= set(operation["responses"])
    answer = schema["components"]["schemas"]["DescribeResponse"]
    assert set(answer["properties"]) == {"image", "model", "regions", "timing_ms"}


@pytest.fixture(scope="module")
def grounder() -> sceneloc.Grounder:
    return sceneloc.load("native-synth", device="cpu")


def test_a_model_that_only_locates_serves_no_describe(grounder, scene_png):
    with TestClient(create_app(grounder)) as test_client:
        assert_error(describe(test_client, scene_png, BOXES), 501, "--describe-model")
        (model,) = test_client.get("/v1/models").json()["models"]
    assert model["serves"] == ["locate"]


def test_a_describer_of_its_own_beside_the_grounder(grounder, describer, scene, scene_png):
    with TestClient(create_app(grounder, describer=describer)) as test_client:
        described = describe(test_client, scene_png, BOXES)
        located = post(test_client, scene_png, ["a circle"])
        models = test_client.get("/v1/models").json()["models"]
    assert described.status_code == 200, described.text
    assert described.json()["model"] == describer.name
    assert described.json()["regions"] == expected(describer.describe(scene, BOXES))["regions"]
    assert located.json()["model"] == "native-synth"
    assert [(m["name"], m["serves"]) for m in models] == [
        ("native-synth", ["locate"]),
        (describer.name, ["describe"]),
    ]


class BlockingDescriber(sceneloc.Describer):
    """The real model, held at the start of ``describe`` until the test lets it go."""

    def __init__(self, describer: sceneloc.Describer) -> None:
        super().__init__(describer.backend, describer.name)
        self.started = threading.Event()
        self.release = threading.Event()

    def describe(self, *args, **kwargs):
        self.started.set()
        assert self.release.wait(timeout=30)
        return super().describe(*args, **kwargs)


def test_describe_and_locate_share_the_queue(florence2_dir, describer, scene_png):
    grounder = sceneloc.load(str(florence2_dir), device="cpu")
    blocking = BlockingDescriber(describer)
    app = create_app(grounder, describer=blocking, workers=1, queue_limit=1)
    with TestClient(app) as test_client, ThreadPoolExecutor(1) as pool:
        first = pool.submit(describe, test_client, scene_png, BOXES)
        assert blocking.started.wait(timeout=30)
        for refused in (describe(test_client, scene_png, BOXES), post(test_client, scene_png)):
            assert_error(refused, 503, "busy")
            assert int(refused.headers["retry-after"]) >= 1
        blocking.release.set()
        assert first.result(timeout=30).status_code == 200
        assert describe(test_client, scene_png, BOXES).status_code == 200


def test_sceneloc_serve_describe_model_in_a_subprocess(tmp_path, florence2_dir, scene_png):
    model = build_native(tmp_path / "tiny", ["a circle"])
    args = ["--model", str(model), "--describe-model", str(florence2_dir), "--device", "cpu"]
    with running_server(args, tmp_path / "server.log") as url:
        files = {"image": ("scene.png", scene_png, "image/png")}
        response = httpx.post(f"{url}/v1/describe", files=files, data={"box": BOXES})
        models = httpx.get(f"{url}/v1/models").json()["models"]
    assert response.status_code == 200, response.text
    assert response.json()["model"] == str(florence2_dir)
    assert len(response.json()["regions"]) == len(BOXES)
    assert [m["serves"] for m in models] == [["locate"], ["describe"]]


def test_serve_refuses_a_describe_model_that_does_not_describe():
    result = CliRunner().invoke(cli_app, ["serve", "--describe-model", "grounding-dino-base"])
    assert result.exit_code == 2
    assert "not describe" in result.stderr and len(result.stderr.strip().splitlines()) == 1
