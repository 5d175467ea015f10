"""Calibrated confidence: the temperature fit, the bundle's record of it, and every runtime
that turns logits into probabilities applying it (or T = 1 for a bundle without one)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from kserve.model import InferenceVerb
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse

from textops.components.common.bundle import (
    CALIBRATION_KEY,
    METADATA_FILE,
    REFERENCE_FILE,
    ModelBundle,
    recorded_temperature,
)
from textops.components.common.onnx_classifier import OnnxClassifier, softmax
from textops.components.evaluate.calibration import (
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    calibrate,
    fit_temperature,
    negative_log_likelihood,
)
from textops.components.evaluate.scoring import expected_calibration_error, score_model
from textops.components.export.onnx_export import calibration_record, export_bundle
from textops.components.serve.model import TextClassifierModel
from textops.components.serve.settings import ServeSettings

TEXTS = ["great food", "awful service", "it was fine", "never again", "loved every minute"]
#: Far from 1, so a runtime that forgets to divide answers visibly differently.
TEMPERATURE = 4.0


def _calibrated_logits(rows: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose softmax is each row's true class distribution, and labels drawn from it."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, size=(rows, classes))
    probabilities = softmax(logits).astype(np.float64)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(classes, p=p) for p in probabilities])
    return logits.astype(np.float32), labels


# --- the fit ----------------------------------------------------------------------------------


def test_fit_undoes_over_confidence_and_lowers_ece_and_nll() -> None:
    # Logits three times too large: the model is sure where it should be hesitant.
    validation, validation_true = _calibrated_logits(4000, 3, seed=1)
    test, test_true = _calibrated_logits(4000, 3, seed=2)

    fitted = calibrate(validation * 3.0, validation_true, test * 3.0, test_true)

    assert fitted.temperature == pytest.approx(3.0, rel=0.15)
    assert fitted.ece_before > 0.1
    assert fitted.ece_after < fitted.ece_before / 3
    assert fitted.nll_after < fitted.nll_before
    assert fitted.validation_rows == 4000
    assert fitted.ece_after == pytest.approx(
        expected_calibration_error(test_true, softmax(test * 3.0, fitted.temperature))
    )


def test_fit_leaves_calibrated_logits_alone() -> None:
    logits, y_true = _calibrated_logits(5000, 4, seed=3)
    assert fit_temperature(logits, y_true) == pytest.approx(1.0, abs=0.1)


def test_fit_stays_within_its_bounds() -> None:
    # Every row right with a margin: the likelihood keeps rising as T falls (until it is 1
    # in float64, so the search may stop anywhere near the bottom of the range).
    logits = np.array([[5.0, 0.0], [0.0, 5.0]] * 50, dtype=np.float32)
    assert MIN_TEMPERATURE <= fit_temperature(logits, [0, 1] * 50) < 0.2
    # Every row wrong: the best the fit can do is flatten the probabilities.
    assert fit_temperature(logits, [1, 0] * 50) == pytest.approx(MAX_TEMPERATURE, rel=0.01)


def test_no_validation_rows_means_no_scaling() -> None:
    assert fit_temperature(np.zeros((0, 2), dtype=np.float32), []) == 1.0


def test_temperature_never_changes_the_predicted_class_or_accuracy() -> None:
    logits, y_true = _calibrated_logits(2000, 5, seed=4)
    logits *= 3.0
    labels = [f"c{i}" for i in range(5)]
    raw = score_model(y_true, softmax(logits), labels)
    for temperature in (MIN_TEMPERATURE, 0.5, 2.0, MAX_TEMPERATURE):
        scaled = softmax(logits, temperature)
        np.testing.assert_array_equal(scaled.argmax(axis=1), logits.argmax(axis=1))
        assert score_model(y_true, scaled, labels).accuracy == raw.accuracy


def test_nll_is_the_mean_negative_log_probability_of_the_true_class() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 1.0]])
    expected = -np.mean(np.log([softmax(logits)[0, 0], softmax(logits)[1, 1]]))
    assert negative_log_likelihood(logits, [0, 1]) == pytest.approx(expected, rel=1e-6)
    halved = -np.mean(np.log([softmax(logits / 2)[0, 0], softmax(logits / 2)[1, 1]]))
    assert negative_log_likelihood(logits, [0, 1], 2.0) == pytest.approx(halved, rel=1e-6)


def test_softmax_refuses_a_temperature_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="temperature must be positive"):
        softmax(np.zeros((1, 2)), 0.0)


# --- the bundle's record ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({}, 1.0),
        ({CALIBRATION_KEY: {"temperature": 2.5, "fitted_on": "validation"}}, 2.5),
        ({CALIBRATION_KEY: {"temperature": 0}}, 1.0),
        ({CALIBRATION_KEY: {"temperature": -3.0}}, 1.0),
        ({CALIBRATION_KEY: {"temperature": float("nan")}}, 1.0),
        ({CALIBRATION_KEY: {"temperature": "2"}}, 1.0),
        ({CALIBRATION_KEY: {"temperature": True}}, 1.0),
        ({CALIBRATION_KEY: 2.0}, 1.0),
    ],
)
def test_a_bundle_without_a_usable_temperature_serves_with_one(
    metadata: dict[str, Any], expected: float
) -> None:
    assert recorded_temperature(metadata) == expected


def test_export_takes_the_calibration_from_evaluates_metrics() -> None:
    metrics = {
        "accuracy": 0.9,
        "ece": 0.08,
        "ece_calibrated": 0.02,
        "nll": 0.4,
        "nll_calibrated": 0.3,
        # KFP metadata passes numbers as floats.
        "temperature": 1.7,
    }
    assert calibration_record(metrics) == {
        "temperature": 1.7,
        "fitted_on": "validation",
        "ece_before": 0.08,
        "ece_after": 0.02,
        "nll_before": 0.4,
        "nll_after": 0.3,
    }
    assert calibration_record({"accuracy": 0.9}) is None
    assert calibration_record({"temperature": -1.0}) is None


@pytest.fixture(scope="module")
def exported_calibrated(
    tiny_model_dir: Path,
    tiny_splits: dict[str, Path],
    tiny_training_metadata: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The tiny model exported with evaluate's metrics carrying TEMPERATURE."""
    bundle_dir = tmp_path_factory.mktemp("calibrated-export") / "bundle"
    export_bundle(
        model_dir=tiny_model_dir,
        validation_path=tiny_splits["validation"],
        reference_source_path=tiny_splits["train"],
        training=tiny_training_metadata,
        evaluation={"accuracy": 0.5, "ece": 0.2, "ece_calibrated": 0.05, "temperature": 4.0},
        bundle_dir=bundle_dir,
    )
    return bundle_dir


