"""The linear baseline of every evaluation: what it learns, which rows, the gate, the report.

Real scikit-learn on real splits; the gate's rule is checked on numbers, and the whole step
on the tiny model and the tiny splits of the sample data.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from textops.components.common.settings import GateSettings
from textops.components.evaluate.baseline import (
    BASELINE_NAME,
    MAX_TEXT_CHARS,
    BaselineResult,
    capped_rows,
    train_and_score_baseline,
)
from textops.components.evaluate.evaluation import EvaluationOutcome, evaluate_challenger
from textops.components.evaluate.gate import ChampionResult, decide
from textops.components.evaluate.scoring import ModelScores, score_model

#: Label order as a model might have it: not scikit-learn's sorted order.
LABELS = ("positive", "negative")
OPEN_GATE = GateSettings(min_accuracy=0.0, min_macro_f1=0.0)


def _with_margin(margin: float) -> GateSettings:
    return GateSettings(min_accuracy=0.0, min_macro_f1=0.0, min_margin_over_baseline=margin)


GOOD = ["great", "lovely", "excellent", "superb", "wonderful", "perfect"]
BAD = ["awful", "broken", "terrible", "useless", "horrible", "dreadful"]
FILLER = ["the", "phone", "was", "really", "quite", "service", "food", "and", "today"]


def _reviews(words: list[str], label: str, n: int, seed: int) -> list[tuple[str, str]]:
    """n texts of filler words around one or two of `words`: separable by those words alone."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        parts = [*rng.choice(FILLER, 5), *rng.choice(words, 2)]
        rng.shuffle(parts)
        rows.append((" ".join(parts), label))
    return rows


def _separable(n: int, seed: int) -> pd.DataFrame:
    rows = _reviews(GOOD, "positive", n, seed) + _reviews(BAD, "negative", n, seed + 1)
    return pd.DataFrame(rows, columns=["text", "label"])


def _ids(frame: pd.DataFrame) -> list[int]:
    return [LABELS.index(label) for label in frame["label"]]


def test_the_baseline_learns_a_separable_set_in_the_models_label_order() -> None:
    train, test = _separable(60, seed=0), _separable(30, seed=100)

    result = train_and_score_baseline(train, test["text"].tolist(), _ids(test), LABELS)

    assert result.scores is not None, result.error
    assert result.scores.labels == LABELS
    assert result.scores.accuracy == 1.0 and result.scores.macro_f1 == 1.0
    assert result.train_rows == 120 and result.scores.rows == 60
    assert result.features > 0 and result.seconds > 0


def test_the_baseline_learns_from_the_train_split_it_is_given() -> None:
    train, test = _separable(60, seed=0), _separable(30, seed=100)
    flipped = train.assign(
        label=train["label"].map({"positive": "negative", "negative": "positive"})
    )

    right = train_and_score_baseline(train, test["text"].tolist(), _ids(test), LABELS)
    wrong = train_and_score_baseline(flipped, test["text"].tolist(), _ids(test), LABELS)

    assert right.scores is not None and wrong.scores is not None
    assert (right.scores.accuracy, wrong.scores.accuracy) == (1.0, 0.0)


def test_a_class_missing_from_training_gets_probability_zero() -> None:
    train = pd.concat([_separable(40, seed=0), pd.DataFrame({"text": ["meh"], "label": ["other"]})])
    test = _separable(10, seed=100)
    labels = (*LABELS, "neutral")  # the model knows a class the train rows lack

    result = train_and_score_baseline(train, test["text"].tolist(), _ids(test), labels)

    assert result.scores is not None
    assert result.scores.labels == labels
    assert result.train_rows == 80  # the "other" row is no class of the model's
    assert result.scores.per_class[2].support == 0 and result.scores.accuracy == 1.0


def test_a_train_split_with_one_class_gives_no_baseline_and_no_error() -> None:
    train = _separable(20, seed=0).query("label == 'positive'")

    result = train_and_score_baseline(train, ["great phone"], [0], LABELS)

    assert result.scores is None
    assert "needs at least 2" in result.error


def test_the_rows_are_capped_by_count_and_by_characters_the_same_way_each_time() -> None:
    train = pd.DataFrame({"text": [f"text {i:04d} " + "x" * 90 for i in range(1000)]})
    assert capped_rows(train) is train  # within both caps: the split itself

    by_rows = capped_rows(train, max_rows=100)
    assert len(by_rows) == 100 and by_rows.index.is_monotonic_increasing
    assert by_rows.equals(capped_rows(train, max_rows=100))  # seeded

    by_chars = capped_rows(train, max_chars=10_000)  # 100 characters a row
    assert len(by_chars) == 100

    huge = pd.DataFrame({"text": ["y" * (MAX_TEXT_CHARS * 3)] * 4})
    # Each text counts only up to the characters the baseline reads of it.
    assert len(capped_rows(huge, max_chars=MAX_TEXT_CHARS * 2)) == 2


# --- the gate --------------------------------------------------------------------------------


def _scores(macro_f1: float) -> ModelScores:
    base = score_model([0, 1], np.array([[0.9, 0.1], [0.2, 0.8]]), LABELS)
    return dataclasses.replace(base, macro_f1=macro_f1)


def _baseline(macro_f1: float) -> BaselineResult:
    return BaselineResult(_scores(macro_f1), train_rows=100, features=500, seconds=0.1)


