"""The checked-in compiled pipeline is exactly what `textops compile` writes, and it is sound."""

from pathlib import Path

import yaml

from textops.components.common.config import TrainingConfig
from textops.components.common.images import DATA_IMAGE, TRAIN_IMAGE
from textops.pipelines.cli import COMPILED_PIPELINE, main


def test_checked_in_yaml_matches_a_fresh_compile(tmp_path: Path) -> None:
    fresh = tmp_path / "training.yaml"
    assert main(["compile", "--output", str(fresh)]) == 0
    assert fresh.read_text() == COMPILED_PIPELINE.read_text(), (
        "pipelines/compiled/training.yaml is stale: run `make compile` and commit it"
    )


def test_compiled_yaml_loads_back_with_the_kfp_sdk() -> None:
    from kfp import components

    loaded = components.load_component_from_file(str(COMPILED_PIPELINE))
    assert loaded.name == "textops-training"
    assert set(loaded.component_spec.inputs) >= {"data", "text_column", "label_column", "epochs"}


def test_parameter_defaults_are_the_config_defaults() -> None:
    spec = yaml.safe_load(COMPILED_PIPELINE.read_text())
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
    executors = yaml.safe_load(text)["deploymentSpec"]["executors"]
    assert len(executors) == 6
    assert {e["container"]["image"] for e in executors.values()} == {DATA_IMAGE, TRAIN_IMAGE}


def test_dag_order() -> None:
    tasks = yaml.safe_load(COMPILED_PIPELINE.read_text())["root"]["dag"]["tasks"]
    upstream = {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()}
    assert upstream["validate-data"] == set()
    assert upstream["preprocess-data"] == {"validate-data"}
    assert upstream["train-model"] == {"preprocess-data"}
    assert upstream["evaluate-model"] == {"preprocess-data", "train-model"}
    assert "evaluate-model" in upstream["export-model"]
    assert upstream["deploy-model"] == {"export-model"}
