"""Synthetic domains: other colours, shapes, grounds and object scales for transfer tests, with
today's output unchanged by default and one-line errors for impossible vocabularies."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from sceneloc.cli.synth import synth
from sceneloc.data import read_samples
from sceneloc.data.synth import (
    DEFAULT_DOMAIN,
    SynthError,
    generate,
    make_domain,
    make_scene,
    parse_query,
)
from sceneloc.data.synth.specs import AttributeQuery
from sceneloc.data.synth.vocab import SIZE_RANGES

#: The digest of a small default dataset (its JSON Lines files and its images' pixels) as the
#: generator wrote it before domains existed: the default domain must draw exactly the same.
DEFAULT_DIGEST = "3500a69999b03d2c0d0faf5437321707c2ffb3fe115595ede5b3670270bc7d8d"

runner = CliRunner()


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(synth)
    return app


def test_the_default_domain_writes_todays_dataset(tmp_path):
    generate(tmp_path, 6, 5, size=192, min_objects=8, max_objects=14, queries_per_image=4)
    digest = hashlib.sha256()
    for name in ("annotations.jsonl", "scenes.jsonl", "descriptions.jsonl"):
        digest.update((tmp_path / name).read_bytes())
    for png in sorted((tmp_path / "images").glob("*.png")):
        digest.update(np.asarray(Image.open(png)).tobytes())
    assert digest.hexdigest() == DEFAULT_DIGEST
    assert make_domain() == DEFAULT_DOMAIN


def test_a_domain_draws_only_its_colours_shapes_and_query_types(tmp_path):
    domain = make_domain("pink,orange,cyan", "star,cross", "dark", query_types="attribute")
    generate(tmp_path, 6, 2, size=192, min_objects=4, max_objects=6, queries_per_image=3,
             splits="train=1", domain=domain)  # fmt: skip
    scenes = [json.loads(line) for line in (tmp_path / "scenes.jsonl").read_text().splitlines()]
    objects = [o for scene in scenes for o in scene["objects"]]
    assert {o["color"] for o in objects} == {"pink", "orange", "cyan"}
    assert {o["shape"] for o in objects} == {"star", "cross"}
    samples = list(read_samples(tmp_path / "annotations.jsonl"))
    assert len(samples) == 18 and {s.type for s in samples} == {"attribute"}
    assert all(isinstance(parse_query(s.query), AttributeQuery) for s in samples)


def test_grounds_and_object_scale():
    def scene(**domain):
        rng = np.random.default_rng(7)
        return make_scene(rng, size=192, min_objects=4, max_objects=4,
                          domain=make_domain(**domain))  # fmt: skip

    def ground(image: Image.Image) -> float:
        return float(np.median(np.asarray(image.convert("L"))))

    assert ground(scene(background="dark").image) < 80 < ground(scene().image)
    assert ground(scene(background="light").image) > 180
    noise = np.asarray(scene(background="noise").image, np.float32)
    assert np.abs(np.diff(noise, axis=1)).mean() > 20  # far grainier than any texture

    def drawn_at(objects) -> float:
        """The side whose sizes the shapes were drawn at: extent over the class's fraction."""
        return float(np.median([max(o.box[2] - o.box[0], o.box[3] - o.box[1])
                                / np.mean(SIZE_RANGES[o.size]) for o in objects]))  # fmt: skip

    assert drawn_at(scene().objects) == pytest.approx(192, rel=0.15)
    assert drawn_at(scene(object_size_base=480).objects) == pytest.approx(480, rel=0.15)


def test_held_out_pairs_within_a_domain(tmp_path):
    # red star is held out; among these colours and shapes it is the only held-out pair
    domain = make_domain("red,blue", "star,circle", query_types="attribute")
    assert domain.held_out == (("red", "star"),)
    generate(tmp_path, 6, 4, size=192, min_objects=4, max_objects=6, queries_per_image=2,
             splits="train=0.5,compositional=0.5", domain=domain)  # fmt: skip
    samples = list(read_samples(tmp_path / "annotations.jsonl"))
    held = {s.query for s in samples if s.split == "compositional"}
    named = {s.query for s in samples if s.split == "train"}
    assert held and all("star" in q for q in held)
    assert not any("red star" in q for q in named)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--colors", "orange,cyan", "--shapes", "star"], "compositional split would be empty"),
        (["--colors", "red,mauve"], "unknown colour mauve"),
        (["--shapes", "circle,circle"], "named twice"),
        (["--colors", "red"], "at least 2 colours"),
        (["--colors", "red,blue", "--shapes", "star", "--splits", "train=1"],
         "fewer than 2 colours outside the held-out pairs"),
        (["--background", "plaid"], "unknown background 'plaid'"),
        (["--object-size-base", "2000"], "more than a third"),
        (["--query-types", "attribute,riddle"], "unknown query type riddle"),
    ],
)  # fmt: skip
def test_impossible_domains_fail_in_one_line(tmp_path, flags, message):
    args = [
        "--out",
        str(tmp_path / "d"),
        "-n",
        "10",
        "--seed",
        "1",
        "--size",
        "192",
        "--min-objects",
        "4",
        "--max-objects",
        "6",
        *flags,
    ]
    result = runner.invoke(cli(), args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "d" / "annotations.jsonl").exists()


def test_make_domain_refuses_an_empty_list():
    with pytest.raises(SynthError, match="at least one shape"):
        make_domain(shapes=" , ")
