"""The validate step: Great Expectations checks that stop bad labelled data before training.

Each check pairs a Great Expectations expectation with a severity: a failed `critical` check
fails the step, a failed `warning` is only reported. New checks are one more `Check` in
`DEFAULT_CHECKS`. Great Expectations takes seconds to import, so it is imported inside the
functions that run it, never when this module is imported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from textops.components.common import config, dataio
from textops.components.common.errors import ConfigError, DataError, DataValidationError
from textops.components.common.labels import LabelMap, canonical_label
from textops.components.validate.report import (
    Example,
    Finding,
    Severity,
    ValidationResult,
    write_reports,
)

if TYPE_CHECKING:
    from great_expectations.core import ExpectationValidationResult
    from great_expectations.expectations import Expectation

logger = logging.getLogger(__name__)

#: Column names of the validated data set, whatever the user's columns were called.
TEXT = "text"
LABEL = "label"

#: A warning when more than this share of rows repeat another row's text.
MAX_DUPLICATE_TEXT_SHARE = 0.05
#: A warning when more than this share of rows have a text that also carries another label.
MAX_CONFLICTING_LABEL_SHARE = 0.0
#: Offending rows shown per check, in the report and in the error message.
MAX_EXAMPLES = 5

# A helper column computed before validation: how many distinct labels each row's text carries.
# The prefix keeps it clear of user column names.
LABELS_PER_TEXT = "__textops_labels_per_text"

# Whitespace and invisible characters, listed literally rather than as `\s`: pandas hands the
# regex to pyarrow (RE2) or to Python's `re` depending on the string backend, and RE2's `\s`
# matches ASCII whitespace only, so a text of no-break spaces would pass as non-empty.
_BLANK_CHARS = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    + "".join(chr(c) for c in range(0x2000, 0x200E))  # en quad .. zero-width joiner
    + "\u2028\u2029\u202f\u205f\u2060\u3000\ufeff"
)
BLANK_TEXT_REGEX = f"^[{_BLANK_CHARS}]*$"


@dataclass(frozen=True)
class Columns:
    """The user's names for the text and label columns."""

    text: str
    label: str


@dataclass(frozen=True)
class Check:
    """One expectation on the data, with its severity and how to explain a failure.

    Attributes:
        name: Unique name of the check in textops, e.g. `text_not_null`.
        column: Which column the check is about (`text` or `label`); None for the whole table.
        severity: `critical` fails the step; `warning` is only reported.
        build: Makes the Great Expectations expectation for the user's column names. It may
            target a helper column (see `LABELS_PER_TEXT`).
        problem: For row-wise expectations: what an offending row is, e.g. "null".
        describe: For aggregate expectations: turns the observed value (and the rows per
            label) into words, e.g. "no rows".
    """

    name: str
    column: Literal["text", "label"] | None
    severity: Severity
    build: Callable[[Columns], Expectation]
    problem: str = "unexpected"
    describe: Callable[[Any, Mapping[str, int]], str] | None = None


def _gxe() -> Any:
    """The Great Expectations expectations module, imported on first use (it is slow)."""
    import great_expectations.expectations as gxe

    return gxe


def _describe_rows(observed: Any, label_counts: Mapping[str, int]) -> str:
    return "no rows" if not observed else f"{observed} rows"


def _describe_label_count(observed: Any, label_counts: Mapping[str, int]) -> str:
    if not observed:
        return "no labels at all; a classifier needs at least 2 classes"
    named = ", ".join(f"{label!r} ({count} rows)" for label, count in label_counts.items())
    if observed == 1:
        return f"1 distinct label: {named}; a classifier needs at least 2 classes"
    return f"{observed} distinct labels: {named}"


