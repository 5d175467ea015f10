"""The predictor's payload logger keeps a request and its response together, or drops both.

The logger sends to the real collector on a loopback port (real SQLite store), and the store is
read back: every request admitted has both its events there, every request dropped has
neither, and each dropped event is counted. Admission is decided in `log_request`, which never
yields to the event loop, so which requests fit is known exactly: no timing is involved.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from tests.unit.collector_gate import GatedStore, LiveCollector, wait_for
from textops.components.common.errors import ConfigError
from textops.components.serve.middleware import ServingMiddleware
from textops.components.serve.payload_logger import PayloadLogger
from textops.components.serve.settings import PayloadLoggerSettings

REQUEST = b'{"instances": ["the delivery was late"]}'
RESPONSE = b'{"predictions": [{"label": "negative", "probabilities": {"negative": 0.9}}]}'


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[LiveCollector]:
    live = LiveCollector(GatedStore(tmp_path / "payloads.db"))
    live.start()
    yield live
    live.stop()


def dropped(model: str, reason: str = "queue_full") -> float:
    labels = {"model_name": model, "reason": reason}
    return REGISTRY.get_sample_value("textops_payload_events_dropped_total", labels) or 0.0


def stored_events(collector: LiveCollector) -> set[tuple[str, str]]:
    with sqlite3.connect(f"file:{collector.store.path}?mode=ro", uri=True) as reader:
        rows = reader.execute("SELECT event_id, kind FROM textops_payload_events").fetchall()
    return set(rows)


def payload_logger(collector: LiveCollector, model: str, queue_size: int) -> PayloadLogger:
    settings = PayloadLoggerSettings(
        url=f"{collector.url}/events", source="http://localhost:8080/", queue_size=queue_size
    )
    return PayloadLogger(settings, model)


def test_a_full_queue_drops_requests_with_their_responses(collector: LiveCollector) -> None:
    model = "pairs-full"
    before = dropped(model)

    async def serve_requests() -> None:
        sender = payload_logger(collector, model, queue_size=3)
        # Five requests arrive before the senders run: three are admitted, with room for
        # their responses held; the other two are dropped whole.
        requests = [sender.log_request(f"r{i}", REQUEST, "application/json") for i in range(5)]
        assert [r.admitted for r in requests] == [True, True, True, False, False]
        assert dropped(model) - before == 2  # the request events of r3 and r4
        # Responses come later, the queue still full: each admitted one has its room; the
        # dropped requests' responses are dropped and counted too.
        for request in requests:
            request.respond(RESPONSE, "application/json")
        assert dropped(model) - before == 4
        kept = {(f"r{i}", kind) for i in range(3) for kind in ("request", "response")}
        await asyncio.to_thread(wait_for, lambda: stored_events(collector) >= kept, "delivery")
        await sender.aclose()

    asyncio.run(serve_requests())
    assert stored_events(collector) == {
        (f"r{i}", kind) for i in range(3) for kind in ("request", "response")
    }


def test_an_answer_other_than_200_frees_the_room_of_its_response(
    collector: LiveCollector,
) -> None:
    model = "pairs-freed"
    before = dropped(model)

    async def serve_requests() -> None:
        sender = payload_logger(collector, model, queue_size=1)
        failed = sender.log_request("failed", REQUEST, "application/json")
        assert sender.log_request("refused", REQUEST, "application/json").admitted is False
        # The first request's answer was an error: no response event, and its room is free
        # again once its request event has left the queue.
        failed.respond(None, "application/json")
        await asyncio.to_thread(
            wait_for, lambda: ("failed", "request") in stored_events(collector), "delivery"
        )
        later = sender.log_request("later", REQUEST, "application/json")
        assert later.admitted
        later.respond(RESPONSE, "application/json")
        later.respond(RESPONSE, "application/json")  # a second call changes nothing
        pair = {("later", "request"), ("later", "response")}
        await asyncio.to_thread(wait_for, lambda: pair <= stored_events(collector), "delivery")
        await sender.aclose()

    asyncio.run(serve_requests())
    assert stored_events(collector) == {
        ("failed", "request"),
        ("later", "request"),
        ("later", "response"),
    }
    assert dropped(model) - before == 1  # the refused request; it never had a response


def test_the_queue_size_must_hold_one_request(collector: LiveCollector) -> None:
    with pytest.raises(ConfigError, match="--payload-logger-queue-size must be at least 1"):
        payload_logger(collector, "pairs-none", queue_size=0)


async def model_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A stand-in for KServe's app behind the middleware: 200, 500, or an exception."""
    if scope["type"] == "lifespan":  # the test client starts and stops the app
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await receive()
    outcome = dict(scope["headers"]).get(b"x-outcome")
    if outcome == b"raise":
        raise RuntimeError("the model failed")
    status = 200 if outcome == b"ok" else 500
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": RESPONSE})


def test_the_middleware_logs_a_response_only_for_a_200(collector: LiveCollector) -> None:
    model = "pairs-middleware"
    before = dropped(model)
    middleware = ServingMiddleware(
        model_app,
        model_name=model,
        max_body_bytes=1 << 20,
        served_version=lambda name: None,
        payload_logger=payload_logger(collector, model, queue_size=1),
    )
    expected: set[tuple[str, str]] = set()
    with TestClient(middleware, raise_server_exceptions=False) as client:
        # With room for one request only, each of these is admitted only if the one before
        # freed the room held for its response.
        for outcome in ("raise", "error", "ok"):
            answer = client.post(
                f"/v1/models/{model}:predict",
                content=REQUEST,
                headers={"Ce-Id": outcome, "X-Outcome": outcome},
            )
            assert answer.status_code == (200 if outcome == "ok" else 500)
            expected |= {(outcome, "request")} | (
                {("ok", "response")} if outcome == "ok" else set()
            )
            wait_for(
                lambda now=frozenset(expected): stored_events(collector) >= now,  # type: ignore[misc]
                f"the {outcome} request's events",
            )
    assert stored_events(collector) == expected
    assert dropped(model) == before


def test_the_events_are_cloudevents_as_the_sdk_reads_them() -> None:
    # The CloudEvents SDK (a KServe dependency) is the reference reader: the binary-mode
    # headers the logger writes by hand must give it the attributes KServe's agent sends.
    from cloudevents.http import from_http

    from textops.components.serve.payload_logger import RESPONSE_EVENT, cloudevent_headers

    settings = PayloadLoggerSettings(url="http://collector/events", source="http://pod:8080/")
    headers = cloudevent_headers(
        settings,
        model_name="sentiment",
        event_type=RESPONSE_EVENT,
        event_id="6a2c5c1e-0e1b-4b7e-9c1c-8f4e9f0f2a11",
        content_type="application/json",
    )
    event = from_http(headers, RESPONSE)
    assert {name: event[name] for name in event if name != "time"} == {
        "specversion": "1.0",
        "id": "6a2c5c1e-0e1b-4b7e-9c1c-8f4e9f0f2a11",
        "type": RESPONSE_EVENT,
        "source": "http://pod:8080/",
        "datacontenttype": "application/json",
        "inferenceservicename": "sentiment",
        "namespace": settings.namespace,
        "component": settings.component,
        "endpoint": settings.endpoint,
        "metadata": "{}",
    }
    assert event.data == {
        "predictions": [{"label": "negative", "probabilities": {"negative": 0.9}}]
    }
