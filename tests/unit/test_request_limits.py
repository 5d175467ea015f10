"""The predictor's request limits on their bounds: body bytes, texts per request, text length.

The body limit is `ServingMiddleware`, a pure ASGI app, driven here through the ASGI protocol
itself (what uvicorn hands it) around an inner app that records what it was given; a body
read to check the limit reaches the model whole, and the payload logger (sending to the real
collector) logs it. Texts per request and their length are `parse_request`'s; the settings
refuse limits below 1.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kserve.protocol.infer_type import InferInput, InferRequest
from prometheus_client import REGISTRY
from starlette.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from tests.unit.collector_gate import GatedStore, LiveCollector, wait_for
from textops.components.common.errors import ConfigError
from textops.components.serve.middleware import ServingMiddleware
from textops.components.serve.payload_logger import PayloadLogger
from textops.components.serve.payloads import BadRequestError, BatchTooLargeError, parse_request
from textops.components.serve.settings import PayloadLoggerSettings, ServeSettings

LIMIT = 64


@dataclass
class InnerApp:
    """What the middleware wraps: answers 200 with the size of the body it read.

    It records each request's method and path and its body; with `then_receive`, it also
    receives once more after the body, as an app watching for the client to go away does,
    and records what that gave.
    """

    then_receive: bool = True
    requests: list[tuple[str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    after_body: list[str] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # the test client starts and stops the app
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.requests.append((scope["method"], scope["path"]))
        body = b""
        while True:
            message = await receive()
            assert message["type"] == "http.request", f"the body ended early: {message}"
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.bodies.append(body)
        if self.then_receive:
            self.after_body.append((await receive())["type"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(body)).encode()})


@dataclass
class Answer:
    status: int
    body: bytes


def call(
    chunks: list[bytes] | list[Message],
    *,
    content_length: str | None,
    model: str,
    method: str = "POST",
    path: str = "/v1/models/m:predict",
    served: str | None = None,
) -> tuple[Answer, InnerApp]:
    """Send one request through a `ServingMiddleware` with the body limit `LIMIT`.

    `chunks` are the body's pieces, or the ASGI messages themselves; then the client goes
    away. `served` is the version the model serves, for the versioned routes.
    """
    inner = InnerApp()
    middleware = ServingMiddleware(
        inner, model_name=model, max_body_bytes=LIMIT, served_version=lambda name: served
    )
    headers = [(b"content-type", b"application/json")]
    if content_length is not None:
        headers.append((b"content-length", content_length.encode("latin-1")))
    scope: Scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "headers": headers,
        "query_string": b"",
    }
    messages: list[Message] = [
        chunk
        if isinstance(chunk, dict)
        else {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    assert sent, "no answer"
    status = next(int(m["status"]) for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Answer(status, body), inner


def errors_counted(model: str, status: str) -> float:
    labels = {"model_name": model, "status": status}
    return REGISTRY.get_sample_value("textops_request_errors_total", labels) or 0.0


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_body_of_exactly_the_limit_is_served(declared: bool) -> None:
    body = b"x" * LIMIT
    chunks = [body[:10], body[10:]]
    length = str(LIMIT) if declared else None

    answer, inner = call(chunks, content_length=length, model=f"at-limit-{declared}")

    assert (answer.status, answer.body) == (200, str(LIMIT).encode())
    assert inner.requests == [("POST", "/v1/models/m:predict")]
    assert inner.bodies == [body]
    # Read to check its size, the body is handed on once; what follows is the client's.
    assert inner.after_body == ["http.disconnect"]


def test_chunks_with_no_body_key_or_a_last_without_more_body_are_read_as_sent() -> None:
    # ASGI lets a message leave out `body` (empty) and `more_body` (false).
    messages: list[Message] = [
        {"type": "http.request", "more_body": True},
        {"type": "http.request", "body": b"abc", "more_body": True},
        {"type": "http.request", "body": b"def"},
    ]

    answer, inner = call(messages, content_length=None, model="asgi-defaults")

    assert (answer.status, inner.bodies) == (200, [b"abcdef"])


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read() -> None:
    counted = errors_counted("declared", "413")  # the registry is the process's
    answer, inner = call([b"x" * (LIMIT + 1)], content_length=str(LIMIT + 1), model="declared")

    assert answer.status == 413
    assert json.loads(answer.body) == {
        "error": f"the request body holds {LIMIT + 1} bytes; at most {LIMIT} are allowed "
        "(--max-body-bytes): send fewer or shorter texts per request"
    }
    assert inner.bodies == []  # the app never saw it
    assert errors_counted("declared", "413") == counted + 1


def test_a_streamed_body_is_refused_once_it_outgrows_the_limit() -> None:
    # Without a Content-Length the middleware counts what arrives, chunk by chunk, and stops
    # at the first chunk past the limit: the third one is never read.
    chunks = [b"x" * 40, b"x" * 40, b"x" * 40]
    counted = errors_counted("streamed", "413")

    answer, inner = call(chunks, content_length=None, model="streamed")

    assert answer.status == 413
    assert json.loads(answer.body)["error"].startswith(
        f"the request body holds at least 80 bytes; at most {LIMIT} are allowed"
    )
    assert inner.bodies == []
    assert errors_counted("streamed", "413") == counted + 1


def test_a_client_that_goes_away_mid_body_gets_no_answer() -> None:
    inner = InnerApp()
    middleware = ServingMiddleware(
        inner, model_name="gone", max_body_bytes=LIMIT, served_version=lambda name: None
    )
    scope: Scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    messages: list[Message] = [
        {"type": "http.request", "body": b"x", "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    assert (sent, inner.bodies) == ([], [])


@pytest.mark.parametrize("declared", ["12x", "-1", " 5"])
def test_an_invalid_content_length_is_400(declared: str) -> None:
    answer, inner = call([b"{}"], content_length=declared, model="bad-length")

    assert answer.status == 400
    assert json.loads(answer.body) == {"error": f"invalid Content-Length header {declared!r}"}
    assert inner.bodies == []


def test_requests_without_a_body_pass_whatever_their_size_header() -> None:
    answer, inner = call(
        [b""], content_length=str(LIMIT * 10), model="get", method="GET", path="/v2/models/m"
    )

    assert answer.status == 200
    assert inner.requests == [("GET", "/v2/models/m")]
    assert inner.bodies == [b""]


def test_a_versioned_route_reaches_the_served_version_only() -> None:
    served, inner = call(
        [b"{}"], content_length="2", model="v", path="/v2/models/m/versions/3/infer", served="3"
    )
    other, unreached = call(
        [b"{}"], content_length="2", model="v", path="/v2/models/m/versions/2/infer", served="3"
    )

    assert served.status == 200
    assert inner.requests == [("POST", "/v2/models/m/infer")]
    assert other.status == 404
    assert json.loads(other.body) == {
        "error": "model 'm' has no version '2' here; version '3' is served"
    }
    assert unreached.requests == []


def test_a_logged_body_reaches_the_model_and_the_collector_whole(tmp_path: Path) -> None:
    # The payload logger needs the whole body, so a logged request is read even when its
    # Content-Length is declared; the model gets it once all the same.
    collector = LiveCollector(GatedStore(tmp_path / "payloads.db"))
    collector.start()
    inner = InnerApp(then_receive=False)
    settings = PayloadLoggerSettings(url=f"{collector.url}/events", source="http://p/")
    payload_logger = PayloadLogger(settings, "logged")
    middleware = ServingMiddleware(
        inner,
        model_name="logged",
        max_body_bytes=LIMIT,
        served_version=lambda name: None,
        payload_logger=payload_logger,
    )
    body = b'{"instances": ["the delivery was late"]}'
    try:
        with TestClient(middleware) as client:
            answer = client.post("/v1/models/logged:predict", content=body, headers={"Ce-Id": "c1"})
            stored: list[tuple[str, str]] = []

            def request_event_stored() -> bool:
                assert collector.writer.alive, "the collector's writer thread died"
                stored[:] = collector.store.fetch_window()[["event_id", "text"]].itertuples(
                    index=False
                )
                return bool(stored)

            wait_for(request_event_stored, "the logged request")
            client.portal.call(payload_logger.aclose)
    finally:
        collector.stop()
    assert (answer.status_code, inner.bodies) == (200, [body])
    assert stored == [("c1", "the delivery was late")]


def _v2(texts: list[Any]) -> InferRequest:
    return InferRequest("m", [InferInput("text", [len(texts)], "BYTES", texts)])


def test_as_many_texts_as_the_limit_are_taken_and_one_more_is_413() -> None:
    v1 = parse_request({"instances": ["a", "b"]}, {}, 2)
    assert (v1.texts, v1.protocol, v1.infer_request) == (["a", "b"], "v1", None)
    request = _v2(["a", "b"])
    v2 = parse_request(request, {}, 2)
    assert (v2.texts, v2.protocol) == (["a", "b"], "v2")
    assert v2.infer_request is request
    with pytest.raises(BatchTooLargeError) as raised:
        parse_request({"instances": ["a", "b", "c"]}, {}, 2)
    assert str(raised.value) == (
        "the request holds 3 texts; at most 2 are allowed per request (--max-batch-size): "
        "split it into smaller requests"
    )


@pytest.mark.parametrize(
    "payload",
    [
        {"instances": ["abcdef", "ab"]},
        {"instances": [{"text": "abcdef"}, {"text": "ab"}]},
        _v2(["abcdef", "ab"]),
        _v2([b"abcdef", b"ab"]),
    ],
    ids=["v1-strings", "v1-objects", "v2-strings", "v2-bytes"],
)
def test_texts_are_cut_to_the_characters_the_model_reads(payload: Any) -> None:
    # The first and last characters: whichever end the model reads is kept.
    assert parse_request(payload, {}, 8, max_chars=2).texts == ["ab ef", "ab"]
    assert parse_request(payload, {}, 8).texts == ["abcdef", "ab"]  # no limit: whole


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            {"instances": [5]},
            'instances[0] must be a string or an object {"text": "..."}, got a JSON number',
        ),
        ({"instances": [{"text": 5}]}, "instances[0].text must be a string, got a JSON number"),
        (_v2([7]), "input 'text' element 0 must be a string, got number"),
    ],
)
def test_a_text_of_another_type_is_named_with_its_type(payload: Any, message: str) -> None:
    with pytest.raises(BadRequestError) as raised:
        parse_request(payload, {}, 8, max_chars=4)
    assert str(raised.value) == message


def test_a_text_blank_within_the_cut_is_refused() -> None:
    # What the model would read is blank, whatever follows the cut.
    with pytest.raises(ValueError, match=r"^instances\[0\] holds only whitespace"):
        parse_request({"instances": ["    middle    "]}, {}, 8, max_chars=4)


@pytest.mark.parametrize(
    "name",
    [
        "max_batch_size",
        "max_body_bytes",
        "inference_batch_size",
        "max_chars_per_token",
        "explain_max_texts",
        "explain_max_words",
        "explain_concurrency",
    ],
)
def test_each_limit_may_be_one_and_not_zero(name: str) -> None:
    assert getattr(ServeSettings(model_name="m", bundle=Path("b"), **{name: 1}), name) == 1
    flag = "--" + name.replace("_", "-")
    with pytest.raises(ConfigError, match=f"^{flag} must be at least 1$"):
        ServeSettings(model_name="m", bundle=Path("b"), **{name: 0})


def test_the_text_cut_is_the_sequence_length_times_the_characters_per_token() -> None:
    settings = ServeSettings(model_name="m", bundle=Path("b"), max_chars_per_token=16)
    assert settings.max_text_chars(128) == 2048


def test_the_intra_op_threads_are_the_cores_or_at_least_one() -> None:
    assert ServeSettings(model_name="m", bundle=Path("b"), intra_op_threads=1).intra_op_threads
    with pytest.raises(ConfigError, match=r"^--intra-op-threads must be at least 1$"):
        ServeSettings(model_name="m", bundle=Path("b"), intra_op_threads=0)


@pytest.mark.parametrize(("timeout", "accepted"), [(0.001, True), (0.0, False), (-1.0, False)])
def test_the_explain_timeout_must_be_above_zero(timeout: float, accepted: bool) -> None:
    def settings() -> ServeSettings:
        return ServeSettings(model_name="m", bundle=Path("b"), explain_timeout_seconds=timeout)

    if accepted:
        assert settings().explain_timeout_seconds == timeout
    else:
        with pytest.raises(ConfigError) as raised:
            settings()
        assert str(raised.value) == f"--explain-timeout-seconds must be above 0, got {timeout}"


@pytest.mark.parametrize(("share", "accepted"), [(0.0, True), (1.0, True), (1.01, False)])
def test_the_explain_share_is_a_fraction(share: float, accepted: bool) -> None:
    def settings() -> ServeSettings:
        return ServeSettings(model_name="m", bundle=Path("b"), explain_share=share)

    if accepted:
        assert settings().explain_share == share
    else:
        with pytest.raises(ConfigError) as raised:
            settings()
        assert str(raised.value) == f"--explain-share must be between 0 and 1, got {share}"


@pytest.mark.parametrize(
    "where",
    [{}, {"bundle": Path("b"), "model_repository": Path("r")}],
    ids=["neither", "both"],
)
def test_exactly_one_source_is_served(where: dict[str, Path]) -> None:
    with pytest.raises(ConfigError) as raised:
        ServeSettings(model_name="m", **where)
    assert str(raised.value) == "give exactly one of --bundle DIR and --model-repository DIR"
