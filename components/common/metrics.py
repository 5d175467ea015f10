"""Classification scores shared by training (validation) and evaluation (test)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Class ids: a list or a numpy array of integers.
ClassIds = Sequence[int] | np.ndarray


def classification_scores(y_true: ClassIds, y_pred: ClassIds, num_labels: int) -> dict[str, float]:
    """Accuracy, macro-F1 and weighted-F1 of integer class predictions.

    Args:
        y_true: True class ids.
        y_pred: Predicted class ids, same length.
        num_labels: Number of classes; classes absent from both still count in macro-F1 as 0.
    """
    from sklearn.metrics import accuracy_score, f1_score

    labels = list(range(num_labels))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "weighted_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)
        ),
    }


def confusion(y_true: ClassIds, y_pred: ClassIds, num_labels: int) -> list[list[int]]:
    """Confusion matrix as nested lists: row = true class, column = predicted class."""
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return matrix.tolist()
