"""Retraining on feedback through the whole pipeline: `textops run` and kfp.local.

A feedback snapshot, written by hand in collect_feedback's format, is merged into the base
data; its held-out rows are scored by the gate as production traffic and never reach the
train split. A bad snapshot stops the run before anything is published.
"""

import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from textops.components.common.config import sample_data_path
from textops.components.monitor.collector_cli import STORE_URL_ENV

pytestmark = pytest.mark.integration

TextopsCli = Callable[..., subprocess.CompletedProcess[str]]
MODEL_NAME = "feedback-test"


def write_snapshot(directory: Path, rows: pd.DataFrame) -> Path:
    """`rows` (text, label, split) as a snapshot directory in the collect_feedback format."""
    now = datetime.now(UTC)
    directory.mkdir(parents=True)
    rows.assign(
        received_at=now, event_id=[f"event-{i}" for i in range(len(rows))], item=0
    ).to_parquet(directory / "data.parquet", index=False)
    metadata = {
        "fingerprint": directory.name,
        "model_name": MODEL_NAME,
        "rows": len(rows),
        "window": {"since": "30d", "until": "", "first": now.isoformat(), "last": now.isoformat()},
    }
    (directory / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    return directory


def test_feedback_is_trained_on_its_held_out_rows_are_the_production_test_set(
    tmp_path: Path,
    tiny_model_dir: Path,
    textops_cli: TextopsCli,
    tree_digest: Callable[[Path], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(STORE_URL_ENV, raising=False)  # no payload store: the snapshot alone
    sample = pd.read_csv(sample_data_path())
    by_label = sample.groupby("label")
    data = tmp_path / "reviews.csv"
    by_label.head(150).to_csv(data, index=False)
    # Other sentences of the sample: 40 to train on, 20 held out as production traffic.
    feedback = by_label.nth(list(range(150, 180)))[["text", "label"]].reset_index(drop=True)
    feedback["split"] = ["test" if i % 3 == 0 else "train" for i in range(len(feedback))]
    snapshot = write_snapshot(tmp_path / "feedback" / "a", feedback)
    # The sample repeats a few sentences: a held-out one the base data holds too is no
    # production test row, since the model may train on it.
    held_out = set(feedback.loc[feedback["split"] == "test", "text"])
    held_out -= set(pd.read_csv(data)["text"])
    output = tmp_path / "out"
    run = [
        "run",
        "--data", str(data),
        "--base-model", str(tiny_model_dir),
        "--epochs", "1",
        "--min-macro-f1", "0",  # a random tiny model: this test is about data, not quality
        "--max-regression", "1",
        "--max-production-regression", "1",
        "--model-name", MODEL_NAME,
        "--output-dir", str(output),
    ]  # fmt: skip

    first = textops_cli(*run, "--feedback-snapshots", str(snapshot))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "no labelled feedback: retraining on the base data only" in first.stdout + first.stderr
    metrics_line = next(line for line in first.stdout.splitlines() if "test metrics:" in line)
    metrics = json.loads(metrics_line.split("test metrics:", 1)[1])
    assert metrics["production_test_rows"] == len(held_out)
    assert "production_accuracy" in metrics and "production_macro_f1" in metrics
    assert f"on production traffic ({len(held_out)} rows)" in first.stdout
    production = f"production test:    accuracy {metrics['production_accuracy']:.3f}, no champion"
    assert f"{production} ({len(held_out)} rows)" in first.stdout
    assert f"base test:          accuracy {metrics['accuracy']:.3f}, no champion" in first.stdout
    # Merged before the split: the snapshot's training rows are in the data, its held-out
    # rows in no split the model learnt from.
    (train_split,) = output.rglob("preprocess-data/train_data")
    (validation_split,) = output.rglob("preprocess-data/validation_data")
    learnt = set(pd.read_parquet(train_split)["text"]) | set(
        pd.read_parquet(validation_split)["text"]
    )
    assert not held_out & learnt
    (validated,) = output.rglob("validate-data/validated_data")
    trained_feedback = set(feedback.loc[feedback["split"] == "train", "text"])
    assert trained_feedback <= set(pd.read_parquet(validated)["text"])
    repository = output / "models"
    assert json.loads((repository / MODEL_NAME / "current.json").read_text())["version"] == 1

    # A bad snapshot stops the run at validate; version 1 stays in production, untouched.
    before = tree_digest(repository)
    unknown = feedback.assign(label=["meh", *feedback["label"][1:]])
    bad = write_snapshot(tmp_path / "feedback" / "b", unknown)
    refused = textops_cli(*run, "--feedback-snapshots", str(bad))
    assert refused.returncode != 0
    assert "holds labels ['meh'] that the model does not know" in refused.stdout + refused.stderr
    missing = textops_cli(*run, "--feedback-snapshots", str(tmp_path / "feedback" / "gone"))
    assert missing.returncode != 0
    assert f"cannot read the feedback snapshot {tmp_path / 'feedback' / 'gone'}" in (
        missing.stdout + missing.stderr
    )
    assert tree_digest(repository) == before
    assert not (repository / MODEL_NAME / "2").exists()
