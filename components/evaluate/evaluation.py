"""The evaluation gate: score the new model and the one in production, decide what ships.

`evaluate_challenger` is what the KFP component calls. It fits the train step's model (the
challenger) a calibration temperature on the validation split (`calibration.py`), scores it on
the held-out test split with and without it, runs the behavioural tests on it, scores the published
bundle (the champion) on the very same texts, fits a linear baseline on the challenger's own
train split and scores it on those texts too (`baseline.py`), scores both models again on the
production test set (the feedback snapshots' held-out rows) when it has rows, applies the
gate's rules (`gate.decide`), and writes the HTML report, the Markdown summary and the
decision as JSON. It only reads the model
repository: whatever it decides, the model in production stays as it is.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from textops.components.common.errors import DataError
from textops.components.common.labels import LabelMap
from textops.components.common.onnx_classifier import softmax
from textops.components.common.settings import BehaviourTest, GateSettings
from textops.components.evaluate.baseline import BaselineResult, train_and_score_baseline
from textops.components.evaluate.behaviour import (
    BehaviourResult,
    check_test_labels,
    parse_behaviour_tests,
    run_behaviour_tests,
)
from textops.components.evaluate.calibration import Calibration, calibrate
from textops.components.evaluate.champion import score_champion
from textops.components.evaluate.classifiers import TorchClassifier
from textops.components.evaluate.gate import ChampionResult, Decision, ProductionResult, decide
from textops.components.evaluate.report import render_html, render_markdown, write_text
from textops.components.evaluate.scoring import (
    Mistake,
    ModelScores,
    RocCurve,
    SliceReport,
    confident_mistakes,
    roc_curve_points,
    score_model,
    slice_scores,
)

logger = logging.getLogger(__name__)

__all__ = ["EvaluationOutcome", "evaluate_challenger", "read_test_split"]


@dataclass(frozen=True)
class EvaluationOutcome:
    """Everything the evaluation found, and the decision."""

    model_name: str
    scores: ModelScores
    roc: RocCurve | None
    slices: SliceReport | None
    mistakes: tuple[Mistake, ...]
    behaviour: tuple[BehaviourResult, ...]
    champion: ChampionResult
    decision: Decision
    settings: GateSettings
    production: ProductionResult | None = None
    baseline: BaselineResult | None = None
    calibration: Calibration | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        """The challenger's classes, in output order."""
        return self.scores.labels

    @property
    def confusion_matrix(self) -> list[list[int]]:
        """Row = true class, column = predicted class, on the test split."""
        return self.scores.confusion_matrix

    @property
    def deploy(self) -> bool:
        """Whether the challenger passed the gate."""
        return self.decision.deploy

    @property
    def reasons(self) -> list[str]:
        """Sentences that explain the decision, those that held the model back first."""
        return self.decision.reasons

    def scalars(self) -> dict[str, float]:
        """The numbers logged to the KFP Metrics artifact (and recorded in the bundle)."""
        values = self.scores.scalars()
        if self.roc is not None:
            values["roc_auc"] = self.roc.auc
        if self.slices is not None and self.slices.worst is not None:
            values["worst_slice_macro_f1"] = self.slices.worst.macro_f1
            values["worst_slice_accuracy"] = self.slices.worst.accuracy
        if self.champion.scores is not None:
            values["champion_macro_f1"] = self.champion.scores.macro_f1
            values["champion_accuracy"] = self.champion.scores.accuracy
            values["macro_f1_change"] = self.scores.macro_f1 - self.champion.scores.macro_f1
        if self.production is not None:
            values.update(production_scalars(self.production))
        if self.calibration is not None:
            values.update(self.calibration.scalars())
        if self.baseline is not None and self.baseline.scores is not None:
            values["baseline_accuracy"] = self.baseline.scores.accuracy
            values["baseline_macro_f1"] = self.baseline.scores.macro_f1
        if self.behaviour:
            passed = sum(r.passed for r in self.behaviour)
            values["behaviour_tests_passed_share"] = passed / len(self.behaviour)
            for result in self.behaviour:
                values[f"behaviour_{_metric_name(result.name)}_pass_rate"] = result.pass_rate
        return values

    def to_dict(self) -> dict[str, Any]:
        """The decision file's content: the decision, its checks, both models' scores."""
        return {
            "model_name": self.model_name,
            "decision": "deploy" if self.deploy else "hold",
            "deploy": self.deploy,
            "reasons": self.reasons,
            "checks": [c.to_dict() for c in self.decision.checks],
            "settings": self.settings.model_dump(),
            "challenger": {
                "scores": self.scores.scalars(),
                "per_class": [asdict(c) for c in self.scores.per_class],
                "confusion_matrix": self.scores.confusion_matrix,
                "labels": list(self.labels),
                "roc_auc": self.roc.auc if self.roc is not None else None,
            },
            "champion": self.champion.to_dict(),
            "production": self.production.to_dict() if self.production is not None else None,
            "baseline": self.baseline.to_dict() if self.baseline is not None else None,
            "calibration": self.calibration.record() if self.calibration is not None else None,
            "behaviour_tests": [r.to_dict() for r in self.behaviour],
            "slices": asdict(self.slices) if self.slices is not None else None,
            "confident_mistakes": [asdict(m) for m in self.mistakes],
        }


