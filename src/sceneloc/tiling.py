"""The ``tiles`` and ``tile_overlap`` options of ``locate``, checked in one place for the API,
the CLI and the server. (Tiling itself, overlapping tiles proposing candidates merged per
query, is not in this version yet: ``locate`` refuses any setting but ``"off"``.)
"""

from __future__ import annotations

from typing import Literal

from sceneloc.errors import InvalidOptionError

#: What ``tiles=`` takes: ``"auto"`` (tile when the image is much larger than the model's
#: input), ``"off"``, or a tile side in pixels.
TileSetting = Literal["auto", "off"] | int


def parse_tiles(value: str | int | None) -> TileSetting:
    """``"auto"``, ``"off"`` or a positive tile side (an int or its digits)."""
    if value is None:
        return "off"
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("auto", "off"):
            return text  # type: ignore[return-value]
        try:
            value = int(text)
        except ValueError:
            raise InvalidOptionError(
                f"tiles must be auto, off or a tile size in pixels, not {value!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidOptionError(f"tile size must be a positive number of pixels, not {value!r}")
    return value


def parse_overlap(value: float) -> float:
    """A tile overlap: a fraction of the tile side, at least 0 and below 1."""
    overlap = float(value)
    if not 0.0 <= overlap < 1.0:
        raise InvalidOptionError(
            f"tile overlap must be a fraction of the tile, at least 0 and below 1, not {value}"
        )
    return overlap
