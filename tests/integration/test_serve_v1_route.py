"""The predictor's V1 predict route answers exactly as KServe's own route does.

`V1PredictRoute` answers `POST /v1/models/<name>:predict` before FastAPI's router, calling the
data plane as KServe's handler does. Every V1 predict case of the bad-request corpus and a set
of good requests (strings, objects, batches, binary and structured CloudEvents) are answered
by both, in process (tests/integration/v1_route_parity.py), and must get the same status,
headers and body; lifespan messages still pass through to KServe's app.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

if TYPE_CHECKING:
    from tests.integration.conftest import CorpusRequest

pytestmark = pytest.mark.integration

MODEL = "tiny-classifier"
HERE = Path(__file__).resolve().parent
CASES: list[dict[str, Any]] = yaml.safe_load(
    (HERE.parent / "data" / "bad_requests" / "cases.yaml").read_text(encoding="utf-8")
)
JSON = {"content-type": "application/json"}
CLOUDEVENT = {
    "ce-specversion": "1.0",
    "ce-id": "parity-1",
    "ce-source": "tests",
    "ce-type": "org.kubeflow.serving.inference.request",
}
GOOD: list[tuple[str, dict[str, str], Any]] = [
    ("one_text", JSON, {"instances": ["the food was great"]}),
    ("batch", JSON, {"instances": ["great", "awful", "it was fine, I suppose"]}),
    ("text_objects", JSON, {"instances": [{"text": "great"}, {"text": "awful"}]}),
    ("long_text_truncated", JSON, {"instances": ["very good " * 400]}),
    ("binary_cloudevent", {**JSON, **CLOUDEVENT}, {"instances": ["great"]}),
    (
        "structured_cloudevent",
        {"content-type": "application/cloudevents+json"},
        {
            "specversion": "1.0",
            "id": "parity-2",
            "time": "2026-01-01T00:00:00Z",
            "source": "tests",
            "type": "org.kubeflow.serving.inference.request",
            "datacontenttype": "application/json",
            "data": {"instances": ["great"]},
        },
    ),
]


#: What differs between any two answers: a CloudEvent response's fresh id and time.
FRESH = ("ce-id", "ce-time", "id", "time")


def _comparable(answer: dict[str, Any]) -> dict[str, Any]:
    headers = [[k, "*" if k in FRESH else v] for k, v in answer["headers"]]
    body: Any = answer["body"]
    try:
        body = json.loads(body)
    except ValueError:
        return {**answer, "headers": headers}
    if isinstance(body, dict):
        body = {k: "*" if k in FRESH else v for k, v in body.items()}
    return {**answer, "headers": headers, "body": body}


def _joined(body: bytes | Iterator[bytes] | None) -> bytes:
    if body is None:
        return b""
    return body if isinstance(body, bytes) else b"".join(body)


def _requests(corpus_request: CorpusRequest) -> list[dict[str, Any]]:
    requests = []
    for case in CASES:
        method, path, headers, body = corpus_request(case, model=MODEL, version="1")
        if method == "POST" and path.endswith(":predict"):
            requests.append(
                {
                    "name": case["name"],
                    "method": method,
                    "path": path,
                    "headers": headers,
                    "body_base64": base64.b64encode(_joined(body)).decode(),
                }
            )
    for name, headers, document in GOOD:
        requests.append(
            {
                "name": name,
                "method": "POST",
                "path": f"/v1/models/{MODEL}:predict",
                "headers": headers,
                "body_base64": base64.b64encode(json.dumps(document).encode()).decode(),
            }
        )
    return requests


def test_v1_predict_route_answers_as_kserve_route_does(
    tiny_bundle_dir: Path, corpus_request: CorpusRequest, tmp_path: Path
) -> None:
    requests = _requests(corpus_request)
    (tmp_path / "requests.json").write_text(json.dumps(requests))
    done = subprocess.run(
        [
            sys.executable,
            str(HERE / "v1_route_parity.py"),
            str(tiny_bundle_dir),
            MODEL,
            str(tmp_path / "requests.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["lifespan"] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    answers = result["answers"]
    assert [a["name"] for a in answers] == [r["name"] for r in requests]
    for answer in answers:
        assert _comparable(answer["route"]) == _comparable(answer["kserve"]), answer["name"]
    statuses = {a["name"]: a["route"]["status"] for a in answers}
    assert all(statuses[name] == 200 for name, _, _ in GOOD), statuses
    assert len([s for s in statuses.values() if 400 <= s < 500]) >= 20, statuses
    cloudevent = next(a for a in answers if a["name"] == "binary_cloudevent")["route"]
    assert "ce-id" in dict(cloudevent["headers"]), cloudevent
