"""A poison-proof collector: any input is stored or refused with a 4xx, and a bad event fails
alone.

Property tests (hypothesis) feed the parser, and then the real collector over a real SQLite
store, CloudEvents as KServe's logger sends them and anything else: any bytes, any header
values, JSON with lone surrogates, NUL, huge numbers, NaN and deep nesting. Every input must
be either stored (200, and in the store) or refused with a 4xx and a message; never a 5xx,
never an exception. Then poison events are mixed into one group commit with good events of
other clients, and only the poison may fail.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tests.unit.collector_gate import WAIT_SECONDS, GatedStore, LiveCollector, wait_for
from textops.components.common.errors import EventFormatError
from textops.components.monitor import events as events_module
from textops.components.monitor.collector import create_app
from textops.components.monitor.events import (
    BATCH_CONTENT_TYPE,
    REQUEST_TYPE,
    RESPONSE_TYPE,
    STRUCTURED_CONTENT_TYPE,
    parse_cloudevents,
    to_payload_event,
)
from textops.components.monitor.storable import REPLACEMENT_CHARACTER, unstorable_reason
from textops.components.monitor.store import PayloadEvent, open_store

# Every character Python strings can hold, lone surrogates and NUL among them.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=12)
POISON_TEXT = st.sampled_from(["\ud800", "a\x00b", "\udfff\ud83d", "ok \ud83d end", "\x00"])
TEXTS = ANY_TEXT | POISON_TEXT
NUMBERS = (
    st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([10**400, -(10**400), 0.5, 1])
)
KEYS = st.sampled_from(
    [
        "instances",
        "inputs",
        "outputs",
        "predictions",
        "text",
        "name",
        "datatype",
        "data",
        "label",
        "probabilities",
        "confidence",
        "model_version",
        "model_name",
        "id",
        "type",
    ]
)
JSON = st.recursive(
    st.none() | st.booleans() | NUMBERS | TEXTS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS | TEXTS, inner, max_size=4),
    max_leaves=10,
)
V1_REQUEST = st.fixed_dictionaries(
    {"instances": st.lists(TEXTS | st.fixed_dictionaries({"text": TEXTS}) | JSON, max_size=4)}
)
V2_REQUEST = st.fixed_dictionaries(
    {
        "inputs": st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.sampled_from(["text", "other"]) | TEXTS,
                    "datatype": st.sampled_from(["BYTES", "FP32"]),
                    "data": st.lists(TEXTS | st.lists(TEXTS, max_size=2), max_size=4) | JSON,
                }
            ),
            max_size=3,
        )
    }
)
PREDICTION = TEXTS | st.fixed_dictionaries(
    {"label": TEXTS},
    optional={
        "probabilities": st.dictionaries(TEXTS, NUMBERS | JSON, max_size=3),
        "confidence": NUMBERS | JSON,
    },
)
V1_RESPONSE = st.fixed_dictionaries(
    {"predictions": st.lists(PREDICTION, max_size=4)},
    optional={"model_version": TEXTS | NUMBERS | JSON, "model_name": TEXTS | JSON},
)
V2_RESPONSE = st.fixed_dictionaries(
    {
        "outputs": st.tuples(
            st.fixed_dictionaries(
                {"name": st.just("label"), "datatype": st.just("BYTES"), "data": st.lists(TEXTS)}
            ),
            st.fixed_dictionaries(
                {"name": st.just("probabilities"), "data": st.lists(NUMBERS | JSON, max_size=6)}
            ),
        ).map(list)
    },
    optional={"model_version": TEXTS | NUMBERS, "model_name": TEXTS},
)
PAYLOADS = V1_REQUEST | V2_REQUEST | V1_RESPONSE | V2_RESPONSE | JSON
# Bytes that no JSON encoder writes: deep nesting, a number json.loads refuses, bad UTF-8,
# UTF-8-encoded surrogates.
ODD_BYTES = st.sampled_from(
    [b"[" * 5000, b'{"instances": [' + b"1" * 5000 + b"]}", b"\xff\xfe", b'["\xed\xa0\x80"]']
)


@st.composite
def json_bytes(draw: st.DrawFn, value: st.SearchStrategy[Any] = PAYLOADS) -> bytes:
    """A JSON document: lone surrogates as \\u escapes, or as raw (CESU-8) bytes."""
    payload = draw(value)
    if draw(st.booleans()):
        return json.dumps(payload).encode()
    return json.dumps(payload, ensure_ascii=False).encode("utf-8", "surrogatepass")


BODIES = json_bytes() | ODD_BYTES | st.binary(max_size=64)
# Header values as HTTP carries them (Latin-1, no control characters), percent-escapes that
# decode to NUL or to a surrogate's UTF-8 bytes among them.
HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=16
) | st.sampled_from(["%00", "%ED%A0%80", "a%20b", "%", "id-1"])
CONTENT_TYPES = st.sampled_from(
    ["application/json", "", STRUCTURED_CONTENT_TYPE, BATCH_CONTENT_TYPE, "text/plain"]
)


@st.composite
def binary_mode(draw: st.DrawFn, values: st.SearchStrategy[str] = HEADER_TEXT) -> dict[str, str]:
    """Headers of a binary-mode event as KServe's agent sends them, some changed or left out."""
    headers = {
        "Ce-Specversion": draw(st.sampled_from(["1.0", "0.3", "2.0"]) | values),
        "Ce-Id": draw(values),
        "Ce-Type": draw(st.sampled_from([REQUEST_TYPE, RESPONSE_TYPE]) | values),
        "Ce-Source": "http://localhost:9081/",
        "Ce-Inferenceservicename": draw(values),
        "Content-Type": draw(CONTENT_TYPES),
    }
    dropped = draw(st.sets(st.sampled_from(sorted(headers))))
    return {key: value for key, value in headers.items() if key not in dropped}


