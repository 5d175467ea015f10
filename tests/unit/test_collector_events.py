"""Reading KServe payload-logger CloudEvents: every mode and payload shape, and redaction."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from textops.components.common.errors import EventFormatError
from textops.components.monitor.events import (
    REQUEST_TYPE,
    RESPONSE_TYPE,
    CloudEvent,
    parse_cloudevents,
    to_payload_event,
)


def binary_headers(event_id: str = "req-1", kind: str = "request", **extra: str) -> dict[str, str]:
    """The headers KServe's agent sends (binary mode)."""
    return {
        "Ce-Specversion": "1.0",
        "Ce-Id": event_id,
        "Ce-Type": REQUEST_TYPE if kind == "request" else RESPONSE_TYPE,
        "Ce-Source": "http://localhost:9081/",
        "Ce-Time": "2026-01-01T00:00:00Z",
        "Ce-Inferenceservicename": "sentiment",
        "Ce-Namespace": "default",
        "Ce-Component": "predictor",
        "Ce-Endpoint": "default",
        "Content-Type": "application/json",
        **extra,
    }


def one_event(headers: dict[str, str], body: Any) -> CloudEvent:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    events = parse_cloudevents(headers, raw)
    assert len(events) == 1
    return events[0]


V1_REQUEST = {"instances": ["great phone", {"text": "awful battery"}]}
V2_REQUEST = {
    "id": "req-1",
    "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["great", "awful"]}],
}
V1_RESPONSE = {
    "predictions": [
        {"label": "positive", "probabilities": {"negative": 0.1, "positive": 0.9}},
        {"label": "negative", "probabilities": {"negative": 0.7, "positive": 0.3}},
    ],
    "model_version": "3",
}
V2_RESPONSE: dict[str, Any] = {
    "model_name": "sentiment",
    "model_version": "3",
    "outputs": [
        {"name": "label", "shape": [2], "datatype": "BYTES", "data": ["positive", "negative"]},
        {
            "name": "probabilities",
            "shape": [2, 2],
            "datatype": "FP32",
            "data": [0.1, 0.9, 0.7, 0.3],
        },
    ],
}

# Probabilities first, as nested rows: outputs are found by name, not by position.
V2_NESTED_FIRST = {
    "outputs": [
        {**V2_RESPONSE["outputs"][1], "data": [[0.1, 0.9], [0.7, 0.3]]},
        V2_RESPONSE["outputs"][0],
    ]
}


@pytest.mark.parametrize("body", [V1_REQUEST, V2_REQUEST], ids=["v1", "v2"])
def test_binary_request(body: dict[str, Any]) -> None:
    event = one_event(binary_headers(), body)
    assert (event.id, event.kind, event.model_name) == ("req-1", "request", "sentiment")
    stored, counts, _ = to_payload_event(event, received_at=1.5)
    assert stored.kind == "request" and stored.received_at == 1.5
    assert len(stored.texts) == 2 and not counts


def test_v1_texts_in_either_form_and_order() -> None:
    stored, _, _ = to_payload_event(one_event(binary_headers(), V1_REQUEST), 0.0)
    assert stored.texts == ("great phone", "awful battery")


@pytest.mark.parametrize(
    "inputs",
    [
        # The only BYTES input, whatever its name, next to another tensor.
        [
            {"name": "ids", "shape": [1], "datatype": "INT64", "data": [7]},
            {"name": "sentence", "shape": [2, 1], "datatype": "BYTES", "data": [["a"], ["b"]]},
        ],
        # Named `text`, with nested data as some clients send for shape [n, 1].
        [{"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": [["a"], ["b"]]}],
    ],
)
def test_v2_text_tensor(inputs: list[dict[str, Any]]) -> None:
    stored, _, _ = to_payload_event(one_event(binary_headers(), {"inputs": inputs}), 0.0)
    assert stored.texts == ("a", "b")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (V1_RESPONSE, (("positive", 0.9), ("negative", 0.7))),
        ({"predictions": ["positive", "negative"]}, (("positive", None), ("negative", None))),
        ({"predictions": [{"label": "positive", "confidence": 0.8}]}, (("positive", 0.8),)),
        (V2_RESPONSE, (("positive", 0.9), ("negative", 0.7))),
        (V2_NESTED_FIRST, (("positive", 0.9), ("negative", 0.7))),
        ({"outputs": [V2_RESPONSE["outputs"][0]]}, (("positive", None), ("negative", None))),
    ],
    ids=["v1", "v1-plain-labels", "v1-confidence", "v2", "v2-nested-first", "v2-labels-only"],
)
def test_responses(body: dict[str, Any], expected: tuple[tuple[str, float | None], ...]) -> None:
    stored, _, _ = to_payload_event(one_event(binary_headers(kind="response"), body), 0.0)
    assert stored.kind == "response"
    assert [(label, None if c is None else round(c, 6)) for label, c in stored.predictions] == [
        (label, c) for label, c in expected
    ]


def test_response_model_version_and_name() -> None:
    headers = binary_headers(kind="response")
    del headers["Ce-Inferenceservicename"]
    stored, _, _ = to_payload_event(one_event(headers, {**V2_RESPONSE, "model_version": 4}), 0.0)
    assert stored.model_version == "4"  # a number becomes a string
    assert stored.model_name == "sentiment"  # from the V2 body when no header names it


def test_binary_mode_without_content_type_and_with_odd_header_case() -> None:
    # KServe's agent forwards the inference request's Content-Type, which may be absent.
    headers = {k.lower(): v for k, v in binary_headers(event_id="a%20b%25c").items()}
    del headers["content-type"]
    event = one_event(headers, V1_REQUEST)
    assert event.id == "a b%c"  # percent-encoded in binary mode


