"""The Triton transformer as a real KServe server in front of a real V2 tensor server.

The stand-in for Triton is a real `kserve.ModelServer` (its source is `TRITON_STAND_IN`) that
serves the tiny bundle's model.onnx through ONNX Runtime on Triton's contract for it: INT64
`input_ids`, `attention_mask`, `token_type_ids` in (JSON or binary tensor data), FP32
`logits` out, and batches of at most 64 refused as Triton refuses them. The transformer runs
as `python -m textops.components.serve.transformer`, exactly as the Triton overlay starts it.

- Its V1 and V2 answers equal `OnnxClassifier` on the same bundle (labels, probabilities
  within 1e-5, the version), for single texts and for a batch larger than Triton's.
- Every malformed request of tests/data/bad_requests/cases.yaml gets the predictor's 4xx JSON
  answer, from a transformer whose Triton is down: none of them reaches Triton.
- A request it cannot pass on because Triton is down is answered 503 with a JSON error that
  names Triton's address, promptly.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from textops.components.common.config import sample_data_path
from textops.components.common.errors import ModelNotFoundError
from textops.components.common.onnx_classifier import OnnxClassifier

if TYPE_CHECKING:
    from tests.integration.conftest import SendBadRequest, ServeProcess, StartServer

pytestmark = pytest.mark.integration

MODEL = "tiny-classifier"
VERSION = "7"
TEXTS = ["The food was great and the staff friendly.", "Terrible service, never again.", "ok"]
#: Triton's max batch size in the overlay (--backend-config=default-max-batch-size=64).
TRITON_MAX_BATCH = 64
CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad_requests" / "cases.yaml"
#: Corpus cases that do not apply to the transformer: it has no explainer.
NOT_APPLICABLE = {"v1_explain_too_many_texts", "v1_explain_not_json"}
CASES: list[dict[str, Any]] = [
    case
    for case in yaml.safe_load(CORPUS.read_text(encoding="utf-8"))
    if case["name"] not in NOT_APPLICABLE
]

TRITON_STAND_IN = '''
"""Triton's contract for the bundle's model.onnx, served by KServe and ONNX Runtime."""
import sys

import numpy as np
import onnxruntime as ort
from kserve import Model, ModelServer
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

MAX_BATCH = int(sys.argv[4])


class OnnxTensorModel(Model):
    def __init__(self, name, path):
        super().__init__(name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = sorted(node.name for node in self.session.get_inputs())
        self.ready = True

    async def predict(self, payload, headers=None, response_headers=None):
        if not isinstance(payload, InferRequest):
            raise InvalidInput("this model speaks the V2 protocol only")
        names = sorted(tensor.name for tensor in payload.inputs)
        if names != self.inputs:
            raise InvalidInput(f"expected inputs {self.inputs}, got {names}")
        feeds = {}
        for tensor in payload.inputs:
            if tensor.datatype != "INT64" or len(tensor.shape) != 2:
                raise InvalidInput(f"{tensor.name}: expected INT64 [batch, sequence]")
            feeds[tensor.name] = tensor.as_numpy()
        batch = payload.inputs[0].shape[0]
        if batch > MAX_BATCH:
            raise InvalidInput(f"inference request batch-size must be <= {MAX_BATCH}")
        (logits,) = self.session.run(["logits"], feeds)
        output = InferOutput("logits", list(logits.shape), "FP32", logits.astype(np.float32))
        return InferResponse(
            payload.id, self.name, [output], requested_outputs=payload.request_outputs
        )


if __name__ == "__main__":
    model = OnnxTensorModel(sys.argv[1], sys.argv[2])
    ModelServer(http_port=int(sys.argv[3]), enable_grpc=False).start([model])
'''


def _transformer(
    start: StartServer, bundle: Path, predictor_host: str, log: Path, *flags: str
) -> ServeProcess:
    command = [
        *(sys.executable, "-m", "textops.components.serve.transformer"),
        *("--bundle", str(bundle), "--model-version", VERSION),
        *("--model-name", MODEL, "--predictor-host", predictor_host),
        *("--predictor-protocol", "v2"),
        *flags,
    ]
    return start(command, log, model=MODEL)


@pytest.fixture(scope="module")
def triton(
    tiny_bundle_dir: Path,
    serve_process: StartServer,
    free_port: Callable[[], int],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """The Triton stand-in; yields its host:port, as KServe's --predictor_host gives it."""
    folder = tmp_path_factory.mktemp("triton")
    script = folder / "triton_stand_in.py"
    script.write_text(TRITON_STAND_IN, encoding="utf-8")
    port = free_port()
    model = str(tiny_bundle_dir / "model.onnx")
    command = [sys.executable, str(script), MODEL, model, str(port), str(TRITON_MAX_BATCH)]
    server = serve_process(command, folder / "triton.log", model=MODEL, port=port)
    yield f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def transformer(
    tiny_bundle_dir: Path,
    triton: str,
    serve_process: StartServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServeProcess]:
    """The transformer in front of the stand-in, with the predictor's default limits."""
    # Only the three files the transformer needs, as the docs promise.
    bundle = tmp_path_factory.mktemp("transformer") / "bundle"
    bundle.mkdir()
    for name in ("tokenizer.json", "labels.json", "metadata.json"):
        shutil.copy(tiny_bundle_dir / name, bundle / name)
    server = _transformer(serve_process, bundle, triton, bundle.parent / "transformer.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def orphan(
    tiny_bundle_dir: Path,
    serve_process: StartServer,
    free_port: Callable[[], int],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServeProcess]:
    """A transformer whose Triton is down, with the limits the bad-request corpus assumes."""
    log = tmp_path_factory.mktemp("orphan") / "transformer.log"
    dead = f"127.0.0.1:{free_port()}"
    limits = ("--max-batch-size", "8", "--max-body-bytes", "65536")
    server = _transformer(serve_process, tiny_bundle_dir, dead, log, *limits)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def reference(tiny_bundle_dir: Path) -> OnnxClassifier:
    return OnnxClassifier.from_bundle(tiny_bundle_dir, precision="fp32")


