"""The evaluation gate end to end: real PyTorch challengers, real ONNX champions published to a
real local model repository. Each gate is shown both ways, and a rejected model leaves the
repository byte for byte as it was."""

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from textops.components.common.bundle import LABELS_FILE, METADATA_FILE, write_metadata
from textops.components.common.errors import ConfigError, DataError, ModelNotFoundError
from textops.components.common.labels import LabelMap
from textops.components.common.onnx_classifier import OnnxClassifier
from textops.components.common.settings import GateSettings
from textops.components.deploy.publish import publish_bundle
from textops.components.evaluate.champion import score_champion
from textops.components.evaluate.evaluation import EvaluationOutcome, evaluate_challenger

MODEL_NAME = "textops-classifier"
OPEN_GATE = GateSettings(
    min_accuracy=0.0, min_macro_f1=0.0, max_regression=0.01, enforce_production_labels=True
)


def save_with_flipped_head(source: Path, target: Path) -> Path:
    """A copy of a binary model whose classifier head is negated: every prediction flips."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(source)
    with torch.no_grad():
        model.classifier.weight.neg_()
        model.classifier.bias.neg_()
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    shutil.copy(source / LABELS_FILE, target / LABELS_FILE)
    return target


def relabel_bundle(source: Path, target: Path, labels: LabelMap) -> Path:
    """A copy of a bundle with other label names, its hashes recorded afresh (a valid bundle)."""
    shutil.copytree(source, target)
    labels.save(target / LABELS_FILE)
    metadata = json.loads((target / METADATA_FILE).read_text())
    fields = {k: v for k, v in metadata.items() if k not in {"files", "textops_version"}}
    (target / METADATA_FILE).unlink()
    write_metadata(target, fields)
    return target


@pytest.fixture(scope="module")
def flipped_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_with_flipped_head(tiny_model_dir, tmp_path_factory.mktemp("flipped-model"))


@pytest.fixture(scope="module")
def champion_says(tiny_bundle_dir: Path, tiny_splits: dict[str, Path]) -> pd.DataFrame:
    """The tiny test split with the tiny champion's own predictions beside the true labels."""
    frame = pd.read_parquet(tiny_splits["test"])
    frame["champion"] = OnnxClassifier.from_bundle(tiny_bundle_dir).predict(frame["text"].tolist())
    # Both classes must occur, or "agrees with the champion" would be a one-class test set.
    assert frame["champion"].nunique() == 2
    return frame


