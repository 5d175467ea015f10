"""`textops schedule`: recurring runs kept idempotently, with the real kfp.Client against a
fake KFP API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from textops.components.common.errors import ConfigError, KubeflowError
from textops.pipelines.cli import main
from textops.pipelines.kubeflow import PipelinePackage, connect
from textops.pipelines.schedules import (
    SCHEDULES,
    create_or_replace_schedule,
    delete_schedule,
    list_schedules,
    set_schedule_enabled,
    validate_cron,
)

#: A run's arguments as a cluster needs them: the model rolls out to KServe (cluster_run.py).
ARGUMENTS = {"data": "s3://bucket/reviews.parquet", "epochs": 2, "deploy_target": "kserve"}


def _apply(fake: Any, package: Path, arguments: dict[str, Any] | None = None, **kwargs: Any):
    client = connect(fake.url)
    return create_or_replace_schedule(
        client,
        SCHEDULES["retraining"],
        PipelinePackage.read(package),
        ARGUMENTS if arguments is None else arguments,
        experiment="textops",
        host=fake.url,
        **kwargs,
    )


def test_create_sends_the_cron_no_catchup_and_one_at_a_time(
    kubeflow, training_package: Path
) -> None:
    result = _apply(kubeflow, training_package)

    assert result.action == "created"
    (run,) = kubeflow.recurring_runs.values()
    assert run["recurring_run_id"] == result.recurring_run_id
    assert run["display_name"] == "textops-retraining"
    assert run["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * 1"}}
    assert run["no_catchup"] is True
    assert int(run["max_concurrency"]) == 1
    assert run["mode"] == "ENABLE"
    assert run["runtime_config"]["parameters"] == ARGUMENTS
    version = kubeflow.versions[run["pipeline_version_reference"]["pipeline_version_id"]]
    assert version["display_name"] == PipelinePackage.read(training_package).version_name


def test_create_twice_keeps_one_recurring_run(kubeflow, training_package: Path) -> None:
    first = _apply(kubeflow, training_package)
    second = _apply(kubeflow, training_package)

    assert second.action == "unchanged"
    assert second.recurring_run_id == first.recurring_run_id
    assert list(kubeflow.recurring_runs) == [first.recurring_run_id]
    assert kubeflow.requested("POST", "/recurringruns") == 1
    assert kubeflow.requested("DELETE", "/recurringruns/.*") == 0


@pytest.mark.parametrize(
    "change",
    [
        {"cron": "0 30 4 * * 2"},
        {"arguments": {**ARGUMENTS, "epochs": 5}},
        {"package": "changed"},
        {"service_account": "textops-pipeline"},
    ],
    ids=["cron", "arguments", "package", "service-account"],
)
def test_a_changed_specification_replaces_the_recurring_run(
    kubeflow, training_package: Path, tmp_path: Path, change: dict[str, Any]
) -> None:
    first = _apply(kubeflow, training_package)
    package = training_package
    if change.pop("package", None):
        package = tmp_path / "changed.yaml"
        package.write_text(training_package.read_text() + "# recompiled\n")
    second = _apply(kubeflow, package, **change)

    assert second.action == "replaced"
    (run,) = kubeflow.recurring_runs.values()
    assert run["recurring_run_id"] == second.recurring_run_id != first.recurring_run_id
    assert run["trigger"]["cron_schedule"]["cron"] == change.get("cron", "0 0 3 * * 1")
    assert run["runtime_config"]["parameters"] == change.get("arguments", ARGUMENTS)
    assert run.get("service_account") == change.get("service_account")
    # And again with the new specification: nothing to do.
    assert _apply(kubeflow, package, **change).action == "unchanged"


def test_replacing_a_paused_schedule_keeps_it_paused(kubeflow, training_package: Path) -> None:
    _apply(kubeflow, training_package)
    set_schedule_enabled(
        connect(kubeflow.url), "retraining", False, experiment="textops", host=kubeflow.url
    )
    result = _apply(kubeflow, training_package, cron="0 0 5 * * 1")

    assert result.action == "replaced" and result.enabled is False
    (run,) = kubeflow.recurring_runs.values()
    assert run["status"] == "DISABLED"


def test_duplicates_left_by_hand_are_collapsed_into_one(kubeflow, training_package: Path) -> None:
    client = connect(kubeflow.url)
    first = _apply(kubeflow, training_package)
    run = kubeflow.recurring_runs[first.recurring_run_id]
    client.create_recurring_run(  # the same name, created outside textops
        experiment_id=run["experiment_id"],
        job_name="textops-retraining",
        cron_expression="0 0 1 * * *",
        pipeline_id=run["pipeline_version_reference"]["pipeline_id"],
        version_id=run["pipeline_version_reference"]["pipeline_version_id"],
    )
    assert len(kubeflow.recurring_runs) == 2

    result = _apply(kubeflow, training_package)
    assert result.action == "replaced"
    assert list(kubeflow.recurring_runs) == [result.recurring_run_id]


def test_list_pause_resume_delete(
    kubeflow, training_package: Path, monitoring_package: Path
) -> None:
    client = connect(kubeflow.url)
    _apply(kubeflow, training_package)
    create_or_replace_schedule(
        client,
        SCHEDULES["drift"],
        PipelinePackage.read(monitoring_package),
        {},
        experiment="textops",
        host=kubeflow.url,
    )
    kubeflow.page_limit = 1  # one recurring run per page: listing must follow the pages

    def listed() -> dict[str, tuple[bool, str]]:
        found = list_schedules(client, experiment="textops", host=kubeflow.url)
        return {s.display_name: (s.enabled, s.cron) for s in found}

    assert listed() == {
        "textops-retraining": (True, "0 0 3 * * 1"),
        "textops-drift-check": (True, "0 0 * * * *"),
    }
    set_schedule_enabled(client, "drift", False, experiment="textops", host=kubeflow.url)
    assert listed()["textops-drift-check"] == (False, "0 0 * * * *")
    set_schedule_enabled(
        client, "textops-drift-check", True, experiment="textops", host=kubeflow.url
    )
    assert listed()["textops-drift-check"] == (True, "0 0 * * * *")
    delete_schedule(client, "retraining", experiment="textops", host=kubeflow.url)
    assert set(listed()) == {"textops-drift-check"}
    with pytest.raises(KubeflowError, match="no recurring run named textops-retraining"):
        delete_schedule(client, "retraining", experiment="textops", host=kubeflow.url)
    assert list_schedules(client, experiment="elsewhere", host=kubeflow.url) == []


@pytest.mark.parametrize(
    "cron", ["0 0 3 * * 1", "0 0 * * * *", "*/30 5,35 8-18/2 ? JAN-MAR MON-FRI", "0 0 0 1 * ?"]
)
def test_valid_crons(cron: str) -> None:
    assert validate_cron(f"  {cron} ") == cron


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("0 3 * * 1", "has 5 fields; Kubeflow Pipelines takes 6, seconds first: '0 0 3 * * 1'"),
        ("0 0 3 * * 1 2026", "has 7 fields"),
        ("0 60 3 * * 1", "minute field '60': minute must be 0-59"),
        ("0 0 24 * * *", "hour field '24'"),
        ("0 0 0 0 * *", "day of month field '0'"),
        ("0 0 0 * 13 *", "month field '13'"),
        ("0 0 0 * * 8", "day of week field '8'"),
        ("0 0 ? * * *", "? is for the day fields only"),
        ("0 */0 * * * *", "a step must be at least 1"),
        ("0 0 18-8 * * *", "runs backwards"),
        ("0 0 @daily * * *", "expected *, N, N-M"),
    ],
)
def test_invalid_crons_say_what_is_wrong(cron: str, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        validate_cron(cron)
    assert expected in str(error.value)


def test_a_bad_cron_is_refused_before_any_request(kubeflow, training_package: Path) -> None:
    argv = ["schedule", "create", "retraining", "--kubeflow-host", kubeflow.url]
    argv += ["--cron", "0 3 * * 1"]
    assert main([*argv, "--package", str(training_package)]) == 2
    assert kubeflow.requests == []


def test_the_schedule_commands(
    kubeflow,
    training_package: Path,
    monitoring_package: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    host = ["--kubeflow-host", kubeflow.url]
    drift = ["schedule", "create", "drift", *host, "--package", str(monitoring_package)]
    assert main([*drift, "--param", "since=2h"]) == 0
    assert "textops-drift-check created (0 0 * * * *" in capsys.readouterr().out
    assert main([*drift, "--param", "since=2h"]) == 0
    assert "textops-drift-check unchanged" in capsys.readouterr().out
    (run,) = kubeflow.recurring_runs.values()
    assert run["runtime_config"]["parameters"] == {"since": "2h"}

    assert main(["schedule", "pause", "drift", *host]) == 0
    assert "textops-drift-check paused" in capsys.readouterr().out
    assert main(["schedule", "list", *host]) == 0
    listing = capsys.readouterr().out
    assert "textops-drift-check" in listing and "paused" in listing and "0 0 * * * *" in listing
    assert main(["schedule", "resume", "drift", *host]) == 0
    assert main(["schedule", "delete", "drift", *host]) == 0
    assert kubeflow.recurring_runs == {}
    capsys.readouterr()
    assert main(["schedule", "delete", "drift", *host]) == 2
    assert "no recurring run named textops-drift-check" in capsys.readouterr().err


def test_create_needs_a_name_for_per_schedule_flags(
    kubeflow, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["schedule", "create", "--kubeflow-host", kubeflow.url, "--cron", "0 0 1 * * *"]
    assert main(argv) == 2
    assert "--cron and --package apply to one schedule" in capsys.readouterr().err
    assert kubeflow.requests == []


def test_create_with_every_default_schedules_retraining_and_drift(
    kubeflow, monkeypatch: pytest.MonkeyPatch, monitoring_package: Path, tmp_path: Path
) -> None:
    from textops.pipelines import kubeflow as module

    monkeypatch.setitem(module.PIPELINE_PACKAGES, "monitoring", monitoring_package)
    config = tmp_path / "cluster.yaml"
    config.write_text("epochs: 2\ndeploy_target: kserve\n")
    argv = ["schedule", "create", "--kubeflow-host", kubeflow.url, "--config", str(config)]
    assert main([*argv, "--param", "nope=1"]) == 2  # a parameter neither pipeline takes
    assert kubeflow.requests == []
    store = "postgresql://drift@payloads.textops:5432/payloads"
    assert main([*argv, "--param", f"store_url={store}", "--param", "seed=3"]) == 0
    runs = {r["display_name"]: r for r in kubeflow.recurring_runs.values()}
    assert {name: r["trigger"]["cron_schedule"]["cron"] for name, r in runs.items()} == {
        "textops-retraining": "0 0 3 * * 1",
        "textops-drift-check": "0 0 * * * *",
    }
    # Both retrain with the same settings: the drift check passes them on when it retrains.
    for run in runs.values():
        assert run["runtime_config"]["parameters"]["epochs"] == 2
        assert run["no_catchup"] is True and int(run["max_concurrency"]) == 1
    # Each pipeline gets the parameters it takes.
    assert runs["textops-drift-check"]["runtime_config"]["parameters"] == {
        "epochs": 2,
        "model_name": "textops-classifier",
        "store_url": store,
    }
    assert runs["textops-retraining"]["runtime_config"]["parameters"]["seed"] == 3
    assert "store_url" not in runs["textops-retraining"]["runtime_config"]["parameters"]
    assert {p["display_name"] for p in kubeflow.pipelines.values()} == {
        "textops-training",
        "textops-monitoring",
    }


def test_an_unknown_schedule_name(kubeflow, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schedule", "create", "nightly", "--kubeflow-host", kubeflow.url]) == 2
    assert "no schedule nightly; choose from retraining, drift" in capsys.readouterr().err
