"""The label map: class names in a fixed order, shared by training, export and serving."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from textops.components.common.errors import DataError


def canonical_label(value: Any) -> str:
    """The string form of a label: integers (also 1.0 or "1") stay integers, text stays text."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            raise DataError("a label is missing (NaN)")
        if value.is_integer():
            return str(int(value))
        return repr(value)
    return str(value).strip()


@dataclass(frozen=True)
class LabelMap:
    """Class names in model-output order. `kind` records whether the labels were integers."""

    names: tuple[str, ...]
    kind: Literal["int", "str"] = "str"

    @classmethod
    def from_values(cls, values: Iterable[Any]) -> LabelMap:
        """Build the map from observed labels: integers sort numerically, strings by name."""
        names = sorted({canonical_label(v) for v in values})
        if all(_is_int(n) for n in names):
            return cls(tuple(sorted(names, key=int)), "int")
        return cls(tuple(names), "str")

    def __len__(self) -> int:
        return len(self.names)

    def index(self, label: Any) -> int:
        """The class id of `label`; raises DataError for a label the map does not hold."""
        name = canonical_label(label)
        try:
            return self.names.index(name)
        except ValueError:
            raise DataError(f"label {name!r} is not one of {list(self.names)}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self.names),
            "kind": self.kind,
            "id2label": {str(i): n for i, n in enumerate(self.names)},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelMap:
        return cls(tuple(str(n) for n in data["labels"]), data.get("kind", "str"))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> LabelMap:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


@dataclass(frozen=True)
class LabelSetChange:
    """How a new model's classes differ from those of the model in production.

    Only the sets count: the same classes in another output order are no change (the
    champion is scored by class name). A change is falsy when the sets are equal, so
    `if LabelSetChange.between(old, new):` reads as "the label sets differ".
    """

    added: tuple[str, ...]
    dropped: tuple[str, ...]

    @classmethod
    def between(cls, production: Iterable[str], new: Iterable[str]) -> LabelSetChange:
        """The classes `new` adds to `production` and those it drops, each in its own order."""
        old_names, new_names = list(production), list(new)
        return cls(
            added=tuple(n for n in new_names if n not in old_names),
            dropped=tuple(n for n in old_names if n not in new_names),
        )

    def __bool__(self) -> bool:
        return bool(self.added or self.dropped)

    def describe(self) -> str:
        """The difference in words, e.g. "the new model adds [neutral] and drops [mixed]"."""
        changes = [
            f"{verb} [{', '.join(names)}]"
            for verb, names in (("adds", self.added), ("drops", self.dropped))
            if names
        ]
        if not changes:
            return "the new model has the same labels"
        return "the new model " + " and ".join(changes)


def _is_int(name: str) -> bool:
    try:
        int(name)
    except ValueError:
        return False
    return True
