"""The validate step on real Great Expectations: good data passes, bad data fails clearly."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from textops.components.common.errors import ConfigError, DataError, DataValidationError
from textops.components.validate.checks import (
    DEFAULT_CHECKS,
    Check,
    Columns,
    validate_file,
    validate_frame,
)
from textops.components.validate.report import ValidationResult


@dataclass
class Outputs:
    validated: Path
    report: Path
    summary: Path


@pytest.fixture
def outputs(tmp_path: Path) -> Outputs:
    # Nested folders that do not exist yet: the step must create them.
    out = tmp_path / "out"
    return Outputs(
        validated=out / "validated" / "data",
        report=out / "report" / "report.html",
        summary=out / "summary" / "summary.md",
    )


def _validate(
    data: str | Path,
    outputs: Outputs,
    *,
    text: str = "text",
    label: str = "label",
    fmt: str = "auto",
) -> ValidationResult:
    return validate_file(
        data=str(data),
        data_format=fmt,
        text_column=text,
        label_column=label,
        validated_path=str(outputs.validated),
        report_path=str(outputs.report),
        summary_path=str(outputs.summary),
    )


def _write(tmp_path: Path, name: str, content: bytes | str) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def test_import_does_not_load_great_expectations() -> None:
    code = (
        "import sys, textops.components.validate.checks; print('great_expectations' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


def test_sample_data_passes_and_is_written_canonically(outputs: Outputs) -> None:
    result = _validate("sample", outputs)

    assert result.success
    assert result.rows == 3000
    assert result.label_counts == {"negative": 1500, "positive": 1500}
    assert {f.check for f in result.findings} == {c.name for c in DEFAULT_CHECKS}
    metadata = result.metadata()
    assert json.loads(json.dumps(metadata)) == metadata  # JSON-friendly for KFP
    assert metadata["failed_critical_checks"] == 0
    assert metadata["failed_warning_checks"] == 0

    schema = pq.read_schema(outputs.validated)
    assert schema.names == ["text", "label", "source"]
    assert schema.field("text").type == pa.string()
    assert schema.field("label").type == pa.string()
    assert "passed" in outputs.report.read_text(encoding="utf-8")
    assert "| text_not_null | text | critical | pass |" in outputs.summary.read_text(
        encoding="utf-8"
    )


# (file name, content, error type, fragments the message must hold)
BAD_INPUTS = [
    pytest.param("empty.csv", b"", DataError, ["is empty"], id="empty-file"),
    pytest.param(
        "header.csv",
        "text,label\n",
        DataValidationError,
        ["expect_table_row_count_to_be_between: no rows"],
        id="header-only",
    ),
    pytest.param(
        "nolabel.csv",
        "text,category\nfine,a\nbad,b\n",
        DataError,
        ["no column 'label'", "columns found: text, category"],
        id="missing-column",
    ),
    pytest.param(
        "nulltext.csv",
        "text,label\n,a\n,b\n,a\n",
        DataValidationError,
        ["expect_column_values_to_not_be_null on 'text': 3 of 3 rows null", "rows 1, 2, 3"],
        id="all-null-text",
    ),
    pytest.param(
        "oneclass.csv",
        "text,label\ngood,positive\ngreat,positive\nfine,positive\n",
        DataValidationError,
        ["1 distinct label: 'positive' (3 rows)", "on 'label'"],
        id="one-class",
    ),
    pytest.param(
        "blank.jsonl",
        '{"text": "", "label": "a"}\n{"text": "ok", "label": "b"}\n'
        '{"text": "   ", "label": "a"}\n{"text": "\\u00a0\\t", "label": "b"}\n',
        DataValidationError,
        [
            "expect_column_values_to_not_match_regex on 'text': "
            "3 of 4 rows empty or whitespace-only",
            "rows 1, 3, 4",
        ],
        id="empty-string-texts",
    ),
    pytest.param(
        "nulllabel.csv",
        "text,label\ngood,positive\nbad,\nfine,negative\n",
        DataValidationError,
        ["expect_column_values_to_not_be_null on 'label': 1 of 3 rows null (row 2)"],
        id="null-label",
    ),
    pytest.param(
        "latin1.csv",
        "text,label\ncafé au lait,a\nthé,b\n".encode("latin-1"),
        DataError,
        ["not valid UTF-8", "re-encode it as UTF-8"],
        id="non-utf8",
    ),
    pytest.param(
        "semicolon.csv",
        "text;label\ngood;positive\nbad;negative\n",
        DataError,
        ["no column 'text', 'label'", "columns found: text;label"],
        id="wrong-delimiter",
    ),
]


@pytest.mark.parametrize(("name", "content", "error", "fragments"), BAD_INPUTS)
def test_bad_input_fails_with_a_clear_message_and_still_reports(
    tmp_path: Path,
    outputs: Outputs,
    name: str,
    content: bytes | str,
    error: type[Exception],
    fragments: list[str],
) -> None:
    path = _write(tmp_path, name, content)

    with pytest.raises(error) as caught:
        _validate(path, outputs)

    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message
    # A failed run still explains itself; nothing claims to be validated data.
    assert "failed" in outputs.report.read_text(encoding="utf-8")
    assert "failed" in outputs.summary.read_text(encoding="utf-8")
    assert not outputs.validated.exists()


def test_missing_file_is_a_config_error(tmp_path: Path, outputs: Outputs) -> None:
    with pytest.raises(ConfigError, match="data file not found"):
        _validate(tmp_path / "nowhere.csv", outputs)
    assert outputs.report.exists()


def test_failure_message_names_check_column_count_and_rows(
    tmp_path: Path, outputs: Outputs
) -> None:
    rows = [("", "a") if i in (3, 7) else (f"text {i}", "ab"[i % 2]) for i in range(1, 11)]
    path = _write(tmp_path, "d.csv", "text,label\n" + "".join(f"{t},{lbl}\n" for t, lbl in rows))

    with pytest.raises(DataValidationError) as caught:
        _validate(path, outputs)

    assert str(caught.value).startswith(
        "data failed 1 critical check: expect_column_values_to_not_be_null on 'text': "
        "2 of 10 rows null (rows 3, 7)"
    )


def test_several_failures_are_all_named(tmp_path: Path, outputs: Outputs) -> None:
    path = _write(tmp_path, "d.csv", "text,label\n,positive\nfine,positive\n")

    with pytest.raises(DataValidationError) as caught:
        _validate(path, outputs)

    message = str(caught.value)
    assert message.startswith("data failed 2 critical checks:")
    assert "on 'text'" in message
    assert "1 distinct label: 'positive'" in message


def test_integer_labels_become_strings(tmp_path: Path, outputs: Outputs) -> None:
    path = _write(
        tmp_path,
        "ints.jsonl",
        '{"text": "bad", "label": 0}\n{"text": "good", "label": 1}\n'
        '{"text": "great", "label": 1}\n',
    )

    result = _validate(path, outputs)

    assert result.label_counts == {"0": 1, "1": 2}
    validated = pd.read_parquet(outputs.validated)
    assert validated["label"].tolist() == ["0", "1", "1"]
    assert pq.read_schema(outputs.validated).field("label").type == pa.string()


def test_user_columns_are_renamed_and_a_colliding_extra_column_dropped(
    tmp_path: Path, outputs: Outputs
) -> None:
    path = _write(
        tmp_path,
        "reviews.csv",
        "review,sentiment,text,stars\nloved it,pos,x,5\nhated it,neg,y,1\n",
    )

    _validate(path, outputs, text="review", label="sentiment")

    validated = pd.read_parquet(outputs.validated)
    assert list(validated.columns) == ["text", "label", "stars"]
    assert validated["text"].tolist() == ["loved it", "hated it"]
    assert validated["label"].tolist() == ["pos", "neg"]


def test_same_column_for_text_and_label_is_a_config_error(outputs: Outputs) -> None:
    with pytest.raises(ConfigError, match="both 'text'"):
        _validate("sample", outputs, text="text", label="text")


def test_warnings_are_reported_but_do_not_fail(tmp_path: Path, outputs: Outputs) -> None:
    # Half the rows repeat a text, and one text carries both labels.
    lines = ["same,a", "same,a", "same,b", "other,b", "more,a", "else,b"]
    path = _write(tmp_path, "d.csv", "text,label\n" + "\n".join(lines) + "\n")

    result = _validate(path, outputs)

    assert result.success
    failed = {f.check: f for f in result.failed_warnings}
    assert set(failed) == {"few_duplicate_texts", "one_label_per_text"}
    assert failed["few_duplicate_texts"].observed.startswith(
        "3 of 6 rows share their text with another row (50.0%); at most 5% allowed"
    )
    assert [e.row for e in failed["one_label_per_text"].examples] == [1, 2, 3]
    assert result.metadata()["failed_warning_checks"] == 2
    assert "| warn |" in outputs.summary.read_text(encoding="utf-8")
    assert outputs.validated.exists()


def test_report_escapes_user_text(tmp_path: Path, outputs: Outputs) -> None:
    path = _write(
        tmp_path,
        "d.jsonl",
        '{"text": "   ", "label": "<script>alert(1)</script>"}\n{"text": "ok", "label": "b"}\n',
    )

    with pytest.raises(DataValidationError):
        _validate(path, outputs)

    report = outputs.report.read_text(encoding="utf-8")
    assert "<script>alert" not in report
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report


def test_an_added_check_runs_with_the_defaults() -> None:
    # How the coming checks (length bounds, allowed labels, ...) slot in: one more Check.
    import great_expectations.expectations as gxe

    too_long = Check(
        name="text_at_most_10_chars",
        column="text",
        severity="critical",
        build=lambda c: gxe.ExpectColumnValueLengthsToBeBetween(column=c.text, max_value=10),
        problem="longer than 10 characters",
    )
    frame = pd.DataFrame({"body": ["short", "a rather long text", "ok"], "y": ["a", "b", "a"]})

    result = validate_frame(
        frame, Columns(text="body", label="y"), checks=[*DEFAULT_CHECKS, too_long]
    )

    assert not result.success
    [failed] = result.failed_critical
    assert failed.check == "text_at_most_10_chars"
    assert failed.describe() == (
        "expect_column_value_lengths_to_be_between on 'body': "
        "1 of 3 rows longer than 10 characters (row 2)"
    )
    assert failed.examples[0].text == "a rather long text"
