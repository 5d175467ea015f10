"""`detect_drift` on real texts: Evidently's tests, their thresholds, and the verdict."""

import json

import pandas as pd
import pytest

from textops.components.common.errors import ConfigError, DriftInputError
from textops.components.monitor.drift import (
    QualityBaseline,
    detect_drift,
    quality_baseline,
)
from textops.components.monitor.drift_settings import DriftSettings

BASELINE = QualityBaseline(accuracy=0.5, macro_f1=0.4, source="test")


@pytest.fixture(scope="module")
def reference(drift_bundle_dir) -> pd.DataFrame:
    return pd.read_parquet(drift_bundle_dir / "reference.parquet")


def outcomes(result) -> dict:
    return {t.name: t for t in result.tests}


def test_traffic_like_the_reference_raises_no_drift(reference, held_out_traffic) -> None:
    window = held_out_traffic.sample(n=300, random_state=1)
    result = detect_drift(reference, window, DriftSettings(), baseline=BASELINE)
    assert result.status == "no_drift", result.reasons
    assert not result.drifted and result.reasons == ()
    tests = outcomes(result)
    assert set(tests) == {
        "text_content",
        "text_length",
        "word_count",
        "non_letter_share",
        "prediction",
        "confidence",
        "accuracy",
        "macro_f1",
    }
    assert all(t.status == "ok" for t in tests.values()), result.summary()
    assert tests["text_length"].threshold == pytest.approx(0.01)
    assert tests["text_content"].threshold == pytest.approx(0.99)
    assert 0.3 < tests["text_content"].value < 0.7  # ROC AUC near chance
    summary = json.loads(json.dumps(result.summary()))
    assert summary["window_rows"] == 300 and summary["labelled_rows"] == 300
    assert summary["reference_rows"] == len(reference)


def test_tweets_sent_to_a_review_model_are_flagged(reference, tweet_traffic) -> None:
    window = tweet_traffic.sample(n=300, random_state=1)
    result = detect_drift(reference, window, DriftSettings(), baseline=BASELINE)
    assert result.status == "drift"
    tests = outcomes(result)
    assert tests["text_content"].drifted and tests["text_content"].value > 0.8
    assert tests["text_length"].drifted and tests["text_length"].value < 0.01
    assert tests["non_letter_share"].drifted
    assert any(r.startswith("text_content: domain classifier ROC AUC") for r in result.reasons)
    # The Evidently run carries the same verdicts.
    assert result.snapshot is not None
    failed = [t for t in result.snapshot.tests_results if t.status.value == "FAIL"]
    assert len(failed) >= 3


def test_a_small_window_is_not_enough_data(reference, held_out_traffic) -> None:
    result = detect_drift(reference, held_out_traffic.head(199), DriftSettings())
    assert result.status == "not_enough_data"
    assert not result.drifted and result.tests == () and result.snapshot is None
    assert result.reasons == ("not enough data: 199 rows in the window, at least 200 needed",)
    assert result.summary()["not_enough_data"] is True


def test_wrong_predictions_on_labelled_rows_are_quality_drift(reference, held_out_traffic) -> None:
    window = held_out_traffic.sample(n=300, random_state=2).copy()
    # Ground truth that disagrees with every prediction: accuracy 0, texts unchanged.
    window["label"] = window["prediction"].map({"negative": "positive", "positive": "negative"})
    result = detect_drift(reference, window, DriftSettings(), baseline=BASELINE)
    tests = outcomes(result)
    assert result.status == "drift"
    assert tests["accuracy"].drifted and tests["accuracy"].value == 0.0
    assert tests["accuracy"].threshold == pytest.approx(0.4)
    assert tests["macro_f1"].drifted and tests["macro_f1"].threshold == pytest.approx(0.3)
    assert not tests["text_content"].drifted
    reasons = [r.split(":")[0] for r in result.reasons]
    assert reasons[-2:] == ["accuracy", "macro_f1"]


