"""The linear baseline every evaluation reports: TF-IDF features and logistic regression.

A fine-tuned transformer that does not beat a bag-of-words model trained on the same rows is
not worth its cost, and on long documents (which the transformer reads only the start of) it
sometimes does not. `train_and_score_baseline` fits the baseline on the very train split the
challenger learned from and scores it on the very test texts the challenger is scored on, with
the same scoring code (`scoring.score_model`), so the numbers sit side by side.

Its cost is bounded so that it stays small next to training: each text is cut to
`MAX_TEXT_CHARS` characters (train and test alike), it learns from at most `MAX_TRAIN_ROWS`
rows holding at most `MAX_TRAIN_CHARS` characters (a seeded sample beyond that), and it keeps
at most `MAX_FEATURES` TF-IDF features. scikit-learn is imported only here,
inside the function, as the evaluate step's other heavy libraries are.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from textops.components.evaluate.scoring import ModelScores, score_model

logger = logging.getLogger(__name__)

#: What the report calls the baseline.
BASELINE_NAME = "TF-IDF + logistic regression"
#: Training rows the baseline learns from at most; a larger train split is sampled (seeded).
#: A linear model's accuracy has long flattened out by then, while a transformer trains for
#: hours on as many rows.
MAX_TRAIN_ROWS = 100_000
#: Characters of each text the baseline reads: far more than a transformer's window (128
#: tokens are about 600 characters), so long documents count, while one 2 MB text cannot
#: dominate the cost.
MAX_TEXT_CHARS = 20_000
#: Characters (after the cut above) of all training rows together. Fitting TF-IDF on unigrams
#: and bigrams read about 2 million characters a second on one core of a busy 2-core machine
#: (40 million in 17 s, 0.5 GB peak), so the fit stays near 20 seconds whatever the data;
#: sentence- and review-sized data never reaches the cap.
MAX_TRAIN_CHARS = 40_000_000
#: Most TF-IDF features (unigrams and bigrams, the most frequent kept): bounds the model's
#: memory and the solver's time whatever the vocabulary.
MAX_FEATURES = 200_000
#: Seed of the row sample, so that one train split always gives the same baseline.
SAMPLE_SEED = 0


@dataclass(frozen=True)
class BaselineResult:
    """The baseline's scores on the test split, or why there are none.

    Attributes:
        scores: Scores on the test texts, columns in the challenger's label order; None when
            the baseline could not be trained (`error` says why).
        train_rows: Training rows it learned from (after the row cap).
        features: TF-IDF features it used.
        seconds: Wall-clock time to fit it and score the test texts.
        error: Why there is no baseline; empty when there is one.
    """

    scores: ModelScores | None
    train_rows: int = 0
    features: int = 0
    seconds: float = 0.0
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, for the decision file."""
        return {
            "model": BASELINE_NAME,
            "scores": self.scores.scalars() if self.scores is not None else None,
            "train_rows": self.train_rows,
            "features": self.features,
            "seconds": self.seconds,
            "error": self.error,
            "limits": {
                "max_train_rows": MAX_TRAIN_ROWS,
                "max_train_chars": MAX_TRAIN_CHARS,
                "max_text_chars": MAX_TEXT_CHARS,
                "max_features": MAX_FEATURES,
            },
        }


def capped_rows(
    train: pd.DataFrame, max_rows: int = MAX_TRAIN_ROWS, max_chars: int = MAX_TRAIN_CHARS
) -> pd.DataFrame:
    """`train` itself when it is within both caps; else a seeded random subset that is.

    Args:
        train: Rows with a `text` column.
        max_rows: Most rows kept.
        max_chars: Most characters kept, each text counted up to `MAX_TEXT_CHARS`.
    """
    lengths = train["text"].astype(str).str.len().clip(upper=MAX_TEXT_CHARS).to_numpy()
    if len(train) <= max_rows and lengths.sum() <= max_chars:
        return train
    order = np.random.default_rng(SAMPLE_SEED).permutation(len(train))[:max_rows]
    within = np.cumsum(lengths[order]) <= max_chars
    # Row order kept, so the sample reads like the split it came from.
    return train.iloc[np.sort(order[within])]


def train_and_score_baseline(
    train: pd.DataFrame,
    test_texts: Sequence[str],
    y_test: Sequence[int],
    labels: Sequence[str],
) -> BaselineResult:
    """Fit TF-IDF + logistic regression on `train`, and score it on the test texts.

    Args:
        train: The train split the challenger learned from (columns `text` and `label`).
        test_texts: The test texts the challenger was scored on.
        y_test: Their true class ids, indices into `labels`.
        labels: The challenger's classes in output order; the baseline's probabilities are
            laid out in this order (a class it never saw gets probability 0).

    Returns:
        The scores, or, when the train split has fewer than two classes the challenger knows,
        a result with `error` set: the baseline never stops an evaluation.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    rows = capped_rows(train)
    known = rows["label"].astype(str).isin(labels)
    texts = rows["text"].astype(str)[known]
    targets = rows["label"].astype(str)[known]
    if targets.nunique() < 2:
        return BaselineResult(
            None,
            error=f"the train split has {targets.nunique()} class(es) of the model's labels "
            f"{list(labels)}; logistic regression needs at least 2",
        )
    vectorizer = TfidfVectorizer(
        ngram_range=(1, 2), sublinear_tf=True, max_features=MAX_FEATURES, dtype=np.float32
    )
    features = vectorizer.fit_transform(texts.str.slice(0, MAX_TEXT_CHARS))
    # lbfgs on the multinomial loss: one model for any number of classes, deterministic.
    classifier = LogisticRegression(max_iter=1000)
    # One BLAS thread: on sparse features more threads only contend, and on a busy machine
    # they made the fit 30 times slower (1.1 s against 0.03 s on the sample data).
    with threadpool_limits(limits=1):
        classifier.fit(features, targets.to_numpy())
    clipped = [text[:MAX_TEXT_CHARS] for text in test_texts]
    fitted = classifier.predict_proba(vectorizer.transform(clipped))
    probabilities = np.zeros((len(clipped), len(labels)), dtype=np.float64)
    columns = [list(labels).index(str(name)) for name in classifier.classes_]
    probabilities[:, columns] = fitted
    scores = score_model(y_test, probabilities, labels)
    seconds = time.perf_counter() - started
    result = BaselineResult(
        scores,
        train_rows=len(targets),
        features=len(vectorizer.vocabulary_),
        seconds=seconds,
    )
    logger.info(
        "baseline (%s) train_rows=%d features=%d accuracy=%.4f macro_f1=%.4f seconds=%.2f",
        BASELINE_NAME,
        result.train_rows,
        result.features,
        scores.accuracy,
        scores.macro_f1,
        seconds,
    )
    return result
