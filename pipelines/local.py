"""Run the training pipeline on this machine through `kfp.local`: the same DAG a cluster runs.

Each step runs as a subprocess in this Python environment (SubprocessRunner, no virtualenv,
nothing pip-installed), with its artifacts under `<output_dir>/runs`.
"""

from __future__ import annotations

import io
import re
import sys
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from textops.components.common.config import (
    TrainingConfig,
    resolve_base_model,
    resolve_data_path,
)
from textops.components.common.dataio import read_table, require_columns
from textops.components.common.errors import TextopsError
from textops.components.common.model_repository import current_version

# A step's failure ends its log with the exception line, e.g.
# "textops.components.common.errors.DataValidationError: data failed ...".
_ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.+)$")


class PipelineFailedError(TextopsError):
    """A pipeline step failed; `step` names it and `reason` is its error message."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"the pipeline stopped at step '{step}': {reason}")
        self.step = step
        self.reason = reason


@dataclass(frozen=True)
class LocalRunResult:
    """Where a finished local run left its results, and whether its model shipped."""

    deployed: bool
    reasons: str
    published_path: Path | None
    bundle_path: Path
    metrics: dict[str, Any]
    metrics_path: Path
    validation_report: Path
    evaluation_report: Path


def score_lines(metrics: Mapping[str, Any], indent: str = "  ") -> list[str]:
    """The run summary's lines for both test sets: the base test split and the production
    test set (the held-out part of the feedback snapshots), the champion beside each."""
    width = 22 - len(indent)

    def line(title: str, prefix: str, rows: str) -> str:
        new = metrics.get(f"{prefix}accuracy")
        if new is None:
            return f"{indent}{title:{width}s}none: no feedback snapshot held labelled traffic"
        old = metrics.get(f"champion_{prefix}accuracy")
        champion = f", champion {old:.3f}" if old is not None else ", no champion"
        return f"{indent}{title:{width}s}accuracy {new:.3f}{champion}{rows}"

    production_rows = metrics.get("production_test_rows")
    rows = f" ({int(production_rows)} rows)" if production_rows is not None else ""
    return [line("base test:", "", ""), line("production test:", "production_", rows)]


def preflight(config: TrainingConfig) -> TrainingConfig:
    """Check what can be checked before any step starts; return the config with absolute paths.

    Raises:
        ConfigError: The data file does not exist.
        DataError: It cannot be read or lacks the text or label column.
        ModelNotFoundError: The base model cannot be found.
    """
    data = resolve_data_path(config.data)
    if "://" not in data:
        frame = read_table(data, config.data_format)
        require_columns(frame, [config.text_column, config.label_column], data)
    resolve_base_model(config.base_model)
    output_dir = Path(config.output_dir).expanduser().resolve()
    base_model = config.base_model
    if Path(base_model).expanduser().exists():
        base_model = str(Path(base_model).expanduser().resolve())
    # A killed local run resumes from here the next time it is started the same way.
    checkpoint_dir = config.checkpoint_dir or str(output_dir / "checkpoints" / config.model_name)
    return config.model_copy(
        update={
            "data": data,
            "output_dir": str(output_dir),
            "base_model": base_model,
            "checkpoint_dir": checkpoint_dir,
        }
    )


class _Tee(io.TextIOBase):
    """Passes text through to a stream and keeps the last lines, to name a failed step's error."""

    def __init__(self, stream: TextIO, keep: int = 400) -> None:
        self.stream = stream
        self.lines: deque[str] = deque(maxlen=keep)
        self._partial = ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        pieces = (self._partial + text).split("\n")
        self._partial = pieces.pop()
        self.lines.extend(pieces)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def last_error(self) -> str | None:
        for line in reversed(self.lines):
            match = _ERROR_LINE.match(line.strip())
            if match:
                return f"{match.group(1)}: {match.group(2)}"
        return None


def _failed_step(message: str) -> str:
    """The task name in kfp.local's failure message ("... Inner task failed: train-model ...")."""
    match = re.search(r"Inner task failed: (.+?)\.?$", re.sub(r"\x1b\[[0-9;]*m", "", message))
    return match.group(1).split(" inside ")[0].strip() if match else "unknown"


def run_training_locally(config: TrainingConfig) -> LocalRunResult:
    """Run the training pipeline through kfp.local and return where its results are.

    Raises:
        TextopsError: A pre-flight check failed (see `preflight`).
        PipelineFailedError: A step failed; its log, streamed above, has the details.
    """
    from kfp import local

    from textops.pipelines.training import pipeline_arguments, training_pipeline

    config = preflight(config)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(config.pipeline_root),
        raise_on_error=True,
    )
    tee = _Tee(sys.stdout)
    saved_stdout, sys.stdout = sys.stdout, tee  # kfp.local prints each step's log lines
    try:
        run = training_pipeline(**pipeline_arguments(config))
    except RuntimeError as e:
        reason = tee.last_error() or "see the step's log above"
        raise PipelineFailedError(_failed_step(str(e)), reason) from e
    finally:
        sys.stdout = saved_stdout
    outputs = run.outputs
    metrics_artifact = outputs["test_metrics"]
    deployed = bool(outputs["deploy"])
    published = current_version(str(config.model_repository), config.model_name)
    return LocalRunResult(
        deployed=deployed,
        reasons="; ".join(outputs["decision"].metadata.get("reasons", [])),
        published_path=published.path if deployed and published is not None else None,
        bundle_path=Path(outputs["bundle"].path),
        metrics=dict(metrics_artifact.metadata),
        metrics_path=Path(metrics_artifact.path),
        validation_report=Path(outputs["validation_report"].path),
        evaluation_report=Path(outputs["evaluation_report"].path),
    )
