"""Drift of a window of traffic against the bundle's reference sample, measured with Evidently.

`detect_drift(reference, window, settings)` runs one Evidently report with an explicit test per
signal:

- text content: Evidently's domain classifier (TF-IDF and a linear model) learns to tell window
  texts from reference texts; its ROC AUC is compared with chance;
- text descriptors that need no downloads: length, word count, share of non-letter characters;
- prediction distribution: the shares of predicted labels (and, reported only, confidence);
- where ground truth has arrived: accuracy and macro-F1 of the labelled rows against the
  bundle's own test metrics.

The report itself is built in `drift_evidently.py`, the only module that imports Evidently
(inside a function: it takes seconds to import).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from textops.components.common.errors import DriftInputError
from textops.components.common.labels import canonical_label
from textops.components.monitor.drift_evidently import CORRECT_COLUMN, TestOutcome, run_report
from textops.components.monitor.drift_settings import DriftSettings

__all__ = ["DriftResult", "QualityBaseline", "TestOutcome", "detect_drift", "quality_baseline"]

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

QUALITY_TESTS = ("accuracy", "macro_f1")

Status = Literal["drift", "no_drift", "not_enough_data"]


@dataclass(frozen=True)
class QualityBaseline:
    """What the window's accuracy and macro-F1 are compared with, and where it comes from."""

    accuracy: float
    macro_f1: float
    source: str


@dataclass(frozen=True)
class DriftResult:
    """The verdict on one window, every test's outcome, and Evidently's run (its snapshot)."""

    status: Status
    reasons: tuple[str, ...]
    tests: tuple[TestOutcome, ...]
    window_rows: int
    labelled_rows: int
    reference_rows: int
    min_window_rows: int
    measured_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    snapshot: Any = None

    @property
    def drifted(self) -> bool:
        return self.status == "drift"

    def summary(self) -> dict[str, Any]:
        """The JSON summary: drifted or not, why, and every test with its value and threshold."""
        return {
            "status": self.status,
            "drifted": self.drifted,
            "not_enough_data": self.status == "not_enough_data",
            "reasons": list(self.reasons),
            "window_rows": self.window_rows,
            "labelled_rows": self.labelled_rows,
            "reference_rows": self.reference_rows,
            "min_window_rows": self.min_window_rows,
            "measured_at": self.measured_at.isoformat(),
            "tests": [t.to_dict() for t in self.tests],
        }


