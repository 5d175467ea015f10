"""How much a reduced-precision graph may lose against fp32, and how that is measured.

Export judges INT8 and fp16 with this rule before they ship (on the validation split), and the
predictor judges fp16 with it again on the GPU it serves on (on the bundle's reference sample),
so both say "passed" for the same reason. It needs only numpy: the serving image has neither
torch nor scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Most accuracy or macro-F1 (in points, 1.0 = one percentage point) INT8 may lose vs fp32.
INT8_MAX_LOSS_POINTS = 1.0
#: The same allowance for fp16 on a GPU, which rounds activations as INT8 rounds weights.
FP16_MAX_LOSS_POINTS = 1.0
#: Largest logit difference allowed between two fp32 engines running the same graph: export
#: holds each to within 1e-3 of PyTorch, so two that pass are within 2e-3 of each other.
FP32_ENGINES_MAX_ABS_DIFF = 2e-3


@dataclass(frozen=True)
class Agreement:
    """How closely one set of logits follows another, row for row."""

    rows: int
    max_abs_diff: float
    argmax_agreement: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "max_abs_diff": self.max_abs_diff,
            "argmax_agreement": self.argmax_agreement,
        }


@dataclass(frozen=True)
class QualityReport:
    """A reduced-precision graph's accuracy and macro-F1 against fp32's, on true labels."""

    rows: int
    fp32: dict[str, float]
    candidate: dict[str, float]
    max_loss_points: float
    agreement_with_fp32: Agreement

    @property
    def accuracy_loss_points(self) -> float:
        return 100.0 * (self.fp32["accuracy"] - self.candidate["accuracy"])

    @property
    def macro_f1_loss_points(self) -> float:
        return 100.0 * (self.fp32["macro_f1"] - self.candidate["macro_f1"])

    @property
    def passed(self) -> bool:
        """True when neither accuracy nor macro-F1 drops by more than `max_loss_points`."""
        return max(self.accuracy_loss_points, self.macro_f1_loss_points) <= self.max_loss_points

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "fp32_accuracy": self.fp32["accuracy"],
            "fp32_macro_f1": self.fp32["macro_f1"],
            "accuracy": self.candidate["accuracy"],
            "macro_f1": self.candidate["macro_f1"],
            "accuracy_loss_points": self.accuracy_loss_points,
            "macro_f1_loss_points": self.macro_f1_loss_points,
            "max_loss_points": self.max_loss_points,
            "agreement_with_fp32": self.agreement_with_fp32.to_dict(),
            "passed": self.passed,
        }

    def describe(self) -> str:
        """One line for logs and metadata reasons."""
        return (
            f"accuracy {self.candidate['accuracy']:.4f} vs fp32 {self.fp32['accuracy']:.4f} "
            f"(loss {self.accuracy_loss_points:.2f} points), macro-F1 "
            f"{self.candidate['macro_f1']:.4f} vs fp32 {self.fp32['macro_f1']:.4f} (loss "
            f"{self.macro_f1_loss_points:.2f} points); at most {self.max_loss_points:g} allowed"
        )


def agreement(candidate: np.ndarray, reference: np.ndarray) -> Agreement:
    """Largest logit difference and share of equal argmaxes of two (rows, classes) arrays."""
    rows = len(reference)
    if rows == 0:
        return Agreement(rows=0, max_abs_diff=0.0, argmax_agreement=1.0)
    return Agreement(
        rows=rows,
        max_abs_diff=float(np.abs(candidate - reference).max()),
        argmax_agreement=float((candidate.argmax(-1) == reference.argmax(-1)).mean()),
    )


def accuracy_and_macro_f1(
    label_ids: np.ndarray, predicted: np.ndarray, num_labels: int
) -> dict[str, float]:
    """Accuracy and macro-F1 of integer class predictions, as scikit-learn computes them.

    Classes absent from both truth and predictions count in macro-F1 as 0, like
    `f1_score(..., labels=range(num_labels), average="macro", zero_division=0)`.
    """
    truth = np.asarray(label_ids, dtype=np.int64)
    guess = np.asarray(predicted, dtype=np.int64)
    if truth.size == 0:
        return {"accuracy": 0.0, "macro_f1": 0.0}
    classes = np.arange(num_labels)[:, None]
    true_positive = ((truth == classes) & (guess == classes)).sum(axis=1)
    # F1 = 2TP / (2TP + FP + FN), and 2TP + FP + FN = |predicted as c| + |truly c|.
    denominator = (guess == classes).sum(axis=1) + (truth == classes).sum(axis=1)
    f1 = np.divide(
        2.0 * true_positive,
        denominator,
        out=np.zeros(num_labels, dtype=np.float64),
        where=denominator > 0,
    )
    return {"accuracy": float((truth == guess).mean()), "macro_f1": float(f1.mean())}


def quality_report(
    fp32: np.ndarray,
    candidate: np.ndarray,
    label_ids: np.ndarray,
    max_loss_points: float,
) -> QualityReport:
    """Score fp32 and a reduced-precision graph's logits against the true labels.

    Args:
        fp32: Logits of the fp32 graph, shape (rows, classes).
        candidate: Logits of the INT8 or fp16 graph, same rows.
        label_ids: True class ids of the rows.
        max_loss_points: Most accuracy or macro-F1 points the candidate may lose.
    """
    num_labels = fp32.shape[1]
    return QualityReport(
        rows=len(label_ids),
        fp32=accuracy_and_macro_f1(label_ids, fp32.argmax(-1), num_labels),
        candidate=accuracy_and_macro_f1(label_ids, candidate.argmax(-1), num_labels),
        max_loss_points=max_loss_points,
        agreement_with_fp32=agreement(candidate, fp32),
    )
