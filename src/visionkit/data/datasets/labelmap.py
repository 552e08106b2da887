"""The explicit table between contiguous training labels and a dataset's own category ids and names.

Models predict contiguous labels ``0 .. K-1`` (no background class); COCO files use sparse category
ids (1..90 for the 80 COCO classes); YOLO files use the label itself; VOC files use the class name.
A :class:`LabelMap` is the one place that maps between them. It is saved as JSON beside every run and
every converted dataset so that predictions can be written back with the right ids and names.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LabelMap"]


@dataclass(frozen=True)
class LabelMap:
    """Contiguous label ``i`` ↔ dataset category id ``category_ids[i]`` ↔ class name ``names[i]``.

    Args:
        category_ids: the dataset's category id of each label, unique.
        names: the class name of each label, unique.

    Example:
        >>> categories = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}]
        >>> label_map = LabelMap.from_coco_categories(categories)
        >>> label_map.names, label_map.label_of(90), label_map.category_of(0)
        (('person', 'toothbrush'), 1, 1)
    """

    category_ids: tuple[int, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "category_ids", tuple(int(i) for i in self.category_ids))
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        if len(self.category_ids) != len(self.names):
            raise ValueError(
                f"LabelMap: {len(self.category_ids)} category_ids but {len(self.names)} names; need one each"
            )
        for field, values in (("category_ids", self.category_ids), ("names", self.names)):
            repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
            if repeated:
                raise ValueError(f"LabelMap: duplicate {field} {repeated}")
        # a private lookup table (not a dataclass field: equality and repr stay on the two tuples)
        object.__setattr__(self, "_label_by_category", {c: i for i, c in enumerate(self.category_ids)})

    @property
    def num_classes(self) -> int:
        """Number of contiguous labels ``K``."""
        return len(self.names)

    def label_of(self, category_id: int) -> int:
        """Contiguous label of a dataset category id; ``ValueError`` naming it when unknown."""
        try:
            return self._label_by_category[int(category_id)]  # type: ignore[attr-defined]
        except KeyError:
            raise ValueError(
                f"unknown category id {category_id}; known ids are {list(self.category_ids)}"
            ) from None

    def label_of_name(self, name: str) -> int:
        """Contiguous label of a class name; ``ValueError`` naming it when unknown."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(f"unknown class name {name!r}; known names are {list(self.names)}") from None

    def category_of(self, label: int) -> int:
        """Dataset category id of a contiguous label."""
        self._check_label(label)
        return self.category_ids[int(label)]

    def name_of(self, label: int) -> str:
        """Class name of a contiguous label."""
        self._check_label(label)
        return self.names[int(label)]

    def _check_label(self, label: int) -> None:
        if not 0 <= int(label) < self.num_classes:
            raise ValueError(f"label must be in [0, {self.num_classes}), got {label}")

    @classmethod
    def from_names(cls, names: Iterable[str], first_category_id: int = 1) -> LabelMap:
        """Label map for formats that only name classes (VOC, YOLO): category ids count from 1."""
        names = tuple(names)
        return cls(tuple(range(first_category_id, first_category_id + len(names))), names)

    @classmethod
    def from_coco_categories(cls, categories: Sequence[dict[str, Any]]) -> LabelMap:
        """Label map from a COCO ``categories`` list: labels follow the sorted category ids."""
        ordered = sorted(categories, key=lambda category: int(category["id"]))
        return cls(tuple(c["id"] for c in ordered), tuple(c["name"] for c in ordered))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"labels": [{"label", "category_id", "name"}, ...]}``."""
        rows = zip(self.category_ids, self.names, strict=True)
        return {"labels": [{"label": i, "category_id": c, "name": n} for i, (c, n) in enumerate(rows)]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelMap:
        """Inverse of :meth:`to_dict`; rows must list labels ``0 .. K-1`` in order."""
        rows = data.get("labels") if isinstance(data, dict) else None
        if not isinstance(rows, list):
            raise ValueError("label map must be a dict with a 'labels' list")
        for position, row in enumerate(rows):
            if row.get("label") != position:
                raise ValueError(
                    f"label map row {position} has label {row.get('label')!r}, expected {position}"
                )
        return cls(tuple(row["category_id"] for row in rows), tuple(row["name"] for row in rows))

    def save(self, path: str | Path) -> Path:
        """Write the table as JSON to ``path`` and return it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> LabelMap:
        """Read a table written by :meth:`save`; errors name the file."""
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError, KeyError, ValueError) as error:
            raise ValueError(f"cannot read label map {path}: {error}") from error
