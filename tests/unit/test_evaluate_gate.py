"""The gate's rules on numbers: floors, the champion margin, label sets, behaviour tests."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from textops.components.common.settings import GateSettings
from textops.components.evaluate.behaviour import BehaviourResult
from textops.components.evaluate.gate import ChampionResult, Check, ProductionResult, decide
from textops.components.evaluate.scoring import ModelScores, score_model

LABELS = ("negative", "positive")
SETTINGS = GateSettings(
    min_accuracy=0.7, min_macro_f1=0.6, max_regression=0.01, enforce_production_labels=True
)
NO_CHAMPION = ChampionResult("none")


def scores(macro_f1: float, accuracy: float = 0.9, labels: tuple[str, ...] = LABELS) -> ModelScores:
    """Real scores of a toy set, with the headline numbers set to what a test needs."""
    base = score_model([0, 1], np.array([[0.9, 0.1], [0.2, 0.8]]), labels)
    return dataclasses.replace(base, macro_f1=macro_f1, accuracy=accuracy)


def champion(macro_f1: float, version: int = 3) -> ChampionResult:
    return ChampionResult("scored", version, Path(f"/models/m/{version}"), LABELS, scores(macro_f1))


def behaviour(name: str, passed_cases: int, gate: bool) -> BehaviourResult:
    return BehaviourResult(name, "mft", gate, cases=4, passed_cases=passed_cases, min_pass_rate=1.0)


def test_a_model_above_both_floors_with_nothing_in_production_ships() -> None:
    decision = decide(SETTINGS, scores(0.912, accuracy=0.93), NO_CHAMPION)
    assert decision.deploy
    assert "macro-F1 0.912 >= floor 0.600" in decision.reasons
    assert "accuracy 0.930 >= floor 0.700" in decision.reasons
    assert "no model in production yet: compared to floors only" in decision.reasons


@pytest.mark.parametrize(
    ("macro_f1", "accuracy", "failing"),
    [
        (0.59, 0.9, "macro-F1 0.590 < floor 0.600"),
        (0.9, 0.69, "accuracy 0.690 < floor 0.700"),
    ],
)
def test_a_model_below_a_floor_does_not_ship(
    macro_f1: float, accuracy: float, failing: str
) -> None:
    decision = decide(SETTINGS, scores(macro_f1, accuracy), NO_CHAMPION)
    assert not decision.deploy
    assert decision.reasons[0] == failing  # what held it back comes first


def test_a_score_exactly_on_the_floor_passes() -> None:
    assert decide(SETTINGS, scores(0.6, accuracy=0.7), NO_CHAMPION).deploy


def test_within_the_margin_of_the_champion_ships() -> None:
    decision = decide(SETTINGS, scores(0.898), champion(0.905))
    assert decision.deploy
    assert "champion v3 macro-F1 0.905, regression +0.007 <= 0.010" in decision.reasons


def test_better_than_the_champion_ships() -> None:
    decision = decide(SETTINGS, scores(0.912), champion(0.905))
    assert decision.deploy
    assert "champion v3 macro-F1 0.905, regression -0.007 <= 0.010" in decision.reasons


def test_worse_than_the_champion_by_more_than_the_margin_does_not_ship() -> None:
    decision = decide(SETTINGS, scores(0.85), champion(0.905))
    assert not decision.deploy
    assert decision.reasons[0].startswith("champion v3 macro-F1 0.905, regression +0.055 > 0.010")
    assert "worse than the one serving" in decision.reasons[0]


def test_a_regression_exactly_at_the_margin_ships() -> None:
    settings = SETTINGS.model_copy(update=dict(max_regression=0.05))
    assert decide(settings, scores(0.85), champion(0.90)).deploy
    assert not decide(settings, scores(0.8499), champion(0.90)).deploy


def test_different_label_sets_refuse_when_enforced() -> None:
    other = ChampionResult("labels_differ", 2, Path("/models/m/2"), ("neg", "neu", "pos"))
    decision = decide(SETTINGS, scores(0.95), other)
    assert not decision.deploy
    reason = decision.reasons[0]
    assert "[neg, neu, pos]" in reason and "[negative, positive]" in reason
    assert "--no-enforce-production-labels" in reason


@pytest.mark.parametrize(
    ("production", "difference"),
    [
        (("negative", "neutral", "positive"), "the new model drops [neutral]"),
        (("positive",), "the new model adds [negative]"),
        (("negative", "mixed"), "the new model adds [positive] and drops [mixed]"),
    ],
)
def test_overlapping_label_sets_refuse_and_name_the_labels_that_differ(
    production: tuple[str, ...], difference: str
) -> None:
    other = ChampionResult("labels_differ", 2, Path("/models/m/2"), production)
    decision = decide(SETTINGS, scores(0.95), other)
    assert not decision.deploy
    assert decision.reasons[0] == (
        f"label sets differ: production v2 has [{', '.join(production)}], the new model has "
        f"[negative, positive]: {difference}; enforce_production_labels is on, so the new "
        "model does not ship (run with --no-enforce-production-labels to change the label set "
        "on purpose)"
    )


def test_a_served_champion_without_a_version_is_named_as_the_production_model() -> None:
    served = ChampionResult("labels_differ", None, Path("host/v2/models/m"), ("negative",))
    reason = decide(SETTINGS, scores(0.95), served).reasons[0]
    assert "production model has [negative], the new model has [negative, positive]" in reason
    assert "vNone" not in reason


def test_different_label_sets_compare_to_floors_only_when_not_enforced() -> None:
    settings = SETTINGS.model_copy(update=dict(enforce_production_labels=False))
    other = ChampionResult("labels_differ", 2, Path("/models/m/2"), ("neg", "neu", "pos"))
    decision = decide(settings, scores(0.95), other)
    assert decision.deploy
    assert (
        "label sets differ (production v2 has [neg, neu, pos], the new model has [negative, "
        "positive]: the new model adds [negative, positive] and drops [neg, neu, pos]) and "
        "enforce_production_labels is off: compared to floors only"
    ) in decision.reasons
    # The floors still hold.
    assert not decide(settings, scores(0.5), other).deploy


def test_an_unreadable_champion_refuses_with_the_path_and_the_error() -> None:
    broken = ChampionResult(
        "unreadable", 4, Path("/models/m/4"), error="ModelNotFoundError: model.onnx differs"
    )
    decision = decide(SETTINGS, scores(0.99), broken)
    assert not decision.deploy
    reason = decision.reasons[0]
    assert "/models/m/4" in reason and "model.onnx differs" in reason
    assert "current.json" in reason  # how to fix it


def test_a_failing_gating_behaviour_test_blocks_and_a_non_gating_one_is_reported() -> None:
    gating = decide(SETTINGS, scores(0.95), NO_CHAMPION, [behaviour("negation", 2, gate=True)])
    assert not gating.deploy
    assert "'negation'" in gating.reasons[0] and "FAILED" in gating.reasons[0]

    reported = decide(SETTINGS, scores(0.95), NO_CHAMPION, [behaviour("names", 2, gate=False)])
    assert reported.deploy
    assert any("'names'" in r and "not gating" in r for r in reported.reasons)


def test_passing_behaviour_tests_are_summed_up_in_one_reason() -> None:
    results = [behaviour("a", 4, gate=True), behaviour("b", 4, gate=False)]
    decision = decide(SETTINGS, scores(0.95), NO_CHAMPION, results)
    assert decision.deploy
    assert "behaviour tests: all 2 passed" in decision.reasons


def test_notes_are_reported_without_blocking() -> None:
    decision = decide(SETTINGS, scores(0.95), NO_CHAMPION, notes=["slice column 'x' is missing"])
    assert decision.deploy
    assert "slice column 'x' is missing" in decision.reasons


@pytest.mark.parametrize("field", ["min_accuracy", "min_macro_f1", "max_regression"])
def test_settings_out_of_range_are_refused_by_name(field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        GateSettings(**{**SETTINGS.model_dump(), field: 1.5})


def test_every_check_is_recorded_with_its_name_verdict_and_whether_it_blocks() -> None:
    # The decision file and the KFP UI list `checks` as they are: each field is read.
    results = [behaviour("negation", 2, gate=True), behaviour("names", 2, gate=False)]
    decision = decide(
        SETTINGS, scores(0.85, accuracy=0.8), champion(0.905), results, notes=["a note"]
    )
    assert decision.checks == (
        Check("accuracy floor", True, True, "accuracy 0.800 >= floor 0.700"),
        Check("macro-F1 floor", True, True, "macro-F1 0.850 >= floor 0.600"),
        Check(
            "champion",
            False,
            True,
            "champion v3 macro-F1 0.905, regression +0.055 > 0.010: the new model is worse "
            "than the one serving, which stays",
        ),
        Check("behaviour: negation", False, True, results[0].sentence()),
        Check("behaviour: names", False, False, results[1].sentence()),
        Check("note", False, False, "a note"),
    )
    assert not decision.deploy


def test_without_behaviour_tests_there_is_no_behaviour_check() -> None:
    decision = decide(SETTINGS, scores(0.912), champion(0.905))
    assert [c.name for c in decision.checks] == ["accuracy floor", "macro-F1 floor", "champion"]
    assert decision.checks[-1] == Check(
        "champion", True, True, "champion v3 macro-F1 0.905, regression -0.007 <= 0.010"
    )
    assert decision.deploy


def test_passing_behaviour_tests_are_one_passing_blocking_check() -> None:
    decision = decide(SETTINGS, scores(0.95), NO_CHAMPION, [behaviour("a", 4, gate=True)])
    assert decision.checks[-1] == Check("behaviour", True, True, "behaviour tests: all 1 passed")


@pytest.mark.parametrize(
    ("champion_result", "enforce", "expected"),
    [
        (
            NO_CHAMPION,
            True,
            Check("champion", True, True, "no model in production yet: compared to floors only"),
        ),
        (
            ChampionResult("unreadable", 4, Path("/models/m/4"), error="model.onnx differs"),
            True,
            Check(
                "champion",
                False,
                True,
                "the model in production (version 4, /models/m/4) could not be scored: "
                "model.onnx differs. Nothing ships without that comparison: restore it, or "
                "point current.json at a complete version, then run again",
            ),
        ),
        (
            ChampionResult("unreadable", None, Path("host/v2/models/m"), error="no answer"),
            True,
            Check(
                "champion",
                False,
                True,
                "the model in production (host/v2/models/m) could not be scored: no answer. "
                "Nothing ships without that comparison: restore it, or point current.json at a "
                "complete version, then run again",
            ),
        ),
        (
            ChampionResult("labels_differ", 2, Path("/models/m/2"), ("negative",)),
            True,
            Check(
                "champion",
                False,
                True,
                "label sets differ: production v2 has [negative], the new model has [negative, "
                "positive]: the new model adds [positive]; enforce_production_labels is on, so "
                "the new model does not ship (run with --no-enforce-production-labels to change "
                "the label set on purpose)",
            ),
        ),
        (
            ChampionResult("labels_differ", 2, Path("/models/m/2"), ("negative",)),
            False,
            Check(
                "champion",
                True,
                True,
                "label sets differ (production v2 has [negative], the new model has [negative, "
                "positive]: the new model adds [positive]) and enforce_production_labels is "
                "off: compared to floors only",
            ),
        ),
    ],
    ids=[
        "none",
        "unreadable",
        "unreadable-unversioned",
        "labels-differ-enforced",
        "labels-differ-not-enforced",
    ],
)
def test_the_champion_check_for_each_fate_of_the_champion(
    champion_result: ChampionResult, enforce: bool, expected: Check
) -> None:
    settings = SETTINGS.model_copy(update=dict(enforce_production_labels=enforce))
    decision = decide(settings, scores(0.95), champion_result)
    assert decision.checks[2] == expected
    assert decision.deploy is expected.passed


def test_a_score_within_the_tolerance_below_a_floor_passes() -> None:
    # Scores are means of counts: a floor equal to a score must not fail on float rounding.
    settings = SETTINGS.model_copy(update=dict(min_accuracy=1e-9, min_macro_f1=1e-9))
    decision = decide(settings, scores(0.0, accuracy=0.0), NO_CHAMPION)
    assert [c.passed for c in decision.checks[:2]] == [True, True]
    assert not decide(settings, scores(0.0, accuracy=-1e-9), NO_CHAMPION).checks[0].passed


def test_a_regression_within_the_tolerance_of_the_margin_passes() -> None:
    settings = SETTINGS.model_copy(update={"max_regression": 0.0})
    assert decide(settings, scores(0.0), champion(1e-9)).checks[2].passed
    assert not decide(settings, scores(0.0), champion(2e-9)).checks[2].passed


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_settings_on_the_bounds_are_accepted(value: float) -> None:
    settings = GateSettings(
        min_accuracy=value, min_macro_f1=value, max_regression=value, enforce_production_labels=True
    )
    assert (settings.min_accuracy, settings.min_macro_f1, settings.max_regression) == (
        value,
        value,
        value,
    )


def test_a_scored_champion_without_scores_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match=r"^a scored champion needs its scores$"):
        decide(SETTINGS, scores(0.95), ChampionResult("scored", 3, Path("/models/m/3")))


def test_the_decision_file_forms_of_a_champion_and_a_check() -> None:
    scored = champion(0.905)
    assert scored.scores is not None
    assert scored.to_dict() == {
        "status": "scored",
        "version": 3,
        "path": "/models/m/3",
        "labels": ["negative", "positive"],
        "scores": scored.scores.scalars(),
        "error": "",
    }
    assert ChampionResult("none").to_dict() == {
        "status": "none",
        "version": None,
        "path": None,
        "labels": [],
        "scores": None,
        "error": "",
    }
    check = Check("note", False, False, "a note")
    assert check.to_dict() == {"name": "note", "passed": False, "blocks": False, "reason": "a note"}


# --- production traffic -------------------------------------------------------------------


def on_production(accuracy: float, champion_accuracy: float | None) -> ProductionResult:
    """Both models' scores on a production test set; no champion when its accuracy is None."""
    old = (
        NO_CHAMPION
        if champion_accuracy is None
        else ChampionResult(
            "scored", 3, Path("/models/m/3"), LABELS, scores(0.9, champion_accuracy)
        )
    )
    return ProductionResult(scores(0.9, accuracy), old)


