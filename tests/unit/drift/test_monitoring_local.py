"""The compiled-for-Kubeflow monitoring pipeline also runs on this machine through kfp.local:
no drift stops after the drift step; drift runs the nested training pipeline (slow)."""

import json
from pathlib import Path

import pytest

from textops.pipelines.monitoring import monitoring_pipeline


def run_locally(root: Path, **arguments: object) -> Path:
    """Run the monitoring pipeline; return the run's directory under the pipeline root."""
    from kfp import local

    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        raise_on_error=True,
    )
    monitoring_pipeline(**arguments)
    (run,) = root.iterdir()
    return run


@pytest.mark.integration
def test_no_drift_ends_after_the_drift_step(
    drift_bundle_dir, held_out_traffic, traffic_store, tmp_path
) -> None:
    url = traffic_store(held_out_traffic.head(250))
    run = run_locally(
        tmp_path / "runs",
        store_url=url,
        bundle=str(drift_bundle_dir),
        model_repository=str(tmp_path / "models"),
    )
    assert sorted(p.name for p in run.iterdir()) == ["detect-drift"]
    summary = json.loads((run / "detect-drift" / "summary").read_text())
    assert summary["status"] == "no_drift" and summary["window_rows"] == 250
    assert (run / "detect-drift" / "report").read_text().lstrip().startswith("<!DOCTYPE html>")
    assert json.loads((run / "detect-drift" / "metrics").read_text())["status"] == "no_drift"


@pytest.mark.slow
@pytest.mark.integration
def test_drift_runs_the_training_pipeline_and_publishes(
    drift_bundle_dir, tweet_traffic, traffic_store, sample_sentences, tmp_path
) -> None:
    data = tmp_path / "fresh.csv"
    sample_sentences.head(300).to_csv(data, index=False)
    url = traffic_store(tweet_traffic.head(250))
    models = tmp_path / "models"
    run = run_locally(
        tmp_path / "runs",
        store_url=url,
        bundle=str(drift_bundle_dir),
        model_repository=str(models),
        data=str(data),
        epochs=1,
        max_seq_length=32,
        min_macro_f1=0.0,
        device="cpu",
        checkpoint_dir=str(tmp_path / "checkpoints"),
    )
    steps = {p.name for p in run.iterdir()}
    assert {"detect-drift", "validate-data", "train-model", "deploy-model"} <= steps
    assert (models / "textops-classifier" / "1" / "model.onnx").is_file()
