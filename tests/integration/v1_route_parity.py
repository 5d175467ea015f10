"""Answer requests twice, in process: through the predictor's V1 predict route and through
KServe's own FastAPI route below it; print both answers as JSON (see test_serve_v1_route.py).

    python v1_route_parity.py BUNDLE_DIR MODEL_NAME REQUESTS_JSON

REQUESTS_JSON is a list of {"name", "method", "path", "headers", "body_base64"}. Each request
is an ASGI call on the middleware stack the server builds (`ServingMiddleware` around
`V1PredictRoute` around KServe's stack): once on the `V1PredictRoute`, once on the stack it
wraps. A lifespan startup and shutdown then go through the whole stack. It runs in a process
of its own because KServe's app is a module-level global.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path
from typing import Any

from kserve.model_server import app
from kserve.protocol.rest.server import RESTServer

from textops.components.serve.middleware import install_http_hooks
from textops.components.serve.model import TextClassifierModel
from textops.components.serve.repository import BundleRepository
from textops.components.serve.server import (
    TextopsModelServer,
    build_parser,
    settings_from_args,
)
from textops.components.serve.v1_predict import V1PredictRoute


async def _call(asgi: Any, request: dict[str, Any]) -> dict[str, Any]:
    body = base64.b64decode(request["body_base64"])
    headers = [(k.lower().encode(), v.encode()) for k, v in request["headers"].items()]
    headers.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request["method"],
        "scheme": "http",
        "path": request["path"],
        "raw_path": request["path"].encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "state": {},
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asgi(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return {
        "status": start["status"],
        "headers": [[k.decode(), v.decode()] for k, v in start["headers"]],
        "body": b"".join(
            m.get("body", b"") for m in sent if m["type"] == "http.response.body"
        ).decode(errors="replace"),
    }


async def _lifespan(asgi: Any) -> list[str]:
    """The message types the whole stack sends for a lifespan startup and shutdown."""
    messages = [{"type": "lifespan.shutdown"}, {"type": "lifespan.startup"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return messages.pop()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    await asgi({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    return sent


async def _answer_all(stack: Any, requests: list[dict[str, Any]]) -> dict[str, Any]:
    route = stack.app
    assert isinstance(route, V1PredictRoute), type(route)
    answers = [
        {
            "name": request["name"],
            "route": await _call(route, request),
            "kserve": await _call(route.app, request),
        }
        for request in requests
    ]
    return {"lifespan": await _lifespan(stack), "answers": answers}


def main(argv: list[str]) -> None:
    bundle, model_name, requests_file = argv
    args = build_parser().parse_args(["--bundle", bundle, "--model_name", model_name])
    settings = settings_from_args(args)
    repository = BundleRepository(settings)
    model = TextClassifierModel(settings)
    model.load()
    repository.update(model)
    server = TextopsModelServer(repository, args)
    install_http_hooks(app, settings, server.dataplane)
    RESTServer(
        "kserve.model_server:app", server.dataplane, server.model_repository_extension, 0
    ).create_application()
    requests = json.loads(Path(requests_file).read_text())
    print(json.dumps(asyncio.run(_answer_all(app.build_middleware_stack(), requests))))


if __name__ == "__main__":
    main(sys.argv[1:])
