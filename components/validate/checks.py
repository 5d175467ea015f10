"""The validate step: Great Expectations checks that stop bad labelled data before training.

`validate_file` reads the data, redacts personal data when asked, profiles it (`profile.py`),
runs the suite (`catalogue.py`) with Great Expectations (`engine.py`), writes the result as
JSON, HTML and Markdown, and either raises `DataValidationError` or writes the validated rows.
Great Expectations takes seconds to import, so it is imported only when checks run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from textops.components.common import config, dataio
from textops.components.common.errors import ConfigError, DataError, DataValidationError
from textops.components.common.labels import LabelMap
from textops.components.common.redaction import KINDS, redact_series
from textops.components.common.settings import FeedbackMergeSettings, ValidationSettings
from textops.components.validate.catalogue import Check, Columns, Context, build_checks
from textops.components.validate.engine import run_checks
from textops.components.validate.merge import (
    MergedData,
    data_fingerprint,
    merge_feedback,
    read_snapshot,
    write_production_test,
)
from textops.components.validate.profile import as_text, canonical_labels, profile_frame
from textops.components.validate.report import ValidationResult, write_outputs

__all__ = [
    "LABEL",
    "TEXT",
    "Check",
    "Columns",
    "build_checks",
    "failure_message",
    "load_labelled_table",
    "redact_texts",
    "validate_file",
    "validate_frame",
    "write_validated",
]

logger = logging.getLogger(__name__)

#: Column names of the validated data set, whatever the user's columns were called.
TEXT = "text"
LABEL = "label"


def validate_file(
    *,
    data: str,
    data_format: str,
    text_column: str,
    label_column: str,
    settings: ValidationSettings,
    production_labels: LabelMap | None,
    validated_path: str,
    result_path: str,
    report_path: str,
    summary_path: str,
    feedback: Sequence[str] = (),
    merge: FeedbackMergeSettings | None = None,
    production_test_path: str | None = None,
) -> ValidationResult:
    """Validate a labelled data file, merged with feedback snapshots, and write its valid rows
    out with canonical columns.

    The JSON result, the HTML report and the Markdown summary are always written, also when
    the data cannot be read or fails a check, so that a failed run explains itself.

    Args:
        data: A CSV, TSV, Parquet or JSONL file or fsspec URI, or "sample" for the bundled set.
        data_format: One of auto, csv, tsv, parquet, jsonl.
        text_column: The user's column holding the text.
        label_column: The user's column holding the label.
        settings: The thresholds the data is held to.
        production_labels: The served model's labels, to hold the data's label set to; None
            on the first run or when the label set may change.
        validated_path: Where the validated Parquet file goes (columns `text`, `label`, and
            the user's other columns; rows with an invalid text left out).
        result_path: Where the JSON result goes (settings, counts, findings, success).
        report_path: Where the one-page HTML report goes.
        summary_path: Where the short Markdown summary goes.
        feedback: Feedback snapshot URIs whose "train" rows join the data before it is
            checked (`merge.py`).
        merge: How the snapshots are merged; `FeedbackMergeSettings()` when None.
        production_test_path: Where the snapshots' held-out rows go as Parquet (text, label;
            no rows when there are none); not written when None.

    Returns:
        What validation found, with the data's lineage; `metadata()` gives the values for the
        KFP artifact.

    Raises:
        ConfigError: The data path does not exist or the column settings are contradictory.
        DataError: The file or a snapshot cannot be read, or a snapshot holds a label the
            model does not know.
        DataValidationError: A critical check failed (a missing column included); the message
            names each failed check, its column, what was observed and a few offending rows.
    """
    columns = Columns(text=text_column, label=label_column)
    outputs = {"result_path": result_path, "report_path": report_path, "summary_path": summary_path}
    source = data
    try:
        source = config.resolve_data_path(data)
        frame = load_labelled_table(source, data_format, columns)
        merged = _merge_feedback(frame, columns, feedback, merge, settings, production_labels)
    except (ConfigError, DataError) as e:
        failed = ValidationResult(
            source=source, success=False, rows=0, settings=settings.model_dump(), error=str(e)
        )
        write_outputs(failed, **outputs)
        raise

    if production_test_path is not None:
        write_production_test(merged.production_test, production_test_path)
    lineage = {
        "base": {"data": source, "fingerprint": data_fingerprint(frame, columns)},
        "feedback": merged.feedback,
    }
    frame = merged.frame
    # Before any check, report or output sees the text.
    redactions = redact_texts(frame, columns.text) if settings.redact_pii else {}
    result, keep = _validate(frame, columns, settings, production_labels, source, None)
    result.redactions = redactions
    result.lineage = lineage
    write_outputs(result, **outputs)
    logger.info(
        "validated %s: rows=%d valid=%d success=%s failed_critical=%d failed_warnings=%d",
        source,
        result.rows,
        result.rows_valid,
        result.success,
        len(result.failed_critical),
        len(result.failed_warnings),
    )
    for finding in result.failed_warnings:
        logger.warning("data check warning: %s", finding.describe())
    if not result.success or keep is None:
        raise DataValidationError(failure_message(result, report_path))
    if result.rows_dropped:
        logger.warning(
            "dropped %d rows with an invalid text: %s", result.rows_dropped, result.invalid_texts
        )
    write_validated(frame[keep], columns, validated_path)
    return result


def _merge_feedback(
    frame: pd.DataFrame,
    columns: Columns,
    feedback: Sequence[str],
    merge: FeedbackMergeSettings | None,
    settings: ValidationSettings,
    production_labels: LabelMap | None,
) -> MergedData:
    """The data merged with the feedback snapshots' training rows (`merge_feedback`).

    A snapshot may hold the allowed labels when they are set, else the served model's, else
    those of the base data.
    """
    snapshots = [read_snapshot(uri) for uri in feedback]
    allowed: Sequence[str] = settings.canonical_allowed_labels
    if not allowed and production_labels is not None:
        allowed = production_labels.names
    if not allowed and columns.label in frame.columns:
        allowed = sorted(set(canonical_labels(frame[columns.label]).dropna()))
    if not snapshots:
        logger.info("no feedback snapshots: validating the base data only")
    return merge_feedback(frame, columns, snapshots, merge or FeedbackMergeSettings(), allowed)


def load_labelled_table(path: str, data_format: str, columns: Columns) -> pd.DataFrame:
    """Read a labelled table, its text column as strings and its rows indexed 0..n-1.

    A missing text or label column is not an error here: the suite reports it.

    Raises:
        ConfigError: The text and label columns are the same column.
        DataError: The file cannot be read.
    """
    if columns.text == columns.label:
        raise ConfigError(
            f"text_column and label_column are both {columns.text!r}: "
            "the text and the label must be separate columns"
        )
    frame = dataio.read_table(path, data_format)
    # Row numbers in findings are positions, so the index must be 0..n-1.
    frame = frame.reset_index(drop=True)
    if columns.text in frame.columns:
        frame[columns.text] = as_text(frame[columns.text])
    return frame


def redact_texts(frame: pd.DataFrame, text_column: str) -> dict[str, int]:
    """Replace personal data in the text column in place; return the count per kind.

    Only the counts are logged, never what was found.
    """
    if text_column not in frame.columns:
        return {}  # the suite reports the missing column
    frame[text_column], found = redact_series(frame[text_column])
    counts = {kind: found.get(kind, 0) for kind in KINDS}
    logger.info("redacted personal data: %s", " ".join(f"{k}={v}" for k, v in counts.items()))
    return counts


def validate_frame(
    frame: pd.DataFrame,
    columns: Columns,
    settings: ValidationSettings | None = None,
    *,
    production_labels: LabelMap | None = None,
    source: str = "dataframe",
    checks: Sequence[Check] | None = None,
) -> ValidationResult:
    """Run the suite on a DataFrame.

    Args:
        frame: The labelled data.
        columns: The user's names of the text and label columns.
        settings: The thresholds; `ValidationSettings()` (the defaults) when None.
        production_labels: The served model's labels, when the label set is enforced.
        source: Where the data came from, for the report.
        checks: The checks to run; `build_checks(settings, production_labels)` when None.

    Returns:
        The result; `success` is False when a critical check failed.
    """
    frame = frame.reset_index(drop=True)
    if columns.text in frame.columns:
        frame = frame.assign(**{columns.text: as_text(frame[columns.text])})
    result, _ = _validate(
        frame, columns, settings or ValidationSettings(), production_labels, source, checks
    )
    return result


def _validate(
    frame: pd.DataFrame,
    columns: Columns,
    settings: ValidationSettings,
    production_labels: LabelMap | None,
    source: str,
    checks: Sequence[Check] | None,
) -> tuple[ValidationResult, np.ndarray | None]:
    """The result, and per row whether it is kept (None when a required column is missing)."""
    if checks is None:
        checks = build_checks(settings, production_labels)
    context = Context(
        columns=columns,
        settings=settings,
        production_labels=production_labels,
        found_columns=tuple(map(str, frame.columns)),
    )
    base = ValidationResult(
        source=source, success=False, rows=len(frame), settings=settings.model_dump()
    )
    if columns.text not in frame.columns or columns.label not in frame.columns:
        # Only the checks that need no column can run; they name what is missing.
        base.findings = run_checks(
            frame, [c for c in checks if not c.needs_profile], context, frame
        )
        return base, None

    profile = profile_frame(frame, columns.text, columns.label, settings)
    context = Context(
        columns=columns,
        settings=settings,
        profile=profile,
        production_labels=production_labels,
        found_columns=context.found_columns,
    )
    base.findings = run_checks(profile.checked, checks, context, frame)
    base.success = not base.failed_critical
    base.rows_valid = int(profile.valid_text.sum())
    base.invalid_texts = dict(profile.text_problems)
    base.label_counts = dict(profile.label_counts)
    return base, profile.valid_text


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
    """Write validated rows as Parquet with canonical `text` and `label` string columns.

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
                    TEXT: as_text(frame[columns.text]).reset_index(drop=True),
                    LABEL: canonical_labels(frame[columns.label]).reset_index(drop=True),
                }
            ),
            frame[kept].reset_index(drop=True),
        ],
        axis=1,
    )
    try:
        dataio.write_table(validated, path, {TEXT: pa.string(), LABEL: pa.string()})
    except pa.ArrowException as e:
        raise DataError(
            f"cannot write the validated data to Parquet: {e}. A column that mixes types "
            "(numbers and strings, say) cannot be stored; make it one type or drop it"
        ) from e
    return validated
