"""`textops drift --trigger`: retraining on Kubeflow, through the real `kfp.Client` against the
fake Kubeflow Pipelines API of tests/unit/kubeflow_api.py, and on this machine through kfp.local
(real, slow)."""

import json
from pathlib import Path

import pytest
import yaml

from textops.components.common.config import load_config
from textops.pipelines.cli import main
from textops.pipelines.kubeflow import ENDPOINT_ENV, PIPELINE_PACKAGES, TOKEN_ENV
from textops.pipelines.training import pipeline_arguments


@pytest.fixture
def training_config(tmp_path: Path) -> Path:
    path = tmp_path / "training.yaml"
    # On Kubeflow the retrained model must roll out to KServe (cluster_run.py).
    path.write_text(
        "epochs: 2\nlearning_rate: 0.00005\nmodel_name: textops-classifier\ndeploy_target: kserve\n"
    )
    return path


def drift_args(url: str, bundle: Path, out: Path) -> list[str]:
    return ["drift", "--store", url, "--bundle", str(bundle), "--output-dir", str(out)]


@pytest.mark.parametrize("host_from", ["flag", "environment"])
def test_drift_submits_the_compiled_training_pipeline_to_kubeflow(
    kubeflow,
    drift_bundle_dir,
    tweet_traffic,
    traffic_store,
    training_config,
    tmp_path,
    capsys,
    monkeypatch,
    host_from: str,
) -> None:
    if host_from == "environment":
        monkeypatch.setenv(ENDPOINT_ENV, kubeflow.url)
        host = []
    else:
        host = ["--kubeflow-host", kubeflow.url]
    # A cluster's API wants a token: the one in the environment, as the CronJob mounts it.
    kubeflow.token = "drift-job-token"
    monkeypatch.setenv(TOKEN_ENV, kubeflow.token)
    url = traffic_store(tweet_traffic.head(200))
    code = main(
        [
            *drift_args(url, drift_bundle_dir, tmp_path / "out"),
            "--no-workspace",
            "--trigger",
            "--config",
            str(training_config),
            *host,
            "--namespace",
            "team-a",
            "--experiment",
            "retraining",
        ]
    )

    assert code == 4
    (run,) = kubeflow.runs.values()
    (version,) = kubeflow.versions.values()
    (pipeline,) = kubeflow.pipelines.values()
    (experiment,) = kubeflow.experiments.values()
    # The checked-in compiled training pipeline, uploaded as it is (its first document is the
    # pipeline spec; the platform spec follows).
    compiled = next(yaml.safe_load_all(PIPELINE_PACKAGES["training"].read_text()))
    assert version["pipeline_spec"] == compiled
    assert pipeline["display_name"] == "textops-training"
    assert run["pipeline_version_reference"] == {
        "pipeline_id": pipeline["pipeline_id"],
        "pipeline_version_id": version["pipeline_version_id"],
    }
    # With the settings of the config, every one of them, as `textops submit` sends them.
    parameters = run["runtime_config"]["parameters"]
    assert parameters == pipeline_arguments(load_config(training_config))
    assert (parameters["epochs"], parameters["deploy_target"]) == (2, "kserve")
    assert run["experiment_id"] == experiment["experiment_id"]
    assert (experiment["display_name"], experiment["namespace"]) == ("retraining", "team-a")
    assert f"retraining: started Kubeflow run {run['run_id']}" in capsys.readouterr().out


def test_no_drift_or_no_trigger_starts_nothing(
    kubeflow,
    drift_bundle_dir,
    held_out_traffic,
    tweet_traffic,
    traffic_store,
    training_config,
    tmp_path,
    monkeypatch,
) -> None:
    out = tmp_path / "out"
    trigger = ["--no-workspace", "--trigger", "--config", str(training_config)]
    url = traffic_store(held_out_traffic.head(200))
    assert (
        main([*drift_args(url, drift_bundle_dir, out), *trigger, "--kubeflow-host", kubeflow.url])
        == 0
    )
    # Drift without --trigger: not even with an address in the environment.
    monkeypatch.setenv(ENDPOINT_ENV, kubeflow.url)
    url = traffic_store(tweet_traffic.head(400))
    assert main([*drift_args(url, drift_bundle_dir, out), "--no-workspace", "--last", "400"]) == 4
    assert kubeflow.requests == []


def test_a_refused_submission_is_reported_after_the_drift_outputs(
    kubeflow, drift_bundle_dir, tweet_traffic, traffic_store, training_config, tmp_path, capsys
) -> None:
    kubeflow.fail("POST", "/runs", 403, "User system:serviceaccount:drift cannot create runs")
    url = traffic_store(tweet_traffic.head(200))
    out = tmp_path / "out"
    args = [*drift_args(url, drift_bundle_dir, out), "--no-workspace", "--trigger"]

    code = main([*args, "--config", str(training_config), "--kubeflow-host", kubeflow.url])

    assert code == 2
    error = capsys.readouterr().err
    assert "cannot create runs" in error and kubeflow.url in error
    assert json.loads((out / "summary.json").read_text())["drifted"] is True
    assert kubeflow.requested("POST", "/runs") == 1 and kubeflow.runs == {}


@pytest.mark.slow
@pytest.mark.integration
def test_drift_retrains_on_this_machine_through_kfp_local(
    drift_bundle_dir, tweet_traffic, traffic_store, sample_sentences, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.delenv(ENDPOINT_ENV, raising=False)
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
