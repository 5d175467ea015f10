"""Feedback snapshots merged into the base data: the merge policy, the held-out rows, lineage,
and the snapshots the validate step refuses.

Snapshots are written by hand in the collect_feedback step's format (a directory with
data.parquet and metadata.json), locally and on a real S3 protocol server.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.s3_server import S3Bucket
from textops.components.common.errors import DataError
from textops.components.common.settings import FeedbackMergeSettings, ValidationSettings
from textops.components.validate.checks import Columns, validate_file
from textops.components.validate.merge import merge_feedback, read_snapshot

NOW = datetime(2026, 12, 1, tzinfo=UTC)
COLUMNS = Columns(text="review", label="stars")
ALL_IN = FeedbackMergeSettings(feedback_max_share=1.0)


def base_data(rows: int = 40, labels: tuple[str, ...] = ("neg", "pos")) -> pd.DataFrame:
    """Base rows in the user's column names, the labels in turn."""
    return pd.DataFrame(
        {
            "review": [f"base review number {i}" for i in range(rows)],
            "stars": [labels[i % len(labels)] for i in range(rows)],
        }
    )


def snapshot_rows(
    labels: list[str], split: str = "train", days_old: int = 1, prefix: str = "fb"
) -> pd.DataFrame:
    """One row per label, received `days_old` days before NOW, one hour apart (newest first)."""
    return pd.DataFrame(
        {
            "text": [f"{prefix} text {i}" for i in range(len(labels))],
            "label": labels,
            "received_at": [NOW - timedelta(days=days_old, hours=i) for i in range(len(labels))],
            "event_id": [f"event-{prefix}-{i}" for i in range(len(labels))],
            "item": [0] * len(labels),
            "split": [split] * len(labels),
        }
    )


def write_snapshot(directory: str, rows: pd.DataFrame, fs: object = None) -> str:
    """Write `rows` as a snapshot directory (local path, or a key on `fs`); return it."""
    metadata = {
        "fingerprint": "f" * 64,
        "model_name": "textops-classifier",
        "rows": len(rows),
        "window": {"since": "30d", "until": "", "first": "", "last": ""},
    }
    if fs is None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        rows.to_parquet(f"{directory}/data.parquet", index=False)
        Path(directory, "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    else:
        with fs.open(f"{directory}/data.parquet", "wb") as f:  # type: ignore[attr-defined]
            rows.to_parquet(f, index=False)
        with fs.open(f"{directory}/metadata.json", "w") as f:  # type: ignore[attr-defined]
            json.dump(metadata, f)
    return directory


def merged(
    snapshots: list[pd.DataFrame], tmp_path: Path, settings: FeedbackMergeSettings = ALL_IN
) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, object]]]:
    read = [
        read_snapshot(write_snapshot(str(tmp_path / f"snap{i}"), rows))
        for i, rows in enumerate(snapshots)
    ]
    result = merge_feedback(base_data(), COLUMNS, read, settings, ("neg", "pos"), now=NOW)
    return result.frame, result.production_test, result.feedback


def test_train_rows_join_the_base_data_and_test_rows_are_held_out(tmp_path: Path) -> None:
    rows = pd.concat(
        [snapshot_rows(["pos", "neg"]), snapshot_rows(["pos"], split="test", prefix="held")]
    )
    frame, test, lineage = merged([rows], tmp_path)

    assert len(frame) == 42
    assert list(frame["review"].tail(2)) == ["fb text 0", "fb text 1"]
    assert list(frame["stars"].tail(2)) == ["pos", "neg"]
    assert test.to_dict("records") == [{"text": "held text 0", "label": "pos"}]
    assert not set(test["text"]) & set(frame["review"])
    assert lineage == [
        {
            "uri": str(tmp_path / "snap0"),
            "fingerprint": "f" * 64,
            "window": {"since": "30d", "until": "", "first": "", "last": ""},
            "rows_used": 2,
            "rows_held_out": 1,
        }
    ]


def test_a_text_held_out_in_one_snapshot_is_never_trained_on_from_another(
    tmp_path: Path,
) -> None:
    held = snapshot_rows(["pos"], split="test")
    trained = snapshot_rows(["neg", "pos"])  # "fb text 0" again, on the train side
    frame, test, _ = merged([held, trained], tmp_path)
    assert "fb text 0" in set(test["text"])
    assert "fb text 0" not in set(frame["review"])
    assert "fb text 1" in set(frame["review"])


def test_a_held_out_text_the_base_data_holds_is_no_production_test_row(tmp_path: Path) -> None:
    # The model may train on the base data's copy: scoring it there would flatter the model.
    held = snapshot_rows(["pos", "neg"], split="test", prefix="held")
    in_base = snapshot_rows(["neg"], split="test", prefix="b").assign(text=["base review number 3"])
    frame, test, lineage = merged([pd.concat([held, in_base])], tmp_path)

    assert test["text"].tolist() == ["held text 0", "held text 1"]
    assert lineage[0]["rows_held_out"] == 2
    assert len(frame) == 40  # the base data, unchanged


def test_texts_are_compared_as_the_snapshot_builder_compares_them(tmp_path: Path) -> None:
    # A held-out text, or a base-data text, that comes back in other case or spacing is the
    # same text: training on it would leak the production test set or repeat the base data.
    held = snapshot_rows(["pos"], split="test", prefix="Held")
    again = snapshot_rows(["pos"], prefix="held ").assign(text=["  HELD TEXT 0 "])
    base_again = snapshot_rows(["neg"], prefix="b").assign(text=["Base  Review number 3"])
    frame, test, _ = merged([pd.concat([held, again, base_again])], tmp_path)

    assert len(frame) == 40
    assert test["text"].tolist() == ["Held text 0"]


