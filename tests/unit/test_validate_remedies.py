"""Long documents are valid by default, and every failed check names what lets the data through.

Each check's failure ends with its remedy: the setting that changes it, with its value now,
or, for a check no setting relaxes, what to change in the data. The checks run on real Great
Expectations.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from textops.components.common.labels import LabelMap
from textops.components.common.settings import ValidationSettings
from textops.components.validate.checks import Columns, build_checks, validate_frame
from textops.components.validate.report import Finding, ValidationResult

COLUMNS = Columns(text="text", label="label")
#: Small frames pass the row count; each case breaks one check on purpose.
SMALL: dict[str, Any] = {"min_rows": 2}


def _frame(n: int = 20, labels: tuple[str, ...] = ("a", "b"), **columns: list[Any]) -> pd.DataFrame:
    """n distinct texts with labels in turn; `columns` replace or add whole columns."""
    frame = pd.DataFrame(
        {
            "text": [f"message number {i} about the order" for i in range(n)],
            "label": [labels[i % len(labels)] for i in range(n)],
        }
    )
    for name, values in columns.items():
        frame[name] = values
    return frame


def _email(chars: int, number: int) -> str:
    """An e-mail-like text of exactly `chars` characters: headers, a quoted thread, a footer."""
    head = (
        f"From: customer{number}@example.com\nTo: support@example.com\n"
        f"Subject: Order {number} arrived damaged\n\nHello,\n"
    )
    body = "> On Monday you wrote: the parcel will arrive within three working days.\n"
    return (head + body * (chars // len(body) + 1))[:chars]


def _check(result: ValidationResult, name: str) -> Finding:
    [finding] = [f for f in result.findings if f.check == name]
    return finding


def test_a_50000_character_email_passes_validation_by_default() -> None:
    texts = [_email(50_000, 0), *(_email(300 + i, i) for i in range(1, 60))]
    frame = pd.DataFrame({"text": texts, "label": ["spam", "ham"] * 30})

    result = validate_frame(frame, COLUMNS)  # every setting at its default

    assert result.success, [f.describe() for f in result.failed_critical]
    assert result.rows_valid == 60 and result.invalid_texts == {}
    assert _check(result, "text_not_too_long").success


def test_a_text_over_the_default_limit_fails_naming_max_text_chars() -> None:
    limit = ValidationSettings().max_text_chars
    texts = [_email(limit + 1, 0), _email(limit + 1, 1), *(_email(300 + i, i) for i in range(58))]
    frame = pd.DataFrame({"text": texts, "label": ["spam", "ham"] * 30})

    result = validate_frame(frame, COLUMNS)

    assert not result.success
    assert result.invalid_texts == {"too long": 2}
    observed = _check(result, "text_valid").observed
    assert f"2 too long (over {limit} characters)" in observed
    assert f"set max_text_chars (now {limit}) higher" in observed


#: (check, frame, settings, production labels, words its failure must contain).
CASES: list[tuple[str, pd.DataFrame, dict[str, Any], LabelMap | None, str]] = [
    (
        "text_column_present",
        _frame().rename(columns={"text": "body"}),
        SMALL,
        None,
        "set text_column (now 'text'; --text-column)",
    ),
    (
        "label_column_present",
        _frame().rename(columns={"label": "y"}),
        SMALL,
        None,
        "set label_column (now 'label'; --label-column)",
    ),
    ("min_rows", _frame(3), {"min_rows": 6}, None, "set min_rows (now 6) lower"),
    (
        "text_valid",
        _frame(text=["x" * 30] + [f"t{i}" for i in range(19)]),
        {**SMALL, "max_text_chars": 20},
        None,
        "set max_text_chars (now 20) higher",
    ),
    (
        "text_valid",
        _frame(text=["ab"] + [f"text {i}" for i in range(19)]),
        {**SMALL, "min_text_chars": 3},
        None,
        "set min_text_chars (now 3) lower",
    ),
    (
        "text_valid",
        _frame(text=[None] + [f"text {i}" for i in range(19)]),
        SMALL,
        None,
        "set text_mostly (now 0.99) lower",
    ),
    (
        "text_not_too_long",
        _frame(text=["x" * 30] + [f"t{i}" for i in range(19)]),
        {**SMALL, "max_text_chars": 20},
        None,
        "set max_text_chars (now 20) higher",
    ),
    (
        "text_on_one_line",
        _frame(text=["two\nlines"] + [f"text {i}" for i in range(19)]),
        SMALL,
        None,
        "no setting relaxes this check",
    ),
    (
        "label_not_null",
        _frame(label=[None] + ["a", "b"] * 9 + ["a"]),
        SMALL,
        None,
        "no setting relaxes this check",
    ),
    (
        "labels_allowed",
        _frame(labels=("a", "b", "c")),
        {**SMALL, "allowed_labels": ["a", "b"]},
        None,
        "set allowed_labels (now ['a', 'b'])",
    ),
    ("at_least_two_labels", _frame(labels=("a",)), SMALL, None, "no setting relaxes this check"),
    (
        "min_class_share",
        _frame(label=["c"] + ["a", "b"] * 9 + ["a"]),
        {**SMALL, "min_class_share": 0.2},
        None,
        "set min_class_share (now 0.2) lower",
    ),
    (
        "few_duplicate_texts",
        _frame(text=["same"] * 4 + [f"text {i}" for i in range(16)]),
        SMALL,
        None,
        "set max_duplicate_share (now 0.05) higher",
    ),
    (
        "one_label_per_text",
        _frame(text=["same", "same"] + [f"text {i}" for i in range(18)]),
        {**SMALL, "max_duplicate_share": 0.5},
        None,
        "set max_conflicting_label_share (now 0.0) higher",
    ),
    (
        "no_numeric_lookalike_labels",
        _frame(labels=("1", "1.0", "2")),
        SMALL,
        None,
        "no setting relaxes this check",
    ),
    (
        "labels_match_production",
        _frame(labels=("a", "b", "c")),
        SMALL,
        LabelMap(("a", "b")),
        "set enforce_production_labels off (--no-enforce-production-labels)",
    ),
]


@pytest.mark.parametrize(
    ("check", "frame", "settings", "production", "remedy"),
    CASES,
    ids=[f"{case[0]}-{i}" for i, case in enumerate(CASES)],
)
def test_each_failed_check_names_what_lets_the_data_through(
    check: str,
    frame: pd.DataFrame,
    settings: dict[str, Any],
    production: LabelMap | None,
    remedy: str,
) -> None:
    result = validate_frame(
        frame, COLUMNS, ValidationSettings(**settings), production_labels=production
    )

    finding = _check(result, check)
    assert not finding.success
    assert remedy in finding.observed
    assert remedy in finding.describe()


def test_every_check_of_the_suite_has_a_remedy_and_a_case() -> None:
    suite = build_checks(ValidationSettings(allowed_labels=["a"]), LabelMap(("a", "b")))
    assert all(check.remedy is not None for check in suite)
    assert {check.name for check in suite} == {case[0] for case in CASES}


def test_a_passing_check_has_no_remedy() -> None:
    result = validate_frame(_frame(), COLUMNS, ValidationSettings(**SMALL))

    assert result.success
    assert not any("set " in f.observed or "no setting" in f.observed for f in result.findings)
