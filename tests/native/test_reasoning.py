"""The grid operations behind relations and orderings, on hand-made maps."""

from __future__ import annotations

import math

import torch

from sceneloc.native.config import NativeConfig
from sceneloc.native.reasoning import SpatialReasoning, count_before, relation_field


def test_relation_kernel_offsets_are_relative_to_the_anchor():
    # A 5x6 grid, the anchor at row 2, column 4; the kernel rewards "two columns to the left,
    # same row" (offset dy=0, dx=-2 from its centre), so the field peaks at row 2, column 2.
    grid, radius = (5, 6), 3
    anchor = torch.zeros(1, 5 * 6)
    anchor[0, 2 * 6 + 4] = 1.0
    kernel = torch.zeros(1, 2 * radius + 1, 2 * radius + 1)
    kernel[0, radius, radius - 2] = 5.0
    kernel[0, radius + 1, radius] = 1.0  # "one row below"
    field = relation_field(anchor, kernel, grid).view(5, 6)
    assert field[2, 2] == 5.0
    assert field[3, 4] == 1.0
    assert field.sum() == 6.0


def test_relation_field_spreads_over_an_uncertain_anchor():
    grid = (4, 4)
    anchor = torch.zeros(2, 16)
    anchor[0, 5] = anchor[0, 10] = 0.5
    anchor[1, 0] = 1.0
    kernel = torch.zeros(2, 3, 3)
    kernel[:, 1, 1] = 2.0  # the anchor's own cell
    field = relation_field(anchor, kernel, grid)
    assert field[0, 5] == field[0, 10] == 1.0
    assert field[1, 0] == 2.0 and field[1].sum() == 2.0


def test_count_before_counts_fitting_things_in_each_ordering():
    # One image: things at x = 0.2, 0.5, 0.8 (sizes 3, 1, 2) and an empty cell at x = 0.1.
    # Two queries: the first fits all three things, the second only the first two.
    keys = torch.tensor([[[0.2, 3.0], [0.5, 1.0], [0.8, 2.0], [0.1, 9.0]]])
    fits = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    before = count_before(keys, fits, torch.tensor([0, 0]), torch.tensor([0.01, 0.01]))
    # Orderings: x ascending, size ascending, x descending, size descending.
    expected = torch.tensor([[0.0, 2.0, 2.0, 0.0], [1.0, 0.0, 1.0, 2.0], [2.0, 1.0, 0.0, 1.0]])
    assert torch.allclose(before[0, :3], expected, atol=1e-3)
    assert torch.allclose(
        before[1, :2], torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]]), atol=1e-3
    )


def test_object_map_learns_where_things_are_and_how_big():
    # Fixed random visual tokens of one 4x4 image with two things; a few steps of the object
    # loss alone make the map find their cells, centres (within the cell) and sizes.
    torch.manual_seed(0)
    reasoning = SpatialReasoning(NativeConfig(hidden_size=16, relation_radius=3))
    visual, grid = torch.randn(1, 16, 16), (4, 4)
    boxes = torch.tensor([[[0.30, 0.40, 0.20, 0.10], [0.80, 0.90, 0.05, 0.05]]])
    cells = torch.tensor([[1 * 4 + 1, 3 * 4 + 3]])
    valid = torch.ones(1, 2, dtype=torch.bool)
    optimizer = torch.optim.Adam(reasoning.objects.parameters(), lr=0.01)
    first = reasoning.object_loss(visual, grid, cells, boxes, valid).item()
    for _ in range(1000):
        optimizer.zero_grad()
        reasoning.object_loss(visual, grid, cells, boxes, valid).backward()
        optimizer.step()
    assert reasoning.object_loss(visual, grid, cells, boxes, valid).item() < 0.1 * first
    objectness, places = reasoning.object_map(visual, grid)
    assert set(objectness[0].topk(2).indices.tolist()) == {5, 15}
    assert torch.allclose(places[0, 5], torch.tensor([0.30, 0.40, math.log(0.20)]), atol=0.05)
    assert torch.allclose(places[0, 15], torch.tensor([0.80, 0.90, math.log(0.05)]), atol=0.05)