@pytest.fixture(scope="module")
def champion_right_path(
    champion_says: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A test split labelled as the champion predicts: the champion scores macro-F1 1.0."""
    path = tmp_path_factory.mktemp("champion-right") / "test.parquet"
    champion_says.assign(label=champion_says["champion"])[["text", "label"]].to_parquet(path)
    return path


@pytest.fixture(scope="module")
def champion_wrong_path(
    champion_says: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A test split labelled against every champion prediction: the champion scores 0."""
    path = tmp_path_factory.mktemp("champion-wrong") / "test.parquet"
    opposite = champion_says["champion"].map({"negative": "positive", "positive": "negative"})
    champion_says.assign(label=opposite)[["text", "label"]].to_parquet(path)
    return path


#: The train split the challengers learned from, set for every test by `_train_split`.
TRAIN_SPLIT: dict[str, Path] = {}


@pytest.fixture(autouse=True)
def _train_split(tiny_splits: dict[str, Path]) -> None:
    """Every evaluation fits its baseline on the tiny train split unless a test gives another,
    and its calibration on the tiny validation split."""
    TRAIN_SPLIT["train"] = tiny_splits["train"]
    TRAIN_SPLIT["validation"] = tiny_splits["validation"]


@pytest.fixture
def repository(tmp_path: Path, tiny_bundle_dir: Path) -> Path:
    """A model repository whose version 1, the tiny bundle, is in production."""
    root = tmp_path / "models"
    publish_bundle(tiny_bundle_dir, root, MODEL_NAME)
    return root


def evaluate(
    tmp_path: Path,
    *,
    model_dir: Path,
    test_path: Path,
    repository: Path,
    settings: GateSettings = OPEN_GATE,
    slice_column: str = "",
    behaviour_tests: list[dict[str, Any]] | None = None,
    production_test_path: Path | None = None,
    train_path: Path | None = None,
) -> EvaluationOutcome:
    out = tmp_path / "out"
    return evaluate_challenger(
        model_dir=model_dir,
        test_path=test_path,
        train_path=train_path or TRAIN_SPLIT["train"],
        validation_path=TRAIN_SPLIT["validation"],
        model_repository=repository,
        model_name=MODEL_NAME,
        settings=settings,
        slice_column=slice_column,
        behaviour_tests=behaviour_tests or [],
        report_path=out / "report.html",
        summary_path=out / "summary.md",
        decision_path=out / "decision.json",
        production_test_path=production_test_path,
    )


def read_decision(tmp_path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((tmp_path / "out" / "decision.json").read_text())
    return document


# --- floors, with nothing in production ---------------------------------------------------


def test_first_model_above_the_floors_ships_and_every_output_is_written(
    tmp_path: Path, tiny_model_dir: Path, tiny_splits: dict[str, Path]
) -> None:
    outcome = evaluate(
        tmp_path,
        model_dir=tiny_model_dir,
        test_path=tiny_splits["test"],
        repository=tmp_path / "none",
    )
    assert outcome.deploy
    assert "no model in production yet: compared to floors only" in outcome.reasons
    assert outcome.labels == ("negative", "positive")
    assert sum(map(sum, outcome.confusion_matrix)) == 40
    scalars = outcome.scalars()
    assert scalars["test_rows"] == 40.0
    assert {"accuracy", "macro_f1", "weighted_precision", "weighted_recall", "ece"} <= set(scalars)
    assert "champion_macro_f1" not in scalars
    decision = read_decision(tmp_path)
    assert decision["deploy"] is True and decision["reasons"] == outcome.reasons
    assert decision["champion"]["status"] == "none"
    assert decision["challenger"]["scores"]["macro_f1"] == pytest.approx(outcome.scores.macro_f1)
    assert "Ships" in (tmp_path / "out" / "report.html").read_text()
    assert "ships" in (tmp_path / "out" / "summary.md").read_text()
    assert not (tmp_path / "none").exists()  # reading the repository creates nothing


def test_calibration_is_fitted_on_validation_reported_on_test_and_keeps_accuracy(
    tmp_path: Path, tiny_model_dir: Path, tiny_splits: dict[str, Path]
) -> None:
    from textops.components.evaluate.calibration import (
        MAX_TEMPERATURE,
        MIN_TEMPERATURE,
        negative_log_likelihood,
    )
    from textops.components.evaluate.classifiers import TorchClassifier
    from textops.components.evaluate.scoring import expected_calibration_error

    outcome = evaluate(
        tmp_path, model_dir=tiny_model_dir, test_path=tiny_splits["test"], repository=tmp_path
    )
    calibration = outcome.calibration
    assert calibration is not None
    assert MIN_TEMPERATURE <= calibration.temperature <= MAX_TEMPERATURE
    assert calibration.validation_rows == len(pd.read_parquet(tiny_splits["validation"]))

    model = TorchClassifier.from_model_dir(tiny_model_dir)
    validation = pd.read_parquet(tiny_splits["validation"])
    validation_logits = model.logits(validation["text"].tolist())
    validation_true = [model.labels.index(v) for v in validation["label"]]
    # The fitted T is at least as likely on the validation split as no scaling at all.
    assert (
        negative_log_likelihood(validation_logits, validation_true, calibration.temperature)
        <= negative_log_likelihood(validation_logits, validation_true) + 1e-9
    )
    test = pd.read_parquet(tiny_splits["test"])
    test_true = [model.labels.index(v) for v in test["label"]]
    model.temperature = calibration.temperature
    calibrated = model.predict_proba(test["text"].tolist())
    assert calibration.ece_before == pytest.approx(outcome.scores.ece)
    assert calibration.ece_after == pytest.approx(
        expected_calibration_error(test_true, calibrated), abs=1e-6
    )
    # Accuracy is that of the raw model: dividing the logits never moves the argmax.
    assert float(np.mean(calibrated.argmax(axis=1) == test_true)) == outcome.scores.accuracy

    scalars = outcome.scalars()
    assert scalars["temperature"] == calibration.temperature
    assert scalars["ece"] == calibration.ece_before
    assert scalars["ece_calibrated"] == calibration.ece_after
    assert scalars["nll_calibrated"] == calibration.nll_after
    recorded = read_decision(tmp_path)["calibration"]
    assert recorded["temperature"] == calibration.temperature
    assert recorded["fitted_on"] == "validation"
    assert recorded["ece_before"] == calibration.ece_before
    report = (tmp_path / "out" / "report.html").read_text()
    assert report.count('aria-label="reliability diagram"') == 2
    assert "Reliability before calibration" in report and "Reliability after" in report
    # The Scores table's ece is the raw model's; the note says what it serves with.
    assert f"gives ece {calibration.ece_after:.4f}" in report
    assert (
        f"temperature {calibration.temperature:.3f}"
        in (tmp_path / "out" / "summary.md").read_text()
    )


def test_a_validation_split_with_a_label_the_model_lacks_is_refused(
    tmp_path: Path, tiny_model_dir: Path, tiny_splits: dict[str, Path]
) -> None:
    validation = pd.read_parquet(tiny_splits["validation"])
    validation.loc[0, "label"] = "neutral"
    odd = tmp_path / "validation.parquet"
    validation.to_parquet(odd)
    TRAIN_SPLIT["validation"] = odd
    with pytest.raises(DataError, match=r"the validation split .* does not fit the model"):
        evaluate(
            tmp_path, model_dir=tiny_model_dir, test_path=tiny_splits["test"], repository=tmp_path
        )


def test_binary_task_gets_a_roc_curve_with_finite_thresholds(
    tmp_path: Path, tiny_model_dir: Path, tiny_splits: dict[str, Path]
) -> None:
    outcome = evaluate(
        tmp_path, model_dir=tiny_model_dir, test_path=tiny_splits["test"], repository=tmp_path
    )
    assert outcome.roc is not None
    assert outcome.roc.thresholds[0] == 1.0
    assert all(np.isfinite(outcome.roc.thresholds))
    assert outcome.scalars()["roc_auc"] == pytest.approx(outcome.roc.auc)


def test_a_model_below_the_macro_f1_floor_does_not_ship(
    tmp_path: Path, tiny_model_dir: Path, tiny_splits: dict[str, Path]
) -> None:
    settings = GateSettings(
        min_accuracy=0.0, min_macro_f1=0.99, max_regression=0.01, enforce_production_labels=True
    )
    outcome = evaluate(
        tmp_path,
        model_dir=tiny_model_dir,
        test_path=tiny_splits["test"],
        repository=tmp_path,
        settings=settings,
    )
    assert not outcome.deploy
    assert outcome.reasons[0] == f"macro-F1 {outcome.scores.macro_f1:.3f} < floor 0.990"
    assert read_decision(tmp_path)["decision"] == "hold"


def test_a_model_below_the_accuracy_floor_does_not_ship(
    tmp_path: Path, tiny_model_dir: Path, tiny_splits: dict[str, Path]
) -> None:
    outcome = evaluate(
        tmp_path,
        model_dir=tiny_model_dir,
        test_path=tiny_splits["test"],
        repository=tmp_path,
        settings=GateSettings(
            min_accuracy=0.99, min_macro_f1=0.0, max_regression=0.01, enforce_production_labels=True
        ),
    )
    assert not outcome.deploy
    assert outcome.reasons[0].startswith("accuracy ") and "< floor 0.990" in outcome.reasons[0]


# --- champion and challenger ----------------------------------------------------------------


def test_a_challenger_as_good_as_the_champion_ships(
    tmp_path: Path,
    tiny_model_dir: Path,
    champion_right_path: Path,
    repository: Path,
    tree_digest: Callable[[Path], str],
) -> None:
    before = tree_digest(repository)
    outcome = evaluate(
        tmp_path, model_dir=tiny_model_dir, test_path=champion_right_path, repository=repository
    )
    assert outcome.deploy, outcome.reasons
    assert outcome.champion.status == "scored" and outcome.champion.version == 1
    # The same weights through PyTorch and through ONNX Runtime: the same answers.
    assert outcome.scalars()["champion_macro_f1"] == 1.0
    assert outcome.scores.macro_f1 == 1.0
    assert "champion v1 macro-F1 1.000, regression +0.000 <= 0.010" in outcome.reasons
    assert read_decision(tmp_path)["champion"]["scores"]["macro_f1"] == 1.0
    assert tree_digest(repository) == before


def test_a_challenger_worse_than_the_champion_does_not_ship_and_production_stays(
    tmp_path: Path,
    flipped_model_dir: Path,
    champion_right_path: Path,
    repository: Path,
    tree_digest: Callable[[Path], str],
) -> None:
    before = tree_digest(repository)
    current = (repository / MODEL_NAME / "current.json").read_bytes()
    outcome = evaluate(
        tmp_path, model_dir=flipped_model_dir, test_path=champion_right_path, repository=repository
    )
    assert not outcome.deploy
    assert outcome.scores.macro_f1 == 0.0
    assert outcome.reasons[0].startswith("champion v1 macro-F1 1.000, regression +1.000 > 0.010")
    assert tree_digest(repository) == before
    assert (repository / MODEL_NAME / "current.json").read_bytes() == current


def test_the_margin_decides_how_much_worse_may_ship(
    tmp_path: Path, flipped_model_dir: Path, champion_right_path: Path, repository: Path
) -> None:
    lenient = GateSettings(
        min_accuracy=0.0, min_macro_f1=0.0, max_regression=1.0, enforce_production_labels=True
    )
    outcome = evaluate(
        tmp_path,
        model_dir=flipped_model_dir,
        test_path=champion_right_path,
        repository=repository,
        settings=lenient,
    )
    assert outcome.deploy
    assert "regression +1.000 <= 1.000" in "; ".join(outcome.reasons)


def test_a_challenger_better_than_the_champion_ships(
    tmp_path: Path, flipped_model_dir: Path, champion_wrong_path: Path, repository: Path
) -> None:
    outcome = evaluate(
        tmp_path, model_dir=flipped_model_dir, test_path=champion_wrong_path, repository=repository
    )
    assert outcome.deploy, outcome.reasons
    assert outcome.scores.macro_f1 == 1.0
    assert outcome.scalars()["champion_macro_f1"] == 0.0
    assert "champion v1 macro-F1 0.000, regression -1.000 <= 0.010" in outcome.reasons


# --- production traffic -----------------------------------------------------------------------


def test_a_challenger_better_on_the_test_split_but_worse_on_production_does_not_ship(
    tmp_path: Path,
    flipped_model_dir: Path,
    champion_wrong_path: Path,
    champion_right_path: Path,
    repository: Path,
) -> None:
    outcome = evaluate(
        tmp_path,
        model_dir=flipped_model_dir,
        test_path=champion_wrong_path,
        repository=repository,
        production_test_path=champion_right_path,
    )
    assert not outcome.deploy
    assert outcome.reasons[0].endswith(
        "champion v1 1.000, regression +1.000 > 0.000: the new model is worse on production "
        "traffic than the one serving, which stays"
    )
    scalars = outcome.scalars()
    assert (scalars["production_accuracy"], scalars["champion_production_accuracy"]) == (0.0, 1.0)
    assert scalars["macro_f1"] == 1.0  # the base split alone would have shipped it
    assert "<h2>On production traffic</h2>" in (tmp_path / "out" / "report.html").read_text()
    assert read_decision(tmp_path)["production"]["champion"]["scores"]["accuracy"] == 1.0


def test_production_scores_without_a_champion_are_reported_not_compared(
    tmp_path: Path, tiny_model_dir: Path, tiny_splits: dict[str, Path]
) -> None:
    outcome = evaluate(
        tmp_path,
        model_dir=tiny_model_dir,
        test_path=tiny_splits["test"],
        repository=tmp_path / "no-models",
        production_test_path=tiny_splits["test"],
    )
    assert outcome.deploy, outcome.reasons
    scalars = outcome.scalars()
    assert scalars["production_accuracy"] == scalars["accuracy"]
    assert "champion_production_accuracy" not in scalars
    assert any(
        r.endswith("no model in production scored there: reported, not compared")
        for r in outcome.reasons
    )
    assert "On production traffic (" in (tmp_path / "out" / "summary.md").read_text()


def test_no_production_rows_leave_the_gate_to_the_test_split(
    tmp_path: Path, tiny_model_dir: Path, tiny_splits: dict[str, Path], repository: Path
) -> None:
    empty = tmp_path / "production_test.parquet"
    pd.DataFrame({"text": pd.Series(dtype=str), "label": pd.Series(dtype=str)}).to_parquet(empty)
    outcome = evaluate(
        tmp_path,
        model_dir=tiny_model_dir,
        test_path=tiny_splits["test"],
        repository=repository,
        production_test_path=empty,
    )
    assert outcome.production is None
    assert not any(name.startswith("production_") for name in outcome.scalars())
    assert "No production test rows" in (tmp_path / "out" / "report.html").read_text()


def test_a_production_label_the_model_does_not_know_is_a_data_error(
    tmp_path: Path, tiny_model_dir: Path, tiny_splits: dict[str, Path]
) -> None:
    odd = tmp_path / "production_test.parquet"
    pd.DataFrame({"text": ["so-so"], "label": ["neutral"]}).to_parquet(odd)
    with pytest.raises(DataError, match=r"production test set .* does not fit the new model"):
        evaluate(
            tmp_path,
            model_dir=tiny_model_dir,
            test_path=tiny_splits["test"],
            repository=tmp_path / "no-models",
            production_test_path=odd,
        )


# --- label sets -----------------------------------------------------------------------------


#: Label sets of a model in production other than the challenger's (negative, positive), with
#: how the challenger differs: nothing in common, or one class swapped for another.
OTHER_LABELS = {
    "disjoint": (("bad", "good"), "adds [negative, positive] and drops [bad, good]"),
    "overlapping": (("mixed", "positive"), "adds [negative] and drops [mixed]"),
}


@pytest.fixture(params=sorted(OTHER_LABELS))
def other_labels(request: pytest.FixtureRequest) -> tuple[tuple[str, ...], str]:
    """The production labels and the difference the gate names, for each kind of change."""
    labels: tuple[tuple[str, ...], str] = OTHER_LABELS[request.param]
    return labels


@pytest.fixture
def other_labels_repository(
    tmp_path: Path, tiny_bundle_dir: Path, other_labels: tuple[tuple[str, ...], str]
) -> Path:
    """A repository whose model in production predicts `other_labels`."""
    names = LabelMap(other_labels[0])
    bundle = relabel_bundle(tiny_bundle_dir, tmp_path / "relabelled", names)
    root = tmp_path / "models"
    publish_bundle(bundle, root, MODEL_NAME)
    return root


def test_different_label_sets_refuse_with_both_sets_the_difference_and_the_flag(
    tmp_path: Path,
    tiny_model_dir: Path,
    tiny_splits: dict[str, Path],
    other_labels_repository: Path,
    other_labels: tuple[tuple[str, ...], str],
    tree_digest: Callable[[Path], str],
) -> None:
    before = tree_digest(other_labels_repository)
    outcome = evaluate(
        tmp_path,
        model_dir=tiny_model_dir,
        test_path=tiny_splits["test"],
        repository=other_labels_repository,
    )
    assert not outcome.deploy
    assert outcome.champion.status == "labels_differ"
    assert outcome.champion.labels == other_labels[0]
    reason = outcome.reasons[0]
    production, difference = other_labels
    assert f"production v1 has [{', '.join(production)}]" in reason
    assert "the new model has [negative, positive]" in reason
    assert f"the new model {difference}" in reason
    assert "--no-enforce-production-labels" in reason
    assert read_decision(tmp_path)["deploy"] is False
    assert tree_digest(other_labels_repository) == before


@pytest.mark.parametrize(
    ("challenger_labels", "status"),
    [
        (("negative", "neutral", "positive"), "labels_differ"),  # the challenger adds a class
        (("negative",), "labels_differ"),  # the challenger drops one
        (("positive", "negative"), "scored"),  # the same set in another order
    ],
)
def test_a_local_champion_is_compared_by_its_whole_label_set(
    repository: Path,
    tiny_splits: dict[str, Path],
    challenger_labels: tuple[str, ...],
    status: str,
) -> None:
    frame = pd.read_parquet(tiny_splits["test"])
    texts, truth = frame["text"].tolist(), frame["label"].tolist()

    result = score_champion(repository, MODEL_NAME, texts, truth, challenger_labels)

    assert result.status == status, result.error
    assert result.labels == ("negative", "positive")
    assert (result.scores is not None) == (status == "scored")


def test_different_label_sets_compare_to_floors_only_when_not_enforced(
    tmp_path: Path,
    tiny_model_dir: Path,
    tiny_splits: dict[str, Path],
    other_labels_repository: Path,
    other_labels: tuple[tuple[str, ...], str],
) -> None:
    settings = GateSettings(
        min_accuracy=0.0, min_macro_f1=0.0, max_regression=0.01, enforce_production_labels=False
    )
    outcome = evaluate(
        tmp_path,
        model_dir=tiny_model_dir,
        test_path=tiny_splits["test"],
        repository=other_labels_repository,
        settings=settings,
    )
    assert outcome.deploy
    production = ", ".join(other_labels[0])
    assert any("compared to floors only" in r and f"[{production}]" in r for r in outcome.reasons)
    assert "champion_macro_f1" not in outcome.scalars()


# --- a champion that cannot be read ---------------------------------------------------------


def _alter_model(version: Path) -> None:
    with (version / "model.onnx").open("ab") as f:
        f.write(b"\0")


def _drop_tokenizer(version: Path) -> None:
    (version / "tokenizer.json").unlink()


def _garbage_graph_with_matching_hashes(version: Path) -> None:
    # A bundle whose files match their hashes but whose graph ONNX Runtime cannot parse.
    (version / "model.onnx").write_bytes(b"this is not an ONNX graph")
    metadata = json.loads((version / METADATA_FILE).read_text())
    fields = {k: v for k, v in metadata.items() if k not in {"files", "textops_version"}}
    (version / METADATA_FILE).unlink()
    write_metadata(version, fields)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_alter_model, "model.onnx differ"),
        (_drop_tokenizer, "missing tokenizer.json"),
        (_garbage_graph_with_matching_hashes, "model.onnx"),
    ],
)
def test_an_unreadable_champion_refuses_with_the_path_and_the_error(
    tmp_path: Path,
    tiny_model_dir: Path,
    tiny_splits: dict[str, Path],
    repository: Path,
    damage: Any,
    expected: str,
    tree_digest: Callable[[Path], str],
) -> None:
    version = repository / MODEL_NAME / "1"
    damage(version)
    before = tree_digest(repository)
    outcome = evaluate(
        tmp_path, model_dir=tiny_model_dir, test_path=tiny_splits["test"], repository=repository
    )
    assert not outcome.deploy
    assert outcome.champion.status == "unreadable"
    reason = outcome.reasons[0]
    assert str(version) in reason and expected in reason, reason
    assert "restore" in reason
    assert read_decision(tmp_path)["champion"]["error"]
    assert tree_digest(repository) == before


