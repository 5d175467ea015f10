"""KFP component for the deploy step; the logic is in `publish.py`."""

from kfp import dsl
from kfp.dsl import Input, Model

from textops.components.common.images import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def deploy_model(bundle: Input[Model], model_repository: str, model_name: str) -> str:
    """Publish the bundle as the next version of `model_name`; return the version's path."""
    from textops.components.common.logs import configure_logging
    from textops.components.deploy.publish import publish_bundle

    configure_logging()

    return str(publish_bundle(bundle.path, model_repository, model_name).path)
