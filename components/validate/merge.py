"""Feedback snapshots merged into the base data before validation, by the merge settings.

A snapshot (written by the collect_feedback step) is a directory holding `data.parquet`
(text, label, received_at, event_id, item, split) and `metadata.json` (fingerprint, window,
counts). Its "train" rows may join the base data, within the merge settings: an age limit, a
largest share of the merged rows, and optionally the base data's class mix. Its "test" rows
are never trained on: they become the production test set the gate scores both models on.
Snapshots are read through fsspec, so a local directory and an `s3://` URI read alike.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa

from textops.components.common import dataio
from textops.components.common.errors import DataError
from textops.components.common.feedback_snapshot import (
    SNAPSHOT_DATA,
    SNAPSHOT_METADATA,
    TEST_SPLIT,
    TRAIN_SPLIT,
    normalised_text,
)
from textops.components.common.settings import FeedbackMergeSettings
from textops.components.validate.catalogue import Columns
from textops.components.validate.profile import canonical_labels

logger = logging.getLogger(__name__)

#: The columns of a snapshot's data the merge reads.
MERGE_COLUMNS = ("text", "label", "received_at", "split")
#: The columns of the production test set.
PRODUCTION_TEST_TYPES = {"text": pa.string(), "label": pa.string()}


@dataclass(frozen=True)
class Snapshot:
    """One feedback snapshot as read: where it is, its metadata, its rows (labels canonical)."""

    uri: str
    metadata: dict[str, Any]
    rows: pd.DataFrame

    @property
    def fingerprint(self) -> str:
        """The content fingerprint the snapshot was written under."""
        return str(self.metadata.get("fingerprint", ""))


@dataclass
class MergedData:
    """The base data with the feedback rows that joined it, the production test rows, lineage.

    Attributes:
        frame: The rows to validate: the base data's, then the feedback rows (in the base
            data's text and label columns).
        production_test: The snapshots' held-out rows (columns text, label).
        feedback: One lineage entry per snapshot: uri, fingerprint, window, rows_used,
            rows_held_out.
    """

    frame: pd.DataFrame
    production_test: pd.DataFrame
    feedback: list[dict[str, Any]] = field(default_factory=list)


def read_snapshot(uri: str) -> Snapshot:
    """Read one snapshot directory (local path or fsspec URI).

    Raises:
        DataError: The directory, its data or its metadata cannot be read, or the data lacks
            a column the merge needs.
    """
    import fsspec

    base = uri.rstrip("/")
    try:
        with fsspec.open(f"{base}/{SNAPSHOT_METADATA}", "r", encoding="utf-8") as f:
            metadata = json.load(f)
    except (OSError, ValueError, ImportError) as e:
        raise DataError(
            f"cannot read the feedback snapshot {uri}: its {SNAPSHOT_METADATA} is unreadable "
            f"({e}). Give the directory collect_feedback wrote (<feedback_dir>/<model_name>/"
            "<fingerprint>), or leave it out of feedback_snapshots"
        ) from e
    try:
        rows = dataio.read_table(f"{base}/{SNAPSHOT_DATA}", "parquet")
    except DataError as e:
        raise DataError(f"cannot read the feedback snapshot {uri}: {e}") from e
    dataio.require_columns(rows, list(MERGE_COLUMNS), f"feedback snapshot {uri}")
    rows = rows.assign(
        text=rows["text"].astype("string"),
        label=canonical_labels(rows["label"]),
        received_at=pd.to_datetime(rows["received_at"], utc=True, errors="coerce"),
    )
    return Snapshot(uri=uri, metadata=metadata, rows=rows.reset_index(drop=True))


def check_snapshot_labels(snapshot: Snapshot, allowed: Sequence[str]) -> None:
    """Refuse a snapshot holding labels outside `allowed`; warn about one with a single class.

    Raises:
        DataError: A label is missing or not in `allowed`; the message names them.
    """
    labels = snapshot.rows["label"]
    if labels.isna().any():
        raise DataError(
            f"feedback snapshot {snapshot.uri} has {int(labels.isna().sum())} rows without a "
            "label; a snapshot holds labelled events only: rebuild it with collect_feedback"
        )
    unknown = sorted(set(labels) - set(allowed))
    if unknown:
        raise DataError(
            f"feedback snapshot {snapshot.uri} holds labels {unknown} that the model does not "
            f"know (its labels are {list(allowed)}): rebuild the snapshot with "
            "feedback_unknown_labels 'drop', or leave it out of feedback_snapshots"
        )
    classes = set(labels)
    if len(classes) == 1:
        logger.warning(
            "feedback snapshot %s holds one class only (%s): it shifts the class mix towards "
            "that class, and its production scores measure that class alone",
            snapshot.uri,
            next(iter(classes)),
        )


def merge_feedback(
    base: pd.DataFrame,
    columns: Columns,
    snapshots: Sequence[Snapshot],
    settings: FeedbackMergeSettings,
    allowed_labels: Sequence[str],
    now: datetime | None = None,
) -> MergedData:
    """The base data plus the snapshots' "train" rows that the merge settings let in.

    In order: rows older than `feedback_max_age_days` are dropped (test rows too: old
    traffic is not today's production); held-out texts the base data holds are left out of
    the production test set; a text held out in any snapshot, already in the base data, or
    already taken from a newer snapshot is not trained on; with
    `feedback_class_balance`, each class keeps at most its base share of the feedback rows;
    then the most recent rows are kept up to `feedback_max_share` of the merged rows.

    Args:
        base: The base data as read (the user's column names).
        columns: The user's text and label columns.
        snapshots: The snapshots to merge, as read.
        settings: The merge policy.
        allowed_labels: The labels a snapshot may hold.
        now: The time the age limit counts back from (default: now).

    Raises:
        DataError: A snapshot holds a label outside `allowed_labels`.
    """
    for snapshot in snapshots:
        check_snapshot_labels(snapshot, allowed_labels)
    rows = _recent(_tagged(snapshots), settings.feedback_max_age_days, now)
    rows["key"] = [normalised_text(str(text)) for text in rows["text"]]
    base_texts = base[columns.text].dropna().astype(str) if columns.text in base else []
    base_keys = {normalised_text(text) for text in base_texts}
    # A held-out text that the base data holds too may be trained on: it cannot judge how the
    # model does on traffic it has not seen.
    test = rows[(rows["split"] == TEST_SPLIT) & ~rows["key"].isin(base_keys)]
    test = test.drop_duplicates("key")
    seen = set(test["key"]) | base_keys
    train = rows[(rows["split"] == TRAIN_SPLIT) & ~rows["key"].isin(seen)]
    # Newest first, so a text labelled in several snapshots keeps its latest label.
    train = train.sort_values("received_at", ascending=False, na_position="last")
    train = train.drop_duplicates("key")
    if settings.feedback_class_balance and columns.label in base:
        train = _balanced(train, canonical_labels(base[columns.label]).dropna())
    train = train.head(_share_cap(len(base), len(train), settings.feedback_max_share))
    feedback = pd.DataFrame({columns.text: train["text"], columns.label: train["label"]})
    merged = pd.concat([base, feedback], ignore_index=True) if len(feedback) else base
    lineage = [
        {
            "uri": s.uri,
            "fingerprint": s.fingerprint,
            "window": s.metadata.get("window", {}),
            "rows_used": int((train["snapshot"] == i).sum()),
            "rows_held_out": int((test["snapshot"] == i).sum()),
        }
        for i, s in enumerate(snapshots)
    ]
    logger.info(
        "merged feedback: base=%d feedback_train=%d production_test=%d snapshots=%d",
        len(base),
        len(train),
        len(test),
        len(snapshots),
    )
    return MergedData(
        frame=merged,
        production_test=test[["text", "label"]].reset_index(drop=True),
        feedback=lineage,
    )


def _tagged(snapshots: Sequence[Snapshot]) -> pd.DataFrame:
    """Every snapshot's rows, each tagged with its snapshot's position."""
    frames = [s.rows[list(MERGE_COLUMNS)].assign(snapshot=i) for i, s in enumerate(snapshots)]
    if not frames:
        empty = {name: pd.Series(dtype=object) for name in MERGE_COLUMNS}
        return pd.DataFrame({**empty, "snapshot": pd.Series(dtype=int)})
    return pd.concat(frames, ignore_index=True)


def _recent(rows: pd.DataFrame, max_age_days: int, now: datetime | None) -> pd.DataFrame:
    """The rows received within `max_age_days` of `now` (0: all of them)."""
    if not max_age_days:
        return rows
    oldest = (now or datetime.now(UTC)) - timedelta(days=max_age_days)
    recent = rows["received_at"] >= pd.Timestamp(oldest)
    if (~recent).any():
        logger.info("feedback older than %d days left out: %d rows", max_age_days, (~recent).sum())
    return rows[recent]


def _balanced(train: pd.DataFrame, base_labels: pd.Series) -> pd.DataFrame:
    """At most each class's base share of the feedback rows, the most recent kept.

    The total is the largest that every class can fill at its base share, so the feedback
    rows that remain have the base data's class mix (up to rounding).
    """
    if train.empty or base_labels.empty:
        return train
    shares = base_labels.value_counts(normalize=True)
    available = train["label"].value_counts()
    total = min(int(available.get(label, 0) / share) for label, share in shares.items())
    quotas = {label: round(share * total) for label, share in shares.items()}
    keep = train.groupby("label", sort=False).cumcount() < train["label"].map(quotas).fillna(0)
    return train[keep]


def _share_cap(base_rows: int, feedback_rows: int, max_share: float) -> int:
    """The most feedback rows that stay within `max_share` of the merged rows."""
    if max_share >= 1:
        return feedback_rows
    return min(feedback_rows, int(max_share * base_rows / (1 - max_share)))


def data_fingerprint(frame: pd.DataFrame, columns: Columns) -> str:
    """sha256 of the base data's text and label content, in row order."""
    digest = hashlib.sha256()
    for name in (columns.text, columns.label):
        values = frame[name].astype("string") if name in frame else pd.Series(dtype="string")
        digest.update(name.encode())
        digest.update(pd.util.hash_pandas_object(values, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def write_production_test(frame: pd.DataFrame, path: str) -> None:
    """Write the production test rows as Parquet (text, label), also when there are none."""
    dataio.write_table(frame[["text", "label"]].astype(object), path, PRODUCTION_TEST_TYPES)
