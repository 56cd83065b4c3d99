"""Spatial reasoning for the cross-attention model: relations and orderings as grid operations.

On the synthetic scenes, a transformer over visual and text tokens learns what a thing
looks like ("the small purple star") but hardly where one thing is relative to another
("the circle left of the blue square", near the pick-any-circle baseline) or how things are
ordered ("the second star from the left"), even once its validation accuracy has stopped
rising (the README's bundled-model section has the figures). This module gives the model
the two operations such queries need, as differentiable maps over the visual grid that it
learns to use from the grounding loss, helped on synthetic scenes by labels of which objects
fit the target and where the anchor is (in the spirit of MAttNet's location and relation
modules):

- **roles**: attention over the text tokens pools three vectors, the *target* (what the
  referent looks like), the *anchor* (what it is placed relative to) and the *operator*
  (the relation or ordering word);
- **relations**: the anchor's map over the grid (a softmax) is convolved with a kernel over
  relative offsets, a mixture of learnt kernels chosen by the operator ("left of" learns
  "a little to the left, about level"), giving every cell a bonus for where it lies from
  the anchor;
- **orderings**: every cell counts how many things fitting the target description come
  before it, left to right, right to left, top to bottom, bottom to top, larger to smaller
  and smaller to larger (soft comparisons of the boxes the model predicts there, weighted by
  an objectness map); the operator says which ordering matters and which count is wanted,
  "the second star from the left" being the star with one star to its left.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from sceneloc.native.config import NativeConfig

#: Target, anchor, operator.
ROLES = 3
#: Left to right, top to bottom, smaller first, then each reversed (see ``count_before``).
ORDERINGS = 6
#: Softness of the "comes before" comparisons: normalised position, log size.
POSITION_SOFTNESS, SIZE_SOFTNESS = 0.01, 0.05
#: The kernels' parameters are multiplied by this, so that AdamW's steps of about the
#: learning rate reach biases of several logits within a few hundred steps.
KERNEL_GAIN = 8.0


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    return logits.masked_fill(~mask, torch.finfo(logits.dtype).min).softmax(dim=dim)


def cell_coordinates(grid: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Each cell's column and row (floats), in the row-major order of the visual tokens."""
    index = torch.arange(grid[0] * grid[1], device=device)
    return (index % grid[1]).float(), torch.div(index, grid[1], rounding_mode="floor").float()


def relation_field(
    anchor: torch.Tensor, kernels: torch.Tensor, grid: tuple[int, int]
) -> torch.Tensor:
    """``field[q, c] = sum_a anchor[q, a] * kernels[q, c - a]``: each query's kernel
    ``(queries, 2r + 1, 2r + 1)`` over offsets from its anchor distribution ``(queries,
    cells)``; offset ``(dy, dx)`` from the kernel's centre is dy rows below and dx columns
    right of the anchor."""
    queries, radius = anchor.shape[0], kernels.shape[-1] // 2
    # conv2d correlates; the flipped kernel makes it the convolution above.
    field = F.conv2d(
        anchor.view(1, queries, *grid),
        kernels.flip(-1, -2).unsqueeze(1),
        padding=radius,
        groups=queries,
    )
    return field.view(queries, -1)


def count_before(
    keys: torch.Tensor, fits: torch.Tensor, image_index: torch.Tensor, softness: torch.Tensor
) -> torch.Tensor:
    """How many things come before each cell, in each ordering and its reverse.

    ``keys`` ``(images, cells, k)``: each cell's place in ``k`` orderings (its thing's x, y,
    log size); ``fits`` ``(queries, cells)``: how much each cell counts for each query (a
    thing fitting its description is centred there); ``image_index``: each query's image.
    Returns ``(queries, cells, 2k)``: the counts by ascending keys, then by descending ones.
    "Before" is a sigmoid of the difference of keys over ``softness`` ``(k,)``.
    """
    with torch.no_grad():  # the keys learn from their own supervision, not from counting
        differences = keys.transpose(1, 2).unsqueeze(-1) - keys.transpose(1, 2).unsqueeze(-2)
        comes_before = torch.sigmoid(differences / softness.view(1, -1, 1, 1))
    # Each query's fits in its image's row, zeros elsewhere: one matrix product for all the
    # queries, instead of a copy of the comparisons per query (much slower).
    queries = torch.arange(fits.shape[0], device=fits.device)
    by_image = fits.new_zeros(keys.shape[0], *fits.shape).index_put((image_index, queries), fits)
    ascending = torch.einsum("ikab,iqb->qka", comes_before, by_image)
    # A cell compared with itself gives sigmoid(0) = 0.5: it is not before itself.
    ascending = ascending - 0.5 * fits.unsqueeze(1)
    descending = fits.sum(dim=-1)[:, None, None] - ascending - fits.unsqueeze(1)
    return torch.cat([ascending, descending], dim=1).transpose(1, 2)


