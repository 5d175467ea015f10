"""Behavioural tests of the model the main job publishes (minimum functionality, invariance,
direction), run on the ONNX model in the bundle, as serving runs it."""

from pathlib import Path

import numpy as np
import pytest

from textops.components.common.onnx_classifier import OnnxClassifier

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def classifier(sample_bundle_dir: Path) -> OnnxClassifier:
    return OnnxClassifier.from_bundle(sample_bundle_dir)


def positive_probability(classifier: OnnxClassifier, texts: list[str]) -> np.ndarray:
    column = classifier.labels.names.index("positive")
    return classifier.predict_proba(texts)[:, column]


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("This is the best phone I have ever owned.", "positive"),
        ("The food was delicious and the staff were friendly.", "positive"),
        ("A wonderful film with brilliant acting.", "positive"),
        ("It broke after two days. Waste of money.", "negative"),
        ("The service was slow and the soup was cold.", "negative"),
        ("Boring plot and terrible dialogue.", "negative"),
    ],
)
def test_minimum_functionality(classifier: OnnxClassifier, text: str, label: str) -> None:
    assert classifier.predict([text]) == [label]


@pytest.mark.parametrize(
    "template",
    [
        "I bought the {} headset and it works great.",
        "The {} restaurant was a huge disappointment.",
        "The movie starring {} was a masterpiece.",
    ],
)
def test_names_do_not_change_the_verdict(classifier: OnnxClassifier, template: str) -> None:
    names = ["Samsung", "Nokia", "Motorola", "Maria", "Kenji", "Olusegun"]
    predictions = classifier.predict([template.format(name) for name in names])
    assert len(set(predictions)) == 1, dict(zip(names, predictions, strict=True))


def test_praise_raises_and_complaint_lowers_the_positive_probability(
    classifier: OnnxClassifier,
) -> None:
    base = "The battery lasts a day."
    neutral, praised, panned = positive_probability(
        classifier,
        [base, base + " I absolutely love it!", base + " Sadly it stopped charging after a week."],
    )
    assert praised > neutral > panned