def test_the_bundle_carries_the_temperature_and_serves_with_it(exported_calibrated: Path) -> None:
    bundle = ModelBundle.open(exported_calibrated)
    record = bundle.metadata[CALIBRATION_KEY]
    assert record == {
        "temperature": TEMPERATURE,
        "fitted_on": "validation",
        "ece_before": 0.2,
        "ece_after": 0.05,
    }
    assert bundle.temperature == TEMPERATURE
    assert bundle.metadata["metrics"]["temperature"] == TEMPERATURE
    assert not bundle.verify_hashes()

    classifier = OnnxClassifier.from_bundle(exported_calibrated)
    assert classifier.temperature == TEMPERATURE
    logits = classifier.logits(TEXTS)
    np.testing.assert_allclose(
        classifier.predict_proba(TEXTS), softmax(logits / TEMPERATURE), atol=1e-6
    )
    assert classifier.predict(TEXTS) == [classifier.labels.names[i] for i in logits.argmax(1)]

    # Drift compares served confidence with the reference's: it holds calibrated ones too.
    reference = pd.read_parquet(exported_calibrated / REFERENCE_FILE)
    expected = classifier.predict_proba(reference["text"].tolist())
    np.testing.assert_allclose(reference["confidence"], expected.max(axis=1), atol=1e-5)


def test_an_old_bundle_serves_raw_probabilities(tiny_bundle_dir: Path) -> None:
    # The session's tiny bundle was exported from metrics without a temperature.
    assert CALIBRATION_KEY not in ModelBundle.open(tiny_bundle_dir).metadata
    classifier = OnnxClassifier.from_bundle(tiny_bundle_dir)
    assert classifier.temperature == 1.0
    np.testing.assert_allclose(
        classifier.predict_proba(TEXTS), softmax(classifier.logits(TEXTS)), atol=1e-6
    )


