"""KFP component of the drift job; the logic is in `drift_job.py`."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Metrics, Output

from textops.components.common.images import MONITOR_IMAGE


@dsl.component(base_image=MONITOR_IMAGE, install_kfp_package=False)
def detect_drift(
    store_url: str,
    model_repository: str,
    model_name: str,
    bundle: str,
    since: str,
    until: str,
    last: int,
    min_window_rows: int,
    family_alpha: float,
    drift_share: float,
    min_labelled_rows: int,
    max_accuracy_drop: float,
    max_macro_f1_drop: float,
    workspace: str,
    pushgateway: str,
    report: Output[HTML],
    summary: Output[Artifact],
    metrics: Output[Metrics],
    deploy_target: str,
    kserve_namespace: str,
) -> bool:
    """Compare a window of logged traffic with the model bundle's reference sample.

    The store is `store_url`, else $TEXTOPS_STORE_URL (the pipeline sets it from a Secret),
    else the local SQLite file. The bundle is `bundle` when given (a directory or an s3://
    URI), else, with `deploy_target` 'kserve', the one the InferenceService `model_name` in
    `kserve_namespace` (empty: this pod's) serves to most of its traffic, else the current
    version of `model_name` in `model_repository`. The window is `model_name`'s traffic in
    the store between `since` and `until` (ISO 8601 or a duration back from now such as 24h;
    empty: unbounded), the most recent `last` texts of it when `last` > 0. Empty `workspace`
    and `pushgateway` skip them.

    On a cluster (its artifacts in an object store), it first refuses a store, workspace or
    `deploy_target` whose data would live only inside this pod.

    The settings are `DriftJobSettings`, `DriftSettings` (monitor/drift_settings.py) and
    `ProductionModelSettings` (common/settings.py), each checked by its model first.

    Returns whether drift was found; the reasons are in `summary`'s metadata and file.
    """
    # The inputs, before anything else is bound: they are checked by their settings models.
    parameters = dict(locals())

    import json
    import os
    import tempfile
    from pathlib import Path

    from textops.components.common import production_model
    from textops.components.common.cluster_run import (
        check_deploy_target,
        check_local_path,
        check_payload_store,
        on_a_cluster,
    )
    from textops.components.common.errors import ModelNotFoundError
    from textops.components.common.logs import configure_logging
    from textops.components.common.settings import ProductionModelSettings, section_from
    from textops.components.monitor.collector_cli import STORE_URL_ENV, default_store_url
    from textops.components.monitor.drift_job import (
        OutputPaths,
        WindowSpec,
        fetch_traffic,
        parse_moment,
        resolve_bundle,
        run_drift_job,
    )
    from textops.components.monitor.drift_settings import DriftJobSettings, DriftSettings
    from textops.components.monitor.store import mask_url

    configure_logging()
    settings = section_from(DriftSettings, parameters)
    for section in (DriftJobSettings, ProductionModelSettings):
        section_from(section, parameters)  # the values are used as given, once checked
    # Then, on a cluster, a check that could only read a pod's own disk, or a
    # retraining that could only publish there, stops here, naming what to set.
    if on_a_cluster(report.uri):
        check_deploy_target(deploy_target, model_repository)
        check_payload_store(store_url or os.environ.get(STORE_URL_ENV, ""))
        check_local_path("workspace", workspace)

    target = production_model.production_target(deploy_target, model_repository, kserve_namespace)
    namespace = None
    if isinstance(target, production_model.InferenceServiceTarget):
        namespace = target.namespace
    if not bundle and namespace is not None:
        served = production_model.production_bundle(model_name, target)
        if served is None:
            raise ModelNotFoundError(
                f"there is no InferenceService {model_name!r} in namespace {namespace!r} to "
                "compare traffic with: run the training pipeline with deploy_target 'kserve' "
                "first, or give the bundle to compare with (bundle=s3://...)"
            )
        bundle = served.location
    scratch = Path(tempfile.mkdtemp(prefix="textops-bundle-"))
    bundle_dir = resolve_bundle(
        bundle or None, model_repository or None, model_name, scratch=scratch
    )
    spec = WindowSpec(
        since=parse_moment(since) if since else None,
        until=parse_moment(until) if until else None,
        last=last if last > 0 else None,
    )
    store_url = store_url or default_store_url()
    window = fetch_traffic(store_url, model_name, spec)
    # The gauges reach Prometheus through the Pushgateway; the file is for local runs.
    gauges = Path(tempfile.mkdtemp(prefix="textops-drift-")) / "drift.prom"
    job = run_drift_job(
        bundle_dir=bundle_dir,
        window=window,
        settings=settings,
        paths=OutputPaths(report=Path(report.path), summary=Path(summary.path), gauges=gauges),
        model_name=model_name,
        workspace=workspace or None,
        pushgateway=pushgateway or None,
        namespace=namespace,
        window_spec=spec,
        source=mask_url(store_url),
        bundle_source=bundle or str(bundle_dir),
    )
    result = job.result
    metrics.log_metric("drifted", float(result.drifted))
    metrics.log_metric("window_rows", float(result.window_rows))
    metrics.log_metric("labelled_rows", float(result.labelled_rows))
    scores = {test.name: test.value for test in result.tests if test.value is not None}
    for name, value in scores.items():
        metrics.log_metric(name, float(value))
    with open(metrics.path, "w", encoding="utf-8") as f:
        json.dump({"status": result.status, **scores}, f, indent=2)
    summary.metadata.update(
        {"status": result.status, "drifted": result.drifted, "reasons": list(result.reasons)}
    )
    return result.drifted