@st.composite
def envelope(draw: st.DrawFn) -> dict[str, Any]:
    """A structured-mode event, its attributes any JSON, its data in any of the three forms."""
    attributes = {
        "specversion": draw(st.sampled_from(["1.0", "0.3"]) | JSON),
        "id": draw(TEXTS | JSON),
        "type": draw(st.sampled_from([REQUEST_TYPE, RESPONSE_TYPE]) | JSON),
        "source": "http://localhost:9081/",
        "inferenceservicename": draw(TEXTS | JSON),
    }
    payload = draw(PAYLOADS)
    form = draw(st.sampled_from(["data", "string", "base64", "bad-base64", "none"]))
    if form == "data":
        attributes["data"] = payload
    elif form == "string":
        attributes["data"] = json.dumps(payload)
    elif form == "base64":
        attributes["data_base64"] = base64.b64encode(draw(json_bytes())).decode()
    elif form == "bad-base64":
        attributes["data_base64"] = draw(TEXTS | JSON)
    return attributes


@st.composite
def structured_mode(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    if draw(st.booleans()):
        headers = {"Content-Type": STRUCTURED_CONTENT_TYPE}
        return headers, draw(json_bytes(envelope()))
    headers = {"Content-Type": BATCH_CONTENT_TYPE}
    return headers, draw(json_bytes(st.lists(envelope(), max_size=3) | JSON))


REQUESTS = st.tuples(binary_mode(), BODIES) | structured_mode()
# The parser also sees header values no HTTP server would pass on.
PARSER_REQUESTS = REQUESTS | st.tuples(binary_mode(ANY_TEXT), BODIES)


def assert_storable(event: PayloadEvent) -> None:
    for value in (event.event_id, event.model_name, event.model_version, *event.texts):
        assert value is None or unstorable_reason(value) is None
    for label, confidence in event.predictions:
        assert unstorable_reason(label) is None
        assert confidence is None or math.isfinite(confidence)


KSERVE_RESPONSE = {
    "Ce-Specversion": "1.0",
    "Ce-Id": "r-1",
    "Ce-Type": RESPONSE_TYPE,
    "Content-Type": "application/json",
}


# Inputs that once escaped the parser as exceptions other than EventFormatError, kept here
# whatever hypothesis draws: nesting deeper than the recursion limit, an integer of more digits
# than int() reads, an unhashable type, an integer too large for a float.
@example((KSERVE_RESPONSE, b"[" * 5000))
@example((KSERVE_RESPONSE, b'{"predictions": [' + b"1" * 5000 + b"]}"))
@example(
    (
        {"Content-Type": STRUCTURED_CONTENT_TYPE},
        b'{"specversion": "1.0", "id": "a", "type": [], "data": {}}',
    )
)
@example(
    (KSERVE_RESPONSE, b'{"predictions": [{"label": "x", "confidence": 1' + b"0" * 400 + b"}]}")
)
@example((KSERVE_RESPONSE | {"Ce-Id": "a%00b"}, b'{"predictions": ["x"]}'))
@settings(max_examples=400, deadline=None, database=None)
@given(PARSER_REQUESTS)
def test_the_parser_gives_storable_events_or_a_format_error(
    request_parts: tuple[dict[str, str], bytes],
) -> None:
    headers, body = request_parts
    try:
        read = [to_payload_event(event, 0.0) for event in parse_cloudevents(headers, body)]
    except EventFormatError as e:
        assert str(e)
        return
    for one in read:
        assert_storable(one.event)


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path_factory.mktemp('poison') / 'payloads.db'}"
    with TestClient(create_app(open_store(url)), raise_server_exceptions=False) as client:
        yield client


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(REQUESTS)
def test_the_collector_stores_any_input_or_refuses_it_with_a_4xx(
    collector: TestClient, request_parts: tuple[dict[str, str], bytes]
) -> None:
    headers, body = request_parts
    # Sent as bytes: HTTP carries header values as Latin-1, which the server decodes back.
    raw = {name: value.encode("latin-1") for name, value in headers.items()}
    answer = collector.post("/events", content=body, headers=raw)  # type: ignore[arg-type]
    assert answer.status_code in (200, 400), answer.text
    if answer.status_code == 400:
        assert answer.json()["error"]
        return
    stored = answer.json()
    keys = [(event.id, event.kind) for event in parse_cloudevents(headers, body)]
    assert stored["stored"] + stored["duplicates"] == len(keys)
    writer = collector.app.state.collector.writer  # type: ignore[attr-defined]
    assert writer.store.missing_events(keys) == []


