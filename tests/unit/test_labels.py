"""The label map: string and integer labels, order, and round trips."""

from pathlib import Path

import pytest

from textops.components.common.errors import DataError
from textops.components.common.labels import LabelMap, LabelSetChange, canonical_label


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, "1"), (1.0, "1"), ("1", "1"), (" spam ", "spam"), (2.5, "2.5"), (True, "true")],
)
def test_canonical_label(value: object, expected: str) -> None:
    assert canonical_label(value) == expected


def test_nan_label_is_an_error() -> None:
    with pytest.raises(DataError, match=r"^a label is missing \(NaN\)$"):
        canonical_label(float("nan"))


def test_integer_labels_sort_numerically() -> None:
    labels = LabelMap.from_values([10, 2, 1, 2])
    assert labels.names == ("1", "2", "10")
    assert labels.kind == "int"
    assert labels.index(10) == 2


def test_string_labels_sort_by_name() -> None:
    labels = LabelMap.from_values(["spam", "ham", "spam"])
    assert labels.names == ("ham", "spam")
    assert labels.kind == "str"


def test_unknown_label_is_named() -> None:
    with pytest.raises(DataError, match="'eggs'"):
        LabelMap.from_values(["spam", "ham"]).index("eggs")


@pytest.mark.parametrize("values", [["b", "a", "c"], [10, 2, 1]])
def test_round_trip_through_json(tmp_path: Path, values: list[object]) -> None:
    labels = LabelMap.from_values(values)
    labels.save(tmp_path / "labels.json")
    assert LabelMap.load(tmp_path / "labels.json") == labels
    assert LabelMap.from_dict(labels.to_dict()) == labels


def test_labels_json_keeps_its_layout(tmp_path: Path) -> None:
    # labels.json ships in every bundle and outlives the code that wrote it: its layout is a
    # contract with whatever loads a published bundle later.
    LabelMap.from_values([1, 0]).save(tmp_path / "labels.json")
    assert (tmp_path / "labels.json").read_text() == (
        "{\n"
        '  "labels": [\n    "0",\n    "1"\n  ],\n'
        '  "kind": "int",\n'
        '  "id2label": {\n    "0": "0",\n    "1": "1"\n  }\n'
        "}\n"
    )


def test_a_labels_file_without_a_kind_holds_strings() -> None:
    assert LabelMap.from_dict({"labels": ["spam", "ham"]}) == LabelMap(("spam", "ham"), "str")


def test_the_same_classes_in_another_order_are_no_change() -> None:
    change = LabelSetChange.between(("negative", "positive"), ("positive", "negative"))
    assert not change
    assert (change.added, change.dropped) == ((), ())
    assert change.describe() == "the new model has the same labels"


@pytest.mark.parametrize(
    ("production", "new", "added", "dropped", "words"),
    [
        # A class added: the sets overlap, neither is empty, and they still differ.
        (
            ("negative", "positive"),
            ("negative", "neutral", "positive"),
            ("neutral",),
            (),
            "the new model adds [neutral]",
        ),
        # A class dropped.
        (
            ("negative", "neutral", "positive"),
            ("negative", "positive"),
            (),
            ("neutral",),
            "the new model drops [neutral]",
        ),
        # One class swapped for another.
        (
            ("negative", "positive"),
            ("negative", "mixed"),
            ("mixed",),
            ("positive",),
            "the new model adds [mixed] and drops [positive]",
        ),
        # Nothing in common; each side keeps its own order.
        (
            ("spam", "ham"),
            ("b", "a"),
            ("b", "a"),
            ("spam", "ham"),
            "the new model adds [b, a] and drops [spam, ham]",
        ),
    ],
)
def test_a_label_set_change_names_each_class_added_and_dropped(
    production: tuple[str, ...],
    new: tuple[str, ...],
    added: tuple[str, ...],
    dropped: tuple[str, ...],
    words: str,
) -> None:
    change = LabelSetChange.between(production, new)
    assert change
    assert (change.added, change.dropped) == (added, dropped)
    assert change.describe() == words
