"""The checked-in compiled pipeline is exactly what `textops compile` writes, and it is sound."""

import re
from pathlib import Path

import yaml

from textops.components.common.config import TrainingConfig
from textops.components.common.images import DATA_IMAGE, MONITOR_IMAGE, TRAIN_IMAGE
from textops.pipelines.cli import COMPILED_MONITORING, COMPILED_PIPELINE, main


def test_checked_in_yaml_matches_a_fresh_compile(tmp_path: Path) -> None:
    import kfp

    for compiled in (COMPILED_PIPELINE, COMPILED_MONITORING):
        found = re.search(r"^sdkVersion: kfp-(\S+)$", compiled.read_text(), re.M)
        written_by = found[1] if found else "an unknown kfp"
        assert written_by == kfp.__version__, (
            f"pipelines/compiled/{compiled.name} was compiled with kfp {written_by}, this venv "
            f"has kfp {kfp.__version__}. If constraints.txt pins kfp {written_by}, this venv is "
            "older than the lock: run `make setup`. If the lock was just changed, run `make "
            "compile` and commit the YAML with the lock"
        )
    fresh, monitoring = tmp_path / "training.yaml", tmp_path / "monitoring.yaml"
    assert main(["compile", "--output", str(fresh), "--monitoring-output", str(monitoring)]) == 0
    assert fresh.read_text() == COMPILED_PIPELINE.read_text(), (
        "pipelines/compiled/training.yaml is stale: run `make compile` and commit it"
    )
    assert monitoring.read_text() == COMPILED_MONITORING.read_text(), (
        "pipelines/compiled/monitoring.yaml is stale: run `make compile` and commit it"
    )


def test_compiled_yaml_loads_back_with_the_kfp_sdk() -> None:
    from kfp import components

    loaded = components.load_component_from_file(str(COMPILED_PIPELINE))
    assert loaded.name == "textops-training"
    assert set(loaded.component_spec.inputs) >= {"data", "text_column", "label_column", "epochs"}


def documents() -> tuple[dict, dict]:  # type: ignore[type-arg]
    """The pipeline spec and the Kubernetes platform spec, the two documents of the file."""
    pipeline, platform = yaml.safe_load_all(COMPILED_PIPELINE.read_text())
    return pipeline, platform


def test_parameter_defaults_are_the_config_defaults() -> None:
    spec, _ = documents()
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    defaults = TrainingConfig().model_dump()
    for name, parameter in parameters.items():
        if name == "model_repository":
            assert parameter["defaultValue"] == str(TrainingConfig().model_repository)
        else:
            assert parameter["defaultValue"] == defaults[name], name


def test_steps_run_in_project_images_with_nothing_installed_at_run_time() -> None:
    text = COMPILED_PIPELINE.read_text()
    assert "pip install" not in text
    executors = documents()[0]["deploymentSpec"]["executors"]
    assert len(executors) == 7
    images = {e["container"]["image"] for e in executors.values()}
    assert images == {MONITOR_IMAGE, DATA_IMAGE, TRAIN_IMAGE}


def test_dag_order() -> None:
    tasks = documents()[0]["root"]["dag"]["tasks"]
    upstream = {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()}
    assert upstream["collect-feedback"] == set()
    assert upstream["validate-data"] == {"collect-feedback"}
    feedback = tasks["validate-data"]["inputs"]["parameters"]["feedback"]
    assert feedback["taskOutputParameter"] == {
        "outputParameterKey": "snapshots",
        "producerTask": "collect-feedback",
    }
    assert upstream["preprocess-data"] == {"validate-data"}
    assert upstream["train-model"] == {"preprocess-data"}
    # evaluate also scores on validate's production test set (held-out feedback).
    assert upstream["evaluate-model"] == {"validate-data", "preprocess-data", "train-model"}
    production_test = tasks["evaluate-model"]["inputs"]["artifacts"]["production_test"]
    assert production_test["taskOutputArtifact"] == {
        "outputArtifactKey": "production_test",
        "producerTask": "validate-data",
    }
    assert "evaluate-model" in upstream["export-model"]
    # deploy runs inside the gate's condition, which waits for evaluate and export.
    gate = next(name for name, task in tasks.items() if "triggerPolicy" in task)
    assert tasks[gate]["triggerPolicy"]["condition"].startswith(
        "inputs.parameter_values['pipelinechannel--evaluate-model-Output'] == true"
    )
    assert upstream[gate] == {"evaluate-model", "export-model"}
    gate_dag = documents()[0]["components"][tasks[gate]["componentRef"]["name"]]["dag"]["tasks"]
    assert set(gate_dag) == {"deploy-model"}


def test_collect_feedback_gets_the_store_url_from_the_collectors_secret() -> None:
    executors = documents()[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    secrets = {s["secretName"]: s for s in executors["exec-collect-feedback"]["secretAsEnv"]}
    assert secrets["textops-collector-store"]["optional"] is True
    assert secrets["textops-collector-store"]["keyToEnv"] == [
        {"envVar": "TEXTOPS_STORE_URL", "secretKey": "url"}
    ]
    assert "textops-artifact-store" in secrets


def test_train_step_asks_for_gpus_memory_and_shared_memory() -> None:
    pipeline, platform = documents()
    resources = pipeline["deploymentSpec"]["executors"]["exec-train-model"]["container"][
        "resources"
    ]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    # The GPU count is the pipeline parameter train_gpus, not a constant.
    assert "train_gpus" in str(pipeline["root"]["dag"]["tasks"]["train-model"])
    assert resources["resourceCpuRequest"] and resources["resourceMemoryRequest"]
    train = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-model"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in train[
        "tolerations"
    ]
    assert train["emptyDirMounts"] == [
        {"medium": "Memory", "mountPath": "/dev/shm", "volumeName": "dshm"}
    ]