class SpatialReasoning(nn.Module):
    """Per query, a bias for each visual cell; see the module docstring."""

    def __init__(self, config: NativeConfig) -> None:
        super().__init__()
        hidden, radius = config.hidden_size, config.relation_radius
        self.roles = nn.Linear(hidden, ROLES)
        self.target = nn.Linear(hidden, hidden)
        self.anchor = nn.Linear(hidden, hidden)
        kernel_size = 2 * radius + 1
        self.kernels = nn.Parameter(
            torch.randn(config.relation_kernels, kernel_size, kernel_size) * 0.01
        )
        # One more choice than kernels: "no relation", a kernel of zeros.
        self.select_kernel = nn.Linear(hidden, config.relation_kernels + 1)
        self.objects = object_map_head(hidden)
        # Per ordering: how much it matters (a gain) and the count wanted before the referent.
        self.ordering = nn.Linear(hidden, 2 * ORDERINGS)

    def forward(
        self,
        visual: torch.Tensor,
        image_index: torch.Tensor,
        grid: tuple[int, int],
        text: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(queries, cells)`` logits from each image's visual tokens ``(images, cells, d)``
        and each query's text tokens ``(queries, words, d)``; ``image_index``: its image.
        Also the target's and the anchor's maps ``(queries, cells)``, which training may
        supervise."""
        weights = masked_softmax(self.roles(text), attention_mask.bool().unsqueeze(-1), dim=1)
        target, anchor, operator = torch.einsum("qwr,qwd->rqd", weights, text)
        seen = visual[image_index]
        scale = visual.shape[-1] ** -0.5
        target_map = torch.einsum("qcd,qd->qc", seen, self.target(target)) * scale
        anchor_map = torch.einsum("qcd,qd->qc", seen, self.anchor(anchor)) * scale
        logits = (
            target_map
            + self._relation(anchor_map, operator, grid)
            + self._ordering(visual, image_index, grid, target_map, operator)
        )
        return logits, target_map, anchor_map

    def _relation(
        self, anchor_map: torch.Tensor, operator: torch.Tensor, grid: tuple[int, int]
    ) -> torch.Tensor:
        choice = self.select_kernel(operator).softmax(dim=-1)[:, :-1]
        kernels = torch.einsum("qk,kyx->qyx", choice, self.kernels) * KERNEL_GAIN
        return relation_field(anchor_map.softmax(dim=-1), kernels, grid)

    def _ordering(
        self,
        visual: torch.Tensor,
        image_index: torch.Tensor,
        grid: tuple[int, int],
        target_map: torch.Tensor,
        operator: torch.Tensor,
    ) -> torch.Tensor:
        """``-sum_o gain_o * huber(before_o(cell) - count_o)``: the referent has ``count_o``
        things of its description before it in ordering ``o``."""
        objectness, places = self.object_map(visual, grid)
        fits = torch.sigmoid(objectness[image_index]) * torch.sigmoid(target_map)
        softness = places.new_tensor([POSITION_SOFTNESS, POSITION_SOFTNESS, SIZE_SOFTNESS])
        before = count_before(places, fits, image_index, softness)
        gain, count = self.ordering(operator).unsqueeze(1).chunk(2, dim=-1)
        gain = F.softplus(gain - 2.0)  # starts low: no ordering until the text asks for one
        miss = F.smooth_l1_loss(before, count.expand_as(before), reduction="none")
        return -(gain * miss).sum(dim=-1)

    def object_map(
        self, visual: torch.Tensor, grid: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return object_map(self.objects, visual, grid)

    def object_loss(
        self,
        visual: torch.Tensor,
        grid: tuple[int, int],
        cells: torch.Tensor,
        boxes: torch.Tensor,
        valid: torch.Tensor,
    ) -> torch.Tensor:
        return object_map_loss(self.objects, visual, grid, cells, boxes, valid)


def object_map_head(hidden: int) -> nn.Linear:
    """Per cell of an image: whether a thing is centred there (few cells are, so it starts
    low), where exactly (an offset of up to a cell) and its log size."""
    head = nn.Linear(hidden, 4)
    with torch.no_grad():
        head.bias[0] = -3.0
    return head


def object_map(
    head: nn.Module, visual: torch.Tensor, grid: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and cell: the objectness logit ``(images, cells)`` and the place of the
    thing centred there ``(images, cells, 3)``: normalised x, y and log size."""
    raw = head(visual)
    height, width = grid
    column, row = cell_coordinates(grid, visual.device)
    x = (column + 0.5 + raw[..., 1].tanh()) / width
    y = (row + 0.5 + raw[..., 2].tanh()) / height
    return raw[..., 0], torch.stack([x, y, raw[..., 3]], dim=-1)


def object_map_loss(
    head: nn.Module,
    visual: torch.Tensor,
    grid: tuple[int, int],
    cells: torch.Tensor,
    boxes: torch.Tensor,
    valid: torch.Tensor,
) -> torch.Tensor:
    """Where things are, when the data lists every one: binary cross-entropy of the
    objectness map against the cells under their centres, L1 on the centres (in cells)
    and log sizes there. ``cells``, ``valid``: ``(images, objects)``; ``boxes``:
    ``(images, objects, 4)`` normalised cx, cy, w, h."""
    objectness, places = object_map(head, visual, grid)
    centred = torch.zeros_like(objectness)
    rows = torch.arange(visual.shape[0], device=visual.device).unsqueeze(1).expand_as(cells)
    rows, cells, boxes = rows[valid], cells[valid], boxes[valid]
    centred[rows, cells] = 1.0
    predicted = places[rows, cells]
    scale = predicted.new_tensor(grid[::-1])
    centre_error = ((predicted[:, :2] - boxes[:, :2]) * scale).abs().sum(dim=-1)
    size = boxes[:, 2:].amax(dim=-1).clamp(min=1e-4).log()
    size_error = (predicted[:, 2] - size).abs()
    return (
        F.binary_cross_entropy_with_logits(objectness, centred)
        + centre_error.mean()
        + size_error.mean()
    )
