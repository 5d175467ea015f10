"""Feedback snapshots: labelled production traffic turned into a dataset, written once.

A snapshot is the directory `<feedback_dir>/<model_name>/<fingerprint>/` (a local path or an
fsspec URI such as `s3://bucket/feedback`) holding

- `data.parquet`: one row per distinct text, columns text, label, received_at, event_id, item
  and split ("train", or "test" for the held-out production test set);
- `metadata.json`: fingerprint, model name, row, label and split counts, the time window, when
  it was written, and the rules applied with what each one removed.

The rules, in the order applied to the store's labelled events for the model in the window
(the evaluate step's own requests are never read):

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

The fingerprint is the sha256 of the rows' canonical content, so the same feedback gives the
same directory: one that exists already is reused, never rewritten. `metadata.json` is written
last, so a directory without it (a write cut short) is written again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from textops.components.common.errors import DataError, PayloadStoreError
from textops.components.common.labels import canonical_label
from textops.components.common.traffic import EVALUATION_REQUEST_PREFIX
from textops.components.monitor.store import mask_url, open_store

if TYPE_CHECKING:
    import pandas as pd

    from textops.components.common.production_model import ProductionTarget

logger = logging.getLogger(__name__)

SNAPSHOT_DATA = "data.parquet"
SNAPSHOT_METADATA = "metadata.json"
SNAPSHOT_COLUMNS = ("text", "label", "received_at", "event_id", "item", "split")
TRAIN_SPLIT, TEST_SPLIT = "train", "test"
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


@dataclass(frozen=True)
class FeedbackSnapshot:
    """A snapshot written (or found already written) by `build_snapshot`."""

    uri: str
    metadata: dict[str, Any]
    reused: bool

    @property
    def rows(self) -> int:
        return int(self.metadata["rows"])


def normalised_text(text: str) -> str:
    """The form texts are compared in: whitespace collapsed, ends stripped, casefolded."""
    return " ".join(text.split()).casefold()


def held_out(key: str, test_fraction: float) -> bool:
    """Whether the text whose normalised form is `key` belongs to the production test set."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < test_fraction * 2**64


def fetch_labelled(store_url: str, model_name: str, window: FeedbackWindow) -> pd.DataFrame:
    """The store's labelled texts of `model_name` in `window`, without the evaluate step's.

    Raises:
        PayloadStoreError: The store cannot be opened or read; the URL shown is masked.
    """
    try:
        with open_store(store_url) as store:
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
