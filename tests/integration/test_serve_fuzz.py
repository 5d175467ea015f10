"""Whatever a client sends the real predictor, it answers 2xx or 4xx and the connection lives on.

Hypothesis sends requests from tests/request_strategies.py to a real KServe ModelServer on a
loopback port, over one keep-alive connection: V1 predict and explain, V2 infer (plain and
versioned), as V1 JSON, V2 JSON, the V2 binary tensor extension, damaged JSON and bytes that
are none of these, with lone surrogates, NULs, invalid UTF-8, wrong shapes and datatypes, huge
numbers and deep nesting. Every answer must be below 500, a 4xx must be JSON with an error
message, and a good request sent right after on the same connection (the same local port)
must be answered 200. Any batch of texts gets the same answer in V1, V2 JSON and V2 binary
tensor data: the same labels, or 400 naming the same text. The runs are derandomized, so CI
sends the same requests every time.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings

from tests.request_strategies import ClientRequest, client_requests, text_batches

if TYPE_CHECKING:
    from tests.integration.conftest import StartServer

pytestmark = pytest.mark.integration

MODEL = "fuzz-classifier"
VERSION = "3"
MAX_BATCH_SIZE = 8
MAX_BODY_BYTES = 65536
PATHS = {
    "v1": f"/v1/models/{MODEL}:predict",
    "v1_explain": f"/v1/models/{MODEL}:explain",
    "v2": f"/v2/models/{MODEL}/infer",
    "v2_version": f"/v2/models/{MODEL}/versions/{VERSION}/infer",
}
GOOD_REQUEST = {"instances": ["the food was great"]}
JSON = {"content-type": "application/json"}


def _v2_texts(*texts: str) -> bytes:
    tensor = {"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": list(texts)}
    return json.dumps({"inputs": [tensor]}).encode()  # lone surrogates as \uXXXX escapes


#: Requests that once got a 500 (and a reset connection after it), sent on every run.
KNOWN = [
    ClientRequest("v2", JSON, _v2_texts("\ud800 x")),
    ClientRequest("v2_version", JSON, _v2_texts("a", "\udfff")),
    ClientRequest("v1_explain", JSON, json.dumps({"instances": ["\ud83d"]}).encode()),
]
#: The limits' refusals (413), whose answers are sent before the body is read.
TOO_MANY_TEXTS = ClientRequest("v2", JSON, _v2_texts(*["fine"] * (MAX_BATCH_SIZE + 1)))
TOO_LARGE = ClientRequest("v1", JSON, json.dumps({"instances": ["x" * MAX_BODY_BYTES]}).encode())


#: Deterministic runs; each example is a few requests to a real server, so not too many.
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def server_url(
    tiny_bundle_dir: Path, serve_process: StartServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    log = tmp_path_factory.mktemp("serve-fuzz") / "server.log"
    command = [
        *(sys.executable, "-m", "textops.components.serve"),
        *("--bundle", str(tiny_bundle_dir)),
        *("--model-name", MODEL, "--model-version", VERSION),
        *("--max-batch-size", str(MAX_BATCH_SIZE), "--max-body-bytes", str(MAX_BODY_BYTES)),
    ]
    server = serve_process(command, log, model=MODEL)
    yield server.url
    server.stop()


def _local_port(response: httpx.Response) -> Any:
    """The client's end of the connection the response came on."""
    return response.extensions["network_stream"].get_extra_info("client_addr")


def _check_answer(request: ClientRequest, response: httpx.Response) -> None:
    sent = f"{request.route} {request.headers} {request.body[:300]!r}"
    assert response.status_code < 500, f"{sent} -> {response.status_code} {response.text}"
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json"), sent
        error = response.json()["error"]
        assert isinstance(error, str) and error.strip(), sent