def test_an_unreadable_current_pointer_refuses(
    tmp_path: Path, tiny_model_dir: Path, tiny_splits: dict[str, Path], repository: Path
) -> None:
    (repository / MODEL_NAME / "current.json").write_text("{not json")
    outcome = evaluate(
        tmp_path, model_dir=tiny_model_dir, test_path=tiny_splits["test"], repository=repository
    )
    assert not outcome.deploy
    assert "current.json" in outcome.reasons[0]


# --- slices, mistakes, behaviour tests ------------------------------------------------------


def test_slice_metrics_name_the_worst_slice(
    tmp_path: Path, tiny_model_dir: Path, tiny_splits: dict[str, Path]
) -> None:
    frame = pd.read_parquet(tiny_splits["test"])
    frame["channel"] = ["email"] * 20 + ["chat"] * 17 + ["fax"] * 3
    path = tmp_path / "sliced.parquet"
    frame.to_parquet(path)
    outcome = evaluate(
        tmp_path,
        model_dir=tiny_model_dir,
        test_path=path,
        repository=tmp_path,
        slice_column="channel",
    )
    assert outcome.slices is not None
    assert {s.value: s.rows for s in outcome.slices.slices} == {"email": 20, "chat": 17, "fax": 3}
    assert outcome.slices.worst is not None and outcome.slices.worst.value in {"email", "chat"}
    assert outcome.scalars()["worst_slice_macro_f1"] == min(
        s.macro_f1 for s in outcome.slices.slices if s.rows >= 5
    )
    assert "Slices by channel" in (tmp_path / "out" / "report.html").read_text()