DEFAULT_CHECKS: tuple[Check, ...] = (
    Check(
        name="has_rows",
        column=None,
        severity="critical",
        build=lambda c: _gxe().ExpectTableRowCountToBeBetween(min_value=1),
        describe=_describe_rows,
    ),
    Check(
        name="text_not_null",
        column="text",
        severity="critical",
        build=lambda c: _gxe().ExpectColumnValuesToNotBeNull(column=c.text),
        problem="null",
    ),
    Check(
        name="text_not_blank",
        column="text",
        severity="critical",
        build=lambda c: _gxe().ExpectColumnValuesToNotMatchRegex(
            column=c.text, regex=BLANK_TEXT_REGEX
        ),
        problem="empty or whitespace-only",
    ),
    Check(
        name="label_not_null",
        column="label",
        severity="critical",
        build=lambda c: _gxe().ExpectColumnValuesToNotBeNull(column=c.label),
        problem="null",
    ),
    Check(
        name="label_not_blank",
        column="label",
        severity="critical",
        build=lambda c: _gxe().ExpectColumnValuesToNotMatchRegex(
            column=c.label, regex=BLANK_TEXT_REGEX
        ),
        problem="empty or whitespace-only",
    ),
    Check(
        name="at_least_two_labels",
        column="label",
        severity="critical",
        build=lambda c: _gxe().ExpectColumnUniqueValueCountToBeBetween(column=c.label, min_value=2),
        describe=_describe_label_count,
    ),
    Check(
        name="few_duplicate_texts",
        column="text",
        severity="warning",
        build=lambda c: _gxe().ExpectColumnValuesToBeUnique(
            column=c.text, mostly=1 - MAX_DUPLICATE_TEXT_SHARE
        ),
        problem="share their text with another row",
    ),
    Check(
        name="one_label_per_text",
        column="text",
        severity="warning",
        build=lambda c: _gxe().ExpectColumnValuesToBeBetween(
            column=LABELS_PER_TEXT, max_value=1, mostly=1 - MAX_CONFLICTING_LABEL_SHARE
        ),
        problem="have a text that also appears with a different label",
    ),
)


def validate_file(
    *,
    data: str,
    data_format: str,
    text_column: str,
    label_column: str,
    validated_path: str,
    report_path: str,
    summary_path: str,
) -> ValidationResult:
    """Validate a labelled data file and write it out with canonical columns.

    The HTML report and the Markdown summary are always written, also when the data cannot
    be read or fails a check, so that a failed run explains itself.

    Args:
        data: A CSV, TSV, Parquet or JSONL file, or "sample" for the bundled data set.
        data_format: One of auto, csv, tsv, parquet, jsonl.
        text_column: The user's column holding the text.
        label_column: The user's column holding the label.
        validated_path: Where the validated Parquet file goes (columns `text`, `label`, and
            the user's other columns).
        report_path: Where the one-page HTML report goes.
        summary_path: Where the short Markdown summary goes.

    Returns:
        What validation found; `metadata()` gives the values for the KFP artifact.

    Raises:
        ConfigError: The data path does not exist or the column settings are contradictory.
        DataError: The file cannot be read or lacks a column.
        DataValidationError: A critical check failed; the message names each failure.
    """
    columns = Columns(text=text_column, label=label_column)
    source = data
    try:
        source = config.resolve_data_path(data)
        frame = load_labelled_table(source, data_format, columns)
    except (ConfigError, DataError) as e:
        write_reports(
            ValidationResult(source=source, success=False, rows=0, error=str(e)),
            report_path,
            summary_path,
        )
        raise

    result = validate_frame(frame, columns, source=source)
    write_reports(result, report_path, summary_path)
    logger.info(
        "validated %s: rows=%d success=%s failed_critical=%d failed_warnings=%d",
        source,
        result.rows,
        result.success,
        len(result.failed_critical),
        len(result.failed_warnings),
    )
    for finding in result.failed_warnings:
        logger.warning("data check warning: %s", finding.describe())
    if not result.success:
        raise DataValidationError(failure_message(result, report_path))

    write_validated(frame, columns, validated_path)
    return result


def load_labelled_table(path: str, data_format: str, columns: Columns) -> pd.DataFrame:
    """Read a labelled table and make sure it has the text and label columns.

    Raises:
        ConfigError: The text and label columns are the same column.
        DataError: The file cannot be read or lacks one of the columns.
    """
    if columns.text == columns.label:
        raise ConfigError(
            f"text_column and label_column are both {columns.text!r}: "
            "the text and the label must be separate columns"
        )
    frame = dataio.read_table(path, data_format)
    dataio.require_columns(frame, [columns.text, columns.label], path)
    # Row numbers in findings are positions, so the index must be 0..n-1.
    return frame.reset_index(drop=True)


