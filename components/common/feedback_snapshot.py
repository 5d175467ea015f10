"""The feedback snapshot format, shared by the step that writes snapshots (monitor) and the one
that merges them into training data (validate).

A snapshot is a directory named by its content fingerprint, holding `SNAPSHOT_DATA` (one row per
distinct text, columns `SNAPSHOT_COLUMNS`) and `SNAPSHOT_METADATA` (fingerprint, window, counts,
the rules applied), which is written last. Texts are compared in one form, `normalised_text`,
wherever a snapshot's texts meet other texts: the base data, other snapshots, the held-out split.
"""

from __future__ import annotations

SNAPSHOT_DATA = "data.parquet"
SNAPSHOT_METADATA = "metadata.json"
#: The columns of `SNAPSHOT_DATA`, in order.
SNAPSHOT_COLUMNS = ("text", "label", "received_at", "event_id", "item", "split")
#: The values of the `split` column: trained on, or held out as the production test set.
TRAIN_SPLIT, TEST_SPLIT = "train", "test"


def normalised_text(text: str) -> str:
    """The form texts are compared in: whitespace collapsed, ends stripped, casefolded."""
    return " ".join(text.split()).casefold()
