"""The evaluation's scoring functions against sklearn and values worked out by hand."""

import math

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support, roc_curve

from textops.components.evaluate.scoring import (
    ECE_BINS,
    calibration_bins,
    confident_mistakes,
    expected_calibration_error,
    roc_curve_points,
    score_model,
    slice_scores,
)

LABELS3 = ("billing", "delivery", "refund")


def one_hot_probabilities(predicted: list[int], confidence: float, classes: int) -> np.ndarray:
    """Rows that put `confidence` on the predicted class and spread the rest evenly."""
    rest = (1.0 - confidence) / (classes - 1)
    probabilities = np.full((len(predicted), classes), rest)
    probabilities[np.arange(len(predicted)), predicted] = confidence
    return probabilities


def test_scores_match_sklearn_on_random_predictions() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=300)
    probabilities = rng.dirichlet(np.ones(3), size=300)
    y_pred = probabilities.argmax(axis=1)

    scores = score_model(y, probabilities, LABELS3)

    assert scores.rows == 300
    assert scores.accuracy == pytest.approx(float((y_pred == y).mean()))
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y, y_pred, average=average, zero_division=0)
        assert getattr(scores, f"{average}_precision") == pytest.approx(p)
        assert getattr(scores, f"{average}_recall") == pytest.approx(r)
        assert getattr(scores, f"{average}_f1") == pytest.approx(f)
    assert scores.confusion_matrix == confusion_matrix(y, y_pred).tolist()
    per_class_f1 = f1_score(y, y_pred, average=None)
    assert [c.label for c in scores.per_class] == list(LABELS3)
    assert [c.f1 for c in scores.per_class] == pytest.approx(list(per_class_f1))
    assert [c.support for c in scores.per_class] == np.bincount(y, minlength=3).tolist()


def test_a_class_never_predicted_nor_present_still_counts_in_macro_f1() -> None:
    # Two classes perfectly right, the third absent: macro-F1 is (1 + 1 + 0) / 3, not 1.
    y = [0, 0, 1, 1]
    probabilities = one_hot_probabilities(y, 0.9, 3)
    scores = score_model(y, probabilities, LABELS3)
    assert scores.accuracy == 1.0
    assert scores.macro_f1 == pytest.approx(2 / 3)
    assert scores.confusion_matrix[2] == [0, 0, 0]


def test_shapes_that_do_not_agree_are_refused() -> None:
    with pytest.raises(ValueError, match="3 labels"):
        score_model([0, 1], np.full((2, 2), 0.5), LABELS3)
    with pytest.raises(ValueError, match="no rows"):
        score_model([], np.zeros((0, 3)), LABELS3)


def test_ece_of_a_perfectly_calibrated_model_is_zero() -> None:
    # Confidence 0.8 right 8 times in 10, confidence 0.6 right 3 times in 5.
    y = [0] * 8 + [1] * 2 + [0] * 3 + [1] * 2
    probabilities = np.array([[0.8, 0.2]] * 10 + [[0.6, 0.4]] * 5)
    assert expected_calibration_error(y, probabilities) == pytest.approx(0.0, abs=1e-12)


def test_ece_by_hand() -> None:
    # Two rows at 0.9 with one right: gap 0.4; two rows at 0.6 both right: gap 0.4.
    # Each bin holds half the rows: ECE = 0.5 * 0.4 + 0.5 * 0.4 = 0.4.
    y = [0, 1, 0, 0]
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    assert expected_calibration_error(y, probabilities) == pytest.approx(0.4)
    # An always-wrong model that is sure of itself is as badly calibrated as it gets.
    assert expected_calibration_error([1, 1], np.array([[0.9, 0.1]] * 2)) == pytest.approx(0.9)


def test_calibration_bins_are_fifteen_equal_width_closed_on_the_right() -> None:
    bins = calibration_bins([0, 0, 0], np.array([[1.0, 0.0], [0.5, 0.5], [0.8, 0.2]]))
    assert len(bins) == ECE_BINS
    assert bins[0].lower == 0.0 and bins[-1].upper == 1.0
    assert all(math.isclose(b.upper - b.lower, 1 / 15) for b in bins)
    # 1.0 falls in the last bin; 0.5 in (7/15, 8/15]; the empty bins report zero rows.
    assert bins[-1].rows == 1 and bins[-1].confidence == 1.0
    assert bins[7].rows == 1 and bins[7].confidence == 0.5
    assert sum(b.rows for b in bins) == 3


