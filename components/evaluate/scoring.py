"""Scores of one model on labelled texts: pure functions of true ids and class probabilities.

Nothing here loads a model: the evaluation step turns a model's outputs into probabilities
first, so the challenger (PyTorch) and the champion (ONNX Runtime) are scored by the very same
code, and every function can be checked against hand-computed values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from textops.components.common.metrics import confusion

#: Equal-width confidence bins of the expected calibration error (as in Guo et al., 2017).
ECE_BINS = 15
#: Most points of a logged ROC curve; the KFP UI draws every point it is given.
MAX_ROC_POINTS = 200
#: Slices with fewer rows are reported but never named the worst: their scores are noise.
MIN_SLICE_ROWS = 5
#: Confident mistakes listed in the report.
TOP_MISTAKES = 10


@dataclass(frozen=True)
class ClassScores:
    """Precision, recall and F1 of one class, and its number of true rows."""

    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class CalibrationBin:
    """One confidence bin: its bounds, rows, mean confidence and accuracy (0 when empty)."""

    lower: float
    upper: float
    rows: int
    confidence: float
    accuracy: float


@dataclass(frozen=True)
class ModelScores:
    """Everything computed from one model's probabilities on one labelled set."""

    labels: tuple[str, ...]
    rows: int
    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    weighted_precision: float
    weighted_recall: float
    weighted_f1: float
    ece: float
    per_class: tuple[ClassScores, ...]
    confusion_matrix: list[list[int]]
    calibration: tuple[CalibrationBin, ...]

    def scalars(self) -> dict[str, float]:
        """The headline numbers, as logged to the KFP Metrics artifact."""
        return {
            "accuracy": self.accuracy,
            "macro_precision": self.macro_precision,
            "macro_recall": self.macro_recall,
            "macro_f1": self.macro_f1,
            "weighted_precision": self.weighted_precision,
            "weighted_recall": self.weighted_recall,
            "weighted_f1": self.weighted_f1,
            "ece": self.ece,
            "test_rows": float(self.rows),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, for the decision file."""
        return asdict(self)


@dataclass(frozen=True)
class RocCurve:
    """The ROC curve of a binary task, for `ClassificationMetrics.log_roc_curve`."""

    positive_label: str
    fpr: list[float]
    tpr: list[float]
    thresholds: list[float]
    auc: float


@dataclass(frozen=True)
class SliceScores:
    """Scores of the rows that share one value of the slice column."""

    value: str
    rows: int
    accuracy: float
    macro_f1: float


@dataclass(frozen=True)
class SliceReport:
    """Per-slice scores, largest slice first, and the worst slice large enough to count."""

    column: str
    slices: tuple[SliceScores, ...]
    worst: SliceScores | None


@dataclass(frozen=True)
class Mistake:
    """A wrong prediction and how sure the model was of it."""

    text: str
    true_label: str
    predicted_label: str
    confidence: float


def _check_inputs(y_true: np.ndarray, probabilities: np.ndarray, labels: Sequence[str]) -> None:
    if probabilities.ndim != 2 or probabilities.shape[1] != len(labels):
        raise ValueError(
            f"probabilities of shape {probabilities.shape} do not match {len(labels)} labels"
        )
    if len(y_true) != len(probabilities):
        raise ValueError(f"{len(y_true)} true ids but {len(probabilities)} rows of probabilities")
    if len(y_true) == 0:
        raise ValueError("nothing to score: no rows")


def score_model(
    y_true: Sequence[int] | np.ndarray, probabilities: np.ndarray, labels: Sequence[str]
) -> ModelScores:
    """Accuracy, macro and weighted precision/recall/F1, per-class scores, confusion, ECE.

    Args:
        y_true: True class ids, indices into `labels`.
        probabilities: Array (rows, classes) of class probabilities; columns follow `labels`.
        labels: Class names in model-output order.

    Raises:
        ValueError: The shapes do not agree, or there are no rows.
    """
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    y = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    _check_inputs(y, probabilities, labels)
    y_pred = probabilities.argmax(axis=1)
    # Every label counts, also one absent from this set: a class the model never gets right
    # must pull macro scores down, not vanish from them.
    ids = list(range(len(labels)))
    averaged = {
        average: precision_recall_fscore_support(
            y, y_pred, labels=ids, average=average, zero_division=0
        )
        for average in ("macro", "weighted")
    }
    precision, recall, f1, support = precision_recall_fscore_support(
        y, y_pred, labels=ids, average=None, zero_division=0
    )
    calibration = calibration_bins(y, probabilities)
    return ModelScores(
        labels=tuple(labels),
        rows=len(y),
        accuracy=float(accuracy_score(y, y_pred)),
        macro_precision=float(averaged["macro"][0]),
        macro_recall=float(averaged["macro"][1]),
        macro_f1=float(averaged["macro"][2]),
        weighted_precision=float(averaged["weighted"][0]),
        weighted_recall=float(averaged["weighted"][1]),
        weighted_f1=float(averaged["weighted"][2]),
        ece=ece_from_bins(calibration),
        per_class=tuple(
            ClassScores(name, float(p), float(r), float(f), int(s))
            for name, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        ),
        confusion_matrix=confusion(y, y_pred, len(labels)),
        calibration=calibration,
    )


def calibration_bins(
    y_true: Sequence[int] | np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS
) -> tuple[CalibrationBin, ...]:
    """Rows binned by confidence (the top probability) into `bins` equal-width bins.

    Bins are closed on the right, (lower, upper], as in Guo et al.; a confidence of exactly 0
    (impossible for a softmax) falls in the first bin.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(y_true)
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    result = []
    for b in range(bins):
        members = index == b
        rows = int(members.sum())
        result.append(
            CalibrationBin(
                lower=b / bins,
                upper=(b + 1) / bins,
                rows=rows,
                confidence=float(confidence[members].mean()) if rows else 0.0,
                accuracy=float(correct[members].mean()) if rows else 0.0,
            )
        )
    return tuple(result)


def ece_from_bins(bins: Sequence[CalibrationBin]) -> float:
    """Expected calibration error: the row-weighted mean |accuracy - confidence| over bins."""
    total = sum(b.rows for b in bins)
    if total == 0:
        return 0.0
    return float(sum(b.rows * abs(b.accuracy - b.confidence) for b in bins) / total)


def expected_calibration_error(
    y_true: Sequence[int] | np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE over `bins` equal-width bins of the top probability; 0 is perfectly calibrated."""
    return ece_from_bins(calibration_bins(y_true, probabilities, bins))


def roc_curve_points(
    y_true: Sequence[int] | np.ndarray,
    probabilities: np.ndarray,
    labels: Sequence[str],
    max_points: int = MAX_ROC_POINTS,
) -> RocCurve | None:
    """The ROC curve of the second label (the positive class) in a binary task.

    Returns None for more than two classes, or when the rows hold only one class (the curve is
    undefined then). Thresholds are clipped to 1.0: sklearn's first threshold is infinite, and
    KFP stores the points as JSON, which has no infinity.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.asarray(y_true, dtype=np.int64)
    if len(labels) != 2 or len(np.unique(y)) < 2:
        return None
    scores = np.asarray(probabilities, dtype=np.float64)[:, 1]
    fpr, tpr, thresholds = roc_curve(y == 1, scores)
    keep = _downsample(len(fpr), max_points)
    return RocCurve(
        positive_label=labels[1],
        fpr=[float(v) for v in fpr[keep]],
        tpr=[float(v) for v in tpr[keep]],
        thresholds=[float(v) for v in np.minimum(thresholds[keep], 1.0)],
        auc=float(roc_auc_score(y == 1, scores)),
    )


def _downsample(count: int, max_points: int) -> np.ndarray:
    """Indices of at most `max_points` evenly spread points, always the first and the last."""
    if count <= max_points:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, max_points).round().astype(np.int64))


