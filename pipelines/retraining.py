"""Start the training pipeline when drift is found: on this machine through `kfp.local`, or on a
cluster by submitting the compiled training pipeline to Kubeflow Pipelines.

Both run the same pipeline with the same settings (a `TrainingConfig`, as `textops run` takes);
it retrains on the config's `data` plus, when `feedback_store_url` names the payload store, a
snapshot of the labelled traffic there (the pipeline's collect_feedback step builds it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from textops.components.common.config import TrainingConfig
from textops.pipelines.kubeflow import DEFAULT_EXPERIMENT

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainingOutcome:
    """What the trigger started, and what came of it where that is known at once.

    Attributes:
        target: `local` (kfp.local, finished when this returns) or `kubeflow` (a run started).
        run_id: The Kubeflow run's id (kubeflow only).
        deployed: Whether the retrained model passed the gate and was published (local only).
        detail: One line for people: the published path, the gate's reasons, or the run id.
        metrics: The retrained model's test metrics (local only; a Kubeflow run logs its own).
    """

    target: Literal["local", "kubeflow"]
    run_id: str | None
    deployed: bool | None
    detail: str
    metrics: Mapping[str, Any] = field(default_factory=dict)


def retrain_locally(config: TrainingConfig) -> RetrainingOutcome:
    """Run the training pipeline on this machine (as `textops run --config ...` does).

    Raises:
        TextopsError: A pre-flight check failed.
        PipelineFailedError: A step failed.
    """
    from textops.pipelines.local import run_training_locally

    logger.info("retraining locally data=%s model_name=%s", config.data, config.model_name)
    result = run_training_locally(config)
    detail = (
        f"published {result.published_path}"
        if result.deployed
        else f"not published: {result.reasons}"
    )
    return RetrainingOutcome("local", None, result.deployed, detail, result.metrics)


def submit_retraining(
    config: TrainingConfig,
    host: str,
    *,
    package: str | Path | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    namespace: str | None = None,
) -> RetrainingOutcome:
    """Submit the compiled training pipeline to Kubeflow Pipelines with `config`'s settings.

    Raises:
        ConfigError: The package is unreadable or does not take the config's parameters.
        KubeflowError: The API cannot be reached or refused the run.
    """
    from textops.pipelines import kubeflow
    from textops.pipelines.training import pipeline_arguments

    # Default: the checked-in compiled training pipeline.
    package_path = Path(package) if package is not None else kubeflow.PIPELINE_PACKAGES["training"]
    compiled = kubeflow.PipelinePackage.read(package_path)
    run_id = kubeflow.submit_pipeline_run(
        host,
        compiled,
        arguments=pipeline_arguments(config),
        experiment=experiment,
        namespace=namespace,
    ).run_id
    logger.info("retraining submitted host=%s pipeline=%s run=%s", host, compiled.name, run_id)
    return RetrainingOutcome("kubeflow", run_id, None, f"started Kubeflow run {run_id}")


def trigger_retraining(
    config: TrainingConfig,
    *,
    kubeflow_host: str | None = None,
    package: str | Path | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    namespace: str | None = None,
) -> RetrainingOutcome:
    """Retrain: on Kubeflow when `kubeflow_host` is given, else on this machine."""
    if kubeflow_host:
        return submit_retraining(
            config, kubeflow_host, package=package, experiment=experiment, namespace=namespace
        )
    return retrain_locally(config)
