"""The native grounding model: outputs, box maths, losses, gradients, saving, independence."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from sceneloc.native import NativeConfig, NativeGroundingModel, NativeOutput
from sceneloc.native.model import (
    ANCHOR_WEIGHT,
    ATTRIBUTE_WEIGHT,
    OBJECT_MAP_WEIGHT,
    TARGET_WEIGHT,
)

FUSIONS = ("cross-attention", "concat")
IMAGE_SIZE = 64
#: Four stride-2 stages: a 64-pixel image becomes a 4 x 4 grid of visual tokens.
GRID = IMAGE_SIZE // 16
VOCAB_SIZE = 20


def tiny_config(**overrides) -> NativeConfig:
    settings = {
        "image_size": IMAGE_SIZE,
        "hidden_size": 16,
        "fusion_layers": 1,
        "image_layers": 1,
        "text_layers": 1,
        "attention_heads": 2,
        "cnn_channels": [8, 16, 16, 16],
        "vocab_size": VOCAB_SIZE,
        "max_text_length": 8,
    }
    settings.update(overrides)
    return NativeConfig(**settings)


def tiny_model(fusion: str = "cross-attention", **overrides) -> NativeGroundingModel:
    torch.manual_seed(0)
    return NativeGroundingModel(tiny_config(fusion=fusion, **overrides))


def pixels(images: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(images, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)


def text(rows: list[list[int]]) -> dict[str, torch.Tensor]:
    """Right-padded ids (0 is padding) and their attention mask."""
    length = max(len(row) for row in rows)
    ids = torch.tensor([row + [0] * (length - len(row)) for row in rows])
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}


#: Three queries: the first two about image 0, the third about image 1.
QUERIES = [[2, 3, 4], [5, 6], [7, 8, 9, 10]]
IMAGE_INDEX = torch.tensor([0, 0, 1])
#: Targets (normalised cx, cy, w, h) and presence: the second query's referent is absent.
TARGETS = torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.5, 0.5, 1.0, 1.0], [0.7, 0.2, 0.1, 0.25]])
PRESENT = torch.tensor([1.0, 0.0, 1.0])


def batch(**extra) -> dict[str, torch.Tensor]:
    return {"pixel_values": pixels(2), **text(QUERIES), "image_index": IMAGE_INDEX, **extra}


# --- outputs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fusion", FUSIONS)
def test_one_box_and_presence_logit_per_query(fusion):
    model = tiny_model(fusion).eval()
    with torch.no_grad():
        out = model(**batch())
    assert isinstance(out, NativeOutput)
    assert out.loss is None
    assert out.boxes.shape == (3, 4)
    assert out.presence_logits.shape == (3,)
    if fusion == "cross-attention":
        assert out.cell_logits.shape == (3, GRID * GRID)
    assert torch.isfinite(out.boxes).all() and torch.isfinite(out.presence_logits).all()


def test_cell_boxes_are_centred_on_their_cell_and_reach_half_a_cell_out():
    grid = (2, 4)  # rows, columns
    neutral, far = torch.zeros(1, 8, 4), torch.full((1, 8, 4), 50.0)
    centred = NativeGroundingModel._cell_boxes(neutral, grid)[0]
    # Raw zeros: each cell's own centre, row-major, and half the image on each side.
    assert centred[5].tolist() == pytest.approx([1.5 / 4, 1.5 / 2, 0.5, 0.5])
    # Saturated raw outputs: half a cell past the cell's far corner, the whole image.
    stretched = NativeGroundingModel._cell_boxes(far, grid)[0]
    assert stretched[5].tolist() == pytest.approx([2.5 / 4, 2.5 / 2, 1.0, 1.0])


def test_queries_without_image_index_pair_with_images_in_order():
    model = tiny_model().eval()
    images = pixels(3)
    query_ids = text(QUERIES)
    with torch.no_grad():
        implicit = model(images, **query_ids)
        explicit = model(images, **query_ids, image_index=torch.tensor([0, 1, 2]))
    assert torch.allclose(implicit.boxes, explicit.boxes)
    assert torch.allclose(implicit.presence_logits, explicit.presence_logits)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_each_image_is_encoded_once_however_many_queries(fusion):
    model = tiny_model(fusion).eval()
    batches: list[int] = []
    hook = model.image_encoder.register_forward_hook(
        lambda module, args, output: batches.append(args[0].shape[0])
    )
    queries = [[2, 3], [4], [5, 6, 7], [8], [9, 10], [11]]
    try:
        with torch.no_grad():
            out = model(pixels(2), **text(queries), image_index=torch.tensor([0, 0, 0, 1, 1, 0]))
    finally:
        hook.remove()
    assert batches == [2]
    assert out.boxes.shape == (6, 4)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_a_query_is_answered_regardless_of_the_others_in_the_batch(fusion):
    model = tiny_model(fusion).eval()
    images = pixels(2)
    query_a, query_b = [2, 3], [4, 5, 6, 7, 8]  # B is longer, so A gets padded alongside it
    with torch.no_grad():
        alone = model(images[:1], **text([query_a]), image_index=torch.tensor([0]))
        together = model(images, **text([query_b, query_a]), image_index=torch.tensor([1, 0]))
        same_image = model(images[:1], **text([query_a, query_b]), image_index=torch.tensor([0, 0]))
    for other, row in ((together, 1), (same_image, 0)):
        assert torch.allclose(other.boxes[row], alone.boxes[0], atol=1e-5)
        assert other.presence_logits[row].item() == pytest.approx(
            alone.presence_logits[0].item(), abs=1e-5
        )


# --- losses and gradients --------------------------------------------------------------------


def trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("fusion", FUSIONS)
def test_loss_reaches_every_trainable_parameter(fusion):
    model = tiny_model(fusion).train()
    out = model(**batch(boxes=TARGETS, present=PRESENT))
    assert out.loss is not None and out.loss.dim() == 0
    assert torch.isfinite(out.loss)
    out.loss.backward()
    params = trainable(model)
    assert params
    no_grad = [name for name, p in params.items() if p.grad is None]
    assert not no_grad, f"no gradient reaches {no_grad}"
    assert all(torch.isfinite(p.grad).all() for p in params.values())
    zero = [name for name, p in params.items() if not p.grad.abs().sum() > 0]
    assert not zero, f"zero gradient for {zero}"


@pytest.mark.parametrize("fusion", FUSIONS)
def test_with_no_referent_present_only_the_presence_loss_counts(fusion):
    model = tiny_model(fusion).train()
    absent = torch.zeros(3)
    out = model(**batch(boxes=TARGETS, present=absent))
    # Binary cross-entropy against 0 is log(1 + e^logit), averaged over the queries.
    logits = out.presence_logits.tolist()
    expected = sum(math.log1p(math.exp(x)) for x in logits) / len(logits)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    out.loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    head = model.presence_head if fusion == "cross-attention" else model.mlp[-1]
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


ATTRIBUTES = {"color": ["blue", "red"], "shape": ["circle", "square", "star"]}
#: Two objects in image 0, one in image 1 (its second row is padding).
OBJECTS = torch.tensor(
    [[[0.1, 0.1, 0.1, 0.1], [0.9, 0.6, 0.2, 0.1]], [[0.5, 0.5, 0.3, 0.3], [0.0, 0.0, 0.0, 0.0]]]
)
LABELS = torch.tensor([[[0, 2], [1, 0]], [[1, 1], [-100, -100]]])


@pytest.mark.parametrize("fusion", FUSIONS)
def test_attribute_loss_names_each_object_at_its_centre_token(fusion):
    model = tiny_model(fusion, object_attributes=ATTRIBUTES, dropout=0.0).train()
    plain = model(**batch(boxes=TARGETS, present=PRESENT)).loss
    out = model(**batch(boxes=TARGETS, present=PRESENT, object_boxes=OBJECTS,
                        object_labels=LABELS))  # fmt: skip
    # The extra term is the weighted mean over attributes of the cross-entropy at the centres.
    visual, _grid = model.image_encoder(pixels(2))
    if fusion == "cross-attention":
        visual = model.image_context(visual)
    cells = [(0, 0 * GRID + 0), (0, 2 * GRID + 3), (1, 2 * GRID + 2)]  # (image, row*w+col)
    tokens = torch.stack([visual[image, cell] for image, cell in cells])
    expected = (
        ATTRIBUTE_WEIGHT
        * sum(
            torch.nn.functional.cross_entropy(head(tokens), LABELS[[0, 0, 1], [0, 1, 0], i])
            for i, head in enumerate(model.attribute_heads.values())
        )
        / len(ATTRIBUTES)
    )
    if fusion == "cross-attention":  # and the object map's, at the same cells
        cells = torch.tensor([[0, 2 * GRID + 3], [2 * GRID + 2, 0]])
        valid = torch.tensor([[True, True], [True, False]])
        expected += OBJECT_MAP_WEIGHT * model.reasoning.object_loss(
            visual, (GRID, GRID), cells, OBJECTS, valid
        )
    assert (out.loss - plain).item() == pytest.approx(expected.item(), rel=1e-4)
    out.loss.backward()
    assert model.attribute_heads["shape"].weight.grad.abs().sum() > 0
    assert model.image_encoder.project.weight.grad.abs().sum() > 0


def test_query_label_losses_supervise_the_target_and_anchor_maps():
    # Query 0 names an anchor centred in cell (row 1, column 3); query 2 says which of
    # image 1's objects fit its description (the second is padding, not known).
    model = tiny_model(dropout=0.0).train()
    plain = model(**batch(boxes=TARGETS, present=PRESENT)).loss
    anchors = torch.tensor([[0.9, 0.4], [-1.0, -1.0], [-1.0, -1.0]])
    fits = torch.tensor([[-1.0, -1.0], [-1.0, -1.0], [1.0, -1.0]])
    out = model(**batch(boxes=TARGETS, present=PRESENT, object_boxes=OBJECTS, target_fits=fits,
                        anchor_centers=anchors))  # fmt: skip
    # OBJECTS without labels: no object loss, only the query labels' terms.
    cell_of_object = 2 * GRID + 2  # image 1's object at (0.5, 0.5)
    expected = ANCHOR_WEIGHT * F.cross_entropy(out.anchor_map[:1], torch.tensor([1 * GRID + 3]))
    expected += TARGET_WEIGHT * F.binary_cross_entropy_with_logits(
        out.target_map[2, cell_of_object], torch.tensor(1.0)
    )
    assert (out.loss - plain).item() == pytest.approx(expected.item(), rel=1e-4)
    out.loss.backward()
    assert model.reasoning.anchor.weight.grad.abs().sum() > 0
    assert model.reasoning.target.weight.grad.abs().sum() > 0


def test_attribute_loss_ignores_images_without_objects():
    model = tiny_model(object_attributes=ATTRIBUTES, dropout=0.0).train()
    ignored = torch.full_like(LABELS, -100)
    out = model(**batch(boxes=TARGETS, present=PRESENT, object_boxes=OBJECTS,
                        object_labels=ignored))  # fmt: skip
    plain = model(**batch(boxes=TARGETS, present=PRESENT)).loss
    assert out.loss.item() == pytest.approx(plain.item())


def test_concat_loss_is_lower_for_the_right_box():
    # The concat head regresses the box itself: a target equal to its prediction costs
    # nothing in L1 and GIoU, the mirrored box does.
    model = tiny_model("concat").eval()
    with torch.no_grad():
        predicted = model(**batch()).boxes
        present = torch.ones(3)
        right = model(**batch(boxes=predicted, present=present)).loss
        wrong = model(**batch(boxes=1 - predicted.clamp(0, 1), present=present)).loss
    assert right < wrong


# --- configuration and saving ----------------------------------------------------------------

KEY_FIELDS = (
    "image_encoder", "text_encoder", "fusion", "image_size", "hidden_size", "fusion_layers",
    "image_layers", "attention_heads", "text_layers", "cnn_channels", "vocab_size",
    "max_text_length", "word_vector_size", "image_mean", "image_std", "dropout",
)  # fmt: skip


def test_config_round_trips_through_a_dict():
    config = tiny_config(fusion="concat", image_mean=[0.5, 0.5, 0.5], dropout=0.0)
    again = NativeConfig(**config.to_dict())
    for name in KEY_FIELDS:
        assert getattr(again, name) == getattr(config, name), name
    assert config.to_dict()["model_type"] == "sceneloc-native"


def test_invalid_fusion_is_refused():
    with pytest.raises(ValueError, match="fusion"):
        NativeConfig(fusion="sum")


@pytest.mark.parametrize("fusion", FUSIONS)
def test_saved_model_gives_the_same_outputs(tmp_path, fusion):
    model = tiny_model(fusion).eval()
    model.save_pretrained(tmp_path)
    loaded = NativeGroundingModel.from_pretrained(tmp_path).eval()
    for name in KEY_FIELDS:
        assert getattr(loaded.config, name) == getattr(model.config, name), name
    with torch.no_grad():
        want, got = model(**batch()), loaded(**batch())
    # Same weights; only float summation order may differ between two module instances.
    torch.testing.assert_close(got.boxes, want.boxes, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.presence_logits, want.presence_logits, rtol=0, atol=1e-6)


def test_word_vectors_stay_frozen():
    model = tiny_model("concat", text_encoder="word-vectors", word_vector_size=6).train()
    embedding = model.text_encoder.embed.weight
    assert embedding.shape == (VOCAB_SIZE, 6)
    assert not embedding.requires_grad
    assert "text_encoder.embed.weight" not in trainable(model)
    model(**batch(boxes=TARGETS, present=PRESENT)).loss.backward()
    assert embedding.grad is None
    assert model.text_encoder.project.weight.grad is not None


def test_frozen_image_encoder_gets_no_gradient():
    model = tiny_model(freeze_image_encoder=True).train()
    body = list(model.image_encoder.body.parameters())
    assert body and not any(p.requires_grad for p in body)
    model(**batch(boxes=TARGETS, present=PRESENT)).loss.backward()
    assert all(p.grad is None for p in body)
    assert model.image_encoder.project.weight.grad is not None


def test_frozen_parameters_stay_frozen_after_loading(tmp_path):
    model = tiny_model(
        "concat", text_encoder="word-vectors", word_vector_size=6, freeze_image_encoder=True
    )
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert "text_encoder.embed.weight" in frozen
    assert any(name.startswith("image_encoder.body.") for name in frozen)
    model.save_pretrained(tmp_path)
    loaded = NativeGroundingModel.from_pretrained(tmp_path)
    assert torch.equal(loaded.text_encoder.embed.weight, model.text_encoder.embed.weight)
    assert {name for name, p in loaded.named_parameters() if not p.requires_grad} == frozen
