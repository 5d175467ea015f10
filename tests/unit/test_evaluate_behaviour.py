"""Behavioural tests (minimum functionality, invariance, directional) on the real tiny model.

Expected outcomes are built from the model's own answers, so each test passes or fails by
construction, whatever the random weights happen to predict.
"""

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from textops.components.common.errors import ConfigError
from textops.components.common.labels import LabelMap
from textops.components.evaluate.behaviour import (
    check_test_labels,
    parse_behaviour_tests,
    run_behaviour_tests,
)
from textops.components.evaluate.classifiers import TorchClassifier


@pytest.fixture(scope="module")
def classifier(tiny_model_dir: Path) -> TorchClassifier:
    return TorchClassifier.from_model_dir(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def answers(classifier: TorchClassifier, tiny_splits: dict[str, Path]) -> pd.DataFrame:
    """Test texts with the model's prediction and its probability of `positive`."""
    frame = pd.read_parquet(tiny_splits["test"])[["text"]]
    probabilities = classifier.predict_proba(frame["text"].tolist())
    frame["predicted"] = [classifier.labels.names[i] for i in probabilities.argmax(axis=1)]
    frame["p_positive"] = probabilities[:, classifier.labels.index("positive")]
    assert frame["predicted"].nunique() == 2  # the tests below need both answers
    return frame


def run_one(definition: dict[str, Any], classifier: TorchClassifier) -> Any:
    (result,) = run_behaviour_tests(parse_behaviour_tests([definition]), classifier)
    return result


def test_probabilities_are_rows_that_sum_to_one(classifier: TorchClassifier) -> None:
    probabilities = classifier.predict_proba(["fine", "awful service, never again"])
    assert probabilities.shape == (2, 2)
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    with pytest.raises(TypeError):
        classifier.predict_proba("one string")  # a str is a Sequence[str] too


def test_minimum_functionality_passes_and_fails(
    classifier: TorchClassifier, answers: pd.DataFrame
) -> None:
    flip = {"negative": "positive", "positive": "negative"}
    rows = answers.head(5)
    right = [{"text": t, "label": p} for t, p in zip(rows["text"], rows["predicted"], strict=True)]
    wrong = [
        {"text": t, "label": flip[p]} for t, p in zip(rows["text"], rows["predicted"], strict=True)
    ]

    passing = run_one({"name": "own answers", "kind": "mft", "cases": right}, classifier)
    assert (passing.passed, passing.passed_cases, passing.cases) == (True, 5, 5)
    assert passing.failures == ()

    mixed = right[:3] + wrong[3:]
    failing = run_one({"name": "mixed", "kind": "mft", "cases": mixed}, classifier)
    assert (failing.passed, failing.pass_rate) == (False, pytest.approx(0.6))
    assert len(failing.failures) == 2 and "expected" in failing.failures[0]
    # The same cases clear a lower bar.
    lenient = {"name": "mixed", "kind": "mft", "cases": mixed, "min_pass_rate": 0.6}
    assert run_one(lenient, classifier).passed


def test_invariance_passes_when_every_fill_gets_one_label_and_fails_otherwise(
    classifier: TorchClassifier, answers: pd.DataFrame
) -> None:
    negative = answers.loc[answers["predicted"] == "negative", "text"].head(3).tolist()
    positive = answers.loc[answers["predicted"] == "positive", "text"].head(1).tolist()

    same = run_one(
        {"name": "same", "kind": "invariance", "template": "{}", "fills": negative}, classifier
    )
    assert same.passed and same.cases == 3

    odd = run_one(
        {"name": "odd", "kind": "invariance", "template": "{}", "fills": negative + positive},
        classifier,
    )
    assert not odd.passed
    assert odd.pass_rate == pytest.approx(0.75)  # three agree with the majority, one departs
    assert "most fills negative" in odd.failures[0]

    # Braces other than {} are text (str.format would choke on them).
    braces = {"name": "json", "kind": "invariance", "template": '{"q": "{}"}', "fills": ["a", "b"]}
    assert run_one(braces, classifier).cases == 2


def test_directional_checks_the_move_of_one_label_probability(
    classifier: TorchClassifier, answers: pd.DataFrame
) -> None:
    ordered = answers.sort_values("p_positive")
    low, high = ordered["text"].iloc[0], ordered["text"].iloc[-1]
    case = {"text": low, "perturbed": high, "label": "positive"}

    up = run_one(
        {"name": "up", "kind": "directional", "cases": [{**case, "direction": "up"}]}, classifier
    )
    assert up.passed
    down = run_one(
        {"name": "down", "kind": "directional", "cases": [{**case, "direction": "down"}]},
        classifier,
    )
    assert not down.passed and "expected down" in down.failures[0]


def test_gate_flag_and_sentence(classifier: TorchClassifier, answers: pd.DataFrame) -> None:
    text = answers["text"].iloc[0]
    wrong = {"negative": "positive", "positive": "negative"}[answers["predicted"].iloc[0]]
    result = run_one(
        {
            "name": "report only",
            "kind": "mft",
            "cases": [{"text": text, "label": wrong}],
            "gate": False,
        },
        classifier,
    )
    assert not result.passed and not result.gate
    assert "not gating" in result.sentence() and "0/1" in result.sentence()
    assert result.to_dict()["passed"] is False


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ({"name": "n", "kind": "irony"}, r"behaviour test 'n' is invalid: kind"),
        ({"name": "n", "kind": "mft", "colour": "red"}, r"'n' is invalid: colour"),
        ({"kind": "mft", "cases": [{"text": "x", "label": "y"}]}, r"behaviour test #1 .*name"),
        ({"name": "n", "kind": "mft", "min_pass_rate": 2}, r"'n' is invalid: min_pass_rate"),
        ({"name": "n", "kind": "mft"}, r"'n' \(mft\) has no cases"),
        ({"name": "n", "kind": "mft", "cases": [{"text": "x"}]}, r"'n' \(mft\) case 1 lacks label"),
        (
            {
                "name": "n",
                "kind": "directional",
                "cases": [{"text": "a", "perturbed": "b", "label": "c"}],
            },
            r"'n' case 1: direction must be 'up' or 'down'",
        ),
        ({"name": "n", "kind": "invariance", "template": "no slot", "fills": ["a", "b"]}, r"\{\}"),
        ({"name": "n", "kind": "invariance", "template": "{}", "fills": ["a"]}, r"two fills"),
    ],
)
def test_invalid_definitions_are_config_errors_naming_the_test(
    definition: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_behaviour_tests([definition])


def test_names_must_be_unique() -> None:
    case = {"kind": "mft", "cases": [{"text": "x", "label": "positive"}]}
    with pytest.raises(ConfigError, match=r"repeated: \['twice'\]"):
        parse_behaviour_tests([{"name": "twice", **case}, {"name": "twice", **case}])


def test_labels_the_model_does_not_know_are_config_errors() -> None:
    tests = parse_behaviour_tests(
        [{"name": "typo", "kind": "mft", "cases": [{"text": "x", "label": "postive"}]}]
    )
    with pytest.raises(ConfigError, match=r"'typo' case 1: label 'postive' is not one of"):
        check_test_labels(tests, LabelMap(("negative", "positive")))
