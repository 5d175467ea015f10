"""The validate step on real Great Expectations: thresholds, dropped rows, redaction, labels.

The corpus of bad input files is tested in `tests/data/test_bad_inputs.py`; these tests pin
down the behaviour each setting controls.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from tests.s3_server import S3Bucket
from textops.components.common.config import TrainingConfig
from textops.components.common.errors import ConfigError, DataValidationError
from textops.components.common.labels import LabelMap
from textops.components.common.settings import ValidationSettings
from textops.components.validate.checks import (
    Check,
    Columns,
    build_checks,
    validate_file,
    validate_frame,
)
from textops.components.validate.report import ValidationResult

#: Small data sets pass the row count; the checks under test are the others.
SMALL = ValidationSettings(min_rows=2)


def changed(settings: ValidationSettings, **changes: Any) -> ValidationSettings:
    """`settings` with `changes`, checked as any settings are."""
    return ValidationSettings(**{**settings.model_dump(), **changes})


@dataclass
class Outputs:
    validated: Path
    result: Path
    report: Path
    summary: Path


@pytest.fixture
def outputs(tmp_path: Path) -> Outputs:
    # Nested folders that do not exist yet: the step must create them.
    out = tmp_path / "out"
    return Outputs(
        validated=out / "validated" / "data",
        result=out / "result" / "data",
        report=out / "report" / "report.html",
        summary=out / "summary" / "summary.md",
    )


def _validate(
    data: str | Path,
    outputs: Outputs,
    settings: ValidationSettings = SMALL,
    *,
    production_labels: LabelMap | None = None,
    text: str = "text",
    label: str = "label",
) -> ValidationResult:
    return validate_file(
        data=str(data),
        data_format="auto",
        text_column=text,
        label_column=label,
        settings=settings,
        production_labels=production_labels,
        validated_path=str(outputs.validated),
        result_path=str(outputs.result),
        report_path=str(outputs.report),
        summary_path=str(outputs.summary),
    )


def _csv(tmp_path: Path, rows: list[tuple[str, str]], name: str = "d.csv") -> Path:
    frame = pd.DataFrame(rows, columns=["text", "label"])
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _reviews(n: int, labels: tuple[str, ...] = ("pos", "neg")) -> list[tuple[str, str]]:
    """n distinct texts, labels taken in turn."""
    return [(f"review number {i} of the shop", labels[i % len(labels)]) for i in range(n)]


def _failed(outputs: Outputs) -> list[str]:
    """The names of the critical checks that failed, from the JSON result."""
    document = json.loads(outputs.result.read_text(encoding="utf-8"))
    return [
        f["check"] for f in document["findings"] if f["severity"] == "critical" and not f["success"]
    ]


def test_importing_the_step_does_not_load_great_expectations() -> None:
    code = (
        "import sys, textops.components.validate.checks, textops.components.validate.catalogue;"
        "print('great_expectations' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


def test_settings_defaults_are_the_training_config_defaults() -> None:
    defaults = TrainingConfig()
    for name in ValidationSettings.model_fields:
        assert getattr(ValidationSettings(), name) == getattr(defaults, name), name


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"text_mostly": 0.0}, "text_mostly\n  Input should be greater than 0"),
        (
            {"min_text_chars": 20, "max_text_chars": 10},
            "min_text_chars (20) exceeds max_text_chars",
        ),
        (
            {"max_duplicate_share": 1.5},
            "max_duplicate_share\n  Input should be less than or equal to 1",
        ),
        ({"min_class_share": 1.0}, "min_class_share\n  Input should be less than 1"),
        ({"min_rows": 0}, "min_rows\n  Input should be greater than or equal to 1"),
    ],
)
def test_impossible_settings_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        ValidationSettings(**changes)  # type: ignore[arg-type]


def test_sample_data_passes_and_is_written_canonically(outputs: Outputs) -> None:
    result = _validate("sample", outputs, ValidationSettings())

    assert result.success
    assert (result.rows, result.rows_valid, result.rows_dropped) == (3000, 3000, 0)
    assert result.label_counts == {"negative": 1500, "positive": 1500}
    assert [f.check for f in result.findings] == [
        c.name for c in build_checks(ValidationSettings())
    ]
    # Two sample sentences hold a line break; that is reported, not fatal.
    assert [f.check for f in result.failed_warnings] == ["text_on_one_line"]
    metadata = result.metadata()
    assert json.loads(json.dumps(metadata)) == metadata  # JSON-friendly for KFP
    assert metadata["failed_critical_checks"] == 0

    schema = pq.read_schema(outputs.validated)
    assert schema.names == ["text", "label", "source"]
    assert schema.field("text").type == pa.string()
    assert schema.field("label").type == pa.string()
    document = json.loads(outputs.result.read_text(encoding="utf-8"))
    assert document["success"] is True
    assert document["counts"]["labels"] == {"negative": 1500, "positive": 1500}
    assert document["settings"] == ValidationSettings().model_dump()
    assert "passed with warnings" in outputs.report.read_text(encoding="utf-8")
    assert "| text_valid | text | critical | pass |" in outputs.summary.read_text(encoding="utf-8")


def test_missing_file_is_a_config_error_and_still_reports(tmp_path: Path, outputs: Outputs) -> None:
    with pytest.raises(ConfigError, match="data file not found"):
        _validate(tmp_path / "nowhere.csv", outputs)

    document = json.loads(outputs.result.read_text(encoding="utf-8"))
    assert document["success"] is False
    assert "data file not found" in document["error"]
    assert "could not be checked" in outputs.report.read_text(encoding="utf-8")


def test_a_failure_names_check_expectation_column_observed_value_and_rows(
    tmp_path: Path, outputs: Outputs
) -> None:
    rows = [("", "a") if i in (3, 7) else (f"text {i}", "ab"[i % 2]) for i in range(1, 11)]

    with pytest.raises(DataValidationError) as caught:
        _validate(_csv(tmp_path, rows), outputs)

    assert str(caught.value).startswith(
        "data failed 1 critical check: text_valid (expect_column_values_to_be_in_set) on "
        "'text': 2 of 10 rows have no valid text (20.0%); at most 1% allowed [2 null] "
        "(rows 3, 7); set text_mostly (now 0.99) lower to drop more invalid rows, or clean "
        "the data. Full report: "
    )
    assert not outputs.validated.exists()


def test_several_failures_are_all_named(tmp_path: Path, outputs: Outputs) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,label\n,positive\nfine,positive\n", encoding="utf-8")

    with pytest.raises(DataValidationError) as caught:
        _validate(path, outputs)

    assert str(caught.value).startswith("data failed 2 critical checks:")
    assert _failed(outputs) == ["text_valid", "at_least_two_labels"]


def test_invalid_texts_within_the_allowance_are_dropped(tmp_path: Path, outputs: Outputs) -> None:
    rows = [*_reviews(198), ("  ", "pos"), ("x" * 51, "neg"), ("ok", "neg")]
    settings = changed(SMALL, min_text_chars=3, max_text_chars=50, text_mostly=0.98)

    result = _validate(_csv(tmp_path, rows), outputs, settings)

    assert result.success
    assert result.invalid_texts == {"blank": 1, "too short": 1, "too long": 1}
    assert (result.rows, result.rows_valid, result.rows_dropped) == (201, 198, 3)
    validated = pd.read_parquet(outputs.validated)
    assert validated["text"].tolist() == [text for text, _ in _reviews(198)]
    [text_valid] = [f for f in result.findings if f.check == "text_valid"]
    assert "3 of 201 rows have no valid text (1.5%); at most 2% allowed" in text_valid.observed
    assert "[1 blank, 1 too short (under 3 characters), 1 too long (over 50 characters)]" in (
        text_valid.observed
    )
    assert json.loads(outputs.result.read_text())["counts"]["rows_dropped"] == 3


@pytest.mark.parametrize(
    ("rows", "check", "relaxed"),
    [
        # 3 of 10 rows repeat an earlier text (over 5%).
        (
            [*[("same", "a")] * 4, *_reviews(6, ("a", "b"))],
            "few_duplicate_texts",
            {"max_duplicate_share": 0.3},
        ),
        # 2 of 20 rows share a text that carries two labels (over 0%); 1 repeat is 5%.
        (
            [("same", "a"), ("same", "b"), *_reviews(18, ("a", "b"))],
            "one_label_per_text",
            {"max_conflicting_label_share": 0.1},
        ),
        # The rarest class has 1 of 120 rows (under 1%).
        (
            [*_reviews(119, ("a", "b")), ("lonely", "c")],
            "min_class_share",
            {"min_class_share": 0.005},
        ),
        # 5 rows, 6 needed.
        (_reviews(5, ("a", "b")), "min_rows", {"min_rows": 5}),
    ],
    ids=["duplicates", "conflicting-labels", "rare-class", "min-rows"],
)
def test_each_threshold_fails_the_data_and_relaxing_it_passes(
    tmp_path: Path, outputs: Outputs, rows: list[tuple[str, str]], check: str, relaxed: dict
) -> None:
    strict = changed(SMALL, min_rows=6)
    with pytest.raises(DataValidationError):
        _validate(_csv(tmp_path, rows), outputs, strict)
    assert _failed(outputs) == [check]

    result = _validate(_csv(tmp_path, rows), outputs, changed(strict, **relaxed))
    assert result.success
    [finding] = [f for f in result.findings if f.check == check]
    assert finding.success


def test_personal_data_is_redacted_before_anything_sees_it(
    tmp_path: Path, outputs: Outputs
) -> None:
    secret = "mail jane.doe@example.com or call +44 20 7946 0958"
    rows = [*_reviews(10), (secret, "pos"), ("   ", "neg")]
    settings = changed(SMALL, redact_pii=True, text_mostly=0.9)

    result = _validate(_csv(tmp_path, rows), outputs, settings)

    assert result.redactions == {"EMAIL": 1, "IBAN": 0, "CARD": 0, "PHONE": 1}
    validated = pd.read_parquet(outputs.validated)
    assert "mail [EMAIL] or call [PHONE]" in validated["text"].tolist()
    for written in (outputs.validated, outputs.result, outputs.report, outputs.summary):
        content = written.read_bytes()
        assert b"jane.doe" not in content and b"7946" not in content, written
    assert json.loads(outputs.result.read_text())["counts"]["redactions"]["EMAIL"] == 1


def test_without_redaction_the_text_is_kept_as_written(tmp_path: Path, outputs: Outputs) -> None:
    rows = [*_reviews(10), ("mail jane.doe@example.com", "pos")]

    result = _validate(_csv(tmp_path, rows), outputs)

    assert result.redactions == {}
    assert "mail jane.doe@example.com" in pd.read_parquet(outputs.validated)["text"].tolist()


def test_allowed_labels_compare_in_canonical_form(tmp_path: Path, outputs: Outputs) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        "".join(f'{{"text": "text {i}", "label": {i % 2}}}\n' for i in range(10)), encoding="utf-8"
    )
    settings = changed(SMALL, allowed_labels=("0", "1"))

    result = _validate(path, outputs, settings)

    assert result.label_counts == {"0": 5, "1": 5}
    [allowed] = [f for f in result.findings if f.check == "labels_allowed"]
    assert allowed.success


def test_production_labels_pass_when_equal_and_name_what_is_missing(
    tmp_path: Path, outputs: Outputs
) -> None:
    data = _csv(tmp_path, _reviews(10))

    result = _validate(data, outputs, production_labels=LabelMap(("neg", "pos")))
    assert [f.success for f in result.findings if f.check == "labels_match_production"] == [True]

    with pytest.raises(DataValidationError) as caught:
        _validate(data, outputs, production_labels=LabelMap(("neg", "neutral", "pos")))
    assert _failed(outputs) == ["labels_match_production"]
    assert "missing labels ['neutral']: the served model predicts" in str(caught.value)
    assert "--no-enforce-production-labels" in str(caught.value)


def test_without_production_labels_the_check_is_not_in_the_suite() -> None:
    names = [check.name for check in build_checks(ValidationSettings())]

    assert "labels_match_production" not in names
    assert "labels_allowed" not in names
    assert "labels_match_production" in [
        c.name for c in build_checks(ValidationSettings(), LabelMap(("a", "b")))
    ]


def test_integer_labels_become_strings(tmp_path: Path, outputs: Outputs) -> None:
    path = tmp_path / "ints.jsonl"
    path.write_text(
        '{"text": "bad", "label": 0}\n{"text": "good", "label": 1}\n'
        '{"text": "great", "label": 1.0}\n',
        encoding="utf-8",
    )

    result = _validate(path, outputs, changed(SMALL, min_class_share=0.3))

    assert result.label_counts == {"0": 1, "1": 2}
    assert pd.read_parquet(outputs.validated)["label"].tolist() == ["0", "1", "1"]
    assert pq.read_schema(outputs.validated).field("label").type == pa.string()


def test_user_columns_are_renamed_and_a_colliding_extra_column_dropped(
    tmp_path: Path, outputs: Outputs
) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text("review,sentiment,text,stars\nloved it,pos,x,5\nhated it,neg,y,1\n")

    _validate(path, outputs, text="review", label="sentiment")

    validated = pd.read_parquet(outputs.validated)
    assert list(validated.columns) == ["text", "label", "stars"]
    assert validated["text"].tolist() == ["loved it", "hated it"]
    assert validated["label"].tolist() == ["pos", "neg"]


def test_same_column_for_text_and_label_is_a_config_error(outputs: Outputs) -> None:
    with pytest.raises(ConfigError, match="both 'text'"):
        _validate("sample", outputs, text="text", label="text")
    assert outputs.result.exists()


def test_a_uri_is_validated_like_a_file(outputs: Outputs, s3_bucket: S3Bucket) -> None:
    # A bucket of the S3 server on loopback, read as the pipeline reads s3:// data.
    frame = pd.DataFrame(_reviews(10), columns=["text", "label"])
    uri = s3_bucket.url("validate/reviews.csv")
    with fsspec.open(uri, "w") as handle:
        frame.to_csv(handle, index=False)

    result = _validate(uri, outputs)

    assert result.success
    assert result.source == uri
    assert pd.read_parquet(outputs.validated)["text"].tolist() == frame["text"].tolist()


def test_report_escapes_user_text(tmp_path: Path, outputs: Outputs) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"text": "   ", "label": "<script>alert(1)</script>"}\n{"text": "ok", "label": "b"}\n'
    )

    with pytest.raises(DataValidationError):
        _validate(path, outputs)

    report = outputs.report.read_text(encoding="utf-8")
    assert "<script>alert" not in report
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report


def test_an_added_check_runs_with_the_suite() -> None:
    # How a project-specific check slots in: one more Check beside the built ones.
    import great_expectations.expectations as gxe

    too_long = Check(
        name="text_at_most_10_chars",
        column="text",
        severity="critical",
        build=lambda c: gxe.ExpectColumnValueLengthsToBeBetween(column=c.text, max_value=10),
        problem="longer than 10 characters",
    )
    frame = pd.DataFrame({"body": ["short", "a rather long text", "ok"], "y": ["a", "b", "a"]})
    settings = changed(SMALL, min_class_share=0.2)

    result = validate_frame(
        frame,
        Columns(text="body", label="y"),
        settings,
        checks=[*build_checks(settings), too_long],
    )

    assert not result.success
    [failed] = result.failed_critical
    assert failed.describe() == (
        "text_at_most_10_chars (expect_column_value_lengths_to_be_between) on 'body': "
        "1 of 3 rows longer than 10 characters (row 2)"
    )
    assert failed.examples[0].text == "a rather long text"
