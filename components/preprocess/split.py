"""The preprocess step: clean text, drop duplicates, a stratified stable split, a fingerprint.

Input is the validate step's Parquet (columns `text`, `label`, and the user's other columns);
output is one Parquet file per split with the same columns plus `label_id`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa

from textops.components.common import dataio
from textops.components.common.errors import ConfigError, DataError
from textops.components.common.labels import LabelMap, canonical_label

logger = logging.getLogger(__name__)

TEXT = "text"
LABEL = "label"
LABEL_ID = "label_id"
SPLITS = ("train", "validation", "test")
# Rows hashed per update of the fingerprint: large enough to be fast, small enough that the
# joined bytes stay a few tens of megabytes.
_FINGERPRINT_BATCH = 100_000

# Control characters (Unicode category Cc) other than whitespace: whitespace such as a tab or
# a newline separates words and becomes a space below instead of vanishing.
_CONTROL = re.compile(
    "["
    + "".join(
        re.escape(chr(c)) for c in (*range(0x00, 0x20), *range(0x7F, 0xA0)) if not chr(c).isspace()
    )
    + "]"
)
# Python's `re` matches Unicode whitespace with \s (no-break space, ideographic space, ...).
_WHITESPACE = re.compile(r"\s+")
# Printable ASCII words separated by single spaces: what `_clean_one` returns unchanged.
_ALREADY_CLEAN = "[!-~]+(?: [!-~]+)*"


class Splits(NamedTuple):
    """The three parts of a data set."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame


@dataclass
class PreprocessResult:
    """What preprocessing produced.

    Attributes:
        label_map: Class names in model-output order.
        fingerprint: `dataset_fingerprint` of the cleaned, de-duplicated data.
        rows: Rows per split.
        class_counts: Rows per label, per split.
        duplicates_dropped: Rows dropped as exact (text, label) duplicates after cleaning.
        empty_dropped: Rows dropped because their text was empty after cleaning.
    """

    label_map: LabelMap
    fingerprint: str
    rows: dict[str, int] = field(default_factory=dict)
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    duplicates_dropped: int = 0
    empty_dropped: int = 0

    def metadata(self, split: str) -> dict[str, Any]:
        """JSON-friendly values for one split's KFP artifact.

        The label map's keys (`labels`, `kind`, `id2label`) come first, so the train step can
        read it back with `LabelMap.from_dict(artifact.metadata)`.
        """
        return {
            **self.label_map.to_dict(),
            "fingerprint": self.fingerprint,
            "split": split,
            "rows": self.rows[split],
            "class_counts": dict(self.class_counts[split]),
        }


def preprocess_file(
    *,
    validated_path: str,
    validation_fraction: float,
    test_fraction: float,
    seed: int,
    train_path: str,
    validation_path: str,
    test_path: str,
) -> PreprocessResult:
    """Clean validated data, split it stratified by label and write the three splits.

    Args:
        validated_path: The validate step's Parquet file (columns `text` and `label`).
        validation_fraction: Share of rows for the validation split.
        test_fraction: Share of rows for the test split.
        seed: Seed of the split; the same data and seed give the same split.
        train_path: Where the train split's Parquet goes.
        validation_path: Where the validation split's Parquet goes.
        test_path: Where the test split's Parquet goes.

    Returns:
        The label map, the fingerprint and the row counts; `metadata(split)` gives the values
        for each split's KFP artifact.

    Raises:
        ConfigError: The fractions leave no rows for training.
        DataError: The file cannot be read, lacks a column, has no text left after cleaning,
            or has a class too small to split.
    """
    # KFP artifact paths have no extension, so the format is named rather than detected.
    frame = dataio.read_table(validated_path, "parquet")
    dataio.require_columns(frame, [TEXT, LABEL], validated_path)

    frame = frame.assign(**{TEXT: clean_text(frame[TEXT]), LABEL: canonical_labels(frame[LABEL])})
    before = len(frame)
    frame = drop_empty_texts(frame)
    empty_dropped = before - len(frame)
    before = len(frame)
    frame = drop_duplicates(frame)
    duplicates_dropped = before - len(frame)
    if frame.empty:
        raise DataError(f"{validated_path} has no rows with text left after cleaning")

    label_map = LabelMap.from_values(frame[LABEL].unique())
    ids = {name: i for i, name in enumerate(label_map.names)}
    frame = frame.assign(**{LABEL_ID: frame[LABEL].map(ids).astype("int32")})
    fingerprint = dataset_fingerprint(frame)
    splits = split_frame(frame, validation_fraction, test_fraction, seed)

    for part, path in zip(splits, (train_path, validation_path, test_path), strict=True):
        write_split(part, path)
    result = PreprocessResult(
        label_map=label_map,
        fingerprint=fingerprint,
        rows={name: len(part) for name, part in zip(SPLITS, splits, strict=True)},
        class_counts={
            name: {label: int((part[LABEL] == label).sum()) for label in label_map.names}
            for name, part in zip(SPLITS, splits, strict=True)
        },
        duplicates_dropped=duplicates_dropped,
        empty_dropped=empty_dropped,
    )
    logger.info(
        "preprocessed %s: rows=%s empty_dropped=%d duplicates_dropped=%d labels=%s fingerprint=%s",
        validated_path,
        result.rows,
        empty_dropped,
        duplicates_dropped,
        list(label_map.names),
        fingerprint[:12],
    )
    return result


