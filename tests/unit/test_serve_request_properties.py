"""Properties of the request parser: whatever a client sends, the answer is texts or a 4xx.

The parser is what stands between a request body and ONNX Runtime: KServe's decoding with the
predictor's 400s (`TextopsDataPlane.decode`), then `parse_request`. For any body hypothesis
makes (tests/request_strategies.py), it either gives 1 to --max-batch-size texts that are
Unicode with something in them to classify, or raises one of the two errors the server
answers with 400 and 413, with a message. Any other exception would be a 500.

The V2 JSON route validates its body with FastAPI (`InferenceRequest`) before the parser sees
it; a body that FastAPI refuses is answered 400 there, so here it is simply not the parser's.
tests/integration/test_serve_fuzz.py holds the whole server to the same property.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from kserve.protocol.rest.v2_datamodels import InferenceRequest

from tests.request_strategies import ClientRequest, client_requests, json_values
from textops.components.serve.dataplane import TextopsDataPlane
from textops.components.serve.payloads import (
    BadRequestError,
    BatchTooLargeError,
    ParsedRequest,
    checked_text,
    parse_request,
)
from textops.components.serve.repository import BundleRepository
from textops.components.serve.settings import ServeSettings

MAX_BATCH_SIZE = 8
#: Deterministic runs (the same examples on every machine), many of them: the parser is fast.
PROPERTY = settings(
    max_examples=500,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def dataplane(tmp_path_factory: pytest.TempPathFactory) -> TextopsDataPlane:
    """The predictor's data plane; decoding needs no model loaded."""
    settings_ = ServeSettings(model_name="m", bundle=tmp_path_factory.mktemp("unused-bundle"))
    return TextopsDataPlane(BundleRepository(settings_))


def _decoded(dataplane: TextopsDataPlane, request: ClientRequest) -> Any:
    """What the parser is handed for `request`; None when FastAPI answers it 400 itself."""
    if request.route.startswith("v1"):
        decoded, _ = dataplane.decode(request.body, request.headers)
        return decoded
    if "inference-header-content-length" in request.headers:
        return dataplane.decode(request.body, request.headers, "v2", "m")[0]
    try:  # what FastAPI does with the V2 infer route's JSON body
        body = InferenceRequest.model_validate(json.loads(request.body))
    except (ValueError, RecursionError, pydantic.ValidationError):
        return None
    return dataplane.decode(body, request.headers, "v2", "m")[0]


def _check_outcome(payload: Any, headers: dict[str, str] | None) -> ParsedRequest | None:
    """Parse `payload`; a 4xx error must carry a message, and texts must be classifiable."""
    try:
        parsed = parse_request(payload, headers, MAX_BATCH_SIZE)
    except (BadRequestError, BatchTooLargeError) as refused:
        assert str(refused).strip(), f"{type(refused).__name__} without a message"
        return None
    assert 1 <= len(parsed.texts) <= MAX_BATCH_SIZE
    for i, text in enumerate(parsed.texts):
        assert checked_text(text, f"text {i}") == text
        text.encode("utf-8")  # what the tokenizer needs: no lone surrogate
    return parsed


@PROPERTY
@given(request=client_requests())
def test_any_request_body_gives_texts_or_a_4xx(
    dataplane: TextopsDataPlane, request: ClientRequest
) -> None:
    try:
        decoded = _decoded(dataplane, request)
    except BadRequestError as refused:
        assert str(refused).strip()
        return
    if decoded is not None:
        _check_outcome(decoded, request.headers)


@PROPERTY
@given(payload=json_values)
def test_any_decoded_json_value_gives_texts_or_a_4xx(payload: Any) -> None:
    _check_outcome(payload, None)
    _check_outcome({"instances": payload}, None)


def _outcome(dataplane: TextopsDataPlane, request: ClientRequest) -> str:
    try:
        decoded = _decoded(dataplane, request)
        if decoded is None:
            return "fastapi-400"
        return f"{parse_request(decoded, request.headers, MAX_BATCH_SIZE).protocol}-texts"
    except BatchTooLargeError:
        return "413"
    except BadRequestError as refused:
        if "nothing to classify" in str(refused):
            return "blank"
        return "surrogate" if "lone surrogate" in str(refused) else "400"


@pytest.mark.parametrize(
    "outcome", ["fastapi-400", "v1-texts", "v2-texts", "400", "blank", "surrogate", "413"]
)
def test_the_requests_reach_every_outcome(dataplane: TextopsDataPlane, outcome: str) -> None:
    """The properties above are only as good as the requests: each answer must be reachable."""
    found = find(
        client_requests(),
        lambda request: _outcome(dataplane, request) == outcome,
        settings=settings(
            max_examples=2000, derandomize=True, database=None, phases=[Phase.generate]
        ),
    )
    assert _outcome(dataplane, found) == outcome
