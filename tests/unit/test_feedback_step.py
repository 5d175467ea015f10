"""The collect_feedback component: called as its function, and run by kfp.local."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kfp.dsl import Artifact

from tests.unit.feedback_store import MODEL, labelled_store
from textops.components.common.config import TrainingConfig
from textops.components.common.errors import ConfigError, DataError
from textops.components.monitor.collector_cli import STORE_URL_ENV
from textops.components.monitor.component import collect_feedback
from textops.components.monitor.feedback import NO_FEEDBACK_MESSAGE

OLDER = "s3://bucket/feedback/textops-classifier/older"


def step_arguments(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """The component's settings at the config's defaults, with a fresh model repository."""
    defaults = TrainingConfig().model_dump()
    names = collect_feedback.component_spec.inputs or {}
    arguments = {name: defaults[name] for name in names if name in defaults}
    arguments["model_repository"] = str(tmp_path / "models")
    arguments.update(overrides)
    return arguments


def run_step(tmp_path: Path, **overrides: Any) -> tuple[list[str], Artifact]:
    summary = Artifact(name="summary", uri=str(tmp_path / "summary"))
    outputs = collect_feedback.python_func(**step_arguments(tmp_path, **overrides), summary=summary)
    return list(outputs.snapshots), summary


def test_the_step_writes_a_snapshot_and_lists_the_snapshots(tmp_path: Path) -> None:
    url = labelled_store(
        tmp_path / "store.db",
        [("a fresh complaint", "negative"), ("a fresh compliment", "positive")],
    )
    snapshots, summary = run_step(
        tmp_path, feedback_store_url=url, feedback_snapshots=[OLDER], feedback_test_fraction=0.0
    )
    fresh = summary.metadata["snapshot"]
    assert snapshots == [fresh["uri"], OLDER]
    # Without feedback_dir, beside the model repository: <output_dir>/feedback/<model>/<fp>.
    assert Path(fresh["uri"]).parent == tmp_path / "feedback" / MODEL
    assert fresh["label_counts"] == {"negative": 1, "positive": 1}


def test_labels_outside_the_base_data_are_refused_with_no_model_in_production(
    tmp_path: Path,
) -> None:
    url = labelled_store(tmp_path / "store.db", [("meh", "neutral")])
    with pytest.raises(DataError, match="neutral"):
        run_step(tmp_path, feedback_store_url=url)


def test_no_store_retrains_on_the_given_snapshots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(STORE_URL_ENV, raising=False)
    caplog.set_level("INFO")
    snapshots, summary = run_step(tmp_path, feedback_snapshots=[OLDER])
    assert snapshots == [OLDER] and summary.metadata["snapshot"] is None
    assert NO_FEEDBACK_MESSAGE in caplog.text


def test_the_store_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = labelled_store(tmp_path / "store.db", [("nothing but praise", "positive")])
    monkeypatch.setenv(STORE_URL_ENV, url)
    snapshots, _ = run_step(tmp_path)
    assert len(snapshots) == 1 and Path(snapshots[0], "data.parquet").is_file()


def test_a_cluster_step_refuses_a_local_feedback_dir(tmp_path: Path) -> None:
    url = labelled_store(tmp_path / "store.db", [("nothing but praise", "positive")])
    summary = Artifact(name="summary", uri="s3://pipeline-root/run/collect-feedback/summary")
    with pytest.raises(ConfigError, match="feedback_dir"):
        collect_feedback.python_func(
            **step_arguments(tmp_path, feedback_store_url=url), summary=summary
        )


@pytest.mark.integration
def test_the_step_runs_in_kfp_local(tmp_path: Path) -> None:
    from kfp import local

    url = labelled_store(tmp_path / "store.db", [("a complaint", "negative")])
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "runs"),
        raise_on_error=True,
    )
    arguments = step_arguments(
        tmp_path, feedback_store_url=url, feedback_dir=str(tmp_path / "feedback")
    )
    task = collect_feedback(**arguments)
    (snapshot,) = task.outputs["snapshots"]
    meta = json.loads(Path(snapshot, "metadata.json").read_text())
    assert meta["rows"] == 1 and meta["model_name"] == MODEL
