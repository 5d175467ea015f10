"""The drift job on real data with the real fine-tuned model (the sample run's bundle).

- Traffic drawn from the training distribution (sample sentences the model never trained on)
  raises no drift in at least 19 of 20 windows.
- Traffic from another domain is flagged: tweets sent to the review model, and IMDb film
  reviews against a reference of Amazon and Yelp reviews (the reference sample is what drift
  is measured against, so restricting it to two sources stands in for a model trained on them).

These are slow (the sample run fine-tunes the real model first); the default test run holds the
tiny model's drift checks to no false alarm on the same sample data in
tests/unit/drift/test_drift_false_alarms.py.
"""

from pathlib import Path

import pandas as pd
import pytest

from textops.components.common.bundle import ModelBundle
from textops.components.common.config import sample_data_path
from textops.components.common.onnx_classifier import OnnxClassifier
from textops.components.monitor.drift import QualityBaseline, detect_drift, quality_baseline
from textops.components.monitor.drift_settings import DriftSettings
from textops.components.monitor.shifted_traffic import load_tweets
from textops.components.preprocess.split import clean_text

pytestmark = pytest.mark.slow  # the sample run fine-tunes the real model first

WINDOW_ROWS = 200


def traffic(bundle: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame`'s texts as logged traffic: predicted by the bundle's INT8 model, as served."""
    classifier = OnnxClassifier.from_bundle(bundle, precision="int8")
    probabilities = classifier.predict_proba(frame["text"].tolist())
    names = classifier.labels.names
    return pd.DataFrame(
        {
            "text": frame["text"].tolist(),
            "prediction": [names[i] for i in probabilities.argmax(axis=1)],
            "confidence": probabilities.max(axis=1),
            "label": frame["label"].tolist(),
        }
    )


@pytest.fixture(scope="module")
def reference(sample_bundle_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(ModelBundle.open(sample_bundle_dir).reference_path)


@pytest.fixture(scope="module")
def baseline(sample_bundle_dir: Path, reference: pd.DataFrame) -> QualityBaseline:
    found = quality_baseline(ModelBundle.open(sample_bundle_dir).metadata, reference)
    assert found is not None and found.source == "bundle test metrics"
    return found


@pytest.fixture(scope="module")
def sample_with_sources(reference: pd.DataFrame) -> pd.DataFrame:
    """The sample set, texts cleaned as training cleaned them, with `in_reference`."""
    frame = pd.read_csv(sample_data_path(), dtype=str)
    frame["text"] = clean_text(frame["text"]).astype(str)
    frame = frame.drop_duplicates("text")
    frame["in_reference"] = frame["text"].isin(set(reference["text"]))
    return frame.reset_index(drop=True)


@pytest.fixture(scope="module")
def unseen_traffic(sample_bundle_dir: Path, sample_with_sources: pd.DataFrame) -> pd.DataFrame:
    """Sample sentences outside the reference (the validation and test splits), as traffic."""
    unseen = sample_with_sources[~sample_with_sources["in_reference"]]
    assert len(unseen) > 3 * WINDOW_ROWS
    return traffic(sample_bundle_dir, unseen).assign(source=unseen["source"].tolist())


def test_traffic_from_the_training_distribution_passes_19_of_20_windows(
    reference: pd.DataFrame, baseline: QualityBaseline, unseen_traffic: pd.DataFrame
) -> None:
    flagged = []
    for seed in range(20):
        window = unseen_traffic.sample(n=WINDOW_ROWS, random_state=seed)
        result = detect_drift(reference, window, DriftSettings(), baseline=baseline)
        assert result.status != "not_enough_data"
        # Ground truth is present, so accuracy and macro-F1 are tested in every window too.
        assert {t.name for t in result.tests if t.status != "skipped"} >= {"accuracy", "macro_f1"}
        if result.drifted:
            flagged.append((seed, result.reasons))
    assert len(flagged) <= 1, flagged


def test_tweets_sent_to_the_review_model_are_flagged(
    sample_bundle_dir: Path, reference: pd.DataFrame, baseline: QualityBaseline
) -> None:
    tweets = traffic(
        sample_bundle_dir, load_tweets(5 * WINDOW_ROWS, seed=1, sentiments=("negative", "positive"))
    )
    for start in range(0, len(tweets), WINDOW_ROWS):
        window = tweets.iloc[start : start + WINDOW_ROWS]
        result = detect_drift(reference, window, DriftSettings(), baseline=baseline)
        drifted = {t.name for t in result.tests if t.drifted and t.gate}
        assert result.drifted
        assert {"text_content", "text_length", "non_letter_share"} <= drifted
        # The model is also measurably worse on them (tweets are mostly negative, so macro-F1
        # falls further than accuracy).
        assert drifted & {"accuracy", "macro_f1"}, result.summary()


def test_imdb_reviews_are_flagged_against_an_amazon_and_yelp_reference(
    reference: pd.DataFrame,
    baseline: QualityBaseline,
    sample_with_sources: pd.DataFrame,
    unseen_traffic: pd.DataFrame,
) -> None:
    source = dict(zip(sample_with_sources["text"], sample_with_sources["source"], strict=True))
    sources = reference["text"].map(source)
    products_and_restaurants = reference[sources.isin(["amazon", "yelp"])]
    films = pd.concat(
        [
            unseen_traffic[unseen_traffic["source"] == "imdb"],
            reference[sources == "imdb"],  # predicted by the same model at export
        ]
    )
    assert len(products_and_restaurants) > 1000 and len(films) > 3 * WINDOW_ROWS
    for seed in range(3):
        window = films.sample(n=WINDOW_ROWS, random_state=seed)
        result = detect_drift(products_and_restaurants, window, DriftSettings(), baseline=baseline)
        tests = {t.name: t for t in result.tests}
        assert result.drifted, result.summary()
        assert tests["text_content"].drifted and tests["text_content"].value > 0.65
    # Amazon and Yelp traffic against the same reference is not flagged.
    same_domain = unseen_traffic[unseen_traffic["source"].isin(["amazon", "yelp"])]
    window = same_domain.sample(n=WINDOW_ROWS, random_state=0)
    result = detect_drift(products_and_restaurants, window, DriftSettings(), baseline=baseline)
    assert not result.drifted, result.reasons