def test_roc_points_match_sklearn_with_a_finite_first_threshold() -> None:
    y = [0, 0, 1, 1]
    positive = np.array([0.1, 0.4, 0.35, 0.8])
    probabilities = np.column_stack([1 - positive, positive])

    roc = roc_curve_points(y, probabilities, ("negative", "positive"))

    assert roc is not None
    fpr, tpr, thresholds = roc_curve(np.array(y) == 1, positive)
    assert roc.positive_label == "positive"
    assert roc.fpr == pytest.approx(list(fpr))
    assert roc.tpr == pytest.approx(list(tpr))
    assert roc.thresholds[0] == 1.0  # sklearn's is infinite: JSON has no infinity
    assert roc.thresholds[1:] == pytest.approx(list(thresholds[1:]))
    assert all(math.isfinite(t) for t in roc.thresholds)
    assert (roc.fpr[0], roc.tpr[0]) == (0.0, 0.0) and (roc.fpr[-1], roc.tpr[-1]) == (1.0, 1.0)
    assert roc.auc == pytest.approx(0.75)  # 3 of the 4 (positive, negative) pairs ranked right


def test_long_roc_curves_are_downsampled_keeping_both_ends() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=5000)
    positive = np.clip(y * 0.3 + rng.random(5000) * 0.7, 0, 1)
    assert len(roc_curve(y == 1, positive)[0]) > 1000  # so there is something to drop
    roc = roc_curve_points(y, np.column_stack([1 - positive, positive]), ("no", "yes"))
    assert roc is not None
    assert 100 <= len(roc.fpr) <= 200
    assert len(roc.fpr) == len(roc.tpr) == len(roc.thresholds)
    assert (roc.fpr[0], roc.tpr[0], roc.fpr[-1], roc.tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert roc.fpr == sorted(roc.fpr)


def test_no_roc_for_more_than_two_classes_or_a_single_true_class() -> None:
    assert roc_curve_points([0, 1, 2], np.eye(3), LABELS3) is None
    assert roc_curve_points([1, 1], np.array([[0.3, 0.7], [0.6, 0.4]]), ("a", "b")) is None


def test_slice_scores_and_the_worst_slice_ignore_tiny_slices() -> None:
    # Slice "web" is all right, "app" half right, "fax" (2 rows) all wrong but too small.
    y = [*[0, 1, 0, 1, 0, 1], *[0, 1, 0, 1, 0, 1], *[0, 1], 1]
    predicted = [*[0, 1, 0, 1, 0, 1], *[0, 1, 0, 0, 1, 0], *[1, 0], 1]
    slices = ["web"] * 6 + ["app"] * 6 + ["fax"] * 2 + [None]
    probabilities = one_hot_probabilities(predicted, 0.7, 2)

    report = slice_scores(y, probabilities, slices, "channel")

    by_value = {s.value: s for s in report.slices}
    assert report.column == "channel"
    assert [s.value for s in report.slices][:2] == ["app", "web"]  # larger first, then by name
    assert by_value["web"].accuracy == 1.0 and by_value["web"].macro_f1 == 1.0
    assert by_value["app"].accuracy == pytest.approx(0.5)
    assert by_value["app"].macro_f1 == pytest.approx(
        f1_score(y[6:12], predicted[6:12], average="macro")
    )
    assert by_value["fax"].accuracy == 0.0
    assert by_value["(missing)"].rows == 1
    assert report.worst is not None and report.worst.value == "app"


def test_no_worst_slice_when_every_slice_is_tiny() -> None:
    report = slice_scores([0, 1], one_hot_probabilities([1, 0], 0.9, 2), ["a", "b"], "region")
    assert len(report.slices) == 2
    assert report.worst is None


def test_confident_mistakes_are_the_surest_wrong_predictions_first() -> None:
    texts = ["right and sure", "wrong, unsure", "wrong, very sure", "wrong, sure"]
    y = [0, 0, 0, 1]
    probabilities = np.array([[0.99, 0.01], [0.45, 0.55], [0.05, 0.95], [0.8, 0.2]])
    mistakes = confident_mistakes(texts, y, probabilities, ("ham", "spam"), top=2)
    assert [m.text for m in mistakes] == ["wrong, very sure", "wrong, sure"]
    assert (mistakes[0].true_label, mistakes[0].predicted_label) == ("ham", "spam")
    assert mistakes[0].confidence == pytest.approx(0.95)
    assert (mistakes[1].true_label, mistakes[1].predicted_label) == ("spam", "ham")
    assert confident_mistakes(texts[:1], y[:1], probabilities[:1], ("ham", "spam")) == []
