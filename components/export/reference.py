"""The reference sample drift is measured against: training texts with the bundle's predictions."""

from __future__ import annotations

import pandas as pd

from textops.components.common.dataio import require_columns
from textops.components.common.errors import DataError
from textops.components.common.labels import canonical_label
from textops.components.common.onnx_classifier import OnnxClassifier
from textops.components.export.parity import BATCH_SIZE

#: Rows of the train split kept in reference.parquet.
REFERENCE_MAX_ROWS = 10_000


def reference_sample(frame: pd.DataFrame, *, max_rows: int, seed: int) -> pd.DataFrame:
    """At most `max_rows` rows of `frame`, drawn with `seed`, in their original order."""
    if len(frame) <= max_rows:
        return frame.reset_index(drop=True)
    return frame.sample(n=max_rows, random_state=seed).sort_index().reset_index(drop=True)


def reference_predictions(classifier: OnnxClassifier, sample: pd.DataFrame) -> pd.DataFrame:
    """The reference table: text, label, prediction, confidence and one prob_<label> per class.

    Raises:
        DataError: The sample lacks the text or label column, or a text is missing.
    """
    require_columns(sample, ["text", "label"], "reference sample")
    texts = texts_of(sample, "reference sample")
    probs = classifier.predict_proba(texts, batch_size=BATCH_SIZE)
    names = classifier.labels.names
    table = pd.DataFrame(
        {
            "text": texts,
            "label": [canonical_label(v) for v in sample["label"]],
            "prediction": [names[i] for i in probs.argmax(axis=1)],
            "confidence": probs.max(axis=1),
        }
    )
    for i, name in enumerate(names):
        table[f"prob_{name}"] = probs[:, i]
    return table


def texts_of(frame: pd.DataFrame, source: str) -> list[str]:
    """The text column as strings; DataError if a text is missing."""
    if frame["text"].isna().any():
        raise DataError(f"the {source} has {int(frame['text'].isna().sum())} missing texts")
    return [str(t) for t in frame["text"]]
