"""``tiles`` and ``tile_overlap`` on ``POST /v1/locate``: answers, and bad values as 422."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from serving import assert_error, post

import sceneloc
from sceneloc.demo import demo_scene
from sceneloc.server import create_app
from test_images import png_bytes


@pytest.fixture(scope="module")
def bundled() -> sceneloc.Grounder:
    return sceneloc.load("native-synth", device="cpu")


@pytest.fixture(scope="module")
def florence(florence2_dir) -> sceneloc.Grounder:
    return sceneloc.load(str(florence2_dir), device="cpu")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tiles": "0"}, "tile size must be a positive"),
        ({"tiles": "-3"}, "tile size must be a positive"),
        ({"tile_overlap": "-0.2"}, "tile_overlap"),
    ],
)
def test_http_bad_tiling_is_422(bundled, fields, message):
    with TestClient(create_app(bundled)) as client:
        response = post(client, png_bytes(demo_scene().image), **fields)
    assert_error(response, 422, message)


def test_http_tiles_on_an_unsafe_family_is_422(florence):
    with TestClient(create_app(florence)) as client:
        response = post(client, png_bytes(demo_scene().image), tiles="512")
        assert_error(response, 422, "not safe to tile")
        assert post(client, png_bytes(demo_scene().image), tiles="auto").is_success


def test_http_tiles_answer(bundled):
    image = demo_scene().image
    with TestClient(create_app(bundled)) as client:
        tiled = post(client, png_bytes(image), ["the red circle"], tiles="auto", threshold="0")
        untiled = post(client, png_bytes(image), ["the red circle"], threshold="0")
    assert tiled.json()["results"] == untiled.json()["results"]
