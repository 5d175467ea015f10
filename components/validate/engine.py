"""Running the suite with Great Expectations and turning its results into findings.

Great Expectations is imported here, inside `run_checks`, so importing textops never loads it.
All checks run as one suite in one validation of one in-memory batch: Great Expectations hashes
the whole DataFrame each time it fetches the batch, about a second per million rows, so the
batch is fetched once for all checks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from textops.components.validate.catalogue import (
    MAX_EXAMPLES,
    Check,
    Context,
    count_offending,
)
from textops.components.validate.report import Example, Finding, clip

if TYPE_CHECKING:
    from great_expectations.core import ExpectationValidationResult

#: The name of each check travels in its expectation's `meta`, which GX hands back.
_META_KEY = "textops_check"


def run_checks(
    frame: pd.DataFrame, checks: Sequence[Check], context: Context, examples_from: pd.DataFrame
) -> list[Finding]:
    """Validate `frame` with Great Expectations: one finding per check, in the checks' order.

    Args:
        frame: What the expectations run on, indexed 0..n-1: the profile's checked frame, or
            the data as read when a required column is missing.
        checks: The checks to run; their names must be unique.
        context: What the checks' descriptions may quote.
        examples_from: The data the example rows are taken from (same rows as `frame`).
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.expectations.metadata_types import FailureSeverity

    names = [check.name for check in checks]
    if len(set(names)) != len(names):
        raise ValueError(f"check names must be unique: {names}")
    # GX logs each datasource and asset it registers at INFO; only its warnings matter here.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    gx_context = gx.get_context(mode="ephemeral")
    # One validation is a few seconds at most; GX's per-metric progress bars would be noise.
    gx_context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_definition = (
        gx_context.data_sources.add_pandas("textops")
        .add_dataframe_asset("labelled_data")
        .add_batch_definition_whole_dataframe("all_rows")
    )
    suite = gx_context.suites.add(gx.ExpectationSuite(name="textops_labelled_data"))
    for check in checks:
        expectation = check.build(context.columns)
        expectation.severity = FailureSeverity(check.severity)
        # GX may reorder results; the check's name in `meta` maps each result back to it.
        expectation.meta = {_META_KEY: check.name}
        suite.add_expectation(expectation)

    # A validation definition fetches the batch once; `batch.validate` would fetch (and hash)
    # the whole DataFrame a second time. SUMMARY gives counts and the first few offending
    # rows' positions; COMPLETE would list every offending row, which is unbounded.
    validation = gx_context.validation_definitions.add(
        gx.ValidationDefinition(name="textops_validation", data=batch_definition, suite=suite)
    )
    outcome = validation.run(
        batch_parameters={"dataframe": frame},
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES},
    )
    by_name = {_check_name(r): r for r in outcome.results}
    return [_finding(check, by_name[check.name], context, examples_from) for check in checks]


def _check_name(result: ExpectationValidationResult) -> str:
    expectation = result.expectation_config
    if expectation is None or not expectation.meta or _META_KEY not in expectation.meta:
        raise RuntimeError(f"Great Expectations returned a result without its check: {result}")
    return str(expectation.meta[_META_KEY])


def _finding(
    check: Check,
    result: ExpectationValidationResult,
    context: Context,
    examples_from: pd.DataFrame,
) -> Finding:
    info: dict[str, Any] = dict(result.result or {})
    config = result.expectation_config
    check_type = config.type if config is not None else "unknown"
    mostly = config.kwargs.get("mostly") if config is not None else None
    error = _exception_message(result.exception_info)
    rows: Sequence[int] = ()
    if error is not None:
        observed = f"could not be evaluated: {error}"
    else:
        if "partial_unexpected_index_list" in info:
            rows = [int(i) for i in info.get("partial_unexpected_index_list") or []]
        elif check.examples is not None and not result.success:
            rows = check.examples(context)
        if check.describe is not None:
            observed = check.describe(info, context)
        elif "unexpected_count" in info:
            observed = count_offending(info, check.problem, mostly)
        else:
            observed = f"observed {info.get('observed_value')!r}"
    examples = tuple(_example(examples_from, context, i) for i in rows[:MAX_EXAMPLES])
    bad = int(info.get("unexpected_count") or 0)
    if examples:
        noun = "row" if len(examples) == 1 else "rows"
        more = ", …" if max(bad, len(rows)) > len(examples) else ""
        observed += f" ({noun} {', '.join(str(e.row) for e in examples)}{more})"
    if not result.success and error is None and check.remedy is not None:
        # Every failure says what lets the data through, so nobody has to look it up.
        observed += f"; {check.remedy(context)}"
    return Finding(
        check=check.name,
        expectation=check_type,
        column=None if check.column is None else getattr(context.columns, check.column),
        severity=check.severity,
        success=bool(result.success),
        observed=observed,
        examples=examples,
    )


def _example(frame: pd.DataFrame, context: Context, position: int) -> Example:
    """Row `position` as the user wrote it, its text clipped."""

    def value(column: str) -> str | None:
        if column not in frame.columns:
            return None
        cell = frame[column].iloc[position]
        missing = pd.isna(cell)  # an array for a list-like cell, which is present
        return None if isinstance(missing, (bool, np.bool_)) and missing else str(cell)

    return Example(
        row=position + 1,
        text=clip(value(context.columns.text)),
        label=clip(value(context.columns.label)),
    )


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
