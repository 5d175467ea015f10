"""A real predictor asked for fp16, as the serve-gpu image asks: what it says it serves, and why.

Through HTTP, as an operator would check it: the V2 model metadata's `parameters`, the
`textops_model_runtime_info` gauge on /metrics, and the server's log. On ONNX Runtime's CPU
build (this machine) that is the fallback to fp32 on CPU; with onnxruntime-gpu on a CUDA
device, the same checks see fp16 on CUDA.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from tests.integration.conftest import ServeProcess, StartServer

pytestmark = pytest.mark.integration

MODEL = "tiny-gpu-classifier"
VERSION = "11"
CUDA = "CUDAExecutionProvider"


@pytest.fixture(scope="module")
def fp16_server(
    tiny_bundle_dir: Path, serve_process: StartServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    command = [
        *(sys.executable, "-m", "textops.components.serve"),
        *("--bundle", str(tiny_bundle_dir), "--precision", "fp16"),
        *("--model_name", MODEL, "--model-version", VERSION),
    ]
    log = tmp_path_factory.mktemp("serve-fp16") / "server.log"
    running = serve_process(command, log, model=MODEL)
    yield running
    running.stop()


def _expected() -> dict[str, str]:
    if CUDA in ort.get_available_providers():
        return {"provider": CUDA, "precision": "fp16", "fallback": "none"}
    return {"provider": "CPUExecutionProvider", "precision": "fp32", "fallback": "no_cuda_provider"}


def test_metadata_parameters_say_what_runs_and_why(fp16_server: ServeProcess) -> None:
    for path in (f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/versions/{VERSION}"):
        metadata = httpx.get(fp16_server.url + path).json()
        assert (metadata["name"], metadata["versions"]) == (MODEL, [VERSION])
        assert metadata["platform"] == "onnxruntime_onnx"
        assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        parameters = metadata["parameters"]
        assert {k: parameters[k] for k in ("provider", "precision", "fallback")} == _expected()
        assert parameters["requested_precision"] == "fp16"
        if parameters["fallback"] != "none":
            assert CUDA in parameters["fallback_reason"]
            assert parameters["fp16_check"] == "not_run"

    missing = httpx.get(f"{fp16_server.url}/v2/models/no-such-model")
    assert missing.status_code == 404  # still KServe's answer


def test_the_runtime_gauge_names_provider_and_precision(fp16_server: ServeProcess) -> None:
    text = httpx.get(f"{fp16_server.url}/metrics").text
    families = text_string_to_metric_families(text)
    (family,) = [f for f in families if f.name == "textops_model_runtime_info"]
    samples = [s for s in family.samples if s.labels["model_name"] == MODEL]
    assert [s.value for s in samples] == [1.0]
    labels = samples[0].labels
    assert labels == {
        "model_name": MODEL,
        "version": VERSION,
        "requested_precision": "fp16",
        **_expected(),
    }


def test_the_log_says_what_was_asked_what_is_served_and_why(fp16_server: ServeProcess) -> None:
    log = fp16_server.log_text()
    expected = _expected()
    ready = [line for line in log.splitlines() if "runtime ready:" in line]
    assert len(ready) == 1
    assert (
        f"provider={expected['provider']} precision={expected['precision']} "
        f"requested_precision=fp16 fallback={expected['fallback']}"
    ) in ready[0]
    warnings = [line for line in log.splitlines() if "precision fallback:" in line]
    if expected["fallback"] == "none":
        assert warnings == []
    else:
        (warning,) = warnings
        assert " WARNING " in warning
        assert "requested=fp16 served=fp32 provider=CPUExecutionProvider" in warning
        assert f"no {CUDA}" in warning
