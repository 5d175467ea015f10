"""The checked-in monitoring pipeline is sound (test_compiled_pipeline.py checks it is fresh):
drift (uncached, in the monitor image) -> dsl.If(drift) -> the whole training pipeline."""

from pathlib import Path

import yaml

from textops.components.common.images import DATA_IMAGE, MONITOR_IMAGE, TRAIN_IMAGE
from textops.components.monitor.drift_settings import DriftSettings

COMPILED = Path(__file__).resolve().parents[2] / "pipelines" / "compiled"
MONITORING = COMPILED / "monitoring.yaml"


def documents(path: Path = MONITORING) -> tuple[dict, dict]:  # type: ignore[type-arg]
    pipeline, platform = yaml.safe_load_all(path.read_text())
    return pipeline, platform


def test_it_loads_back_with_the_kfp_sdk() -> None:
    from kfp import components

    loaded = components.load_component_from_file(str(MONITORING))
    assert loaded.name == "textops-monitoring"


def test_drift_runs_uncached_in_the_monitor_image_then_training_on_drift() -> None:
    spec, _ = documents()
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"detect-drift", "condition-1"}
    drift = tasks["detect-drift"]
    assert not drift.get("cachingOptions", {}).get("enableCache", False)
    condition = tasks["condition-1"]
    assert condition["dependentTasks"] == ["detect-drift"]
    assert condition["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--detect-drift-Output'] == true"
    )
    # Inside the condition: the training pipeline, nested whole.
    inner = spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]
    assert [t["componentRef"]["name"] for t in inner.values()] == ["comp-textops-training"]
    training_dag = spec["components"]["comp-textops-training"]["dag"]["tasks"]
    assert {"validate-data", "train-model", "evaluate-model", "export-model"} <= set(training_dag)
    executors = spec["deploymentSpec"]["executors"]
    assert executors["exec-detect-drift"]["container"]["image"] == MONITOR_IMAGE
    assert {e["container"]["image"] for e in executors.values()} == {
        MONITOR_IMAGE,
        DATA_IMAGE,
        TRAIN_IMAGE,
    }
    assert "pip install" not in MONITORING.read_text()


def test_drift_outputs_a_report_metrics_and_the_verdict() -> None:
    spec, _ = documents()
    outputs = spec["components"]["comp-detect-drift"]["outputDefinitions"]
    assert outputs["artifacts"]["report"]["artifactType"]["schemaTitle"] == "system.HTML"
    assert outputs["artifacts"]["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    assert outputs["parameters"]["Output"]["parameterType"] == "BOOLEAN"


def test_parameters_are_the_drift_settings_and_every_training_parameter() -> None:
    spec, _ = documents()
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    training, _ = documents(COMPILED / "training.yaml")
    for name, parameter in training["root"]["inputDefinitions"]["parameters"].items():
        assert parameters[name] == parameter, name
    settings = DriftSettings()
    for name in ("min_window_rows", "family_alpha", "drift_share", "max_accuracy_drop"):
        assert parameters[name]["defaultValue"] == getattr(settings, name), name
    assert parameters["since"]["defaultValue"] == "24h"
    # The training step's GPU request and tolerations come along with the nested pipeline.
    _, platform = documents()
    train = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-model"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in train[
        "tolerations"
    ]


def test_the_store_url_comes_from_the_collectors_secret_not_a_parameter() -> None:
    spec, platform = documents()
    assert spec["root"]["inputDefinitions"]["parameters"]["store_url"]["defaultValue"] == ""
    drift = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-detect-drift"]
    secrets = {s["secretName"]: s for s in drift["secretAsEnv"]}
    assert set(secrets) == {"textops-collector-store", "textops-artifact-store"}
    secret = secrets["textops-collector-store"]
    assert secret["optional"] is True
    assert secret["keyToEnv"] == [{"envVar": "TEXTOPS_STORE_URL", "secretKey": "url"}]
