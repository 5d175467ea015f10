"""KServe's V1 predict handler, answered before FastAPI's router.

A V1 request (`POST /v1/models/<name>:predict`) carries no body model for FastAPI to
validate: KServe's own handler reads the raw body and hands it to the data plane, which
decodes, infers and encodes it. Going through FastAPI to get there costs more than the
handler itself (about 0.1 ms a request on a 2-core machine: the scan of every route, the
dependency solving, the exception middleware), which is a tenth of a lone request's whole
time at batch 1. `V1PredictRoute` runs the same data plane calls, in the same order, and
answers errors with the app's own exception handlers, so every answer, status and header is
the one KServe's route gives; the tests hold both to the malformed-request corpus.

Everything else (V2, explain, metadata, health, the repository routes) goes to KServe's app:
the V2 infer body is parsed and validated by FastAPI, which is part of its contract.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import orjson
from kserve.errors import ModelNotReady
from kserve.protocol.dataplane import DataPlane
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import (
    ASGIApp,
    ExceptionHandler,
    HTTPExceptionHandler,
    Receive,
    Scope,
    Send,
)

logger = logging.getLogger(__name__)

V1_PREDICT_PATH = re.compile(r"/v1/models/(?P<name>[^/]+):predict")
#: The options of KServe's ORJSONResponse.
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


class V1PredictRoute:
    """ASGI app: V1 predict requests through the data plane, everything else to `app`."""

    def __init__(
        self, app: ASGIApp, dataplane: DataPlane, handlers: Mapping[Any, ExceptionHandler]
    ) -> None:
        """Wrap the app below the middleware.

        Args:
            app: What answers every other request (KServe's FastAPI app, inside).
            dataplane: The data plane KServe's V1 handler calls.
            handlers: The app's exception handlers (`FastAPI.exception_handlers`), read at
                each error, so handlers added after this are used too.
        """
        self.app = app
        self.dataplane = dataplane
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = None
        if scope["type"] == "http" and scope["method"] == "POST":
            match = V1_PREDICT_PATH.fullmatch(scope["path"])
        if match is None:
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client went away
        try:
            response = await self._predict(match["name"], scope, body)
        except Exception as exc:
            response = await self._error_response(scope, receive, exc)
        await response(scope, receive, send)

    async def _predict(self, model_name: str, scope: Scope, body: bytes) -> Response:
        """What `kserve.protocol.rest.v1_endpoints.V1Endpoints.predict` does, step by step."""
        if not await self.dataplane.model_ready(model_name, True):
            raise ModelNotReady(model_name)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        infer_request, attributes = self.dataplane.decode(body=body, headers=headers)
        response, response_headers = await self.dataplane.infer(
            model_name=model_name, request=infer_request, headers=headers
        )
        response, encoded_headers = self.dataplane.encode(
            model_name=model_name,
            response=response,
            headers=headers,
            req_attributes=attributes,
        )
        response_headers.update(encoded_headers)
        response_headers.pop("content-length", None)
        if isinstance(response, bytes | str):
            return Response(content=response, headers=response_headers)
        if isinstance(response, AsyncIterator):
            return StreamingResponse(content=response)
        return Response(
            content=orjson.dumps(response, option=_ORJSON_OPTIONS),
            headers=response_headers,
            media_type="application/json",
        )

    async def _error_response(self, scope: Scope, receive: Receive, exc: Exception) -> Response:
        """The answer of the app's handler for `exc`, as its exception middleware would give."""
        handler = _handler_for(self.handlers, exc)
        if handler is None:
            raise exc
        if handler is self.handlers.get(Exception):
            # Starlette logs what reaches its last-resort handler; so does this route.
            logger.exception("V1 predict failed: %s", exc)
        # Handlers registered on the app answer HTTP requests here (a WebSocket never is one).
        response = cast(HTTPExceptionHandler, handler)(Request(scope, receive), exc)
        return await response if inspect.isawaitable(response) else response


def _handler_for(
    handlers: Mapping[Any, ExceptionHandler], exc: Exception
) -> ExceptionHandler | None:
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


async def _read_body(receive: Receive) -> bytes | None:
    """The request body, or None when the client disconnected first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