def _baseline_check(settings: GateSettings, new: float, baseline: BaselineResult) -> Any:
    decision = decide(settings, _scores(new), ChampionResult("none"), baseline=baseline)
    [check] = [c for c in decision.checks if c.name == "baseline"]
    return decision, check


def test_by_default_the_baseline_is_reported_and_never_refuses() -> None:
    assert GateSettings().min_margin_over_baseline == -1.0

    decision, check = _baseline_check(OPEN_GATE, 0.60, _baseline(0.95))

    assert decision.deploy
    assert check.passed and not check.blocks
    assert check.reason == (
        f"baseline ({BASELINE_NAME}) macro-F1 0.950, new model 0.600 (-0.350): reported only, "
        "min_margin_over_baseline is off"
    )


@pytest.mark.parametrize(
    ("new", "margin", "ships"),
    [
        (0.82, 0.02, True),
        (0.81, 0.02, True),  # exactly the margin
        (0.80, 0.02, False),
        (0.79, 0.0, True),  # 0: at least equal
        (0.78, 0.0, False),
        (0.77, -0.02, True),  # a negative margin tolerates a small loss
    ],
)
def test_a_margin_refuses_a_model_that_does_not_beat_the_baseline_by_it(
    new: float, margin: float, ships: bool
) -> None:
    settings = _with_margin(margin)

    decision, check = _baseline_check(settings, new, _baseline(0.79))

    assert decision.deploy is ships and check.blocks
    assert "min_margin_over_baseline" in check.reason
    if not ships:
        assert decision.reasons[0] == check.reason
        assert check.reason.endswith("does not beat the linear baseline by the margin")


def test_with_a_margin_and_no_baseline_nothing_ships() -> None:
    settings = _with_margin(0.0)
    missing = BaselineResult(None, error="the train split has 1 class(es)")

    decision, check = _baseline_check(settings, 0.9, missing)

    assert not decision.deploy
    assert "min_margin_over_baseline" in check.reason and "1 class(es)" in check.reason


def test_the_margin_is_bounded() -> None:
    from pydantic import ValidationError

    for margin in (-1.5, 1.5):
        with pytest.raises(ValidationError, match="min_margin_over_baseline"):
            GateSettings(min_margin_over_baseline=margin)


# --- the evaluate step --------------------------------------------------------------------------


def _evaluate(
    tmp_path: Path, model_dir: Path, splits: dict[str, Path], settings: GateSettings = OPEN_GATE
) -> EvaluationOutcome:
    out = tmp_path / "out"
    return evaluate_challenger(
        model_dir=model_dir,
        test_path=splits["test"],
        train_path=splits["train"],
        validation_path=splits["validation"],
        model_repository=tmp_path / "no-repository",
        model_name="textops-classifier",
        settings=settings,
        slice_column="",
        behaviour_tests=[],
        report_path=out / "report.html",
        summary_path=out / "summary.md",
        decision_path=out / "decision.json",
    )


def test_the_evaluation_fits_the_baseline_on_the_train_split_and_reports_it(
    tmp_path: Path, tiny_model_dir: Path, tiny_splits: dict[str, Path]
) -> None:
    outcome = _evaluate(tmp_path, tiny_model_dir, tiny_splits)

    baseline = outcome.baseline
    assert baseline is not None and baseline.scores is not None
    # The same rows: all of the train split, and the test texts the model was scored on.
    assert baseline.train_rows == len(pd.read_parquet(tiny_splits["train"]))
    assert baseline.scores.rows == outcome.scores.rows == len(pd.read_parquet(tiny_splits["test"]))
    assert baseline.scores.labels == outcome.labels
    scalars = outcome.scalars()
    assert scalars["baseline_accuracy"] == baseline.scores.accuracy
    assert scalars["baseline_macro_f1"] == baseline.scores.macro_f1

    decision = json.loads((tmp_path / "out" / "decision.json").read_text())
    assert decision["baseline"]["scores"]["macro_f1"] == pytest.approx(baseline.scores.macro_f1)
    assert decision["baseline"]["train_rows"] == baseline.train_rows
    assert decision["settings"]["min_margin_over_baseline"] == -1.0
    [check] = [c for c in decision["checks"] if c["name"] == "baseline"]
    assert "reported only" in check["reason"]

    report = (tmp_path / "out" / "report.html").read_text()
    assert f"The baseline is {BASELINE_NAME}" in report
    assert f"trained on {baseline.train_rows} rows of the same train split" in report
    assert "<th>baseline</th><th>over baseline</th>" in report
    assert f'<td class="n">{baseline.scores.macro_f1:.4f}</td>' in report
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| metric | new model | baseline |" in summary
    assert f"| macro_f1 | {outcome.scores.macro_f1:.4f} | {baseline.scores.macro_f1:.4f} |" in (
        summary
    )


def test_a_margin_holds_back_the_tiny_random_model(
    tmp_path: Path, tiny_model_dir: Path, tiny_splits: dict[str, Path]
) -> None:
    # The tiny model is random; a linear model trained on 120 sentences beats it.
    settings = _with_margin(0.0)

    outcome = _evaluate(tmp_path, tiny_model_dir, tiny_splits, settings)

    assert outcome.baseline is not None and outcome.baseline.scores is not None
    assert outcome.scores.macro_f1 < outcome.baseline.scores.macro_f1
    assert not outcome.deploy
    assert "min_margin_over_baseline" in outcome.reasons[0]
    decision = json.loads((tmp_path / "out" / "decision.json").read_text())
    assert decision["deploy"] is False
