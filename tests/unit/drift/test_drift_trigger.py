"""`textops drift --trigger`: retraining on Kubeflow (its API faked at `submit_pipeline_run`)
and on this machine through kfp.local (real, slow)."""

import json
from pathlib import Path
from typing import Any

import pytest

from textops.components.common.config import load_config
from textops.components.common.errors import KubeflowError
from textops.pipelines import kubeflow
from textops.pipelines.cli import main
from textops.pipelines.training import pipeline_arguments

HOST = "http://ml-pipeline.kubeflow.example:8888"


@pytest.fixture
def submissions(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Runs submitted to Kubeflow, recorded instead of sent. Each package is read and its
    parameters checked against the arguments, as the real function does before any call."""
    calls: list[dict[str, Any]] = []

    def submit_pipeline_run(host: str, package: Path, **kwargs: Any) -> str:
        kubeflow.PipelinePackage.read(package).check_arguments(kwargs["arguments"])
        calls.append({"host": host, "package": Path(package), **kwargs})
        return f"run-{len(calls)}"

    monkeypatch.setattr(kubeflow, "submit_pipeline_run", submit_pipeline_run)
    return calls


@pytest.fixture
def training_config(tmp_path: Path) -> Path:
    path = tmp_path / "training.yaml"
    path.write_text("epochs: 2\nlearning_rate: 0.00005\nmodel_name: textops-classifier\n")
    return path


def drift_args(url: str, bundle: Path, out: Path) -> list[str]:
    return ["drift", "--store", url, "--bundle", str(bundle), "--output-dir", str(out)]


@pytest.mark.parametrize("host_from", ["flag", "environment"])
def test_drift_submits_the_compiled_training_pipeline_to_kubeflow(
    drift_bundle_dir,
    tweet_traffic,
    traffic_store,
    training_config,
    submissions,
    tmp_path,
    capsys,
    monkeypatch,
    host_from: str,
) -> None:
    if host_from == "environment":
        monkeypatch.setenv(kubeflow.ENDPOINT_ENV, HOST)
        host = []
    else:
        monkeypatch.delenv(kubeflow.ENDPOINT_ENV, raising=False)
        host = ["--kubeflow-host", HOST]
    url = traffic_store(tweet_traffic.head(200))
    # On Kubeflow the retrained model must roll out to KServe (cluster_run.py).
    cluster_config = tmp_path / "cluster.yaml"
    cluster_config.write_text(training_config.read_text() + "deploy_target: kserve\n")
    code = main(
        [
            *drift_args(url, drift_bundle_dir, tmp_path / "out"),
            "--no-workspace",
            "--trigger",
            "--config",
            str(cluster_config),
            *host,
            "--namespace",
            "team-a",
            "--experiment",
            "retraining",
        ]
    )
    assert code == 4
    (call,) = submissions
    assert call["host"] == HOST
    assert call["package"] == kubeflow.PIPELINE_PACKAGES["training"]
    assert call["pipeline_name"] == "textops-training"
    assert call["arguments"] == pipeline_arguments(load_config(cluster_config))
    assert call["arguments"]["epochs"] == 2
    assert (call["experiment"], call["namespace"]) == ("retraining", "team-a")
    assert "retraining: started Kubeflow run run-1" in capsys.readouterr().out


def test_no_drift_or_no_trigger_starts_nothing(
    drift_bundle_dir,
    held_out_traffic,
    tweet_traffic,
    traffic_store,
    training_config,
    submissions,
    tmp_path,
) -> None:
    out = tmp_path / "out"
    trigger = ["--no-workspace", "--trigger", "--config", str(training_config)]
    url = traffic_store(held_out_traffic.head(200))
    assert main([*drift_args(url, drift_bundle_dir, out), *trigger, "--kubeflow-host", HOST]) == 0
    url = traffic_store(tweet_traffic.head(400))
    assert main([*drift_args(url, drift_bundle_dir, out), "--no-workspace", "--last", "400"]) == 4
    assert submissions == []


def test_a_refused_submission_is_reported_after_the_drift_outputs(
    drift_bundle_dir, tweet_traffic, traffic_store, training_config, monkeypatch, tmp_path, capsys
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> str:
        raise KubeflowError(f"{HOST} refused to start a run (403 Forbidden)")

    monkeypatch.setattr(kubeflow, "submit_pipeline_run", refuse)
    url = traffic_store(tweet_traffic.head(200))
    out = tmp_path / "out"
    args = [*drift_args(url, drift_bundle_dir, out), "--no-workspace", "--trigger"]
    assert main([*args, "--config", str(training_config), "--kubeflow-host", HOST]) == 2
    assert "refused to start a run" in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["drifted"] is True


@pytest.mark.slow
@pytest.mark.integration
def test_drift_retrains_on_this_machine_through_kfp_local(
    drift_bundle_dir, tweet_traffic, traffic_store, sample_sentences, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.delenv(kubeflow.ENDPOINT_ENV, raising=False)
    data = tmp_path / "fresh.csv"
    sample_sentences.head(300).to_csv(data, index=False)
    config = tmp_path / "training.yaml"
    config.write_text(
        f"data: {data}\noutput_dir: {tmp_path / 'textops'}\nepochs: 1\nmax_seq_length: 32\n"
        "min_macro_f1: 0.0\ndevice: cpu\n"
    )
    url = traffic_store(tweet_traffic.head(200))
    args = [*drift_args(url, drift_bundle_dir, tmp_path / "out"), "--no-workspace", "--trigger"]
    assert main([*args, "--config", str(config)]) == 4
    published = tmp_path / "textops" / "models" / "textops-classifier" / "1"
    assert f"retraining: published {published}" in capsys.readouterr().out
    assert (published / "model.onnx").is_file()
