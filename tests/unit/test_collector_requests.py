"""Each answer of the collector's commit path, over the real SQLite store: what it says, what
it counts, what it logs, and the body limit on its bound.

The app is driven through ASGI on the test's event loop, its writer started as its lifespan
would; the store is `collector_gate.GatedStore`, whose next transaction can be made to fail
(an outage, values it cannot hold, a bug) exactly where the real store fails. A writer thread
that dies leaves requests unanswered for ever, so each request fails as soon as it is gone.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from tests.unit.collector_gate import WAIT_SECONDS, GatedStore
from textops.components.common.errors import PayloadStoreError
from textops.components.monitor.collector import create_app
from textops.components.monitor.events import REQUEST_TYPE
from textops.components.monitor.storable import UnstorableDataError

MAX_BODY_BYTES = 400
LOGGER = "textops.components.monitor.collector"


def ce_headers(event_id: str) -> dict[str, str]:
    return {
        "Ce-Specversion": "1.0",
        "Ce-Id": event_id,
        "Ce-Type": REQUEST_TYPE,
        "Ce-Source": "http://localhost:9081/",
        "Ce-Inferenceservicename": "sentiment",
        "Content-Type": "application/json",
    }


def request_body(*texts: str) -> bytes:
    return json.dumps({"instances": list(texts)}).encode()


class Collector:
    """The collector app over a gated store, its writer running."""

    def __init__(self, path: Path) -> None:
        self.store = GatedStore(path)
        self.app: Starlette = create_app(self.store, max_body_bytes=MAX_BODY_BYTES)
        self.writer = self.app.state.collector.writer
        self.registry = self.app.state.collector.metrics.registry

    def post(self, path: str, content: Any, headers: dict[str, str] | None = None) -> Any:
        """POST and return the response; fails at once if the writer thread has died."""

        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
                sending = asyncio.ensure_future(
                    client.post(path, content=content, headers=headers or {})
                )
                deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
                while not sending.done():
                    assert self.writer.alive, "the writer thread died with a request waiting"
                    assert asyncio.get_running_loop().time() < deadline, "no answer"
                    await asyncio.sleep(0.002)
                return sending.result()

        return asyncio.run(send())

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        assert value is not None, f"no series {name}{labels}"
        return float(value)

    def rejected(self, reason: str) -> float:
        return self.metric("textops_collector_events_rejected_total", reason=reason)


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    made = Collector(tmp_path / "payloads.db")
    made.writer.start()
    yield made
    made.writer.stop()
    made.store.close()


def test_an_event_is_answered_once_stored_and_a_repeat_as_a_duplicate(
    collector: Collector,
) -> None:
    first = collector.post("/events", request_body("fine"), ce_headers("r1"))
    again = collector.post("/", request_body("fine"), ce_headers("r1"))

    assert (first.status_code, first.json()) == (200, {"stored": 1, "duplicates": 0})
    assert (again.status_code, again.json()) == (200, {"stored": 0, "duplicates": 1})
    assert collector.metric("textops_collector_events_received_total") == 2
    assert collector.metric("textops_collector_events_stored_total") == 1
    assert collector.metric("textops_collector_events_duplicate_total") == 1
    assert list(collector.store.fetch_window()["event_id"]) == ["r1"]


def test_redactions_and_normalizations_are_counted_for_stored_events_only(
    collector: Collector,
) -> None:
    body = request_body("mail jane.doe@example.com", "a nul \x00 here")
    for _ in range(2):  # the repeat is a duplicate: nothing new stored, nothing counted
        assert collector.post("/events", body, ce_headers("r1")).status_code == 200

    redactions = "textops_collector_redactions_total"
    assert collector.metric(redactions, kind="EMAIL") == 1
    assert collector.metric(redactions, kind="PHONE") == 0
    assert collector.metric("textops_collector_values_normalized_total", reason="nul") == 1
    assert list(collector.store.fetch_window()["text"]) == ["mail [EMAIL]", "a nul \ufffd here"]


def test_a_malformed_event_is_400_counted_as_received_and_rejected(
    collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        answer = collector.post("/events", b"{}", {"Content-Type": "application/json"})

    assert answer.status_code == 400
    assert answer.json()["error"].startswith("not a CloudEvent: send binary mode")
    assert collector.metric("textops_collector_events_received_total") == 1
    assert collector.rejected("malformed") == 1
    assert collector.metric("textops_collector_events_stored_total") == 0
    [record] = caplog.records
    assert record.getMessage().startswith(
        "event rejected status=400 reason=malformed error=not a CloudEvent"
    )


def test_a_store_outage_is_503_so_the_sender_retries(
    collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    collector.store.failure = PayloadStoreError("disk full")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        answer = collector.post("/", batch("r1", "r2"), BATCH_HEADERS)

    assert answer.status_code == 503
    assert answer.json() == {"error": "the payload store is unavailable; send the event again"}
    assert collector.rejected("store_unavailable") == 2
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", "events not stored reason=store_unavailable count=2 error=disk full")
    ]
    # Sent again once the store is back, they are stored.
    again = collector.post("/", batch("r1", "r2"), BATCH_HEADERS)
    assert again.json() == {"stored": 2, "duplicates": 0}


def batch(*event_ids: str) -> bytes:
    """A CloudEvents batch of one request event per id."""
    events = [
        {
            "specversion": "1.0",
            "id": i,
            "type": REQUEST_TYPE,
            "source": "s",
            "data": {"instances": ["t"]},
        }
        for i in event_ids
    ]
    return json.dumps(events).encode()


BATCH_HEADERS = {"Content-Type": "application/cloudevents-batch+json"}


def test_values_the_store_cannot_hold_are_400_for_every_event_of_the_request(
    collector: Collector,
) -> None:
    collector.store.failure = UnstorableDataError("a value it cannot hold")
    answer = collector.post("/", batch("r1", "r2"), BATCH_HEADERS)

    assert answer.status_code == 400
    assert answer.json() == {
        "error": "the payload store cannot hold this request's events (a value it cannot "
        "hold); they are not stored, and sending them again will fail again"
    }
    assert collector.rejected("unstorable") == 2  # both events of the request
    assert collector.rejected("store_unavailable") == 0
    assert collector.metric("textops_collector_events_stored_total") == 0


def test_a_fault_of_the_collector_is_500_counted_and_logged_with_its_traceback(
    collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    collector.store.failure = RuntimeError("a bug")
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        answer = collector.post("/events", request_body("fine"), ce_headers("r1"))

    assert answer.status_code == 500
    assert answer.json() == {"error": "the collector failed on this event; see its log"}
    assert collector.rejected("internal_error") == 1
    [record] = [r for r in caplog.records if r.name == LOGGER]
    assert record.getMessage() == "event rejected status=500 reason=internal_error"
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)


def padded_event(size: int) -> bytes:
    """A valid request event body of exactly `size` bytes."""
    body = request_body("")
    return request_body("x" * (size - len(body)))


async def chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
def test_a_body_of_exactly_the_limit_is_stored(collector: Collector, streamed: bool) -> None:
    body = padded_event(MAX_BODY_BYTES)
    assert len(body) == MAX_BODY_BYTES
    content = chunks(body, 150) if streamed else body

    answer = collector.post("/events", content, ce_headers("r1"))

    assert (answer.status_code, answer.json()) == (200, {"stored": 1, "duplicates": 0})


def test_a_body_over_the_limit_is_413_naming_the_flag(collector: Collector) -> None:
    body = padded_event(MAX_BODY_BYTES + 1)

    declared = collector.post("/events", body, ce_headers("r1"))
    streamed = collector.post("/events", chunks(body, 150), ce_headers("r2"))

    assert declared.status_code == streamed.status_code == 413
    limit = f"the collector accepts at most {MAX_BODY_BYTES} (--max-body-bytes)"
    assert declared.json() == {
        "error": f"the body has at least {MAX_BODY_BYTES + 1} bytes; {limit}"
    }
    # Streamed, it is refused at the first chunk past the limit: 150 + 150 + 101 bytes.
    assert streamed.json() == {
        "error": f"the body has at least {MAX_BODY_BYTES + 1} bytes; {limit}"
    }
    assert collector.rejected("too_large") == 2
    assert collector.metric("textops_collector_events_received_total") == 2
    assert collector.store.fetch_window().empty


def test_labels_are_answered_with_how_many_matched(
    collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    assert collector.post("/events", request_body("a", "b"), ce_headers("r1")).status_code == 200
    labels = [{"id": "r1", "item": 1, "label": "negative"}, {"id": "r9", "label": "positive"}]

    with caplog.at_level(logging.INFO, logger=LOGGER):
        answer = collector.post("/labels", json.dumps(labels).encode())

    assert (answer.status_code, answer.json()) == (200, {"labels": 2, "matched": 1})
    assert collector.metric("textops_collector_labels_total") == 2
    assert [r.getMessage() for r in caplog.records] == ["labels stored count=2 matched=1"]
    assert list(collector.store.fetch_window()["label"]) == [None, "negative"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"[{", "the labels are not valid JSON: "),
        (b"\xff", "the labels are not valid JSON: "),
        (
            b'{"id": "r1"}',
            'labels must be a JSON list of {"id": <Ce-Id>, "item": 0, "label": "..."}',
        ),
        (b'[{"id": "r1", "label": ""}]', "the labels, label 0: 'label' must be a non-empty string"),
    ],
    ids=["truncated", "not-utf8", "not-a-list", "empty-label"],
)
def test_bad_labels_are_400_saying_why(collector: Collector, body: bytes, error: str) -> None:
    answer = collector.post("/labels", body)

    assert answer.status_code == 400
    assert answer.json()["error"].startswith(error)
    assert collector.metric("textops_collector_labels_total") == 0


@pytest.mark.parametrize(
    ("failure", "status", "error"),
    [
        (UnstorableDataError("a label it cannot hold"), 400, "a label it cannot hold"),
        (
            PayloadStoreError("disk full"),
            503,
            "the payload store is unavailable; send the labels again",
        ),
    ],
    ids=["unstorable", "outage"],
)
def test_labels_the_store_refuses_are_answered_as_events_are(
    collector: Collector,
    caplog: pytest.LogCaptureFixture,
    failure: Exception,
    status: int,
    error: str,
) -> None:
    collector.store.failure = failure
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        answer = collector.post("/labels", b'[{"id": "r1", "label": "positive"}]')

    assert (answer.status_code, answer.json()) == (status, {"error": error})
    assert collector.metric("textops_collector_labels_total") == 0
    # An outage is logged (the sender retries); values refused are the sender's to fix.
    logged = ["labels not stored count=1 error=disk full"] if status == 503 else []
    assert [r.getMessage() for r in caplog.records] == logged


def test_a_body_declared_over_the_limit_is_refused_by_its_content_length(
    collector: Collector,
) -> None:
    # The declared size decides, before a byte is read: the body is never looked at.
    headers = {**ce_headers("r1"), "Content-Length": str(10 * MAX_BODY_BYTES)}
    answer = collector.post("/events", request_body("fine"), headers)

    assert answer.status_code == 413
    assert answer.json()["error"].startswith(f"the body has at least {10 * MAX_BODY_BYTES} bytes")


def test_labels_over_the_body_limit_are_413(collector: Collector) -> None:
    body = json.dumps([{"id": "r1", "label": "x" * MAX_BODY_BYTES}]).encode()

    answer = collector.post("/labels", body)

    assert answer.status_code == 413
    assert answer.json() == {
        "error": f"the body has at least {len(body)} bytes; the collector accepts at most "
        f"{MAX_BODY_BYTES} (--max-body-bytes)"
    }
