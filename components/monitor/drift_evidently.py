"""The Evidently side of the drift job: one report with a `ValueDrift` test per data signal
(and the labelled rows' accuracy), read back into `TestOutcome`s.

Evidently is imported inside `run_report`: it takes seconds to import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from textops.components.common.errors import ConfigError
from textops.components.monitor.drift_settings import (
    DATA_TESTS,
    P_VALUE_METHODS,
    PERCENTILE_METHODS,
    DriftSettings,
)

if TYPE_CHECKING:
    import pandas as pd

#: The column each data test looks at (descriptors are computed from `text`).
TEST_COLUMNS = {
    "text_content": "text",
    "text_length": "text_length",
    "word_count": "word_count",
    "non_letter_share": "non_letter_share",
    "prediction": "prediction",
    "confidence": "confidence",
}
#: 1.0 where a labelled row's prediction is right, 0.0 where wrong, missing where unlabelled.
CORRECT_COLUMN = "correct"


@dataclass(frozen=True)
class TestOutcome:
    """One test's result: its value against its threshold, and whether it found drift."""

    name: str
    kind: Literal["data", "quality"]
    method: str
    value: float | None
    threshold: float | None
    rule: str
    gate: bool
    status: Literal["drift", "ok", "skipped"]
    detail: str = ""

    @property
    def drifted(self) -> bool:
        return self.status == "drift"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "method": self.method,
            "value": _json_number(self.value),
            "threshold": _json_number(self.threshold),
            "rule": self.rule,
            "gate": self.gate,
            "status": self.status,
            "drifted": self.drifted,
            "detail": self.detail,
        }


def _json_number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _rule(method: str, threshold: float) -> str:
    if method in P_VALUE_METHODS:
        return f"drift when the p-value is below {threshold:g}"
    if method in PERCENTILE_METHODS:
        return (
            "drift when the domain classifier's ROC AUC is above the "
            f"{100 * threshold:g}th percentile of random classifiers' AUC"
        )
    return f"drift when the distance reaches {threshold:g}"


def _detail(method: str, value: float, threshold: float, drifted: bool) -> str:
    if method in P_VALUE_METHODS:
        return f"{method} p-value {value:.3g} {'<' if drifted else '>='} {threshold:g}"
    if method in PERCENTILE_METHODS:
        where = "above" if drifted else "within"
        return (
            f"domain classifier ROC AUC {value:.3f}, {where} the {100 * threshold:g}th "
            "percentile of chance"
        )
    return f"{method} distance {value:.3g} {'>=' if drifted else '<'} {threshold:g}"


def run_report(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    settings: DriftSettings,
    accuracy_floor: float | None,
    name: str,
) -> tuple[Any, list[TestOutcome], float | None]:
    """Run the Evidently report; return its snapshot, the data tests' outcomes, the accuracy.

    Raises:
        ConfigError: A test names a method Evidently does not know for its column.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.descriptors import NonLetterCharacterPercentage, TextLength, WordCount
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType
    from evidently.metrics import MeanValue, ValueDrift
    from evidently.tests import gte

    from textops.components.monitor import stattests

    stattests.register()
    numerical = ["confidence"] + ([CORRECT_COLUMN] if accuracy_floor is not None else [])
    definition = DataDefinition(
        text_columns=["text"], categorical_columns=["prediction"], numerical_columns=numerical
    )
    descriptors = [
        TextLength("text", alias="text_length"),
        WordCount("text", alias="word_count"),
        NonLetterCharacterPercentage("text", alias="non_letter_share"),
    ]
    columns = ["text", "prediction", *numerical]
    column_kinds = {"text": ColumnType.Text, "prediction": ColumnType.Categorical}
    reference = Dataset.from_pandas(
        ref[columns], data_definition=definition, descriptors=descriptors
    )
    current = Dataset.from_pandas(cur[columns], data_definition=definition, descriptors=descriptors)

    drift_metrics: dict[str, Any] = {}
    thresholds: dict[str, float] = {}
    for test_name in DATA_TESTS:
        test = settings.tests[test_name]
        if not test.enabled:
            continue
        column = TEST_COLUMNS[test_name]
        if column == "confidence" and cur["confidence"].isna().all():
            continue
        kind = column_kinds.get(column, ColumnType.Numerical)
        try:
            stattest = get_registered_stattest(test.method, kind)
        except ValueError as e:
            raise ConfigError(
                f"drift test {test_name}: {test.method!r} is not an Evidently drift method for "
                f"a {kind.value} column ({e}); e.g. ks, wasserstein for numbers, chisquare, "
                "jensenshannon for labels, perc_text_content_drift for text"
            ) from e
        # No threshold of ours (a distance method): the method's own default, stated.
        threshold = settings.threshold_of(test_name)
        thresholds[test_name] = threshold if threshold is not None else stattest.default_threshold
        drift_metrics[test_name] = ValueDrift(
            column=column, method=test.method, threshold=thresholds[test_name]
        )
    metrics: list[Any] = list(drift_metrics.values())
    accuracy_metric = None
    if accuracy_floor is not None:
        accuracy_metric = MeanValue(column=CORRECT_COLUMN, tests=[gte(accuracy_floor)])
        metrics.append(accuracy_metric)

    report = Report(metrics, include_tests=True, tags=["textops", "drift"])
    snapshot = report.run(current, reference, name=name, timestamp=datetime.now(UTC))

    outcomes = []
    for test_name, metric in drift_metrics.items():
        test = settings.tests[test_name]
        result = snapshot.metric_results[metric.get_metric_id()]
        value = float(result.value)
        threshold = thresholds[test_name]
        drifted = any(t.status.value == "FAIL" for t in result.tests)
        rule = _rule(test.method, threshold)
        detail = _detail(test.method, value, threshold, drifted)
        outcomes.append(
            TestOutcome(
                name=test_name,
                kind="data",
                method=test.method,
                value=value,
                threshold=threshold,
                rule=rule,
                gate=test.gate,
                status="drift" if drifted else "ok",
                detail=detail,
            )
        )
    accuracy = None
    if accuracy_metric is not None:
        accuracy = float(snapshot.metric_results[accuracy_metric.get_metric_id()].value)
    return snapshot, outcomes, accuracy