def validate_frame(
    frame: pd.DataFrame,
    columns: Columns,
    *,
    source: str = "dataframe",
    checks: Sequence[Check] = DEFAULT_CHECKS,
) -> ValidationResult:
    """Run `checks` on a DataFrame that has the text and label columns.

    Args:
        frame: The labelled data, indexed 0..n-1.
        columns: The user's names of the text and label columns.
        source: Where the data came from, for the report.
        checks: The checks to run; `DEFAULT_CHECKS` unless a caller adds or removes some.

    Returns:
        The result; `success` is False when a critical check failed.
    """
    labels = _canonical_labels(frame[columns.label])
    label_counts = _count_labels(labels)
    findings = run_checks(frame, columns, labels, label_counts, checks)
    success = not any(f.severity == "critical" and not f.success for f in findings)
    return ValidationResult(
        source=source,
        success=success,
        rows=len(frame),
        label_counts=label_counts,
        findings=findings,
    )


def run_checks(
    frame: pd.DataFrame,
    columns: Columns,
    labels: pd.Series,
    label_counts: Mapping[str, int],
    checks: Sequence[Check],
) -> list[Finding]:
    """Validate `frame` with Great Expectations: one finding per check, in the checks' order.

    Args:
        frame: The labelled data, indexed 0..n-1.
        columns: The user's names of the text and label columns.
        labels: The labels in canonical string form (None where missing), so that "1" and 1.0
            count as one class, as they will in training.
        label_counts: Rows per canonical label, for the checks' descriptions.
        checks: The checks to run; their names must be unique.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.expectations.metadata_types import FailureSeverity

    names = [check.name for check in checks]
    if len(set(names)) != len(names):
        raise ValueError(f"check names must be unique: {names}")
    # GX logs each datasource and asset it registers at INFO; only its warnings matter here.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    # Validation takes well under a second; GX's per-metric progress bars would only be noise.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)

    checked = _frame_for_checks(frame, columns, labels)
    batch = (
        context.data_sources.add_pandas("textops")
        .add_dataframe_asset("labelled_data")
        .add_batch_definition_whole_dataframe("all_rows")
        .get_batch(batch_parameters={"dataframe": checked})
    )
    suite = gx.ExpectationSuite(name="textops_labelled_data")
    for check in checks:
        expectation = check.build(columns)
        expectation.severity = FailureSeverity(check.severity)
        # GX may reorder results; the check's name in `meta` maps each result back to it.
        expectation.meta = {"textops_check": check.name}
        suite.add_expectation(expectation)

    outcome = batch.validate(
        suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES}
    )
    by_name = {_check_name(r): r for r in outcome.results}
    return [_finding(check, by_name[check.name], frame, columns, label_counts) for check in checks]


def _check_name(result: ExpectationValidationResult) -> str:
    expectation = result.expectation_config
    if expectation is None or not expectation.meta or "textops_check" not in expectation.meta:
        raise RuntimeError(f"Great Expectations returned a result without its check: {result}")
    return str(expectation.meta["textops_check"])


def _canonical_labels(values: pd.Series) -> pd.Series:
    return pd.Series(
        [None if _is_missing(v) else canonical_label(v) for v in values],
        index=values.index,
        dtype=object,
    )


def _is_missing(value: Any) -> bool:
    # pd.isna on a list-like value returns an array; such a value is present, not missing.
    missing = pd.isna(value)
    return isinstance(missing, bool) and missing


def _count_labels(labels: pd.Series) -> dict[str, int]:
    present = labels.dropna()
    if present.empty:
        return {}
    counts = present.value_counts()
    return {name: int(counts[name]) for name in LabelMap.from_values(present).names}


def _frame_for_checks(frame: pd.DataFrame, columns: Columns, labels: pd.Series) -> pd.DataFrame:
    """The columns the checks look at: text, canonical labels, and the helper columns."""
    checked = pd.DataFrame({columns.text: frame[columns.text], columns.label: labels})
    # Rows with a null text get NaN here, which GX counts as missing rather than offending.
    checked[LABELS_PER_TEXT] = checked.groupby(columns.text, dropna=True)[columns.label].transform(
        "nunique"
    )
    return checked


def _finding(
    check: Check,
    result: ExpectationValidationResult,
    frame: pd.DataFrame,
    columns: Columns,
    label_counts: Mapping[str, int],
) -> Finding:
    info: dict[str, Any] = dict(result.result or {})
    check_type = result.expectation_config.type if result.expectation_config else "unknown"
    examples: tuple[Example, ...] = ()
    error = _exception_message(result.exception_info)
    if error is not None:
        observed = f"could not be evaluated: {error}"
    elif "unexpected_count" in info:
        rows = [int(i) for i in info.get("partial_unexpected_index_list") or []][:MAX_EXAMPLES]
        examples = tuple(_example(frame, columns, i) for i in rows)
        mostly = getattr(result.expectation_config, "kwargs", {}).get("mostly")
        observed = _describe_offending(check, info, examples, mostly)
    elif check.describe is not None:
        observed = check.describe(info.get("observed_value"), label_counts)
    else:
        observed = f"observed {info.get('observed_value')!r}"
    return Finding(
        check=check.name,
        expectation=check_type,
        column=None if check.column is None else getattr(columns, check.column),
        severity=check.severity,
        success=bool(result.success),
        observed=observed,
        examples=examples,
    )


def _describe_offending(
    check: Check, info: Mapping[str, Any], examples: tuple[Example, ...], mostly: float | None
) -> str:
    bad = int(info.get("unexpected_count") or 0)
    total = int(info.get("element_count") or 0)
    text = f"{bad} of {total} rows {check.problem}"
    # A share only matters where the check tolerates some offending rows.
    if mostly is not None and mostly < 1:
        if bad and total:
            text += f" ({bad / total:.1%})"
        text += f"; at most {1 - mostly:.0%} allowed"
    if examples:
        noun = "row" if len(examples) == 1 else "rows"
        more = ", …" if bad > len(examples) else ""
        text += f" ({noun} {', '.join(str(e.row) for e in examples)}{more})"
    return text


def _example(frame: pd.DataFrame, columns: Columns, position: int) -> Example:
    row = frame.iloc[position]
    return Example(
        row=position + 1,
        text=_as_text(row[columns.text]),
        label=_as_text(row[columns.label]),
    )


def _as_text(value: Any) -> str | None:
    return None if _is_missing(value) else str(value)


def _exception_message(exception_info: Any) -> str | None:
    """The message of an exception GX caught while evaluating an expectation, if any."""
    if not exception_info:
        return None
    # GX gives either one {"raised_exception": ...} dict or a dict of them keyed by metric.
    infos = [exception_info] if "raised_exception" in exception_info else exception_info.values()
    for info in infos:
        if isinstance(info, Mapping) and info.get("raised_exception"):
            return str(info.get("exception_message") or "unknown error")
    return None


def failure_message(result: ValidationResult, report_path: str | None = None) -> str:
    """The error message for a failed validation: every failed critical check, in one line."""
    failed = result.failed_critical
    noun = "check" if len(failed) == 1 else "checks"
    message = f"data failed {len(failed)} critical {noun}: " + "; ".join(
        f.describe() for f in failed
    )
    if report_path is not None:
        message += f". Full report: {report_path}"
    return message


def write_validated(frame: pd.DataFrame, columns: Columns, path: str) -> pd.DataFrame:
    """Write the validated data as Parquet with canonical `text` and `label` string columns.

    The user's other columns are kept, except one already named `text` or `label`, which
    would collide with the canonical columns.

    Returns:
        The frame that was written.
    """
    extras = [c for c in frame.columns if c not in (columns.text, columns.label)]
    colliding = [c for c in extras if c in (TEXT, LABEL)]
    if colliding:
        logger.warning(
            "dropping column(s) %s: the validated data names its text and label columns %r, %r",
            colliding,
            TEXT,
            LABEL,
        )
    kept = [c for c in extras if c not in colliding]
    validated = pd.concat(
        [
            pd.DataFrame(
                {
                    TEXT: frame[columns.text].map(str),
                    LABEL: frame[columns.label].map(canonical_label),
                }
            ),
            frame[kept],
        ],
        axis=1,
    )
    table = pa.Table.from_pandas(validated, preserve_index=False)
    # One string type throughout: pandas may hand over large_string, readers expect string.
    schema = pa.schema(
        [
            f.with_type(pa.string())
            if f.name in (TEXT, LABEL) or f.type == pa.large_string()
            else f
            for f in table.schema
        ]
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # pandas' schema metadata would describe the pre-cast types; the Arrow schema is enough.
    pq.write_table(table.cast(schema).replace_schema_metadata(None), path)
    return validated
