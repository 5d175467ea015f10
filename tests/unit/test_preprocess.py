"""The preprocess step: cleaning, de-duplication, a stratified seeded split, the fingerprint."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from textops.components.common.errors import ConfigError, DataError
from textops.components.common.labels import LabelMap
from textops.components.preprocess.split import (
    PreprocessResult,
    Splits,
    clean_text,
    dataset_fingerprint,
    drop_duplicates,
    drop_empty_texts,
    min_rows_per_class,
    preprocess_file,
    split_frame,
)


def _frame(counts: dict[str, int]) -> pd.DataFrame:
    """Distinct texts, `counts[label]` rows of each label."""
    rows = [(f"{label} text number {i}", label) for label, n in counts.items() for i in range(n)]
    return pd.DataFrame(rows, columns=["text", "label"])


def _texts(frame: pd.DataFrame) -> set[str]:
    return set(frame["text"])


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  two   words  ", "two words"),
        ("tab\tand\nnew line\r\n", "tab and new line"),
        ("no\u00a0break\u3000space\u2028", "no break space"),  # Unicode whitespace
        ("ﬁne Ｆｕｌｌ", "fine Full"),  # NFKC: ligature and full-width letters
        ("bell\x07 null\x00 del\x7f", "bell null del"),  # control characters vanish
        ("a \x00 b", "a b"),  # ... without leaving a double space
        ("\x1b\x00  \t", ""),
        ("café naïve 😀", "café naïve 😀"),
    ],
)
def test_clean_text(raw: str, clean: str) -> None:
    assert clean_text(pd.Series([raw])).tolist() == [clean]


def test_clean_text_keeps_index_and_missing_values() -> None:
    cleaned = clean_text(pd.Series([" a ", None, 7], index=[10, 20, 30], dtype=object))

    assert cleaned.index.tolist() == [10, 20, 30]
    assert cleaned[10] == "a"
    assert pd.isna(cleaned[20])
    assert cleaned[30] == "7"


def test_drop_empty_texts() -> None:
    frame = pd.DataFrame({"text": ["a", "", None, "b"], "label": ["x", "x", "y", "y"]})

    assert drop_empty_texts(frame)["text"].tolist() == ["a", "b"]


def test_drop_duplicates_keeps_conflicting_labels() -> None:
    frame = pd.DataFrame(
        {"text": ["a", "a", "a", "b"], "label": ["x", "x", "y", "x"], "source": [1, 2, 3, 4]}
    )

    kept = drop_duplicates(frame)

    assert list(zip(kept["text"], kept["label"], kept["source"], strict=True)) == [
        ("a", "x", 1),
        ("a", "y", 3),
        ("b", "x", 4),
    ]


def test_split_is_disjoint_complete_and_sized() -> None:
    frame = _frame({"a": 200, "b": 100})

    splits = split_frame(frame, 0.1, 0.2, seed=0)

    train, validation, test = (_texts(part) for part in splits)
    assert not train & validation and not train & test and not validation & test
    assert train | validation | test == _texts(frame)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (210, 30, 60)


def test_split_is_stratified() -> None:
    frame = _frame({"a": 300, "b": 120, "c": 60})  # shares 62.5%, 25%, 12.5%

    for part in split_frame(frame, 0.15, 0.2, seed=3):
        shares = part["label"].value_counts(normalize=True)
        assert shares["a"] == pytest.approx(0.625, abs=0.02)
        assert shares["b"] == pytest.approx(0.25, abs=0.02)
        assert shares["c"] == pytest.approx(0.125, abs=0.02)


def test_split_is_seeded() -> None:
    frame = _frame({"a": 100, "b": 100})

    def as_sets(splits: Splits) -> list[set[str]]:
        return [_texts(part) for part in splits]

    assert as_sets(split_frame(frame, 0.1, 0.2, seed=7)) == as_sets(split_frame(frame, 0.1, 0.2, 7))
    assert as_sets(split_frame(frame, 0.1, 0.2, seed=7)) != as_sets(split_frame(frame, 0.1, 0.2, 8))


def test_split_does_not_depend_on_row_order() -> None:
    frame = _frame({"a": 100, "b": 50})
    shuffled = frame.sample(frac=1, random_state=1)

    original = [_texts(p) for p in split_frame(frame, 0.1, 0.2, seed=5)]
    reordered = [_texts(p) for p in split_frame(shuffled, 0.1, 0.2, seed=5)]

    assert original == reordered


def test_rows_keep_their_split_when_rows_are_added() -> None:
    """A retraining adds rows (feedback); the model in production trained on the previous train
    split, so the new test split must hold none of those rows, or the comparison favours it."""
    before = _frame({"a": 600, "b": 400})
    added = pd.DataFrame(
        [(f"new {label} text {i}", label) for label in ("a", "b") for i in range(150)],
        columns=["text", "label"],
    )
    old = split_frame(before, 0.1, 0.2, seed=42)
    new = split_frame(pd.concat([before, added]), 0.1, 0.2, seed=42)

    assert not _texts(new.test) & _texts(old.train)
    # Only rows at a class's boundary move, and only from test towards train.
    assert len(_texts(old.test) & _texts(new.test)) >= 0.95 * len(old.test)
    assert len(new.test) == 260  # still a fifth of each class


def test_split_does_not_depend_on_the_index() -> None:
    frame = _frame({"a": 60, "b": 40})
    repeated = frame.set_axis([7] * len(frame))  # e.g. frames concatenated without reindexing

    original = [_texts(p) for p in split_frame(frame, 0.1, 0.2, seed=5)]
    relabelled = [_texts(p) for p in split_frame(repeated, 0.1, 0.2, seed=5)]

    assert relabelled == original
    assert [len(p) for p in split_frame(repeated, 0.1, 0.2, seed=5)] == [70, 10, 20]


def test_a_class_too_small_to_stratify_is_named() -> None:
    frame = _frame({"common": 100, "rare": 4})

    with pytest.raises(DataError) as caught:
        split_frame(frame, 0.1, 0.2, seed=0)

    message = str(caught.value)
    assert "'rare' has 4" in message
    assert "at least 10 rows" in message
    assert "common" not in message


def test_min_rows_per_class() -> None:
    assert min_rows_per_class(0.1, 0.2) == 10
    assert min_rows_per_class(0.3, 0.25) == 4
    assert min_rows_per_class(0.45, 0.45) == 3


@pytest.mark.parametrize(("validation", "test"), [(0.0, 0.2), (0.5, 0.5), (0.1, 1.2)])
def test_bad_fractions_are_config_errors(validation: float, test: float) -> None:
    with pytest.raises(ConfigError):
        split_frame(_frame({"a": 50, "b": 50}), validation, test, seed=0)


def test_fingerprint_ignores_row_order_and_sees_label_changes() -> None:
    frame = _frame({"a": 20, "b": 20})
    fingerprint = dataset_fingerprint(frame)

    assert len(fingerprint) == 64
    assert dataset_fingerprint(frame.sample(frac=1, random_state=0)) == fingerprint
    relabelled = frame.copy()
    relabelled.loc[0, "label"] = "b"
    assert dataset_fingerprint(relabelled) != fingerprint
    retexted = frame.copy()
    retexted.loc[0, "text"] += "!"
    assert dataset_fingerprint(retexted) != fingerprint


def test_fingerprint_is_the_sha256_of_sorted_json_rows() -> None:
    # Pinned: bundles record this hash, so its definition must not drift with optimisations.
    frame = pd.DataFrame(
        {"text": ['say "hi"', "back\\slash", "naïve\u2028line", "b"], "label": ["x", "y", "x", 1]}
    )
    rows = sorted(
        json.dumps([text, str(label)], ensure_ascii=False)
        for text, label in zip(frame["text"], frame["label"], strict=True)
    )
    expected = hashlib.sha256("".join(f"{row}\n" for row in rows).encode("utf-8")).hexdigest()

    assert dataset_fingerprint(frame) == expected


def _preprocess(
    tmp_path: Path, frame: pd.DataFrame, seed: int = 42
) -> tuple[PreprocessResult, dict[str, pd.DataFrame], dict[str, Path]]:
    source = tmp_path / "validated"
    frame.to_parquet(source, index=False)
    paths = {name: tmp_path / "out" / name / "data" for name in ("train", "validation", "test")}
    result = preprocess_file(
        validated_path=str(source),
        validation_fraction=0.1,
        test_fraction=0.2,
        seed=seed,
        train_path=str(paths["train"]),
        validation_path=str(paths["validation"]),
        test_path=str(paths["test"]),
    )
    return result, {name: pd.read_parquet(path) for name, path in paths.items()}, paths


def test_preprocess_file_cleans_dedups_splits_and_describes(tmp_path: Path) -> None:
    frame = _frame({"neg": 50, "pos": 50}).assign(source="web")
    # Three rows that become duplicates of existing rows once cleaned, and one empty text.
    extra = pd.DataFrame(
        {
            "text": [
                "  neg text number 0 ",
                "neg\ttext  number 1",
                "ｎｅｇ text number 2",
                " \x00 ",
            ],
            "label": ["neg", "neg", "neg", "pos"],
            "source": ["web"] * 4,
        }
    )
    result, splits, paths = _preprocess(tmp_path, pd.concat([frame, extra], ignore_index=True))

    assert result.duplicates_dropped == 3
    assert result.empty_dropped == 1
    assert result.rows == {"train": 70, "validation": 10, "test": 20}
    assert result.fingerprint == dataset_fingerprint(frame)
    assert sum(len(part) for part in splits.values()) == 100

    metadata = result.metadata("validation")
    assert LabelMap.from_dict(metadata) == LabelMap(("neg", "pos"), "str")
    assert metadata["split"] == "validation"
    assert metadata["rows"] == 10
    assert metadata["class_counts"] == {"neg": 5, "pos": 5}
    assert metadata["fingerprint"] == result.fingerprint

    schema = pq.read_schema(paths["train"])
    assert schema.names == ["text", "label", "label_id", "source"]
    assert [schema.field(n).type for n in ("text", "label", "label_id")] == [
        pa.string(),
        pa.string(),
        pa.int32(),
    ]
    train = splits["train"]
    assert (train["label_id"] == train["label"].map({"neg": 0, "pos": 1})).all()


def test_integer_labels_sort_numerically(tmp_path: Path) -> None:
    frame = _frame({"10": 20, "2": 20, "1": 20})

    result, splits, _ = _preprocess(tmp_path, frame)

    assert result.label_map == LabelMap(("1", "2", "10"), "int")
    assert result.metadata("train")["id2label"] == {"0": "1", "1": "2", "2": "10"}
    test = splits["test"]
    assert (test["label_id"] == test["label"].map({"1": 0, "2": 1, "10": 2})).all()


def test_preprocess_refuses_rows_without_a_label(tmp_path: Path) -> None:
    frame = _frame({"a": 20, "b": 20})
    frame.loc[3, "label"] = None

    with pytest.raises(DataError, match="1 rows have no label; run the validate step first"):
        _preprocess(tmp_path, frame)


def test_preprocess_fails_when_no_text_is_left(tmp_path: Path) -> None:
    frame = pd.DataFrame({"text": [" ", "\x00"], "label": ["a", "b"]})

    with pytest.raises(DataError, match="no rows with text left"):
        _preprocess(tmp_path, frame)
