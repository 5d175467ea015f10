"""`textops submit` and `submit_pipeline_run`: the real kfp.Client against a fake KFP API."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from textops.components.common.errors import ConfigError, KubeflowError
from textops.pipelines.cli import main
from textops.pipelines.kubeflow import PipelinePackage, connect, submit_pipeline_run

#: A run's arguments as a cluster needs them: the model rolls out to KServe (cluster_run.py).
ARGUMENTS = {
    "data": "s3://bucket/reviews.parquet",
    "epochs": 2,
    "learning_rate": 5e-5,
    "deploy_target": "kserve",
}


def _submit(url: str, package: Path, **kwargs: object) -> str:
    arguments = kwargs.pop("arguments", ARGUMENTS)
    return submit_pipeline_run(
        url,
        PipelinePackage.read(package),
        arguments=arguments,
        **kwargs,  # type: ignore[arg-type]
    ).run_id


def test_first_submit_creates_the_pipeline_its_version_the_experiment_and_a_run(
    kubeflow, training_package: Path
) -> None:
    from textops.components.common.config import TrainingConfig
    from textops.pipelines.training import pipeline_arguments

    # Every parameter, as `textops submit` sends them.
    arguments = pipeline_arguments(
        TrainingConfig(epochs=2, data="s3://bucket/reviews.parquet", deploy_target="kserve")
    )
    run_id = _submit(kubeflow.url, training_package, arguments=arguments)

    assert [p["display_name"] for p in kubeflow.pipelines.values()] == ["textops-training"]
    (version,) = kubeflow.versions.values()
    assert version["display_name"] == PipelinePackage.read(training_package).version_name
    assert version["pipeline_spec"]["pipelineInfo"]["name"] == "textops-training"
    assert [e["display_name"] for e in kubeflow.experiments.values()] == ["textops"]
    run = kubeflow.runs[run_id]
    assert run["pipeline_version_reference"] == {
        "pipeline_id": version["pipeline_id"],
        "pipeline_version_id": version["pipeline_version_id"],
    }
    assert run["runtime_config"]["parameters"] == arguments
    assert run["runtime_config"]["parameters"]["data"] == "s3://bucket/reviews.parquet"


def test_an_unchanged_package_reuses_its_version(kubeflow, training_package: Path) -> None:
    first = _submit(kubeflow.url, training_package)
    second = _submit(kubeflow.url, training_package)

    assert first != second and {first, second} == set(kubeflow.runs)
    assert len(kubeflow.versions) == 1
    assert kubeflow.requested("POST", "/pipelines/upload_version") == 1
    assert kubeflow.requested("POST", "/experiments") == 1


def test_a_changed_package_becomes_a_new_version_of_the_same_pipeline(
    kubeflow, training_package: Path, tmp_path: Path
) -> None:
    changed = tmp_path / "changed.yaml"
    changed.write_text(training_package.read_text() + "# recompiled\n")
    _submit(kubeflow.url, training_package)
    run_id = _submit(kubeflow.url, changed)
    # Back to the first content: its version is still there, nothing is uploaded.
    _submit(kubeflow.url, training_package)

    assert len(kubeflow.pipelines) == 1
    names = {v["display_name"]: k for k, v in kubeflow.versions.items()}
    assert set(names) == {
        PipelinePackage.read(training_package).version_name,
        PipelinePackage.read(changed).version_name,
    }
    reference = kubeflow.runs[run_id]["pipeline_version_reference"]
    assert reference["pipeline_version_id"] == names[PipelinePackage.read(changed).version_name]
    assert kubeflow.requested("POST", "/pipelines/upload_version") == 2


def test_the_version_is_found_across_pages(kubeflow, training_package: Path) -> None:
    pipeline = kubeflow.add_pipeline("textops-training")
    for n in range(5):  # uploaded earlier, by hand or by older releases
        kubeflow.add_version(pipeline["pipeline_id"], f"old-{n}", training_package.read_bytes())
    _submit(kubeflow.url, training_package)
    _submit(kubeflow.url, training_package)

    assert len(kubeflow.versions) == 6
    assert len(kubeflow.pipelines) == 1
    assert kubeflow.requested("GET", "/pipelines/pipeline-1/versions") >= 3 * 2


def test_an_argument_the_pipeline_does_not_take_is_refused_before_any_request(
    kubeflow, training_package: Path
) -> None:
    with pytest.raises(ConfigError, match=r"epochz \(did you mean epochs\?\): not a parameter"):
        _submit(kubeflow.url, training_package, arguments={"epochz": 3})
    assert kubeflow.requests == []


def test_the_token_is_sent_and_a_refusal_says_how_to_fix_it(
    kubeflow, training_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeflow.token = "s3cr3t-token"
    with pytest.raises(KubeflowError) as refused:
        _submit(kubeflow.url, training_package)
    message = str(refused.value)
    assert "401" in message and "KF_PIPELINES_TOKEN" in message and kubeflow.url in message
    # One health probe, not kfp's five attempts five seconds apart.
    assert kubeflow.requests == [("GET", "/healthz")]

    monkeypatch.setenv("KF_PIPELINES_TOKEN", "s3cr3t-token")
    assert _submit(kubeflow.url, training_package) in kubeflow.runs


def test_a_server_error_names_the_step_and_the_servers_reason(
    kubeflow, training_package: Path
) -> None:
    kubeflow.fail("POST", "/runs", 404, "experiment experiment-9 not found")
    with pytest.raises(KubeflowError) as error:
        _submit(kubeflow.url, training_package)
    message = str(error.value)
    assert "404" in message and "start a run of textops-training" in message
    assert "experiment experiment-9 not found" in message and "--kubeflow-host" in message


def test_an_unreachable_host_is_a_clear_error(training_package: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(
        KubeflowError, match=r"cannot reach Kubeflow Pipelines at http://127\.0\.0\.1"
    ):
        connect(f"http://127.0.0.1:{port}")


@pytest.mark.parametrize("namespace", [None, "team-a"])
def test_a_login_page_is_not_taken_for_the_api(kubeflow, namespace: str | None) -> None:
    kubeflow.login_page = True
    with pytest.raises(KubeflowError, match="not the Kubeflow Pipelines API"):
        connect(kubeflow.url, namespace=namespace)


def test_the_namespace_reaches_the_experiment(kubeflow, training_package: Path) -> None:
    _submit(kubeflow.url, training_package, namespace="team-a")
    (experiment,) = kubeflow.experiments.values()
    assert experiment["namespace"] == "team-a"
    # The API is probed once either way, so a wrong address or login page fails at once.
    assert kubeflow.requested("GET", "/healthz") == 1


def test_the_submit_command(
    kubeflow, training_package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text("data: s3://bucket/tickets.parquet\nepochs: 4\ndeploy_target: kserve\n")
    argv = ["submit", "--kubeflow-host", kubeflow.url, "--package", str(training_package)]
    argv += ["--config", str(config), "--param", "seed=7", "--experiment", "nightly"]
    code = main([*argv, "--service-account", "textops-pipeline"])

    assert code == 0
    (run,) = kubeflow.runs.values()
    parameters = run["runtime_config"]["parameters"]
    assert parameters["data"] == "s3://bucket/tickets.parquet"
    assert parameters["epochs"] == 4 and parameters["seed"] == 7
    assert run["service_account"] == "textops-pipeline"
    assert [e["display_name"] for e in kubeflow.experiments.values()] == ["nightly"]
    out = capsys.readouterr().out
    assert f"started run {run['run_id']}" in out and "(uploaded)" in out
    assert f"{kubeflow.url}/#/runs/details/{run['run_id']}" in out

    assert main(argv) == 0
    assert "(unchanged, reused)" in capsys.readouterr().out


def test_the_submit_command_takes_the_host_from_the_environment(
    kubeflow, training_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KF_PIPELINES_ENDPOINT", kubeflow.url)
    argv = ["submit", "--package", str(training_package), "--param", "deploy_target=kserve"]
    assert main(argv) == 0
    assert len(kubeflow.runs) == 1


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["submit"], "no Kubeflow Pipelines address"),
        (["submit", "--kubeflow-host", "localhost:8080"], "must be an http:// or https:// URL"),
        (["submit", "--kubeflow-host", "http://x", "--param", "nope=1"], "nope: not a parameter"),
    ],
)
def test_submit_command_errors(
    kubeflow, argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert expected in capsys.readouterr().err
    assert kubeflow.requests == []


def test_monitoring_takes_the_training_settings_it_shares_and_params(
    kubeflow, monitoring_package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["submit", "--kubeflow-host", kubeflow.url, "--pipeline", "monitoring"]
    argv += ["--package", str(monitoring_package)]
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 1\ndata: s3://bucket/x.csv\n")

    assert main([*argv, "--param", "since=6h"]) == 0
    assert main([*argv, "--config", str(config)]) == 0
    first, second = (r["runtime_config"]["parameters"] for r in kubeflow.runs.values())
    assert first == {"since": "6h"}  # the pipeline's own defaults stand
    assert second == {"epochs": 1, "model_name": "textops-classifier"}
    assert [p["display_name"] for p in kubeflow.pipelines.values()] == ["textops-monitoring"]


def test_a_pipeline_that_takes_no_training_settings_refuses_config(
    kubeflow, stand_in_pipeline, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    package = stand_in_pipeline(tmp_path / "p.yaml", "textops-monitoring", {"since": "24h"})
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 1\n")
    argv = ["submit", "--kubeflow-host", kubeflow.url, "--pipeline", "monitoring"]
    argv += ["--package", str(package)]
    assert main([*argv, "--config", str(config)]) == 2
    assert "takes none of them" in capsys.readouterr().err
    assert kubeflow.requests == []


def test_a_missing_package_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="compile it first"):
        PipelinePackage.read(tmp_path / "monitoring.yaml")