def test_the_share_cap_keeps_the_most_recent_feedback(tmp_path: Path) -> None:
    # 40 base rows and a share of 0.2: at most 10 feedback rows, the newest ones.
    frame, _, lineage = merged(
        [snapshot_rows(["pos", "neg"] * 15)],
        tmp_path,
        FeedbackMergeSettings(feedback_max_share=0.2),
    )
    assert len(frame) == 50
    assert list(frame["review"].tail(10)) == [f"fb text {i}" for i in range(10)]
    assert lineage[0]["rows_used"] == 10


def test_a_share_of_zero_trains_on_no_feedback_but_still_holds_out(tmp_path: Path) -> None:
    rows = pd.concat([snapshot_rows(["pos"]), snapshot_rows(["neg"], split="test", prefix="t")])
    frame, test, _ = merged([rows], tmp_path, FeedbackMergeSettings(feedback_max_share=0.0))
    assert len(frame) == 40
    assert len(test) == 1


def test_old_feedback_is_left_out_by_the_age_limit(tmp_path: Path) -> None:
    rows = pd.concat(
        [snapshot_rows(["pos"], days_old=2), snapshot_rows(["neg"], days_old=9, prefix="old")]
    )
    frame, _, _ = merged(
        [rows], tmp_path, FeedbackMergeSettings(feedback_max_share=1.0, feedback_max_age_days=7)
    )
    assert list(frame["review"].tail(1)) == ["fb text 0"]
    assert "old text 0" not in set(frame["review"])


def test_class_balance_keeps_the_base_class_mix(tmp_path: Path) -> None:
    # The base is half neg, half pos; feedback is 8 pos and 2 neg: 2 of each stay.
    frame, _, _ = merged(
        [snapshot_rows(["pos"] * 8 + ["neg"] * 2)],
        tmp_path,
        FeedbackMergeSettings(feedback_max_share=1.0, feedback_class_balance=True),
    )
    feedback = frame.iloc[40:]
    assert feedback["stars"].value_counts().to_dict() == {"pos": 2, "neg": 2}


def test_a_snapshot_with_labels_the_model_does_not_know_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"holds labels \['meh'\] that the model does not know"):
        merged([snapshot_rows(["pos", "meh"])], tmp_path)


def test_a_snapshot_with_one_class_is_merged_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        frame, _, _ = merged([snapshot_rows(["pos", "pos"])], tmp_path)
    assert len(frame) == 42
    assert "holds one class only (pos)" in caplog.text


def test_an_unreadable_snapshot_uri_names_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-snapshot")
    with pytest.raises(DataError, match=f"cannot read the feedback snapshot {missing}"):
        read_snapshot(missing)


def test_a_snapshot_in_the_object_store_is_read_like_a_local_one(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    write_snapshot(s3_bucket.path("feedback/m/abc"), snapshot_rows(["neg"]), fs=s3_bucket.fs)
    snapshot = read_snapshot(s3_bucket.url("feedback/m/abc"))
    assert snapshot.rows["text"].tolist() == ["fb text 0"]
    assert snapshot.fingerprint == "f" * 64


def _validate(tmp_path: Path, feedback: list[str]) -> tuple[dict[str, object], Path]:
    data = tmp_path / "data.csv"
    base_data().to_csv(data, index=False)
    out = tmp_path / "out"
    result = validate_file(
        data=str(data),
        data_format="auto",
        text_column="review",
        label_column="stars",
        settings=ValidationSettings(min_rows=2),
        production_labels=None,
        validated_path=str(out / "validated"),
        result_path=str(out / "result"),
        report_path=str(out / "report.html"),
        summary_path=str(out / "summary.md"),
        feedback=feedback,
        merge=ALL_IN,
        production_test_path=str(out / "production_test"),
    )
    return result.metadata(), out


def test_validation_runs_on_the_merged_data_and_records_its_lineage(tmp_path: Path) -> None:
    rows = pd.concat(
        [snapshot_rows(["pos", "neg"]), snapshot_rows(["neg"], split="test", prefix="held")]
    )
    snapshot = write_snapshot(str(tmp_path / "snap"), rows)
    metadata, out = _validate(tmp_path, [snapshot])

    assert metadata["rows"] == 42
    lineage = metadata["lineage"]
    assert isinstance(lineage, dict)
    assert lineage["base"]["data"] == str(tmp_path / "data.csv")
    assert len(lineage["base"]["fingerprint"]) == 64
    assert [(f["uri"], f["rows_used"], f["rows_held_out"]) for f in lineage["feedback"]] == [
        (snapshot, 2, 1)
    ]
    validated = pd.read_parquet(out / "validated")
    assert "held text 0" not in set(validated["text"])
    assert pd.read_parquet(out / "production_test")["text"].tolist() == ["held text 0"]


def test_without_feedback_the_production_test_set_is_empty_with_its_columns(
    tmp_path: Path,
) -> None:
    metadata, out = _validate(tmp_path, [])
    assert metadata["rows"] == 40
    assert metadata["lineage"]["feedback"] == []  # type: ignore[index]
    table = pq.read_table(out / "production_test")
    assert (table.num_rows, table.schema.names) == (0, ["text", "label"])
