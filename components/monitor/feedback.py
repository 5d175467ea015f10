"""Feedback snapshots: labelled production traffic turned into a dataset, written once.

A snapshot is the directory `<feedback_dir>/<model_name>/<fingerprint>/` (a local path or an
fsspec URI such as `s3://bucket/feedback`) holding

- `data.parquet`: one row per distinct text, columns text, label, received_at, event_id, item
  and split ("train", or "test" for the held-out production test set);
- `metadata.json`: fingerprint, model name, row, label and split counts, the time window, when
  it was written, and the rules applied with what each one removed.

The rows are chosen by the rules of `feedback_rules.py`; the evaluate step's own requests are
never read.

The fingerprint is the sha256 of the rows' canonical content, so the same feedback gives the
same directory: one that exists already is reused, never rewritten. `metadata.json` is written
last, so a directory without it (a write cut short) is written again.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from textops.components.common.errors import DataError, PayloadStoreError
from textops.components.common.feedback_snapshot import (
    SNAPSHOT_DATA,
    SNAPSHOT_METADATA,
    TEST_SPLIT,
    TRAIN_SPLIT,
)
from textops.components.common.traffic import EVALUATION_REQUEST_PREFIX
from textops.components.monitor.feedback_rules import (
    FeedbackRules,
    fingerprint,
    known_labels,
    read_base_data,
    select_rows,
)
from textops.components.monitor.store import mask_url, open_store

if TYPE_CHECKING:
    import pandas as pd

    from textops.components.common.production_model import ProductionTarget

logger = logging.getLogger(__name__)

#: What a run with nothing to learn from production says.
NO_FEEDBACK_MESSAGE = "no labelled feedback: retraining on the base data only"


@dataclass(frozen=True)
class FeedbackWindow:
    """Which labelled events a snapshot is built from; None does not restrict."""

    since: datetime | None = None
    until: datetime | None = None
    last: int | None = None

    @classmethod
    def parse(
        cls, since: str, until: str, last: int, now: datetime | None = None
    ) -> FeedbackWindow:
        """The window of the settings: ISO 8601 times or durations back from now, empty for
        none; `last` 0 for all.

        Raises:
            DriftInputError: A time is neither ISO 8601 nor a duration (30m, 24h, 7d).
        """
        from textops.components.monitor.drift_job import parse_moment

        now = now or datetime.now(UTC)
        return cls(
            since=parse_moment(since, now) if since.strip() else None,
            until=parse_moment(until, now) if until.strip() else None,
            last=last or None,
        )


@dataclass(frozen=True)
class FeedbackSnapshot:
    """A snapshot written (or found already written) by `build_snapshot`."""

    uri: str
    metadata: dict[str, Any]
    reused: bool

    @property
    def rows(self) -> int:
        return int(self.metadata["rows"])


def fetch_labelled(store_url: str, model_name: str, window: FeedbackWindow) -> pd.DataFrame:
    """The store's labelled texts of `model_name` in `window`, without the evaluate step's.

    Raises:
        PayloadStoreError: The store cannot be opened or read; the URL shown is masked.
    """
    try:
        with open_store(store_url, create=False) as store:
            return store.fetch_window(
                model_name=model_name,
                since=window.since,
                until=window.until,
                last=window.last,
                exclude_event_prefix=EVALUATION_REQUEST_PREFIX,
                labelled=True,
            )
    except PayloadStoreError as e:
        raise PayloadStoreError(
            f"cannot read labelled feedback from the payload store {mask_url(store_url)}: {e}; "
            "nothing was changed, and the model in production keeps serving"
        ) from e


def snapshot_metadata(
    rows: pd.DataFrame,
    digest: str,
    model_name: str,
    window: FeedbackWindow,
    record: dict[str, Any],
) -> dict[str, Any]:
    """The snapshot's metadata.json content."""
    labels = rows["label"].value_counts()
    warnings = []
    if len(labels) == 1:
        warnings.append(
            f"the snapshot holds one class only ({labels.index[0]!r}): merged into the base "
            "data it shifts the class mix towards it"
        )
    return {
        "fingerprint": digest,
        "model_name": model_name,
        "rows": len(rows),
        "label_counts": {str(k): int(v) for k, v in sorted(labels.items())},
        "split_counts": {
            split: int((rows["split"] == split).sum()) for split in (TRAIN_SPLIT, TEST_SPLIT)
        },
        "window": {
            "since": window.since.isoformat() if window.since else None,
            "until": window.until.isoformat() if window.until else None,
            "last_events": window.last,
            "first": rows["received_at"].min().isoformat(),
            "last": rows["received_at"].max().isoformat(),
        },
        "created_at": datetime.now(UTC).isoformat(),
        "rules": record,
        "warnings": warnings,
    }