def test_quality_tests_wait_for_enough_labels(reference, held_out_traffic) -> None:
    window = held_out_traffic.sample(n=250, random_state=3).copy()
    window.loc[window.index[50:], "label"] = None
    result = detect_drift(reference, window, DriftSettings(), baseline=BASELINE)
    tests = outcomes(result)
    assert result.labelled_rows == 50
    assert tests["accuracy"].status == "skipped" and tests["accuracy"].value is None
    assert "50 labelled rows, at least 100 needed" in tests["accuracy"].detail


def test_predicted_label_shift_and_the_drift_share(reference, held_out_traffic) -> None:
    window = held_out_traffic.sample(n=300, random_state=4).copy()
    # Same texts, but the model now answers one class only (and leaves some unanswered).
    window["prediction"] = "positive"
    window.loc[window.index[:20], ["prediction", "confidence"]] = [None, float("nan")]
    window["label"] = None
    any_test = detect_drift(reference, window, DriftSettings())
    assert any_test.status == "drift"
    assert [r.split(":")[0] for r in any_test.reasons] == ["prediction"]
    every_test = detect_drift(reference, window, DriftSettings(drift_share=1.0))
    assert every_test.status == "no_drift"
    assert every_test.reasons == ("1 of 5 data tests found drift, below the drift share 1.0",)


def test_confidence_is_reported_but_does_not_gate(reference, held_out_traffic) -> None:
    window = held_out_traffic.sample(n=300, random_state=5).copy()
    window["confidence"] = 0.5
    result = detect_drift(reference, window, DriftSettings())
    confidence = outcomes(result)["confidence"]
    assert confidence.drifted and not confidence.gate
    assert result.status == "no_drift"
    gated = DriftSettings(tests={"confidence": {"gate": True}})
    assert detect_drift(reference, window, gated).status == "drift"


def test_methods_evidently_lacks_are_config_errors(reference, held_out_traffic) -> None:
    window = held_out_traffic.head(200)
    with pytest.raises(ConfigError, match="'nope' is not an Evidently drift method"):
        detect_drift(reference, window, DriftSettings(tests={"word_count": {"method": "nope"}}))
    with pytest.raises(ConfigError, match="for a text column"):
        detect_drift(reference, window, DriftSettings(tests={"text_content": {"method": "ks"}}))


def test_frames_without_text_or_predictions_are_refused(reference) -> None:
    with pytest.raises(DriftInputError, match="lacks the column"):
        detect_drift(reference, pd.DataFrame({"text": ["a"]}), DriftSettings())
    with pytest.raises(DriftInputError, match="reference sample is empty"):
        detect_drift(
            reference.head(0), pd.DataFrame({"text": ["a"], "prediction": ["x"]}), DriftSettings()
        )


def test_the_baseline_is_the_bundles_test_metrics_else_the_reference(reference) -> None:
    from_metadata = quality_baseline({"metrics": {"accuracy": 0.9, "macro_f1": 0.8}}, reference)
    assert from_metadata == QualityBaseline(0.9, 0.8, "bundle test metrics")
    from_reference = quality_baseline({}, reference)
    assert from_reference is not None and from_reference.source.startswith("reference sample")
    expected = (reference["label"] == reference["prediction"]).mean()
    assert from_reference.accuracy == pytest.approx(expected)
    assert quality_baseline({}, reference.assign(label=None)) is None


def test_a_distance_method_is_judged_at_evidentlys_default_threshold(
    reference, held_out_traffic, tweet_traffic
) -> None:
    settings = DriftSettings(tests={"text_length": {"method": "wasserstein"}})
    healthy = detect_drift(reference, held_out_traffic.sample(n=400, random_state=6), settings)
    shifted = detect_drift(reference, tweet_traffic.sample(n=400, random_state=6), settings)
    for result, drifted in ((healthy, False), (shifted, True)):
        length = outcomes(result)["text_length"]
        assert (length.method, length.threshold, length.drifted) == ("wasserstein", 0.1, drifted)
        assert length.rule == "drift when the distance reaches 0.1"
    # It no longer shares the false-positive budget: four tests split 0.05.
    assert outcomes(healthy)["word_count"].threshold == pytest.approx(0.0125)
