"""Real predictors by precision: what they say they serve, and that they answer consistently.

Through HTTP, as an operator would check it. Asked for fp16, as the serve-gpu image asks: the
V2 model metadata's `parameters`, the `textops_model_runtime_info` gauge on /metrics, and the
server's log. On ONNX Runtime's CPU build (this machine) that is the fallback to fp32 on CPU;
with onnxruntime-gpu on a CUDA device, the same checks see fp16 on CUDA. Serving fp32 and the
bundle's INT8 graph on CPU: a text sent alone and the same text sent among concurrent requests
(which the predictor coalesces into shared batches) get the same answer.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from textops.components.common.batch_invariance import (
    ADVERSARIAL_NEIGHBOURS,
    MAX_PROB_DIFF,
    SHORT_NEIGHBOURS,
)

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
        *("--model-name", MODEL, "--model-version", VERSION),
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
        # Named by --precision: no probe; the variant is the graph served, on ONNX Runtime.
        "variant": _expected()["precision"],
        "engine": "onnxruntime",
        "variant_choice": "setting",
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


# --- the same text, alone and among concurrent requests -----------------------------------

CPU_MODEL = "tiny-cpu-classifier"
#: Requests in flight at once while the probes are sent among neighbours.
CONCURRENCY = 8


@pytest.fixture(scope="module", params=["fp32", "int8"])
def cpu_server(
    request: pytest.FixtureRequest,
    int8_bundle_dir: Path,
    serve_process: StartServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServeProcess, str]]:
    precision = str(request.param)
    command = [
        *(sys.executable, "-m", "textops.components.serve"),
        *("--bundle", str(int8_bundle_dir), "--precision", precision),
        *("--model-name", CPU_MODEL),
    ]
    log = tmp_path_factory.mktemp(f"serve-{precision}") / "server.log"
    running = serve_process(command, log, model=CPU_MODEL)
    yield running, precision
    running.stop()


def _predict(server: ServeProcess, text: str) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/v1/models/{CPU_MODEL}:predict", json={"instances": [text]}, timeout=60
    )
    assert response.status_code == 200, response.text
    prediction: dict[str, Any] = response.json()["predictions"][0]
    return prediction


def _batch_calls(server: ServeProcess) -> tuple[float, float]:
    """(ONNX Runtime calls, calls that held one text) from the batch-size histogram."""
    families = text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text)
    (family,) = [f for f in families if f.name == "textops_inference_batch_texts"]
    samples = [s for s in family.samples if s.labels.get("model_name") == CPU_MODEL]
    calls = sum(s.value for s in samples if s.name.endswith("_count"))
    single = sum(s.value for s in samples if s.name.endswith("_bucket") and s.labels["le"] == "1.0")
    return calls, single


def test_a_text_gets_the_same_answer_alone_and_among_concurrent_requests(
    cpu_server: tuple[ServeProcess, str], tiny_splits: dict[str, Path]
) -> None:
    server, precision = cpu_server
    metadata = httpx.get(f"{server.url}/v2/models/{CPU_MODEL}").json()
    assert metadata["parameters"]["precision"] == precision
    probes = [str(t) for t in pd.read_parquet(tiny_splits["validation"])["text"]]
    alone = [_predict(server, text) for text in probes]  # one request at a time
    before_calls, before_single = _batch_calls(server)

    # Twice over, each probe in flight with other probes and with neighbours that are short,
    # long or extreme; the predictor coalesces whatever is waiting into one call.
    long_neighbours = [" ".join(probes[i:]) for i in range(0, 12, 3)]
    neighbours = [*SHORT_NEIGHBOURS, *ADVERSARIAL_NEIGHBOURS, *long_neighbours]
    jobs: list[tuple[int, str]] = []
    for _ in range(2):
        for index, text in enumerate(probes):
            jobs += [(index, text), (-1, neighbours[index % len(neighbours)])]
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        answers = list(pool.map(lambda job: (job[0], _predict(server, job[1])), jobs))

    labels = list(alone[0]["probabilities"])
    worst = 0.0
    for index, answer in answers:
        if index < 0:
            continue
        assert answer["label"] == alone[index]["label"], probes[index]
        moved = np.abs(
            np.array([answer["probabilities"][k] for k in labels])
            - np.array([alone[index]["probabilities"][k] for k in labels])
        )
        worst = max(worst, float(moved.max()))
    assert worst <= MAX_PROB_DIFF[precision], f"{precision} probabilities moved by {worst:.3g}"
    calls, single = _batch_calls(server)
    assert calls - before_calls < len(jobs)  # requests did share calls...
    assert (calls - before_calls) - (single - before_single) > 0  # ...with more than one text
