"""The validate step on a corpus of bad inputs: each fails, or warns, with a precise message.

The files are in `bad_inputs/`, written by `bad_inputs/make_corpus.py`. Each case names the
check that must fail (or the reason the file cannot be read) and fragments of the message, and
every case must leave the JSON result, the HTML report and the Markdown summary behind.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from textops.components.common.errors import DataError, DataValidationError
from textops.components.common.labels import LabelMap
from textops.components.common.settings import ValidationSettings
from textops.components.validate.checks import validate_file
from textops.components.validate.report import ValidationResult

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
#: The corpus files are small; this lets a file fail for its own reason, not for its size.
SMALL = ValidationSettings(min_rows=10)
#: The long texts of the corpus are 100,800 characters: valid by default, too long under this.
SHORT_TEXTS = ValidationSettings(min_rows=10, max_text_chars=10_000)


@dataclass(frozen=True)
class Case:
    """One corpus file and what validating it must give.

    Attributes:
        file: The file in `bad_inputs/`.
        error: The exception expected, or None when the data passes (with a warning).
        check: The check that must fail (critical for an error, a warning otherwise); None
            when the file cannot be read at all.
        fragments: Parts of the message (the error's, or the warning's description).
        settings: The thresholds to validate with.
        production_labels: The served model's labels, for the retraining case.
    """

    file: str
    error: type[Exception] | None
    check: str | None
    fragments: tuple[str, ...]
    settings: ValidationSettings = SMALL
    production_labels: LabelMap | None = field(default=None)


CASES = [
    Case("empty.csv", DataError, None, ("empty.csv is empty: it has no header and no rows",)),
    Case(
        "header_only.csv",
        DataValidationError,
        "min_rows",
        ("min_rows (expect_table_row_count_to_be_between): no rows; at least 10 needed",),
    ),
    Case(
        "wrong_delimiter.csv",
        DataError,
        None,
        ("header 'text;label' is split by semicolons (';'), not commas (',')",),
    ),
    Case(
        "missing_column.csv",
        DataValidationError,
        "label_column_present",
        (
            "label_column_present (expect_column_to_exist) on 'label': no column 'label'; "
            "columns found: text, category",
            "--label-column",
        ),
    ),
    Case(
        "all_null_text.csv",
        DataValidationError,
        "text_valid",
        (
            "text_valid (expect_column_values_to_be_in_set) on 'text': 20 of 20 rows have no "
            "valid text (100.0%); at most 1% allowed [20 null]",
            "(rows 1, 2, 3, 4, 5, …)",
        ),
    ),
    Case(
        "non_utf8.csv",
        DataError,
        None,
        ("is not valid UTF-8: byte 730 (line 22) is b'\\xe9'", "re-encode it as UTF-8"),
    ),
    Case("utf16.csv", DataError, None, ("starts with a UTF-16 byte-order mark",)),
    Case(
        "one_class.csv",
        DataValidationError,
        "at_least_two_labels",
        ("on 'label': 1 distinct label: 'positive' (20 rows); a classifier needs at least 2",),
    ),
    Case(
        "unseen_labels.csv",
        DataValidationError,
        "labels_allowed",
        (
            "labels_allowed (expect_column_values_to_be_in_set) on 'label': 7 of 21 rows carry "
            "a label outside ['positive', 'negative']: unseen 'neutral' (7 rows) (rows 3, 6,",
        ),
        settings=ValidationSettings(min_rows=10, allowed_labels=("positive", "negative")),
    ),
    Case(
        "numeric_labels.csv",
        None,
        "no_numeric_lookalike_labels",
        ("20 of 30 rows carry a label that reads as the same number as another: '1' and '1.0'",),
    ),
    Case(
        "conflicting_duplicates.csv",
        DataValidationError,
        "one_label_per_text",
        (
            "one_label_per_text (expect_column_values_to_be_in_set) on 'text': 4 of 22 rows "
            "have a text that also appears with a different label (rows 4, 6, 21, 22)",
        ),
    ),
    Case(
        "blank_texts.jsonl",
        DataValidationError,
        "text_valid",
        ("3 of 20 rows have no valid text (15.0%); at most 1% allowed [3 blank]", "rows 18, 19"),
    ),
    Case(
        "null_labels.csv",
        DataValidationError,
        "label_not_null",
        ("label_not_null (expect_column_values_to_not_be_null) on 'label': 1 of 20 rows null",),
    ),
    Case(
        "rare_class.csv",
        DataValidationError,
        "min_class_share",
        ("rarest class 'neutral' has 1 row (0.50% of labelled rows); at least 1% needed (row",),
    ),
    Case(
        "new_label_for_production.csv",
        DataValidationError,
        "labels_match_production",
        (
            "new labels 'mixed' (10 rows): the served model predicts ['negative', 'positive']",
            "--no-enforce-production-labels",
        ),
        production_labels=LabelMap(("negative", "positive")),
    ),
    Case(
        "bom_quotes_newlines.csv",
        None,
        "text_on_one_line",
        ("1 of 20 rows contain a line break", "(row 20)"),
    ),
    Case(
        "long_texts.csv.gz",
        None,
        "text_not_too_long",
        ("1 of 201 rows longer than 10000 characters (row 201)", "set max_text_chars (now 10000)"),
        settings=SHORT_TEXTS,
    ),
    Case(
        "all_long_texts.csv.gz",
        DataValidationError,
        "text_valid",
        (
            "10 of 10 rows have no valid text (100.0%); at most 1% allowed [10 too long",
            "set max_text_chars (now 10000) higher",
        ),
        settings=SHORT_TEXTS,
    ),
]


def _validate(case: Case, out: Path) -> ValidationResult:
    return validate_file(
        data=str(CORPUS / case.file),
        data_format="auto",
        text_column="text",
        label_column="label",
        settings=case.settings,
        production_labels=case.production_labels,
        validated_path=str(out / "validated"),
        result_path=str(out / "result.json"),
        report_path=str(out / "report.html"),
        summary_path=str(out / "summary.md"),
    )


@pytest.mark.parametrize("case", CASES, ids=[c.file for c in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    if case.error is not None:
        with pytest.raises(case.error) as caught:
            _validate(case, tmp_path)
        message = str(caught.value)
        assert not (tmp_path / "validated").exists()
    else:
        result = _validate(case, tmp_path)
        assert result.success
        [warning] = [f for f in result.failed_warnings if f.check == case.check]
        message = warning.describe()
        assert (tmp_path / "validated").exists()
    for fragment in case.fragments:
        assert fragment in message

    # The result, the report and the summary explain the run, failed or not.
    document = json.loads((tmp_path / "result.json").read_text(encoding="utf-8"))
    assert document["success"] is (case.error is None)
    assert document["settings"]["min_rows"] == case.settings.min_rows
    if case.check is None:
        assert document["error"] == message
        assert document["findings"] == []
    else:
        [finding] = [f for f in document["findings"] if f["check"] == case.check]
        assert finding["success"] is False
        assert finding["severity"] == ("warning" if case.error is None else "critical")
    status = "failed" if case.error is not None else "passed with warnings"
    assert status in (tmp_path / "report.html").read_text(encoding="utf-8")
    assert f"## Data validation: {status}" in (tmp_path / "summary.md").read_text("utf-8")


def test_quotes_newlines_and_the_bom_survive_validation(tmp_path: Path) -> None:
    case = next(c for c in CASES if c.file == "bom_quotes_newlines.csv")

    _validate(case, tmp_path)

    validated = pd.read_parquet(tmp_path / "validated")
    assert list(validated.columns) == ["text", "label"]  # no "\ufefftext"
    assert validated["text"].iloc[-2:].tolist() == [
        'She said "never again", and left.',
        "First line.\nSecond line, with a comma.",
    ]


def test_long_texts_within_the_allowance_are_dropped(tmp_path: Path) -> None:
    case = next(c for c in CASES if c.file == "long_texts.csv.gz")

    result = _validate(case, tmp_path)

    assert (result.rows, result.rows_valid, result.rows_dropped) == (201, 200, 1)
    assert result.invalid_texts == {"too long": 1}
    [text_valid] = [f for f in result.findings if f.check == "text_valid"]
    assert text_valid.success
    assert "within the allowance they are dropped" in text_valid.observed
    validated = pd.read_parquet(tmp_path / "validated")
    assert len(validated) == 200
    assert validated["text"].str.len().max() < 100
    # The example in the result is clipped: a 100 kB text only needs to be recognisable.
    [example] = next(f for f in result.findings if f.check == "text_not_too_long").examples
    assert example.text is not None and len(example.text) < 400
    assert example.text.endswith("(100800 characters)")


def test_long_texts_are_kept_under_the_default_bounds(tmp_path: Path) -> None:
    case = next(c for c in CASES if c.file == "long_texts.csv.gz")

    result = _validate(Case(case.file, None, None, (), ValidationSettings(min_rows=10)), tmp_path)

    assert (result.rows, result.rows_valid, result.invalid_texts) == (201, 201, {})
    assert not result.failed_warnings
    assert pd.read_parquet(tmp_path / "validated")["text"].str.len().max() == 100_800


def test_the_corpus_is_what_its_script_writes(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_corpus", CORPUS / "make_corpus.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    written = script.corpus()

    committed = {p.name for p in CORPUS.iterdir() if p.suffix != ".py"}
    assert set(written) == committed
    for name, content in written.items():
        on_disk = (CORPUS / name).read_bytes()
        if name.endswith(".gz"):  # zlib builds may compress differently; compare the content
            content, on_disk = gzip.decompress(content), gzip.decompress(on_disk)
        assert on_disk == content, name
