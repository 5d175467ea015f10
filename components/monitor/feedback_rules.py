"""The rules that turn a model's labelled events into a feedback snapshot's rows.

In the order applied to the store's labelled events for the model in the window:

1. With `redact_pii`, the texts are redacted again (the collector stores them redacted when it
   redacts; this covers a store filled without redaction).
2. Texts are compared normalised: whitespace runs collapsed to one space, ends stripped,
   casefolded. Texts already in the base data are dropped: they would only repeat it.
3. Labels the model does not know are refused (`feedback_unknown_labels` 'refuse') or dropped.
4. Exact duplicates (same normalised text, same label) count once. A text labelled differently
   by several events is resolved by `feedback_conflicts`: 'majority' keeps its most frequent
   label (a tie goes to the most recently labelled), 'latest' the most recent, 'drop' drops it.
5. A text is held out ("test") when a hash of its normalised text falls under
   `feedback_test_fraction`: one text is on the same side in every snapshot, so it is never
   trained on by one run and tested on by the next.

A snapshot of one class is written, with a warning in its metadata and the log: feedback often
comes from one side (complaints are labelled first), and whether the merged data is still
balanced enough is the validate step's judgement on the merged rows (`min_class_share`).

The fingerprint (`fingerprint`) is the sha256 of the rows' canonical content: each row as one
JSON line, in the order received.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textops.components.common.errors import DataError
from textops.components.common.feedback_snapshot import (
    SNAPSHOT_COLUMNS,
    TEST_SPLIT,
    TRAIN_SPLIT,
    normalised_text,
)
from textops.components.common.labels import canonical_label

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class FeedbackRules:
    """How the labelled events become rows (the FeedbackSettings rules, and the model's labels).

    Attributes:
        known_labels: The labels the model knows; empty: any label is taken.
        conflicts: 'majority', 'latest' or 'drop'.
        unknown_labels: 'refuse' or 'drop'.
        test_fraction: Share of texts held out as the production test set.
        redact_pii: Redact the texts again before they are written.
    """

    known_labels: tuple[str, ...] = ()
    conflicts: str = "majority"
    unknown_labels: str = "refuse"
    test_fraction: float = 0.2
    redact_pii: bool = False


def held_out(key: str, test_fraction: float) -> bool:
    """Whether the text whose normalised form is `key` belongs to the production test set."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < test_fraction * 2**64


def select_rows(
    events: pd.DataFrame, base_texts: Iterable[str], rules: FeedbackRules
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The snapshot's rows from the labelled events, by `rules`, and what each rule did.

    Args:
        events: `fetch_window` rows (text, label, received_at, event_id, item, ...).
        base_texts: The base data's texts; feedback repeating one of them is dropped.
        rules: The rules to apply.

    Returns:
        The rows (columns `SNAPSHOT_COLUMNS`, sorted by received_at, event_id, item) and the
        rules' record for the metadata.

    Raises:
        DataError: Labels the model does not know, with `unknown_labels` 'refuse'.
    """
    import pandas as pd

    rows = events[["text", "label", "received_at", "event_id", "item"]].copy()
    record: dict[str, Any] = {"labelled_events": len(rows)}
    if rules.redact_pii:
        from textops.components.common.redaction import redact_series

        rows["text"], found = redact_series(rows["text"])
        record["redacted"] = dict(sorted(found.items()))
    rows["label"] = [canonical_label(label) for label in rows["label"]]
    rows["key"] = [normalised_text(text) for text in rows["text"]]

    in_base = rows["key"].isin({normalised_text(str(text)) for text in base_texts})
    rows = rows[~in_base]
    record["in_base_data_dropped"] = int(in_base.sum())

    record["unknown_labels"] = rules.unknown_labels
    counts: dict[str, int] = {}
    if rules.known_labels:
        unknown = ~rows["label"].isin(rules.known_labels)
        counts = {str(k): int(v) for k, v in rows.loc[unknown, "label"].value_counts().items()}
        if counts and rules.unknown_labels == "refuse":
            raise DataError(
                f"labelled feedback holds labels the model does not know: {counts} (rows per "
                f"label; the model's labels are {list(rules.known_labels)}): fix the labels "
                "sent to the collector, or set feedback_unknown_labels to 'drop' to leave "
                "those rows out"
            )
        rows = rows[~unknown]
    record["unknown_labels_dropped"] = dict(sorted(counts.items()))

    rows = rows.sort_values(["received_at", "event_id", "item"], kind="stable")
    rows["order"] = range(len(rows))
    pairs = rows.groupby(["key", "label"], sort=False).agg(
        count=("order", "size"), newest=("order", "max")
    )
    pairs = pairs.reset_index()
    record["exact_duplicates_dropped"] = int(len(rows) - len(pairs))
    labels_per_text = pairs.groupby("key")["label"].transform("size")
    record["conflicts"] = rules.conflicts
    record["conflicting_texts"] = int(pairs.loc[labels_per_text > 1, "key"].nunique())
    if rules.conflicts == "drop":
        chosen = pairs[labels_per_text == 1]
    else:
        rank = ["count", "newest"] if rules.conflicts == "majority" else ["newest"]
        chosen = pairs.sort_values(["key", *rank]).groupby("key", sort=False).tail(1)
    record["conflicting_rows_dropped"] = int(
        pairs.loc[~pairs.index.isin(chosen.index), "count"].sum()
    )
    # Each kept text is its most recent event with the chosen label.
    kept = rows.iloc[chosen["newest"].to_numpy()].sort_values("order")
    kept = kept.assign(
        split=[TEST_SPLIT if held_out(k, rules.test_fraction) else TRAIN_SPLIT for k in kept["key"]]
    )
    result = pd.DataFrame(kept[list(SNAPSHOT_COLUMNS)]).reset_index(drop=True)
    return result, record


def fingerprint(rows: pd.DataFrame) -> str:
    """The sha256 of the rows' canonical content: each row as one JSON line, in order."""
    digest = hashlib.sha256()
    times = rows["received_at"].map(lambda t: t.isoformat())
    for values in zip(
        rows["text"],
        rows["label"],
        times,
        rows["event_id"],
        rows["item"],
        rows["split"],
        strict=True,
    ):
        line = json.dumps([*values[:4], int(values[4]), values[5]], ensure_ascii=False)
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class BaseData:
    """What a snapshot is built against: the base data's texts, and the labels it may hold."""

    texts: list[str]
    labels: tuple[str, ...]


def read_base_data(data: str, data_format: str, text_column: str, label_column: str) -> BaseData:
    """The base data's texts and labels (its `data` setting: a file, a URI or 'sample').

    Raises:
        ConfigError: The data file does not exist.
        DataError: It cannot be read, or lacks the text or label column.
    """
    from textops.components.common.config import resolve_data_path
    from textops.components.common.dataio import read_table, require_columns

    path = resolve_data_path(data)
    frame = read_table(path, data_format)
    require_columns(frame, [text_column, label_column], f"data {data}")
    labels = frame[label_column].dropna()
    return BaseData(
        texts=[str(text) for text in frame[text_column].dropna()],
        labels=tuple(sorted({canonical_label(label) for label in labels})),
    )


def known_labels(
    production: Sequence[str] | None, allowed_labels: Sequence[str], base: BaseData
) -> tuple[str, ...]:
    """The labels feedback may hold: the model in production's; with none in production, the
    allowed labels when set, else the base data's."""
    if production:
        return tuple(production)
    if allowed_labels:
        return tuple(canonical_label(label) for label in allowed_labels)
    return base.labels
