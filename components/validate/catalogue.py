"""The expectation suite, kept as code: every check textops runs on labelled data.

Each check pairs a Great Expectations expectation with a severity (a failed `critical` check
stops the pipeline, a failed `warning` is only reported) and with how to explain a failure in
words. `build_checks` turns the settings into the suite; adding a check is one more `Check`
there. Great Expectations takes seconds to import, so expectations are built lazily, by the
engine that runs them, never when this module is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from textops.components.common.labels import LabelMap
from textops.components.common.settings import ValidationSettings
from textops.components.validate.profile import (
    CLASS_SHARE,
    CONFLICTING_LABEL,
    LINE_BREAK_REGEX,
    NUMERIC_LOOKALIKE,
    REPEATS_EARLIER,
    TEXT_STATUS,
    Profile,
)
from textops.components.validate.report import Severity

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation

#: Offending rows shown per check, in the report and in the error message.
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class Columns:
    """The user's names for the text and label columns."""

    text: str
    label: str


@dataclass(frozen=True)
class Context:
    """What a check's description may quote besides Great Expectations' own result.

    Attributes:
        columns: The user's column names.
        settings: The thresholds in force.
        profile: The data as the checks saw it; None when a required column is missing.
        production_labels: The served model's labels, when the label set is enforced.
        found_columns: The columns the file has, for a missing-column message.
    """

    columns: Columns
    settings: ValidationSettings
    profile: Profile | None = None
    production_labels: LabelMap | None = None
    found_columns: tuple[str, ...] = ()


Describe = Callable[[Mapping[str, Any], Context], str]
Remedy = Callable[[Context], str]


@dataclass(frozen=True)
class Check:
    """One expectation on the data, with its severity and how to explain a failure.

    Attributes:
        name: Unique name of the check in textops, e.g. `text_valid`.
        column: Which column the check is about (`text` or `label`); None for the whole table.
        severity: `critical` fails the step; `warning` is only reported.
        build: Makes the Great Expectations expectation for the user's column names. It may
            target a helper column of the profile (see `profile.py`).
        problem: For row-wise expectations: what an offending row is, e.g. "null".
        describe: Turns Great Expectations' result (and the context) into words; replaces
            the default "N of M rows <problem>" of row-wise expectations.
        examples: For aggregate expectations: positions of a few rows that show the problem.
        needs_profile: False for the checks that run before the columns are known to exist.
        remedy: What lets such data through, added to a failure's words: the setting that
            changes the check and its value now, or, for a check no setting relaxes, what to
            change in the data. A user who meets a failure should not have to look it up.
    """

    name: str
    column: Literal["text", "label"] | None
    severity: Severity
    build: Callable[[Columns], Expectation]
    problem: str = "unexpected"
    describe: Describe | None = None
    examples: Callable[[Context], Sequence[int]] | None = None
    needs_profile: bool = True
    remedy: Callable[[Context], str] | None = None


def _gxe() -> Any:
    """The Great Expectations expectations module, imported on first use (it is slow)."""
    import great_expectations.expectations as gxe

    return gxe


def percent(share: float) -> str:
    """A share as a short percentage: 0.05 -> "5%", 0.005 -> "0.5%"."""
    return f"{share * 100:.3g}%"


def count_offending(info: Mapping[str, Any], problem: str, mostly: float | None = None) -> str:
    """Words for a row-wise result: N of M rows <problem>, the share, and the allowance."""
    bad = int(info.get("unexpected_count") or 0)
    total = int(info.get("element_count") or 0)
    text = f"{bad} of {total} rows {problem}"
    if mostly is not None and mostly < 1:
        if bad and total:
            text += f" ({bad / total:.1%})"
        text += f"; at most {percent(1 - mostly)} allowed"
    return text


def change_setting(name: str, direction: Literal["higher", "lower"], otherwise: str) -> Remedy:
    """A remedy naming the setting `name`: "set NAME (now VALUE) DIRECTION, or OTHERWISE"."""

    def remedy(context: Context) -> str:
        return f"set {name} (now {getattr(context.settings, name)}) {direction}, or {otherwise}"

    return remedy


def no_setting(what_to_do: str) -> Remedy:
    """A remedy for a check no setting relaxes: what to change in the data instead."""
    return lambda context: f"no setting relaxes this check: {what_to_do}"


def _rows(count: int) -> str:
    return "1 row" if count == 1 else f"{count} rows"


def _named_counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{label!r} ({_rows(count)})" for label, count in counts.items())


def _column_present(kind: Literal["text", "label"]) -> Check:
    """The check that the `kind` column exists; its failure names the columns there are."""

    def describe(info: Mapping[str, Any], context: Context) -> str:
        name = getattr(context.columns, kind)
        if name in context.found_columns:
            return f"present among {len(context.found_columns)} columns"
        found = ", ".join(context.found_columns[:20]) or "none"
        more = ", …" if len(context.found_columns) > 20 else ""
        return f"no column {name!r}; columns found: {found}{more}"

    def remedy(context: Context) -> str:
        name = getattr(context.columns, kind)
        return (
            f"set {kind}_column (now {name!r}; --{kind}-column) to the column that holds the {kind}"
        )

    return Check(
        name=f"{kind}_column_present",
        column=kind,
        severity="critical",
        build=lambda c: _gxe().ExpectColumnToExist(column=getattr(c, kind)),
        describe=describe,
        needs_profile=False,
        remedy=remedy,
    )


