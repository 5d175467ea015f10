"""Compile the pipelines to Kubeflow Pipelines IR YAML (checked in under `compiled/`)."""

from __future__ import annotations

from pathlib import Path


def compile_training_pipeline(output: str | Path) -> Path:
    """Write the training pipeline's IR YAML to `output` and return its path."""
    from kfp import compiler

    from textops.pipelines.training import training_pipeline

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(training_pipeline, str(output))
    return output


def compile_monitoring_pipeline(output: str | Path) -> Path:
    """Write the monitoring pipeline's IR YAML (drift, then training on drift) to `output`."""
    from kfp import compiler

    from textops.pipelines.monitoring import monitoring_pipeline

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(monitoring_pipeline, str(output))
    return output
