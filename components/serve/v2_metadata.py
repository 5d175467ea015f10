"""KServe's V2 model metadata answer, with the `parameters` its response model would drop.

KServe's `GET /v2/models/<name>` validates the data plane's metadata against its
`ModelMetadataResponse` (name, versions, platform, inputs, outputs), which keeps no other
field. The Open Inference Protocol's `metadata_model_response` schema forbids none, and
`parameters` is the name the protocol gives extensions (requests, responses and tensors
carry one), so the predictor reports how it runs there: the execution provider, the precision
asked and served, why they differ, and the fp16 check (see `execution.Execution.parameters`).

`V2MetadataRoute` answers that route itself only when the data plane's metadata has
`parameters`: the same fields KServe would write, plus them. Any other request, and any
metadata request the data plane cannot answer (an unknown model, one not loaded yet), goes
to KServe's app, which answers it as always.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.rest.v2_datamodels import ModelMetadataResponse
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

V2_METADATA_PATH = re.compile(r"/v2/models/(?P<name>[^/]+)")


class V2MetadataRoute:
    """ASGI app: V2 model metadata with `parameters`, everything else to `app`."""

    def __init__(self, app: ASGIApp, dataplane: DataPlane) -> None:
        """Wrap the app below the middleware.

        Args:
            app: What answers every other request (KServe's FastAPI app, inside).
            dataplane: The data plane whose `model_metadata` KServe's route calls.
        """
        self.app = app
        self.dataplane = dataplane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = None
        if scope["type"] == "http" and scope["method"] == "GET":
            match = V2_METADATA_PATH.fullmatch(scope["path"])
        body = await self._metadata(match["name"]) if match is not None else None
        if body is None:
            await self.app(scope, receive, send)
            return
        response = Response(content=orjson.dumps(body), media_type="application/json")
        await response(scope, receive, send)

    async def _metadata(self, model_name: str) -> dict[str, Any] | None:
        """KServe's metadata body plus `parameters`; None for KServe's route to answer."""
        try:
            metadata = await self.dataplane.model_metadata(model_name)
        except Exception:  # ModelNotFound, ModelNotReady, ...: KServe's route answers them
            return None
        parameters = metadata.get("parameters")
        if not isinstance(parameters, dict):
            return None
        body: dict[str, Any] = ModelMetadataResponse.model_validate(metadata).model_dump(
            mode="json"
        )
        body["parameters"] = parameters
        return body