def write_snapshot(
    rows: pd.DataFrame, metadata: dict[str, Any], feedback_dir: str
) -> FeedbackSnapshot:
    """Write the snapshot under `feedback_dir`, unless a complete one with its fingerprint is
    there already (then that one is returned, untouched).

    Raises:
        DataError: The directory cannot be written (no permission, no object-store credentials).
    """
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq

    uri = "/".join([feedback_dir.rstrip("/"), metadata["model_name"], metadata["fingerprint"]])
    try:
        fs, path = fsspec.core.url_to_fs(uri)
        if fs.exists(f"{path}/{SNAPSHOT_METADATA}"):
            with fs.open(f"{path}/{SNAPSHOT_METADATA}", "rb") as handle:
                return FeedbackSnapshot(uri, json.load(handle), reused=True)
        table = pa.Table.from_pandas(rows, preserve_index=False).replace_schema_metadata(None)
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        fs.makedirs(path, exist_ok=True)
        fs.pipe_file(f"{path}/{SNAPSHOT_DATA}", buffer.getvalue())
        # Written last: its presence says the snapshot is complete.
        text = json.dumps(metadata, indent=2, ensure_ascii=False) + "\n"
        fs.pipe_file(f"{path}/{SNAPSHOT_METADATA}", text.encode("utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"cannot write the feedback snapshot {uri}: {e}") from e
    return FeedbackSnapshot(uri, metadata, reused=False)


def build_snapshot(
    store_url: str,
    model_name: str,
    feedback_dir: str,
    *,
    window: FeedbackWindow,
    rules: FeedbackRules,
    base_texts: Iterable[str] = (),
) -> FeedbackSnapshot | None:
    """Build the feedback snapshot of `model_name`'s labelled traffic in `window`.

    Args:
        store_url: The payload store (sqlite:///... or postgresql://...); only read.
        model_name: The model whose traffic is taken.
        feedback_dir: Directory or fsspec URI the snapshot goes under.
        window: Which labelled events.
        rules: How they become rows (see the module's docstring).
        base_texts: The base data's texts, which feedback does not repeat.

    Returns:
        The snapshot, or None when no labelled row is left (NO_FEEDBACK_MESSAGE is logged).

    Raises:
        PayloadStoreError: The store cannot be read.
        DataError: Unknown labels refused, or the snapshot cannot be written.
    """
    events = fetch_labelled(store_url, model_name, window)
    rows, record = select_rows(events, base_texts, rules)
    if rows.empty:
        logger.info("%s (%d labelled events, rules: %s)", NO_FEEDBACK_MESSAGE, len(events), record)
        return None
    metadata = snapshot_metadata(rows, fingerprint(rows), model_name, window, record)
    for warning in metadata["warnings"]:
        logger.warning("feedback snapshot: %s", warning)
    snapshot = write_snapshot(rows, metadata, feedback_dir)
    logger.info(
        "feedback snapshot %s: %d rows, labels %s (%s)",
        snapshot.uri,
        snapshot.rows,
        snapshot.metadata["label_counts"],
        "reused" if snapshot.reused else "written",
    )
    return snapshot


def collect_snapshot(
    store_url: str,
    feedback_dir: str,
    settings: Mapping[str, Any],
    target: ProductionTarget,
) -> FeedbackSnapshot | None:
    """Build the snapshot a run's settings ask for: the step's and `textops feedback`'s work.

    Args:
        store_url: The payload store.
        feedback_dir: Where the snapshot goes (already defaulted).
        settings: The values of the FeedbackSettings, DataSettings and ValidationSettings
            fields and `model_name` (a component's parameters or a config's dump).
        target: Where the model in production is, whose labels feedback is held to.

    Raises:
        PayloadStoreError, DataError, ConfigError: As `build_snapshot` and `read_base_data`.
    """
    import tempfile
    from pathlib import Path

    from textops.components.common.production_model import production_labels

    base = read_base_data(
        settings["data"], settings["data_format"], settings["text_column"], settings["label_column"]
    )
    with tempfile.TemporaryDirectory(prefix="textops-labels-") as scratch:
        served = production_labels(settings["model_name"], target, Path(scratch))
    rules = FeedbackRules(
        known_labels=known_labels(
            served.names if served else None, settings["allowed_labels"], base
        ),
        conflicts=settings["feedback_conflicts"],
        unknown_labels=settings["feedback_unknown_labels"],
        test_fraction=settings["feedback_test_fraction"],
        redact_pii=settings["redact_pii"],
    )
    window = FeedbackWindow.parse(
        settings["feedback_since"], settings["feedback_until"], settings["feedback_last"]
    )
    return build_snapshot(
        store_url,
        settings["model_name"],
        feedback_dir,
        window=window,
        rules=rules,
        base_texts=base.texts,
    )


def default_feedback_dir(feedback_dir: str, output_dir: str) -> str:
    """`feedback_dir`, or `<output_dir>/feedback` when it is empty."""
    return feedback_dir or f"{output_dir.rstrip('/')}/feedback"


def check_feedback_dir_on_a_cluster(feedback_dir: str) -> None:
    """Refuse a cluster step a snapshot directory on its pod's disk (gone when the pod ends).

    Raises:
        ConfigError: `feedback_dir` is empty or a local path.
    """
    from textops.components.common.cluster_run import on_a_cluster
    from textops.components.common.errors import ConfigError

    if not on_a_cluster(feedback_dir):
        raise ConfigError(
            f"feedback_dir is {feedback_dir!r}, a directory inside the collect_feedback "
            "step's pod: the snapshot would be gone when the pod ends, and no later run could "
            "merge it. Set the pipeline parameter feedback_dir to an object-store URI "
            "(s3://bucket/feedback), or leave feedback_store_url unset to retrain on the base "
            "data only"
        )


def snapshot_summary(snapshot: FeedbackSnapshot) -> list[str]:
    """Lines describing a snapshot for a person: where, rows, window, label counts."""
    meta = snapshot.metadata
    window = meta["window"]
    return [
        f"snapshot: {snapshot.uri}" + (" (already written, reused)" if snapshot.reused else ""),
        f"rows: {meta['rows']} ({meta['split_counts'][TRAIN_SPLIT]} train, "
        f"{meta['split_counts'][TEST_SPLIT]} held out for test)",
        f"window: {window['first']} .. {window['last']}",
        "labels: " + ", ".join(f"{k}={v}" for k, v in meta["label_counts"].items()),
        *(f"warning: {w}" for w in meta.get("warnings", [])),
    ]


def snapshot_uris(snapshot: FeedbackSnapshot | None, given: Sequence[str]) -> list[str]:
    """The snapshots a retraining uses: the fresh one, if any, then the given ones (no repeats)."""
    fresh = [snapshot.uri] if snapshot is not None else []
    return list(dict.fromkeys([*fresh, *given]))
