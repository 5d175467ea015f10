"""KServe's data plane with the predictor's two additions: 400 for undecodable requests, and
the served version and platform in the V2 model metadata.
"""

from __future__ import annotations

from typing import Any

from kserve.errors import InvalidInput
from kserve.protocol.dataplane import DataPlane

from textops.components.serve.middleware import install_http_hooks
from textops.components.serve.model import TextClassifierModel
from textops.components.serve.payloads import BadRequestError
from textops.components.serve.repository import BundleRepository


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
