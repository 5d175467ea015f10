"""What clients send and what they get back, on a real predictor: no request causes a 5xx.

- Every malformed request of the corpus tests/data/bad_requests/cases.yaml gets its 4xx
  status and a JSON error that says what was wrong, and leaves the connection usable.
- The limits hold to the byte and to the text: a body of exactly --max-body-bytes and a batch
  of exactly --max-batch-size texts are served, one byte or one text more is 413.
- The V2 routes against the Open Inference Protocol REST spec (an upstream copy in
  tests/reference): responses of real requests validate against the spec's JSON schemas, and
  schemathesis sends requests generated from the spec and checks that every answer is a
  documented one (a status the spec lists, JSON, the spec's schema) and never a 5xx.
"""

from __future__ import annotations

import copy
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import jsonschema
import pytest
import yaml

if TYPE_CHECKING:
    from tests.integration.conftest import CorpusRequest, SendBadRequest, StartServer

pytestmark = pytest.mark.integration

MODEL = "tiny-classifier"
VERSION = "3"
MAX_BODY_BYTES = 65536
MAX_BATCH_SIZE = 8
JSON = {"content-type": "application/json"}
CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad_requests" / "cases.yaml"
CASES: list[dict[str, Any]] = yaml.safe_load(CORPUS.read_text(encoding="utf-8"))
SPEC = Path(__file__).resolve().parents[1] / "reference" / "kserve" / "rest_predict_v2.yaml"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    """The spec, with its `${NAME}` path templates written as OpenAPI's `{NAME}`."""
    loaded: dict[str, Any] = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    loaded["paths"] = {path.replace("${", "{"): item for path, item in loaded["paths"].items()}
    return loaded


@pytest.fixture(scope="module")
def server_url(
    tiny_bundle_dir: Path, serve_process: StartServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    log = tmp_path_factory.mktemp("serve-protocol") / "server.log"
    command = [
        *(sys.executable, "-m", "textops.components.serve"),
        *("--bundle", str(tiny_bundle_dir)),
        *("--model-name", MODEL, "--model-version", VERSION),
        *("--max-batch-size", str(MAX_BATCH_SIZE), "--max-body-bytes", str(MAX_BODY_BYTES)),
    ]
    server = serve_process(command, log, model=MODEL)
    yield server.url
    server.stop()


def _validate(spec: dict[str, Any], schema_name: str, document: Any) -> None:
    schema = {"components": spec["components"], "$ref": f"#/components/schemas/{schema_name}"}
    jsonschema.Draft7Validator(schema).validate(document)


def _infer(server_url: str, body: Any) -> httpx.Response:
    return httpx.post(f"{server_url}/v2/models/{MODEL}/versions/{VERSION}/infer", json=body)


def test_responses_follow_the_spec_schemas(spec: dict[str, Any], server_url: str) -> None:
    _validate(spec, "metadata_server_response", httpx.get(f"{server_url}/v2").json())
    metadata = httpx.get(f"{server_url}/v2/models/{MODEL}/versions/{VERSION}").json()
    _validate(spec, "metadata_model_response", metadata)

    request = {
        "id": "42",
        "inputs": [{"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": [["a"], ["b"]]}],
        "outputs": [{"name": "probabilities"}],
    }
    _validate(spec, "inference_request", request)
    answer = _infer(server_url, request)
    assert answer.status_code == 200, answer.text
    _validate(spec, "inference_response", answer.json())
    assert [o["name"] for o in answer.json()["outputs"]] == ["probabilities"]
    plain = _infer(server_url, {"inputs": [request["inputs"][0] | {"shape": [2]}]}).json()
    _validate(spec, "inference_response", plain)

    refused = _infer(server_url, {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]})
    assert refused.status_code == 400
    _validate(spec, "inference_error_response", refused.json())
    assert isinstance(refused.json()["error"], str)


def test_binary_data_extension_round_trip(server_url: str) -> None:
    """BYTES in the binary extension (4-byte little-endian length, then UTF-8), both ways."""
    texts = [b"great food", "caf\u00e9 bien".encode()]
    raw = b"".join(len(t).to_bytes(4, "little") + t for t in texts)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    answer = httpx.post(
        f"{server_url}/v2/models/{MODEL}/infer",
        content=header + raw,
        headers={
            "content-type": "application/octet-stream",
            "inference-header-content-length": str(len(header)),
        },
    )
    assert answer.status_code == 200, answer.text
    from kserve import InferResponse

    length = int(answer.headers["inference-header-content-length"])
    outputs = json.loads(answer.content[:length])["outputs"]
    assert all("data" not in o and o["parameters"]["binary_data_size"] > 0 for o in outputs)
    decoded = InferResponse.from_bytes(answer.content, length)
    tensor = {
        "name": "text",
        "shape": [2],
        "datatype": "BYTES",
        "data": [t.decode() for t in texts],
    }
    json_answer = _infer(server_url, {"inputs": [tensor]}).json()
    labels = [
        x.decode() if isinstance(x, bytes) else x
        for x in decoded.get_output_by_name("label").as_numpy().tolist()
    ]
    assert labels == json_answer["outputs"][0]["data"]


