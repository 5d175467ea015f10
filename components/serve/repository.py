"""KServe's model repository routes for a bundle: `POST /v2/repository/models/<name>/load`.

The load route is how a new version goes live without a restart. In repository mode it reads
current.json again and swaps to the version it names (publish, or roll back, then call load);
in bundle mode it reloads the --bundle folder. The old version serves until the new one is
loaded and warmed up, so no request fails during the swap.

The unload route (`POST /v2/repository/models/<name>/unload`) takes the model out of service:
its inference thread is closed and the model dropped, and the server and the model say not
ready (503, naming the load route) until the load route brings it back.

With `--workers N` each process has its own copy of the model, and a load or unload request
reaches one of them; restart the predictor (or run one worker per pod, as KServe does) to swap
all.
"""

from __future__ import annotations

import logging

from kserve.errors import ModelNotFound
from kserve.model_repository import ModelRepository
from kserve.protocol.model_repository_extension import ModelRepositoryExtension

from textops.components.serve.middleware import ModelLoadError
from textops.components.serve.model import TextClassifierModel
from textops.components.serve.settings import ServeSettings

logger = logging.getLogger(__name__)


def unloaded_detail(name: str) -> str:
    """Why the unloaded model `name` is not ready, and how to serve it again."""
    return (
        f"It was unloaded; POST /v2/repository/models/{name}/load to serve it again "
        "(readiness stays false until then)."
    )


class BundleRepository(ModelRepository):
    """The one model this predictor serves, loadable again through the repository routes."""

    def __init__(self, settings: ServeSettings) -> None:
        source = settings.model_repository or settings.bundle
        super().__init__(models_dir=str(source))
        self.settings = settings

    async def load(self, name: str) -> bool:
        """Load the version the settings name now and swap it in (or bring back an unloaded model).

        Raises:
            ModelNotFound: `name` is not the model this predictor serves.
            ModelNotFoundError: The new bundle cannot be loaded; the old version keeps serving.
        """
        if name != self.settings.model_name:
            raise ModelNotFound(name)
        model = self.get_model(name)
        if not isinstance(model, TextClassifierModel):
            model = TextClassifierModel(self.settings)
            await model.reload()
            self.update(model)
        else:
            await model.reload()
        return True


class TextopsRepositoryExtension(ModelRepositoryExtension):
    """KServe's repository extension, with a 404 for other models and a clear load failure."""

    def __init__(self, model_registry: BundleRepository) -> None:
        super().__init__(model_registry=model_registry)
        self._bundles = model_registry

    async def load(self, model_name: str) -> None:
        """Swap in the current version of `model_name`.

        Raises:
            ModelNotFound: The predictor does not serve `model_name` (404).
            ModelLoadError: The new version could not be loaded (503); the old one still serves.
        """
        if model_name != self._bundles.settings.model_name:
            raise ModelNotFound(model_name)
        model = self._bundles.get_model(model_name)
        serving = model.served_version if isinstance(model, TextClassifierModel) else None
        try:
            await self._bundles.load(model_name)
        except Exception as e:  # any failure to load leaves the old version serving
            still = f"; version {serving} is still served" if serving is not None else ""
            raise ModelLoadError(
                f"could not load a new version of {model_name!r}: {type(e).__name__}: {e}{still}"
            ) from e

    async def unload(self, model_name: str) -> None:
        """Take `model_name` out of service (again does nothing).

        Raises:
            ModelNotFound: The predictor does not serve `model_name` (404).
        """
        if model_name != self._bundles.settings.model_name:
            raise ModelNotFound(model_name)
        if self._bundles.get_model(model_name) is None:
            return
        self._bundles.unload(model_name)
        logger.info("model %s unloaded: not ready until it is loaded again", model_name)