def _metric_name(name: str) -> str:
    """A behaviour test's name as a metric-name part: lower case, words joined by '_'."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "unnamed"


def production_scalars(production: ProductionResult) -> dict[str, float]:
    """The metrics of both models on the production test set, named `production_*`."""
    new = production.challenger
    values = {
        "production_accuracy": new.accuracy,
        "production_macro_f1": new.macro_f1,
        "production_test_rows": float(new.rows),
    }
    old = production.champion.scores
    if old is not None:
        values["champion_production_accuracy"] = old.accuracy
        values["champion_production_macro_f1"] = old.macro_f1
        values["production_accuracy_change"] = new.accuracy - old.accuracy
    return values


def read_test_split(test_path: str | Path, what: str = "the test split") -> pd.DataFrame:
    """The test split, checked to hold rows and the text and label columns.

    Raises:
        DataError: The file cannot be read, lacks `text` or `label`, or has no rows.
    """
    frame = _read_labelled(test_path, what, "the preprocess step")
    if frame.empty:
        raise DataError(
            f"the test split {test_path} has no rows: nothing to evaluate the model on. Give "
            "more data or a larger test_fraction"
        )
    return frame.reset_index(drop=True)


def _read_labelled(path: str | Path, what: str, writer: str) -> pd.DataFrame:
    """A Parquet file with the text and label columns (`what` and its `writer` for messages)."""
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {what} {path}: {e}") from e
    missing = [c for c in ("text", "label") if c not in frame.columns]
    if missing:
        raise DataError(
            f"{what} {path} lacks the column(s) {missing}; {writer} writes text and label"
        )
    return frame


def _true_ids(frame: pd.DataFrame, labels: LabelMap, misfit: str, hint: str) -> list[int]:
    """The class ids of `frame`'s labels; a label the model lacks is a DataError that starts
    with `misfit` and ends with `hint`."""
    try:
        return [labels.index(value) for value in frame["label"]]
    except DataError as e:
        raise DataError(f"{misfit}: {e}; {hint}") from e


def score_production(
    production_test_path: str | Path,
    challenger: TorchClassifier,
    champion: Callable[[list[str], list[str]], ChampionResult],
) -> ProductionResult | None:
    """Both models scored on the production test set; None when it has no rows.

    Args:
        production_test_path: The validate step's production test set (text, label).
        challenger: The new model.
        champion: Scores the model in production on (texts, true label names).

    Raises:
        DataError: The set is unreadable or holds a label the new model lacks.
    """
    frame = _read_labelled(production_test_path, "the production test set", "the validate step")
    if frame.empty:
        logger.info("no production test rows: the gate judges on the base test split only")
        return None
    labels = challenger.labels
    texts = frame["text"].astype(str).tolist()
    y_true = _true_ids(
        frame,
        labels,
        f"the production test set {production_test_path} does not fit the new model",
        "a feedback snapshot holds a label the model was not trained on: set allowed_labels "
        "to the model's labels so that validate refuses it",
    )
    scores = score_model(y_true, challenger.predict_proba(texts), labels.names)
    logger.info(
        "challenger scored on production rows=%d accuracy=%.4f macro_f1=%.4f",
        scores.rows,
        scores.accuracy,
        scores.macro_f1,
    )
    return ProductionResult(scores, champion(texts, [labels.names[i] for i in y_true]))


def evaluate_challenger(
    *,
    model_dir: str | Path,
    test_path: str | Path,
    train_path: str | Path,
    validation_path: str | Path,
    model_repository: str | Path,
    model_name: str,
    settings: GateSettings,
    slice_column: str,
    behaviour_tests: Sequence[Mapping[str, Any] | BehaviourTest],
    report_path: str | Path,
    summary_path: str | Path,
    decision_path: str | Path,
    champion_url: str = "",
    kserve_namespace: str | None = None,
    production_test_path: str | Path | None = None,
) -> EvaluationOutcome:
    """Score the new model and the one in production on the test split; decide what ships.

    Args:
        model_dir: The train step's Hugging Face model directory (with labels.json).
        test_path: The preprocess step's test split (Parquet with text and label).
        train_path: The preprocess step's train split, the one the challenger learned from:
            the linear baseline is fitted on it (`baseline.py`).
        validation_path: The preprocess step's validation split: the calibration temperature
            is fitted on it (`calibration.py`), and applied to every probability scored after.
        model_repository: The local model repository the champion is read from.
        model_name: The model's name in it.
        settings: Floors, allowed regression, and whether label sets must match.
        slice_column: A column of the test split to score per value; empty for none.
        behaviour_tests: Behavioural test definitions (see `BehaviourTest`).
        report_path: Where the HTML report goes.
        summary_path: Where the Markdown summary goes.
        decision_path: Where the decision goes, as JSON.
        champion_url: The base URL of the server (an InferenceService) that serves the model
            in production; empty: the repository's current version is the champion.
        kserve_namespace: Without `champion_url`: the champion is the bundle the
            InferenceService `model_name` in this namespace serves (see `score_champion`).
        production_test_path: The production test set (the validate step's held-out feedback
            rows); both models are scored on it, and compared, when it has rows.

    Returns:
        The scores, the champion's fate and the decision.

    Raises:
        ConfigError: A behavioural test is invalid or names a label the model lacks.
        DataError: The test split is unreadable, empty, or holds labels the model lacks; the
            train split is unreadable; the validation split is unreadable or holds labels the
            model lacks; or the production test set is unreadable or holds
            labels the model lacks.
        ModelNotFoundError: `model_dir` holds no loadable model.
    """
    # Configuration first: a bad test definition should fail before any model is loaded.
    tests = parse_behaviour_tests(list(behaviour_tests or []))
    frame = read_test_split(test_path)
    train = _read_labelled(train_path, "the train split", "the preprocess step")
    validation = _read_labelled(validation_path, "the validation split", "the preprocess step")
    challenger = TorchClassifier.from_model_dir(model_dir)
    labels = challenger.labels
    check_test_labels(tests, labels)

    texts = frame["text"].astype(str).tolist()
    y_true = _true_ids(
        frame,
        labels,
        f"the test split {test_path} does not fit the model in {model_dir}",
        "train and evaluate on splits of the same preprocess run",
    )
    test_logits = challenger.logits(texts)
    # The scores (`ece` among them) are those of the raw model; its calibration is reported
    # beside them, and every probability from here on is the calibrated one the bundle serves.
    scores = score_model(y_true, softmax(test_logits), labels.names)
    calibration = calibrate(
        challenger.logits(validation["text"].astype(str).tolist()),
        _true_ids(
            validation,
            labels,
            f"the validation split {validation_path} does not fit the model in {model_dir}",
            "train and evaluate on splits of the same preprocess run",
        ),
        test_logits,
        y_true,
    )
    challenger.temperature = calibration.temperature
    probabilities = softmax(test_logits, calibration.temperature)
    logger.info(
        "challenger scored rows=%d accuracy=%.4f macro_f1=%.4f ece=%.4f temperature=%.3f "
        "ece_calibrated=%.4f",
        scores.rows,
        scores.accuracy,
        scores.macro_f1,
        scores.ece,
        calibration.temperature,
        calibration.ece_after,
    )

    notes: list[str] = []
    slices = None
    if slice_column and slice_column in frame.columns:
        slices = slice_scores(y_true, probabilities, frame[slice_column].tolist(), slice_column)
    elif slice_column:
        # Not an error: the model is trained by now, and slice metrics do not gate.
        notes.append(
            f"slice column {slice_column!r} is not in the test split (its columns: "
            f"{', '.join(map(str, frame.columns))}): no slice metrics"
        )

    behaviour = run_behaviour_tests(tests, challenger)
    baseline = train_and_score_baseline(train, texts, y_true, labels.names)

    def champion_on(on_texts: list[str], true_labels: list[str]) -> ChampionResult:
        return score_champion(
            model_repository,
            model_name,
            on_texts,
            true_labels,
            labels.names,
            champion_url=champion_url,
            kserve_namespace=kserve_namespace,
        )

    champion = champion_on(texts, [labels.names[i] for i in y_true])
    production = (
        score_production(production_test_path, challenger, champion_on)
        if production_test_path is not None
        else None
    )
    outcome = EvaluationOutcome(
        model_name=model_name,
        scores=scores,
        roc=roc_curve_points(y_true, probabilities, labels.names),
        slices=slices,
        mistakes=tuple(confident_mistakes(texts, y_true, probabilities, labels.names)),
        behaviour=tuple(behaviour),
        champion=champion,
        decision=decide(settings, scores, champion, behaviour, notes, production, baseline),
        settings=settings,
        production=production,
        baseline=baseline,
        calibration=calibration,
    )
    write_text(report_path, render_html(outcome))
    write_text(summary_path, render_markdown(outcome))
    write_text(decision_path, json.dumps(outcome.to_dict(), indent=2) + "\n")
    logger.info(
        "gate decision deploy=%s champion=%s reasons=%s",
        outcome.deploy,
        champion.status,
        json.dumps(outcome.reasons),
    )
    return outcome
