"""Calibration on real data with the real fine-tuned model (the sample run: `textops run` with
every default on the sample sentences).

The evaluate step fits a temperature on the validation split; on the test split it must lower
the expected calibration error and the negative log-likelihood and leave accuracy as it was,
and the published bundle must serve those calibrated probabilities.

Slow: the sample run fine-tunes the real model first. The unit tests check the same rules on
synthetic over-confident logits and the tiny model (tests/unit/test_calibration.py).
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from textops.components.common.bundle import CALIBRATION_KEY, ModelBundle
from textops.components.common.onnx_classifier import OnnxClassifier
from textops.components.evaluate.scoring import expected_calibration_error

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _step_output(run_dir: Path, step: str, name: str) -> Path:
    """An output of one step of the sample run's (only) training run."""
    (found,) = sorted(run_dir.glob(f"runs/*/{step}/{name}"))
    return found


@pytest.fixture(scope="module")
def decision(sample_run: tuple[Path, str]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        _step_output(sample_run[0], "evaluate-model", "decision").read_text()
    )
    return document


def test_calibration_lowers_ece_and_nll_on_the_test_split_and_keeps_accuracy(
    decision: dict[str, Any], sample_bundle_dir: Path, sample_run: tuple[Path, str]
) -> None:
    calibration = decision["calibration"]
    scores = decision["challenger"]["scores"]
    print(  # the figures docs/benchmarks.md quotes, shown with -s
        f"temperature={calibration['temperature']:.3f} "
        f"ece {calibration['ece_before']:.4f} -> {calibration['ece_after']:.4f} "
        f"nll {calibration['nll_before']:.4f} -> {calibration['nll_after']:.4f} "
        f"accuracy={scores['accuracy']:.4f} test_rows={scores['test_rows']:.0f} "
        f"baseline_accuracy={decision['baseline']['scores']['accuracy']:.4f}"
    )
    assert calibration["fitted_on"] == "validation" and calibration["validation_rows"] > 100
    assert calibration["ece_after"] < calibration["ece_before"]
    assert calibration["nll_after"] < calibration["nll_before"]

    # The bundle carries the temperature, and serving it gives the calibrated confidence with
    # the accuracy evaluate measured (up to the parity tolerance between ONNX and PyTorch).
    bundle = ModelBundle.open(sample_bundle_dir)
    assert bundle.metadata[CALIBRATION_KEY]["temperature"] == pytest.approx(
        calibration["temperature"]
    )
    test = pd.read_parquet(_step_output(sample_run[0], "preprocess-data", "test_data"))
    classifier = OnnxClassifier.from_bundle(sample_bundle_dir, precision="fp32")
    assert classifier.temperature == pytest.approx(calibration["temperature"])
    y_true = np.array([classifier.labels.index(v) for v in test["label"]])
    served = classifier.predict_proba(test["text"].astype(str).tolist())
    assert float(np.mean(served.argmax(axis=1) == y_true)) == pytest.approx(
        scores["accuracy"], abs=0.005
    )
    assert expected_calibration_error(y_true, served) == pytest.approx(
        calibration["ece_after"], abs=0.01
    )