def prepare_frame(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    """The columns drift needs, normalised: text (str), prediction (str or missing),
    confidence (float or NaN), label (canonical str or missing).

    Raises:
        DriftInputError: `text` or `prediction` is missing.
    """
    import pandas as pd

    missing = [c for c in ("text", "prediction") if c not in frame.columns]
    if missing:
        raise DriftInputError(
            f"the {what} lacks the column(s) {', '.join(missing)} (it has: "
            f"{', '.join(map(str, frame.columns))}); drift needs the texts and the model's "
            "predictions"
        )
    out = pd.DataFrame(index=pd.RangeIndex(len(frame)))
    out["text"] = frame["text"].fillna("").astype(str).to_numpy()
    out["prediction"] = _optional_labels(frame["prediction"])
    confidence = frame["confidence"] if "confidence" in frame.columns else None
    out["confidence"] = (
        pd.to_numeric(confidence, errors="coerce").astype("float64").to_numpy()
        if confidence is not None
        else float("nan")
    )
    out["label"] = _optional_labels(frame["label"]) if "label" in frame.columns else None
    return out


def _optional_labels(values: pd.Series) -> list[str | None]:
    return [None if v is None or v != v else canonical_label(v) for v in values.tolist()]


def quality_baseline(metadata: dict[str, Any], reference: pd.DataFrame) -> QualityBaseline | None:
    """The accuracy and macro-F1 the window is held to.

    The bundle's test metrics (metadata.json `metrics`) come first: they were measured on rows
    the model never trained on, as the window is. The reference sample is drawn from the
    training split, so its own accuracy overstates what any unseen traffic can reach; it is
    used only when the metadata has no metrics.
    """
    metrics = metadata.get("metrics") or {}
    if isinstance(metrics.get("accuracy"), int | float) and isinstance(
        metrics.get("macro_f1"), int | float
    ):
        return QualityBaseline(
            float(metrics["accuracy"]), float(metrics["macro_f1"]), "bundle test metrics"
        )
    frame = prepare_frame(reference, "reference sample")
    labelled = frame.dropna(subset=["label", "prediction"])
    if labelled.empty:
        return None
    accuracy, f1 = classification_scores(
        labelled["label"].tolist(), labelled["prediction"].tolist()
    )
    return QualityBaseline(accuracy, f1, "reference sample (training rows)")


def classification_scores(truth: list[str], predicted: list[str]) -> tuple[float, float]:
    """Accuracy and macro-F1 (over the classes seen in either list)."""
    from sklearn.metrics import accuracy_score, f1_score

    return (
        float(accuracy_score(truth, predicted)),
        float(f1_score(truth, predicted, average="macro", zero_division=0)),
    )


def detect_drift(
    reference: pd.DataFrame,
    window: pd.DataFrame,
    settings: DriftSettings,
    *,
    baseline: QualityBaseline | None = None,
    name: str = "textops drift",
) -> DriftResult:
    """Compare a window of traffic with the reference sample.

    Args:
        reference: The bundle's reference.parquet (text, prediction, confidence, label, ...).
        window: Logged traffic (text, prediction, confidence, label; other columns ignored).
        settings: Which tests run, their methods and thresholds, the minimum window size.
        baseline: The accuracy and macro-F1 labelled rows are held to (`quality_baseline`);
            None skips the quality tests.
        name: The name of the Evidently run.

    Returns:
        The verdict: `not_enough_data` below `settings.min_window_rows` (no test runs), else
        `drift` when the gating tests say so, else `no_drift`.

    Raises:
        DriftInputError: A frame lacks the text or prediction column, or the reference is empty.
        ConfigError: A test names a method Evidently does not know.
    """
    ref = prepare_frame(reference, "reference sample")
    cur = prepare_frame(window, "traffic window")
    if ref.empty:
        raise DriftInputError("the reference sample is empty: re-export the bundle")
    labelled = cur.dropna(subset=["label", "prediction"])
    sizes = (len(cur), len(labelled), len(ref), settings.min_window_rows)
    if len(cur) < settings.min_window_rows:
        reason = (
            f"not enough data: {len(cur)} rows in the window, at least "
            f"{settings.min_window_rows} needed"
        )
        logger.info("drift window too small rows=%d min=%d", len(cur), settings.min_window_rows)
        return DriftResult("not_enough_data", (reason,), (), *sizes)

    quality = _quality_plan(labelled, settings, baseline)
    if quality is not None:
        cur[CORRECT_COLUMN] = (cur["label"] == cur["prediction"]).astype("float64")
        cur.loc[cur["label"].isna() | cur["prediction"].isna(), CORRECT_COLUMN] = float("nan")
        ref[CORRECT_COLUMN] = (ref["label"] == ref["prediction"]).astype("float64")
        ref.loc[ref["label"].isna() | ref["prediction"].isna(), CORRECT_COLUMN] = float("nan")
    snapshot, data_outcomes, accuracy_value = run_report(ref, cur, settings, quality, name)
    outcomes = list(data_outcomes)
    outcomes.extend(_quality_outcomes(labelled, settings, baseline, quality, accuracy_value))

    gating = [t for t in outcomes if t.kind == "data" and t.gate and t.status != "skipped"]
    drifted_data = [t for t in gating if t.drifted]
    data_drift = bool(drifted_data) and len(drifted_data) / len(gating) >= settings.drift_share
    quality_drift = [t for t in outcomes if t.kind == "quality" and t.gate and t.drifted]
    reasons = [f"{t.name}: {t.detail}" for t in (drifted_data if data_drift else [])]
    reasons += [f"{t.name}: {t.detail}" for t in quality_drift]
    if drifted_data and not data_drift:
        reasons.append(
            f"{len(drifted_data)} of {len(gating)} data tests found drift, below the drift "
            f"share {settings.drift_share}"
        )
    status: Status = "drift" if data_drift or quality_drift else "no_drift"
    logger.info(
        "drift status=%s window_rows=%d labelled_rows=%d drifted_tests=%s",
        status,
        len(cur),
        len(labelled),
        ",".join(t.name for t in outcomes if t.drifted) or "none",
    )
    return DriftResult(status, tuple(reasons), tuple(outcomes), *sizes, snapshot=snapshot)


def _quality_plan(
    labelled: pd.DataFrame, settings: DriftSettings, baseline: QualityBaseline | None
) -> float | None:
    """The accuracy floor for Evidently's test when the quality tests can run, else None."""
    if baseline is None or len(labelled) < settings.min_labelled_rows:
        return None
    return max(0.0, baseline.accuracy - settings.max_accuracy_drop)


def _quality_outcomes(
    labelled: pd.DataFrame,
    settings: DriftSettings,
    baseline: QualityBaseline | None,
    accuracy_floor: float | None,
    accuracy: float | None,
) -> list[TestOutcome]:
    """Accuracy and macro-F1 of the labelled rows against the baseline (or why they are skipped)."""
    if baseline is None or accuracy_floor is None or accuracy is None:
        why = (
            "no baseline: the bundle has no test metrics and the reference no labels"
            if baseline is None
            else f"{len(labelled)} labelled rows, at least {settings.min_labelled_rows} needed"
        )
        return [
            TestOutcome(name, "quality", name, None, None, "", True, "skipped", why)
            for name in QUALITY_TESTS
        ]
    _, f1 = classification_scores(labelled["label"].tolist(), labelled["prediction"].tolist())
    f1_floor = max(0.0, baseline.macro_f1 - settings.max_macro_f1_drop)
    outcomes = []
    for name, value, floor, base, drop in (
        ("accuracy", accuracy, accuracy_floor, baseline.accuracy, settings.max_accuracy_drop),
        ("macro_f1", f1, f1_floor, baseline.macro_f1, settings.max_macro_f1_drop),
    ):
        rule = (
            f"drift when below {floor:.4g} ({baseline.source} {base:.4g} - allowed drop {drop:g})"
        )
        outcomes.append(
            TestOutcome(
                name=name,
                kind="quality",
                method=name,
                value=value,
                threshold=floor,
                rule=rule,
                gate=True,
                status="drift" if value < floor else "ok",
                detail=f"{value:.4g} on {len(labelled)} labelled rows; {rule}",
            )
        )
    return outcomes
