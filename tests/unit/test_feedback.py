"""Feedback snapshots built from a real SQLite payload store, written locally and to S3."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fsspec
import pandas as pd
import pytest

from tests.s3_server import S3Bucket
from textops.components.common.errors import DataError, PayloadStoreError
from textops.components.common.feedback_snapshot import (
    SNAPSHOT_COLUMNS,
    SNAPSHOT_DATA,
    SNAPSHOT_METADATA,
    normalised_text,
)
from textops.components.common.traffic import EVALUATION_REQUEST_PREFIX
from textops.components.monitor.feedback import NO_FEEDBACK_MESSAGE, FeedbackWindow, build_snapshot
from textops.components.monitor.feedback_rules import FeedbackRules, held_out
from textops.components.monitor.store import PayloadEvent, PayloadStore, open_store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MODEL = "m"
ALL_TIME = FeedbackWindow()
RULES = FeedbackRules(known_labels=("neg", "pos"), test_fraction=0.0)


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def store(store_url: str) -> Iterator[PayloadStore]:
    with open_store(store_url) as opened:
        yield opened


def labelled(
    store: PayloadStore, event_id: str, minute: int, text: str, label: str, model: str = MODEL
) -> None:
    """One served text and its label, `minute` minutes after T0."""
    at = (T0 + timedelta(minutes=minute)).timestamp()
    store.write_events([PayloadEvent(event_id, "request", at, model, texts=(text,))])
    store.add_labels([(event_id, 0, label)])


def snapshot_rows(uri: str) -> pd.DataFrame:
    with fsspec.open(f"{uri}/{SNAPSHOT_DATA}", "rb") as handle:
        return pd.read_parquet(handle)


def test_a_snapshot_by_the_rules(store: PayloadStore, store_url: str, tmp_path: Path) -> None:
    labelled(store, "a", 0, "Great  product", "pos")
    labelled(store, "b", 1, "great product", "pos")  # exact duplicate once normalised
    labelled(store, "c", 2, "so so", "pos")
    labelled(store, "d", 3, "so so", "neg")  # conflict: a tie, the most recent wins
    labelled(store, "e", 4, "in the base data", "neg")
    labelled(store, "f", 5, "bad", "neg")
    labelled(store, f"{EVALUATION_REQUEST_PREFIX}1", 6, "evaluate's own", "neg")
    labelled(store, "g", 7, "another model's", "pos", model="other")
    store.write_events([PayloadEvent("h", "request", T0.timestamp(), MODEL, texts=("no label",))])

    snapshot = build_snapshot(
        store_url,
        MODEL,
        str(tmp_path / "feedback"),
        window=ALL_TIME,
        rules=RULES,
        base_texts=["In the base DATA"],
    )

    assert snapshot is not None and not snapshot.reused
    rows = snapshot_rows(snapshot.uri)
    assert list(rows.columns) == list(SNAPSHOT_COLUMNS)
    assert rows[["text", "label", "event_id"]].values.tolist() == [
        ["great product", "pos", "b"],
        ["so so", "neg", "d"],
        ["bad", "neg", "f"],
    ]
    meta = json.loads(Path(snapshot.uri, SNAPSHOT_METADATA).read_text())
    assert Path(snapshot.uri).name == meta["fingerprint"]
    assert Path(snapshot.uri).parent.name == MODEL
    assert meta["rows"] == 3 and meta["label_counts"] == {"neg": 2, "pos": 1}
    assert meta["split_counts"] == {"train": 3, "test": 0}
    assert meta["window"]["first"] == (T0 + timedelta(minutes=1)).isoformat()
    assert meta["rules"]["labelled_events"] == 6
    assert meta["rules"]["in_base_data_dropped"] == 1
    assert meta["rules"]["exact_duplicates_dropped"] == 1
    assert meta["rules"]["conflicting_texts"] == 1
    assert meta["rules"]["conflicting_rows_dropped"] == 1


@pytest.mark.parametrize(
    ("conflicts", "expected"),
    [("majority", [["x", "pos"]]), ("latest", [["x", "neg"]]), ("drop", [["y", "neg"]])],
)
def test_conflict_rules(
    store: PayloadStore, store_url: str, tmp_path: Path, conflicts: str, expected: list[list[str]]
) -> None:
    for minute, label in enumerate(["pos", "pos", "neg"]):
        labelled(store, f"x{minute}", minute, "x", label)
    labelled(store, "y", 0, "y", "neg")
    rules = FeedbackRules(known_labels=("neg", "pos"), conflicts=conflicts, test_fraction=0.0)
    snapshot = build_snapshot(store_url, MODEL, str(tmp_path), window=ALL_TIME, rules=rules)
    assert snapshot is not None
    rows = snapshot_rows(snapshot.uri)
    got = rows[["text", "label"]].values.tolist()
    assert [r for r in got if r[0] == "x"] == [r for r in expected if r[0] == "x"]


def test_unknown_labels_are_refused_or_dropped(
    store: PayloadStore, store_url: str, tmp_path: Path
) -> None:
    labelled(store, "a", 0, "fine", "pos")
    labelled(store, "b", 1, "what", "neutral")
    with pytest.raises(DataError, match=r"'neutral': 1.*feedback_unknown_labels"):
        build_snapshot(store_url, MODEL, str(tmp_path), window=ALL_TIME, rules=RULES)
    assert not (tmp_path / MODEL).exists()
    rules = FeedbackRules(known_labels=("neg", "pos"), unknown_labels="drop", test_fraction=0.0)
    snapshot = build_snapshot(store_url, MODEL, str(tmp_path), window=ALL_TIME, rules=rules)
    assert snapshot is not None and snapshot.metadata["rules"]["unknown_labels_dropped"] == {
        "neutral": 1
    }
    # One class left: written, with a warning.
    assert snapshot.metadata["label_counts"] == {"pos": 1}
    assert "one class only" in snapshot.metadata["warnings"][0]


def test_the_window_and_last(store: PayloadStore, store_url: str, tmp_path: Path) -> None:
    for minute in range(5):
        labelled(store, f"e{minute}", minute, f"text {minute}", "pos")
    window = FeedbackWindow(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=4))
    snapshot = build_snapshot(store_url, MODEL, str(tmp_path), window=window, rules=RULES)
    assert snapshot is not None
    assert snapshot_rows(snapshot.uri)["text"].tolist() == ["text 1", "text 2", "text 3"]
    assert snapshot.metadata["window"]["since"] == window.since.isoformat()
    last = build_snapshot(
        store_url, MODEL, str(tmp_path), window=FeedbackWindow(last=2), rules=RULES
    )
    assert last is not None and snapshot_rows(last.uri)["text"].tolist() == ["text 3", "text 4"]


def test_the_window_parses_durations_and_times() -> None:
    now = datetime(2026, 3, 31, tzinfo=UTC)
    window = FeedbackWindow.parse("30d", "2026-03-30T00:00:00", 0, now=now)
    assert window.since == datetime(2026, 3, 1, tzinfo=UTC)
    assert window.until == datetime(2026, 3, 30, tzinfo=UTC)
    assert window.last is None
    assert FeedbackWindow.parse("", "", 7, now=now) == FeedbackWindow(last=7)


def test_written_once_by_fingerprint(store: PayloadStore, store_url: str, tmp_path: Path) -> None:
    labelled(store, "a", 0, "fine", "pos")
    first = build_snapshot(store_url, MODEL, str(tmp_path), window=ALL_TIME, rules=RULES)
    assert first is not None
    data = Path(first.uri, SNAPSHOT_DATA)
    written = data.stat().st_mtime_ns
    again = build_snapshot(store_url, MODEL, str(tmp_path), window=ALL_TIME, rules=RULES)
    assert again is not None and again.reused and again.uri == first.uri
    assert again.metadata == first.metadata and data.stat().st_mtime_ns == written
    labelled(store, "b", 1, "awful", "neg")
    changed = build_snapshot(store_url, MODEL, str(tmp_path), window=ALL_TIME, rules=RULES)
    assert changed is not None and changed.uri != first.uri and not changed.reused


def test_the_held_out_share_is_stable_by_text(
    store: PayloadStore, store_url: str, tmp_path: Path
) -> None:
    texts = [f"customer message number {i}" for i in range(400)]
    for i, text in enumerate(texts):
        labelled(store, f"e{i}", i, text, "pos" if i % 2 else "neg")
    rules = FeedbackRules(known_labels=("neg", "pos"), test_fraction=0.25)
    snapshot = build_snapshot(store_url, MODEL, str(tmp_path), window=ALL_TIME, rules=rules)
    assert snapshot is not None
    rows = snapshot_rows(snapshot.uri)
    test_share = (rows["split"] == "test").mean()
    assert 0.18 < test_share < 0.32
    # The side is a function of the normalised text alone: any later snapshot agrees.
    for text, split in zip(rows["text"], rows["split"], strict=True):
        assert held_out(normalised_text(text), 0.25) == (split == "test")
        assert held_out(normalised_text(text.upper() + "  "), 0.25) == (split == "test")


def test_redaction_is_applied_again(store: PayloadStore, store_url: str, tmp_path: Path) -> None:
    labelled(store, "a", 0, "write to jane.doe@example.com please", "pos")
    rules = FeedbackRules(known_labels=("neg", "pos"), test_fraction=0.0, redact_pii=True)
    snapshot = build_snapshot(store_url, MODEL, str(tmp_path), window=ALL_TIME, rules=rules)
    assert snapshot is not None
    (text,) = snapshot_rows(snapshot.uri)["text"]
    assert "jane.doe" not in text and snapshot.metadata["rules"]["redacted"] == {"EMAIL": 1}


def test_no_labelled_feedback(
    store: PayloadStore, store_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store.write_events([PayloadEvent("a", "request", T0.timestamp(), MODEL, texts=("hi",))])
    caplog.set_level("INFO")
    assert build_snapshot(store_url, MODEL, str(tmp_path), window=ALL_TIME, rules=RULES) is None
    assert NO_FEEDBACK_MESSAGE in caplog.text
    assert list(tmp_path.iterdir()) == [tmp_path / "store.db", *tmp_path.glob("store.db-*")]


def test_the_store_is_left_as_it_was(store: PayloadStore, store_url: str, tmp_path: Path) -> None:
    labelled(store, "a", 0, "fine", "pos")
    labelled(store, "b", 1, "fine", "neg")
    before = store.fetch_window()
    build_snapshot(store_url, MODEL, str(tmp_path / "out"), window=ALL_TIME, rules=RULES)
    pd.testing.assert_frame_equal(store.fetch_window(), before)


def test_an_unreachable_store_names_it_masked(tmp_path: Path) -> None:
    url = "postgresql://textops:s3cret@127.0.0.1:1/textops?connect_timeout=2"
    with pytest.raises(PayloadStoreError, match=r"textops:\*\*\*@127\.0\.0\.1") as raised:
        build_snapshot(url, MODEL, str(tmp_path), window=ALL_TIME, rules=RULES)
    assert "s3cret" not in str(raised.value)
    assert "model in production keeps serving" in str(raised.value)


def test_a_snapshot_in_the_object_store(
    store: PayloadStore, store_url: str, s3_bucket: S3Bucket
) -> None:
    labelled(store, "a", 0, "fine", "pos")
    feedback_dir = s3_bucket.url("feedback")
    snapshot = build_snapshot(store_url, MODEL, feedback_dir, window=ALL_TIME, rules=RULES)
    assert snapshot is not None and snapshot.uri.startswith(f"{feedback_dir}/{MODEL}/")
    assert snapshot_rows(snapshot.uri)["text"].tolist() == ["fine"]
    again = build_snapshot(store_url, MODEL, feedback_dir, window=ALL_TIME, rules=RULES)
    assert again is not None and again.reused and again.metadata == snapshot.metadata
