"""The predictor as a real KServe server on a loopback port: protocols, client, metrics, logger.

One server (started with `textops serve`) answers most tests; a second runs `--workers 2`
with a payload logger whose collector is down.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest

from textops.components.common.onnx_classifier import OnnxClassifier
from textops.components.serve.settings import choose_precision

if TYPE_CHECKING:
    from tests.integration.conftest import ServeProcess, StartServer

pytestmark = pytest.mark.integration

MODEL = "tiny-classifier"
VERSION = "7"
TEXTS = ["The food was great and the staff friendly.", "Terrible service, never again.", "ok"]


@dataclass
class Collector:
    """A stand-in for the payload collector: records every POST."""

    url: str
    events: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def wait_for(self, count: int, timeout: float = 10) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.events)

    def wait_for_id(self, event_id: str, count: int, timeout: float = 10) -> None:
        """Wait until `count` events with Ce-Id `event_id` have arrived (or `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(h.get("Ce-Id") == event_id for h, _ in self.events) >= count:
                return
            time.sleep(0.05)


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    received: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(({k: v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield Collector(f"http://127.0.0.1:{httpd.server_address[1]}/events", received)
    httpd.shutdown()


@pytest.fixture(scope="module")
def server(
    tiny_bundle_dir: Path,
    collector: Collector,
    serve_process: StartServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServeProcess]:
    command = [
        *(sys.executable, "-m", "textops.pipelines"),
        "serve",
        "--bundle",
        str(tiny_bundle_dir),
        "--model-name",
        MODEL,
        "--model-version",
        VERSION,
        "--payload-logger-url",
        collector.url,
    ]
    log = tmp_path_factory.mktemp("serve") / "server.log"
    running = serve_process(command, log, model=MODEL)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def reference(tiny_bundle_dir: Path) -> OnnxClassifier:
    """The bundle run directly, with the model file the server chose by default."""
    return OnnxClassifier.from_bundle(
        tiny_bundle_dir, precision=choose_precision(tiny_bundle_dir, None)
    )


def _v1(server: ServeProcess, instances: list[Any], **kwargs: Any) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/models/{MODEL}:predict", json={"instances": instances}, **kwargs
    )


def _v2_body(texts: list[str]) -> dict[str, Any]:
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}


def test_v1_answers_label_probabilities_and_version(
    server: ServeProcess, reference: OnnxClassifier
) -> None:
    response = _v1(server, [TEXTS[0], {"text": TEXTS[1]}, TEXTS[2]])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == VERSION
    expected = reference.predict_proba(TEXTS)
    labels = list(reference.labels.names)
    for prediction, row in zip(body["predictions"], expected, strict=True):
        assert list(prediction["probabilities"]) == labels
        got = [prediction["probabilities"][label] for label in labels]
        np.testing.assert_allclose(got, row, atol=1e-5)
        assert prediction["label"] == labels[int(np.argmax(row))]


def test_v2_answers_in_metadata_label_order(
    server: ServeProcess, reference: OnnxClassifier
) -> None:
    metadata = httpx.get(f"{server.url}/v2/models/{MODEL}").json()
    labels = list(reference.labels.names)
    assert metadata["versions"] == [VERSION]
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(labels)]} in (
        metadata["outputs"]
    )

    response = httpx.post(
        f"{server.url}/v2/models/{MODEL}/infer", json={"id": "req-1", **_v2_body(TEXTS)}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["model_name"], body["model_version"]) == ("req-1", MODEL, VERSION)
    outputs = {output["name"]: output for output in body["outputs"]}
    assert outputs["probabilities"]["shape"] == [len(TEXTS), len(labels)]
    probabilities = np.asarray(outputs["probabilities"]["data"]).reshape(len(TEXTS), -1)
    np.testing.assert_allclose(probabilities, reference.predict_proba(TEXTS), atol=1e-5)
    assert outputs["label"]["data"] == reference.predict(TEXTS)


def test_versioned_routes_serve_the_served_version(server: ServeProcess) -> None:
    base = f"{server.url}/v2/models/{MODEL}/versions/{VERSION}"
    assert httpx.get(base).json()["versions"] == [VERSION]
    assert httpx.get(f"{base}/ready").json() == {"name": MODEL, "ready": True}
    response = httpx.post(f"{base}/infer", json=_v2_body(["fine"]))
    assert response.status_code == 200 and response.json()["model_version"] == VERSION


def test_a_batch_answers_each_text_as_alone(server: ServeProcess) -> None:
    texts = [f"{TEXTS[i % 3]} number {i}" for i in range(8)]
    together = _v1(server, texts).json()["predictions"]
    alone = [_v1(server, [text]).json()["predictions"][0] for text in texts]
    for a, b in zip(together, alone, strict=True):
        assert a["label"] == b["label"]
        for label, p in a["probabilities"].items():
            assert p == pytest.approx(b["probabilities"][label], abs=1e-5)


def test_texts_beyond_the_window_are_truncated_not_refused(server: ServeProcess) -> None:
    long_text = "the service was slow but the food was lovely " * 400
    with_tail = long_text + " absolutely dreadful awful terrible " * 50
    answers = [_v1(server, [text]) for text in (long_text, with_tail)]
    assert [a.status_code for a in answers] == [200, 200]
    # Everything after the window is cut, so the appended tail changes nothing.
    first, second = (a.json()["predictions"][0]["probabilities"] for a in answers)
    assert first == pytest.approx(second, abs=1e-6)


def test_kserve_inference_rest_client(server: ServeProcess) -> None:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def call() -> tuple[Any, Any]:
        v2 = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
        request = InferRequest(
            model_name=MODEL,
            infer_inputs=[InferInput("text", [2], "BYTES", TEXTS[:2])],
            request_id="client-1",
        )
        v2_answer = await v2.infer(server.url, request, model_name=MODEL)
        v1 = InferenceRESTClient(RESTConfig(protocol="v1", timeout=30))
        v1_answer = await v1.infer(server.url, {"instances": TEXTS[:2]}, model_name=MODEL)
        await v2.close()
        await v1.close()
        return v2_answer, v1_answer

    v2_answer, v1_answer = asyncio.run(call())
    # (KServe's client does not read model_version back from a REST response.)
    assert (v2_answer.id, v2_answer.model_name) == ("client-1", MODEL)
    labels = v2_answer.get_output_by_name("label").as_numpy().tolist()
    assert [x.decode() if isinstance(x, bytes) else x for x in labels] == [
        p["label"] for p in v1_answer["predictions"]
    ]
    assert v2_answer.get_output_by_name("probabilities").as_numpy().shape == (2, 2)


def test_explain_scores_every_word(server: ServeProcess) -> None:
    text = "the food was great but the service slow"
    response = httpx.post(f"{server.url}/v1/models/{MODEL}:explain", json={"instances": [text]})
    assert response.status_code == 200, response.text
    explanation = response.json()["explanations"][0]
    assert [w["word"] for w in explanation["words"]] == text.split()
    assert explanation["label"] == _v1(server, [text]).json()["predictions"][0]["label"]
    assert all(isinstance(w["importance"], float) for w in explanation["words"])


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_latency_labels_errors_and_version(server: ServeProcess) -> None:
    before = httpx.get(f"{server.url}/metrics").text
    answer = _v1(server, TEXTS).json()
    assert _v1(server, [42]).status_code == 400
    after = httpx.get(f"{server.url}/metrics").text

    for label in {p["label"] for p in answer["predictions"]}:
        added = sum(p["label"] == label for p in answer["predictions"])
        name = "textops_predictions_total"
        assert _metric(after, name, label=label) - _metric(before, name, label=label) == added
    errors = "textops_request_errors_total"
    assert _metric(after, errors, status="400") - _metric(before, errors, status="400") == 1
    assert _metric(after, "textops_model_version_info", version=VERSION) == 1
    predict = "request_predict_seconds_count"
    assert _metric(after, predict, model_name=MODEL) > _metric(before, predict, model_name=MODEL)


def test_payload_logger_sends_agent_cloudevents(server: ServeProcess, collector: Collector) -> None:
    collector.events.clear()
    response = _v1(server, [TEXTS[0]], headers={"X-Request-Id": "trace-42"})
    # Events of an earlier test's requests may still be on their way: count this request's.
    collector.wait_for_id("trace-42", 2)
    events = [(h, body) for h, body in collector.events if h.get("Ce-Id") == "trace-42"]
    assert len(events) == 2
    by_type = {headers["Ce-Type"]: (headers, body) for headers, body in events}
    request_headers, request_body = by_type["org.kubeflow.serving.inference.request"]
    response_headers, response_body = by_type["org.kubeflow.serving.inference.response"]
    assert json.loads(request_body) == {"instances": [TEXTS[0]]}
    assert response_body == response.content
    for headers in (request_headers, response_headers):
        assert headers["Ce-Id"] == "trace-42"
        assert headers["Ce-Specversion"] == "1.0"
        assert headers["Ce-Inferenceservicename"] == MODEL
        assert headers["Ce-Component"] == "predictor"
        assert headers["Ce-Source"].startswith("http://localhost:")
        assert headers["Ce-Time"].endswith("Z")
        assert {"Ce-Namespace", "Ce-Endpoint", "Ce-Metadata"} <= set(headers)
        assert headers["Content-Type"] == "application/json"

    # A refused request is logged as a request with no response, as KServe's agent does.
    assert _v1(server, [], headers={"X-Request-Id": "trace-43"}).status_code == 400
    collector.wait_for_id("trace-43", 1)
    time.sleep(0.5)
    assert [h["Ce-Type"] for h, _ in collector.events if h.get("Ce-Id") == "trace-43"] == [
        "org.kubeflow.serving.inference.request"
    ]


def test_workers_build_their_own_sessions_and_a_dead_collector_costs_nothing(
    tiny_bundle_dir: Path,
    tmp_path: Path,
    serve_process: StartServer,
    free_port: Callable[[], int],
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/events"
    command = [sys.executable, "-m", "textops.components.serve"]
    command += ["--bundle", str(tiny_bundle_dir), "--model-name"]
    command += [MODEL, "--workers", "2", "--payload-logger-url", dead]
    command += ["--payload-logger-queue-size", "2"]
    running = serve_process(command, tmp_path / "server.log", model=MODEL)
    try:
        with httpx.Client(base_url=running.url) as client:
            statuses = [
                client.post(
                    f"/v1/models/{MODEL}:predict",
                    json={"instances": [TEXTS[i % 3]]},
                    headers={"Connection": "close"},  # new connections reach both workers
                ).status_code
                for i in range(30)
            ]
        assert statuses == [200] * 30
        # The parent loads once to check the bundle; each worker builds its own session (the
        # second worker may still be starting while the first answers).
        deadline = time.monotonic() + 60
        while running.log_text().count("runtime ready:") < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        log = running.log_text()
        assert log.count("runtime ready:") == 3, log
        assert "payload events not delivered" in log
    finally:
        running.stop()


def test_bad_bundle_stops_the_predictor_with_a_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "textops.components.serve", "--bundle", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "textops: error: model bundle not found" in result.stderr