@pytest.mark.parametrize(
    ("new", "old", "ships"), [(0.80, 0.80, True), (0.81, 0.80, True), (0.79, 0.80, False)]
)
def test_the_challenger_must_not_be_worse_than_the_champion_on_production(
    new: float, old: float, ships: bool
) -> None:
    decision = decide(SETTINGS, scores(0.95), champion(0.9), production=on_production(new, old))
    assert decision.deploy is ships
    (check,) = [c for c in decision.checks if c.name == "production"]
    assert check.reason.startswith(f"on production traffic (2 rows): accuracy {new:.3f}")
    assert check.passed is ships


def test_max_production_regression_allows_that_much_worse() -> None:
    settings = SETTINGS.model_copy(update={"max_production_regression": 0.05})
    assert decide(
        settings, scores(0.95), champion(0.9), production=on_production(0.76, 0.80)
    ).deploy
    assert not decide(
        settings, scores(0.95), champion(0.9), production=on_production(0.74, 0.80)
    ).deploy


def test_production_scores_without_a_champion_are_reported_not_compared() -> None:
    decision = decide(SETTINGS, scores(0.95), NO_CHAMPION, production=on_production(0.1, None))
    assert decision.deploy
    assert (
        "on production traffic (2 rows): accuracy 0.100; no model in production scored there: "
        "reported, not compared"
    ) in decision.reasons


def test_a_challenger_worse_on_the_base_split_does_not_ship_however_good_on_production() -> None:
    decision = decide(SETTINGS, scores(0.85), champion(0.905), production=on_production(1.0, 0.5))
    assert not decision.deploy
    assert decision.reasons[0].startswith("champion v3 macro-F1 0.905")
