"""The rule reduced-precision graphs are judged by, shared by export and the GPU predictor."""

from __future__ import annotations

import numpy as np
import pytest

from textops.components.common.metrics import classification_scores
from textops.components.common.precision_quality import (
    FP16_MAX_LOSS_POINTS,
    accuracy_and_macro_f1,
    quality_report,
)
from textops.components.export import parity


@pytest.mark.parametrize("seed", range(5))
def test_scores_are_scikit_learns(seed: int) -> None:
    # Without scikit-learn (the serving image has none), yet the very same numbers: classes
    # absent from both truth and predictions count as 0 in macro-F1.
    rng = np.random.default_rng(seed)
    num_labels = 4
    truth = rng.integers(0, num_labels - 1, size=50)  # the last class never occurs
    guess = rng.integers(0, num_labels - 1, size=50)
    ours = accuracy_and_macro_f1(truth, guess, num_labels)
    theirs = classification_scores(truth, guess, num_labels)
    assert ours["accuracy"] == pytest.approx(theirs["accuracy"])
    assert ours["macro_f1"] == pytest.approx(theirs["macro_f1"])


def test_a_graph_that_loses_more_than_the_allowance_fails() -> None:
    labels = np.array([0, 1] * 50)
    fp32 = np.eye(2)[labels].astype(np.float32)  # right on every row
    flipped = fp32.copy()
    flipped[:2] = flipped[:2, ::-1]  # 2 of 100 rows wrong: 2 points of accuracy lost
    report = quality_report(fp32, flipped, labels, FP16_MAX_LOSS_POINTS)
    assert not report.passed and report.accuracy_loss_points == pytest.approx(2.0)
    assert quality_report(fp32, fp32 + 0.01, labels, FP16_MAX_LOSS_POINTS).passed


def test_export_judges_by_the_same_rule() -> None:
    assert parity.quality_report is quality_report
    assert parity.FP16_MAX_LOSS_POINTS == FP16_MAX_LOSS_POINTS