def _narrowed_to_this_model(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with inputs this model takes (one BYTES `text` of strings): mostly 200s."""
    narrowed = copy.deepcopy(spec)
    schemas = narrowed["components"]["schemas"]
    schemas["request_input"]["properties"].update(
        name={"type": "string", "enum": ["text"]},
        datatype={"type": "string", "enum": ["BYTES"]},
        shape={
            "type": "array",
            "items": {"type": "integer", "minimum": 1, "maximum": 3},
            "minItems": 1,
            "maxItems": 1,
        },
        # Texts with something to classify (a letter): empty and blank ones are refused.
        data={
            "type": "array",
            "items": {"type": "string", "pattern": "^[a-z ]*[a-z][a-z ]*$"},
            "minItems": 1,
            "maxItems": 3,
        },
    )
    schemas["inference_request"]["properties"]["inputs"].update(minItems=1, maxItems=1)
    schemas["inference_request"]["properties"].pop("outputs")
    schemas["inference_request"]["properties"].pop("parameters")
    return narrowed


@pytest.mark.parametrize("inputs", ["any", "this_model"])
def test_generated_requests_get_documented_answers(
    spec: dict[str, Any], server_url: str, inputs: str
) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    spec = _narrowed_to_this_model(spec) if inputs == "this_model" else copy.deepcopy(spec)
    # Only the model this server serves: other names and versions are 404s, which the spec
    # does not list.
    for item in spec["paths"].values():
        for parameter in item.get("parameters", []):
            value = MODEL if parameter["name"] == "MODEL_NAME" else VERSION
            parameter["schema"] = {"type": "string", "enum": [value]}
    schema = schemathesis.openapi.from_dict(spec)
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    statuses: list[int] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=40,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            response = case.call_and_validate(base_url=server_url, checks=checks)
            statuses.append(response.status_code)

        check()
    assert 400 in statuses if inputs == "any" else statuses.count(200) > 10


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_malformed_request_gets_a_4xx_json_error(
    server_url: str, case: dict[str, Any], send_bad_request: SendBadRequest
) -> None:
    response = send_bad_request(server_url, case, model=MODEL, version=VERSION)
    assert response.status_code == case["status"], response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error, str)
    for fragment in case["fragments"]:
        assert fragment.lower() in error.lower(), error


def _error_counts(server_url: str) -> Counter[str]:
    """`textops_request_errors_total` by status, from the server's /metrics."""
    counts: Counter[str] = Counter()
    for line in httpx.get(f"{server_url}/metrics").text.splitlines():
        if line.startswith("textops_request_errors_total{"):
            labels, value = line.rsplit(" ", 1)
            status = labels.split('status="', 1)[1].split('"', 1)[0]
            counts[status] += int(float(value))
    return counts


def test_every_corpus_case_leaves_the_connection_usable_and_is_counted(
    server_url: str, corpus_request: CorpusRequest
) -> None:
    before = _error_counts(server_url)
    good = {"instances": ["fine"]}
    with httpx.Client(base_url=server_url, timeout=30) as client:
        for case in CASES:
            method, path, headers, body = corpus_request(case, model=MODEL, version=VERSION)
            answer = client.request(method, path, content=body, headers=headers)
            assert answer.status_code == case["status"], (case["name"], answer.text)
            after = client.post(f"/v1/models/{MODEL}:predict", json=good)
            assert after.status_code == 200, (case["name"], after.text)
            assert _local_port(after) == _local_port(answer), f"{case['name']}: connection closed"
    counted = _error_counts(server_url) - before
    assert counted == Counter(str(case["status"]) for case in CASES)
    assert not [status for status in _error_counts(server_url) if status.startswith("5")]


def _local_port(response: httpx.Response) -> Any:
    """The client's end of the connection the response came on."""
    return response.extensions["network_stream"].get_extra_info("client_addr")


def _body_of(size: int, protocol: str) -> bytes:
    """A valid request body of exactly `size` bytes: one text of x's, as long as it takes."""
    if protocol == "v1":
        head, tail = b'{"instances": ["', b'"]}'
    else:
        head = b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["'
        tail = b'"]}]}'
    body = head + b"x" * (size - len(head) - len(tail)) + tail
    assert len(body) == size
    return body


@pytest.mark.parametrize("protocol", ["v1", "v2"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_body_limit_holds_to_the_byte(server_url: str, protocol: str, framing: str) -> None:
    path = f"/v1/models/{MODEL}:predict" if protocol == "v1" else f"/v2/models/{MODEL}/infer"

    def send(body: bytes) -> httpx.Response:
        # An iterator is sent chunked, without Content-Length: the limit holds while reading.
        content = iter([body]) if framing == "chunked" else body
        return httpx.post(server_url + path, content=content, headers=JSON)

    accepted = send(_body_of(MAX_BODY_BYTES, protocol))
    assert accepted.status_code == 200, accepted.text
    refused = send(_body_of(MAX_BODY_BYTES + 1, protocol))
    assert refused.status_code == 413
    assert f"at most {MAX_BODY_BYTES} are allowed (--max-body-bytes)" in refused.json()["error"]


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_batch_limit_holds_to_the_text(server_url: str, protocol: str) -> None:
    def send(count: int) -> httpx.Response:
        texts = [f"text number {i}" for i in range(count)]
        if protocol == "v1":
            return httpx.post(f"{server_url}/v1/models/{MODEL}:predict", json={"instances": texts})
        tensor = {"name": "text", "datatype": "BYTES", "shape": [count], "data": texts}
        return _infer(server_url, {"inputs": [tensor]})

    accepted = send(MAX_BATCH_SIZE)
    assert accepted.status_code == 200, accepted.text
    refused = send(MAX_BATCH_SIZE + 1)
    assert refused.status_code == 413
    assert f"at most {MAX_BATCH_SIZE} are allowed" in refused.json()["error"]