def test_a_missing_slice_column_is_reported_not_ignored(
    tmp_path: Path, tiny_model_dir: Path, tiny_splits: dict[str, Path]
) -> None:
    outcome = evaluate(
        tmp_path,
        model_dir=tiny_model_dir,
        test_path=tiny_splits["test"],
        repository=tmp_path,
        slice_column="region",
    )
    assert outcome.deploy  # slice metrics do not gate
    assert outcome.slices is None
    assert any("'region'" in r and "not in the test split" in r for r in outcome.reasons)


def test_confident_mistakes_carry_text_and_both_labels(
    tmp_path: Path, flipped_model_dir: Path, champion_right_path: Path
) -> None:
    outcome = evaluate(
        tmp_path, model_dir=flipped_model_dir, test_path=champion_right_path, repository=tmp_path
    )
    texts = set(pd.read_parquet(champion_right_path)["text"])
    assert len(outcome.mistakes) == 10  # every row is wrong; the report keeps ten
    confidences = [m.confidence for m in outcome.mistakes]
    assert confidences == sorted(confidences, reverse=True)
    assert all(m.text in texts and m.true_label != m.predicted_label for m in outcome.mistakes)


def mft_cases(frame: pd.DataFrame, column: str) -> list[dict[str, str]]:
    return [
        {"text": t, "label": label} for t, label in zip(frame["text"], frame[column], strict=True)
    ][:6]