def _describe_rows(info: Mapping[str, Any], context: Context) -> str:
    observed = info.get("observed_value") or 0
    found = _rows(int(observed)) if observed else "no rows"
    return f"{found}; at least {context.settings.min_rows} needed"


def _describe_text_valid(info: Mapping[str, Any], context: Context) -> str:
    settings = context.settings
    text = count_offending(info, "have no valid text", settings.text_mostly)
    if context.profile is not None and context.profile.text_problems:
        bounds = {
            "too short": f"under {settings.min_text_chars} characters",
            "too long": f"over {settings.max_text_chars} characters",
        }
        reasons = ", ".join(
            f"{count} {reason}" + (f" ({bounds[reason]})" if reason in bounds else "")
            for reason, count in context.profile.text_problems.items()
        )
        text += f" [{reasons}]"
        bad = int(info.get("unexpected_count") or 0)
        total = int(info.get("element_count") or 0)
        if bad and total and bad / total <= 1 - settings.text_mostly:
            text += "; within the allowance they are dropped"
    return text


def _text_valid_remedy(context: Context) -> str:
    """Which settings let the invalid texts through: the bound they broke, or the allowance."""
    s = context.settings
    problems = context.profile.text_problems if context.profile is not None else {}
    changes = []
    if "too long" in problems:
        changes.append(f"max_text_chars (now {s.max_text_chars}) higher")
    if "too short" in problems:
        changes.append(f"min_text_chars (now {s.min_text_chars}) lower")
    changes.append(f"text_mostly (now {s.text_mostly}) lower to drop more invalid rows")
    return "set " + ", or ".join(changes) + ", or clean the data"


def _describe_allowed(info: Mapping[str, Any], context: Context) -> str:
    allowed = context.settings.canonical_allowed_labels
    text = count_offending(info, f"carry a label outside {list(allowed)}")
    if context.profile is not None:
        unseen = {k: v for k, v in context.profile.label_counts.items() if k not in allowed}
        if unseen:
            text += f": unseen {_named_counts(unseen)}"
    return text


def _describe_label_count(info: Mapping[str, Any], context: Context) -> str:
    observed = info.get("observed_value")
    counts = context.profile.label_counts if context.profile is not None else {}
    if not observed:
        return "no labels at all; a classifier needs at least 2 classes"
    if observed == 1:
        return f"1 distinct label: {_named_counts(counts)}; a classifier needs at least 2 classes"
    return f"{observed} distinct labels: {_named_counts(counts)}"


def _describe_class_share(info: Mapping[str, Any], context: Context) -> str:
    needed = f"at least {percent(context.settings.min_class_share)} needed"
    if context.profile is None or context.profile.rarest is None:
        return f"no labelled rows; {needed}"
    label, share = context.profile.rarest
    count = context.profile.label_counts[label]
    return f"rarest class {label!r} has {_rows(count)} ({share:.2%} of labelled rows); {needed}"


def _rarest_rows(context: Context) -> Sequence[int]:
    if context.profile is None or context.profile.rarest is None:
        return ()
    labels = context.profile.checked[context.columns.label].to_numpy()
    return np.flatnonzero(labels == context.profile.rarest[0])[:MAX_EXAMPLES].tolist()


def _describe_lookalikes(info: Mapping[str, Any], context: Context) -> str:
    text = count_offending(info, "carry a label that reads as the same number as another")
    if context.profile is not None and context.profile.lookalikes:
        groups = "; ".join(" and ".join(map(repr, g)) for g in context.profile.lookalikes)
        text += f": {groups} are different classes. Write each class one way"
    return text


def _production_difference(context: Context) -> tuple[list[str], list[str]]:
    """(new, missing): labels the data has that the served model lacks, and the reverse."""
    served = context.production_labels.names if context.production_labels is not None else ()
    seen = context.profile.label_counts if context.profile is not None else {}
    return [label for label in seen if label not in served], [
        label for label in served if label not in seen
    ]


def _describe_production(info: Mapping[str, Any], context: Context) -> str:
    served = list(context.production_labels.names) if context.production_labels else []
    new, missing = _production_difference(context)
    if not new and not missing:
        return f"the labels equal the served model's {served}"
    seen = context.profile.label_counts if context.profile is not None else {}
    parts = []
    if new:
        parts.append(f"new labels {_named_counts({k: seen[k] for k in new})}")
    if missing:
        parts.append(f"missing labels {missing}")
    return f"{'; '.join(parts)}: the served model predicts {served}"


def _new_label_rows(context: Context) -> Sequence[int]:
    new, _ = _production_difference(context)
    if context.profile is None or not new:
        return ()
    labels = context.profile.checked[context.columns.label]
    return np.flatnonzero(labels.isin(new).to_numpy())[:MAX_EXAMPLES].tolist()


