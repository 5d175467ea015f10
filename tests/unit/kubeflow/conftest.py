"""Fixtures of the Kubeflow tests: compiled pipeline packages to submit and schedule.

The Kubeflow Pipelines API they talk to is the `kubeflow` fixture of tests/unit/conftest.py.
"""

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from textops.pipelines.kubeflow import PIPELINE_PACKAGES


@pytest.fixture
def training_package(tmp_path: Path) -> Path:
    """A copy of the checked-in compiled training pipeline, free to change."""
    path = tmp_path / "training.yaml"
    shutil.copyfile(PIPELINE_PACKAGES["training"], path)
    return path


def compile_stand_in(path: Path, name: str, parameters: dict[str, Any]) -> Path:
    """Compile a one-step pipeline named `name` whose parameters have `parameters`' defaults."""
    import inspect

    from kfp import compiler, dsl

    @dsl.container_component
    def step(value: str) -> dsl.ContainerSpec:
        return dsl.ContainerSpec(image="textops-test:1", command=["echo"], args=[value])

    def body(*values: Any) -> None:  # kfp passes one value per parameter, in order
        step(value=values[0])

    body.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(
                k, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=v, annotation=type(v)
            )
            for k, v in parameters.items()
        ]
    )
    compiler.Compiler().compile(dsl.pipeline(name=name)(body), str(path))
    return path


@pytest.fixture
def monitoring_package(tmp_path: Path) -> Path:
    """A stand-in for the compiled monitoring pipeline: its name, drift parameters, and some of
    the training parameters it passes on when it retrains."""
    parameters = {"store_url": "", "since": "24h", "model_name": "m", "epochs": 3}
    return compile_stand_in(tmp_path / "monitoring.yaml", "textops-monitoring", parameters)


@pytest.fixture
def stand_in_pipeline() -> Callable[[Path, str, dict[str, Any]], Path]:
    """`compile_stand_in`, for tests that need a pipeline of their own."""
    return compile_stand_in
