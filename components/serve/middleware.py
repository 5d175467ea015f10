"""What the predictor adds to KServe's FastAPI app: limits, error answers, metrics, payloads.

- `ServingMiddleware` (pure ASGI, outside every other middleware) refuses bodies over
  --max-body-bytes with 413 without reading past the limit, counts every 4xx/5xx answer in
  `textops_request_errors_total`, keeps the connection open after a 500 already answered,
  queues the payload logger's CloudEvents, and serves the versioned V2 routes
  (`/v2/models/<name>/versions/<v>/...`) for the version being served (404 for others).
  Inside it, V1 predict requests go straight to the data plane (`v1_predict.V1PredictRoute`)
  and everything else to KServe's app.
- Exception handlers give every client mistake a JSON `{"error": ...}` with a 4xx status:
  FastAPI's request validation (422 by default) becomes 400, an oversized batch 413.

KServe builds its app in `kserve.model_server` and each `--workers` process imports it anew,
so `install_http_hooks` runs once in every serving process (see `dataplane.TextopsDataPlane`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve.protocol.dataplane import DataPlane
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from textops.components.common.errors import TextopsError
from textops.components.serve import metrics
from textops.components.serve.payload_logger import PayloadLogger, event_id
from textops.components.serve.payloads import BadRequestError, BatchTooLargeError
from textops.components.serve.settings import ServeSettings
from textops.components.serve.v1_predict import V1PredictRoute
from textops.components.serve.v2_metadata import V2MetadataRoute

logger = logging.getLogger(__name__)

_INFERENCE_PATH = re.compile(r"/v1/models/[^/]+:predict|/v2/models/[^/]+/infer")
_VERSIONED_PATH = re.compile(
    r"/v2/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)(?P<rest>/infer|/ready)?"
)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class ModelLoadError(TextopsError):
    """A new model version could not be loaded; the old one keeps serving (HTTP 503)."""


class ServingMiddleware:
    """Body limit, error counting, payload logging and versioned routes, around KServe's app."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        model_name: str,
        max_body_bytes: int,
        served_version: Callable[[str], str | None],
        payload_logger: PayloadLogger | None = None,
    ) -> None:
        self.app = app
        self.model_name = model_name
        self.max_body_bytes = max_body_bytes
        self.served_version = served_version
        self.payload_logger = payload_logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: list[int] = []
        answered = False

        async def send_counted(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
                if message["status"] >= 400:
                    metrics.REQUEST_ERRORS.labels(self.model_name, str(message["status"])).inc()
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                answered = True
            await send(message)

        try:
            await self._serve(scope, receive, send_counted)
        except Exception:
            if not status:  # KServe's last-resort handler answers 500 from here
                metrics.REQUEST_ERRORS.labels(self.model_name, "500").inc()
            if not answered:
                raise
            # Starlette re-raises what its last-resort handler has already answered (500), for
            # the server to log; the server would then also close the connection, and the
            # client's next request on it would be reset. Logged here instead.
            logger.exception("request failed: status=%d path=%s", status[-1], scope["path"])

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        routed = await self._route_version(scope, send)
        if routed is None:
            return
        scope = routed
        if scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _send_error(send, 400, f"invalid Content-Length header {declared!r}")
                return
            if int(declared) > self.max_body_bytes:
                await self._too_large(send, str(int(declared)))
                return
        logged = self.payload_logger is not None and _INFERENCE_PATH.fullmatch(scope["path"])
        if declared is not None and not logged:
            # The server stops the body at its Content-Length, which is within the limit.
            await self.app(scope, receive, send)
            return
        body = await self._read_body(receive, send)
        if body is None:
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        if not logged:
            await self.app(scope, replay, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        await self._serve_logged(scope, replay, send, headers, body)

    async def _serve_logged(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], body: bytes
    ) -> None:
        assert self.payload_logger is not None
        eid = event_id(headers)
        content_type = headers.get("content-type", "application/json")
        logged = self.payload_logger.log_request(eid, body, content_type)
        status = 0
        complete = False
        chunks: list[bytes] = []

        async def send_captured(message: Message) -> None:
            nonlocal status, complete
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and status == 200:
                chunks.append(bytes(message.get("body", b"")))
                complete = not message.get("more_body", False)
            await send(message)

        try:
            await self.app(scope, receive, send_captured)
        finally:
            # A whole 200 answer is the response event; anything else frees the room held for it.
            logged.respond(b"".join(chunks) if status == 200 and complete else None, content_type)

    async def _route_version(self, scope: Scope, send: Send) -> Scope | None:
        """The scope with a served version's path made unversioned; None when answered 404."""
        match = _VERSIONED_PATH.fullmatch(scope["path"])
        if match is None:
            return scope
        served = self.served_version(match["name"])
        if served is not None and match["version"] != served:
            await _send_error(
                send,
                404,
                f"model {match['name']!r} has no version {match['version']!r} here; "
                f"version {served!r} is served",
            )
            return None
        # KServe's own routes answer an unknown model (404) and the served version.
        path = f"/v2/models/{match['name']}{match['rest'] or ''}"
        return {**scope, "path": path, "raw_path": path.encode()}

    async def _read_body(self, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None when it outgrew the limit (answered 413) or was abandoned."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                # Refused at the first chunk past the limit: the body holds at least this.
                await self._too_large(send, f"at least {size}")
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, send: Send, size: str) -> None:
        await _send_error(
            send,
            413,
            f"the request body holds {size} bytes; at most {self.max_body_bytes} are allowed "
            "(--max-body-bytes): send fewer or shorter texts per request",
        )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _send_error(send: Send, status: int, message: str) -> None:
    logger.info("request refused: status=%d error=%s", status, message)
    body = orjson.dumps({"error": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _client_error(status: int, message: str) -> JSONResponse:
    logger.info("request refused: status=%d error=%s", status, message)
    return JSONResponse(status_code=status, content={"error": message})


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error.get("loc", ()))
        # A JSON syntax error says where in `loc` and what in `ctx` ("Expecting value").
        detail = (error.get("ctx") or {}).get("error")
        problems.append(f"{where}: {error.get('msg', '')}" + (f" ({detail})" if detail else ""))
    return _client_error(400, "invalid request body: " + "; ".join(problems))


async def _bad_request(_: Request, exc: Exception) -> JSONResponse:
    return _client_error(400, str(exc))


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    message = str(exc.detail)
    if exc.status_code == 400 and exc.__cause__ is not None:
        # FastAPI's "There was an error parsing the body" keeps the reason in its cause: a
        # number too long to read, nesting too deep.
        message = f"{message}: {exc.__cause__}"
    return JSONResponse(
        status_code=exc.status_code, content={"error": message}, headers=exc.headers
    )


async def _batch_too_large(_: Request, exc: Exception) -> JSONResponse:
    return _client_error(413, str(exc))


async def _load_failed(_: Request, exc: Exception) -> JSONResponse:
    logger.error("model load failed: %s", exc)
    return JSONResponse(status_code=503, content={"error": str(exc)})


def install_http_hooks(app: FastAPI, settings: ServeSettings, dataplane: DataPlane) -> None:
    """Add the middleware and exception handlers to KServe's app, once per process.

    Args:
        app: `kserve.model_server.app`, before the server starts.
        settings: The limits and the payload logger's target.
        dataplane: The server's data plane: its models (to know which version is served)
            and the calls of the V1 predict route.
    """
    if getattr(app.state, "textops_hooks", False):
        return
    app.state.textops_hooks = True

    def served_version(name: str) -> str | None:
        # The predictor's model and the Triton transformer both say which version they serve.
        served = getattr(dataplane.model_registry.get_model(name), "served_version", None)
        return served if isinstance(served, str) else None

    payload_logger = (
        PayloadLogger(settings.payload_logger, settings.model_name)
        if settings.payload_logger is not None
        else None
    )
    build_stack = app.build_middleware_stack

    def build_stack_inside_serving_middleware() -> ASGIApp:
        # Outermost, around the middleware KServe adds when it starts (its TimingMiddleware
        # scans every route to name a trace log line), so that a V1 predict request meets
        # nothing but this middleware and the data plane (see `v1_predict`).
        return ServingMiddleware(
            V1PredictRoute(
                # V2 model metadata with the predictor's `parameters` (see `v2_metadata`).
                V2MetadataRoute(build_stack(), dataplane),
                dataplane,
                app.exception_handlers,
            ),
            model_name=settings.model_name,
            max_body_bytes=settings.max_body_bytes,
            served_version=served_version,
            payload_logger=payload_logger,
        )

    # Starlette builds the stack at the first request (the lifespan startup), after KServe's
    # RESTServer has added its middleware, which `add_middleware` would put outside this one.
    app.build_middleware_stack = build_stack_inside_serving_middleware  # type: ignore[method-assign]
    # KServe registers its own InvalidInput handler (a traceback per bad request) after this;
    # BadRequestError, a subclass, keeps this one.
    app.add_exception_handler(BadRequestError, _bad_request)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(BatchTooLargeError, _batch_too_large)
    app.add_exception_handler(ModelLoadError, _load_failed)