def build_checks(
    settings: ValidationSettings, production_labels: LabelMap | None = None
) -> tuple[Check, ...]:
    """The suite for these settings, in the order the report lists the checks.

    Args:
        settings: The thresholds; `allowed_labels` adds the allowed-labels check.
        production_labels: The served model's labels; adds the check that the data's label
            set equals them.
    """
    s = settings
    checks: list[Check] = [
        _column_present("text"),
        _column_present("label"),
        Check(
            name="min_rows",
            column=None,
            severity="critical",
            build=lambda c: _gxe().ExpectTableRowCountToBeBetween(min_value=s.min_rows),
            describe=_describe_rows,
            needs_profile=False,
            remedy=change_setting("min_rows", "lower", "give more labelled rows"),
        ),
        Check(
            name="text_valid",
            column="text",
            severity="critical",
            build=lambda c: _gxe().ExpectColumnValuesToBeInSet(
                column=TEXT_STATUS, value_set=[0], mostly=s.text_mostly
            ),
            describe=_describe_text_valid,
            remedy=_text_valid_remedy,
        ),
        Check(
            name="text_not_too_long",
            column="text",
            severity="warning",
            build=lambda c: _gxe().ExpectColumnValueLengthsToBeBetween(
                column=c.text, max_value=s.max_text_chars
            ),
            problem=f"longer than {s.max_text_chars} characters",
            remedy=change_setting(
                "max_text_chars", "higher", "leave them out: they count as no valid text"
            ),
        ),
        Check(
            name="text_on_one_line",
            column="text",
            severity="warning",
            build=lambda c: _gxe().ExpectColumnValuesToNotMatchRegex(
                column=c.text, regex=LINE_BREAK_REGEX
            ),
            problem="contain a line break (preprocessing turns it into a space)",
            remedy=no_setting("a warning only; join the lines in the data to silence it"),
        ),
        Check(
            name="label_not_null",
            column="label",
            severity="critical",
            build=lambda c: _gxe().ExpectColumnValuesToNotBeNull(column=c.label),
            problem="null or blank",
            remedy=no_setting("label those rows or leave them out of the data"),
        ),
    ]
    if s.allowed_labels:
        checks.append(
            Check(
                name="labels_allowed",
                column="label",
                severity="critical",
                build=lambda c: _gxe().ExpectColumnValuesToBeInSet(
                    column=c.label, value_set=list(s.canonical_allowed_labels)
                ),
                describe=_describe_allowed,
                remedy=lambda context: (
                    f"set allowed_labels (now {list(s.canonical_allowed_labels)}) to include "
                    "them, or relabel or leave out those rows"
                ),
            )
        )
    checks += [
        Check(
            name="at_least_two_labels",
            column="label",
            severity="critical",
            build=lambda c: _gxe().ExpectColumnUniqueValueCountToBeBetween(
                column=c.label, min_value=2
            ),
            describe=_describe_label_count,
            remedy=no_setting("give data with rows of at least 2 classes"),
        ),
        Check(
            name="min_class_share",
            column="label",
            severity="critical",
            build=lambda c: _gxe().ExpectColumnMinToBeBetween(
                column=CLASS_SHARE, min_value=s.min_class_share
            ),
            describe=_describe_class_share,
            examples=_rarest_rows,
            remedy=change_setting(
                "min_class_share", "lower", "add rows of that class or leave the class out"
            ),
        ),
        Check(
            name="few_duplicate_texts",
            column="text",
            severity="critical",
            build=lambda c: _gxe().ExpectColumnValuesToBeInSet(
                column=REPEATS_EARLIER, value_set=[False], mostly=1 - s.max_duplicate_share
            ),
            problem="repeat an earlier row's text",
            remedy=change_setting("max_duplicate_share", "higher", "remove the repeated rows"),
        ),
        Check(
            name="one_label_per_text",
            column="text",
            severity="critical",
            build=lambda c: _gxe().ExpectColumnValuesToBeInSet(
                column=CONFLICTING_LABEL,
                value_set=[False],
                mostly=1 - s.max_conflicting_label_share,
            ),
            problem="have a text that also appears with a different label",
            remedy=change_setting(
                "max_conflicting_label_share", "higher", "give each text one label"
            ),
        ),
        Check(
            name="no_numeric_lookalike_labels",
            column="label",
            severity="warning",
            build=lambda c: _gxe().ExpectColumnValuesToBeInSet(
                column=NUMERIC_LOOKALIKE, value_set=[False]
            ),
            describe=_describe_lookalikes,
            remedy=no_setting("a warning only; write each class one way in the data"),
        ),
    ]
    if production_labels is not None:
        checks.append(
            Check(
                name="labels_match_production",
                column="label",
                severity="critical",
                build=lambda c: _gxe().ExpectColumnDistinctValuesToEqualSet(
                    column=c.label, value_set=list(production_labels.names)
                ),
                describe=_describe_production,
                examples=_new_label_rows,
                remedy=lambda context: (
                    "set enforce_production_labels off (--no-enforce-production-labels) to "
                    "change the label set on purpose, or relabel the data"
                ),
            )
        )
    return tuple(checks)
