"""The HTTP API in-process with real models: every status, the schema, the queue, the CLI."""

from __future__ import annotations

import http.server
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
from sceneloc.demo import demo_scene
from sceneloc.server import create_app
from test_images import huge_png_header, png_bytes

MAX_UPLOAD = 400_000
MAX_PIXELS = 1000 * 1000


@pytest.fixture(scope="module")
def grounder() -> sceneloc.Grounder:
    return sceneloc.load("native-synth", device="cpu")


@pytest.fixture(scope="module")
def client(grounder):
    app = create_app(grounder, max_upload_bytes=MAX_UPLOAD, max_pixels=MAX_PIXELS)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def scene():
    return demo_scene()


@pytest.fixture(scope="module")
def scene_png(scene) -> bytes:
    return png_bytes(scene.image)


def test_locate_answers_like_locate_json_plus_timing(client, grounder, scene, scene_png):
    response = post(client, scene_png, scene.queries)
    assert response.status_code == 200, response.text
    payload = response.json()
    timing = payload.pop("timing_ms")
    assert timing > 0
    expected = grounder.locate(scene.image, scene.queries).to_dict()
    assert payload == expected | {"image": expected["image"] | {"path": "scene.png"}}
    assert [r["query"] for r in payload["results"]] == scene.queries
    width, height = scene.image.size
    assert payload["image"] == {"path": "scene.png", "width": width, "height": height}
    assert any(r["candidates"] for r in payload["results"]), "the scene's things are found"


def test_threshold_is_honoured(client, scene, scene_png):
    everything = post(client, scene_png, scene.queries, threshold="0").json()["results"]
    scores = sorted(r["score"] for r in everything)
    assert all(r["box"] is not None for r in everything)
    cut = (scores[1] + scores[2]) / 2  # two queries fall under it, the others not
    kept = post(client, scene_png, scene.queries, threshold=str(cut)).json()["results"]
    assert [r["box"] is not None for r in kept] == [r["score"] >= cut for r in everything]


def test_top_k_is_honoured(grounding_dino_dir):
    """The native model gives one candidate per query; Grounding DINO ranks several."""
    grounder = sceneloc.load(str(grounding_dino_dir), device="cpu")
    image = png_bytes(Image.new("RGB", (160, 96), (90, 120, 200)))
    with TestClient(create_app(grounder)) as test_client:
        for top_k in (1, 3):
            response = post(
                test_client, image, ["a square", "a circle"], threshold="0", top_k=top_k
            )
            assert response.status_code == 200, response.text
            assert [len(r["candidates"]) for r in response.json()["results"]] == [top_k, top_k]


BAD_IMAGES = {
    "text": (lambda png: b"not an image at all", "not an image"),
    "truncated": (lambda png: png[: len(png) // 2], "cannot decode"),
    "empty": (lambda png: b"", "empty"),
}


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_bad_image_is_400(client, scene_png, kind):
    make, message = BAD_IMAGES[kind]
    assert_error(post(client, make(scene_png)), 400, message)


@pytest.mark.parametrize(
    ("queries", "message"),
    [(["   "], "query 1 is empty or blank"), ([""], "query 1 is empty or blank"),
     (["a circle", "\t"], "query 2 is empty or blank")],
)  # fmt: skip
def test_blank_query_is_400(client, scene_png, queries, message):
    assert_error(post(client, scene_png, queries), 400, message)


def test_oversized_body_is_413(client):
    assert_error(post(client, os.urandom(MAX_UPLOAD + 1)), 413, "limit of 400,000 bytes")


def test_oversized_chunked_body_is_413(client):
    """Without a Content-Length the limit holds while the body streams in."""
    request = client.build_request(
        "POST", "/v1/locate", files={"image": ("x.png", os.urandom(MAX_UPLOAD + 1))}
    )
    body = request.read()
    chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
    response = client.post(
        "/v1/locate", content=chunks, headers={"content-type": request.headers["content-type"]}
    )
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "limit")


@pytest.mark.parametrize(
    "image",
    [
        png_bytes(Image.new("RGB", (1100, 1000), "white")),  # 1.1 MP, a few KB
        huge_png_header(),  # claims 100000x100000: refused before decoding
    ],
)
def test_image_over_the_pixel_limit_is_413(client, image):
    assert_error(post(client, image), 413, "pixels")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"queries": []}, "queries: Field required"),
        ({"threshold": "high"}, "threshold: Input should be a valid number"),
        ({"threshold": "nan"}, "threshold: Input should be a finite number"),
        ({"top_k": "0"}, "top_k: Input should be greater than or equal to 1"),
        ({"top_k": "two"}, "top_k: Input should be a valid integer"),
    ],
)
def test_malformed_fields_are_422(client, scene_png, fields, message):
    assert_error(post(client, scene_png, **fields), 422, message)


def test_missing_image_is_422(client):
    assert_error(post(client, None), 422, "image: Field required")


def test_not_multipart_at_all_is_422(client):
    assert_error(client.post("/v1/locate", json={"queries": ["x"]}), 422, "Field required")


