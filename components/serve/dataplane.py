"""KServe's data plane with the predictor's additions: 400 for undecodable requests, the served
version and platform in the V2 model metadata, and readiness that tells the truth.

KServe's server readiness (`GET /v2/health/ready`) is always true, and a model unloaded through
`POST /v2/repository/models/<name>/unload` is forgotten, so its routes answer 404 as if it had
never existed. Here the server is ready only while its model is loaded and ready, and the
unloaded model is still known: its ready routes, metadata and predictions answer 503 "not
ready" (with how to load it again) until the load route brings it back.
"""

from __future__ import annotations

from typing import Any

from kserve.errors import InvalidInput, ModelNotReady
from kserve.model import BaseKServeModel
from kserve.protocol.dataplane import DataPlane

from textops.components.serve.middleware import install_http_hooks
from textops.components.serve.model import TextClassifierModel
from textops.components.serve.payloads import BadRequestError
from textops.components.serve.repository import BundleRepository, unloaded_detail


class TextopsDataPlane(DataPlane):
    """KServe's `DataPlane` for a `BundleRepository`.

    KServe's `--workers N` pickles the data plane into every worker process, where
    `kserve.model_server` (and its app) is imported anew; `__setstate__` is the first code of
    ours that runs there, so it adds the predictor's HTTP hooks to that process's app.
    """

    def __init__(self, model_registry: BundleRepository) -> None:
        super().__init__(model_registry=model_registry)
        self.bundles = model_registry

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        from kserve.model_server import app

        install_http_hooks(app, self.bundles.settings, self)

    async def ready(self) -> bool:
        """Server ready: KServe's check (Triton's readiness, for the transformer) and the
        model this server serves is loaded and ready."""
        if not await super().ready():
            return False
        return bool(await self._model_registry.is_model_ready(self.bundles.settings.model_name))

    async def model_ready(
        self, model_name: str, disable_predictor_health_check: bool = False
    ) -> bool:
        """KServe's check, with the unloaded model not ready (503) rather than unknown (404).

        Raises:
            ModelNotReady: `model_name` was unloaded; the message names the load route.
            ModelNotFound: `model_name` is not the model this server serves.
        """
        self._refuse_unloaded(model_name)
        ready: bool = await super().model_ready(model_name, disable_predictor_health_check)
        return ready

    def get_model_from_registry(self, name: str) -> BaseKServeModel:
        """The model `name` (for metadata and the versioned routes).

        Raises:
            ModelNotReady: It was unloaded (503, naming the load route).
            ModelNotFound: This server does not serve `name` (404).
        """
        self._refuse_unloaded(name)
        return super().get_model_from_registry(name)

    async def get_model(self, name: str) -> BaseKServeModel:
        """The model `name` (for predictions and explanations).

        Raises:
            ModelNotReady: It was unloaded (503, naming the load route).
            ModelNotFound: This server does not serve `name` (404).
        """
        self._refuse_unloaded(name)
        return await super().get_model(name)

    def _refuse_unloaded(self, name: str) -> None:
        if self._unloaded(name):
            raise ModelNotReady(name, unloaded_detail(name))

    def _unloaded(self, name: str) -> bool:
        """Whether `name` is this server's model and was unloaded."""
        return name == self.bundles.settings.model_name and self.bundles.get_model(name) is None

    def decode(
        self, body: Any, headers: Any, protocol_version: str = "v1", model_name: str | None = None
    ) -> Any:
        """KServe's decoding, with every failure a 400.

        KServe raises `InvalidInput` for the mistakes it expects, but a few malformed bodies
        (the V2 binary-data extension with a bad header or JSON part) fail inside it with
        KeyError, TypeError or ValueError, which it would answer with 500. Nothing but the
        request body and headers is decoded here, so any such failure is the client's.
        """
        try:
            return super().decode(body, headers, protocol_version, model_name)
        except InvalidInput as e:
            raise BadRequestError(str(e)) from e
        except Exception as e:
            raise BadRequestError(
                f"the request could not be decoded ({type(e).__name__}: {e}); see the V1 or "
                "V2 (Open Inference Protocol) request format"
            ) from e

    async def model_metadata(self, model_name: str) -> dict[str, Any]:
        """KServe's V2 model metadata plus `versions` (the one served), `platform` and
        `parameters` (how it runs; `v2_metadata` keeps them in the HTTP answer)."""
        metadata: dict[str, Any] = await super().model_metadata(model_name)
        model = self.get_model_from_registry(model_name)
        if isinstance(model, TextClassifierModel):
            metadata.update(model.metadata_extras())
        return metadata