def _metrics(server: ServeProcess) -> dict[str, float]:
    """Every sample of the server's /metrics, by its name and labels as Prometheus writes them."""
    samples: dict[str, float] = {}
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def _v1(server: ServeProcess, instances: list[Any]) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/models/{MODEL}:predict", json={"instances": instances}, timeout=60
    )


def _v2(server: ServeProcess, texts: list[str]) -> httpx.Response:
    body = {
        "id": "req-1",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}],
    }
    return httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=body, timeout=60)


def _assert_v1_matches(body: dict[str, Any], texts: list[str], reference: OnnxClassifier) -> None:
    expected = reference.predict_proba(texts)
    labels = reference.labels.names
    assert body["model_version"] == VERSION
    assert len(body["predictions"]) == len(texts)
    for row, prediction in zip(expected, body["predictions"], strict=True):
        assert list(prediction["probabilities"]) == list(labels)
        got = np.array([prediction["probabilities"][label] for label in labels])
        np.testing.assert_allclose(got, row, atol=1e-5)
        assert prediction["label"] == labels[int(row.argmax())]


def test_v1_answers_as_the_onnx_classifier(
    transformer: ServeProcess, reference: OnnxClassifier
) -> None:
    plain = _v1(transformer, TEXTS)
    assert plain.status_code == 200, plain.text
    _assert_v1_matches(plain.json(), TEXTS, reference)
    objects = _v1(transformer, [{"text": text} for text in TEXTS])
    assert objects.status_code == 200, objects.text
    assert objects.json() == plain.json()


def test_v2_answers_as_the_onnx_classifier(
    transformer: ServeProcess, reference: OnnxClassifier
) -> None:
    answer = _v2(transformer, TEXTS)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"] == "req-1" and body["model_version"] == VERSION
    outputs = {output["name"]: output for output in body["outputs"]}
    expected = reference.predict_proba(TEXTS)
    assert outputs["probabilities"]["datatype"] == "FP32"
    assert outputs["probabilities"]["shape"] == [len(TEXTS), len(reference.labels)]
    got = np.array(outputs["probabilities"]["data"]).reshape(len(TEXTS), -1)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert outputs["label"]["data"] == reference.predict(TEXTS)

    metadata = httpx.get(f"{transformer.url}/v2/models/{MODEL}").json()
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]


def test_a_batch_larger_than_tritons_is_sent_in_chunks_and_kept_in_order(
    transformer: ServeProcess, reference: OnnxClassifier
) -> None:
    texts = pd.read_csv(sample_data_path(), dtype=str)["text"].head(150).tolist()
    before = _metrics(transformer)
    answer = _v1(transformer, texts)
    assert answer.status_code == 200, answer.text  # Triton refuses more than 64 at once
    _assert_v1_matches(answer.json(), texts, reference)

    v2 = _v2(transformer, texts).json()
    probabilities = {o["name"]: o for o in v2["outputs"]}["probabilities"]["data"]
    np.testing.assert_allclose(
        np.array(probabilities).reshape(len(texts), -1), reference.predict_proba(texts), atol=1e-5
    )

    after = _metrics(transformer)
    # Two requests of 150 texts, each sent as 64 + 64 + 22.
    count = f'textops_inference_batch_texts_count{{model_name="{MODEL}"}}'
    assert after[count] - before.get(count, 0) == 6
    for le, expected in (("16.0", 0), ("32.0", 2), ("64.0", 6)):
        bucket = f'textops_inference_batch_texts_bucket{{le="{le}",model_name="{MODEL}"}}'
        assert after[bucket] - before.get(bucket, 0) == expected, bucket
    predicted = sum(
        value - before.get(name, 0)
        for name, value in after.items()
        if name.startswith("textops_predictions_total{")
    )
    assert predicted == 2 * len(texts)
    assert after[f'textops_model_version_info{{model_name="{MODEL}",version="{VERSION}"}}'] == 1


