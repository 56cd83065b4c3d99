"""A drawn shape as the queries see it: attributes, tight box and how much of it shows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SceneObject:
    """One drawn shape: its attributes, tight (amodal) box, pixel area and visible fraction."""

    id: int
    shape: str
    color: str
    size: str
    box: tuple[float, float, float, float]
    area: int = 0
    visible: float = 1.0

    @property
    def center(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2, (y1 + y2) / 2

    @property
    def extent(self) -> float:
        """The larger box side: the one length every geometric rule scales with."""
        x1, y1, x2, y2 = self.box
        return max(x2 - x1, y2 - y1)

    @property
    def pair(self) -> tuple[str, str]:
        """``(colour, shape)``: the unit the compositional split holds out."""
        return self.color, self.shape

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "shape": self.shape,
            "color": self.color,
            "size": self.size,
            "box": [float(v) for v in self.box],
            "area": self.area,
            "visible": self.visible,
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> SceneObject:
        box = tuple(float(v) for v in record["box"])
        if len(box) != 4:
            raise ValueError("an object's 'box' must be [x1, y1, x2, y2]")
        return cls(
            id=int(record["id"]),
            shape=record["shape"],
            color=record["color"],
            size=record["size"],
            box=box,  # type: ignore[arg-type]
            area=int(record.get("area", 0)),
            visible=float(record.get("visible", 1.0)),
        )
