"""KFP component for the deploy step; the logic is in `deployment.py`."""

from kfp import dsl
from kfp.dsl import Input, Model

from textops.components.common.images import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def deploy_model(
    bundle: Input[Model],
    model_repository: str,
    model_name: str,
    deploy_target: str,
    kserve_namespace: str,
    serve_url: str,
    canary_traffic_percent: int,
    rollout_timeout_seconds: int,
    prometheus_url: str,
    canary_analysis_seconds: int,
    canary_min_requests: int,
    canary_max_error_rate_increase: float,
    canary_max_p99_ratio: float,
) -> str:
    """Deploy the bundle: publish it locally (and hot-load it), or roll it out to KServe.

    With a canary share (kserve), the canary serves it for `canary_analysis_seconds`, then its
    5xx rate and p99 latency in Prometheus are compared with the stable model's: it is promoted,
    or rolled back with the figures in the error (and, either way, in a JSON log line).

    The settings are `ProductionModelSettings` and `DeploySettings` (common/settings.py), each
    checked by its model.

    Returns the published version's directory (local) or the InferenceService's URL (kserve).
    """
    # The inputs, before anything else is bound: they are checked by their settings models.
    parameters = dict(locals())

    from textops.components.common.cluster_run import check_deploy_target, on_a_cluster
    from textops.components.common.logs import configure_logging
    from textops.components.common.settings import (
        DeploySettings,
        ProductionModelSettings,
        section_from,
    )
    from textops.components.deploy.deployment import deploy_bundle

    configure_logging()
    production = section_from(ProductionModelSettings, parameters)
    deploy = section_from(DeploySettings, parameters)
    # The validate step refused this already; a run never reports a pod-local publish.
    if on_a_cluster(bundle.uri):
        check_deploy_target(production.deploy_target, model_repository)

    return deploy_bundle(
        bundle_path=bundle.path,
        bundle_uri=bundle.uri,
        model_repository=model_repository,
        model_name=production.model_name,
        deploy_target=production.deploy_target,
        settings=deploy,
        kserve_namespace=production.kserve_namespace,
    )
