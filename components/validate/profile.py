"""What the checks look at, computed once per data set with vectorised pandas and NumPy.

Great Expectations judges each expectation; the facts it judges that are not plain column
values (is this text valid, does it repeat an earlier one, does it carry two labels, how big is
its class) are computed here as helper columns, in time linear in the rows, with no Python
loop over rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from textops.components.common.blank_text import BLANK_TEXT_REGEX
from textops.components.common.errors import DataError
from textops.components.common.labels import LabelMap, canonical_label
from textops.components.common.settings import ValidationSettings

# Helper columns, beside the user's text and label columns in the frame Great Expectations
# validates. The prefix keeps them clear of user column names.
TEXT_STATUS = "__textops_text_status"
REPEATS_EARLIER = "__textops_repeats_earlier_text"
CONFLICTING_LABEL = "__textops_conflicting_label"
CLASS_SHARE = "__textops_class_share"
NUMERIC_LOOKALIKE = "__textops_numeric_lookalike_label"

#: Values of TEXT_STATUS: 0 is a valid text, the others say why a text is not.
TEXT_PROBLEMS = {1: "null", 2: "blank", 3: "too short", 4: "too long"}

#: Characters that break a line: a text holding one was probably multi-line in its source.
LINE_BREAK_REGEX = "[\n\r\x0b\x0c\x85\u2028\u2029]"


@dataclass
class Profile:
    """The data as the checks see it.

    Attributes:
        checked: The frame Great Expectations validates: the user's text column, the label
            column in canonical form (None where missing or blank), and the helper columns.
        valid_text: Per row, whether the text is valid and the row is kept.
        text_problems: Rows per reason a text is invalid (`null`, `blank`, ...), non-zero only.
        label_counts: Rows per canonical label, in label-map order.
        rarest: The rarest label and its share of the labelled rows, or None without labels.
        lookalikes: Groups of distinct labels that read as the same number, e.g. ("1", "1.0").
    """

    checked: pd.DataFrame
    valid_text: np.ndarray
    text_problems: dict[str, int] = field(default_factory=dict)
    label_counts: dict[str, int] = field(default_factory=dict)
    rarest: tuple[str, float] | None = None
    lookalikes: list[tuple[str, ...]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.checked)


def as_text(values: pd.Series) -> pd.Series:
    """The values as a pandas string column, missing values kept missing.

    Numbers in a JSONL or Parquet text column become their string form, as training would see
    them; a string column is returned as it is.
    """
    if isinstance(values.dtype, pd.StringDtype):
        return values
    return values.astype("string")


def canonical_labels(values: pd.Series) -> pd.Series:
    """Labels in canonical string form (see `canonical_label`), None where missing or blank.

    Each distinct value is canonicalised once, so a million rows of a few classes cost a
    factorisation, not a million Python calls.
    """
    try:
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
    except TypeError:  # unhashable values (lists, dicts from JSONL): one at a time
        return pd.Series([_canonical_or_none(v) for v in values], index=values.index, dtype=object)
    names = np.array([_canonical_or_none(u) for u in uniques] + [None], dtype=object)
    return pd.Series(names[codes], index=values.index, dtype=object)


def _canonical_or_none(value: Any) -> str | None:
    missing = pd.isna(value)
    if isinstance(missing, (bool, np.bool_)) and missing:
        return None
    try:
        name = canonical_label(value)
    except DataError:
        return None
    return name or None


def profile_frame(
    frame: pd.DataFrame, text_column: str, label_column: str, settings: ValidationSettings
) -> Profile:
    """Compute the checked frame and the facts the checks' messages quote.

    Args:
        frame: The data, indexed 0..n-1, with the text column already a string column.
        text_column: The user's text column.
        label_column: The user's label column.
        settings: The thresholds, for the text length bounds.
    """
    texts = frame[text_column]
    labels = canonical_labels(frame[label_column])
    status = _text_status(texts, settings)
    valid = status == 0

    label_codes, names = pd.factorize(labels, use_na_sentinel=True)
    labelled = label_codes >= 0
    counts = np.bincount(label_codes[labelled], minlength=len(names))
    text_codes = pd.factorize(texts, use_na_sentinel=True)[0]

    checked = pd.DataFrame(
        {
            text_column: texts,
            label_column: labels,
            TEXT_STATUS: status,
            REPEATS_EARLIER: pd.Series(text_codes).duplicated().to_numpy() & valid,
            CONFLICTING_LABEL: _conflicting(text_codes, label_codes, len(names)) & valid,
            CLASS_SHARE: _class_shares(label_codes, counts),
            NUMERIC_LOOKALIKE: np.isin(label_codes, _lookalike_codes(list(names))),
        }
    )
    by_name = {str(name): int(count) for name, count in zip(names, counts, strict=True)}
    total = int(labelled.sum())
    rarest = None
    if total:
        smallest = int(np.argmin(counts))
        rarest = (str(names[smallest]), float(counts[smallest]) / total)
    problems = np.bincount(status, minlength=len(TEXT_PROBLEMS) + 1)
    return Profile(
        checked=checked,
        valid_text=valid,
        text_problems={
            reason: int(problems[code]) for code, reason in TEXT_PROBLEMS.items() if problems[code]
        },
        label_counts={name: by_name[name] for name in LabelMap.from_values(by_name).names},
        rarest=rarest,
        lookalikes=_lookalike_groups(list(names)),
    )


def _text_status(texts: pd.Series, settings: ValidationSettings) -> np.ndarray:
    """Per row, 0 for a valid text or the TEXT_PROBLEMS code of the first problem found."""
    null = texts.isna().to_numpy()
    blank = texts.str.fullmatch(BLANK_TEXT_REGEX).to_numpy(dtype=bool, na_value=False)
    lengths = texts.str.len().to_numpy(dtype=float, na_value=math.nan)
    with np.errstate(invalid="ignore"):  # NaN lengths of null texts compare as False
        short = lengths < settings.min_text_chars
        long = lengths > settings.max_text_chars
    return np.select([null, blank, short, long], [1, 2, 3, 4], 0).astype(np.int8)


def _conflicting(text_codes: np.ndarray, label_codes: np.ndarray, labels: int) -> np.ndarray:
    """Per row, whether its text also appears with a different label."""
    both = (text_codes >= 0) & (label_codes >= 0)
    if not both.any():
        return np.zeros(len(text_codes), dtype=bool)
    pairs = np.unique(text_codes[both].astype(np.int64) * labels + label_codes[both])
    labels_per_text = np.bincount(pairs // labels, minlength=int(text_codes.max()) + 1)
    return both & (labels_per_text[np.maximum(text_codes, 0)] > 1)


def _class_shares(label_codes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per row, the share of labelled rows its class has; NaN where the label is missing."""
    total = counts.sum()
    if not total:
        return np.full(len(label_codes), np.nan)
    shares = np.append(counts / total, np.nan)  # code -1 (missing) picks the NaN
    return shares[label_codes]


def _lookalike_groups(names: list[Any]) -> list[tuple[str, ...]]:
    """Distinct labels that read as the same number ("1", "1.0", "01"): one class in disguise."""
    by_value: dict[float, list[str]] = {}
    for name in map(str, names):
        try:
            value = float(name)
        except ValueError:
            continue
        if math.isfinite(value):
            by_value.setdefault(value, []).append(name)
    return [tuple(sorted(group)) for group in by_value.values() if len(group) > 1]


def _lookalike_codes(names: list[Any]) -> list[int]:
    clashing = {name for group in _lookalike_groups(names) for name in group}
    return [i for i, name in enumerate(names) if str(name) in clashing]
