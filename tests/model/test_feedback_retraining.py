"""Retraining on feedback pays off on a shifted domain: the real base model on real data.

Version 1 is fine-tuned on the bundled UCI review sentences. Production then sends tweets
(another domain, `load_tweets`); the labelled ones reach a real SQLite payload store, and
`build_snapshot` (the collect_feedback step's code) turns them into a feedback snapshot. The
retraining runs validate's merge (`validate_file` with the snapshot), preprocess and train as
the pipeline does:

- (a) with the feedback snapshot merged into the base data;
- (b) without it: the same base data, split and seed as version 1, so it is version 1's run.

Both are scored on tweets that were never posted as labels and on a part of the UCI sentences
that neither trained on. Feedback must lift the shifted-domain accuracy by FEEDBACK_GAIN and
cost the original domain at most ORIGINAL_ALLOWANCE.

Slow: two fine-tunings of the default base model with the default settings on CPU (about five
minutes on two free cores; measured: shifted 0.827 without feedback, 0.895 with; original 0.937
and 0.938). With half the tweets, and only those all annotators agreed on (which the review
model already gets 90% right), the gain was 3 points: too few to show.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.unit.feedback_store import labelled_store
from textops.components.common.config import sample_data_path
from textops.components.common.settings import (
    FeedbackMergeSettings,
    FeedbackSettings,
    SplitSettings,
    TrainSettings,
    ValidationSettings,
)
from textops.components.monitor.feedback import FeedbackWindow, build_snapshot
from textops.components.monitor.feedback_rules import FeedbackRules
from textops.components.monitor.shifted_traffic import load_tweets

pytestmark = pytest.mark.slow

logger = logging.getLogger(__name__)

LABELS = ("negative", "positive")
#: Labelled tweets posted as delayed ground truth (a fifth is held out by the snapshot).
FEEDBACK_ROWS = 2000
#: Tweets never posted: the shifted-domain test set.
SHIFTED_TEST_ROWS = 600
#: UCI sentences left out of the base data: the original-domain test set.
ORIGINAL_TEST_FRACTION = 0.2
#: Accuracy points that feedback must add on the shifted domain.
FEEDBACK_GAIN = 0.05
#: Accuracy points that feedback may cost on the original domain.
ORIGINAL_ALLOWANCE = 0.01
SEED = 42


def accuracy(model_dir: Path, frame: pd.DataFrame) -> float:
    """The share of `frame`'s texts that the trained model labels right."""
    from textops.components.evaluate.classifiers import TorchClassifier

    classifier = TorchClassifier.from_model_dir(model_dir, device="cpu")
    probabilities = classifier.predict_proba(frame["text"].tolist())
    predicted = np.array(classifier.labels.names)[probabilities.argmax(axis=1)]
    return float((predicted == frame["label"].to_numpy()).mean())


def retrain(base_data: Path, snapshots: list[str], work: Path) -> Path:
    """validate (merging `snapshots`), preprocess and train, as the pipeline's steps do; the
    trained model's directory."""
    from textops.components.common.labels import LabelMap
    from textops.components.preprocess.split import preprocess_file
    from textops.components.train.launch import TrainingJob, run_training
    from textops.components.validate.checks import validate_file

    work.mkdir(parents=True)
    validate_file(
        data=str(base_data),
        data_format="csv",
        text_column="text",
        label_column="label",
        settings=ValidationSettings(),
        production_labels=LabelMap(LABELS),
        validated_path=str(work / "validated.parquet"),
        result_path=str(work / "validation.json"),
        report_path=str(work / "validation.html"),
        summary_path=str(work / "validation.md"),
        feedback=snapshots,
        merge=FeedbackMergeSettings(),
    )
    split = SplitSettings(seed=SEED)
    paths = {name: str(work / f"{name}.parquet") for name in ("train", "validation", "test")}
    result = preprocess_file(
        validated_path=str(work / "validated.parquet"),
        validation_fraction=split.validation_fraction,
        test_fraction=split.test_fraction,
        seed=split.seed,
        train_path=paths["train"],
        validation_path=paths["validation"],
        test_path=paths["test"],
    )
    job = TrainingJob(
        train_path=paths["train"],
        validation_path=paths["validation"],
        labels=result.label_map,
        settings=TrainSettings(seed=SEED, device="cpu"),
        output_dir=str(work / "model"),
    )
    run_training(job, processes=1)
    return work / "model"


@pytest.fixture(scope="module")
def domains(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    """The base data, the original-domain test set, the posted tweets and the unposted ones."""
    uci = pd.read_csv(sample_data_path(), dtype=str)[["text", "label"]]
    original_test = uci.groupby("label").sample(frac=ORIGINAL_TEST_FRACTION, random_state=SEED)
    # Most annotators agreed: the labels are not themselves noise.
    tweets = load_tweets(
        FEEDBACK_ROWS + SHIFTED_TEST_ROWS, seed=SEED, sentiments=LABELS, min_confidence=0.6
    )
    return {
        "base": uci.drop(original_test.index),
        "original_test": original_test,
        "feedback": tweets.iloc[:FEEDBACK_ROWS][["text", "label"]],
        "shifted_test": tweets.iloc[FEEDBACK_ROWS:][["text", "label"]],
    }


@pytest.fixture(scope="module")
def scores(
    domains: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, float]]:
    """Accuracy of the retrainings with and without feedback on both test sets."""
    work = tmp_path_factory.mktemp("feedback-retraining")
    base_data = work / "base.csv"
    domains["base"].to_csv(base_data, index=False)
    store_url = labelled_store(
        work / "payloads.db", list(domains["feedback"].itertuples(index=False, name=None))
    )
    feedback = FeedbackSettings()
    snapshot = build_snapshot(
        store_url,
        "textops-classifier",
        str(work / "feedback"),
        window=FeedbackWindow(),
        rules=FeedbackRules(
            known_labels=LABELS,
            conflicts=feedback.feedback_conflicts,
            unknown_labels=feedback.feedback_unknown_labels,
            test_fraction=feedback.feedback_test_fraction,
        ),
        base_texts=domains["base"]["text"],
    )
    assert snapshot is not None and snapshot.rows > 0.9 * FEEDBACK_ROWS
    models = {
        "with_feedback": retrain(base_data, [snapshot.uri], work / "with-feedback"),
        "without_feedback": retrain(base_data, [], work / "without-feedback"),
    }
    found = {
        name: {test: accuracy(model, domains[test]) for test in ("shifted_test", "original_test")}
        for name, model in models.items()
    }
    logger.info("accuracy of the retrainings: %s", found)
    return found


def test_feedback_lifts_accuracy_on_the_shifted_domain(
    scores: dict[str, dict[str, float]],
) -> None:
    gain = scores["with_feedback"]["shifted_test"] - scores["without_feedback"]["shifted_test"]
    assert gain >= FEEDBACK_GAIN, scores


def test_feedback_costs_the_original_domain_at_most_a_point(
    scores: dict[str, dict[str, float]],
) -> None:
    loss = scores["without_feedback"]["original_test"] - scores["with_feedback"]["original_test"]
    assert loss <= ORIGINAL_ALLOWANCE, scores