def cloudevent(event_id: str, texts: list[str]) -> tuple[dict[str, str], bytes]:
    headers = {
        "Ce-Specversion": "1.0",
        "Ce-Id": event_id,
        "Ce-Type": REQUEST_TYPE,
        "Ce-Source": "http://localhost/",
        "Content-Type": "application/json",
    }
    return headers, json.dumps({"instances": texts}).encode()


# A text with a lone surrogate, and a structured-mode event whose id holds one.
POISON_TEXT_EVENT = cloudevent("poison-text", ["broken emoji \ud83d here"])
POISON_ID_EVENT = (
    {"Content-Type": STRUCTURED_CONTENT_TYPE},
    json.dumps(
        {"specversion": "1.0", "id": "bad\ud800id", "type": REQUEST_TYPE, "source": "s"}
        | {"data": {"instances": ["x"]}}
    ).encode(),
)


def send_in_one_commit(
    live: LiveCollector, requests: dict[str, tuple[dict[str, str], bytes]]
) -> dict[str, httpx.Response]:
    """Send `requests` from clients of their own while a commit is held, so that every one
    that reaches the writer is queued behind it and joins the same next commit."""
    answers: dict[str, httpx.Response] = {}

    def send(name: str, headers: dict[str, str], body: bytes) -> None:
        answers[name] = httpx.post(
            f"{live.url}/events", headers=headers, content=body, timeout=WAIT_SECONDS
        )

    live.store.hold.set()
    blocker = threading.Thread(target=send, args=("blocker", *cloudevent("blocker", ["x"])))
    blocker.start()
    assert live.store.at_gate.wait(WAIT_SECONDS)
    clients = [threading.Thread(target=send, args=(name, *requests[name])) for name in requests]
    for client in clients:
        client.start()
    refused_at_the_door = 1 if "poison-id" in requests else 0
    # The good events and any poison that passed validation wait in the writer's queue; the
    # refused one was answered without reaching it.
    wait_for(
        lambda: (
            live.writer.queued() == len(requests) - refused_at_the_door
            and len(answers) == refused_at_the_door
        ),
        "every event to queue behind the held commit",
    )
    live.store.hold.clear()
    live.store.gate_open.set()
    for thread in [blocker, *clients]:
        thread.join(WAIT_SECONDS)
    return answers


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveCollector]:
    collector = LiveCollector(GatedStore(tmp_path / "payloads.db"))
    collector.start()
    yield collector
    collector.stop()