def test_unknown_path_and_method_are_json(client):
    assert_error(client.get("/v2/nothing"), 404, "Not Found")
    response = client.delete("/healthz")
    assert_error(response, 405, "Method Not Allowed")
    assert response.headers["allow"] == "GET"


class BlockingGrounder(sceneloc.Grounder):
    """The real model, held at the start of ``locate`` until the test lets it go."""

    def __init__(self, grounder: sceneloc.Grounder) -> None:
        super().__init__(grounder.backend, grounder.name)
        self.started = threading.Event()
        self.release = threading.Event()

    def locate(self, *args, **kwargs):
        self.started.set()
        assert self.release.wait(timeout=30)
        return super().locate(*args, **kwargs)


def test_full_queue_is_503_with_retry_after(grounder, scene_png):
    blocking = BlockingGrounder(grounder)
    app = create_app(blocking, workers=1, queue_limit=1)
    with TestClient(app) as test_client, ThreadPoolExecutor(1) as pool:
        first = pool.submit(post, test_client, scene_png)
        assert blocking.started.wait(timeout=30)
        refused = post(test_client, scene_png)
        assert_error(refused, 503, "busy")
        assert int(refused.headers["retry-after"]) >= 1
        assert test_client.get("/healthz").status_code == 200  # the loop stays free
        blocking.release.set()
        assert first.result(timeout=30).status_code == 200
        assert post(test_client, scene_png).status_code == 200  # the slot was given back


def test_workers_share_the_model_and_agree_with_one_at_a_time(grounder, scene, scene_png):
    app = create_app(grounder, workers=2, queue_limit=8)
    with TestClient(app) as test_client, ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda q: post(test_client, scene_png, [q]), scene.queries * 2))
    expected = [r.to_dict() for r in grounder.locate(scene.image, scene.queries)] * 2
    assert [r.json()["results"][0] for r in responses] == expected


class FailingGrounder(sceneloc.Grounder):
    def locate(self, *args, **kwargs):
        raise RuntimeError("boom\nwith a second line")


def test_unexpected_error_is_a_bare_500(grounder, scene_png, caplog):
    app = create_app(FailingGrounder(grounder.backend, grounder.name))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = post(test_client, scene_png)
    assert response.json() == {"error": "internal error"} and response.status_code == 500
    assert "boom" in caplog.text


def test_models_and_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    payload = client.get("/v1/models").json()
    assert payload["models"] == [
        {
            "name": "native-synth",
            "backend": "native",
            "tasks": ["locate"],
            "serves": ["locate"],
            "device": "cpu",
            "dtype": "float32",
            "default_threshold": 0.5,
            "capabilities": [
                "image encoded once per call",
                "calibrated presence score",
                "safe to tile",
                "learnt event boxes",
                "own targets",
                "trainable",
            ],
        }
    ]
    assert payload["limits"] == {
        "max_upload_bytes": MAX_UPLOAD,
        "max_pixels": MAX_PIXELS,
        "workers": 1,
        "queue_limit": 32,
    }


def test_openapi_documents_locate(client):
    schema = client.get("/openapi.json").json()
    locate = schema["paths"]["/v1/locate"]["post"]
    assert {"200", "400", "413", "422", "503"} <= set(locate["responses"])
    answer = schema["components"]["schemas"]["LocateResponse"]
    assert set(answer["properties"]) == {"image", "model", "results", "timing_ms"}
    assert client.get("/docs").status_code == 200


@pytest.fixture
def url_server():
    """A local HTTP server that records every request it gets."""
    hits: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(png_bytes(Image.new("RGB", (8, 8))))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/image.png", hits
    server.shutdown()
    server.server_close()


def test_urls_are_never_fetched(client, scene_png, url_server):
    url, hits = url_server
    assert_error(post(client, url.encode()), 400, "not an image")
    response = client.post("/v1/locate", data={"image": url, "queries": ["a circle"]})
    assert_error(response, 422, "image")
    response = post(client, scene_png, [url])
    assert response.status_code == 200
    assert response.json()["results"][0]["query"] == url
    assert hits == []


def test_sceneloc_serve_in_a_subprocess(tmp_path, scene_png):
    model = build_native(tmp_path / "tiny", ["a circle"])
    args = ["--model", str(model), "--device", "cpu", "--workers", "2"]
    with running_server(args, tmp_path / "server.log") as url:
        files = {"image": ("scene.png", scene_png, "image/png")}
        response = httpx.post(f"{url}/v1/locate", files=files, data={"queries": ["a circle"]})
        assert response.status_code == 200, response.text
        assert response.json()["model"] == str(model)
        assert [r["query"] for r in response.json()["results"]] == ["a circle"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "native-synh"], "did you mean native-synth"),
        (["--model", "native-synth", "--device", "tpu"], "unknown device"),
        (["--model", "native-synth", "--workers", "4", "--queue-limit", "2"], "at least"),
    ],
)
def test_serve_refuses_bad_arguments_with_one_line(args, message):
    result = CliRunner().invoke(cli_app, ["serve", *args])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
