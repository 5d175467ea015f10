"""The evaluation gate in the whole pipeline, through `textops run` and kfp.local.

A first run publishes version 1; a second run whose model cannot clear the bar exits with
EXIT_NOT_DEPLOYED, says why, and leaves the model repository byte for byte as it was.
"""

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from textops.components.common.config import sample_data_path
from textops.pipelines.cli import EXIT_NOT_DEPLOYED

pytestmark = pytest.mark.integration

TextopsCli = Callable[..., subprocess.CompletedProcess[str]]
MODEL_NAME = "gate-test"


def printed_path(stdout: str, key: str) -> Path:
    line = next(line for line in stdout.splitlines() if key in line)
    return Path(line.split(key, 1)[1].strip())


def test_a_model_below_the_bar_is_not_published_and_production_stays(
    tmp_path: Path,
    tiny_model_dir: Path,
    textops_cli: TextopsCli,
    tree_digest: Callable[[Path], str],
) -> None:
    frame = pd.read_csv(sample_data_path())
    data = tmp_path / "reviews.csv"
    frame.groupby("label").head(150).to_csv(data, index=False)
    output = tmp_path / "out"
    run = [
        "run",
        "--data", str(data),
        "--base-model", str(tiny_model_dir),
        "--epochs", "1",
        "--model-name", MODEL_NAME,
        "--output-dir", str(output),
    ]  # fmt: skip

    first = textops_cli(*run, "--min-macro-f1", "0")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    repository = output / "models"
    pointer = repository / MODEL_NAME / "current.json"
    assert pointer.is_file(), (
        "the gate passed but deploy did not publish:\n"
        + first.stdout[-1500:]
        + first.stderr[-1500:]
    )
    current = json.loads(pointer.read_text())
    assert current["version"] == 1
    assert "no model in production yet: compared to floors only" in first.stdout
    before = tree_digest(repository)

    second = textops_cli(*run, "--min-macro-f1", "0.99")
    assert second.returncode == EXIT_NOT_DEPLOYED, second.stdout[-3000:] + second.stderr[-3000:]
    assert "not published" in second.stdout
    verdict = next(line for line in second.stdout.splitlines() if "not published" in line)
    assert "< floor 0.990" in verdict
    # The champion was found and scored on the same test split.
    assert "champion v1 macro-F1" in verdict
    assert tree_digest(repository) == before
    assert not (repository / MODEL_NAME / "2").exists()
    report = printed_path(second.stdout, "evaluation report:").read_text(encoding="utf-8")
    assert "Decision: Does not ship" in report
