"""`textops models rollback|promote --serve-url` against the real predictor.

The predictor serves a local model repository; the commands switch current.json and load the
version through KServe's repository route, and the predictor's answers carry that version.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from textops.components.deploy.publish import publish_bundle
from textops.pipelines.cli import main

if TYPE_CHECKING:
    from tests.integration.conftest import StartServer

pytestmark = pytest.mark.integration

MODEL = "textops-classifier"


def answering_version(url: str) -> str:
    answer = httpx.post(f"{url}/v1/models/{MODEL}:predict", json={"instances": ["great food"]})
    assert answer.status_code == 200, answer.text
    version: str = answer.json()["model_version"]
    return version


def test_rollback_and_promote_switch_the_running_predictor(
    tiny_bundle_dir: Path,
    serve_process: StartServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repository = tmp_path / "models"
    publish_bundle(tiny_bundle_dir, repository, MODEL)
    publish_bundle(tiny_bundle_dir, repository, MODEL)  # version 2 serves
    command = [
        *(sys.executable, "-m", "textops.components.serve"),
        *("--model-repository", str(repository), "--model_name", MODEL),
    ]
    server = serve_process(command, tmp_path / "server.log", model=MODEL)
    assert answering_version(server.url) == "2"

    def models(action: str) -> tuple[int, str]:
        flags = ["--model-repository", str(repository), "--serve-url", server.url]
        code = main(["models", action, *flags, "--rollout-timeout-seconds", "30"])
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    code, out = models("rollback")
    assert code == 0, out
    assert "to version 1 (from 2)" in out and f"{server.url} serves version 1" in out
    assert answering_version(server.url) == "1"

    code, out = models("rollback")
    assert code == 0 and "already rolled back to version 1" in out
    assert answering_version(server.url) == "1"

    code, out = models("promote")
    assert code == 0 and "promoted textops-classifier to version 2 (was 1)" in out
    assert answering_version(server.url) == "2"
    server.stop()