# --- every runtime ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def calibrated_bundle(tiny_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny bundle whose metadata.json records TEMPERATURE."""
    bundle_dir = tmp_path_factory.mktemp("calibrated") / "bundle"
    shutil.copytree(tiny_bundle_dir, bundle_dir)
    path = bundle_dir / METADATA_FILE
    metadata = json.loads(path.read_text())
    metadata[CALIBRATION_KEY] = {"temperature": TEMPERATURE, "fitted_on": "validation"}
    path.write_text(json.dumps(metadata))
    return bundle_dir


def _expected(bundle: Path, temperature: float) -> np.ndarray:
    # Logits are the graph's own, whatever the bundle's temperature.
    return softmax(OnnxClassifier.from_bundle(bundle).logits(TEXTS), temperature)


@pytest.mark.parametrize(("calibrated", "temperature"), [(True, TEMPERATURE), (False, 1.0)])
def test_the_predictor_answers_v1_and_v2_with_the_bundles_temperature(
    calibrated: bool,
    temperature: float,
    calibrated_bundle: Path,
    tiny_bundle_dir: Path,
) -> None:
    bundle = calibrated_bundle if calibrated else tiny_bundle_dir
    model = TextClassifierModel(ServeSettings(model_name="calibrated", bundle=bundle))
    model.load()

    async def both() -> tuple[Any, Any]:
        v1, _ = await model({"instances": TEXTS}, headers={})
        request = InferRequest("calibrated", [InferInput("text", [len(TEXTS)], "BYTES", TEXTS)])
        v2, _ = await model(request, headers={})
        return v1, v2

    v1, v2 = asyncio.run(both())
    expected = _expected(bundle, temperature)
    labels = model.runtime.labels
    served = np.array([[p["probabilities"][name] for name in labels] for p in v1["predictions"]])
    np.testing.assert_allclose(served, expected, atol=1e-5)
    assert isinstance(v2, InferResponse)
    np.testing.assert_allclose(v2.get_output_by_name("probabilities").data, expected, atol=1e-5)
    if calibrated:
        # Dividing by 4 pulls every confidence towards 1/labels: visibly not the raw answer.
        assert served.max(axis=1).mean() < _expected(bundle, 1.0).max(axis=1).mean()


def test_explain_scores_with_the_calibrated_probabilities(calibrated_bundle: Path) -> None:
    model = TextClassifierModel(ServeSettings(model_name="explain", bundle=calibrated_bundle))
    model.load()

    async def explain() -> Any:
        answer, _ = await model({"instances": TEXTS[:2]}, headers={}, verb=InferenceVerb.EXPLAIN)
        return answer

    body = asyncio.run(explain())
    expected = _expected(calibrated_bundle, TEMPERATURE)[:2]
    for explanation, row in zip(body["explanations"], expected, strict=True):
        assert explanation["probability"] == pytest.approx(float(row.max()), abs=1e-5)


@pytest.mark.parametrize(("calibrated", "temperature"), [(True, TEMPERATURE), (False, 1.0)])
def test_the_triton_transformer_divides_tritons_logits(
    calibrated: bool,
    temperature: float,
    calibrated_bundle: Path,
    tiny_bundle_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kserve.predictor_config import PredictorConfig

    from textops.components.serve.transformer import TritonChunk, TritonTransformer

    bundle = calibrated_bundle if calibrated else tiny_bundle_dir
    transformer = TritonTransformer(
        ServeSettings(model_name="t", bundle=bundle), PredictorConfig("triton:8000", "v2")
    )
    transformer.load()
    assert transformer.bundle.temperature == temperature
    graph = OnnxClassifier.from_bundle(bundle)

    # Triton's part (tested against a real server in the integration tests): the graph's
    # logits for the chunk's rows.
    async def triton(chunk: TritonChunk, headers: Any, labels: int) -> np.ndarray:
        return graph.logits([TEXTS[i] for i in chunk.rows])

    monkeypatch.setattr(transformer, "_infer", triton)

    async def v1() -> Any:
        answer, _ = await transformer({"instances": TEXTS}, headers={})
        return answer

    body = asyncio.run(v1())
    labels = transformer.bundle.labels
    served = np.array([[p["probabilities"][name] for name in labels] for p in body["predictions"]])
    np.testing.assert_allclose(served, _expected(bundle, temperature), atol=1e-5)