def slice_scores(
    y_true: Sequence[int] | np.ndarray,
    probabilities: np.ndarray,
    slice_values: Sequence[Any],
    column: str,
    min_rows: int = MIN_SLICE_ROWS,
) -> SliceReport:
    """Accuracy and macro-F1 per value of the slice column, and the worst slice.

    A slice's macro-F1 averages over the classes present in it (true or predicted), so a slice
    that simply holds no rows of some class is not marked down for it. Missing values form a
    slice of their own, "(missing)".

    Args:
        y_true: True class ids.
        probabilities: Array (rows, classes) of class probabilities.
        slice_values: The slice column, one value per row.
        column: The slice column's name, for the report.
        min_rows: Slices with fewer rows are reported but not eligible as the worst.
    """
    import pandas as pd
    from sklearn.metrics import f1_score

    y = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(probabilities).argmax(axis=1)
    values = pd.Series(list(slice_values), dtype=object)
    keys = values.map(lambda v: "(missing)" if pd.isna(v) else str(v)).to_numpy()
    slices = []
    for value in sorted(set(keys), key=lambda k: (-int((keys == k).sum()), k)):
        members = keys == value
        slices.append(
            SliceScores(
                value=value,
                rows=int(members.sum()),
                accuracy=float((y_pred[members] == y[members]).mean()),
                macro_f1=float(
                    f1_score(y[members], y_pred[members], average="macro", zero_division=0)
                ),
            )
        )
    eligible = [s for s in slices if s.rows >= min_rows]
    worst = min(eligible, key=lambda s: (s.macro_f1, s.accuracy)) if eligible else None
    return SliceReport(column=column, slices=tuple(slices), worst=worst)


def confident_mistakes(
    texts: Sequence[str],
    y_true: Sequence[int] | np.ndarray,
    probabilities: np.ndarray,
    labels: Sequence[str],
    top: int = TOP_MISTAKES,
) -> list[Mistake]:
    """The wrong predictions the model was surest of, most confident first.

    These point at label noise in the data, or at what the model has learned wrong.
    """
    y = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    y_pred = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    wrong = np.flatnonzero(y_pred != y)
    # Stable sort, so ties keep the data's order and the report is reproducible.
    ranked = wrong[np.argsort(-confidence[wrong], kind="stable")][:top]
    return [
        Mistake(
            text=str(texts[i]),
            true_label=labels[y[i]],
            predicted_label=labels[y_pred[i]],
            confidence=float(confidence[i]),
        )
        for i in ranked
    ]