def structured(kind: str = "request", **fields: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": "s-1",
        "type": REQUEST_TYPE if kind == "request" else RESPONSE_TYPE,
        "source": "http://localhost:9081/",
        "inferenceservicename": "sentiment",
        "datacontenttype": "application/json",
        **fields,
    }


@pytest.mark.parametrize(
    "envelope",
    [
        structured(data=V1_REQUEST),
        structured(data=json.dumps(V1_REQUEST)),
        structured(data_base64=base64.b64encode(json.dumps(V1_REQUEST).encode()).decode()),
    ],
    ids=["data", "data-as-string", "data_base64"],
)
def test_structured_mode(envelope: dict[str, Any]) -> None:
    event = one_event({"Content-Type": "application/cloudevents+json; charset=utf-8"}, envelope)
    assert (event.id, event.kind, event.model_name) == ("s-1", "request", "sentiment")
    assert to_payload_event(event, 0.0)[0].texts == ("great phone", "awful battery")


def test_batch_mode() -> None:
    batch = [structured(data=V1_REQUEST), structured("response", data=V1_RESPONSE)]
    events = parse_cloudevents(
        {"Content-Type": "application/cloudevents-batch+json"}, json.dumps(batch).encode()
    )
    assert [(e.id, e.kind) for e in events] == [("s-1", "request"), ("s-1", "response")]


def test_redaction_counts_each_kind_and_keeps_other_numbers() -> None:
    texts = [
        "mail jane.doe@example.com or call +44 20 7946 0958",
        "card 4111 1111 1111 1111, iban GB82 WEST 1234 5698 7654 32",
        "order 4111 1111 1111 1112 arrived in 2023 for 19.99",  # fails the Luhn check
    ]
    stored, counts, _ = to_payload_event(one_event(binary_headers(), {"instances": texts}), 0.0)
    assert counts == {"EMAIL": 1, "PHONE": 1, "CARD": 1, "IBAN": 1}
    assert stored.texts[0] == "mail [EMAIL] or call [PHONE]"
    assert stored.texts[1] == "card [CARD], iban [IBAN]"
    assert stored.texts[2] == texts[2]


def test_messages_never_echo_payload_values() -> None:
    secret = "jane.doe@example.com"
    with pytest.raises(EventFormatError) as error:
        to_payload_event(one_event(binary_headers(), {"instances": [{"txt": secret}]}), 0.0)
    assert "instances[0] has no string 'text' field" in str(error.value)
    assert secret not in str(error.value)


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_events_encoded_by_the_cloudevents_sdk(mode: str) -> None:
    from cloudevents.conversion import to_binary, to_structured
    from cloudevents.http import CloudEvent as SdkEvent

    attributes = {
        "type": RESPONSE_TYPE,
        "source": "http://localhost:9081/",
        "id": "6a2c5c1e-0e1b-4b7e-9c1c-8f4e9f0f2a11",
        "inferenceservicename": "sentiment",
        "component": "predictor",
        "endpoint": "default",
        "datacontenttype": "application/json",
    }
    headers, body = (to_binary if mode == "binary" else to_structured)(
        SdkEvent(attributes, V1_RESPONSE)
    )
    event = one_event(dict(headers), body)
    assert (event.id, event.kind, event.model_name) == (attributes["id"], "response", "sentiment")
    assert to_payload_event(event, 0.0)[0].predictions == (("positive", 0.9), ("negative", 0.7))


def test_unstorable_characters_in_free_text_are_replaced_and_counted() -> None:
    # JSON's \ud83d escape without its pair, and NUL: a text and a label holding them.
    request = b'{"instances": ["broken \\ud83d emoji", "nul\\u0000here", "fine"]}'
    stored, _, normalized = to_payload_event(one_event(binary_headers(), request), 0.0)
    assert stored.texts == ("broken \ufffd emoji", "nul\ufffdhere", "fine")
    assert normalized == {"lone_surrogate": 1, "nul": 1}

    response = b'{"predictions": [{"label": "pos\\udfff", "confidence": NaN}, "neg"]}'
    stored, _, normalized = to_payload_event(
        one_event(binary_headers(kind="response"), response), 0.0
    )
    assert stored.predictions == (("pos\ufffd", None), ("neg", None))
    assert normalized == {"lone_surrogate": 1, "non_finite_confidence": 1}


@pytest.mark.parametrize(
    ("headers", "body", "message"),
    [
        (
            {"Content-Type": "application/cloudevents+json"},
            b'{"specversion": "1.0", "id": "a\\ud800", "type": "'
            + REQUEST_TYPE.encode()
            + b'", "data": {"instances": ["x"]}}',
            "the CloudEvent id (Ce-Id) holds a lone UTF-16 surrogate",
        ),
        (
            binary_headers(event_id="a%00b"),
            json.dumps(V1_REQUEST).encode(),
            "the CloudEvent id (Ce-Id) holds a NUL character",
        ),
        (
            binary_headers(**{"Ce-Inferenceservicename": "m%00"}),
            json.dumps(V1_REQUEST).encode(),
            "the inferenceservicename (Ce-Inferenceservicename) holds a NUL character",
        ),
        (
            binary_headers(kind="response"),
            b'{"predictions": ["x"], "model_version": "3\\ud800"}',
            "response 'req-1': model_version holds a lone UTF-16 surrogate",
        ),
    ],
    ids=["structured-id", "binary-id", "model-name", "model-version"],
)
def test_an_identifier_the_store_cannot_hold_is_refused_by_name(
    headers: dict[str, str], body: bytes, message: str
) -> None:
    with pytest.raises(EventFormatError, match=re.escape(message)):
        for event in parse_cloudevents(headers, body):
            to_payload_event(event, 0.0)