GOOD = {f"good-{i}": cloudevent(f"good-{i}", [f"review number {i}"]) for i in range(8)}


def stored_texts(live: LiveCollector) -> dict[str, str]:
    with sqlite3.connect(f"file:{live.store.path}?mode=ro", uri=True) as reader:
        rows = reader.execute("SELECT event_id, text FROM textops_payload_items").fetchall()
    return dict(rows)


def test_poison_mixed_into_a_group_commit_fails_alone(live: LiveCollector) -> None:
    answers = send_in_one_commit(
        live, {**GOOD, "poison-text": POISON_TEXT_EVENT, "poison-id": POISON_ID_EVENT}
    )
    assert {name: answers[name].status_code for name in GOOD} == dict.fromkeys(GOOD, 200)
    # The lone surrogate of a text is replaced and counted; an id holding one is refused.
    assert answers["poison-text"].status_code == 200
    assert answers["poison-id"].status_code == 400
    assert "the CloudEvent id (Ce-Id) holds a lone UTF-16 surrogate" in answers["poison-id"].text
    texts = stored_texts(live)
    assert texts["poison-text"] == f"broken emoji {REPLACEMENT_CHARACTER} here"
    assert {name: texts[name] for name in GOOD} == {
        name: f"review number {name.split('-')[1]}" for name in GOOD
    }
    metrics = httpx.get(f"{live.url}/metrics").text
    assert 'textops_collector_values_normalized_total{reason="lone_surrogate"} 1.0' in metrics
    assert 'textops_collector_events_rejected_total{reason="malformed"} 1.0' in metrics


def test_poison_that_slips_past_validation_fails_alone(
    live: LiveCollector, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Validation turned off for texts: the lone surrogate reaches SQLite, which cannot encode
    # it, and fails the shared transaction. The writer then commits each write alone.
    monkeypatch.setattr(events_module, "storable_text", lambda text, normalized: text)
    caplog.set_level(logging.WARNING)
    answers = send_in_one_commit(live, {**GOOD, "poison-text": POISON_TEXT_EVENT})
    assert {name: answers[name].status_code for name in GOOD} == dict.fromkeys(GOOD, 200)
    poison = answers["poison-text"]
    assert poison.status_code == 400
    assert "cannot hold this request's events" in poison.json()["error"]
    assert "shared commit failed; committing its writes one at a time writes=9" in caplog.text
    assert set(stored_texts(live)) == {"blocker", *GOOD}
    metrics = httpx.get(f"{live.url}/metrics").text
    assert 'textops_collector_events_rejected_total{reason="unstorable"} 1.0' in metrics
    assert 'textops_collector_events_rejected_total{reason="internal_error"} 0.0' in metrics