def test_a_failing_gating_behaviour_test_blocks_and_a_non_gating_one_does_not(
    tmp_path: Path, tiny_model_dir: Path, tiny_splits: dict[str, Path], champion_says: pd.DataFrame
) -> None:
    opposite = champion_says.assign(
        wrong=champion_says["champion"].map({"negative": "positive", "positive": "negative"})
    )
    passing = {
        "name": "knows its own mind",
        "kind": "mft",
        "cases": mft_cases(opposite, "champion"),
    }
    failing = {"name": "contrarian", "kind": "mft", "cases": mft_cases(opposite, "wrong")}

    blocked = evaluate(
        tmp_path,
        model_dir=tiny_model_dir,
        test_path=tiny_splits["test"],
        repository=tmp_path,
        behaviour_tests=[passing, failing],
    )
    assert not blocked.deploy
    assert "'contrarian'" in blocked.reasons[0] and "0/6" in blocked.reasons[0]
    assert [r.passed for r in blocked.behaviour] == [True, False]
    assert blocked.scalars()["behaviour_knows_its_own_mind_pass_rate"] == 1.0
    assert blocked.scalars()["behaviour_contrarian_pass_rate"] == 0.0
    assert read_decision(tmp_path)["behaviour_tests"][1]["passed"] is False

    reported = evaluate(
        tmp_path,
        model_dir=tiny_model_dir,
        test_path=tiny_splits["test"],
        repository=tmp_path,
        behaviour_tests=[passing, {**failing, "gate": False}],
    )
    assert reported.deploy
    assert any("'contrarian'" in r and "not gating" in r for r in reported.reasons)