def test_no_request_gets_a_5xx_and_the_connection_stays_usable(server_url: str) -> None:
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=server_url, timeout=60) as client:

        @settings(FUZZ, max_examples=150)
        @given(request=client_requests())
        @example(request=KNOWN[0])
        @example(request=KNOWN[1])
        @example(request=KNOWN[2])
        @example(request=TOO_MANY_TEXTS)
        @example(request=TOO_LARGE)
        def check(request: ClientRequest) -> None:
            response = client.post(
                PATHS[request.route], content=request.body, headers=request.headers
            )
            statuses[response.status_code] += 1
            _check_answer(request, response)
            after = client.post(PATHS["v1"], json=GOOD_REQUEST)
            assert after.status_code == 200, after.text
            assert _local_port(after) == _local_port(response), "the connection was closed"

        check()
    # The requests reach the model as well as its refusals.
    assert statuses[200] > 0 and statuses[400] > 0 and statuses[413] > 0, statuses
    metrics = httpx.get(f"{server_url}/metrics").text
    counted = [line for line in metrics.splitlines() if line.startswith("textops_request_errors")]
    assert not [line for line in counted if 'status="5' in line], counted


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)


def _unclassifiable(text: str) -> bool:
    """Whether a text must be refused: it is not Unicode, or has nothing to classify."""
    blank = {"Cc", "Cf", "Zs", "Zl", "Zp"}
    return _has_surrogate(text) or all(
        ch.isspace() or unicodedata.category(ch) in blank for ch in text
    )


def _binary_texts(texts: list[str]) -> tuple[bytes, dict[str, str]]:
    """The V2 binary tensor extension; a lone surrogate becomes bytes that are not UTF-8."""
    raw = [t.encode("utf-8", "surrogatepass") for t in texts]
    tail = b"".join(len(r).to_bytes(4, "little") + r for r in raw)
    tensor = {
        "name": "text",
        "datatype": "BYTES",
        "shape": [len(texts)],
        "parameters": {"binary_data_size": len(tail)},
    }
    header = json.dumps({"inputs": [tensor]}).encode()
    content_length = {"inference-header-content-length": str(len(header))}
    return header + tail, {"content-type": "application/octet-stream", **content_length}


def _labels(response: httpx.Response) -> list[str]:
    body = response.json()
    if "predictions" in body:
        return [p["label"] for p in body["predictions"]]
    (label,) = [o for o in body["outputs"] if o["name"] == "label"]
    return list(label["data"])


_ESCAPED_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")


def _no_escaped_pair(batch: list[str]) -> bool:
    # A high then a low surrogate, written as JSON escapes, is one valid character (U+10000 and
    # up) to V1's JSON reader, while V2's BYTES reader refuses it: a known difference between
    # the protocols, left out of this property and recorded in docs/operations.md.
    return not any(_ESCAPED_PAIR.search(text) for text in batch)


def test_any_texts_get_the_same_answer_in_v1_and_v2(server_url: str) -> None:
    with httpx.Client(base_url=server_url, timeout=60) as client:

        @settings(FUZZ, max_examples=100)
        @given(batch=text_batches.filter(_no_escaped_pair))
        @example(batch=["fine", ""])
        @example(batch=["\ud800 x"])
        def check(batch: list[str]) -> None:
            binary, binary_headers = _binary_texts(batch)
            answers = {
                "v1": client.post(
                    PATHS["v1"], content=json.dumps({"instances": batch}).encode(), headers=JSON
                ),
                "v2": client.post(PATHS["v2"], content=_v2_texts(*batch), headers=JSON),
                "v2 binary": client.post(PATHS["v2"], content=binary, headers=binary_headers),
            }
            refused = [i for i, text in enumerate(batch) if _unclassifiable(text)]
            statuses = {name: answer.status_code for name, answer in answers.items()}
            if not refused:
                assert statuses == dict.fromkeys(answers, 200), (batch, answers["v1"].text)
                labels = [_labels(answer) for answer in answers.values()]
                assert labels[0] == labels[1] == labels[2] and len(labels[0]) == len(batch)
                return
            assert statuses == dict.fromkeys(answers, 400), batch
            first = refused[0]
            errors = {name: answer.json()["error"] for name, answer in answers.items()}
            assert f"element {first} " in errors["v2"], (batch, errors)
            if any(_has_surrogate(text) for text in batch):
                # V1's JSON reader refuses the whole body, saying where in it; KServe's binary
                # tensor reader refuses the bytes that are not UTF-8, quoting them.
                assert "surrogate" in errors["v1"], (batch, errors)
                assert "UTF-8" in errors["v2 binary"], (batch, errors)
            else:
                assert errors["v1"].startswith(f"instances[{first}] "), (batch, errors)
                assert f"element {first} " in errors["v2 binary"], (batch, errors)

        check()