def canonical_labels(labels: pd.Series) -> pd.Series:
    """Labels in canonical string form (see `canonical_label`), as an object column.

    Each distinct value is canonicalised once: a million rows of a few classes cost one
    factorisation, not a million Python calls.

    Raises:
        DataError: A label is missing; the validate step lets no such row through.
    """
    codes, uniques = pd.factorize(labels, use_na_sentinel=True)
    missing = int((codes < 0).sum())
    if missing:
        raise DataError(
            f"{missing} rows have no label; run the validate step first, which rejects them"
        )
    names = np.array([canonical_label(value) for value in uniques], dtype=object)
    return pd.Series(names[codes], index=labels.index, dtype=object)


def _clean_one(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = _CONTROL.sub("", text)
    return _WHITESPACE.sub(" ", text).strip()


def clean_text(texts: pd.Series) -> pd.Series:
    """Normalise texts: Unicode NFKC, control characters removed, whitespace runs collapsed.

    Cleaning runs in Python rather than through pandas' string methods, whose regexes follow
    RE2 (ASCII-only `\\s`) or Python depending on the string backend. Only the texts that need
    it are cleaned: a text of printable ASCII words separated by single spaces is already clean
    (NFKC leaves ASCII alone), and one vectorised match finds those.

    Args:
        texts: Text values; missing values stay missing, other values are turned into strings.

    Returns:
        The cleaned texts as a string column, same index, possibly empty strings.
    """
    strings = texts.astype("string")
    # RE2 and Python's `re` agree on this pattern: it names its characters explicitly.
    clean = strings.str.fullmatch(_ALREADY_CLEAN).to_numpy(dtype=bool, na_value=False)
    dirty = np.flatnonzero(~clean & strings.notna().to_numpy())
    if len(dirty):
        strings = strings.copy()
        strings.iloc[dirty] = [_clean_one(text) for text in strings.iloc[dirty]]
    return strings


def drop_empty_texts(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows whose `text` is missing or empty (apply `clean_text` first) removed."""
    keep = frame[TEXT].notna() & (frame[TEXT].astype(str) != "")
    return frame[keep]


def drop_duplicates(frame: pd.DataFrame) -> pd.DataFrame:
    """Exact (text, label) duplicates removed, the first occurrence kept.

    A text that appears with two different labels is kept twice: that is label noise, which
    the validate step reports, not a duplicate.
    """
    return frame.drop_duplicates(subset=[TEXT, LABEL], keep="first")


def min_rows_per_class(validation_fraction: float, test_fraction: float) -> int:
    """The fewest rows a class needs so that each split can expect at least one of them."""
    smallest = min(validation_fraction, test_fraction)
    # The small epsilon keeps 1 / 0.1 from rounding up to 11 on float noise.
    return max(3, math.ceil(1 / smallest - 1e-9))


def split_frame(
    frame: pd.DataFrame, validation_fraction: float, test_fraction: float, seed: int
) -> Splits:
    """Split into train, validation and test, stratified by `label`; each row's place follows
    from its text and the seed.

    Every row draws a number from a keyed hash of its text; within each class the rows with the
    lowest draws form the test split, the next the validation split, the rest train. A row's
    split therefore depends on the row, the seed and how its class's size moves the boundary,
    not on a shuffle of the whole data: when a retraining adds rows (feedback, newly labelled
    data), the rows of the previous run stay where they were, and the model in production,
    which trained on the previous train split, is compared with the new one on test rows it
    has not trained on (only rows at a class's boundary can move). Row order and the index
    play no part.

    Args:
        frame: Rows with `text` and `label` columns; texts are unique (preprocess dedups).
        validation_fraction: Share of rows for validation, between 0 and 1.
        test_fraction: Share of rows for test, between 0 and 1.
        seed: Key of the draws: another seed gives another split.

    Returns:
        The three parts; together they hold every row exactly once.

    Raises:
        ConfigError: A fraction is out of range or the two leave no rows for training.
        DataError: A class has too few rows to appear in every split.
    """
    for name, value in (
        ("validation_fraction", validation_fraction),
        ("test_fraction", test_fraction),
    ):
        if not 0 < value < 1:
            raise ConfigError(f"{name} must be between 0 and 1, got {value}")
    if validation_fraction + test_fraction >= 1:
        raise ConfigError(
            "validation_fraction + test_fraction must be below 1 to leave rows for training; "
            f"got {validation_fraction} + {test_fraction}"
        )
    _check_class_sizes(frame, validation_fraction, test_fraction)

    draws = split_draws(frame[TEXT], seed)
    classes = pd.factorize(frame[LABEL].astype("string"), sort=True)[0]
    # By class, then by draw. Two texts of a class drawing the same 64-bit number (about one
    # chance in 10^8 for a million rows) are the only case where row order could matter.
    order = np.lexsort((draws, classes))
    sorted_classes = classes[order]
    sizes = np.bincount(classes)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    rank = np.arange(len(order)) - starts[sorted_classes]
    # Each class's share of test and validation rows, at least one of each (the class-size
    # check leaves at least one row for training).
    n_test = np.maximum(1, np.floor(sizes * test_fraction + 0.5)).astype(np.int64)
    n_validation = np.maximum(1, np.floor(sizes * validation_fraction + 0.5)).astype(np.int64)
    test = rank < n_test[sorted_classes]
    validation = ~test & (rank < (n_test + n_validation)[sorted_classes])
    train = ~test & ~validation
    return Splits(frame.iloc[order[train]], frame.iloc[order[validation]], frame.iloc[order[test]])


def split_draws(texts: pd.Series, seed: int) -> np.ndarray:
    """Each text's draw: a 64-bit SipHash of its UTF-8 bytes keyed by the seed."""
    key = hashlib.sha256(f"textops-split-{seed}".encode()).hexdigest()[:16]
    hashed = pd.util.hash_pandas_object(
        texts.astype(str).reset_index(drop=True), index=False, hash_key=key
    )
    return hashed.to_numpy(dtype=np.uint64)


def _check_class_sizes(
    frame: pd.DataFrame, validation_fraction: float, test_fraction: float
) -> None:
    needed = min_rows_per_class(validation_fraction, test_fraction)
    counts = frame[LABEL].value_counts()
    small = counts[counts < needed]
    if not small.empty:
        named = ", ".join(f"{label!r} has {count}" for label, count in small.items())
        raise DataError(
            f"too few rows to split stratified by label: class {named}; with "
            f"validation_fraction={validation_fraction} and test_fraction={test_fraction} "
            f"each class needs at least {needed} rows. Add rows of that class, merge or drop "
            "it, or raise the fractions."
        )


def dataset_fingerprint(frame: pd.DataFrame) -> str:
    """SHA-256 of the sorted (text, label) rows: the same rows in any order give the same hash.

    Each row is JSON-encoded as `json.dumps([text, label], ensure_ascii=False)` would encode
    it, so no text can fake a row boundary; rows are hashed one per line.
    """
    # The C string encoder behind json.dumps, called directly: a million rows in well under
    # a second instead of several, byte for byte the same rows.
    quote = json.encoder.encode_basestring
    # Plain lists: iterating an Arrow-backed column in Python is several times slower.
    texts = frame[TEXT].tolist()
    labels = canonical_labels(frame[LABEL]).tolist()
    rows = sorted(f"[{quote(str(t))}, {quote(lbl)}]" for t, lbl in zip(texts, labels, strict=True))
    digest = hashlib.sha256()
    for start in range(0, len(rows), _FINGERPRINT_BATCH):
        batch = rows[start : start + _FINGERPRINT_BATCH]
        digest.update(("\n".join(batch) + "\n").encode("utf-8"))
    return digest.hexdigest()


def write_split(frame: pd.DataFrame, path: str) -> None:
    """Write one split as Parquet: `text` and `label` strings, `label_id` int32, then the rest.

    Extra columns keep their types, except that large strings become strings, so every split
    of every run has the same schema for the same input columns.
    """
    dataio.write_table(frame, path, {TEXT: pa.string(), LABEL: pa.string(), LABEL_ID: pa.int32()})