def test_an_invalid_behaviour_test_is_a_config_error_naming_it(
    tmp_path: Path, tiny_model_dir: Path, tiny_splits: dict[str, Path]
) -> None:
    with pytest.raises(ConfigError, match="'sarcasm'"):
        evaluate(
            tmp_path,
            model_dir=tiny_model_dir,
            test_path=tiny_splits["test"],
            repository=tmp_path,
            behaviour_tests=[{"name": "sarcasm", "kind": "irony", "cases": []}],
        )
    with pytest.raises(ConfigError, match=r"'typo'.*'postive'"):
        evaluate(
            tmp_path,
            model_dir=tiny_model_dir,
            test_path=tiny_splits["test"],
            repository=tmp_path,
            behaviour_tests=[
                {"name": "typo", "kind": "mft", "cases": [{"text": "ok", "label": "postive"}]}
            ],
        )


# --- bad input ------------------------------------------------------------------------------


def test_an_empty_test_split_is_a_data_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    empty = tmp_path / "empty.parquet"
    pd.DataFrame({"text": pd.Series([], dtype=str), "label": pd.Series([], dtype=str)}).to_parquet(
        empty
    )
    with pytest.raises(DataError, match="no rows"):
        evaluate(tmp_path, model_dir=tiny_model_dir, test_path=empty, repository=tmp_path)
    assert not (tmp_path / "out" / "decision.json").exists()


def test_a_test_split_without_labels_is_a_data_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = tmp_path / "unlabelled.parquet"
    pd.DataFrame({"text": ["a", "b"]}).to_parquet(path)
    with pytest.raises(DataError, match="label"):
        evaluate(tmp_path, model_dir=tiny_model_dir, test_path=path, repository=tmp_path)


def test_a_test_label_the_model_does_not_know_is_a_data_error(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    path = tmp_path / "other-labels.parquet"
    pd.DataFrame({"text": ["fine", "bad"], "label": ["positive", "neutral"]}).to_parquet(path)
    with pytest.raises(DataError, match=r"does not fit the model.*'neutral'"):
        evaluate(tmp_path, model_dir=tiny_model_dir, test_path=path, repository=tmp_path)


def test_a_challenger_directory_without_a_model_is_a_clear_error(
    tmp_path: Path, tiny_splits: dict[str, Path]
) -> None:
    with pytest.raises(ModelNotFoundError, match=r"labels\.json is missing"):
        evaluate(tmp_path, model_dir=tmp_path, test_path=tiny_splits["test"], repository=tmp_path)
