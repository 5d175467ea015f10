"""KFP component for the deploy step; the logic is in `deployment.py`."""

from kfp import dsl
from kfp.dsl import Input, Model

from textops.components.common.images import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def deploy_model(
    bundle: Input[Model],
    model_repository: str,
    model_name: str,
    # The pipeline passes every setting. These defaults, TrainingConfig's, keep a pipeline
    # that passes only the first three working as before; they are literals because kfp
    # runs this signature's source on its own.
    deploy_target: str = "local",
    serve_url: str = "",
    kserve_namespace: str = "",
    canary_traffic_percent: int = 10,
    rollout_timeout_seconds: int = 600,
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090",
    canary_analysis_seconds: int = 300,
    canary_min_requests: int = 100,
    canary_max_error_rate_increase: float = 0.01,
    canary_max_p99_ratio: float = 1.5,
) -> str:
    """Deploy the bundle: publish it locally (and hot-load it), or roll it out to KServe.

    With a canary share (kserve), the canary serves it for `canary_analysis_seconds`, then its
    5xx rate and p99 latency in Prometheus are compared with the stable model's: it is promoted,
    or rolled back with the figures in the error (and, either way, in a JSON log line).

    Returns the published version's directory (local) or the InferenceService's URL (kserve).
    """
    from textops.components.common.cluster_run import check_deploy_target, on_a_cluster
    from textops.components.common.logs import configure_logging
    from textops.components.deploy.canary_analysis import CanaryAnalysisSettings
    from textops.components.deploy.deployment import deploy_bundle

    configure_logging()
    # The validate step refused this already; a run never reports a pod-local publish.
    if on_a_cluster(bundle.uri):
        check_deploy_target(deploy_target, model_repository)

    return deploy_bundle(
        bundle_path=bundle.path,
        bundle_uri=bundle.uri,
        model_repository=model_repository,
        model_name=model_name,
        deploy_target=deploy_target,
        serve_url=serve_url,
        kserve_namespace=kserve_namespace,
        canary_traffic_percent=canary_traffic_percent,
        rollout_timeout_seconds=rollout_timeout_seconds,
        canary_analysis=CanaryAnalysisSettings(
            prometheus_url=prometheus_url,
            window_seconds=canary_analysis_seconds,
            min_requests=canary_min_requests,
            max_error_rate_increase=canary_max_error_rate_increase,
            max_p99_ratio=canary_max_p99_ratio,
        ),
    )