def test_too_many_texts_are_refused_before_triton(transformer: ServeProcess) -> None:
    answer = _v1(transformer, ["x"] * 257)
    assert answer.status_code == 413
    assert "at most 256" in answer.json()["error"]


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_malformed_request_gets_the_predictors_4xx_json_error(
    orphan: ServeProcess, case: dict[str, Any], send_bad_request: SendBadRequest
) -> None:
    response = send_bad_request(orphan.url, case, model=MODEL, version=VERSION)
    assert response.status_code == case["status"], response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    for fragment in case["fragments"]:
        assert fragment.lower() in error.lower(), error


def test_triton_down_is_a_prompt_503_naming_it(orphan: ServeProcess) -> None:
    before = _metrics(orphan)
    for answer in (_v1(orphan, TEXTS), _v2(orphan, TEXTS)):
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"].startswith("application/json")
        error = answer.json()["error"]
        assert "cannot be reached" in error and "http://127.0.0.1:" in error, error
    refused = f'textops_request_errors_total{{model_name="{MODEL}",status="503"}}'
    assert _metrics(orphan)[refused] - before.get(refused, 0) == 2
    # The transformer itself stays up and ready.
    assert httpx.get(f"{orphan.url}/v2/models/{MODEL}/ready").status_code == 200


def test_a_triton_refusal_is_a_502_with_tritons_reason(
    tiny_bundle_dir: Path, triton: str, serve_process: StartServer, tmp_path: Path
) -> None:
    """Chunks over Triton's max batch size are refused by it: the stand-in holds Triton's
    limit, so the chunking test above can fail, and the refusal reaches the client."""
    log = tmp_path / "transformer.log"
    server = _transformer(
        serve_process, tiny_bundle_dir, triton, log, "--inference-batch-size", "100"
    )
    try:
        within = _v1(server, ["fine"] * TRITON_MAX_BATCH)
        assert within.status_code == 200, within.text
        beyond = _v1(server, ["fine"] * (TRITON_MAX_BATCH + 1))
    finally:
        server.stop()
    assert beyond.status_code == 502, beyond.text
    error = beyond.json()["error"]
    assert f"batch-size must be <= {TRITON_MAX_BATCH}" in error and triton in error, error


def test_only_the_graph_inputs_go_to_triton_as_int64(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    from textops.components.serve.transformer import load_bundle, triton_requests

    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    for name in ("tokenizer.json", "labels.json"):
        shutil.copy(tiny_bundle_dir / name, bundle_dir / name)
    metadata = json.loads((tiny_bundle_dir / "metadata.json").read_text())
    (bundle_dir / "metadata.json").write_text(
        json.dumps({**metadata, "onnx_inputs": ["input_ids", "attention_mask"]})
    )
    bundle = load_bundle(bundle_dir, "5")
    assert bundle.version == "5" and bundle.labels == ("negative", "positive")
    texts = [f"text {'word ' * i}" for i in range(10)]
    chunks = triton_requests(bundle, texts, model_name=MODEL, chunk_size=4)
    assert [len(chunk.rows) for chunk in chunks] == [4, 4, 2]
    assert sorted(int(row) for chunk in chunks for row in chunk.rows) == list(range(10))
    for chunk in chunks:
        tensors = {tensor.name: tensor for tensor in chunk.request.inputs}
        assert list(tensors) == ["input_ids", "attention_mask"]
        assert {tensor.datatype for tensor in tensors.values()} == {"INT64"}
        ids = tensors["input_ids"].as_numpy()
        assert ids.dtype == np.int64 and ids.shape[0] == len(chunk.rows)
        assert chunk.request.request_outputs[0].name == "logits"
        body, json_length = chunk.request.to_rest()  # binary tensor data after the JSON
        assert isinstance(body, bytes) and json_length is not None
        assert len(body) - json_length == sum(t.as_numpy().nbytes for t in tensors.values())

    (bundle_dir / "metadata.json").write_text(json.dumps({**metadata, "onnx_inputs": ["pixels"]}))
    with pytest.raises(ModelNotFoundError, match="onnx_inputs"):
        load_bundle(bundle_dir)
    (bundle_dir / "tokenizer.json").unlink()
    with pytest.raises(ModelNotFoundError, match=r"tokenizer\.json"):
        load_bundle(bundle_dir)
